"""Load a state directory: files -> positions -> models -> every problem as ``file:line:col``.

``load_state`` reads ``nodes.yaml``, ``sandboxes/``, ``templates/``, ``environments/``,
``ports.yaml`` and the optional ``notifications.yaml`` and ``access.yaml``, validates each
file against its model and then the whole state against the rules in ``rules.py``
(the values it builds are in ``documents.py``, which the rules and ``resolve`` read). It
either returns a ``LoadedState`` whose documents keep their source positions, or raises
``StateError`` listing every problem it found (never only the first).
Loading reads files and nothing else: no network, no Docker, no git. Every file is read on
every load; one whose bytes are those of an earlier load of the same file is not parsed or
validated again, its Document is reused (``doccache.py`` states what a hit needs), so
loading an unchanged directory again costs its reads and the whole-state rules.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Any, cast

from msgspec.structs import replace
from pydantic import BaseModel, ValidationError

from sdp_reconciler.access.model import ACCESS_FILE, AccessFile, access_problems
from sdp_reconciler.errors import StateError
from sdp_reconciler.state.doccache import DOCUMENTS, CacheKey
from sdp_reconciler.state.documents import Document as Document
from sdp_reconciler.state.documents import LoadedState as LoadedState
from sdp_reconciler.state.documents import M
from sdp_reconciler.state.documents import display as _display
from sdp_reconciler.state.models import (
    EnvironmentFile,
    Frozen,
    NodesFile,
    NotificationsFile,
    PortsFile,
    SandboxFile,
    SecretRef,
    TemplateFile,
)
from sdp_reconciler.state.resolve import resolve_sandbox
from sdp_reconciler.state.rules import check_state
from sdp_reconciler.state.sources import (
    Location,
    PathKey,
    Problem,
    SourceDoc,
    SourceError,
    decode_source,
    dotted,
    read_source,
)
from sdp_reconciler.state.trust import HostRules, default_rules

KIND_DIRS: dict[str, str] = {
    "sandbox": "sandboxes",
    "template": "templates",
    "environment": "environments",
}
_KIND_MODELS: dict[str, type[Frozen]] = {
    "sandbox": SandboxFile,
    "template": TemplateFile,
    "environment": EnvironmentFile,
}
NODES_FILE = "nodes.yaml"
PORTS_FILE = "ports.yaml"
NOTIFICATIONS_FILE = "notifications.yaml"
YAML_SUFFIXES = (".yaml", ".yml")


def load_state(root: Path, *, host: HostRules | None = None) -> LoadedState:
    """Load and validate ``root`` under the host's rules (the default rules when None);
    raise StateError with every problem found."""
    problems: list[Problem] = []
    if not root.is_dir():
        raise StateError([Problem(Location(str(root)), "", "state directory does not exist")])
    links = symlink_problems(root)
    if links:
        # Nothing is read through a link: its target may be any file of this host.
        raise StateError(links)

    nodes = _load_one(root, NODES_FILE, NodesFile, problems) if (root / NODES_FILE).exists() \
        else None
    if nodes is None and not (root / NODES_FILE).exists():
        problems.append(
            Problem(
                Location(_display(root, NODES_FILE)), "",
                "missing nodes.yaml: a state directory starts with the installation and its "
                "nodes (see docs/state.md)",
            )
        )
    ports = _load_one(root, PORTS_FILE, PortsFile, problems) if (root / PORTS_FILE).exists() \
        else None
    notifications = _load_one(root, NOTIFICATIONS_FILE, NotificationsFile, problems) \
        if (root / NOTIFICATIONS_FILE).exists() else None
    access = _load_one(root, ACCESS_FILE, AccessFile, problems) \
        if (root / ACCESS_FILE).exists() else None
    if access is not None:
        problems.extend(access_problems(access.model, access.source))
    loaded: dict[str, dict[str, Document[Any]]] = {}
    unreadable: set[tuple[str, str]] = set()
    for kind, directory in KIND_DIRS.items():
        loaded[kind] = {}
        folder = root / directory
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.is_dir():
                continue
            relative = f"{directory}/{path.name}"
            if path.suffix not in YAML_SUFFIXES:
                problems.append(
                    Problem(
                        Location(_display(root, relative)), "",
                        f"unexpected file in {directory}/: state files end in .yaml",
                    )
                )
                continue
            document = _load_one(root, relative, _KIND_MODELS[kind], problems)
            if document is not None:
                loaded[kind][path.stem] = document
            else:
                unreadable.add((kind, path.stem))

    if nodes is not None:
        state = LoadedState(
            root=root,
            nodes=nodes,
            sandboxes=loaded["sandbox"],
            templates=loaded["template"],
            environments=loaded["environment"],
            ports=ports,
            notifications=notifications,
            access=access,
            unreadable=frozenset(unreadable),
            host=host or default_rules(),
        )
        # Resolved once: the rules check these values and the pass plans them.
        state = replace(state, resolved={
            name: resolve_sandbox(state, name) for name in sorted(state.sandboxes)})
        problems.extend(check_state(state))
        if not problems:
            return state
    raise StateError(problems)


def symlink_problems(root: Path) -> list[Problem]:
    """Every symbolic link in the state directory (its ``.git`` aside), named, never followed.

    A state file that is a link could make the loader read (and echo in an error) any file of
    the reconciler host; a linked folder, likewise. The target is not shown either.
    """
    problems: list[Problem] = []
    for folder, directories, files in os.walk(root):
        base = Path(folder)
        directories[:] = [d for d in directories if d != ".git" or base != root]
        for name in sorted([*directories, *files]):
            path = base / name
            if path.is_symlink():
                relative = str(path.relative_to(root))
                problems.append(Problem(
                    Location(_display(root, relative)), "",
                    "is a symbolic link: state files and folders must be real files in the "
                    "state repository (SDP never follows links there)",
                ))
        directories[:] = [d for d in directories if not (base / d).is_symlink()]
    return problems


def _load_one(
    root: Path, relative: str, model: type[M], problems: list[Problem]
) -> Document[M] | None:
    """One file as a Document, or None with its problems added to ``problems``.

    The bytes are read every time; a Document already built from the same bytes of the same
    file for the same model is handed back as it is (``doccache``), anything else is parsed
    and validated afresh, and only a file without problems is kept for next time.
    """
    display = _display(root, relative)
    path = root / relative
    try:
        raw = read_source(path, display)
    except SourceError as e:
        problems.append(e.problem)
        return None
    key = CacheKey.of(path, display, model, raw)
    cached = DOCUMENTS.get(key)
    if cached is not None:
        return cast(Document[M], cached)
    try:
        source = decode_source(raw, display)
    except SourceError as e:
        problems.append(e.problem)
        return None
    if not isinstance(source.data, dict):
        problems.append(
            Problem(Location(display), "", "a state file is a mapping of keys to values")
        )
        return None
    try:
        instance = model.model_validate(source.data)
    except ValidationError as e:
        problems.extend(validation_problems(e, source, model))
        return None
    document = Document(model=instance, stem=Path(relative).stem, source=source, path=path)
    DOCUMENTS.put(key, document, len(raw))
    return document


def validation_problems(
    error: ValidationError, source: SourceDoc, model: type[BaseModel]
) -> list[Problem]:
    """Turn pydantic's errors into positioned problems that name the key and the value."""
    problems = []
    for item in error.errors(include_url=False):
        on_key = bool(item["loc"]) and item["loc"][-1] == "[key]"
        loc = _source_path(source.data, [p for p in item["loc"] if p != "[key]"])
        kind = item["type"]
        value = item.get("input")
        target = _annotation_at(model, loc[:-1]) if loc else None
        field_type = _annotation_at(model, loc)
        message = str(item["msg"]).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            allowed = _field_names(target)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            problems.append(
                Problem(source.locate(loc, key=True), dotted(loc),
                        f"unknown key {loc[-1]!r}{hint}")
            )
            continue
        if kind == "missing":
            problems.append(
                Problem(source.locate(loc[:-1]), dotted(loc[:-1]) or "(top level)",
                        f"missing required key {loc[-1]!r}")
            )
            continue
        if field_type is SecretRef and not on_key and not isinstance(value, dict):
            # Never echo the value: it is probably the secret itself.
            message = (
                "literal secret value: a state file holds only a reference, "
                "'{env: VARIABLE}' or '{file: PATH}', never the secret itself"
            )
        elif not on_key and any(
            _annotation_at(model, loc[:i]) is SecretRef for i in range(len(loc))
        ):
            # Inside a reference: someone may have pasted the secret where a name belongs.
            what = "an environment variable name (letters, digits and '_', not starting " \
                "with a digit)" if loc and loc[-1] == "env" else "a reference to a secret"
            message = (
                f"this must be {what}; the value is not shown in case it is the secret itself"
            )
        elif kind == "literal_error" and loc and loc[-1] == "use_ocp":
            message = "use_ocp can only be true; to deploy the service give 'branch:' instead"
        elif kind in ("model_type", "dict_type"):
            # pydantic says "valid dictionary or instance of ServiceSpec": name the YAML shape.
            got = "a list" if isinstance(value, list) else repr(value)
            got = "nothing" if value is None else got
            message = f"expected a mapping of keys to values (got {got})"
        elif on_key:
            message = f"key {loc[-1]!r}: {message}"
        elif kind not in ("value_error", "assertion_error") and not isinstance(
            value, dict | list
        ):
            message = f"{message} (got {value!r})"
        problems.append(
            Problem(source.locate(loc, key=on_key), dotted(loc) or "(top level)", message)
        )
    return problems


def _source_path(data: Any, loc: list[str | int]) -> PathKey:
    """Pydantic's error location as a source path.

    A mapping key that YAML read as a number (``1: ...``) comes back from pydantic as an int,
    which would read as a list index; the source records it as text.
    """
    path: list[str | int] = []
    for part in loc:
        if isinstance(data, dict) and not isinstance(part, str):
            match = [k for k in data if not isinstance(k, str) and str(k) == str(part)]
            data = data[match[0]] if match else None
            path.append(str(part))
            continue
        path.append(part)
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            data = None
    return tuple(path)


def _unwrap(annotation: Any) -> Any:
    """Strip Optional and Annotated from a type annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _annotation_at(model: Any, loc: PathKey) -> Any:
    """The type found by following ``loc`` through models, dicts and lists."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif origin is dict:
            current = typing.get_args(current)[1]
        elif origin is list:
            current = typing.get_args(current)[0]
        else:
            return None
    return _unwrap(current)


def _field_names(annotation: Any) -> list[str]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []
