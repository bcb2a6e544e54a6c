""".ci/start-dockerd, driven with stand-in `docker` and `dockerd` commands on PATH.

The real engine is never stopped or started here: the stand-ins record what the script did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "start-dockerd"

# `docker version` answers once the stand-in dockerd has written its "ready" file.
FAKE_DOCKER = """#!/bin/sh
[ -e "{state}/ready" ] || [ -e "{state}/always-up" ]
"""
FAKE_DOCKERD = """#!/bin/sh
echo $$ > "{state}/dockerd.pid"
echo "$@" > "{state}/dockerd.args"
[ -e "{state}/crash" ] && {{ echo "dockerd: simulated failure"; exit 1; }}
touch "{state}/ready"
exec sleep 120
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    state = tmp_path / "state"
    state.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", FAKE_DOCKER), ("dockerd", FAKE_DOCKERD)):
        (bin_dir / name).write_text(text.format(state=state))
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SDP_CI_DOCKERD_LOG": str(tmp_path / "dockerd.log"),
        # The real engine's pid file is not the stand-in's business.
        "SDP_CI_DOCKERD_PIDFILE": str(tmp_path / "no-docker.pid"),
    }
    yield state, env
    pid_file = state / "dockerd.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def run_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)], env=env, capture_output=True, text=True, timeout=90, check=False
    )


def test_does_nothing_when_the_engine_answers(fake_bin: tuple[Path, dict[str, str]]) -> None:
    state, env = fake_bin
    (state / "always-up").touch()
    result = run_script(env)
    assert result.returncode == 0, result.stderr
    assert not (state / "dockerd.args").exists()


def test_starts_dockerd_with_the_address_pool_and_waits(
    fake_bin: tuple[Path, dict[str, str]],
) -> None:
    state, env = fake_bin
    result = run_script(env)
    assert result.returncode == 0, result.stderr
    args = (state / "dockerd.args").read_text().split()
    assert args == ["--default-address-pool", "base=10.200.0.0/16,size=24"]


def test_clears_a_stale_pid_file_before_starting(
    fake_bin: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _state, env = fake_bin
    stale = tmp_path / "no-docker.pid"
    stale.write_text("999999\n")  # no such process
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert not stale.exists()


def test_fails_loudly_when_dockerd_dies(fake_bin: tuple[Path, dict[str, str]]) -> None:
    state, env = fake_bin
    (state / "crash").touch()
    result = run_script(env)
    assert result.returncode == 1
    assert "exited" in result.stderr
    assert "simulated failure" in result.stderr
