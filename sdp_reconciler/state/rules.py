"""Whole-state rules: what no single file can check on its own.

Each rule is a small function from the loaded state to the problems it finds, each placed at
the key or value it is about. ``check_state`` runs them all; the loader reports their problems
together with every syntax and schema problem. Rules that need the agents (does a repository
exist on a MICRO node?) belong to the planner.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping

from sdp_node.naming import GATEWAY, slug
from sdp_reconciler.state.datarules import DATA_RULES
from sdp_reconciler.state.documents import Document, LoadedState
from sdp_reconciler.state.locations import Location, Problem, dotted
from sdp_reconciler.state.models import NodeType, SecretRef
from sdp_reconciler.state.resolve import resolved as resolved_sandbox
from sdp_reconciler.state.resolve import template_chain
from sdp_reconciler.state.trust import resolved_file

Rule = Callable[[LoadedState], Iterator[Problem]]
Claims = dict[tuple[NodeType | None, int], list[tuple[str | None, str, str, Location]]]
_SECRETISH = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|CREDENTIAL", re.I)


def check_state(state: LoadedState) -> list[Problem]:
    problems: list[Problem] = []
    for rule in RULES:
        problems.extend(rule(state))
    return problems


def _documents(state: LoadedState) -> Iterator[tuple[str, Document]]:  # type: ignore[type-arg]
    for sandbox in state.sandboxes.values():
        yield "sandbox", sandbox
    for template in state.templates.values():
        yield "template", template
    for environment in state.environments.values():
        yield "environment", environment


def names_match_files(state: LoadedState) -> Iterator[Problem]:
    for kind, document in _documents(state):
        name = getattr(document.model, kind)
        if name != document.stem:
            yield Problem(
                document.at(kind), kind,
                f"{kind} name {name!r} differs from its file name {document.stem!r}: "
                f"rename the file or set '{kind}: {document.stem}'",
            )


def nodes_are_consistent(state: LoadedState) -> Iterator[Problem]:
    nodes = state.nodes
    seen: dict[str, int] = {}
    urls: dict[str, int] = {}
    for index, node in enumerate(nodes.model.nodes):
        if node.name in seen:
            yield Problem(
                nodes.at("nodes", index, "name"), f"nodes[{index}].name",
                f"node {node.name!r} is already defined at nodes[{seen[node.name]}]",
            )
        seen.setdefault(node.name, index)
        if node.agent_url is None:
            continue
        if node.agent_url in urls:
            yield Problem(
                nodes.at("nodes", index, "agent_url"), f"nodes[{index}].agent_url",
                f"agent URL {node.agent_url!r} is already used by nodes[{urls[node.agent_url]}]",
            )
        urls.setdefault(node.agent_url, index)
    for i, a in enumerate(nodes.model.nodes):
        for b in nodes.model.nodes[:i]:
            ra, rb = a.port_range(), b.port_range()
            if a.public_address == b.public_address and ra.first <= rb.last and rb.first <= ra.last:
                yield Problem(
                    nodes.at("nodes", i, "ports"), f"nodes[{i}].ports",
                    f"port range {ra.first}-{ra.last} of node {a.name!r} overlaps "
                    f"{rb.first}-{rb.last} of node {b.name!r} on the same address "
                    f"{a.public_address}: give them disjoint ranges",
                )


def names_do_not_collide(state: LoadedState) -> Iterator[Problem]:
    names = state.nodes.model.names
    by_slug: dict[str, str] = {}
    for name in sorted(state.sandboxes):
        other = by_slug.get(slug(name))
        if other is not None:
            yield Problem(
                state.sandboxes[name].at("sandbox"), "sandbox",
                f"sandbox {name!r} maps to the same resource names as sandbox {other!r} "
                f"({names.network(name)}): names differing only in case or '_'/'-' "
                "cannot coexist",
            )
        else:
            by_slug[slug(name)] = name
    owners: dict[str, tuple[str, str]] = {}
    for name in sorted(state.sandboxes):
        if by_slug.get(slug(name)) != name:
            continue
        resolved = resolved_sandbox(state, name)
        for service in [GATEWAY, *sorted(resolved.services)]:
            if service != GATEWAY and slug(service) == GATEWAY:
                continue  # reported by gateway_is_not_a_service; a second message only confuses
            location = (
                resolved.services[service].origin if service in resolved.services
                else state.sandboxes[name].at("sandbox")
            )
            problem = names.problem(name, service)
            if problem:
                yield Problem(location, f"services.{service}", problem)
                continue
            resource = names.container(name, service)
            if resource in owners and owners[resource] != (name, service):
                other_sandbox, other_service = owners[resource]
                yield Problem(
                    location, f"services.{service}",
                    f"container name {resource!r} of sandbox {name!r} service {service!r} is "
                    f"also that of sandbox {other_sandbox!r} service {other_service!r}: "
                    "rename one of them",
                )
            owners.setdefault(resource, (name, service))


def gateway_is_not_a_service(state: LoadedState) -> Iterator[Problem]:
    for kind, document in _documents(state):
        if kind == "environment":
            continue
        for service in document.model.services:
            if slug(service) == GATEWAY:
                yield Problem(
                    document.at("services", service, key=True), f"services.{service}",
                    f"{service!r} is not a service name (it names the sandbox's gateway "
                    "container): configure the gateway under the top-level 'gateway:' key",
                )


def references_exist(state: LoadedState) -> Iterator[Problem]:
    node_types = {n.name: n.type for n in state.nodes.model.nodes}
    for kind, document in _documents(state):
        if kind == "environment":
            continue
        model = document.model
        if model.extends is not None and model.extends not in state.templates \
                and ("template", model.extends) not in state.unreadable:
            yield Problem(
                document.at("extends"), "extends",
                f"unknown template {model.extends!r}{_known(state.templates)}",
            )
        environments: list[tuple[tuple[str, ...], str | None]] = [
            (("environment",), model.environment)
        ]
        nodes: list[tuple[tuple[str, ...], str | None, NodeType]] = []
        if model.gateway is not None:
            environments.append((("gateway", "environment"), model.gateway.environment))
            nodes.append((("gateway", "node"), model.gateway.node, NodeType.GATEWAY))
        for service, spec in model.services.items():
            environments.append((("services", service, "environment"), spec.environment))
            nodes.append((("services", service, "node"), spec.node, NodeType.MICRO))
        for path, environment in environments:
            if environment is not None and environment not in state.environments \
                    and ("environment", environment) not in state.unreadable:
                yield Problem(
                    document.at(*path), ".".join(path),
                    f"unknown environment {environment!r}{_known(state.environments)}",
                )
        for path, node, wanted in nodes:
            if node is None:
                continue
            if node not in node_types:
                yield Problem(
                    document.at(*path), ".".join(path),
                    f"unknown node {node!r}; nodes.yaml defines {', '.join(sorted(node_types))}",
                )
            elif node_types[node] is not wanted:
                yield Problem(
                    document.at(*path), ".".join(path),
                    f"node {node!r} is a {node_types[node].value} node; this needs a "
                    f"{wanted.value} node",
                )


def _known(table: Mapping[str, object]) -> str:
    return f"; known: {', '.join(sorted(table))}" if table else "; there are none"


def templates_have_no_cycles(state: LoadedState) -> Iterator[Problem]:
    for name, document in sorted(state.templates.items()):
        path = [name]
        current = document.model.extends
        while current is not None and current in state.templates:
            if current == name:
                yield Problem(
                    document.at("extends"), "extends",
                    f"template cycle: {' -> '.join([*path, name])}",
                )
                break
            if current in path:
                break  # a cycle further up; reported at its own templates
            path.append(current)
            current = state.templates[current].model.extends


def templates_hold_no_ports(state: LoadedState) -> Iterator[Problem]:
    for document in state.templates.values():
        model = document.model
        if model.gateway is not None and model.gateway.port is not None:
            yield Problem(
                document.at("gateway", "port"), "gateway.port",
                "templates hold no ports: ports belong to each sandbox (set it in the "
                "sandbox file, or leave it out and SDP allocates one)",
            )
        for service, spec in model.services.items():
            if spec.port is not None:
                yield Problem(
                    document.at("services", service, "port"), f"services.{service}.port",
                    "templates hold no ports: ports belong to each sandbox (set it in the "
                    "sandbox file, or leave it out and SDP allocates one)",
                )


def sandboxes_are_complete(state: LoadedState) -> Iterator[Problem]:
    nodes = state.nodes.model.nodes
    has_micro = any(n.type is NodeType.MICRO for n in nodes)
    has_gateway = any(n.type is NodeType.GATEWAY for n in nodes)
    for name, document in sorted(state.sandboxes.items()):
        if _chain_is_broken(state, document.model.extends):
            continue  # the cycle, unknown or unreadable template is reported on its own
        resolved = resolved_sandbox(state, name)
        if resolved.gateway is None or resolved.gateway.spec.branch is None:
            yield Problem(
                document.at("gateway") if document.model.gateway else document.at("sandbox"),
                "gateway.branch",
                "sandbox has no gateway branch: set 'gateway: {branch: NAME}' here or in "
                "its template",
            )
        elif not has_gateway:
            yield Problem(
                document.at("sandbox"), "sandbox",
                "nodes.yaml has no GATEWAY node to run this sandbox's gateway",
            )
        if resolved.deployed_services() and not has_micro:
            yield Problem(
                _first_written(document, ("services",), ("extends",)), "services",
                "nodes.yaml has no MICRO node to run this sandbox's services",
            )
        lifecycle = resolved.lifecycle
        if lifecycle.retention is not None and lifecycle.expire_after is None:
            yield Problem(
                _first_written(document, ("lifecycle", "retention"), ("lifecycle",), ("extends",)),
                "lifecycle.retention",
                "retention only applies after expiry: set lifecycle.expire_after too",
            )


def _first_written(document: Document, *paths: tuple[str, ...]) -> Location:  # type: ignore[type-arg]
    """Where the first of ``paths`` is written in ``document``, else its ``sandbox`` key.

    A value inherited from a template is not in the sandbox file; without this the problem
    would point at line 1, the schema comment.
    """
    for path in paths:
        if path in document.source.values:
            return document.at(*path)
    return document.at("sandbox")


def _chain_is_broken(state: LoadedState, start: str | None) -> bool:
    """Whether the templates from ``start`` end in a cycle or an unknown or unreadable one.

    Such a sandbox is missing what its templates would give it; saying so again (no gateway
    branch) would only hide the cause.
    """
    chain = template_chain(state, start)
    last = chain[-1].model.extends if chain else start
    return last is not None


def ports_are_valid(state: LoadedState) -> Iterator[Problem]:
    node_by_name = {n.name: n for n in state.nodes.model.nodes}
    by_type: dict[NodeType, list[str]] = defaultdict(list)
    for each in state.nodes.model.nodes:
        by_type[each.type].append(each.name)
    claims: Claims = defaultdict(list)
    for name, document in sorted(state.sandboxes.items()):
        model = document.model
        entries: list[tuple[str, tuple[str, ...], int | None, str | None, NodeType]] = []
        if model.gateway is not None:
            entries.append((GATEWAY, ("gateway", "port"), model.gateway.port, model.gateway.node,
                            NodeType.GATEWAY))
        for service, spec in model.services.items():
            entries.append((service, ("services", service, "port"), spec.port, spec.node,
                            NodeType.MICRO))
        for service, path, port, node, node_type in entries:
            if port is None:
                continue
            location = document.at(*path)
            candidates = [node] if node in node_by_name else by_type[node_type]
            ranges = [node_by_name[c].port_range() for c in candidates if c is not None]
            if candidates and not any(port in r for r in ranges):
                shown = ", ".join(f"{c} {r.first}-{r.last}" for c, r in zip(candidates, ranges,
                                                                             strict=True))
                yield Problem(
                    location, ".".join(path),
                    f"port {port} is outside the {node_type.value} node range ({shown})",
                )
            claims[(node_type, port)].append((node, name, service, location))
    for (_node_type, port), owners in sorted(claims.items()):
        for index, (node, _sandbox, service, location) in enumerate(owners):
            for other_node, other_sandbox, other_service, _ in owners[:index]:
                if node is None or other_node is None or node == other_node:
                    yield Problem(
                        location, f"services.{service}.port" if service != GATEWAY
                        else "gateway.port",
                        f"port {port} is already claimed by sandbox {other_sandbox!r} "
                        f"service {other_service!r}",
                    )
                    break
    if state.ports is not None:
        yield from _allocations_are_valid(state, claims)


def _allocations_are_valid(
    state: LoadedState, claims: Claims
) -> Iterator[Problem]:
    assert state.ports is not None
    document = state.ports
    nodes = {n.name for n in state.nodes.model.nodes}
    types = {n.name: n.type for n in state.nodes.model.nodes}
    by_name = {n.name: n for n in state.nodes.model.nodes}
    by_port: dict[tuple[str, int], int] = {}
    by_owner: dict[tuple[str, str], int] = {}
    for index, allocation in enumerate(document.model.allocations):
        path = ("allocations", index)
        if allocation.node not in nodes:
            yield Problem(
                document.at(*path, "node"), f"allocations[{index}].node",
                f"unknown node {allocation.node!r}",
            )
        key = (allocation.node, allocation.port)
        if key in by_port:
            yield Problem(
                document.at(*path, "port"), f"allocations[{index}].port",
                f"port {allocation.port} on node {allocation.node!r} is allocated twice "
                f"(also allocations[{by_port[key]}])",
            )
        by_port.setdefault(key, index)
        owner = (allocation.sandbox, allocation.service)
        if owner in by_owner:
            yield Problem(
                document.at(*path), f"allocations[{index}]",
                f"sandbox {allocation.sandbox!r} service {allocation.service!r} has two "
                f"allocations (also allocations[{by_owner[owner]}])",
            )
        by_owner.setdefault(owner, index)
        holder = by_name.get(allocation.node)
        if holder is not None and allocation.port not in holder.port_range():
            span = holder.port_range()
            yield Problem(
                document.at(*path, "port"), f"allocations[{index}].port",
                f"port {allocation.port} is outside the range of node {allocation.node!r}, "
                f"{span.first}-{span.last} (nodes.yaml): remove this allocation and SDP "
                "allocates a port in the range",
            )
        node_type = types.get(allocation.node)
        for node, sandbox, service, location in claims.get((node_type, allocation.port), []):
            if (sandbox, service) != owner and node in (None, allocation.node):
                yield Problem(
                    location, f"services.{service}.port" if service != GATEWAY
                    else "gateway.port",
                    f"port {allocation.port} is allocated to sandbox {allocation.sandbox!r} "
                    f"service {allocation.service!r} in ports.yaml: pick another port",
                )


def agents_are_pinned_on_the_host(state: LoadedState) -> Iterator[Problem]:
    """Agent URLs, tokens and the spec-hash key belong to the reconciler host, not the state."""
    nodes = state.nodes
    host = state.host
    if nodes.model.spec_hash_key is not None:
        yield Problem(
            nodes.at("spec_hash_key", key=True), "spec_hash_key",
            "the spec-hash key is pinned on the reconciler host now: move this reference to "
            "reconciler.yaml's spec_hash_key and remove it here (see docs/operations.md)",
        )
    if host.installation is not None and host.installation != nodes.model.installation:
        yield Problem(
            nodes.at("installation"), "installation",
            f"this reconciler host reconciles installation {host.installation!r} "
            f"(reconciler.yaml), not {nodes.model.installation!r}",
        )
    for index, node in enumerate(nodes.model.nodes):
        path = ("nodes", index)
        if node.agent_token is not None:
            yield Problem(
                nodes.at(*path, "agent_token", key=True), f"nodes[{index}].agent_token",
                f"agent tokens are pinned on the reconciler host now: move this reference to "
                f"reconciler.yaml's agents.{node.name}.token and remove it here",
            )
        if host.pins is None:
            continue
        pinned = host.pins.get(node.name)
        if pinned is None:
            yield Problem(
                nodes.at(*path, "name"), f"nodes[{index}].name",
                f"node {node.name!r} has no agent pinned on this reconciler host: add "
                f"agents.{node.name}: {{url: ..., token: ...}} to reconciler.yaml",
            )
        elif node.agent_url is not None and node.agent_url != pinned:
            yield Problem(
                nodes.at(*path, "agent_url"), f"nodes[{index}].agent_url",
                f"agent URL {node.agent_url!r} differs from the URL pinned for node "
                f"{node.name!r} on this reconciler host ({pinned}); the state cannot move an "
                "agent: fix or remove agent_url here, or change the pin in reconciler.yaml",
            )


def secrets_are_references(state: LoadedState) -> Iterator[Problem]:
    references: list[tuple[Document, tuple[str | int, ...], SecretRef]] = []  # type: ignore[type-arg]
    if state.notifications is not None:
        for index, notification in enumerate(state.notifications.model.notifications):
            if notification.webhook is not None:
                references.append((state.notifications, ("notifications", index, "webhook"),
                                   notification.webhook))
            email = notification.email
            logins = (("username", email.username), ("password", email.password)) if email \
                else ()
            for key, login in logins:
                if login is not None:
                    references.append((state.notifications,
                                       ("notifications", index, "email", key), login))
    for document in state.environments.values():
        model = document.model
        for variable, value in model.variables.items():
            if _SECRETISH.search(variable) and value.strip():
                yield Problem(
                    document.at("variables", variable), f"variables.{variable}",
                    f"{variable} looks like a secret but has a literal value: move it to "
                    "'secrets:' as a reference ({env: VARIABLE} or {file: PATH})",
                )
        for name, reference in model.secrets.items():
            references.append((document, ("secrets", name), reference))
        for index, env_file in enumerate(model.files):
            if env_file.secret is not None:
                references.append((document, ("files", index, "secret"), env_file.secret))
    root = state.root.resolve()
    policy = state.host.policy
    for document, path, reference in references:
        if reference.env is not None:
            problem = policy.env_problem(reference.env)
            if problem:
                yield Problem(document.at(*path, "env"), dotted((*path, "env")), problem)
            continue
        assert reference.file is not None
        resolved = resolved_file(reference.file, state.root)
        if resolved == root or root in resolved.parents:
            yield Problem(
                document.at(*path, "file"), dotted((*path, "file")),
                f"secret file {reference.file!r} is inside the state directory and would be "
                "committed with it: keep secret files outside the state repository",
            )
            continue
        problem = policy.file_problem(resolved, reference.file)
        if problem:
            yield Problem(document.at(*path, "file"), dotted((*path, "file")), problem)


def notifications_are_distinct(state: LoadedState) -> Iterator[Problem]:
    if state.notifications is None:
        return
    seen: dict[str, int] = {}
    for index, notification in enumerate(state.notifications.model.notifications):
        if notification.name in seen:
            yield Problem(
                state.notifications.at("notifications", index, "name"),
                f"notifications[{index}].name",
                f"notification {notification.name!r} is already defined at "
                f"notifications[{seen[notification.name]}]",
            )
        seen.setdefault(notification.name, index)


RULES: list[Rule] = [
    names_match_files,
    nodes_are_consistent,
    agents_are_pinned_on_the_host,
    gateway_is_not_a_service,
    references_exist,
    templates_have_no_cycles,
    templates_hold_no_ports,
    names_do_not_collide,
    sandboxes_are_complete,
    ports_are_valid,
    secrets_are_references,
    notifications_are_distinct,
    *DATA_RULES,
]
