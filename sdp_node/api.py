"""The agent's HTTP API (``/v1``): Starlette routes over the node's parts.

Every route but ``/healthz`` needs the bearer token (constant-time compare); request bodies are
bounded; every error is JSON ``{"error": {"code", "message"}}``. Apply answers at once with an
operation id; one worker thread runs operations one after another, so two plans never touch the
node at the same time (the steps of one plan run on the converger's bounded pool, in the order
``sdp_node.schedule`` requires). Streams are SSE with ids: a client reconnecting with
``Last-Event-ID`` gets exactly the events it missed. Credentials in a request live only in that
request's memory and the operation that uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sdp_node import __version__
from sdp_node.config import NodeConfig
from sdp_node.containers import Engine
from sdp_node.converge import Converger
from sdp_node.data.agent import DataAgent
from sdp_node.errors import BadRequest, NodeError, NotFound, Unauthorized
from sdp_node.lease import LeaseKeeper
from sdp_node.metrics import Sampler
from sdp_node.numbers import plain_number
from sdp_node.operations import Operations
from sdp_node.promexport import CONTENT_TYPE, exposition, registry_for
from sdp_node.protocol import (
    API_PREFIX,
    LABEL_PORT,
    LABEL_REPOSITORY,
    MAX_REQUEST_BYTES,
    ApplyRequest,
    ApplyResponse,
    BranchesRequest,
    BranchesResponse,
    CommittedRoutesRequest,
    CommittedRoutesResponse,
    DeployGateway,
    DeployService,
    EnsureDatabase,
    EnsureRabbitmqVhost,
    EnsureRedisUser,
    ErrorBody,
    ErrorResponse,
    IdentityProof,
    IdentityRequest,
    LeaseRequest,
    NodeInfo,
    NodeType,
    Observation,
    ObservedContainer,
    RecloneDatabase,
    identity_proof,
)
from sdp_node.redact import Redactor

log = logging.getLogger("sdp_node")
M = TypeVar("M", bound=BaseModel)
HEARTBEAT_SECONDS = 15
UNAUTHENTICATED = frozenset({"/healthz", f"{API_PREFIX}/identify"})


def error_response(error: NodeError) -> Response:
    body = ErrorResponse(error=ErrorBody(code=error.code, message=str(error)))
    return model_response(body, status=error.status)


def model_response(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


class TokenGuard:
    """ASGI middleware: every path but /healthz needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNAUTHENTICATED:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.startswith(b"Bearer "):
                given = value[len(b"Bearer "):]
        if not hmac.compare_digest(given, self._token):
            response = error_response(Unauthorized("missing or wrong bearer token"))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def read_model(request: Request, model: type[M]) -> M:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_REQUEST_BYTES:
        raise BadRequest(f"request body over {MAX_REQUEST_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_REQUEST_BYTES:
            raise BadRequest(f"request body over {MAX_REQUEST_BYTES} bytes")
    try:
        return model.model_validate_json(bytes(body))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in e.errors(include_url=False, include_input=False)
        )
        raise BadRequest(f"invalid {model.__name__}: {problems}") from None


Handler = Callable[[Request], Awaitable[Response]]


def guarded(handler: Handler) -> Handler:
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except NodeError as e:
            return error_response(e)

    return wrapper


class NodeApp:
    """The agent: its parts and the routes over them."""

    def __init__(self, config: NodeConfig, token: str, *, engine: Engine | None = None) -> None:
        self.config = config
        self.token = token
        # An INFRA node runs no containers (its VM may have no Docker): it has a DataAgent
        # instead of an engine and a converger.
        self.engine: Engine | None = None
        self.converger: Converger | None = None
        self.data: DataAgent | None = None
        if config.type is NodeType.INFRA:
            self.data = DataAgent(config)
        else:
            self.engine = engine or Engine(config)
            self.converger = Converger(config, self.engine)
        self.sampler: Sampler | None = None
        self._registry: CollectorRegistry | None = None
        if self.engine is not None:
            self.sampler = self._sampler(self.engine)
        self.operations = Operations(cap=config.max_events_per_operation)
        self.leases = LeaseKeeper()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdp-apply")
        self.info = NodeInfo(
            name=config.name, type=config.type, installation=config.installation,
            resource_prefix=config.resource_prefix,
            version=__version__,
        )

    def starlette(self) -> Starlette:
        p = API_PREFIX
        routes = [
            Route("/healthz", self.healthz),
            Route(f"{p}/info", guarded(self.get_info)),
            Route(f"{p}/identify", guarded(self.identify), methods=["POST"]),
            Route(f"{p}/repositories", guarded(self.repositories)),
            Route(f"{p}/branches", guarded(self.branches), methods=["POST"]),
            Route(f"{p}/observe", guarded(self.observe)),
            Route(f"{p}/committed-routes", guarded(self.committed_routes), methods=["POST"]),
            Route(f"{p}/containers/{{name}}/stats", guarded(self.stats)),
            Route(f"{p}/metrics/containers", guarded(self.container_metrics)),
            Route("/metrics", guarded(self.prometheus)),
            Route(f"{p}/containers/{{name}}/logs", guarded(self.container_logs)),
            Route(f"{p}/apply", guarded(self.apply), methods=["POST"]),
            Route(f"{p}/operations", guarded(self.list_operations)),
            Route(f"{p}/operations/{{id}}", guarded(self.get_operation)),
            Route(f"{p}/operations/{{id}}/events", guarded(self.operation_events)),
            Route(f"{p}/lease", guarded(self.acquire_lease), methods=["POST"]),
            Route(f"{p}/lease", guarded(self.current_lease), methods=["GET"]),
            Route(f"{p}/lease/{{id}}", guarded(self.renew_lease), methods=["PUT"]),
            Route(f"{p}/lease/{{id}}", guarded(self.release_lease), methods=["DELETE"]),
        ]
        app = Starlette(routes=routes, lifespan=self._lifespan)
        app.add_middleware(TokenGuard, token=self.token)
        return app

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.sampler is not None:
            self.sampler.start()
        try:
            yield
        finally:
            if self.sampler is not None:
                self.sampler.stop()
            self.worker.shutdown(wait=False, cancel_futures=True)
            if self.converger is not None:
                self.converger.close()

    def _sampler(self, engine: Engine) -> Sampler:
        def stats(name: str) -> tuple[float, int, int]:
            found = engine.stats(name)
            return found.cpu_percent, found.memory_bytes, found.memory_limit_bytes

        def health_path(repository: str) -> str | None:
            try:
                return self.config.repository(repository).effective_health_path
            except NodeError:
                return None

        return Sampler(node=self.config.name, interval=self.config.metrics_interval_seconds,
                       size=self.config.metrics_samples, lister=engine.list_containers,
                       stats=stats, prober=engine.probe_all, health_path=health_path)

    async def prometheus(self, request: Request) -> Response:
        """Prometheus text format (``promexport.py``), behind the bearer token like the API."""
        if self.sampler is None:
            raise BadRequest(f"node {self.config.name} is an INFRA node: it runs no containers")
        if self._registry is None:
            self._registry = registry_for(self.sampler)
        body = await run_in_threadpool(exposition, self._registry)
        return Response(body, media_type=CONTENT_TYPE)

    async def container_metrics(self, request: Request) -> Response:
        """The sampler's ring buffers (``metrics.py``); INFRA nodes have none."""
        if self.sampler is None:
            raise BadRequest(f"node {self.config.name} is an INFRA node: it runs no containers")
        return model_response(self.sampler.snapshot())

    def _containers(self) -> tuple[Engine, Converger]:
        if self.engine is None or self.converger is None:
            raise BadRequest(f"node {self.config.name} is an INFRA node: it runs no containers")
        return self.engine, self.converger

    async def healthz(self, request: Request) -> Response:
        launcher = self.converger.launcher.state if self.converger is not None else "off"
        return JSONResponse({"ok": True, "node": self.config.name, "launcher": launcher})

    async def get_info(self, request: Request) -> Response:
        return model_response(self.info)

    async def identify(self, request: Request) -> Response:
        """Prove this agent holds its token, without the caller sending one (see
        ``protocol.identity_proof``)."""
        body = await read_model(request, IdentityRequest)
        proof = identity_proof(self.token, body.nonce, self.info)
        return model_response(IdentityProof(node=self.info, proof=proof))

    async def repositories(self, request: Request) -> Response:
        return JSONResponse([r.info().model_dump(mode="json") for r in self.config.repositories])

    async def branches(self, request: Request) -> Response:
        """The remote's branch heads; a head missing from the repository's store here starts
        its fetch in the background (``sdp_node.prefetch``: never a clone, with this request's
        credentials) for the deploy that usually follows."""
        body = await read_model(request, BranchesRequest)
        repository = self.config.repository(body.repository)
        converger = self._containers()[1]

        def check() -> dict[str, str]:
            heads = converger.git.ls_remote(repository, body.credentials)
            converger.prefetcher.offer(repository, heads.values(), body.credentials)
            return heads

        heads = await run_in_threadpool(check)
        return model_response(BranchesResponse(repository=repository.name, heads=heads))

    async def observe(self, request: Request) -> Response:
        def collect() -> Observation:
            if self.data is not None:
                servers, sources, services = self.data.observe()
                return Observation(
                    node=self.info, containers=[], networks=[], gateways=[], last_applied={},
                    operations_in_flight=self.operations.in_flight(), data_servers=servers,
                    data_sources=sources, data_services=services,
                )
            engine, converger = self._containers()
            containers = self._with_health_checks(engine.list_containers())
            return Observation(
                node=self.info,
                containers=containers,
                networks=engine.list_networks(),
                gateways=converger.routes.observe_gateways(containers),
                last_applied=converger.specs.all(),
                operations_in_flight=self.operations.in_flight(),
                failures=converger.failures.all(),
            )

        return model_response(await run_in_threadpool(collect))

    def _with_health_checks(self, containers: list[ObservedContainer]) -> list[ObservedContainer]:
        """Each running container with its health path's answer (the seed's health endpoint
        status), probed side by side with a short time limit."""
        targets: dict[str, tuple[int, str]] = {}
        for container in containers:
            labels = container.labels
            port = labels.get(LABEL_PORT, "")
            if container.state != "running" or container.aside or not port.isdigit():
                continue
            try:
                repository = self.config.repository(labels.get(LABEL_REPOSITORY, ""))
            except NodeError:
                continue
            targets[container.name] = (int(port), repository.effective_health_path)
        results = self._containers()[0].probe_all(targets)
        return [c.model_copy(update={"health_check": results.get(c.name)}) for c in containers]

    async def committed_routes(self, request: Request) -> Response:
        body = await read_model(request, CommittedRoutesRequest)
        routes = await run_in_threadpool(
            self._containers()[1].routes.committed_routes, body.repository, body.commit,
            body.credentials,
        )
        return model_response(CommittedRoutesResponse(
            repository=body.repository, commit=body.commit, routes=routes))

    async def stats(self, request: Request) -> Response:
        name = request.path_params["name"]
        return model_response(await run_in_threadpool(self._containers()[0].stats, name))

    async def apply(self, request: Request) -> Response:
        body = await read_model(request, ApplyRequest)
        self.leases.check(body.lease_id)
        secrets: list[str] = []
        pairs: list[tuple[str, str]] = []
        if body.credentials is not None:
            user, password = body.credentials.username.reveal(), body.credentials.password.reveal()
            secrets += [user, password]
            pairs.append((user, password))
        for step in body.steps:
            if isinstance(step, DeployService | DeployGateway):
                secrets += [v.reveal() for v in step.spec.secret_env.values()]
                secrets += [f.content.reveal() for f in step.spec.files if f.secret]
            if isinstance(step, EnsureDatabase | RecloneDatabase | EnsureRedisUser
                          | EnsureRabbitmqVhost):
                secrets.append(step.password.reveal())
        if self.config.data is not None:
            secrets += [s.reveal() for s in self.config.data.secrets()]
        operation = self.operations.create(
            requested_by=body.requested_by, steps=len(body.steps),
            redactor=Redactor([*secrets, self.token], pairs=pairs),
        )
        if self.data is not None:
            self.worker.submit(self.data.run, operation, body)
        else:
            self.worker.submit(self._containers()[1].run, operation, body)
        return model_response(ApplyResponse(operation_id=operation.id), status=202)

    async def list_operations(self, request: Request) -> Response:
        return JSONResponse(
            [o.summary().model_dump(mode="json") for o in self.operations.all()]
        )

    def _operation(self, request: Request) -> Any:
        operation = self.operations.get(request.path_params["id"])
        if operation is None:
            raise NotFound(f"no operation {request.path_params['id']!r} on this node")
        return operation

    async def get_operation(self, request: Request) -> Response:
        return model_response(self._operation(request).summary())

    async def operation_events(self, request: Request) -> Response:
        operation = self._operation(request)
        last = request.headers.get("last-event-id") or request.query_params.get("after", "0")
        last_id = _whole(last, 0)

        async def stream() -> AsyncIterator[ServerSentEvent]:
            nonlocal last_id
            while True:
                events = await operation.wait_after(last_id, HEARTBEAT_SECONDS)
                for event in events:
                    last_id = event.id
                    yield ServerSentEvent(
                        event.model_dump_json(), event=event.kind, id=str(event.id)
                    )
                    if event.kind == "end":
                        return
                if not events:
                    if operation.done:  # past its end event: nothing more will come
                        return
                    yield ServerSentEvent(comment="heartbeat")

        return EventSourceResponse(stream(), ping=HEARTBEAT_SECONDS)

    async def container_logs(self, request: Request) -> Response:
        name = request.path_params["name"]
        engine = self._containers()[0]
        details = await run_in_threadpool(engine.find, name)
        if details is None:
            raise NotFound(f"no container {name!r} of this node")
        tail_param = request.query_params.get("tail", "100")
        tail = _whole(tail_param, 100)
        since = request.headers.get("last-event-id")
        follow = request.query_params.get("follow", "true") != "false"
        ident = details.id

        async def stream() -> AsyncIterator[ServerSentEvent]:
            kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "stream": True,
                                      "follow": follow, "timestamps": True}
            resume = _docker_since(since) if since else None
            if resume is not None:
                kwargs["since"] = resume
            else:
                kwargs["tail"] = tail
            lines = await run_in_threadpool(engine.api.logs, ident, **kwargs)
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()
            loop = asyncio.get_running_loop()

            def pump() -> None:
                try:
                    for chunk in lines:
                        loop.call_soon_threadsafe(queue.put_nowait, chunk)
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, None)

            pumping = loop.run_in_executor(None, pump)
            try:
                while True:
                    chunk = await queue.get()
                    if chunk is None:
                        yield ServerSentEvent("{}", event="end")
                        return
                    # Lines end at a newline only: a carriage return or any other control
                    # character is part of the text (the reader strips what its terminal must
                    # not see; the stream carries it intact, JSON-escaped).
                    for raw in chunk.decode("utf-8", "replace").split("\n"):
                        if not raw:
                            continue
                        stamp, _, text = raw.partition(" ")
                        if since and stamp <= since:
                            continue
                        yield ServerSentEvent(json.dumps({"line": text, "at": stamp}),
                                              event="log", id=stamp)
            finally:
                lines.close()
                await asyncio.wait([pumping], timeout=5)

        return EventSourceResponse(stream(), ping=HEARTBEAT_SECONDS)

    async def acquire_lease(self, request: Request) -> Response:
        body = await read_model(request, LeaseRequest)
        return model_response(self.leases.acquire(body.holder, body.ttl_seconds))

    async def current_lease(self, request: Request) -> Response:
        lease = self.leases.peek()
        return JSONResponse(lease.model_dump(mode="json") if lease else None)

    async def renew_lease(self, request: Request) -> Response:
        body = await read_model(request, LeaseRequest)
        return model_response(self.leases.renew(request.path_params["id"], body.ttl_seconds))

    async def release_lease(self, request: Request) -> Response:
        self.leases.release(request.path_params["id"])
        return Response(status_code=204)


def _whole(value: str, default: int) -> int:
    """``value`` as a whole number, at most 999,999,999; else ``default``."""
    number = plain_number(value, at_most=999_999_999)
    return default if number is None else number


def _docker_since(stamp: str) -> float | None:
    """A log line's id (its RFC 3339 timestamp) as Docker's ``since``; None for anything else
    (docker-py refuses a ``since`` that is not positive, which ended the stream mid-answer)."""
    from datetime import datetime

    head, _, fraction = stamp.rstrip("Z").partition(".")
    if fraction and not (fraction.isascii() and fraction.isdigit()):
        return None
    try:
        moment = datetime.fromisoformat(f"{head}+00:00")
    except ValueError:
        return None
    since = moment.timestamp() + float(f"0.{fraction or 0}")
    return since if since > 0 else None
