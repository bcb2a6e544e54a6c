"""Whole-state rules for the ``data:`` entries of sandboxes and templates (docs/infra.md).

Like ``rules.py`` (whose ``RULES`` runs these too), each problem is placed at the entry it is
about: the ``node:`` of an entry names an INFRA node, an entry without one needs exactly one
INFRA node in ``nodes.yaml``; the names SDP gives an entry's database, Redis user or vhost fit
and belong to one (sandbox, entry) only; and the variables a sandbox's containers get from its
entries are set once: by one entry, and not also by an environment the sandbox uses (which one
would win is a guess, so neither is chosen). Plan-time checks (the source exists on the node,
its server is reachable) belong to the planner (``dataplanning.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

from sdp_node.naming import slug
from sdp_node.protocol import DataKind
from sdp_reconciler.state.documents import Document, LoadedState
from sdp_reconciler.state.locations import Problem
from sdp_reconciler.state.models import (
    NodeType,
    SandboxFile,
    TemplateFile,
    variable_collisions,
    variable_names,
)
from sdp_reconciler.state.resolve import resolve_sandbox, template_chain
from sdp_reconciler.state.resolved import ResolvedSandbox


def data_nodes_exist(state: LoadedState) -> Iterator[Problem]:
    """Each ``node:`` is an INFRA node; without one, there is exactly one INFRA node."""
    node_types = {n.name: n.type for n in state.nodes.model.nodes}
    infra = sorted(n for n, t in node_types.items() if t is NodeType.INFRA)
    documents: list[Document[SandboxFile] | Document[TemplateFile]] = [
        *state.sandboxes.values(), *state.templates.values()]
    for document in documents:
        for name, entry in sorted(document.model.data.items()):
            kind = entry.kind.value
            node = entry.node
            if node is None:
                if not infra:
                    yield Problem(
                        document.at("data", name), f"data.{name}",
                        "nodes.yaml has no INFRA node to hold this sandbox's data services: "
                        "add one (type: INFRA) or remove the entry",
                    )
                elif len(infra) > 1:
                    yield Problem(
                        document.at("data", name), f"data.{name}",
                        f"nodes.yaml has several INFRA nodes ({', '.join(infra)}): say which "
                        f"one holds this entry with '{kind}: {{node: NAME}}'",
                    )
                continue
            path = ("data", name, kind, "node")
            if node not in node_types:
                yield Problem(
                    document.at(*path), ".".join(path),
                    f"unknown node {node!r}; nodes.yaml defines {', '.join(sorted(node_types))}",
                )
            elif node_types[node] is not NodeType.INFRA:
                yield Problem(
                    document.at(*path), ".".join(path),
                    f"node {node!r} is a {node_types[node].value} node; a data service needs "
                    "an INFRA node",
                )


def _resolved(state: LoadedState) -> Iterator[ResolvedSandbox]:
    by_slug: set[str] = set()
    for name in sorted(state.sandboxes):
        if slug(name) in by_slug:
            continue  # the slug collision is reported by names_do_not_collide
        by_slug.add(slug(name))
        chain = template_chain(state, state.sandboxes[name].model.extends)
        if chain and chain[-1].model.extends is not None:
            continue  # a cycle or an unknown template, reported on its own
        resolved = resolve_sandbox(state, name)
        if resolved.data:
            yield resolved


_NOUN = {DataKind.POSTGRESQL: "database", DataKind.REDIS: "Redis user",
         DataKind.RABBITMQ: "RabbitMQ vhost"}


def data_names_fit(state: LoadedState) -> Iterator[Problem]:
    """The database, Redis user or vhost of each entry fits, and names one entry only."""
    names = state.nodes.model.names
    owners: dict[tuple[str, str], tuple[str, str]] = {}
    for sandbox in _resolved(state):
        for name, data in sandbox.data.items():
            problem = names.data_problem(sandbox.name, name)
            if problem:
                yield Problem(data.origin, f"data.{name}", problem)
                continue
            kind = data.entry.kind
            resource = {DataKind.POSTGRESQL: names.database, DataKind.REDIS: names.redis_user,
                        DataKind.RABBITMQ: names.rabbitmq_vhost}[kind](sandbox.name, name)
            owner = owners.setdefault((kind.value, resource), (sandbox.name, name))
            if owner != (sandbox.name, name):
                yield Problem(
                    data.origin, f"data.{name}",
                    f"{_NOUN[kind]} name {resource!r} of sandbox {sandbox.name!r} entry "
                    f"{name!r} is already that of sandbox {owner[0]!r} entry {owner[1]!r}: "
                    "names differing only in case or '_'/'-' cannot coexist; rename the entry",
                )


def data_variables_are_set_once(state: LoadedState) -> Iterator[Problem]:
    """No variable is injected by two entries, or by an entry and an environment."""
    for sandbox in _resolved(state):
        entries = {name: d.entry for name, d in sandbox.data.items()}
        for variable, name, earlier in variable_collisions(entries):
            yield Problem(
                sandbox.data[name].origin, f"data.{name}",
                f"entry {name!r} would set {variable}, which entry {earlier!r} sets too: "
                f"rename one with '{entries[name].kind.value}: {{env: {{SETTING: OTHER}}}}'",
            )
        environments = {s.environment for s in sandbox.services.values() if s.spec.deployed}
        if sandbox.gateway is not None:
            environments.add(sandbox.gateway.environment)
        set_by: dict[str, str] = {}
        for environment in sorted(e for e in environments if e in state.environments):
            model = state.environments[environment].model
            for variable in [*model.variables, *model.secrets]:
                set_by.setdefault(variable, environment)
        for name, data in sandbox.data.items():
            for variable in variable_names(name, data.entry).values():
                if variable in set_by:
                    yield Problem(
                        data.origin, f"data.{name}",
                        f"entry {name!r} sets {variable}, which environment "
                        f"{set_by[variable]!r} sets too: remove it there or rename it here "
                        f"with '{data.entry.kind.value}: {{env: {{SETTING: OTHER}}}}'",
                    )


DATA_RULES = [data_nodes_exist, data_names_fit, data_variables_are_set_once]
