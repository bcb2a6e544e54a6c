"""Desired-state models of a sandbox's or template's ``data:`` (docs/infra.md).

Pure data, like ``models.py`` (frozen, unknown keys forbidden, messages written for the person
editing the YAML; the loader adds ``file:line:col`` and the key path)::

    data:
      db: {postgresql: {from: qa-snapshot}}        # a clone of an INFRA node's source
      cache: {redis: {}}                            # an ACL user confined to its key prefix
      queue: {rabbitmq: {env: {vhost: AMQP_VHOST}}} # a vhost and its user; one name renamed

Each entry is exactly one kind. Its containers get ``<NAME>_<SETTING>`` variables (``NAME``
the entry's name upper-cased with ``-`` as ``_``): ``DB_HOST``, ``DB_PORT``, ``DB_NAME``,
``DB_USER``, ``DB_PASSWORD`` for PostgreSQL; ``_HOST``, ``_PORT``, ``_USER``, ``_PASSWORD``,
``_PREFIX`` (the key prefix) for Redis; ``_HOST``, ``_PORT``, ``_VHOST``, ``_USER``,
``_PASSWORD`` for RabbitMQ. ``env:`` renames any of them. Not yet part of ``SandboxFile``:
the wiring (a ``data`` field, the template merge rule, whole-state rules) is described in
docs/infra.md.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from sdp_node.naming import name_problem
from sdp_node.protocol import DataKind
from sdp_reconciler.state.models import EnvName, Frozen, Name


class DataSetting(StrEnum):
    """What a container is told about its data service; ``<NAME>_<SETTING>`` by default."""

    HOST = "host"
    PORT = "port"
    NAME = "name"
    VHOST = "vhost"
    USER = "user"
    PASSWORD = "password"  # noqa: S105 - a setting name
    PREFIX = "prefix"


SETTINGS: dict[DataKind, tuple[DataSetting, ...]] = {
    DataKind.POSTGRESQL: (DataSetting.HOST, DataSetting.PORT, DataSetting.NAME,
                          DataSetting.USER, DataSetting.PASSWORD),
    DataKind.REDIS: (DataSetting.HOST, DataSetting.PORT, DataSetting.USER,
                     DataSetting.PASSWORD, DataSetting.PREFIX),
    DataKind.RABBITMQ: (DataSetting.HOST, DataSetting.PORT, DataSetting.VHOST,
                        DataSetting.USER, DataSetting.PASSWORD),
}
_ENV_START = re.compile(r"[A-Za-z_]")


def _check_entry_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    if not _ENV_START.match(value):
        raise ValueError(
            f"data entry {value!r} must start with a letter: its variables are named "
            f"{value.upper()}_HOST and so on"
        )
    return value


DataName = Annotated[str, AfterValidator(_check_entry_name)]


class PostgresEnv(Frozen):
    """Variable names for a PostgreSQL entry (default ``<NAME>_HOST`` ...)."""

    host: EnvName | None = None
    port: EnvName | None = None
    name: EnvName | None = None
    user: EnvName | None = None
    password: EnvName | None = None


class RedisEnv(Frozen):
    host: EnvName | None = None
    port: EnvName | None = None
    user: EnvName | None = None
    password: EnvName | None = None
    prefix: EnvName | None = Field(default=None, description="the key prefix the user owns")


class RabbitmqEnv(Frozen):
    host: EnvName | None = None
    port: EnvName | None = None
    vhost: EnvName | None = None
    user: EnvName | None = None
    password: EnvName | None = None


class PostgresEntry(Frozen):
    """A database of its own, cloned from a source an INFRA node offers, before the first
    boot (so the branch's migrations are what gets tested)."""

    model_config = ConfigDict(populate_by_name=True)
    source: Name = Field(alias="from", description="a source of the INFRA node's node.yaml")
    node: Name | None = Field(default=None, description="on this INFRA node")
    env: PostgresEnv = Field(default_factory=PostgresEnv)


class RedisEntry(Frozen):
    """An ACL user allowed only the keys and channels under ``<NAME>_PREFIX``."""

    node: Name | None = Field(default=None, description="on this INFRA node")
    env: RedisEnv = Field(default_factory=RedisEnv)


class RabbitmqEntry(Frozen):
    """A vhost of its own and a user with permissions there only."""

    node: Name | None = Field(default=None, description="on this INFRA node")
    env: RabbitmqEnv = Field(default_factory=RabbitmqEnv)


class DataEntry(Frozen):
    """One data service of a sandbox: exactly one of ``postgresql``, ``redis``, ``rabbitmq``."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["postgresql"]}, {"required": ["redis"]}, {"required": ["rabbitmq"]}]})
    postgresql: PostgresEntry | None = None
    redis: RedisEntry | None = None
    rabbitmq: RabbitmqEntry | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> DataEntry:
        kinds = [k.value for k in DataKind if getattr(self, k.value) is not None]
        if len(kinds) != 1:
            given = ", ".join(kinds) if kinds else "none of them"
            raise ValueError(
                "a data entry is exactly one of 'postgresql: {from: SOURCE}', 'redis: {}' or "
                f"'rabbitmq: {{}}'; this one has {given}"
            )
        return self

    @property
    def kind(self) -> DataKind:
        for kind in DataKind:
            if getattr(self, kind.value) is not None:
                return kind
        raise AssertionError("validated: exactly one kind")  # pragma: no cover

    @property
    def spec(self) -> PostgresEntry | RedisEntry | RabbitmqEntry:
        found = getattr(self, self.kind.value)
        assert isinstance(found, PostgresEntry | RedisEntry | RabbitmqEntry)
        return found

    @property
    def source(self) -> str | None:
        return self.postgresql.source if self.postgresql is not None else None

    @property
    def node(self) -> str | None:
        return self.spec.node


DataEntries = dict[DataName, DataEntry]
"""The type of the ``data:`` field: entry name -> entry."""


def variable_names(name: str, entry: DataEntry) -> dict[DataSetting, str]:
    """The variable each setting of ``entry`` is injected as, renames applied."""
    base = name.upper().replace("-", "_")
    renamed = entry.spec.env.model_dump(exclude_none=True)
    return {setting: renamed.get(setting.value, f"{base}_{setting.value.upper()}")
            for setting in SETTINGS[entry.kind]}


def variable_collisions(entries: dict[str, DataEntry]) -> list[tuple[str, str, str]]:
    """(variable, entry, earlier entry) for every variable two entries would both set."""
    seen: dict[str, str] = {}
    out = []
    for name in sorted(entries):
        for variable in variable_names(name, entries[name]).values():
            if variable in seen:
                out.append((variable, name, seen[variable]))
            else:
                seen[variable] = name
    return out


__all__ = [
    "SETTINGS", "DataEntries", "DataEntry", "DataName", "DataSetting", "PostgresEntry",
    "PostgresEnv", "RabbitmqEntry", "RabbitmqEnv", "RedisEntry", "RedisEnv",
    "variable_collisions", "variable_names",
]
