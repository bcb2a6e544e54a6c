"""Templates and environments as the page lists them: pure functions over the loaded state.

Variables are shown with their values; secrets and secret files only as their references
(``env:NAME`` or ``file:PATH``, from ``SecretRef.describe``): nothing here resolves a secret.
Each entry also names the sandboxes that use it (template references are live, DESIGN §3).
"""

from __future__ import annotations

from msgspec import Struct, field

from sdp_reconciler.state.loading import LoadedState
from sdp_reconciler.state.models import GatewaySpec, Resources, ServiceSpec
from sdp_reconciler.state.resolve import ResolvedSandbox


def describe_service(spec: ServiceSpec) -> str:
    if spec.use_ocp:
        return "OCP"
    if spec.target is not None:
        return f"target {spec.target}"
    text = f"branch {spec.branch}"
    extras = [f"commit {spec.commit[:12]}" if spec.commit else "",
              f"port {spec.port}" if spec.port else "", f"node {spec.node}" if spec.node else "",
              f"environment {spec.environment}" if spec.environment else ""]
    return ", ".join([text, *[e for e in extras if e]])


def describe_gateway(spec: GatewaySpec | None) -> str:
    if spec is None:
        return "—"
    parts = [f"branch {spec.branch}" if spec.branch else "",
             f"commit {spec.commit[:12]}" if spec.commit else "",
             f"port {spec.port}" if spec.port else "", f"node {spec.node}" if spec.node else "",
             f"repository {spec.repository}" if spec.repository else ""]
    return ", ".join(p for p in parts if p) or "—"


def describe_resources(resources: Resources | None) -> str:
    if resources is None:
        return "—"
    parts = [f"cpu {resources.cpu}" if resources.cpu else "",
             f"memory {resources.memory}" if resources.memory else ""]
    return ", ".join(p for p in parts if p) or "—"


class TemplateEntry(Struct):
    name: str
    file: str
    extends: str | None
    gateway: str
    environment: str | None
    resources: str
    services: list[tuple[str, str]]
    used_by: list[str]


class FileEntry(Struct):
    path: str
    content: str | None
    secret: str | None


class EnvironmentEntry(Struct):
    name: str
    file: str
    variables: list[tuple[str, str]]
    secrets: list[tuple[str, str]]
    files: list[FileEntry] = field(default_factory=list)
    used_by: list[str] = field(default_factory=list)


def templates(state: LoadedState, sandboxes: dict[str, ResolvedSandbox]) -> list[TemplateEntry]:
    entries = []
    for name, document in sorted(state.templates.items()):
        model = document.model
        entries.append(TemplateEntry(
            name=name, file=document.source.file, extends=model.extends,
            gateway=describe_gateway(model.gateway), environment=model.environment,
            resources=describe_resources(model.resources),
            services=[(s, describe_service(spec)) for s, spec in sorted(model.services.items())],
            used_by=sorted(s.name for s in sandboxes.values() if name in s.templates),
        ))
    return entries


def environments(state: LoadedState,
                 sandboxes: dict[str, ResolvedSandbox]) -> list[EnvironmentEntry]:
    entries = []
    for name, document in sorted(state.environments.items()):
        model = document.model
        users = sorted(
            s.name for s in sandboxes.values()
            if s.environment == name or any(v.environment == name for v in s.services.values())
            or (s.gateway is not None and s.gateway.environment == name)
        )
        entries.append(EnvironmentEntry(
            name=name, file=document.source.file,
            variables=sorted(model.variables.items()),
            secrets=[(k, ref.describe()) for k, ref in sorted(model.secrets.items())],
            files=[FileEntry(path=f.path, content=f.content,
                             secret=f.secret.describe() if f.secret is not None else None)
                   for f in model.files],
            used_by=users,
        ))
    return entries
