"""Ownership markers: how a server records that an object is SDP's, like Docker labels.

A marker is ``sdp:v1 `` followed by compact JSON naming the installation, the node, the
sandbox and its data entry (and, where it applies, the source, the spec hash and whether the
object is complete). It is written where each server keeps free text about an object:
``COMMENT ON ROLE`` / ``COMMENT ON DATABASE`` in PostgreSQL, a vhost's description in RabbitMQ,
an entry of SDP's registry hash in Redis. An object is SDP's only when its marker decodes and
names this agent's installation and node: a foreign object, or one of another installation
sharing the server, is never changed or dropped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from msgspec import Struct
from msgspec.structs import asdict, replace

PREFIX = "sdp:v1 "
READY = "ready"
CREATING = "creating"


class Owner(Struct, frozen=True):
    """Who this agent is, as its markers name it."""

    instance: str
    node: str


class Marker(Struct, frozen=True):
    instance: str
    node: str
    sandbox: str
    service: str
    source: str | None = None
    spec_hash: str | None = None
    state: str = CREATING
    created_at: str | None = None
    captured: str | None = None
    """on a source SDP captured from (sandbox, service): the source's name"""

    @classmethod
    def new(cls, *, instance: str, node: str, sandbox: str, service: str,
            source: str | None = None, spec_hash: str | None = None,
            captured: str | None = None) -> Marker:
        return cls(instance=instance, node=node, sandbox=sandbox, service=service,
                   source=source, spec_hash=spec_hash, captured=captured,
                   created_at=datetime.now(UTC).isoformat(timespec="seconds"))

    def encode(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return PREFIX + json.dumps(fields, sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> Marker | None:
        """The marker in ``text``, or None for anything else (a foreign comment, say)."""
        if not text or not text.startswith(PREFIX):
            return None
        try:
            data: Any = json.loads(text[len(PREFIX):])
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        known = {k: v for k, v in data.items() if k in cls.__struct_fields__}
        if not all(isinstance(known.get(k), str) for k in ("instance", "node", "sandbox",
                                                           "service")):
            return None
        if not all(v is None or isinstance(v, str) for v in known.values()):
            return None
        return cls(**known)

    def owned_by(self, instance: str, node: str) -> bool:
        return self.instance == instance and self.node == node

    def ready(self, *, spec_hash: str | None = None, source: str | None = None) -> Marker:
        return replace(self, state=READY, spec_hash=spec_hash or self.spec_hash,
                       source=source or self.source)

    @property
    def is_ready(self) -> bool:
        return self.state == READY

    @property
    def created(self) -> datetime | None:
        try:
            return datetime.fromisoformat(self.created_at) if self.created_at else None
        except ValueError:
            return None


__all__ = ["CREATING", "PREFIX", "READY", "Marker", "Owner"]
