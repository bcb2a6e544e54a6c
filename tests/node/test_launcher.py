"""``sdp-launch`` (sdp_node/launch.go), built by the agent's ``Launcher`` with the real Go
toolchain and run on the host: it waits for a binary renamed into its folder, then runs the
command in its own place."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sdp_node.launcher import Launcher
from tests.conftest import GO_CACHE


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    problems: list[str] = []
    built = Launcher(tmp_path_factory.mktemp("workspace"), go_cache=GO_CACHE,
                     log=problems.append)
    assert built.state == "off"
    built.start()
    path = built.wait(timeout=300)
    assert path is not None, (built.problem, problems)
    assert built.state == "ready" and not problems
    return path


def test_it_waits_for_the_binary_to_be_renamed_into_place_then_runs_the_command(
    launcher: Path, tmp_path: Path,
) -> None:
    binary = tmp_path / "app-account"
    process = subprocess.Popen(
        [str(launcher), str(binary), "30", str(binary), "first", "second"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Nothing runs yet: the launcher is still waiting (it would have exited otherwise).
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)
        partial = tmp_path / ".app-account.partial"  # as GoBuilder writes it
        partial.write_text('#!/bin/sh\necho "ran $0 with $*; pid $$"\n')
        partial.chmod(0o755)
        os.replace(partial, binary)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    # exec: the command replaced the launcher (same process id) and got its arguments.
    assert out.strip() == f"ran {binary} with first second; pid {process.pid}"


def test_a_binary_already_there_runs_at_once(launcher: Path, tmp_path: Path) -> None:
    binary = tmp_path / "app"
    binary.write_text("#!/bin/sh\necho ready\n")
    binary.chmod(0o755)
    done = subprocess.run([str(launcher), str(binary), "5", str(binary)], capture_output=True,
                          text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "ready\n")


def test_a_binary_that_never_appears_ends_it_with_a_message(
    launcher: Path, tmp_path: Path,
) -> None:
    binary = tmp_path / "never"
    done = subprocess.run([str(launcher), str(binary), "1", str(binary)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 75
    assert f"{binary} did not appear within 1s" in done.stderr


def test_bad_usage_and_a_command_that_cannot_run_are_told(
    launcher: Path, tmp_path: Path,
) -> None:
    usage = subprocess.run([str(launcher)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 64 and "usage: sdp-launch" in usage.stderr
    zero = subprocess.run([str(launcher), "/bin/true", "0", "/bin/true"], capture_output=True,
                          text=True, timeout=30)
    assert zero.returncode == 64 and "TIMEOUT_SECONDS" in zero.stderr
    present = tmp_path / "present"
    present.write_text("")
    missing = subprocess.run([str(launcher), str(present), "5", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 127 and "cannot run" in missing.stderr


def test_it_is_built_once_per_source_and_go_version(launcher: Path) -> None:
    workspace = launcher.parent.parent.parent
    again = Launcher(workspace, go_cache=GO_CACHE, log=lambda _line: None)
    again.start()
    assert again.wait(timeout=60) == launcher
    assert sorted(p.name for p in launcher.parent.iterdir()) == ["launch.go", "sdp-launch"]
