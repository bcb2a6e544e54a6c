"""What a change to the state needs: a semantic diff of two versions of a file → permissions.

Pure functions over plain data (what ``sources.parse_source`` returns), so comments, key order
and formatting never count as a change, and a file that fails schema validation can still be
judged. ``requirements(file, old, new, ...)`` yields one ``Requirement`` per changed *aspect*
(a key path such as ``services.account.branch``) and permission:

* ``sandboxes/S.yaml``: added → ``deploy``; removed → ``delete_sandbox``; a service switched
  between the sandbox (``branch:``), OCP and a ``target:`` (or to another target) →
  ``manage_routes``; a deployed service's branch, commit, port, node, environment or resources →
  ``deploy``; the gateway's branch, commit or repository → ``deploy`` and ``manage_routes`` (the
  gateway's commit carries every OCP route value); anything else (extends, environment,
  resources, lifecycle, gateway port...) → ``deploy``. A service's entry is compared as the
  sandbox *resolves* it (its own entry, else its templates'), so dropping an entry that
  overrode a template's route is a route change.
* ``templates/`` → ``manage_templates``; ``environments/`` → ``manage_environments``;
  ``access.yaml`` → ``manage_access``; ``nodes.yaml`` and ``notifications.yaml`` →
  ``manage_nodes``; ``ports.yaml`` → ``deploy`` for each sandbox whose allocations changed.
* A version that is not readable YAML (or not a mapping) could say anything: the change is to
  the whole file and needs everything that file's changes can need.

Values are shown in descriptions only for keys that never hold anything sensitive (branch,
commit, port, ...); environments, nodes, notifications and access are described by key only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any

from msgspec import Struct

from sdp_reconciler.access.model import ACCESS_FILE, Permission
from sdp_reconciler.state.models import url_problem

WHOLE_FILE = "(file)"
YAML_SUFFIXES = (".yaml", ".yml")


class FileKind(StrEnum):
    SANDBOX = "sandbox"
    TEMPLATE = "template"
    ENVIRONMENT = "environment"
    NODES = "nodes"
    NOTIFICATIONS = "notifications"
    ACCESS = "access"
    PORTS = "ports"


_DIRECTORIES = {
    "sandboxes": FileKind.SANDBOX, "templates": FileKind.TEMPLATE,
    "environments": FileKind.ENVIRONMENT,
}
_TOP_FILES = {
    "nodes.yaml": FileKind.NODES, "notifications.yaml": FileKind.NOTIFICATIONS,
    ACCESS_FILE: FileKind.ACCESS, "ports.yaml": FileKind.PORTS,
}
FILE_PERMISSION: dict[FileKind, Permission] = {
    FileKind.SANDBOX: Permission.DEPLOY,
    FileKind.TEMPLATE: Permission.MANAGE_TEMPLATES,
    FileKind.ENVIRONMENT: Permission.MANAGE_ENVIRONMENTS,
    FileKind.NODES: Permission.MANAGE_NODES,
    FileKind.NOTIFICATIONS: Permission.MANAGE_NODES,
    FileKind.ACCESS: Permission.MANAGE_ACCESS,
    FileKind.PORTS: Permission.DEPLOY,
}
INSTALLATION_KINDS = frozenset({FileKind.NODES, FileKind.NOTIFICATIONS, FileKind.ACCESS})
"""Files whose unauthorised change stops the whole pass: there is no half an installation."""


class StateFile(Struct, frozen=True, order=True):
    """A file the loader reads, by its path relative to the state directory. Its kind and stem
    follow from the path (``classify``), so two files are equal, and sort, as their paths do."""

    path: str
    kind: FileKind
    stem: str


def classify(relative: str) -> StateFile | None:
    """The state file at ``relative`` (a path inside the state directory), or None if the
    loader never reads it (a README, a nested folder, a dotfile)."""
    if relative in _TOP_FILES:
        return StateFile(relative, _TOP_FILES[relative], relative.rsplit(".", 1)[0])
    directory, _, name = relative.partition("/")
    kind = _DIRECTORIES.get(directory)
    if kind is None or "/" in name or name.startswith(".") or not name.endswith(YAML_SUFFIXES):
        return None
    return StateFile(relative, kind, name.rsplit(".", 1)[0])


class Content(Struct, frozen=True):
    """One version of a file: its plain data, or why it could not be read."""

    data: Any = None
    problem: str | None = None

    @property
    def readable(self) -> bool:
        return self.problem is None


Templates = Callable[[str], Content | None]
"""A version of the state's templates, by name (None: no such template)."""


class Requirement(Struct, frozen=True):
    """One changed aspect of a file and a permission it needs."""

    file: StateFile
    aspect: str
    """``services.account.branch``, ``users.rina.roles``, or ``(file)`` for the whole file"""
    permission: Permission
    description: str
    sandbox: str | None = None
    """the sandbox this change is to (a sandbox file, or its port allocations)"""

    @property
    def key(self) -> tuple[str, str]:
        return (self.file.path, self.aspect)

    @property
    def whole_file(self) -> bool:
        return self.aspect == WHOLE_FILE


def requirements(
    file: StateFile, old: Content | None, new: Content | None, *,
    old_templates: Templates, new_templates: Templates,
) -> list[Requirement]:
    """What changing ``file`` from ``old`` to ``new`` needs (None: the file is absent)."""
    if old is None and new is None:
        return []
    if old is None or new is None:
        return _whole_file(file, "added" if old is None else "removed")
    if not old.readable or not new.readable:
        return _whole_file(file, "unreadable")
    if same(old.data, new.data):
        return []
    if file.kind in (FileKind.SANDBOX, FileKind.PORTS) and not (
        isinstance(old.data, dict) and isinstance(new.data, dict)
    ):
        return _whole_file(file, "unreadable")
    match file.kind:
        case FileKind.SANDBOX:
            return list(_sandbox_changes(
                file, sandbox_view(old.data, old_templates), sandbox_view(new.data, new_templates)
            ))
        case FileKind.PORTS:
            return list(_ports_changes(file, old.data, new.data))
        case _:
            return list(_generic_changes(file, old.data, new.data))


def _whole_file(file: StateFile, what: str) -> list[Requirement]:
    permission = FILE_PERMISSION[file.kind]
    sandbox = file.stem if file.kind is FileKind.SANDBOX else None
    if what == "unreadable":
        needs = [permission, Permission.MANAGE_ROUTES] if file.kind is FileKind.SANDBOX \
            else [permission]
        return [Requirement(file, WHOLE_FILE, p, "one version is not a readable YAML mapping, so "
                            "it may change anything in the file", sandbox) for p in needs]
    if file.kind is FileKind.SANDBOX:
        if what == "added":
            return [Requirement(file, WHOLE_FILE, Permission.DEPLOY, "new sandbox", sandbox)]
        return [Requirement(file, WHOLE_FILE, Permission.DELETE_SANDBOX, "sandbox removed",
                            sandbox)]
    return [Requirement(file, WHOLE_FILE, permission, f"file {what}", sandbox)]


# --- sandboxes ------------------------------------------------------------------------------------


class SandboxView(Struct, frozen=True):
    """A sandbox as its file and templates resolve it, in plain data (see ``resolve.py``)."""

    services: dict[str, Any]
    gateway: dict[str, Any]
    settings: dict[str, Any]
    """extends, environment, resources, lifecycle, the name and any other top-level key"""
    templates: tuple[str, ...]
    """the template chain, most specific first (a missing template is named, then it stops)"""

    @property
    def environments(self) -> frozenset[str]:
        """Every environment this sandbox's containers use."""
        names = [self.settings.get("environment"), self.gateway.get("environment")]
        names += [e.get("environment") for e in self.services.values() if isinstance(e, dict)]
        return frozenset(n for n in names if isinstance(n, str))


def sandbox_view(data: Any, templates: Templates) -> SandboxView:
    """Merge ``data`` over its templates: a service entry replaces the template's whole;
    gateway, resources and lifecycle merge key by key; environment replaces."""
    layers: list[dict[str, Any]] = [data] if isinstance(data, dict) else [{}]
    names: list[str] = []
    name = layers[0].get("extends")
    while isinstance(name, str) and name not in names:
        names.append(name)
        template = templates(name)
        if template is None or not isinstance(template.data, dict):
            break
        layers.append(template.data)
        name = template.data.get("extends")
    services: dict[str, Any] = {}
    merged: dict[str, dict[str, Any]] = {"gateway": {}, "resources": {}, "lifecycle": {}}
    settings: dict[str, Any] = {}
    for layer in reversed(layers):
        if isinstance(layer.get("services"), dict):
            services.update({str(k): v for k, v in layer["services"].items()})
        for key, values in merged.items():
            if isinstance(layer.get(key), dict):
                values.update(layer[key])
        if "environment" in layer:
            settings["environment"] = layer["environment"]
    top = layers[0]
    settings.update({k: v for k, v in top.items()
                     if k not in ("services", "environment", *merged)})
    settings.update({k: v for k, v in merged.items() if k != "gateway"})
    return SandboxView(services=services, gateway=merged["gateway"], settings=settings,
                       templates=tuple(names))


class Route(Struct, frozen=True):
    """Where the gateway sends a service: ``sandbox`` (deployed from a branch), ``ocp``,
    ``target`` (a URL) or ``invalid`` (an entry that is none of them)."""

    kind: str
    detail: str | None = None

    def __str__(self) -> str:
        match self.kind:
            case "sandbox":
                return "deployed in the sandbox"
            case "ocp":
                return "OCP"
            case "target":
                shown = self.detail is not None and url_problem(self.detail) is None
                return f"target {self.detail}" if shown else "a target URL"
            case _:
                return "an invalid entry"


def route(entry: Any) -> Route:
    if entry is None:
        return Route("ocp")  # a service the sandbox does not name keeps the gateway's value
    if not isinstance(entry, dict):
        return Route("invalid", json.dumps(entry, sort_keys=True, default=str))
    kinds = [k for k in ("branch", "use_ocp", "target") if entry.get(k) is not None]
    if kinds == ["branch"]:
        return Route("sandbox")
    if kinds == ["use_ocp"] and entry["use_ocp"] is True:
        return Route("ocp")
    if kinds == ["target"]:
        return Route("target", str(entry["target"]))
    return Route("invalid", json.dumps(entry, sort_keys=True, default=str))


_ROUTE_KEYS = ("use_ocp", "target")
_GATEWAY_ROUTE_KEYS = ("branch", "commit", "repository")


def _sandbox_changes(file: StateFile, old: SandboxView,
                     new: SandboxView) -> Iterator[Requirement]:
    def need(aspect: str, permission: Permission, description: str) -> Requirement:
        return Requirement(file, aspect, permission, description, file.stem)

    for service in sorted(set(old.services) | set(new.services)):
        before, after = old.services.get(service), new.services.get(service)
        was, now = route(before), route(after)
        if was != now:
            yield need(f"services.{service}.route", Permission.MANAGE_ROUTES,
                       f"{service}: {was} → {now}")
        if now.kind == "sandbox":
            fields_before = _deployment(before) if was.kind == "sandbox" else {}
            for path, a, b in leaf_changes(fields_before, _deployment(after)):
                aspect = ".".join(("services", service, *path))
                yield need(aspect, Permission.DEPLOY, describe(aspect, path, a, b))
    for path, a, b in leaf_changes(old.gateway, new.gateway):
        aspect = ".".join(("gateway", *path))
        yield need(aspect, Permission.DEPLOY, describe(aspect, path, a, b))
        if path[0] in _GATEWAY_ROUTE_KEYS:
            yield need(aspect, Permission.MANAGE_ROUTES, describe(aspect, path, a, b))
    for path, a, b in leaf_changes(old.settings, new.settings):
        aspect = ".".join(path)
        yield need(aspect, Permission.DEPLOY, describe(aspect, path, a, b))


def _deployment(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return {}
    return {str(k): v for k, v in entry.items() if k not in _ROUTE_KEYS}


# --- ports.yaml and the other files ---------------------------------------------------------------


def _ports_changes(file: StateFile, old: dict[str, Any],
                   new: dict[str, Any]) -> Iterator[Requirement]:
    before, after = _allocations(old.get("allocations")), _allocations(new.get("allocations"))
    if before is None or after is None:
        yield from _whole_file(file, "unreadable")
        return
    for sandbox in sorted(set(before) | set(after)):
        if before.get(sandbox) != after.get(sandbox):
            yield Requirement(file, f"allocations.{sandbox}", Permission.DEPLOY,
                              f"port allocations of {sandbox} changed", sandbox)
    rest_old = {k: v for k, v in old.items() if k != "allocations"}
    rest_new = {k: v for k, v in new.items() if k != "allocations"}
    yield from _generic_changes(file, rest_old, rest_new)


def _allocations(entries: Any) -> dict[str, list[str]] | None:
    if entries is None:
        return {}
    if not isinstance(entries, list):
        return None
    grouped: dict[str, list[str]] = {}
    for entry in entries:
        sandbox = entry.get("sandbox") if isinstance(entry, dict) else None
        text = json.dumps(entry, sort_keys=True, default=str)
        grouped.setdefault(str(sandbox), []).append(text)
    return {k: sorted(v) for k, v in grouped.items()}


def _generic_changes(file: StateFile, old: Any, new: Any) -> Iterator[Requirement]:
    permission = FILE_PERMISSION[file.kind]
    show_values = file.kind is FileKind.TEMPLATE
    for path, a, b in leaf_changes(old, new):
        if not path:
            yield from _whole_file(file, "unreadable")
            continue
        aspect = ".".join(path)
        text = describe(aspect, path, a, b) if show_values else _verb(aspect, a, b)
        yield Requirement(file, aspect, permission, text)


# --- plain-data diffs -----------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "(unset)"


MISSING: Any = _Missing()


def same(a: Any, b: Any) -> bool:
    """Equal as YAML values: ``true`` is not ``1``, and mapping order does not count."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def leaf_changes(a: Any, b: Any,
                 path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """Every key path where ``a`` and ``b`` differ, descending through mappings (a list is
    one value); a side without the key is ``MISSING``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            yield from leaf_changes(a.get(key, MISSING), b.get(key, MISSING), (*path, str(key)))
    elif not same(a, b):
        yield path, a, b


_SHOWN_KEYS = frozenset({
    "branch", "commit", "port", "node", "repository", "environment", "extends", "sandbox",
    "template", "suspended", "expire_after", "retention", "cpu", "memory",
})


def _show(key: str, value: Any) -> str:
    if value is MISSING:
        return "(unset)"
    if key in _SHOWN_KEYS and isinstance(value, str | int | float | bool) and len(str(value)) <= 80:
        return str(value)
    return "…"


def describe(aspect: str, path: tuple[str, ...], a: Any, b: Any) -> str:
    key = path[-1] if path else ""
    if key == "target" and isinstance(b, str):
        return f"{aspect}: {Route('target', b)}"
    return f"{aspect}: {_show(key, a)} → {_show(key, b)}"


def _verb(aspect: str, a: Any, b: Any) -> str:
    if a is MISSING:
        return f"{aspect} added"
    if b is MISSING:
        return f"{aspect} removed"
    return f"{aspect} changed"
