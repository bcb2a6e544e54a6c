"""Carry out a convergence plan: idempotent steps, independent ones side by side.

Each step either finds the node already as asked (and changes nothing) or changes it and says
so. Deploys follow the seed's stages (git fetch, git checkout, go build / composer install,
start container, routes) and emit its events; a failure ends the step FAILED with the failing
stage, the reason and the tail of the output. Promises:

* **switch without dropping a request**: a service whose plan gives it a new port (a spare
  one) gets its new container beside the old one (``<name>--next``, no network alias yet),
  started while its commit builds (``sdp_node.launcher``: it waits for the binary; a failed
  build removes it and changes nothing else), health-gated once built (2xx
  ``health_successes`` times in a row; an exit fails at once), then given the service alias,
  then renamed into place while
  the old one, renamed ``<name>--previous``, keeps serving; the reconciler moves the routes
  and then sends ``retire``, which drains (``drain_seconds``) and removes the previous one.
  On any failure the new container goes and nothing else changed. A deploy on the same port
  (a gateway, an explicit port) replaces in place: the old container stopped and kept aside,
  the new one started; on failure the old one comes back;
* a commit that failed to build, crashed on start or never became healthy is remembered per
  (container, spec hash) and not tried again until the spec changes or ``recreate`` asks;
* an interrupted switch or replacement (agent killed) is healed on the next step touching that
  container, and at agent start: an unconfirmed ``--next`` goes, a stopped ``--previous``
  (in-place replacement) is restored, a running ``--previous`` (switch) waits for ``retire``
  (or, with no ``<name>`` left, takes its name back);
* the names in a step are checked against ``sdp_node.naming``, so a plan cannot name a
  container or network outside SDP's scheme, and a gateway's routes against the gateway's own
  route keys (``sdp_node.routes``);
* a published port is guarded (``sdp_node.isolation``) before its container starts, and its
  rule goes with the container;
* every kind of step is handled: ``_dispatch`` matches the closed union exhaustively;
* steps run on a bounded pool (``apply_workers``): each waits for the earlier steps
  ``sdp_node.schedule`` orders it after (same container or port; a sandbox's network and
  route steps as barriers) and nothing else, so the deploys of different sandboxes overlap;
  what they share is done once or one at a time: a repository's fetch, a commit's tree, a
  commit's go build (``GoBuilder``'s single flight), network subnets, the port guard's chain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import assert_never

from msgspec import Struct
from msgspec.structs import replace

from sdp_node import gatewaystage, prune
from sdp_node.build import GoBuilder
from sdp_node.config import NodeConfig, RepositoryConfig
from sdp_node.containers import (
    ASIDE_SUFFIX,
    NEXT_SUFFIX,
    ContainerDetails,
    Engine,
    PortHolder,
    RunSpec,
)
from sdp_node.errors import (
    BadRequest,
    BuildError,
    ContainerError,
    CrashedOnStart,
    HealthCheckFailed,
    NodeError,
    NotFound,
)
from sdp_node.gateway import GatewayFiles
from sdp_node.git import GitStore
from sdp_node.isolation import PortGuard
from sdp_node.launcher import Launcher
from sdp_node.mounts import engine_mounts
from sdp_node.naming import (
    GATEWAY,
    branch_problem,
    commit_problem,
    container_path_problem,
    name_problem,
)
from sdp_node.operations import Operation
from sdp_node.phpconfig import replace_routes_file
from sdp_node.pool import KeyedLocks, PortClaims, StepPool
from sdp_node.prefetch import Prefetcher
from sdp_node.protocol import (
    LABEL_BRANCH,
    LABEL_COMMIT,
    LABEL_KIND,
    LABEL_PORT,
    LABEL_REPOSITORY,
    LABEL_SANDBOX,
    LABEL_SPEC,
    LABEL_TREE,
    TREE_SWITCH,
    ApplyRequest,
    CaptureDatabase,
    ContainerSpec,
    DeployGateway,
    DeployService,
    DeployState,
    DrainContainer,
    DropCapturedSource,
    DropDatabase,
    DropRabbitmqVhost,
    DropRedisUser,
    EnsureDatabase,
    EnsureNetwork,
    EnsureRabbitmqVhost,
    EnsureRedisUser,
    EventName,
    FailureReason,
    NodeType,
    ObservedFailure,
    RecloneDatabase,
    RemoveContainer,
    RemoveNetwork,
    RepositoryKind,
    RetireContainer,
    SetRoutes,
    Stage,
    StartContainer,
    Step,
    StepResult,
    StopContainer,
)
from sdp_node.routes import GatewayRoutes, check_route_keys, ignored_keys_problem
from sdp_node.runspec import RunSpecs
from sdp_node.schedule import dependencies, exclusive
from sdp_node.steps import FailureStore, SpecStore, StepContext, StepFailed

Log = Callable[[str], None]
log = logging.getLogger("sdp_node")


class StartChecks(Struct, frozen=True):
    """What a service's start asks Docker first, answered (while its commit builds)."""

    holder: PortHolder | None
    """the container publishing the spec's port now (None: nobody; else this container)"""
    current: ContainerDetails | None
    """the container of the spec's name now"""


class PreparedStart(Struct, frozen=True):
    """A Go service's start as far as it went while its commit built."""

    checks: StartChecks
    early: str | None = None
    """the id of ``<name>--next``, started beside the build (None: it starts after it)"""
    run_spec: RunSpec | None = None
    """what ``early`` was created from"""


class Converger:
    def __init__(self, config: NodeConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.names = config.names
        workspace = config.workspace
        self.git = GitStore(workspace)
        self.builder = GoBuilder(workspace, go_cache=config.go_cache)
        self.launcher = Launcher(workspace, go_cache=self.builder.cache, log=log.warning)
        if any(r.kind is RepositoryKind.GO for r in config.repositories):
            self.launcher.start()
        self.gateway_files = GatewayFiles(workspace)
        self.specs = SpecStore(workspace)
        self.failures = FailureStore(workspace)
        self.run_specs = RunSpecs(config, engine, self.gateway_files)
        self.guard = PortGuard(config, bridge_subnet=engine.bridge_subnet)
        self._trees = workspace / "trees"
        self._trees.mkdir(parents=True, exist_ok=True)
        self.routes = GatewayRoutes(config, engine, self.git, self.gateway_files)
        self.pool = StepPool(config.workers)
        self._fetches = KeyedLocks()
        self.prefetcher = Prefetcher(self.git, self._fetches)
        """the branch check's background fetches (``sdp_node.prefetch``), under ``_fetches``"""
        self._checkouts = KeyedLocks()
        self._claims = PortClaims()
        self._planned: frozenset[int] = frozenset()
        """the ports the running plan's service deploys publish: guarded from its start"""
        self._guarding = threading.Lock()
        self._networking = threading.Lock()
        self._side = ThreadPoolExecutor(max_workers=config.workers,
                                        thread_name_prefix="sdp-start-checks")
        """a deploy's questions to Docker asked while its go build runs, and the plan's guard"""
        self._plan_guard: Future[None] | None = None
        """the running plan's one rewrite of the port guard (``_guard_plan``)"""
        self._present: frozenset[str] | None = None
        """the names of the engine's containers when the running plan started (None: unknown)"""
        self._touched: Counter[str] = Counter()
        """how many of the running plan's steps have started on each container"""
        self._touching = threading.Lock()

    # -- running a plan --------------------------------------------------------------------------

    def close(self) -> None:
        """The agent is stopping: drop queued prefetches and start checks (running ones end
        on their own; the operation they serve was already cut off)."""
        self.prefetcher.close()
        self._side.shutdown(wait=False, cancel_futures=True)

    def run(self, operation: Operation, request: ApplyRequest) -> None:
        steps = request.steps
        try:
            for step in steps:
                if isinstance(step, DeployService | DeployGateway):
                    operation.emit("state", step_id=step.step_id, state=DeployState.QUEUED)
            waits_for = dependencies(steps, self.names)
            # The guard's rewrite (a few iptables calls) runs beside the steps' fetches and
            # builds; a service waits for it before its container starts (_ensure_guarded).
            self._plan_guard = self._side.submit(self._guard_plan, steps)
            self._touched = Counter()
            self._present = None
            if any(isinstance(s, DeployService | DeployGateway) for s in steps):
                # (a routes-only or retire plan, on the push-to-live path, needs no listing)
                with suppress(NodeError):  # then every deploy looks for itself
                    self._present = self.engine.container_names()

            def work(index: int) -> None:
                step = steps[index]
                container = _container_of(step)
                if container is not None:
                    with self._touching:
                        self._touched[container] += 1
                context = StepContext(operation, step.step_id, request.credentials)
                context.log(f"started ({self.pool.busy} of {self.pool.workers} workers busy)")
                operation.emit("result", step_id=step.step_id,
                               result=self._run_step(step, context))

            self.pool.run(waits_for, work, groups=[exclusive(step) for step in steps])
        finally:
            if self._plan_guard is not None:
                wait([self._plan_guard])
                self._plan_guard = None
            self._planned = frozenset()
            self._present = None
            operation.finish()
            # Every step has finished, and no other apply runs while this looks.
            prune.after_apply(self.config, lambda: engine_mounts(self.engine))

    def _guard_plan(self, steps: list[Step]) -> None:
        """One rewrite of the port guard's chain for all the plan's new service ports, before
        any of them starts, instead of one per deploy (steps that run side by side would wait
        for each other's). A rule for a port whose deploy then fails rejects foreign sources
        of a port nothing answers on, until the next rewrite; a port another owner's container
        publishes is left alone (its deploy fails without touching it)."""
        self._planned = frozenset()
        ports = {s.spec.port for s in steps if isinstance(s, DeployService)}
        if not self.guard.enabled or not ports:
            return
        with suppress(NodeError):  # each deploy then tries again and reports it
            self._planned = frozenset(ports - self.engine.foreign_ports())
            if not all(self.guard.covers(p) for p in self._planned):
                self.guard_ports()

    def _run_step(self, step: Step, context: StepContext) -> StepResult:
        try:
            return self._dispatch(step, context)
        except StepFailed as e:
            return self._failed(step, context, e.stage, e.message, e.tail, reason=e.reason,
                                answer=e.answer)
        except NodeError as e:
            return self._failed(step, context, context.current, str(e), list(context.tail))
        except Exception as e:  # reported as the step's failure, never lost
            message = f"internal error: {type(e).__name__}: {e}"
            return self._failed(step, context, context.current, message, list(context.tail))

    def _failed(
        self, step: Step, context: StepContext, stage: Stage | None, message: str,
        tail: list[str], *, reason: FailureReason | None = None, answer: str | None = None,
        remembered: bool = False,
    ) -> StepResult:
        if isinstance(step, DeployService | DeployGateway):
            context.operation.emit(
                "event", step_id=step.step_id, stage=stage, event=EventName.DEPLOY_FAILED,
                message=message,
            )
        context.state(DeployState.FAILED, message)
        return StepResult(
            step_id=step.step_id, action=step.action, ok=False, state=DeployState.FAILED,
            changed=False, container=_container_of(step), stage=stage, message=message,
            output_tail=tail, reason=reason, health_answer=answer, remembered=remembered,
        )

    def _dispatch(self, step: Step, context: StepContext) -> StepResult:
        match step:
            case EnsureNetwork():
                return self.ensure_network(step, context)
            case DeployService():
                return self.deploy_service(step, context)
            case DeployGateway():
                return self.deploy_gateway(step, context)
            case SetRoutes():
                return self.routes.set_routes(step, context)
            case StopContainer():
                return self.stop(step, context)
            case StartContainer():
                return self.start(step, context)
            case RemoveContainer():
                return self.remove(step, context)
            case RetireContainer():
                return self.retire(step, context)
            case DrainContainer():
                return self.drain(step, context)
            case RemoveNetwork():
                return self.remove_network(step, context)
            case EnsureDatabase() | RecloneDatabase() | DropDatabase() | EnsureRedisUser() \
                    | DropRedisUser() | EnsureRabbitmqVhost() | DropRabbitmqVhost() \
                    | CaptureDatabase() | DropCapturedSource():
                raise BadRequest(f"{step.action} is a data step: INFRA nodes run them, this "
                                 f"node is a {self.config.type.value} node")
            case _:
                assert_never(step)

    # -- checks ----------------------------------------------------------------------------------

    def _check_spec(self, spec: ContainerSpec, *, gateway: bool) -> RepositoryConfig:
        for label, value in (("sandbox", spec.sandbox), ("service", spec.service)):
            problem = name_problem(value)
            if problem:
                raise BadRequest(f"{label}: {problem}")
        if gateway != (spec.service == GATEWAY):
            raise BadRequest(f"service {spec.service!r} does not fit a "
                             f"{'gateway' if gateway else 'service'} step")
        expected = self.names.container(spec.sandbox, spec.service)
        if spec.container != expected:
            raise BadRequest(
                f"container {spec.container!r} is not SDP's name for sandbox {spec.sandbox!r} "
                f"service {spec.service!r} ({expected!r})"
            )
        for problem in (branch_problem(spec.branch), commit_problem(spec.commit)):
            if problem:
                raise BadRequest(problem)
        repository = self.config.repository(spec.repository)
        wanted = RepositoryKind.PHP if gateway else RepositoryKind.GO
        if repository.kind is not wanted:
            raise BadRequest(
                f"repository {repository.name} is a {repository.kind.value} repository; a "
                f"{'gateway' if gateway else 'service'} needs a {wanted.value} one"
            )
        tree = "/src" if repository.kind is RepositoryKind.GO else \
            repository.effective_mount_target
        for env_file in spec.files:
            problem = container_path_problem(env_file.path)
            if problem is None and (env_file.path == tree or env_file.path.startswith(tree + "/")):
                problem = (f"file path {env_file.path!r} is under {tree}, where the "
                           "repository's tree is mounted")
            if problem:
                raise BadRequest(problem)
        return repository

    def _own_container(self, name: str) -> ContainerDetails | None:
        if not self.names.owns(name):
            raise BadRequest(f"{name!r} is not a container name of this installation "
                             f"(they start with {self.names.prefix}-)")
        return self.engine.find(name)

    # -- networks --------------------------------------------------------------------------------

    def ensure_network(self, step: EnsureNetwork, context: StepContext) -> StepResult:
        if self.config.type is not NodeType.MICRO:
            raise BadRequest("only MICRO nodes create sandbox networks")
        if step.network != self.names.network(step.sandbox):
            raise BadRequest(f"network {step.network!r} is not SDP's name for {step.sandbox!r}")
        with self._networking:  # two at once would pick the same free subnet
            created, subnet = self.engine.ensure_network(
                step.network, {LABEL_SANDBOX: step.sandbox}
            )
        context.log(f"network {step.network} {'created' if created else 'exists'} ({subnet})")
        return StepResult(
            step_id=step.step_id, action=step.action, ok=True, state=DeployState.RUNNING,
            changed=created, message=f"subnet {subnet}",
        )

    def remove_network(self, step: RemoveNetwork, context: StepContext) -> StepResult:
        if not self.names.owns(step.network):
            raise BadRequest(f"{step.network!r} is not a network name of this installation "
                             f"(they start with {self.names.prefix}-)")
        removed = self.engine.remove_network(step.network)
        context.log(f"network {step.network} {'removed' if removed else 'was already gone'}")
        return StepResult(
            step_id=step.step_id, action=step.action, ok=True, state=DeployState.REMOVED,
            changed=removed,
        )

    # -- deploys ---------------------------------------------------------------------------------

    def deploy_service(self, step: DeployService, context: StepContext) -> StepResult:
        spec = step.spec
        repository = self._check_spec(spec, gateway=False)
        if step.network != self.names.network(spec.sandbox):
            raise BadRequest(f"network {step.network!r} is not SDP's name for {spec.sandbox!r}")
        if self._already_running(spec, context):
            return self._ok(spec, context, changed=False)
        remembered = self._remembered(step, spec, context)
        if remembered is not None:
            return remembered
        with self._remembering(spec, context):
            return self._deploy_service(step, repository, context)

    def _deploy_service(self, step: DeployService, repository: RepositoryConfig,
                        context: StepContext) -> StepResult:
        spec = step.spec
        self._fetch(repository, spec, context)
        tree = self._trees / repository.name / spec.commit
        with context.stage(Stage.CHECKOUT), self._checkouts.hold(tree):
            written = self.git.checkout(repository, spec.commit, tree)
            context.log(f"{'checked out' if written else 'reusing tree of'} {spec.commit[:12]} "
                        f"({spec.branch})")
        # What the start asks Docker first (the image, who publishes the port, the container
        # of that name) is asked while go builds, instead of after: the answers cannot change
        # meanwhile (the schedule runs no other step on this container or its port, and the
        # port is claimed). A failed check is the START stage's failure, after the build.
        # The new container starts while go builds (``_prepare_start``, sdp_node.launcher):
        # Docker's start costs about as long as the build. A failed build removes it.
        binary = self.builder.output(repository.name, spec.commit)
        run_spec = self.run_specs.service(repository, spec, tree=tree, binary=binary,
                                          network=step.network)
        with self._claims.claim(spec.port, spec.container):
            prepared = self._side.submit(self._prepare_start, repository, spec, run_spec,
                                         context)
            try:
                with context.stage(Stage.GO_BUILD):
                    self.builder.build(repository, tree, commit=spec.commit, log=context.log)
            except BaseException:
                self._abandon_start(prepared, spec, context)
                raise
            with context.stage(Stage.START):
                self._replace(repository, spec, run_spec, context, prepared)
        self.specs.save(spec.container, spec.public_spec)
        context.state(DeployState.RUNNING)
        return self._ok(spec, context, changed=True)

    def deploy_gateway(self, step: DeployGateway, context: StepContext) -> StepResult:
        spec = step.spec
        repository = self._check_spec(spec, gateway=True)
        problem = ignored_keys_problem(repository, step.routes)
        if problem:
            raise BadRequest(problem)
        if self._already_running(spec, context):
            return self._ok(spec, context, changed=False)
        remembered = self._remembered(step, spec, context)
        if remembered is not None:
            return remembered
        with self._remembering(spec, context):
            return self._deploy_gateway(step, repository, context)

    def _deploy_gateway(self, step: DeployGateway, repository: RepositoryConfig,
                        context: StepContext) -> StepResult:
        spec = step.spec
        self._fetch(repository, spec, context)
        tree = self.gateway_files.tree(spec.sandbox, spec.commit)
        with context.stage(Stage.CHECKOUT), self._checkouts.hold(tree):
            written = self.git.checkout(repository, spec.commit, tree)
            context.log(f"{'checked out' if written else 'reusing tree of'} {spec.commit[:12]} "
                        f"({spec.branch}) for sandbox {spec.sandbox}")
        with context.stage(Stage.COMPOSER):
            self.gateway_files.composer_install(
                repository, tree, user=self.config.hardening.composer_user, log=context.log)
        with context.stage(Stage.ROUTES):
            check_route_keys(repository, tree, step.routes, commit=spec.commit)
            written_routes = replace_routes_file(tree, repository.routes_file, step.routes)
            for key in sorted(step.routes):
                context.log(f"{key}_url = {written_routes.get(key)}")
        run_spec = self.run_specs.gateway(repository, spec, tree=tree)
        current = self.engine.find(spec.container)
        served = self.gateway_files.current(spec.sandbox)
        with context.stage(Stage.START):
            if current is not None and self._tree_switchable(current, spec):
                self._switch_tree(repository, spec, current, context)
            else:
                if self.run_specs.switchable(repository):
                    self.gateway_files.point_current(spec.sandbox, spec.commit)
                try:
                    self._replace(repository, spec, run_spec, context)
                except StepFailed:
                    if served is not None:
                        self.gateway_files.point_current(spec.sandbox, served)
                    raise
        self.specs.save(spec.container, spec.public_spec)
        # The tree served before stays one deploy longer: Apache's old children may still be
        # finishing requests in it after the graceful reload.
        self.gateway_files.prune_trees(spec.sandbox, keep={spec.commit} | (
            {served} if served else set()))
        context.state(DeployState.RUNNING)
        return self._ok(spec, context, changed=True)

    def _tree_switchable(self, current: ContainerDetails, spec: ContainerSpec) -> bool:
        """Whether the running gateway can take this commit inside: it serves its trees
        through the ``current`` link and only the commit (and branch) changed."""
        if not current.running or spec.recreate or current.label(LABEL_TREE) != TREE_SWITCH \
                or current.label(LABEL_PORT) != str(spec.port):
            return False
        applied = self.specs.get(spec.container)
        if applied is None:
            return False

        def rest(public: dict[str, object]) -> dict[str, object]:
            return {k: v for k, v in public.items() if k not in ("commit", "branch")}

        return rest(applied) == rest(dict(spec.public_spec))

    def _switch_tree(self, repository: RepositoryConfig, spec: ContainerSpec,
                     current: ContainerDetails, context: StepContext) -> None:
        """A new gateway commit inside the running container: its PHP checked with ``php -l``
        by the container's own PHP, the ``current`` link moved, a graceful reload, the health
        gate; on failure the link goes back (and another reload). The public port never
        closes, and a tree that does not parse is never served."""
        previous = current.label(LABEL_COMMIT)
        self._php_lint(repository, spec, current, context)
        self._staged_health(repository, spec, current, context)
        restarts = self.engine.restart_count(current.id)
        self.gateway_files.point_current(spec.sandbox, spec.commit)
        try:
            self._reload(current, context)
            self.engine.wait_healthy(
                current.id, name=spec.container, port=spec.port,
                path=repository.effective_health_path, timeout=repository.health_timeout_seconds,
                log=context.log, successes=repository.health_successes,
                restarts_before=restarts,
            )
        except NodeError as e:
            failed = self._start_failed(e, current.id, spec.container, context)
            self.gateway_files.point_current(spec.sandbox, previous)
            with suppress(NodeError):
                self._reload(current, context)
            context.log(f"{spec.container} serves {previous[:12]} again")
            raise failed from e
        self.engine.set_labels(current.id, {
            LABEL_COMMIT: spec.commit, LABEL_BRANCH: spec.branch, LABEL_SPEC: spec.spec_hash})
        context.log(f"{spec.container} switched to {spec.commit[:12]} in place (port "
                    f"{spec.port} stayed open)")

    def _reload(self, current: ContainerDetails, context: StepContext) -> None:
        command = self.config.reload_command
        code, output = self.engine.exec(current.id, command)
        for line in output.splitlines():
            context.log(line)
        if code != 0:
            raise ContainerError(f"{' '.join(command)} exited with {code} in {current.name}")
        context.log(f"reloaded ({' '.join(command)})")

    def _staged_health(self, repository: RepositoryConfig, spec: ContainerSpec,
                       current: ContainerDetails, context: StepContext) -> None:
        """The new tree's health path asked inside the running container, before it serves
        (``sdp_node.gatewaystage``): a tree that parses but is not healthy never serves."""
        path = repository.effective_health_path
        _, user = self.engine.exec(current.id, gatewaystage.SERVING_USER)
        code, output = self.engine.exec(current.id, gatewaystage.command(
            tree=f"{repository.effective_mount_target}/{spec.commit}",
            prefix=repository.url_prefix, path=path,
            successes=repository.health_successes,
            timeout=repository.health_timeout_seconds), user=user.strip())
        staged = gatewaystage.answer(code, output)
        if staged.healthy:
            context.log(f"staged {spec.commit[:12]}: {path} answered {staged.answer} before "
                        f"it serves")
            return
        raise StepFailed(
            Stage.START, f"staged commit {spec.commit[:12]} did not answer {path} with 2xx"
            + (f" {repository.health_successes} times in a row"
               if repository.health_successes > 1 else "")
            + f" within {repository.health_timeout_seconds:.0f}s (last: {staged.answer}); "
            f"the running gateway keeps serving {current.label(LABEL_COMMIT)[:12]}",
            list(context.tail), reason=FailureReason.HEALTH_CHECK_FAILED, answer=staged.answer)

    def _php_lint(self, repository: RepositoryConfig, spec: ContainerSpec,
                  current: ContainerDetails, context: StepContext) -> None:
        """``php -l`` on every PHP file of the new tree, by the PHP that will serve it."""
        tree = f"{repository.effective_mount_target}/{spec.commit}"
        code, output = self.engine.exec(current.id, [
            "sh", "-c", 'find "$1" -name "*.php" -type f -print0 | xargs -0 -r -n 1 php -l',
            "php-lint", tree])
        errors = [line for line in output.splitlines()
                  if line.strip() and not line.startswith("No syntax errors detected")]
        if code == 0:
            context.log(f"php -l: every PHP file of {spec.commit[:12]} parses")
            return
        for line in errors[-10:]:
            context.log(line)
        first = next((line for line in errors if "error" in line.lower()), errors[0] if errors
                     else f"exit {code}")
        raise StepFailed(
            Stage.START, f"php -l refused commit {spec.commit[:12]}: {first.strip()}; the "
            f"running gateway keeps serving {current.label(LABEL_COMMIT)[:12]}",
            errors[-10:], reason=FailureReason.BUILD_FAILED)

    def _remembered(self, step: DeployService | DeployGateway, spec: ContainerSpec,
                    context: StepContext) -> StepResult | None:
        """The remembered failure of this very spec, reported again without a new attempt."""
        failure = self.failures.get(spec.container)
        if failure is None or failure.spec_hash != spec.attempt_key:
            return None
        if spec.recreate:
            context.log(f"{failure.reason.value} remembered for {spec.commit[:12]}: trying again "
                        "as asked (restart)")
            self.failures.forget(spec.container)
            return None
        message = (f"{failure.reason.value}: commit {spec.commit[:12]} failed before "
                   f"({failure.message}); not retried until the branch moves, the spec changes "
                   "or a restart asks")
        context.log(message)
        stage = Stage.GO_BUILD if failure.reason is FailureReason.BUILD_FAILED else Stage.START
        return self._failed(step, context, stage, message, failure.log_tail,
                            reason=failure.reason, answer=failure.health_answer,
                            remembered=True)

    @contextmanager
    def _remembering(self, spec: ContainerSpec, context: StepContext) -> Iterator[None]:
        """Remember a failure of the commit itself (build, crash, health); forget an earlier
        one on success. Failures of the node (fetch, credentials, Docker) are not remembered."""
        try:
            yield
        except StepFailed as e:
            reason = e.reason
            if reason is None and e.stage is Stage.GO_BUILD and \
                    isinstance(e.__cause__, BuildError):
                reason = FailureReason.BUILD_FAILED
            if reason is not None:
                e.reason = reason
                self.failures.save(ObservedFailure(
                    container=spec.container, sandbox=spec.sandbox, service=spec.service,
                    commit=spec.commit, spec_hash=spec.attempt_key, reason=reason,
                    message=context.operation.redact(e.message),
                    health_answer=e.answer,
                    log_tail=[context.operation.redact(line) for line in e.tail[-20:]],
                    at=datetime.now(UTC),
                ))
            raise
        self.failures.forget(spec.container)

    def _absent_since_plan_start(self, name: str) -> bool:
        """Whether the engine had no container ``name``, nor its ``--next`` or ``--previous``
        one, when this plan started, and no other step of the plan has run on it since: then
        a deploy of a new sandbox need not ask Docker for each of them (three inspections of
        nothing per deploy, 120 for 40 new sandboxes). A container another actor creates
        under the name meanwhile is still found before the deploy creates its own."""
        present = self._present
        if present is None or {name, name + NEXT_SUFFIX, name + ASIDE_SUFFIX} & present:
            return False
        with self._touching:
            return self._touched[name] <= 1

    def _already_running(self, spec: ContainerSpec, context: StepContext) -> bool:
        if self._absent_since_plan_start(spec.container):
            return False
        self.recover_aside(spec.container, log=context.log)
        current = self.engine.find(spec.container)
        if (
            current is not None and not spec.recreate
            and current.label(LABEL_SPEC) == spec.spec_hash and current.running
        ):
            context.log(f"{spec.container} already runs this spec; nothing to do")
            context.state(DeployState.RUNNING)
            return True
        return False

    def _ok(self, spec: ContainerSpec, context: StepContext, *, changed: bool) -> StepResult:
        return StepResult(
            step_id=context.step_id, action="deploy", ok=True, state=DeployState.RUNNING,
            changed=changed, container=spec.container, commit=spec.commit, port=spec.port,
        )

    def _fetch(self, repository: RepositoryConfig, spec: ContainerSpec, context: StepContext)\
            -> None:
        with context.stage(Stage.FETCH):
            if self.git.has_commit(repository, spec.commit):
                by = " (fetched by the branch check)" \
                    if self.prefetcher.fetched(repository, spec.commit) else ""
                context.log(f"commit {spec.commit[:12]} is already in the node's store{by}")
                return
            # One fetch of a repository at a time: a deploy that waited for the branch check's
            # fetch or another deploy's usually finds its commit fetched.
            if self.prefetcher.join(repository):
                context.log(f"waited for the branch check's fetch of {repository.name}")
            with self._fetches.hold(repository.name):
                if self.git.has_commit(repository, spec.commit):
                    by = "the branch check" if self.prefetcher.fetched(repository, spec.commit) \
                        else "another deploy"
                    context.log(f"commit {spec.commit[:12]} was fetched by {by}")
                    return
                self._fetch_missing(repository, spec, context)

    def _fetch_missing(self, repository: RepositoryConfig, spec: ContainerSpec,
                       context: StepContext) -> None:
        if context.credentials is None:
            raise StepFailed(
                Stage.FETCH,
                f"commit {spec.commit[:12]} of {repository.name} must be fetched, but the "
                "plan carries no git credentials", [],
            )
        heads = self.git.fetch(repository, context.credentials, log=context.log)
        if not self.git.has_commit(repository, spec.commit):
            at = heads.get(spec.branch)
            raise StepFailed(
                Stage.FETCH,
                f"commit {spec.commit[:12]} is not on the remote's {repository.name} "
                f"(branch {spec.branch} is at {at[:12] if at else 'nothing: no such branch'})",
                list(context.tail),
            )

    def _replace(
        self, repository: RepositoryConfig, spec: ContainerSpec, run_spec: RunSpec,
        context: StepContext, prepared: Future[PreparedStart] | None = None,
    ) -> None:
        """``prepared``: ``_prepare_start`` already done (under this port's claim)."""
        if repository.kind is not RepositoryKind.GO:  # a gateway's port is public: unguarded
            self._replace_claimed(repository, spec, run_spec, context,
                                  self._start_checks(repository, spec))
            return
        # Guarded from before its container exists until it carries the port's label.
        with self._claims.claim(spec.port, spec.container):
            ready = prepared.result() if prepared is not None else PreparedStart(
                self._start_checks(repository, spec))
            if ready.early is not None and ready.run_spec is not None:
                self._promote(repository, spec, ready.run_spec, ready.early,
                              ready.checks.current, context)
            else:
                self._replace_claimed(repository, spec, run_spec, context, ready.checks)

    def _prepare_start(self, repository: RepositoryConfig, spec: ContainerSpec,
                       run_spec: RunSpec, context: StepContext) -> PreparedStart:
        """Beside the build: the start checks, then, where the new container may run beside
        what runs now (nobody else on its port; no container of the name, or a running one to
        switch from, and no ``--previous`` still to retire), ``<name>--next`` started: with
        the launcher waiting for the binary, or with the binary if SDP's record has it."""
        checks = self._start_checks(repository, spec)
        current = checks.current
        if checks.holder is not None or (current is not None and not current.running) \
                or self.engine.find(spec.container + ASIDE_SUFFIX) is not None:
            return PreparedStart(checks)
        if self.builder.recorded(repository.name, spec.commit) is not None:
            early_spec = run_spec
        elif self.builder.output(repository.name, spec.commit).exists():
            return PreparedStart(checks)  # a binary SDP's record does not vouch for: never run
        else:
            launcher = self.launcher.ready()
            if launcher is None:  # still being built (or it cannot be): start after the build
                return PreparedStart(checks)
            early_spec = self.run_specs.launched(repository, run_spec, launcher)
        new_id = self._start_next(repository, spec, early_spec, current, context,
                                  waits_for_build=early_spec is not run_spec)
        return PreparedStart(checks, new_id, early_spec)

    def _abandon_start(self, prepared: Future[PreparedStart], spec: ContainerSpec,
                       context: StepContext) -> None:
        """The build failed: a container started beside it goes; nothing else changed."""
        try:
            ready = prepared.result()
        except Exception:  # the build's failure is the one reported
            return
        if ready.early is not None:
            self.engine.remove(ready.early)
            context.log(f"{spec.container}{NEXT_SUFFIX}, started beside the build, was removed")

    def _start_checks(self, repository: RepositoryConfig, spec: ContainerSpec) -> StartChecks:
        """The image is loaded, nobody else publishes the port, the port is guarded (Go
        services), and the container of the spec's name as it is now."""
        self.engine.require_image(repository.effective_image)
        holder = self.engine.port_user(spec.port)
        if holder is not None and holder.name != spec.container:
            raise StepFailed(
                Stage.START,
                f"port {spec.port} on node {self.config.name} is published by container "
                f"{holder.name!r} ({self.engine.describe_owner(dict(holder.labels))}): SDP does "
                "not touch it", [],
            )
        if repository.kind is RepositoryKind.GO:
            self._ensure_guarded(spec.port)
        return StartChecks(holder, self.engine.find(spec.container))

    def _replace_claimed(
        self, repository: RepositoryConfig, spec: ContainerSpec, run_spec: RunSpec,
        context: StepContext, checks: StartChecks,
    ) -> None:
        holder, current = checks.holder, checks.current
        if current is not None and current.running and holder is None:
            self._switch(repository, spec, run_spec, current, context)
        else:
            self._replace_in_place(repository, spec, run_spec, current, context)

    def _wait_healthy(self, ident: str, repository: RepositoryConfig, name: str, port: int,
                      context: StepContext, *, successes: int | None = None) -> None:
        self.engine.wait_healthy(
            ident, name=name, port=port, path=repository.effective_health_path,
            timeout=repository.health_timeout_seconds, log=context.log,
            successes=successes or repository.health_successes,
        )

    def _start_failed(self, e: NodeError, new_id: str | None, name: str,
                      context: StepContext) -> StepFailed:
        """The failure of a new container, with its last log lines and error output."""
        tail = self.engine.logs_tail(new_id) if new_id else []
        errors = self._error_output(new_id, name, tail, context) if new_id else []
        for line in tail:
            context.log(f"[{name}] {line}")
        message = f"{e}; its error log ends: {errors[-1]}" if errors else str(e)
        if isinstance(e, CrashedOnStart):
            reason: FailureReason | None = FailureReason.CRASHED_ON_START
        elif isinstance(e, HealthCheckFailed):
            reason = FailureReason.HEALTH_CHECK_FAILED
        else:
            reason = None
        answer = e.answer if isinstance(e, HealthCheckFailed) else None
        failed = StepFailed(Stage.START, message, tail or list(context.tail), reason=reason,
                            answer=answer)
        failed.__cause__ = e
        return failed

    def _switch(
        self, repository: RepositoryConfig, spec: ContainerSpec, run_spec: RunSpec,
        current: ContainerDetails, context: StepContext,
    ) -> None:
        """The new container beside the running one, on the plan's (spare) port; the old one
        keeps serving, as ``<name>--previous``, until ``retire``."""
        previous = self.engine.find(spec.container + ASIDE_SUFFIX)
        if previous is not None:
            context.log(f"retiring {previous.name}, left by an earlier switch")
            self._drain_and_remove(previous, repository, context)
        new_id = self._start_next(repository, spec, run_spec, current, context)
        self._promote(repository, spec, run_spec, new_id, current, context)

    def _start_next(
        self, repository: RepositoryConfig, spec: ContainerSpec, run_spec: RunSpec,
        current: ContainerDetails | None, context: StepContext, *, waits_for_build: bool = False,
    ) -> str:
        """``<name>--next`` created and started on the spec's port; the network alias only if
        nothing runs under the name (else ``_promote`` gives it once healthy). Its id; on a
        failure it is gone and nothing else changed."""
        staging = spec.container + NEXT_SUFFIX
        leftover = self.engine.find(staging)
        if leftover is not None:
            context.log(f"removing {staging}, left by an interrupted switch")
            self.engine.remove(leftover.id)
        new_id = None
        try:
            new_id = self.engine.create(replace(
                run_spec, name=staging, alias=run_spec.alias if current is None else None))
            self.engine.start(new_id, name=staging, port=spec.port)
        except NodeError as e:
            failed = self._start_failed(e, new_id, staging, context)
            if new_id:
                self.engine.remove(new_id)
            raise failed from e
        beside = f" beside {spec.container} (port {current.label(LABEL_PORT)})" \
            if current is not None else ""
        then = "runs the binary once it is built" if waits_for_build \
            else f"waiting for {repository.effective_health_path}"
        context.log(f"container {staging} started{beside} on port {spec.port}; {then}")
        return new_id

    def _promote(
        self, repository: RepositoryConfig, spec: ContainerSpec, run_spec: RunSpec, new_id: str,
        current: ContainerDetails | None, context: StepContext,
    ) -> None:
        """``<name>--next`` health-gated, given the alias (if it switches from ``current``),
        and renamed into place, ``current`` becoming ``--previous``. On a failure the new one
        goes and ``current`` keeps serving under its name."""
        staging = spec.container + NEXT_SUFFIX
        renamed = False
        try:
            self._wait_healthy(new_id, repository, staging, spec.port, context)
            if current is not None and run_spec.network and run_spec.alias:
                self.engine.join_alias(new_id, run_spec.network, run_spec.alias)
                self._wait_healthy(new_id, repository, staging, spec.port, context,
                                   successes=1)
                context.log(f"{staging} joined {run_spec.network} as {run_spec.alias}")
            if current is not None:
                self.engine.rename(current.id, spec.container + ASIDE_SUFFIX)
                renamed = True
            self.engine.rename(new_id, spec.container)
        except NodeError as e:
            failed = self._start_failed(e, new_id, staging, context)
            self.engine.remove(new_id)
            if renamed and current is not None:
                self.engine.rename(current.id, spec.container)
            context.log(f"{spec.container} kept serving: nothing else changed"
                        if current is not None else "nothing else changed")
            raise failed from e
        previous = f"; the previous one serves on port {current.label(LABEL_PORT)} until the " \
            "routes moved and it is retired" if current is not None else ""
        context.log(f"{spec.container} now runs {spec.commit[:12]} on port {spec.port}"
                    + previous)

    def _replace_in_place(
        self, repository: RepositoryConfig, spec: ContainerSpec, run_spec: RunSpec,
        current: ContainerDetails | None, context: StepContext,
    ) -> None:
        aside = None
        if current is not None:
            aside = current.id
            context.log(f"moving the running {spec.container} aside")
            self.engine.stop(aside)
            self.engine.rename(aside, spec.container + ASIDE_SUFFIX)
        new_id = None
        try:
            new_id = self.engine.create(run_spec)
            self.engine.start(new_id, name=spec.container, port=spec.port)
            context.log(f"container {spec.container} started on port {spec.port}; waiting for "
                        f"{repository.effective_health_path}")
            self._wait_healthy(new_id, repository, spec.container, spec.port, context)
        except NodeError as e:
            failed = self._start_failed(e, new_id, spec.container, context)
            if new_id:
                self.engine.remove(new_id)
            if aside:
                self.engine.rename(aside, spec.container)
                self.engine.start(aside, name=spec.container, port=spec.port)
                context.log(f"the previous {spec.container} is back in service")
            raise failed from e
        if aside:
            self.engine.remove(aside)
            context.log("the previous container was removed")

    def _drain(self, container: ContainerDetails, context: StepContext,
               repository: RepositoryConfig | None = None) -> None:
        """A running container serves what was already sent to it for its repository's
        ``drain_seconds`` (``repository``, else the one its label names; none: no wait)."""
        if repository is None:
            try:
                repository = self.config.repository(container.label(LABEL_REPOSITORY))
            except NodeError:
                repository = None
        drain = repository.drain_seconds if repository is not None else 0
        if container.running and drain > 0:
            context.log(f"{container.name} drains for {drain:g}s")
            time.sleep(drain)  # requests already sent to it finish

    def _drain_and_remove(self, previous: ContainerDetails, repository: RepositoryConfig | None,
                          context: StepContext) -> None:
        self._drain(previous, context, repository)
        self.engine.stop(previous.id)
        self.engine.remove(previous.id)
        context.log(f"{previous.name} removed")

    def retire(self, step: RetireContainer, context: StepContext) -> StepResult:
        """The routes point at ``step.container`` now: its previous instance goes."""
        current = self._own_container(step.container)
        previous = self._own_container(step.container + ASIDE_SUFFIX)
        changed = False
        if previous is not None and previous.running:
            if current is None or not current.running:
                raise StepFailed(
                    Stage.REMOVE, f"{step.container} is not running: its previous instance "
                    "keeps serving", [])
            with context.stage(Stage.REMOVE):
                self._drain_and_remove(previous, None, context)
                self.guard_ports()
            changed = True
        elif previous is not None:
            self.recover_aside(step.container, log=context.log)
            changed = True
        else:
            context.log(f"{step.container} has no previous instance; nothing to do")
        return StepResult(
            step_id=step.step_id, action=step.action, ok=True, state=DeployState.RUNNING,
            changed=changed, container=step.container,
            commit=current.label(LABEL_COMMIT) or None if current else None,
        )

    def _ensure_guarded(self, port: int) -> None:
        """``port`` guarded before its container starts: by the chain as last written when it
        covers the port (looked at under the guard's lock, so no rewrite without the port,
        which this deploy has claimed, is under way), else by a rewrite."""
        if not self.guard.enabled:
            return
        planning = self._plan_guard
        if planning is not None:  # the plan's rewrite first (submitted before any step ran)
            wait([planning])
        with self._guarding:
            if self.guard.covers(port):
                return
        self.guard_ports(also=port)

    def guard_ports(self, *, also: int | None = None) -> None:
        """Guard the published ports of this node's services (and ``also``, about to be)."""
        if not self.guard.enabled:
            return
        # Listing and writing under one lock, with the ports of deploys in flight: a step's
        # rewrite never drops the rule of a port another step is about to publish.
        with self._guarding:
            ports = {
                int(labels[LABEL_PORT]) for labels in self.engine.container_labels()
                if labels.get(LABEL_KIND) == "service" and labels.get(LABEL_PORT, "").isdigit()
            } | self._claims.ports() | self._planned
            if also is not None:
                ports.add(also)
            self.guard.sync(ports)

    def _error_output(
        self, ident: str, name: str, tail: list[str], context: StepContext
    ) -> list[str]:
        """The container's last stderr lines (Apache's error log in php:*-apache), logged
        when the combined tail, flooded by access-log lines, does not already show them."""
        errors = [line for line in self.engine.logs_tail(ident, 10, stdout=False) if line.strip()]
        for line in errors:
            if line not in tail:
                context.log(f"[{name} stderr] {line}")
        return errors

    def recover_aside(self, name: str, *, log: Log) -> None:
        """Heal an interrupted replacement. A ``--next`` container was never confirmed: it
        goes. A stopped ``--previous`` (an in-place replacement) goes back in service; a running
        one (a switch: the new container was confirmed) waits for ``retire``."""
        staging = self.engine.find(name + NEXT_SUFFIX)
        if staging is not None:
            log(f"removing {staging.name}, started by an interrupted switch and never confirmed")
            self.engine.remove(staging.id)
        previous = self.engine.find(name + ASIDE_SUFFIX)
        if previous is None:
            return
        if previous.running:
            if self.engine.find(name) is None:
                # Killed between a switch's two renames: the new one (still ``--next``) went
                # above; the old one never stopped and takes its name back.
                self.engine.rename(previous.id, name)
                log(f"restored {name} from a switch interrupted between its renames")
            return
        current = self.engine.find(name)
        if current is not None:
            log(f"removing {name}, started by an interrupted replacement and never confirmed")
            self.engine.remove(current.id)
        self.engine.rename(previous.id, name)
        self.engine.start(previous.id, name=name)
        log(f"restored {name} from an interrupted replacement")

    def restore_isolation(self) -> None:
        """At agent start: the port rules again (they do not survive a reboot; containers do),
        or, with isolation off, no chain of this agent's left behind."""
        if self.guard.enabled:
            self.guard_ports()
        else:
            self.guard.sync([])

    def recover_all(self) -> list[str]:
        restored = []
        for container in self.engine.list_containers():
            if container.aside:
                name = container.name.removesuffix(ASIDE_SUFFIX).removesuffix(NEXT_SUFFIX)
                self.recover_aside(name, log=lambda _line: None)
                restored.append(name)
        return restored

    # -- stop, start, remove ---------------------------------------------------------------------

    def stop(self, step: StopContainer, context: StepContext) -> StepResult:
        current = self._own_container(step.container)
        if current is None:
            raise NotFound(f"no container {step.container!r} of this node to stop")
        running = current.running
        if running:
            with context.stage(Stage.STOP):
                self.engine.stop(current.id)
                context.log(f"{step.container} stopped")
        context.state(DeployState.STOPPED)
        return StepResult(
            step_id=step.step_id, action=step.action, ok=True, state=DeployState.STOPPED,
            changed=running, container=step.container,
        )

    def start(self, step: StartContainer, context: StepContext) -> StepResult:
        self.recover_aside(step.container, log=context.log)
        current = self._own_container(step.container)
        if current is None:
            raise NotFound(f"no container {step.container!r} of this node to start")
        changed = not current.running
        if changed:
            with context.stage(Stage.START):
                port = int(current.label(LABEL_PORT, "0"))
                repository = self.config.repository(current.label(LABEL_REPOSITORY))
                restarts = self.engine.restart_count(current.id)  # a crash of long ago
                self.engine.start(current.id, name=step.container, port=port)
                self.engine.wait_healthy(
                    current.id, name=step.container, port=port,
                    path=repository.effective_health_path,
                    timeout=repository.health_timeout_seconds, log=context.log,
                    successes=repository.health_successes, restarts_before=restarts,
                )
        context.state(DeployState.RUNNING)
        return StepResult(
            step_id=step.step_id, action=step.action, ok=True, state=DeployState.RUNNING,
            changed=changed, container=step.container, commit=current.label(LABEL_COMMIT) or None,
        )

    def drain(self, step: DrainContainer, context: StepContext) -> StepResult:
        """The service moved to another node and the routes followed it: this container
        serves what was already sent to it for ``drain_seconds``, then goes as ``remove``."""
        current = self._own_container(step.container)
        if current is not None:
            with context.stage(Stage.REMOVE):
                context.log(f"{step.container} moved to another node")
                self._drain(current, context)
        removed = self.remove(RemoveContainer(step_id=step.step_id, container=step.container),
                              context)
        return removed.model_copy(update={"action": step.action})

    def remove(self, step: RemoveContainer, context: StepContext) -> StepResult:
        changed = False
        labels: dict[str, str] = {}
        for name in (step.container + NEXT_SUFFIX, step.container + ASIDE_SUFFIX,
                     step.container):
            current = self._own_container(name)
            if current is not None:
                labels = dict(current.labels) or labels
                with context.stage(Stage.REMOVE):
                    self.engine.remove(current.id)
                    context.log(f"{name} removed")
                changed = True
        self.specs.forget(step.container)
        self.failures.forget(step.container)
        self.run_specs.forget(step.container)
        if labels.get(LABEL_KIND) == "gateway":
            self.gateway_files.prune_trees(labels.get(LABEL_SANDBOX, ""), keep=set())
        elif changed:
            self.guard_ports()
        context.state(DeployState.REMOVED)
        return StepResult(
            step_id=step.step_id, action=step.action, ok=True, state=DeployState.REMOVED,
            changed=changed, container=step.container,
        )


def _container_of(step: Step) -> str | None:
    match step:
        case DeployService() | DeployGateway():
            return step.spec.container
        case SetRoutes() | StopContainer() | StartContainer() | RemoveContainer() \
                | RetireContainer() | DrainContainer():
            return step.container
        case EnsureNetwork() | RemoveNetwork():
            return None
        case EnsureDatabase() | RecloneDatabase() | DropDatabase() | EnsureRedisUser() \
                | DropRedisUser() | EnsureRabbitmqVhost() | DropRabbitmqVhost() \
                | CaptureDatabase() | DropCapturedSource():
            return None
        case _:
            assert_never(step)


__all__ = ["Converger", "SpecStore", "StepContext", "StepFailed"]
