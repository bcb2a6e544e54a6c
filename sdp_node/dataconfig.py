"""node.yaml of an INFRA node: the data servers it manages and the sources sandboxes may clone.

An INFRA node's ``data:`` names, for each server on its VM (PostgreSQL, Redis, RabbitMQ), how
the agent reaches it as an administrator, what sandbox containers use to reach it, and the
administrator's password as a *reference* (an environment variable or a file of the VM, never
a value in node.yaml). PostgreSQL also lists the **sources**: a template database copied with
``CREATE DATABASE ... TEMPLATE``, or a ``pg_dump -Fc`` file restored with ``pg_restore``.
Every server is optional; a node without one refuses the steps of its kind.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sdp_node.errors import NodeError
from sdp_node.naming import name_problem
from sdp_node.protocol import DataSourceKind, Secret


class DataConfigError(NodeError):
    code = "config"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _source_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(f"source name: {problem}")
    return value


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")


def _identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a PostgreSQL name SDP accepts (1-63 letters, digits, '_', '$' "
            "or '-', not starting with a digit)"
        )
    return value


SourceName = Annotated[str, AfterValidator(_source_name)]
Identifier = Annotated[str, AfterValidator(_identifier)]


class SecretSource(_Model):
    """Where an administrator password is read from: an environment variable or a file."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env: VARIABLE' or 'file: PATH'")
        return self

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env is not None else f"file {self.file}"

    def read(self) -> Secret:
        """The value, read now (a rotated file is picked up without a restart)."""
        if self.env is not None:
            value = os.environ.get(self.env, "")
        else:
            assert self.file is not None
            try:
                value = self.file.expanduser().read_text().strip()
            except OSError as e:
                raise DataConfigError(
                    f"cannot read the password file {self.file}: {e.strerror}"
                ) from e
        if not value:
            raise DataConfigError(f"the password from {self.describe()} is missing or empty")
        return Secret(value)


class CloneStrategy(StrEnum):
    """``CREATE DATABASE ... STRATEGY``: PostgreSQL 15's default ``wal_log`` writes every block
    through the WAL; ``file_copy`` copies the files after a checkpoint (bench/README.md)."""

    FILE_COPY = "file_copy"
    WAL_LOG = "wal_log"


class PostgresSource(_Model):
    """Exactly one of ``template: DATABASE`` or ``dump: FILE``."""

    template: Identifier | None = Field(
        default=None, description="a database on this server to copy (mark it IS_TEMPLATE)"
    )
    dump: Path | None = Field(default=None, description="a pg_dump -Fc file on this VM")
    description: str | None = None

    @model_validator(mode="after")
    def _one(self) -> PostgresSource:
        if (self.template is None) == (self.dump is None):
            raise ValueError("a source is exactly one of 'template: DATABASE' or 'dump: FILE'")
        if self.dump is not None and not self.dump.is_absolute():
            raise ValueError(f"dump {str(self.dump)!r} must be an absolute path")
        return self

    @property
    def kind(self) -> DataSourceKind:
        return DataSourceKind.TEMPLATE if self.template is not None else DataSourceKind.DUMP

    @property
    def location(self) -> str:
        return self.template if self.template is not None else str(self.dump)


class _Server(_Model):
    host: str = Field(default="127.0.0.1", description="where the agent reaches the server")
    admin_user: str
    admin_password: SecretSource
    advertise_host: str | None = Field(
        default=None,
        description="what sandbox containers use to reach the server (default: host)",
    )
    advertise_port: int | None = Field(default=None, ge=1, le=65535)
    connect_timeout_seconds: float = Field(default=5, gt=0)

    @property
    def container_host(self) -> str:
        return self.advertise_host or self.host


class PostgresServer(_Server):
    port: int = Field(default=5432, ge=1, le=65535)
    admin_database: Identifier = "postgres"
    bin_dir: Path = Field(
        default=Path("/usr/lib/postgresql/15/bin"), description="where pg_restore is"
    )
    restore_jobs: int = Field(default=2, ge=1, le=16, description="pg_restore --jobs")
    restore_timeout_seconds: float = Field(default=3600, gt=0)
    clone_strategy: CloneStrategy = CloneStrategy.FILE_COPY
    busy_timeout_seconds: float = Field(
        default=10, ge=0,
        description="how long a clone waits for foreign sessions on a template to end",
    )
    sources: dict[SourceName, PostgresSource] = Field(default_factory=dict)

    @property
    def container_port(self) -> int:
        return self.advertise_port or self.port

    def source(self, name: str) -> PostgresSource:
        try:
            return self.sources[name]
        except KeyError:
            from sdp_node.errors import NotFound

            known = ", ".join(sorted(self.sources)) or "none"
            raise NotFound(
                f"this node offers no PostgreSQL source {name!r} (it offers: {known}); sources "
                "are listed in the INFRA node's node.yaml under data.postgresql.sources"
            ) from None


class RedisServer(_Server):
    port: int = Field(default=6379, ge=1, le=65535)

    @property
    def container_port(self) -> int:
        return self.advertise_port or self.port


class RabbitmqServer(_Server):
    port: int = Field(default=5672, ge=1, le=65535, description="AMQP, for containers")
    management_url: str = Field(
        default="http://127.0.0.1:15672", description="the management plugin's HTTP API"
    )

    @model_validator(mode="after")
    def _check(self) -> RabbitmqServer:
        if not re.fullmatch(r"https?://[A-Za-z0-9.\[\]:-]+(:\d{1,5})?/?", self.management_url):
            raise ValueError(
                f"management_url {self.management_url!r} must be like http://127.0.0.1:15672 "
                "(no path, no credentials)"
            )
        return self

    @property
    def container_port(self) -> int:
        return self.advertise_port or self.port


class DataServers(_Model):
    """``data:`` of an INFRA node's node.yaml."""

    postgresql: PostgresServer | None = None
    redis: RedisServer | None = None
    rabbitmq: RabbitmqServer | None = None

    def secrets(self) -> list[Secret]:
        """Every administrator password, read now (registered with each operation's redactor
        and checked at start)."""
        servers: list[_Server | None] = [self.postgresql, self.redis, self.rabbitmq]
        return [server.admin_password.read() for server in servers if server is not None]


__all__ = [
    "CloneStrategy", "DataConfigError", "DataServers", "PostgresServer", "PostgresSource",
    "RabbitmqServer", "RedisServer", "SecretSource",
]
