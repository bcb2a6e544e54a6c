"""A sandbox with its own cloned database, end to end (docs/infra.md): the real MICRO, GATEWAY
and INFRA agents, the real PostgreSQL server of .ci/start-data-servers, real Go with lib/pq
vendored from Debian, through the sandbox's gateway.

``sdp-reconcile --once`` clones the snapshot before the service starts, the Go service reads the
snapshot's row through the injected ``DB_*`` settings, ``reset`` re-clones, deleting the sandbox
drops the database after its container; a reconciler killed while the agent clones is
healed by the next pass; ``snapshot --data`` captures a sandbox's changed
database as a new source that a new sandbox clones (and ``drop-source`` drops it); the derived
password is in the container's environment and nowhere else SDP writes (output, history,
labels, agent logs, state files).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from sdp_node.naming import ResourceNames
from sdp_testbed.dataservers import DataServers
from sdp_testbed.go_pq import row_reader_files
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get
from tests.data.conftest import data_servers, snapshot  # noqa: F401 - fixtures used here
from tests.e2e.stack import Stack
from tests.e2e.test_mvp import gateway_urls
from tests.support.agents import AgentProcess
from tests.support.data import Snapshot, cleanup_installation, data_settings, infra_agent, pg_admin
from tests.support.names import PREFIX
from tests.support.ports import port_block
from tests.support.statedirs import NodeEntry, write_nodes

SANDBOX = "QA-DB"
SANDBOX_YAML = f"""\
sandbox: {SANDBOX}
extends: QA-DEFAULT
environment: null          # the template's qa environment sets DB_HOST itself
services:
  account: {{branch: feature/db}}
data:
  db: {{postgresql: {{from: qa-snapshot}}}}
"""


@contextlib.contextmanager
def running_infra(stack: Stack, tmp_path: Path, data_servers: DataServers,  # noqa: F811
                  snapshot: Snapshot, *, busy_timeout: float) -> Iterator[AgentProcess]:  # noqa: F811
    """An INFRA agent beside the stack's two, named in its nodes.yaml; ``busy_timeout``: how
    long it waits for a foreign session on a template before it gives up."""
    settings = data_settings(data_servers, snapshot, busy_timeout_seconds=busy_timeout)
    for server in settings.values():
        server["advertise_host"] = "host.docker.internal"  # what containers use
    agent = infra_agent(tmp_path / "infra", installation=stack.installation, data=settings)
    agent.start()
    stack.env.update(write_nodes(stack.state, installation=stack.installation, nodes=[
        NodeEntry(stack.micro, "MICRO", port_block(100), token_env="SDP_TEST_MICRO_TOKEN"),
        NodeEntry(stack.gateway, "GATEWAY", port_block(100), token_env="SDP_TEST_GATEWAY_TOKEN"),
        NodeEntry(agent, "INFRA", port_block(10)),
    ]))
    try:
        yield agent
    finally:
        agent.stop()
        cleanup_installation(data_servers, stack.installation, ["infra-1"])


@pytest.fixture
def infra(stack: Stack, tmp_path: Path, data_servers: DataServers,  # noqa: F811
          snapshot: Snapshot) -> Iterator[AgentProcess]:  # noqa: F811
    with running_infra(stack, tmp_path, data_servers, snapshot, busy_timeout=2) as agent:
        yield agent


def databases(servers: DataServers) -> set[str]:
    with pg_admin(servers) as connection:
        return {r[0] for r in connection.execute("SELECT datname FROM pg_database")}


def history_text(stack: Stack) -> str:
    with sqlite3.connect(f"file:{stack.history}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(repr(row) for t in tables
                         for row in db.execute(f"SELECT * FROM {t}"))  # noqa: S608


def audit(stack: Stack) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{stack.history}?mode=ro", uri=True) as db:
        return list(db.execute("SELECT action, service, status FROM audit ORDER BY id"))


def row_through_gateway(url: str) -> dict[str, Any]:
    answer = http_get(f"{url}/erangel/account/row")
    assert answer.status == 200, answer.text
    return dict(answer.json()["body"])


def test_a_go_service_reads_its_sandboxs_cloned_database_through_the_gateway(
    stack: Stack, infra: AgentProcess, data_servers: DataServers,  # noqa: F811
    snapshot: Snapshot, docker_client: docker.DockerClient,  # noqa: F811
) -> None:
    commit_files(stack.repos["account"], branch="feature/db", base="main", message="db",
                 files=row_reader_files(service="account", revision="account db 1"))
    stack.write(f"sandboxes/{SANDBOX}.yaml", SANDBOX_YAML)
    stack.commit_state("a sandbox with a database")
    database = ResourceNames(PREFIX).database(SANDBOX, "db")

    plan = stack.reconcile("plan")
    assert f"+ database {database} on infra-1 (from qa-snapshot)" in plan.stdout, plan.output
    first = stack.reconcile("once")
    assert first.code == 0, first.output

    url = gateway_urls(first.stdout)[SANDBOX]
    answer = row_through_gateway(url)
    assert answer == {"service": "account", "revision": "account db 1", "path": "/row",
                      "database": database, "row": snapshot.row}
    assert database in databases(data_servers)
    assert ("clone database", "db", "SUCCESS") in audit(stack)
    idle = stack.reconcile("plan")
    assert idle.code == 0 and "No changes" in idle.stdout, idle.output
    status = stack.reconcile("status", SANDBOX)
    assert "data.db" in status.stdout and "qa-snapshot" in status.stdout, status.output

    # The password is in the container's environment, and nowhere SDP writes.
    (container,) = docker_client.containers.list(filters={
        "label": [f"sdp.instance={stack.installation}", f"sdp.sandbox={SANDBOX}",
                  "sdp.service=account"]})
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    password = env["DB_PASSWORD"]
    assert len(password) >= 40 and env["DB_NAME"] == database
    assert env["DB_HOST"] == "host.docker.internal"
    places = {
        "reconcile output": first.output + plan.output + status.output,
        "history": history_text(stack),
        "labels": repr(container.attrs["Config"]["Labels"]),
        "agent logs": "".join(a.log_path.read_text(errors="replace")
                              for a in (stack.micro, stack.gateway, infra)),
        "state files": "".join(p.read_text(errors="replace")
                               for p in stack.state.rglob("*") if p.is_file()
                               and ".git" not in p.parts),
    }
    assert [where for where, text in places.items() if password in text] == []

    # A row written by the sandbox is gone after a reset: a fresh copy of the snapshot.
    with pg_admin(data_servers, database) as connection:
        connection.execute("UPDATE accounts SET email = 'changed@qa.invalid' WHERE email = %s",
                           (snapshot.row,))
    assert row_through_gateway(url)["row"] == "changed@qa.invalid"
    reset = stack.reconcile("reset", SANDBOX, "db")
    assert reset.code == 0, reset.output
    assert f"-/+ database {database} on infra-1 (from qa-snapshot)" in reset.output
    assert row_through_gateway(url)["row"] == snapshot.row
    assert ("reclone database", "db", "SUCCESS") in audit(stack)

    # Deleting the sandbox drops its database after its container, and nothing else.
    # Only this run's databases: other test runs share the server and make and drop theirs.
    others = {d for d in databases(data_servers) if d.startswith(f"{PREFIX}_")} - {database}
    stack.delete(f"sandboxes/{SANDBOX}.yaml")
    stack.commit_state("the sandbox is done")
    gone = stack.reconcile("once", "--allow-prune")
    assert gone.code == 0, gone.output
    assert {d for d in databases(data_servers) if d.startswith(f"{PREFIX}_")} == others
    assert not docker_client.containers.list(all=True, filters={
        "label": [f"sdp.instance={stack.installation}", f"sdp.sandbox={SANDBOX}"]})
    actions = [a for a, _s, _st in audit(stack)]
    assert actions.index("drop database") > actions.index("remove service")


def test_a_sandbox_whose_clone_fails_gets_no_service_and_heals_on_the_next_pass(
    stack: Stack, infra: AgentProcess, data_servers: DataServers,  # noqa: F811
    snapshot: Snapshot, docker_client: docker.DockerClient,  # noqa: F811
) -> None:
    commit_files(stack.repos["account"], branch="feature/db", base="main", message="db",
                 files=row_reader_files(service="account", revision="account db 1"))
    stack.write(f"sandboxes/{SANDBOX}.yaml", SANDBOX_YAML)
    stack.commit_state("a sandbox with a database")
    database = ResourceNames(PREFIX).database(SANDBOX, "db")
    labels = [f"sdp.instance={stack.installation}", f"sdp.sandbox={SANDBOX}",
              "sdp.service=account"]

    # A session of someone else on the template: PostgreSQL cannot copy it.
    with pg_admin(data_servers, snapshot.template) as foreign:
        foreign.execute("SET application_name = 'someone-else'")
        blocked = stack.reconcile("once")
    assert blocked.code == 2, blocked.output
    assert f"not deployed: database {database} of the sandbox could not be made" \
        in blocked.output
    assert "someone-else" in blocked.output
    assert not docker_client.containers.list(all=True, filters={"label": labels})
    assert database not in databases(data_servers)

    healed = stack.reconcile("once")
    assert healed.code == 0, healed.output
    url = gateway_urls(healed.stdout)[SANDBOX]
    assert row_through_gateway(url)["row"] == snapshot.row


def test_snapshot_captures_a_sandbox_s_database_that_a_new_sandbox_clones(
    stack: Stack, infra: AgentProcess, data_servers: DataServers,  # noqa: F811
    snapshot: Snapshot, docker_client: docker.DockerClient,  # noqa: F811
) -> None:
    commit_files(stack.repos["account"], branch="feature/db", base="main", message="db",
                 files=row_reader_files(service="account", revision="account db 1"))
    stack.write(f"sandboxes/{SANDBOX}.yaml", SANDBOX_YAML)
    stack.commit_state("a sandbox with a database")
    names = ResourceNames(PREFIX)
    first = stack.reconcile("once")
    assert first.code == 0, first.output
    # The server is shared with other test runs: compare this run's databases only.
    def ours() -> set[str]:
        return {d for d in databases(data_servers) if d.startswith(f"{PREFIX}_")}

    before = ours()
    with pg_admin(data_servers, names.database(SANDBOX, "db")) as connection:
        connection.execute("UPDATE accounts SET email = 'bug@qa.invalid' WHERE email = %s",
                           (snapshot.row,))

    # A clash with a source of node.yaml is refused: nothing written, nothing captured.
    clash = stack.reconcile("snapshot", SANDBOX, "QA-WITH-BUG", "--data", "db",
                            "--as", "qa-snapshot")
    assert clash.code == 1 and "already offers a source 'qa-snapshot'" in clash.output
    assert not (stack.state / "templates" / "QA-WITH-BUG.yaml").exists()
    assert ours() == before

    captured = stack.reconcile("snapshot", SANDBOX, "QA-WITH-BUG", "--data", "db")
    assert captured.code == 0, captured.output
    assert "+ source QA-WITH-BUG on infra-1" in captured.output
    template = names.captured_source("QA-WITH-BUG")
    assert ours() == before | {template}
    written = (stack.state / "templates" / "QA-WITH-BUG.yaml").read_text()
    assert "from: QA-WITH-BUG" in written and "node: infra-1" in written, written
    assert ("capture source", "db", "SUCCESS") in audit(stack)

    made = stack.reconcile("new", "QA-DB2", "--from", "QA-WITH-BUG")
    assert made.code == 0, made.output
    stack.commit_state("a sandbox from the snapshot")
    second = stack.reconcile("once")
    assert second.code == 0, second.output
    assert f"+ database {names.database('QA-DB2', 'db')} on infra-1 (from QA-WITH-BUG)" \
        in second.output
    url = gateway_urls(second.stdout)["QA-DB2"]
    assert row_through_gateway(url)["row"] == "bug@qa.invalid"

    passwords = [dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])["DB_PASSWORD"]
                 for c in docker_client.containers.list(filters={"label": [
                     f"sdp.instance={stack.installation}", "sdp.service=account"]})]
    assert len(passwords) == 2

    # Still cloned from: refused. Once no sandbox names it, it goes; nothing else does.
    busy = stack.reconcile("drop-source", "QA-WITH-BUG")
    assert busy.code == 1 and "still the from: of QA-DB2/db" in busy.output, busy.output
    mine = stack.reconcile("drop-source", "qa-snapshot")
    assert mine.code == 1 and "node.yaml's, not one SDP captured" in mine.output, mine.output
    for name in ("sandboxes/QA-DB2.yaml", f"sandboxes/{SANDBOX}.yaml",
                 "templates/QA-WITH-BUG.yaml"):
        stack.delete(name)
    stack.commit_state("done with both")
    gone = stack.reconcile("once", "--allow-prune")
    assert gone.code == 0, gone.output
    dropped = stack.reconcile("drop-source", "QA-WITH-BUG")
    assert dropped.code == 0 and "dropped source 'QA-WITH-BUG'" in dropped.output, \
        dropped.output
    assert ("drop source", "db", "SUCCESS") in audit(stack)
    assert ours() == before - {names.database(SANDBOX, "db")}

    # The canary: no generated password in what SDP printed, recorded or logged.
    places = {
        "output": "".join(r.output for r in (first, clash, captured, made, second, busy, mine,
                                             gone, dropped)),
        "history": history_text(stack),
        "agent logs": "".join(a.log_path.read_text(errors="replace")
                              for a in (stack.micro, stack.gateway, infra)),
        "state files": "".join(p.read_text(errors="replace") for p in stack.state.rglob("*")
                               if p.is_file() and ".git" not in p.parts),
    }
    assert [(w, i) for w, text in places.items() for i, pw in enumerate(passwords)
            if pw in text] == []


@pytest.fixture
def patient_infra(stack: Stack, tmp_path: Path, data_servers: DataServers,  # noqa: F811
                  snapshot: Snapshot) -> Iterator[AgentProcess]:  # noqa: F811
    """The INFRA agent of ``infra``, waiting up to a minute for a busy template."""
    with running_infra(stack, tmp_path, data_servers, snapshot, busy_timeout=60) as agent:
        yield agent


def test_a_reconciler_killed_mid_clone_is_healed_by_the_next_pass(
    stack: Stack, patient_infra: AgentProcess, data_servers: DataServers,  # noqa: F811
    snapshot: Snapshot,  # noqa: F811
) -> None:
    from sdp_node.data.postgres import APPLICATION_NAME
    from sdp_testbed.waiting import wait_for

    commit_files(stack.repos["account"], branch="feature/db", base="main", message="db",
                 files=row_reader_files(service="account", revision="account db 1"))
    stack.write(f"sandboxes/{SANDBOX}.yaml", SANDBOX_YAML)
    stack.commit_state("a sandbox with a database")
    database = ResourceNames(PREFIX).database(SANDBOX, "db")

    def cloning() -> bool | None:
        with pg_admin(data_servers) as connection:
            found = connection.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND "
                "query LIKE 'CREATE DATABASE%%' AND strpos(query, %s) > 0",
                (APPLICATION_NAME, database)).fetchone()
        return True if found else None

    # Someone else's session keeps the template busy: the agent's copy waits, mid-clone.
    with pg_admin(data_servers, snapshot.template) as foreign:
        foreign.execute("SET application_name = 'someone-else'")
        process = stack.popen("once")
        try:
            wait_for(cloning, what="the INFRA agent copying the template", timeout=120)
        finally:
            process.kill()  # the reconciler dies while the agent clones
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()

    healed = stack.reconcile("once")
    assert healed.code == 0, healed.output
    assert row_through_gateway(gateway_urls(healed.stdout)[SANDBOX])["row"] == snapshot.row
    assert database in databases(data_servers)
    with sqlite3.connect(f"file:{stack.history}?mode=ro", uri=True) as db:
        statuses = [r[0] for r in db.execute("SELECT status FROM passes ORDER BY id")]
    assert statuses[0] == "INTERRUPTED" and statuses[-1] == "CONVERGED", statuses
