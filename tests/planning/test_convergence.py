"""Properties over random small installations, run against ``InMemoryNodes``.

* observed exactly as desired → the plan is empty;
* from any earlier state, with containers stopped, removed or routes edited by hand, one
  successful pass converges: planning again finds nothing to do;
* when service deploys fail, the gateway keeps each failed service's previous route (for a new
  gateway: the commit's own value), and the next successful pass converges.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from sdp_node.naming import DEFAULT_NAMES, GATEWAY
from sdp_reconciler.state.models import GatewaySpec, ServiceSpec
from tests.planning.builders import (
    HEADS,
    OCP,
    Desired,
    branch,
    by_name,
    desired_spec,
    environment,
    nodes,
    ocp,
    plan_pass,
    reconcile_once,
    sandbox,
    sha,
    target,
)
from tests.planning.fakes import InMemoryNodes, observed_container

SERVICES = ("account", "payment", "user")
ENVIRONMENTS = {
    "env-1": environment("env-1", {"LOG": "debug"}, {"JWT_SECRET": "one"}),
    "env-2": environment("env-2", {"LOG": "info", "DB_HOST": "db"}, {"JWT_SECRET": "two"}),
}
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def entry(kind: str, service: str, environment_name: str | None) -> ServiceSpec | None:
    extra = {"environment": environment_name} if environment_name else {}
    if kind == "main":
        return branch("main", **extra)
    if kind == "pinned":
        return branch("main", commit=sha("0ddba11"), **extra)
    if kind == "feature":
        return branch("feature/login-error", **extra) if service == "account" else \
            branch("main", **extra)
    if kind == "ocp":
        return ocp()
    if kind == "target":
        return target(f"https://{service}.staging.company.invalid")
    return None


@st.composite
def states(draw: st.DrawFn) -> Desired:
    names = draw(st.sets(st.sampled_from(["a", "b", "qa"]), max_size=3))
    sandboxes = []
    for name in sorted(names):
        services = {}
        for service in SERVICES:
            spec = entry(
                draw(st.sampled_from(["main", "pinned", "feature", "ocp", "target", "absent"])),
                service, draw(st.sampled_from([None, None, "env-1", "env-2"])))
            if spec is not None:
                services[service] = spec
        sandboxes.append(sandbox(
            name, services, gateway=GatewaySpec(branch=draw(st.sampled_from(
                ["develop", "release"]))),
            environment=draw(st.sampled_from([None, "env-1", "env-2"])),
            suspended=draw(st.sampled_from([False, False, False, True])),
        ))
    heads = {
        **HEADS,
        "account": {"main": draw(st.sampled_from([sha("a1b2c3d"), sha("e4f5a6b")])),
                    "feature/login-error": sha("c0ffee1")},
        "erangel": {"develop": draw(st.sampled_from([sha("9a7e4a7"), sha("5ca1ab1")])),
                    "release": sha("7e1ea5e")},
    }
    restarts = draw(st.sampled_from([frozenset(), frozenset(), frozenset({("qa", None)}),
                                     frozenset({("a", "account")})]))
    return Desired(by_name(*sandboxes), heads=heads, environments=ENVIRONMENTS,
                   restarts=restarts)


def drift(data: st.DataObject, observed: InMemoryNodes) -> None:
    """What people do by hand: stop or remove containers, edit a gateway's routes."""
    containers = sorted({name for n in observed.nodes.values() for name in n.containers})
    for _ in range(data.draw(st.integers(0, 3), label="hand edits")):
        if not containers:
            return
        name = data.draw(st.sampled_from(containers), label="container")
        what = data.draw(st.sampled_from(["stop", "remove", "routes"]), label="edit")
        if what == "stop":
            observed.stop_by_hand(name)
        elif what == "remove":
            observed.remove_by_hand(name)
        elif observed.gateway(name) is not None:
            key = data.draw(st.sampled_from([*SERVICES, "ledger"]), label="key")
            observed.edit_routes_by_hand(name, **{f"{key}_url": "http://10.9.9.9:9"})


def without_restarts(desired: Desired) -> Desired:
    return replace(desired, restarts=frozenset())


@SETTINGS
@given(desired=states())
def test_observed_exactly_as_desired_plans_nothing(desired: Desired) -> None:
    desired = without_restarts(desired)
    observed = nodes()
    _, outcome, desired = reconcile_once(desired, observed)
    assert not outcome.failed_steps()
    result = plan_pass(desired, observed).plan
    assert result.changes == (), result.render()
    assert result.problems == ()


@SETTINGS
@given(desired=states())
def test_containers_built_from_desired_specs_plan_nothing(desired: Desired) -> None:
    """The same, with the observed containers built by hand from ``desired_spec``."""
    desired = without_restarts(desired)
    reference = nodes()
    _, _, desired = reconcile_once(desired, reference)
    observed = nodes()
    for name, node_view in reference.nodes.items():
        rebuilt = observed.nodes[name]
        rebuilt.networks = dict(node_view.networks)
        rebuilt.gateways = dict(node_view.gateways)
        for container in node_view.containers.values():
            sandbox_name, service = container.labels["sdp.sandbox"], container.labels["sdp.service"]
            spec = desired_spec(replace(desired, ports_file=desired.ports_file), sandbox_name,
                                service)
            rebuilt.containers[container.name] = observed_container(
                rebuilt.labels(), spec, image=container.image, id=container.id,
                state=container.state)
            rebuilt.last_applied[container.name] = dict(spec.public_spec)
    result = plan_pass(desired, observed).plan
    assert result.changes == (), result.render()


@SETTINGS
@given(before=states(), after=states(), data=st.data())
def test_one_successful_pass_converges(before: Desired, after: Desired,
                                       data: st.DataObject) -> None:
    observed = nodes()
    _, _, before = reconcile_once(before, observed)
    drift(data, observed)
    after = replace(after, ports_file=before.ports_file)
    _, outcome, after = reconcile_once(after, observed)
    assert not outcome.failed_steps()
    again = plan_pass(without_restarts(after), observed).plan
    assert again.changes == (), again.render()
    assert again.problems == ()
    sent = len(observed.applied)
    reconcile_once(without_restarts(after), observed)
    assert len(observed.applied) == sent, "a second pass makes no call that changes anything"


def route_keys(desired: Desired, sandbox_name: str) -> list[str]:
    return [s for s, entry in desired.sandboxes[sandbox_name].services.items()
            if entry.spec.deployed]


@SETTINGS
@given(before=states(), after=states(), data=st.data())
def test_a_failed_service_keeps_its_previous_route_and_the_next_pass_heals(
    before: Desired, after: Desired, data: st.DataObject,
) -> None:
    observed = nodes()
    _, _, before = reconcile_once(without_restarts(before), observed)
    after = replace(after, ports_file=before.ports_file)
    candidates = sorted(DEFAULT_NAMES.container(s, service)
                        for s, resolved in after.sandboxes.items()
                        for service in route_keys(after, s))
    failing = set(data.draw(st.lists(st.sampled_from(candidates), unique=True)
                            if candidates else st.just([]), label="failing"))
    live_before = {
        s: dict(g.live_routes) for s in after.sandboxes
        if (g := observed.gateway(DEFAULT_NAMES.container(s, GATEWAY))) is not None
    }
    result, outcome, after = reconcile_once(after, observed, failing=failing)
    failed_services = {
        (c.sandbox, c.service) for c in result.plan.changes
        if c.step_id in outcome.failed_steps() and c.service is not None
    }
    for sandbox_name, service in failed_services:
        gateway = observed.gateway(DEFAULT_NAMES.container(sandbox_name, GATEWAY))
        if gateway is None or service == GATEWAY:
            continue
        previous = live_before.get(sandbox_name, {}).get(service, OCP[service])
        assert gateway.live_routes[service] == previous, (sandbox_name, service,
                                                          result.plan.render())
    _, healed, after = reconcile_once(after, observed)
    assert not healed.failed_steps()
    again = plan_pass(without_restarts(after), observed).plan
    assert again.changes == (), again.render()
