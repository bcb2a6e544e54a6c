"""JSON Schemas of the state files (and of the reconciler host's ``reconciler.yaml``),
generated from the models.

``sdp-reconcile schemas`` writes them into ``schemas/``; ``--check`` (run by the tests) fails
when the committed files differ from what the models generate. Editors use them through the
``# yaml-language-server: $schema=...`` line at the top of each state file.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from sdp_reconciler.access.model import AccessFile
from sdp_reconciler.state.models import SCHEMA_MODELS

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def generate() -> dict[str, str]:
    """File name -> schema text, for every kind of state file and the host config."""
    from sdp_reconciler.state.hostconfig import HostConfigFile

    models: dict[str, type[BaseModel]] = {**SCHEMA_MODELS, "access": AccessFile,
                                         "reconciler": HostConfigFile}
    out = {}
    for kind, model in models.items():
        schema = {"$schema": DRAFT, **model.model_json_schema(mode="validation")}
        out[f"{kind}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate().items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(name)
    return written


def stale(directory: Path) -> list[str]:
    """Names of schema files that are missing or differ from the generated ones."""
    return [
        name for name, text in generate().items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
