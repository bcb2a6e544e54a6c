"""A sandbox's Redis: an ACL user confined to its key prefix, and SDP's registry of such users.

Why a key prefix and not a logical database: Redis 7's ACLs cannot limit ``SELECT`` to one
database (a user either may select every database or none), there are only 16 of them and
none in cluster mode; key patterns are enforced by the server on every command. So each user
gets ``~<prefix>*`` and ``&<prefix>*`` (keys and pub/sub channels starting with
``{prefix}-{sandbox}-{entry}:``), every command except the ``@admin`` and ``@dangerous`` ones
(``KEYS``, ``FLUSHALL``, ``CONFIG``, ``MONITOR``, ...), and not ``SCAN``, ``RANDOMKEY`` or
``PUBSUB`` (they answer with other sandboxes' key and channel names whatever the patterns)
nor ``SELECT``, ``MOVE``, ``COPY`` or ``SWAPDB`` (keys outside database 0 would outlive a drop).

Ownership: Redis users carry no comment, so SDP keeps a registry hash per installation and
node (``sdp:registry:<instance>:<node>``, a key no sandbox pattern matches) with one entry per
user it made. A user that is not in the registry is foreign and never changed or deleted. The
entry is written before the user (intent) and marked ready after it, and removed last on a
drop, so a crash is always seen and healed by the next step. Passwords reach Redis only as
SHA-256 (``#<hex>``). With an ``aclfile`` configured, every change is saved with ``ACL SAVE``;
without one, users vanish on a restart and show as incomplete until the next ensure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis

from sdp_node.data.checks import check_names
from sdp_node.data.hashing import check_password, redis_acl_hash
from sdp_node.data.markers import Marker, Owner
from sdp_node.data.postgres import DataServerError
from sdp_node.dataconfig import RedisServer
from sdp_node.errors import BadRequest, Conflict
from sdp_node.naming import ResourceNames
from sdp_node.protocol import (
    DataKind,
    DataServerInfo,
    DataState,
    DropRedisUser,
    EnsureRedisUser,
    ObservedDataService,
)
from sdp_node.steps import StepContext

COMMANDS = ["+@all", "-@admin", "-@dangerous", "-scan", "-randomkey", "-pubsub", "-select",
            "-move", "-copy", "-swapdb"]
UNLINK_BATCH = 500


def registry_key(owner: Owner) -> str:
    return f"sdp:registry:{owner.instance}:{owner.node}"


class RedisData:
    def __init__(self, server: RedisServer, *, names: ResourceNames, owner: Owner) -> None:
        self.server = server
        self.names = names
        self.owner = owner
        self.registry = registry_key(owner)

    @contextlib.contextmanager
    def connect(self) -> Iterator[redis.Redis]:
        client = redis.Redis(
            host=self.server.host, port=self.server.port, username=self.server.admin_user,
            password=self.server.admin_password.read().reveal(),
            socket_timeout=self.server.connect_timeout_seconds * 6,
            socket_connect_timeout=self.server.connect_timeout_seconds,
            decode_responses=True, client_name="sdp-node",
        )
        try:
            yield client
        except redis.RedisError as e:
            raise DataServerError(f"Redis at {self.server.host}:{self.server.port}: {e}") from e
        finally:
            client.close()

    # -- observe ---------------------------------------------------------------------------------

    def observe(self) -> tuple[DataServerInfo, list[ObservedDataService]]:
        info = DataServerInfo(kind=DataKind.REDIS, host=self.server.container_host,
                              port=self.server.container_port, reachable=False)
        try:
            with self.connect() as client:
                version = str(client.info("server").get("redis_version", "?"))
                entries: dict[str, str] = client.hgetall(self.registry)  # type: ignore[assignment]
                users = set(client.acl_users())
        except DataServerError as e:
            return info.model_copy(update={"problem": str(e)}), []
        services = []
        for user, text in sorted(entries.items()):
            marker = Marker.decode(text)
            if marker is None:
                continue
            services.append(self._observed(user, marker, exists=user in users))
        return info.model_copy(update={"reachable": True, "version": version}), services

    def _observed(self, user: str, marker: Marker, *, exists: bool) -> ObservedDataService:
        ready = exists and marker.is_ready
        problem = None if ready else (
            "the ACL user is missing (a restart without an aclfile, or an interrupted step)"
            if not exists else "an ensure did not finish")
        return ObservedDataService(
            kind=DataKind.REDIS, name=user, user=user, sandbox=marker.sandbox,
            service=marker.service, state=DataState.READY if ready else DataState.INCOMPLETE,
            spec_hash=marker.spec_hash, key_prefix=user + ":", created_at=marker.created,
            problem=problem,
        )

    # -- steps -----------------------------------------------------------------------------------

    def _check(self, sandbox: str, service: str, user: str) -> None:
        check_names("Redis user", sandbox=sandbox, service=service, given=user,
                    expected=self.names.redis_user(sandbox, service))

    def _entry(self, client: redis.Redis, user: str, sandbox: str, service: str)\
            -> Marker | None:
        """Our registry entry for ``user``; Conflict when the user exists and is not ours."""
        text: Any = client.hget(self.registry, user)
        marker = Marker.decode(text) if isinstance(text, str) else None
        if marker is None:
            if client.acl_getuser(user) is not None:
                raise Conflict(f"Redis user {user!r} exists and is not in SDP's registry "
                               f"{self.registry}: SDP does not touch it")
            return None
        if (marker.sandbox, marker.service) != (sandbox, service):
            raise Conflict(f"Redis user {user!r} belongs to sandbox {marker.sandbox!r} entry "
                           f"{marker.service!r}: two entries map to one name")
        return marker

    def ensure(self, step: EnsureRedisUser, context: StepContext)\
            -> tuple[bool, ObservedDataService]:
        self._check(step.sandbox, step.service, step.user)
        if step.key_prefix != step.user + ":":
            raise BadRequest(f"key prefix {step.key_prefix!r} must be {step.user + ':'!r}")
        password = check_password(step.password)
        with self.connect() as client:
            marker = self._entry(client, step.user, step.sandbox, step.service)
            changed = marker is None or not marker.is_ready
            if marker is None:
                marker = Marker.new(instance=self.owner.instance, node=self.owner.node,
                                    sandbox=step.sandbox, service=step.service)
                client.hset(self.registry, step.user, marker.encode())  # intent first
            pattern = step.key_prefix + "*"
            # ``reset`` first: the rules below are the whole definition, every time.
            _command(
                client, "ACL", "SETUSER", step.user, "reset", "on", redis_acl_hash(password),
                f"~{pattern}", f"&{pattern}", *COMMANDS,
            )
            self._save(client)
            ready = marker.ready(spec_hash=step.spec_hash)
            client.hset(self.registry, step.user, ready.encode())
            context.log(f"Redis user {step.user} {'created' if changed else 'updated'} "
                        f"(keys {pattern})")
            return changed, self._observed(step.user, ready, exists=True)

    def drop(self, step: DropRedisUser, context: StepContext) -> bool:
        self._check(step.sandbox, step.service, step.user)
        with self.connect() as client:
            marker = self._entry(client, step.user, step.sandbox, step.service)
            if marker is None:
                return False
            client.acl_deluser(step.user)  # also closes the user's connections
            self._save(client)
            removed = self._delete_keys(client, step.user + ":")
            client.hdel(self.registry, step.user)  # last: until here, a drop can be re-run
            context.log(f"Redis user {step.user} deleted with {removed} key(s)")
            return True

    def _delete_keys(self, client: redis.Redis, prefix: str) -> int:
        removed, batch = 0, []
        for key in client.scan_iter(match=_escape(prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= UNLINK_BATCH:
                removed += int(client.unlink(*batch))
                batch = []
        if batch:
            removed += int(client.unlink(*batch))
        return removed

    @staticmethod
    def _save(client: redis.Redis) -> None:
        configured: Any = client.config_get("aclfile")
        if isinstance(configured, dict) and configured.get("aclfile"):
            _command(client, "ACL", "SAVE")


def _command(client: redis.Redis, *args: str) -> Any:
    """A raw command (redis-py leaves ``execute_command`` untyped): ACL rules exactly as
    Redis documents them, with no client-side translation."""
    run: Any = client.execute_command
    return run(*args)


def _escape(text: str) -> str:
    """A glob-safe literal for ``SCAN MATCH``."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def key_count(client: redis.Redis, prefix: str) -> int:
    """How many keys start with ``prefix`` (a SCAN: for tests and tools, not for observe)."""
    return sum(1 for _ in client.scan_iter(match=_escape(prefix) + "*", count=1000))


__all__ = ["COMMANDS", "RedisData", "key_count", "registry_key"]
