"""Helpers that edit the state for people: new sandbox from a template, clone, route, snapshot,
drain a node.

The state stays the only input: these write YAML (ruamel.yaml round-trip, so comments and
layout survive) and never touch a node; people review, commit and push as usual. Every edit is
checked by loading the whole state afterwards; if it would leave the state invalid, the file is
put back as it was and the problems are raised (bad input changes nothing).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from sdp_node.naming import GATEWAY, name_problem
from sdp_reconciler.errors import SdpError, StateError
from sdp_reconciler.history import History
from sdp_reconciler.state.hostconfig import host_rules
from sdp_reconciler.state.loading import LoadedState, load_state
from sdp_reconciler.state.models import url_problem
from sdp_reconciler.state.resolve import resolved as resolved_sandbox


def _repository_folders(state_root: Path) -> list[Path]:
    """The state directory and its parents up to the top of the git repository holding it
    (only the state directory itself when it is in none)."""
    folders = [state_root.resolve()]
    for folder in folders[0].parents:
        if any((f / ".git").exists() for f in folders):
            break
        folders.append(folder)
    return folders if any((f / ".git").exists() for f in folders) else folders[:1]


def has_schemas(folder: Path) -> bool:
    """Whether ``folder`` holds the state files' JSON Schemas (``sdp-reconcile schemas``)."""
    return (folder / "sandbox.schema.json").is_file()


def schemas_dir(state_root: Path) -> Path:
    """Where the JSON Schemas of this state's files are, inside its repository: the nearest
    ``schemas/`` holding them from the state directory up to the repository's top (a state
    repository's own ``schemas/``, or this checkout's for its example state), else the state
    directory's own ``schemas/`` (``ensure_schemas`` writes it after a successful edit)."""
    for folder in _repository_folders(state_root):
        if has_schemas(folder / "schemas"):
            return folder / "schemas"
    return state_root / "schemas"


def ensure_schemas(state_root: Path) -> Path | None:
    """Write the schemas into the state repository when its files point at none; the folder
    written (to be committed with the state), else None."""
    folder = schemas_dir(state_root)
    if has_schemas(folder):
        return None
    from sdp_reconciler.state import schemas

    schemas.write(folder)
    return folder


def schema_line(state_root: Path, path: Path, kind: str) -> str:
    """The ``yaml-language-server`` line of a new file ``path``, relative to it, so it resolves
    in the state repository wherever that is checked out."""
    target = schemas_dir(state_root) / f"{kind}.schema.json"
    relative = os.path.relpath(target.resolve(), path.parent.resolve())
    return f"# yaml-language-server: $schema={relative}\n"


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    return yaml


def _dump(document: Any) -> str:
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    return buffer.getvalue()


def _check_name(kind: str, name: str) -> None:
    problem = name_problem(name)
    if problem:
        raise SdpError(f"{kind} name: {problem}")


def _write_checked(state_dir: Path, path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` if the whole state stays valid; else restore and raise."""
    before = path.read_bytes() if path.exists() else None
    partial = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(text)
    os.replace(partial, path)
    try:
        load_state(state_dir, host=host_rules())
    except StateError as e:
        if before is None:
            path.unlink()
        else:
            path.write_bytes(before)
        raise SdpError(f"nothing written: the change would make the state invalid:\n{e}") \
            from None
    return path


def set_drained(state_dir: Path, node: str, *, drained: bool) -> tuple[Path, bytes]:
    """Mark MICRO node ``node`` drained (or no longer) in nodes.yaml; the file written and its
    bytes before (``sdp-reconcile drain`` puts them back when the drain cannot be done)."""
    from sdp_reconciler.state.models import NodeType

    state = load_state(state_dir, host=host_rules())
    known = {n.name: n for n in state.nodes.model.nodes}
    if node not in known:
        micro = ", ".join(sorted(n for n, v in known.items() if v.type is NodeType.MICRO))
        raise SdpError(f"no node {node!r} in {state.nodes.path} (MICRO nodes: "
                       f"{micro or 'none'})")
    if known[node].type is not NodeType.MICRO:
        raise SdpError(f"node {node!r} is a {known[node].type.value} node: only a MICRO node "
                       "can be drained (cordon it with 'cordoned: true' in nodes.yaml)")
    path = state.nodes.path
    before = path.read_bytes()
    document = _yaml().load(before)
    for entry in document["nodes"]:
        if entry.get("name") == node:
            if drained:
                entry["drained"] = True
            else:
                entry.pop("drained", None)
    _write_checked(state_dir, path, _dump(document))
    return path, before


def _sandbox_path(state: LoadedState, name: str) -> Path:
    if name not in state.sandboxes:
        known = ", ".join(sorted(state.sandboxes)) or "none"
        raise SdpError(f"no sandbox {name!r} in {state.root} (sandboxes: {known})")
    return state.sandboxes[name].path


def new_sandbox(state_dir: Path, name: str, *, template: str,
                branches: Mapping[str, str], gateway_branch: str | None = None) -> Path:
    """A sandbox file that starts from ``template`` with some services on branches."""
    state = load_state(state_dir, host=host_rules())
    _check_name("sandbox", name)
    if name in state.sandboxes:
        raise SdpError(f"sandbox {name!r} already exists")
    if template not in state.templates:
        known = ", ".join(sorted(state.templates)) or "none"
        raise SdpError(f"no template {template!r} (templates: {known})")
    document = CommentedMap()
    document["sandbox"] = name
    document["extends"] = template
    if gateway_branch:
        document["gateway"] = CommentedMap(branch=gateway_branch)
    if branches:
        services = CommentedMap()
        for service, branch in sorted(branches.items()):
            services[service] = CommentedMap(branch=branch)
        document["services"] = services
    path = state.root / "sandboxes" / f"{name}.yaml"
    text = schema_line(state.root, path, "sandbox") + _dump(document)
    written = _write_checked(state_dir, path, text)
    ensure_schemas(state.root)
    return written


def clone_sandbox(state_dir: Path, source: str, destination: str) -> Path:
    """A copy of ``source`` named ``destination``, without ports (it gets new ones)."""
    state = load_state(state_dir, host=host_rules())
    _check_name("sandbox", destination)
    if destination in state.sandboxes:
        raise SdpError(f"sandbox {destination!r} already exists")
    original = _sandbox_path(state, source)
    text = original.read_text()
    document = _yaml().load(text)
    document["sandbox"] = destination
    gateway = document.get("gateway")
    if isinstance(gateway, dict):
        gateway.pop("port", None)
    for entry in (document.get("services") or {}).values():
        if isinstance(entry, dict):
            entry.pop("port", None)
    head = "".join(line for line in text.splitlines(keepends=True)[:1]
                   if line.startswith("# yaml-language-server"))
    body = _dump(document)
    return _write_checked(state_dir, state.root / "sandboxes" / f"{destination}.yaml",
                          body if body.startswith("#") else head + body)


def set_route(state_dir: Path, sandbox: str, service: str, *, branch: str | None = None,
              ocp: bool = False, target: str | None = None) -> Path:
    """Route ``service`` of ``sandbox`` to a branch deployed in it, to OCP, or to a URL."""
    if [branch is not None, ocp, target is not None].count(True) != 1:
        raise SdpError("give exactly one of --branch NAME, --ocp or --target URL")
    if service == GATEWAY:
        raise SdpError("the gateway is not routed; set gateway.branch in the sandbox file")
    if target is not None and url_problem(target):
        raise SdpError(f"--target: {url_problem(target)}")
    state = load_state(state_dir, host=host_rules())
    path = _sandbox_path(state, sandbox)
    document = _yaml().load(path.read_text())
    services = document.setdefault("services", CommentedMap())
    entry: CommentedMap
    if branch is not None:
        entry = CommentedMap(branch=branch)
    elif ocp:
        entry = CommentedMap(use_ocp=True)
    else:
        entry = CommentedMap(target=target)
    services[service] = entry
    return _write_checked(state_dir, path, _dump(document))


def snapshot(state_dir: Path, sandbox: str, name: str, history: History, *,
             captured: Mapping[str, tuple[str, str]] | None = None) -> list[Path]:
    """A template ``name`` pinning the sandbox's running commits, with a copy of its
    environment and its data entries: the sandbox can be recreated from it later (``new
    --from NAME``). ``captured`` maps a PostgreSQL entry to the (source, INFRA node) its
    database was captured as (``snapshot --data``): that entry clones from it there."""
    captured = dict(captured or {})
    state = load_state(state_dir, host=host_rules())
    _check_name("snapshot", name)
    if name in state.templates:
        raise SdpError(f"template {name!r} already exists")
    resolved = resolved_sandbox(state, sandbox)
    applied = {r["service"]: r for r in history.status() if r["sandbox"] == sandbox}
    document = CommentedMap()
    document["template"] = name

    def pinned(service: str, branch: str | None) -> CommentedMap:
        row = applied.get(service)
        commit = row.get("applied_commit") if row else None
        if not commit:
            raise SdpError(
                f"no running commit is recorded for {sandbox}/{service}: run "
                "'sdp-reconcile --once' first, with the same --history"
            )
        return CommentedMap(branch=branch, commit=commit)

    if resolved.gateway is not None:
        document["gateway"] = pinned(GATEWAY, resolved.gateway.spec.branch)
    written: list[Path] = []
    environment = resolved.environment
    if environment is not None:
        document["environment"] = name
    services = CommentedMap()
    for service_name, service in sorted(resolved.services.items()):
        spec = service.spec
        if spec.deployed:
            services[service_name] = pinned(service_name, spec.branch)
        elif spec.target:
            services[service_name] = CommentedMap(target=spec.target)
        else:
            services[service_name] = CommentedMap(use_ocp=True)
    document["services"] = services
    if resolved.data:
        data = CommentedMap()
        for entry_name, item in sorted(resolved.data.items()):
            dumped = item.entry.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            if entry_name in captured and "postgresql" in dumped:
                copy, infra = captured.pop(entry_name)
                dumped["postgresql"] = {**dumped["postgresql"], "from": copy, "node": infra}
            data[entry_name] = dumped
        document["data"] = data
    if captured:
        raise SdpError(f"sandbox {sandbox!r} has no PostgreSQL data entry "
                       f"{', '.join(sorted(captured))}")
    if environment is not None:
        source = state.environments[environment].path
        env_document = _yaml().load(source.read_text())
        env_document["environment"] = name
        env_path = state.root / "environments" / f"{name}.yaml"
        env_text = schema_line(state.root, env_path, "environment") + _dump(env_document) \
            if not source.read_text().startswith("#") else _dump(env_document)
        written.append(_write_new(env_path, env_text))
    template_path = state.root / "templates" / f"{name}.yaml"
    text = schema_line(state.root, template_path, "template") + _dump(document)
    try:
        written.append(_write_checked(state_dir, template_path, text))
        ensure_schemas(state.root)
    except SdpError:
        for path in written:
            path.unlink()
        raise
    return written


def _write_new(path: Path, text: str) -> Path:
    if path.exists():
        raise SdpError(f"{path} already exists")
    path.write_text(text)
    return path

