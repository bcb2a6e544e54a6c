"""Capturing a sandbox's database as a source and dropping one (``planner.captureplanning``):
the one change each command applies, or the reason it refuses, from the pass's desired data
and the INFRA node's observation. Against ``InMemoryNodes``; the real server is in
tests/data/test_capture.py, the commands end to end in tests/e2e/test_data.py."""

from __future__ import annotations

from sdp_node.naming import DEFAULT_NAMES
from sdp_node.protocol import (
    CaptureDatabase,
    DataSourceInfo,
    DataSourceKind,
    DataState,
    DropCapturedSource,
)
from sdp_reconciler.planner.captureplanning import plan_capture, plan_drop_source
from sdp_reconciler.planner.dataplanning import desired_data
from sdp_reconciler.planner.plan import Action, Change, Phase, Subject
from tests.planning.builders import Desired, by_name, reconcile_once
from tests.planning.fakes import InMemoryNodes
from tests.planning.test_data_planning import DB, INFRA, infra_nodes, qa, with_data
from tests.planning.test_purity import NETWORK_PROCESS_DATABASE, forbidden, import_graph

CAPTURED = DataSourceInfo(name="qa-bug", kind=DataSourceKind.TEMPLATE,
                          location=DEFAULT_NAMES.captured_source("qa-bug"),
                          captured_from="QA/db")


def converged() -> tuple[Desired, InMemoryNodes]:
    desired, observed = Desired(by_name(qa())), infra_nodes()
    _pass, _outcome, desired = reconcile_once(desired, observed)
    assert observed.nodes[INFRA].data_services, "the pass made the database"
    return desired, observed


def capture(desired: Desired, observed: InMemoryNodes, *, sandbox: str = "QA",
            entry: str = "db", source: str = "qa-bug") -> Change | str:
    world = desired.world(observed)
    return plan_capture(data=desired_data(desired.sandboxes, world), world=world,
                        sandboxes=desired.sandboxes, sandbox=sandbox, entry=entry,
                        source=source)


def test_a_ready_database_is_captured_in_one_change_on_its_infra_node() -> None:
    change = capture(*converged())
    assert isinstance(change, Change), change
    assert (change.action, change.subject, change.phase, change.node, change.resource) == (
        Action.CREATE, Subject.SOURCE, Phase.DATA, INFRA, "qa-bug")
    assert isinstance(change.step, CaptureDatabase)
    assert (change.step.database, change.step.source, change.step.template) == (
        DB, "qa-bug", "sandbox__src_qa_bug")
    assert change.describe() == "source qa-bug on infra-1"
    assert change.reason == f"captured from database {DB} (sandbox QA, entry db)"


def test_a_capture_is_refused_saying_what_to_change() -> None:
    desired, observed = converged()
    observed.nodes[INFRA].data_sources.append(CAPTURED)
    assert capture(desired, observed, source="qa-snapshot") == (
        "INFRA node infra-1 already offers a source 'qa-snapshot' (node.yaml's): choose "
        "another name")
    taken = capture(desired, observed)
    assert isinstance(taken, str) and "captured from QA/db" in taken
    assert "sdp-reconcile drop-source qa-bug" in taken
    assert "is not a valid name" in str(capture(desired, observed, source="qa bug"))
    assert "no PostgreSQL data entry 'cache'" in str(capture(desired, observed, entry="cache"))
    assert "no sandbox 'NOPE'" in str(capture(desired, observed, sandbox="NOPE"))
    key = next(iter(k for k in observed.nodes[INFRA].data_services if k[1] == DB))
    service = observed.nodes[INFRA].data_services[key]
    observed.nodes[INFRA].data_services[key] = service.model_copy(update={
        "state": DataState.INCOMPLETE, "problem": "a clone that did not finish"})
    unready = capture(desired, observed, source="other")
    assert isinstance(unready, str) and f"database {DB} of sandbox 'QA' is not ready" in unready
    observed.nodes[INFRA].unreachable = "connection refused"
    assert "unreachable" in str(capture(desired, observed, source="other"))


def test_only_an_unused_source_sdp_captured_is_dropped() -> None:
    desired, observed = converged()
    observed.nodes[INFRA].data_sources.append(CAPTURED)
    world = desired.world(observed)
    change = plan_drop_source(world=world, sandboxes=desired.sandboxes, source="qa-bug")
    assert isinstance(change, Change), change
    assert (change.action, change.subject, change.phase, change.sandbox, change.service) == (
        Action.REMOVE, Subject.SOURCE, Phase.DATA_CLEANUP, "QA", "db")
    assert isinstance(change.step, DropCapturedSource)
    assert change.step.template == "sandbox__src_qa_bug"

    mine = plan_drop_source(world=world, sandboxes=desired.sandboxes, source="qa-snapshot")
    assert isinstance(mine, str) and "node.yaml's, not one SDP captured" in mine
    unknown = plan_drop_source(world=world, sandboxes=desired.sandboxes, source="nope")
    assert isinstance(unknown, str) and "no INFRA node lists a source 'nope'" in unknown
    using = {"QA": with_data(desired.sandboxes["QA"], db={"postgresql": {"from": "qa-bug"}})}
    used = plan_drop_source(world=world, sandboxes=using, source="qa-bug")
    assert isinstance(used, str) and "still the from: of QA/db (" in used


def test_capture_planning_is_pure() -> None:
    graph = import_graph("sdp_reconciler.planner.captureplanning")
    assert "sdp_reconciler.apply.applying" not in graph
    assert sorted((m, i) for m, names in graph.items() for i in names
                  if forbidden(i, NETWORK_PROCESS_DATABASE)) == []
