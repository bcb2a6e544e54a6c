"""The reference of every ``node.yaml`` key, generated from the config model.

``docs/node-yaml.md`` is this module's output: one table per mapping (the top level, ``token``,
each entry of ``repositories`` and its ``go``), with each key's type, default and the
description its ``Field`` carries in ``sdp_node.config``. A key without a description is an
error here, and a test fails when the committed file differs from what the model generates, so
the reference cannot drift from the code.

``python -m sdp_node.configdoc`` rewrites the file; ``--check`` exits 1 when it is stale.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sdp_node.config import NodeConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "node-yaml.md"
_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number",
                            bool: "true / false", Path: "path"}
_PLURALS = {"string": "strings", "mapping (below)": "mappings (below)"}
_HEAD = """\
# node.yaml reference

<!-- Generated from sdp_node/config.py by `python -m sdp_node.configdoc`: do not edit. -->

Every key `sdp-node --config node.yaml` reads; any other key is refused. Examples, kept
valid by a test: [node-micro.yaml](../packaging/examples/node-micro.yaml) and
[node-gateway.yaml](../packaging/examples/node-gateway.yaml); what the agent does with them:
[node.md](node.md); installing it: [install.md](install.md). Check a file with
`sdp-node --check --config node.yaml`.
"""


def reference() -> str:
    """The Markdown reference of NodeConfig and every model under it."""
    parts = [_HEAD]
    for path, model in documented_models(NodeConfig, "node.yaml"):
        parts.append(_section(path, model))
    return "\n".join(parts)


def documented_models(
    model: type[BaseModel], path: str
) -> Iterator[tuple[str, type[BaseModel]]]:
    """(path in node.yaml, model) for ``model`` and every model below it, in key order."""
    yield path, model
    for key, field in model.model_fields.items():
        nested, repeated = _nested_model(field.annotation)
        if nested is not None:
            prefix = "" if path == "node.yaml" else f"{path}."
            yield from documented_models(nested, f"{prefix}{key}{'[]' if repeated else ''}")


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is list:
        inner, _ = _nested_model(get_args(annotation)[0])
        return inner, True
    return None, False


def _section(path: str, model: type[BaseModel]) -> str:
    title = "top level" if path == "node.yaml" else f"`{path}`"
    lines = [f"## {title}", ""]
    if model.__doc__:
        lines += [" ".join(model.__doc__.split()).replace("``", "`"), ""]
    lines += ["| key | type | default | what |", "| --- | --- | --- | --- |"]
    for key, field in model.model_fields.items():
        if not field.description:
            raise ValueError(f"{model.__name__}.{key} has no description: document it in "
                             "sdp_node/config.py")
        lines.append(f"| `{key}` | {_type(field.annotation)} | {_default(field)} | "
                     f"{_escape(field.description)}{_bounds(field)} |")
    return "\n".join(lines) + "\n"


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (below)"
    if origin is Annotated:
        return _type(args[0])
    if origin is list:
        inner = _type(args[0])
        return f"list of {_PLURALS.get(inner, inner)}"
    if origin in (Union, types.UnionType):
        named = [_type(a) for a in args if a is not type(None)]
        return " or ".join(named)
    raise ValueError(f"no rendering for the type {annotation!r}")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "—"
    if isinstance(value, BaseModel):
        return "(below)"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, str) and (value == "" or value in ("off", "on", "yes", "no")):
        return f'"{value}"'
    return str(value)


def _bounds(field: FieldInfo) -> str:
    bounds = []
    for item in field.metadata:
        if isinstance(item, Ge):
            bounds.append(f"at least {item.ge}")
        elif isinstance(item, Gt):
            bounds.append(f"more than {item.gt}")
        elif isinstance(item, Le):
            bounds.append(f"at most {item.le}")
    return f" ({', '.join(bounds)})" if bounds else ""


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdp_node.configdoc",
                                     description=f"(re)generate {DOC.name} from the model")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    parser.add_argument("--output", type=Path, default=DOC)
    args = parser.parse_args(argv)
    text = reference()
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is stale: run 'python -m sdp_node.configdoc' and commit it",
                  file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    if current != text:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    else:
        print(f"{args.output} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
