"""``sdp-reconcile validate`` as a user runs it: the console script, in a subprocess."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from sdp_reconciler.cli.main import build_parser
from tests.state.conftest import EXAMPLE_STATE, REPO, write_files

SCRIPT = Path(sys.executable).parent / "sdp-reconcile"


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def test_example_state_is_valid_in_one_line() -> None:
    result = run("validate", "--state", str(EXAMPLE_STATE))

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "valid: installation 'demo', 2 nodes, 1 sandbox, 2 templates, 1 environment, "
        "0 port allocations\n"
    )
    assert result.stderr == ""


def test_state_defaults_to_the_state_directory_of_the_working_directory() -> None:
    result = run("validate")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("valid: installation 'demo'")


def test_broken_state_lists_every_problem_and_no_traceback(state_dir: Path) -> None:
    write_files(state_dir, {
        "sandboxes/QA-LOGIN-ERROR.yaml": "sandbox: QA-LOGIN-ERROR\nextends: QA-DEFUALT\n",
        "templates/ACCOUNT-TESTING.yaml": "template: ACCOUNT-TESTING\ngateway: {port: 8080}\n",
        "environments/qa.yaml": "environment: qa\nsecrets: {JWT_SECRET: sdp-cli-literal}\n",
        "sandboxes/BROKEN.yaml": "sandbox: BROKEN\n\tgateway: {}\n",
    })

    result = run("validate", "--state", "state", cwd=state_dir.parent)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "state/environments/qa.yaml:2:23: secrets.JWT_SECRET: literal secret value: a state "
        "file holds only a reference, '{env: VARIABLE}' or '{file: PATH}', never the secret "
        "itself",
        "state/sandboxes/BROKEN.yaml:2:1: YAML syntax error: found character '\\t' that cannot "
        "start any token (while scanning for the next token)",
        "state/sandboxes/QA-LOGIN-ERROR.yaml:2:10: extends: unknown template 'QA-DEFUALT'; "
        "known: ACCOUNT-TESTING, QA-DEFAULT",
        "state/templates/ACCOUNT-TESTING.yaml:2:17: gateway.port: templates hold no ports: "
        "ports belong to each sandbox (set it in the sandbox file, or leave it out and SDP "
        "allocates one)",
        "4 problems in the state",
    ]
    assert "sdp-cli-literal" not in result.stderr


def test_missing_state_directory_is_one_error_line(tmp_path: Path) -> None:
    result = run("validate", "--state", str(tmp_path / "nowhere"))

    assert result.returncode == 1
    assert result.stderr == f"{tmp_path / 'nowhere'}:1:1: state directory does not exist\n" \
        "1 problem in the state\n"
    assert "Traceback" not in result.stderr


def test_state_from_the_environment_variable(state_dir: Path) -> None:
    write_files(state_dir, {"nodes.yaml": None})

    result = subprocess.run(
        [str(SCRIPT), "validate"], capture_output=True, text=True, timeout=60, check=False,
        cwd=state_dir.parent, env={"SDP_STATE": str(state_dir), "PATH": "/usr/bin:/bin"},
    )

    assert result.returncode == 1
    assert "missing nodes.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def _commands() -> list[str]:
    """Every subcommand the parser knows, so a new command is covered without editing here."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    return []


@pytest.mark.parametrize("command", [[], *([c] for c in _commands())], ids=str)
def test_help_works_for_every_command(command: list[str]) -> None:
    result = run(*command, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: sdp-reconcile {' '.join(command)}".rstrip())
    assert result.stderr == ""


def test_validate_and_schemas_are_commands() -> None:
    assert {"validate", "schemas"} <= set(_commands())


def test_no_command_prints_help_and_fails() -> None:
    result = run()

    assert result.returncode == 1
    assert "usage: sdp-reconcile" in result.stderr
