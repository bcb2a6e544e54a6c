"""Templates applied: each sandbox as it is meant to run, with where each part was written.

A sandbox may ``extends`` a template, which may extend another (the reference is live: a
changed template changes every sandbox that uses it). Merging, from the root template down to
the sandbox file:

* an entry under ``services`` replaces the same service's entry of the layer below *whole*
  (``account: {use_ocp: true}`` over ``account: {branch: x, port: 9001}`` is simply OCP);
* ``gateway``, ``resources`` and ``lifecycle`` merge key by key (a sandbox can set only
  ``gateway.port`` and keep the template's ``gateway.branch``);
* ``environment`` replaces;
* an entry under ``data`` replaces the same entry of the layer below *whole*, like a service;
  entries a layer does not name are inherited.

A service's environment is its own ``environment`` or else the sandbox's; its resources are the
sandbox's merged key by key with its own. Pure functions over loaded documents.
"""

from __future__ import annotations

from typing import Any

from sdp_reconciler.state.documents import Document, LoadedState
from sdp_reconciler.state.locations import Location
from sdp_reconciler.state.models import (
    GatewaySpec,
    Lifecycle,
    Resources,
    SandboxFile,
    ServiceSpec,
    TemplateFile,
)
from sdp_reconciler.state.resolved import (
    ResolvedData,
    ResolvedGateway,
    ResolvedSandbox,
    ResolvedService,
)

__all__ = ["ResolvedData", "ResolvedGateway", "ResolvedSandbox", "ResolvedService", "resolve_all",
           "resolve_sandbox", "resolved", "template_chain"]


def template_chain(state: LoadedState, start: str | None) -> list[Document[TemplateFile]]:
    """Templates from ``start`` up to its root, most specific first; stops on cycles."""
    chain: list[Document[TemplateFile]] = []
    seen: set[str] = set()
    name = start
    while name is not None and name not in seen and name in state.templates:
        seen.add(name)
        document = state.templates[name]
        chain.append(document)
        name = document.model.extends
    return chain


def merge_keys(base: Any, top: Any) -> Any:
    """Merge two models of one type key by key: keys set in ``top`` win."""
    if base is None:
        return top
    if top is None:
        return base
    values = {k: getattr(base, k) for k in base.model_fields_set}
    values.update({k: getattr(top, k) for k in top.model_fields_set})
    return type(top).model_validate(values)


def resolve_sandbox(state: LoadedState, name: str) -> ResolvedSandbox:
    document: Document[SandboxFile] = state.sandboxes[name]
    chain = template_chain(state, document.model.extends)
    layers: list[Document[Any]] = [*reversed(chain), document]
    gateway: GatewaySpec | None = None
    gateway_origin = document.at()
    resources: Resources | None = None
    lifecycle: Lifecycle | None = None
    environment: str | None = None
    services: dict[str, tuple[ServiceSpec, Location]] = {}
    data: dict[str, ResolvedData] = {}
    for layer in layers:
        model = layer.model
        if model.gateway is not None:
            gateway = merge_keys(gateway, model.gateway)
            gateway_origin = layer.at("gateway")
        resources = merge_keys(resources, model.resources)
        lifecycle = merge_keys(lifecycle, model.lifecycle)
        if "environment" in model.model_fields_set:
            environment = model.environment
        for service, spec in model.services.items():
            services[service] = (spec, layer.at("services", service))
        for entry_name, entry in model.data.items():
            data[entry_name] = ResolvedData(entry_name, entry, layer.at("data", entry_name))
    resolved_services = {
        service: ResolvedService(
            name=service,
            spec=spec,
            environment=spec.environment or environment,
            resources=merge_keys(resources, spec.resources),
            origin=origin,
        )
        for service, (spec, origin) in sorted(services.items())
    }
    resolved_gateway = None
    if gateway is not None:
        resolved_gateway = ResolvedGateway(
            spec=gateway,
            environment=gateway.environment or environment,
            resources=merge_keys(resources, gateway.resources),
            origin=gateway_origin,
        )
    return ResolvedSandbox(
        name=name,
        file=document.source.file,
        location=document.at(),
        templates=tuple(t.stem for t in chain),
        gateway=resolved_gateway,
        services=resolved_services,
        environment=environment,
        resources=resources,
        lifecycle=lifecycle or Lifecycle(),
        data=dict(sorted(data.items())),
    )


def resolve_all(state: LoadedState) -> dict[str, ResolvedSandbox]:
    """Every sandbox resolved: the values ``load_state`` resolved, else resolved now."""
    if state.resolved is not None:
        return dict(state.resolved)
    return {name: resolve_sandbox(state, name) for name in sorted(state.sandboxes)}


def resolved(state: LoadedState, name: str) -> ResolvedSandbox:
    """One sandbox resolved: the value ``load_state`` resolved, else resolved now."""
    if state.resolved is not None:
        return state.resolved[name]
    return resolve_sandbox(state, name)
