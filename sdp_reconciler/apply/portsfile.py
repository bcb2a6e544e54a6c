"""Write ``ports.yaml``: the allocations a pass settled, with ruamel.yaml round-trip so the
file's comments survive, atomically (a partial file, then a rename).

The planner (``planner.ports``) decides the allocations; this is the I/O that records them.
"""

from __future__ import annotations

import os
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from sdp_reconciler.planner.world import Allocation

HEADER = (
    "yaml-language-server: $schema=../schemas/ports.schema.json\n"
    "Written by sdp-reconcile: which port each sandbox service holds on its node.\n"
    "Like a lock file: commit it to keep ports stable; SDP also recovers them from the\n"
    "sdp.port labels of running containers.\n"
)


def write_ports_file(path: Path, allocations: list[Allocation]) -> None:
    """Rewrite ``allocations`` in ``path``, keeping the file's comments; atomically."""
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    document: CommentedMap
    if path.exists():
        loaded = yaml.load(path.read_text())
        document = loaded if isinstance(loaded, CommentedMap) else CommentedMap()
    else:
        document = CommentedMap()
        document.yaml_set_start_comment(HEADER)
    items = CommentedSeq()
    for allocation in allocations:
        entry = CommentedMap()
        entry["sandbox"] = allocation.sandbox
        entry["service"] = allocation.service
        entry["node"] = allocation.node
        entry["port"] = allocation.port
        entry["allocated_at"] = allocation.allocated_at.isoformat(timespec="seconds")
        items.append(entry)
    document["allocations"] = items
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w") as handle:
        yaml.dump(document, handle)
    os.replace(partial, path)
