"""Data services in the plan (``sdp_reconciler.dataplanning``): ensured in phase ``data``
before the sandbox's services, dropped in ``data-cleanup`` after its containers, kept while
suspended, re-cloned on reset, left alone with a problem when the INFRA node cannot tell; the
containers get the injected variables, the plan never shows a password. Against
``InMemoryNodes`` with an INFRA node; the real servers are in tests/data and tests/e2e."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from sdp_node.naming import DEFAULT_NAMES
from sdp_node.protocol import (
    DataKind,
    DataServerInfo,
    DataSourceInfo,
    DataSourceKind,
    DataState,
    DeployService,
    DropDatabase,
    EnsureDatabase,
    EnsureRedisUser,
    RecloneDatabase,
)
from sdp_reconciler.apply.status import status_rows
from sdp_reconciler.history import StatusRow
from sdp_reconciler.planner.dataenv import data_password
from sdp_reconciler.planner.dataplanning import desired_data
from sdp_reconciler.planner.placement import place
from sdp_reconciler.planner.plan import Action, Change, Phase, Plan, Subject
from sdp_reconciler.planner.planning import plan
from sdp_reconciler.planner.ports import allocate
from sdp_reconciler.state.models import DataEntry, NodeType
from sdp_reconciler.state.resolved import ResolvedData, ResolvedSandbox
from sdp_reconciler.state.sources import Location
from tests.planning.builders import (
    INSTALLATION,
    KEY,
    MICRO,
    NOW,
    Desired,
    branch,
    by_name,
    node,
    nodes,
    plan_pass,
    sandbox,
    sandbox_file,
)
from tests.planning.fakes import InMemoryNodes

INFRA = "infra-1"
DB = DEFAULT_NAMES.database("QA", "db")
CACHE = DEFAULT_NAMES.redis_user("QA", "cache")


def with_data(resolved: ResolvedSandbox, **entries: dict[str, object]) -> ResolvedSandbox:
    data = {
        name: ResolvedData(name, DataEntry.model_validate(entry),
                           Location(sandbox_file(resolved.name), 20 + i, 3))
        for i, (name, entry) in enumerate(sorted(entries.items()))
    }
    return replace(resolved, data=data)


def qa(**overrides: object) -> ResolvedSandbox:
    base = sandbox("QA", {"account": branch("main")}, **overrides)  # type: ignore[arg-type]
    return with_data(base, db={"postgresql": {"from": "qa-snapshot"}}, cache={"redis": {}})


def infra_nodes(*, sources: tuple[str, ...] = ("qa-snapshot",)) -> InMemoryNodes:
    observed = nodes(extra={node(INFRA, NodeType.INFRA, "10.0.0.3", (10001, 10010)): []})
    infra = observed.nodes[INFRA]
    infra.data_servers = [
        DataServerInfo(kind=DataKind.POSTGRESQL, host="10.0.0.3", port=5432, reachable=True),
        DataServerInfo(kind=DataKind.REDIS, host="10.0.0.3", port=6379, reachable=True),
    ]
    infra.data_sources = [DataSourceInfo(name=s, kind=DataSourceKind.TEMPLATE, location=s)
                          for s in sources]
    return observed


def rows(result: Plan) -> list[tuple[Phase, Action, Subject, str]]:
    return [(c.phase, c.action, c.subject, c.resource) for c in result.changes]


def _by_subject(result: Plan, subject: Subject) -> Change:
    (found,) = [c for c in result.changes if c.subject is subject]
    return found


def deploy_of(result: Plan, service: str) -> DeployService:
    for change in result.changes:
        if isinstance(change.step, DeployService) and change.service == service:
            return change.step
    raise AssertionError(result.render())


def test_a_new_sandbox_gets_its_data_before_its_services() -> None:
    result = plan_pass(Desired(by_name(qa())), infra_nodes()).plan

    assert sorted(rows(result)[:2]) == [
        (Phase.DATA, Action.CREATE, Subject.DATABASE, DB),
        (Phase.DATA, Action.CREATE, Subject.REDIS_USER, CACHE),
    ]
    assert {c.phase for c in result.changes[2:]} == {Phase.SERVICES, Phase.ROUTES}
    database, cache = _by_subject(result, Subject.DATABASE), _by_subject(result, Subject.REDIS_USER)
    assert isinstance(database.step, EnsureDatabase)
    assert (database.step.source, database.step.database, database.node) == (
        "qa-snapshot", DB, INFRA)
    assert f"+ database {DB} on {INFRA} (from qa-snapshot)" in result.render()
    assert database.location == Location(sandbox_file("QA"), 21, 3)
    assert isinstance(cache.step, EnsureRedisUser)
    assert cache.step.key_prefix == CACHE + ":"


def test_the_services_get_the_settings_and_the_derived_password() -> None:
    result = plan_pass(Desired(by_name(qa())), infra_nodes()).plan
    spec = deploy_of(result, "account").spec
    password = data_password(KEY, installation=INSTALLATION, kind=DataKind.POSTGRESQL,
                             resource=DB)

    assert {k: spec.env[k] for k in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER")} == {
        "DB_HOST": "10.0.0.3", "DB_PORT": "5432", "DB_NAME": DB, "DB_USER": DB}
    assert (spec.env["CACHE_USER"], spec.env["CACHE_PREFIX"]) == (CACHE, CACHE + ":")
    assert spec.secret_env["DB_PASSWORD"].reveal() == password.reveal()
    assert "DB_PASSWORD" not in spec.env
    assert str(spec.public_spec["secrets"]["DB_PASSWORD"]).startswith("hmac-sha256:")
    ensure = _by_subject(result, Subject.DATABASE).step
    assert isinstance(ensure, EnsureDatabase)
    assert ensure.password.reveal() == password.reveal()
    shown = result.render() + result.to_json()
    for change in result.changes:
        shown += repr(change.detail) + change.reason
    assert password.reveal() not in shown
    assert spec.secret_env["CACHE_PASSWORD"].reveal() not in shown


def test_a_converged_sandbox_plans_nothing_and_a_new_key_rotates_both_sides() -> None:
    observed = infra_nodes()
    desired = Desired(by_name(qa()))
    observed.apply(plan_pass(desired, observed).plan)

    assert plan_pass(desired, observed).plan.empty

    world = replace(desired.world(observed), spec_key=b"another-spec-hash-key")
    placements, _ = place(desired.sandboxes, world, ())
    allocations, _ = allocate(sandboxes=desired.sandboxes, placements=placements, existing=(),
                              world=world, now=NOW)
    rotated = plan(sandboxes=desired.sandboxes, world=world, placements=placements,
                   allocations=allocations)
    data = [c for c in rotated.changes if c.phase is Phase.DATA]
    assert [(c.action, c.reason) for c in data] == [
        (Action.UPDATE, "password changed (the spec-hash key changed)")] * 2


def test_a_deleted_sandbox_loses_its_data_after_its_containers() -> None:
    observed = infra_nodes()
    observed.apply(plan_pass(Desired(by_name(qa())), observed).plan)

    result = plan_pass(Desired({}), observed).plan

    phases = [c.phase for c in result.changes]
    assert phases[-2:] == [Phase.DATA_CLEANUP, Phase.DATA_CLEANUP]
    assert set(phases[:-2]) == {Phase.CLEANUP}
    drop = _by_subject(result, Subject.DATABASE)
    assert isinstance(drop.step, DropDatabase) and drop.step.database == DB
    assert drop.reason == "sandbox deleted"
    assert f"- database {DB} on {INFRA}" in result.render()
    observed.apply(result)
    assert observed.nodes[INFRA].data_services == {}


def test_an_entry_removed_from_the_sandbox_is_dropped_and_the_rest_kept() -> None:
    observed = infra_nodes()
    observed.apply(plan_pass(Desired(by_name(qa())), observed).plan)
    only_db = with_data(sandbox("QA", {"account": branch("main")}),
                        db={"postgresql": {"from": "qa-snapshot"}})

    result = plan_pass(Desired(by_name(only_db)), observed).plan

    assert [(c.phase, c.action, c.resource, c.reason) for c in result.changes
            if c.subject.is_data] == [
        (Phase.DATA_CLEANUP, Action.REMOVE, CACHE, "entry removed from the sandbox's data")]
    assert any(c.subject is Subject.SERVICE and c.action is Action.UPDATE
               for c in result.changes)  # the CACHE_* variables go


def test_a_suspended_sandbox_keeps_its_data_and_gets_none_made() -> None:
    observed = infra_nodes()
    observed.apply(plan_pass(Desired(by_name(qa())), observed).plan)

    asleep = plan_pass(Desired(by_name(qa(suspended=True))), observed).plan
    fresh = plan_pass(Desired(by_name(qa(suspended=True))), infra_nodes()).plan

    assert not [c for c in asleep.changes if c.subject.is_data]
    assert not [c for c in fresh.changes if c.subject.is_data]


def test_reset_reclones_and_an_incomplete_clone_is_made_again() -> None:
    observed = infra_nodes()
    desired = Desired(by_name(qa()))
    observed.apply(plan_pass(desired, observed).plan)
    world = desired.world(observed)
    placements, _ = place(desired.sandboxes, world, ())
    allocations, _ = allocate(sandboxes=desired.sandboxes, placements=placements, existing=(),
                              world=world, now=NOW)

    reset = plan(sandboxes=desired.sandboxes, world=world, placements=placements,
                 allocations=allocations, resets=frozenset({("QA", "db")}))

    assert rows(reset) == [(Phase.DATA, Action.RECREATE, Subject.DATABASE, DB)]
    assert isinstance(reset.changes[0].step, RecloneDatabase)
    assert f"-/+ database {DB} on {INFRA} (from qa-snapshot)" in reset.render()

    infra = observed.nodes[INFRA]
    key = (DataKind.POSTGRESQL, DB)
    infra.data_services[key] = infra.data_services[key].model_copy(
        update={"state": DataState.INCOMPLETE, "problem": "no ready marker"})
    healed = plan_pass(desired, observed).plan
    assert rows(healed) == [(Phase.DATA, Action.CREATE, Subject.DATABASE, DB)]
    assert "incomplete (no ready marker)" in healed.changes[0].reason


def test_a_changed_source_is_kept_and_said_so() -> None:
    observed = infra_nodes(sources=("qa-snapshot", "qa-dump"))
    observed.apply(plan_pass(Desired(by_name(qa())), observed).plan)
    moved = with_data(sandbox("QA", {"account": branch("main")}),
                      db={"postgresql": {"from": "qa-dump"}}, cache={"redis": {}})

    result = plan_pass(Desired(by_name(moved)), observed).plan

    assert result.empty
    assert any("cloned from qa-snapshot; the state says qa-dump" in n and
               "sdp-reconcile reset QA db" in n for n in result.notes)


def _only_problem(result: Plan) -> str:
    assert len(result.problems) == 1, result.render()
    return str(result.problems[0])


def test_a_source_the_node_does_not_offer_blocks_the_sandbox_at_the_entry() -> None:
    result = plan_pass(Desired(by_name(qa())), infra_nodes(sources=("other",))).plan

    assert result.changes == ()
    assert _only_problem(result) == (
        "state/sandboxes/QA.yaml:21:3: data.db: INFRA node infra-1 offers no source "
        "'qa-snapshot' (sources: other)")
    assert "QA" in result.blocked


@pytest.mark.parametrize("break_it, expected", [
    (lambda o: o.make_unreachable(INFRA), "INFRA node infra-1 is unreachable"),
    (lambda o: setattr(o.nodes[INFRA], "data_servers", [
        s.model_copy(update={"reachable": False, "problem": "connection refused"})
        for s in o.nodes[INFRA].data_servers]),
     "the postgresql server of INFRA node infra-1 does not answer (connection refused)"),
    (lambda o: setattr(o.nodes[INFRA], "data_servers", []),
     "INFRA node infra-1 manages no postgresql server"),
])
def test_an_infra_node_that_cannot_tell_leaves_the_sandbox_alone(
    break_it: object, expected: str,
) -> None:
    observed = infra_nodes()
    observed.apply(plan_pass(Desired(by_name(qa())), observed).plan)
    break_it(observed)  # type: ignore[operator]

    for desired in (Desired(by_name(qa())), Desired(by_name(replace(qa(), data={})))):
        result = plan_pass(desired, observed).plan
        assert not [c for c in result.changes if c.sandbox == "QA" and c.subject.is_data]
        if desired.sandboxes["QA"].data:
            assert any(expected in str(p) for p in result.problems), result.render()
            assert result.changes == ()


def test_desired_data_is_one_value_per_entry() -> None:
    world = Desired(by_name(qa())).world(infra_nodes())
    data = desired_data(by_name(qa()), world)

    assert sorted(data.services) == [("QA", "cache"), ("QA", "db")]
    assert data.services[("QA", "db")].resource == DB
    assert len(set(data.passwords())) == 2
    assert data.problems == ()




def test_status_shows_each_data_service_with_its_state_and_source() -> None:
    observed = infra_nodes()
    desired = Desired(by_name(qa()))
    first = plan_pass(desired, observed)
    outcome = observed.apply(first.plan)
    data = desired_data(desired.sandboxes, first.world)

    pending = status_rows(sandboxes=desired.sandboxes, plan=first.plan, outcome=None,
                          world=first.world, placements=first.placements,
                          allocations=first.allocations, data=data)
    done = status_rows(sandboxes=desired.sandboxes, plan=first.plan, outcome=outcome,
                       world=first.world, placements=first.placements,
                       allocations=first.allocations, data=data)

    def row(rows: list[StatusRow], service: str) -> StatusRow:
        (found,) = [r for r in rows if r.service == service]
        return found

    assert (row(pending, "data.db").reason, row(pending, "data.db").sync) == (
        "ChangesPending", "OutOfSync")
    db = row(done, "data.db")
    assert (db.node, db.sync, db.health, db.reason, db.branch, db.route) == (
        INFRA, "InSync", "Healthy", "Ready", "qa-snapshot", "postgresql")
    assert db.url == f"postgresql://10.0.0.3:5432/{DB}"
    assert db.message == "ready, from qa-snapshot"
    assert row(done, "data.cache").message == f"ready, keys {CACHE}:*"


def test_a_held_sandbox_keeps_its_data() -> None:
    observed = infra_nodes()
    observed.apply(plan_pass(Desired(by_name(qa())), observed).plan)
    world = Desired({}).world(observed)

    result = plan(sandboxes={}, world=world, placements={}, allocations=[],
                  held=frozenset({"QA"}))

    assert result.changes == ()


def test_a_deleted_sandbox_keeps_its_data_while_a_micro_node_is_silent() -> None:
    observed = infra_nodes()
    observed.apply(plan_pass(Desired(by_name(qa())), observed).plan)
    observed.make_unreachable(MICRO)

    result = plan_pass(Desired({}), observed).plan

    assert not [c for c in result.changes if c.subject.is_data]
    assert any(f"database {DB} of sandbox QA is kept this pass: node {MICRO} did not answer"
               in n for n in result.notes), result.render()
