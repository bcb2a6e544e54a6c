"""The YAML editing helpers: new, clone, route, snapshot; an invalid edit changes nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import History, StatusRow
from sdp_reconciler.state import editing
from sdp_reconciler.state.loading import load_state
from sdp_reconciler.state.resolve import resolve_sandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "state"
CLI = Path(sys.executable).parent / "sdp-reconcile"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(EXAMPLE, copy)
    return copy


def test_new_sandbox_from_a_template(state: Path) -> None:
    path = editing.new_sandbox(state, "QA-2", template="ACCOUNT-TESTING",
                               branches={"account": "feature/x"}, gateway_branch="release")
    assert path.read_text().startswith("# yaml-language-server: $schema=")
    resolved = resolve_sandbox(load_state(state), "QA-2")
    assert resolved.services["account"].spec.branch == "feature/x"
    assert resolved.services["payment"].spec.use_ocp
    assert resolved.gateway is not None and resolved.gateway.spec.branch == "release"


def test_clone_keeps_comments_and_drops_ports(state: Path) -> None:
    source = state / "sandboxes" / "QA-LOGIN-ERROR.yaml"
    source.write_text(source.read_text().replace(
        "    branch: feature/login-error\n", "    branch: feature/login-error\n    port: 9007\n"))
    path = editing.clone_sandbox(state, "QA-LOGIN-ERROR", "QA-COPY")
    text = path.read_text()
    assert "# The seed's example" in text and "sandbox: QA-COPY" in text
    assert "port:" not in text
    copy = resolve_sandbox(load_state(state), "QA-COPY")
    assert copy.services["account"].spec.branch == "feature/login-error"


@pytest.mark.parametrize(("options", "kind"), [
    ({"branch": "feature/y"}, "branch"), ({"ocp": True}, "use_ocp"),
    ({"target": "https://pay.company.invalid"}, "target"),
])
def test_route_a_service(state: Path, options: dict[str, object], kind: str) -> None:
    editing.set_route(state, "QA-LOGIN-ERROR", "payment", **options)  # type: ignore[arg-type]
    spec = resolve_sandbox(load_state(state), "QA-LOGIN-ERROR").services["payment"].spec
    assert getattr(spec, kind) is not None


@pytest.mark.parametrize("call", [
    lambda s: editing.set_route(s, "QA-LOGIN-ERROR", "payment", branch="bad..name"),
    lambda s: editing.set_route(s, "QA-LOGIN-ERROR", "payment", target="ftp://x"),
    lambda s: editing.set_route(s, "QA-LOGIN-ERROR", "payment", ocp=True, branch="x"),
    lambda s: editing.set_route(s, "NOPE", "payment", ocp=True),
    lambda s: editing.new_sandbox(s, "QA-LOGIN-ERROR", template="QA-DEFAULT", branches={}),
    lambda s: editing.new_sandbox(s, "bad name", template="QA-DEFAULT", branches={}),
    lambda s: editing.new_sandbox(s, "X", template="QA-DEFAULT", branches={"gateway": "x"}),
    lambda s: editing.clone_sandbox(s, "QA-LOGIN-ERROR", "qa_login_error"),
])
def test_bad_input_changes_nothing(state: Path, call: object) -> None:
    before = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}
    with pytest.raises(SdpError) as caught:
        call(state)  # type: ignore[operator]
    assert str(caught.value)
    assert {p: p.read_bytes() for p in state.rglob("*") if p.is_file()} == before


def test_snapshot_pins_running_commits_and_copies_the_environment(
    state: Path, tmp_path: Path
) -> None:
    history = History(tmp_path / "h.sqlite")
    commits = {"account": "a" * 40, "gateway": "b" * 40}
    history.set_status([
        StatusRow(sandbox="QA-LOGIN-ERROR", service=s, node="n", sync="InSync",
                  health="Healthy", reason="UpToDate", applied_commit=c)
        for s, c in commits.items()], sandboxes={"QA-LOGIN-ERROR"})
    paths = editing.snapshot(state, "QA-LOGIN-ERROR", "QA-Before-Release", history)
    assert {p.name for p in paths} == {"QA-Before-Release.yaml"} and len(paths) == 2
    editing.new_sandbox(state, "QA-AGAIN", template="QA-Before-Release", branches={})
    again = resolve_sandbox(load_state(state), "QA-AGAIN")
    assert again.services["account"].spec.commit == commits["account"]
    assert again.services["account"].spec.branch == "feature/login-error"
    assert again.services["payment"].spec.use_ocp
    assert again.gateway is not None and again.gateway.spec.commit == commits["gateway"]
    assert again.environment == "QA-Before-Release"
    history.close()


def test_snapshot_keeps_the_data_entries_and_points_a_captured_one_at_its_source(
    state: Path, tmp_path: Path
) -> None:
    nodes = state / "nodes.yaml"
    nodes.write_text(nodes.read_text() + "  - name: infra-1\n    type: INFRA\n"
                     "    agent_url: http://127.0.0.1:3455\n    address: 127.0.0.1\n"
                     "    public_address: 127.0.0.1\n")
    source = state / "sandboxes" / "QA-LOGIN-ERROR.yaml"
    source.write_text(source.read_text() + "data:\n  store: {postgresql: {from: qa-snapshot, "
                      "env: {host: PGHOST}}}\n  cache: {redis: {}}\n")
    history = History(tmp_path / "h.sqlite")
    history.set_status([
        StatusRow(sandbox="QA-LOGIN-ERROR", service=s, node="n", sync="InSync",
                  health="Healthy", reason="UpToDate", applied_commit=c * 40)
        for s, c in (("account", "a"), ("gateway", "b"))], sandboxes={"QA-LOGIN-ERROR"})
    before = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}
    with pytest.raises(SdpError, match="no PostgreSQL data entry nope"):
        editing.snapshot(state, "QA-LOGIN-ERROR", "QA-BUG", history,
                         captured={"nope": ("qa-bug", "infra-1")})
    assert {p: p.read_bytes() for p in state.rglob("*") if p.is_file()} == before
    editing.snapshot(state, "QA-LOGIN-ERROR", "QA-BUG", history,
                     captured={"store": ("qa-bug", "infra-1")})
    editing.new_sandbox(state, "QA-AGAIN", template="QA-BUG", branches={})
    again = resolve_sandbox(load_state(state), "QA-AGAIN")
    db, cache = again.data["store"].entry, again.data["cache"].entry
    assert (db.kind.value, db.source, db.node) == ("postgresql", "qa-bug", "infra-1")
    assert db.postgresql is not None and db.postgresql.env.host == "PGHOST"
    assert cache.kind.value == "redis" and cache.node is None
    history.close()


def test_the_commands_say_what_they_wrote(state: Path) -> None:
    done = subprocess.run([str(CLI), "new", "QA-9", "--from", "QA-DEFAULT", "--branch",
                           "account=feature/z", "--state", str(state)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "wrote" in done.stdout and "QA-9.yaml" in done.stdout
    bad = subprocess.run([str(CLI), "new", "QA-10", "--from", "QA-DEFAULT", "--branch",
                          "account", "--state", str(state)], capture_output=True, text=True)
    assert bad.returncode == 1 and "SERVICE=BRANCH" in bad.stderr
    refused = subprocess.run([str(CLI), "route", "QA-9", "user", "--branch", "x..y",
                              "--state", str(state)], capture_output=True, text=True)
    assert refused.returncode == 1
    assert "nothing written" in refused.stderr and "which git forbids" in refused.stderr


def _schema_target(path: Path) -> Path:
    line = path.read_text().splitlines()[0]
    assert line.startswith("# yaml-language-server: $schema=")
    return (path.parent / line.split("$schema=", 1)[1]).resolve()


def test_a_state_repository_gets_schemas_its_new_files_resolve(state: Path) -> None:
    subprocess.run(["git", "init", "-q", str(state)], check=True)
    path = editing.new_sandbox(state, "QA-2", template="QA-DEFAULT", branches={},
                               gateway_branch=None)
    target = _schema_target(path)
    assert target == (state / "schemas" / "sandbox.schema.json").resolve()
    assert target.is_file(), "written into the state repository, to be committed with it"
    again = editing.new_sandbox(state, "QA-3", template="QA-DEFAULT", branches={},
                                gateway_branch=None)
    assert _schema_target(again) == target


def test_new_says_when_it_wrote_the_schemas_too(state: Path) -> None:
    subprocess.run(["git", "init", "-q", str(state)], check=True)
    said = []
    for name in ("QA-2", "QA-3"):
        done = subprocess.run([str(CLI), "new", name, "--from", "QA-DEFAULT", "--state",
                               str(state)], capture_output=True, text=True, check=True)
        said.append(done.stdout)
    schemas = (state / "schemas").resolve()
    assert f"wrote {schemas}/ too" in said[0] and "commit them with it" in said[0]
    assert " too: " not in said[1], "only the run that wrote them says so"


def test_the_checkouts_example_state_uses_the_checkouts_schemas(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(EXAMPLE, checkout / "state")
    shutil.copytree(EXAMPLE.parent / "schemas", checkout / "schemas")
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    path = editing.new_sandbox(checkout / "state", "QA-2", template="QA-DEFAULT", branches={},
                               gateway_branch=None)
    assert _schema_target(path) == (checkout / "schemas" / "sandbox.schema.json").resolve()
    assert not (checkout / "state" / "schemas").exists()


def test_a_clone_keeps_the_data_entries_under_its_own_names(state: Path) -> None:
    nodes = state / "nodes.yaml"
    nodes.write_text(nodes.read_text() + (
        "  - {name: infra-1, type: INFRA, address: host.docker.internal, "
        "public_address: 127.0.0.1}\n"))
    source = state / "sandboxes" / "QA-LOGIN-ERROR.yaml"
    source.write_text(source.read_text() + "environment: null\n"
                      "data:\n  db: {postgresql: {from: qa-snapshot}}\n")

    editing.clone_sandbox(state, "QA-LOGIN-ERROR", "QA-COPY")

    loaded = load_state(state)
    names = loaded.nodes.model.names
    copy = resolve_sandbox(loaded, "QA-COPY")
    assert copy.data["db"].entry.source == "qa-snapshot"
    assert names.database("QA-COPY", "db") != names.database("QA-LOGIN-ERROR", "db")
