"""A sandbox's RabbitMQ: its own vhost and a user (same name) with permissions only there.

Through the management plugin's HTTP API (httpx), not ``rabbitmqctl``: ``rabbitmqctl`` starts
an Erlang VM per call (seconds), needs the node's Erlang cookie, and takes a new user's
password on its command line; the API answers in milliseconds, takes a salted
``password_hash`` (the plaintext never leaves the agent) and keeps free text on vhosts.

Ownership: the vhost's description is SDP's marker (``sdp:v1 {...}``, made in the same request
that creates the vhost) and the user carries the tag ``sdp:<instance>:<node>`` (a tag RabbitMQ
gives no meaning, so the user still cannot use the management UI). A vhost or user without
them is foreign and never changed or deleted. An ensure creates the vhost (marker
``creating``), the user and its permissions, then marks the vhost ``ready``; a drop deletes
the user (RabbitMQ closes its connections) and then the vhost with its queues and exchanges,
marker last, so an interrupted drop is still observed and finished by the next one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from sdp_node.data.checks import check_names
from sdp_node.data.hashing import check_password, rabbitmq_hash
from sdp_node.data.markers import Marker, Owner
from sdp_node.data.postgres import DataServerError
from sdp_node.dataconfig import RabbitmqServer
from sdp_node.errors import Conflict
from sdp_node.naming import ResourceNames
from sdp_node.protocol import (
    DataKind,
    DataServerInfo,
    DataState,
    DropRabbitmqVhost,
    EnsureRabbitmqVhost,
    ObservedDataService,
)
from sdp_node.steps import StepContext

ALL = ".*"


def _path(name: str) -> str:
    return quote(name, safe="")


class RabbitmqData:
    def __init__(self, server: RabbitmqServer, *, names: ResourceNames, owner: Owner) -> None:
        self.server = server
        self.names = names
        self.owner = owner
        self.tag = f"sdp:{owner.instance}:{owner.node}"

    @contextlib.contextmanager
    def connect(self) -> Iterator[_Api]:
        client = httpx.Client(
            base_url=self.server.management_url.rstrip("/") + "/api",
            auth=(self.server.admin_user, self.server.admin_password.read().reveal()),
            timeout=self.server.connect_timeout_seconds * 6, trust_env=False,
        )
        try:
            yield _Api(client)
        except httpx.HTTPError as e:
            raise DataServerError(f"RabbitMQ management API at {self.server.management_url}: "
                                  f"{type(e).__name__}: {e}") from e
        finally:
            client.close()

    # -- observe ---------------------------------------------------------------------------------

    def observe(self) -> tuple[DataServerInfo, list[ObservedDataService]]:
        info = DataServerInfo(kind=DataKind.RABBITMQ, host=self.server.container_host,
                              port=self.server.container_port, reachable=False)
        try:
            with self.connect() as api:
                overview = api.get("/overview") or {}
                vhosts = api.get("/vhosts?columns=name,description") or []
                users = {u["name"] for u in api.get("/users?columns=name,tags") or []
                         if self.tag in _tags(u)}
                allowed = {(p["vhost"], p["user"]) for p in api.get("/permissions") or []}
        except DataServerError as e:
            return info.model_copy(update={"problem": str(e)}), []
        services = []
        for vhost in vhosts:
            marker = Marker.decode(vhost.get("description"))
            if marker is None or not marker.owned_by(self.owner.instance, self.owner.node):
                continue
            name = vhost["name"]
            complete = name in users and (name, name) in allowed
            services.append(self._observed(name, marker, complete=complete))
        version = str(overview.get("rabbitmq_version", "?"))
        return info.model_copy(update={"reachable": True, "version": version}), services

    def _observed(self, vhost: str, marker: Marker, *, complete: bool) -> ObservedDataService:
        ready = complete and marker.is_ready
        return ObservedDataService(
            kind=DataKind.RABBITMQ, name=vhost, user=vhost, sandbox=marker.sandbox,
            service=marker.service, state=DataState.READY if ready else DataState.INCOMPLETE,
            spec_hash=marker.spec_hash, created_at=marker.created,
            problem=None if ready else "the vhost's user or permissions are missing",
        )

    # -- steps -----------------------------------------------------------------------------------

    def _check(self, sandbox: str, service: str, vhost: str, user: str) -> None:
        expected = self.names.rabbitmq_vhost(sandbox, service)
        check_names("RabbitMQ vhost", sandbox=sandbox, service=service, given=vhost,
                    expected=expected)
        check_names("RabbitMQ user", sandbox=sandbox, service=service, given=user,
                    expected=expected)

    def _own(self, api: _Api, vhost: str, user: str, sandbox: str, service: str)\
            -> tuple[Marker | None, bool]:
        """(our vhost's marker, whether our user exists); Conflict on anything foreign."""
        found = api.get(f"/vhosts/{_path(vhost)}")
        marker = Marker.decode(found.get("description")) if found else None
        if found is not None and (marker is None or not marker.owned_by(
                self.owner.instance, self.owner.node)):
            raise Conflict(f"RabbitMQ vhost {vhost!r} exists and is not this node's: SDP does "
                           "not touch it")
        if marker is not None and (marker.sandbox, marker.service) != (sandbox, service):
            raise Conflict(f"RabbitMQ vhost {vhost!r} belongs to sandbox {marker.sandbox!r} "
                           f"entry {marker.service!r}: two entries map to one name")
        account = api.get(f"/users/{_path(user)}")
        if account is not None and self.tag not in _tags(account):
            raise Conflict(f"RabbitMQ user {user!r} exists and is not this node's (no tag "
                           f"{self.tag}): SDP does not touch it")
        return marker, account is not None

    def ensure(self, step: EnsureRabbitmqVhost, context: StepContext)\
            -> tuple[bool, ObservedDataService]:
        self._check(step.sandbox, step.service, step.vhost, step.user)
        password = check_password(step.password)
        with self.connect() as api:
            marker, _user = self._own(api, step.vhost, step.user, step.sandbox, step.service)
            changed = marker is None or not marker.is_ready
            if marker is None:
                marker = Marker.new(instance=self.owner.instance, node=self.owner.node,
                                    sandbox=step.sandbox, service=step.service)
                api.put(f"/vhosts/{_path(step.vhost)}", self._vhost_body(marker))
            api.put(f"/users/{_path(step.user)}", {
                "password_hash": rabbitmq_hash(password),
                "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": self.tag,
            })
            api.put(f"/permissions/{_path(step.vhost)}/{_path(step.user)}",
                    {"configure": ALL, "write": ALL, "read": ALL})
            ready = marker.ready(spec_hash=step.spec_hash)
            if ready != marker:
                api.put(f"/vhosts/{_path(step.vhost)}", self._vhost_body(ready))
            context.log(f"RabbitMQ vhost {step.vhost} and its user "
                        f"{'created' if changed else 'updated'}")
            return changed, self._observed(step.vhost, ready, complete=True)

    @staticmethod
    def _vhost_body(marker: Marker) -> dict[str, str]:
        return {"description": marker.encode(), "tags": "sdp"}

    def drop(self, step: DropRabbitmqVhost, context: StepContext) -> bool:
        self._check(step.sandbox, step.service, step.vhost, step.user)
        with self.connect() as api:
            marker, user = self._own(api, step.vhost, step.user, step.sandbox, step.service)
            if user:
                api.delete(f"/users/{_path(step.user)}")
                context.log(f"RabbitMQ user {step.user} deleted")
            if marker is not None:
                api.delete(f"/vhosts/{_path(step.vhost)}")
                context.log(f"RabbitMQ vhost {step.vhost} deleted with its queues")
            return user or marker is not None


def _tags(account: dict[str, Any]) -> list[str]:
    tags = account.get("tags") or []
    return tags.split(",") if isinstance(tags, str) else [str(t) for t in tags]


class _Api:
    """The few calls SDP makes; a 404 on GET is None, any other error status raises."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        if response.status_code == 404:
            return None
        self._check(response)
        return response.json()

    def put(self, path: str, body: dict[str, str]) -> None:
        self._check(self.client.put(path, json=body))

    def delete(self, path: str) -> None:
        response = self.client.delete(path)
        if response.status_code != 404:
            self._check(response)

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code >= 400:
            reason = response.text[:300]
            raise DataServerError(f"RabbitMQ management API: {response.request.method} "
                                  f"{response.request.url.path} answered "
                                  f"{response.status_code}: {reason}")


__all__ = ["RabbitmqData"]
