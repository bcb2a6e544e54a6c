"""Carry out a convergence plan, one idempotent step after another.

Each step either finds the node already as asked (and changes nothing) or changes it and says
so. Deploys follow the seed's stages (git fetch, git checkout, go build / composer install,
start container, routes) and emit its events; a failure ends the step FAILED with the failing
stage, the reason and the tail of the output. Promises:

* **replace without losing the old one**: build first (a failed build changes nothing); then
  the old container is stopped and renamed aside, the new one started and health-checked; on
  success the old one is removed, on failure the new one is removed and the old one is renamed
  back and started;
* an interrupted replacement (agent killed) is healed on the next step touching that container,
  and at agent start: the container aside is restored;
* the names in a step are checked against ``sdp_node.naming``, so a plan cannot name a
  container or network outside SDP's scheme.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sdp_node.build import GoBuilder, binary_name
from sdp_node.config import NodeConfig, RepositoryConfig
from sdp_node.containers import ASIDE_SUFFIX, Engine, Mount, RunSpec
from sdp_node.errors import BadRequest, NodeError, NotFound
from sdp_node.gateway import GatewayFiles
from sdp_node.git import GitStore
from sdp_node.naming import (
    GATEWAY,
    branch_problem,
    commit_problem,
    name_problem,
)
from sdp_node.operations import Operation
from sdp_node.phpconfig import replace_routes_file
from sdp_node.protocol import (
    LABEL_BRANCH,
    LABEL_COMMIT,
    LABEL_KIND,
    LABEL_PORT,
    LABEL_REPOSITORY,
    LABEL_SANDBOX,
    LABEL_SERVICE,
    LABEL_SPEC,
    ApplyRequest,
    ContainerSpec,
    DeployGateway,
    DeployService,
    DeployState,
    EnsureNetwork,
    EventName,
    NodeType,
    RemoveContainer,
    RemoveNetwork,
    RepositoryKind,
    SetRoutes,
    Stage,
    StartContainer,
    Step,
    StepResult,
    StopContainer,
)
from sdp_node.routes import GatewayRoutes
from sdp_node.steps import SpecStore, StepContext, StepFailed

TAIL = 30


class Converger:
    def __init__(self, config: NodeConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.names = config.names
        workspace = config.workspace
        self.git = GitStore(workspace)
        self.builder = GoBuilder(workspace, go_cache=config.go_cache)
        self.gateway_files = GatewayFiles(workspace)
        self.specs = SpecStore(workspace)
        self._trees = workspace / "trees"
        self._files = workspace / "files"
        self._trees.mkdir(parents=True, exist_ok=True)
        self._files.mkdir(parents=True, exist_ok=True)
        self.routes = GatewayRoutes(config, engine, self.git, self.gateway_files)

    # -- running a plan --------------------------------------------------------------------------

    def run(self, operation: Operation, request: ApplyRequest) -> None:
        try:
            for step in request.steps:
                if isinstance(step, DeployService | DeployGateway):
                    operation.emit("state", step_id=step.step_id, state=DeployState.QUEUED)
            for step in request.steps:
                context = StepContext(operation, step.step_id, request.credentials)
                operation.emit("result", step_id=step.step_id,
                               result=self._run_step(step, context))
        finally:
            operation.finish()

    def _run_step(self, step: Step, context: StepContext) -> StepResult:
        try:
            return self._dispatch(step, context)
        except StepFailed as e:
            return self._failed(step, context, e.stage, e.message, e.tail)
        except NodeError as e:
            return self._failed(step, context, context.current, str(e), list(context.tail))
        except Exception as e:  # reported as the step's failure, never lost
            message = f"internal error: {type(e).__name__}: {e}"
            return self._failed(step, context, context.current, message, list(context.tail))

    def _failed(
        self, step: Step, context: StepContext, stage: Stage | None, message: str,
        tail: list[str],
    ) -> StepResult:
        if isinstance(step, DeployService | DeployGateway):
            context.operation.emit(
                "event", step_id=step.step_id, stage=stage, event=EventName.DEPLOY_FAILED,
                message=message,
            )
        context.state(DeployState.FAILED, message)
        container = getattr(step, "container", None) or (
            step.spec.container if isinstance(step, DeployService | DeployGateway) else None
        )
        return StepResult(
            step_id=step.step_id, action=step.action, ok=False, state=DeployState.FAILED,
            changed=False, container=container, stage=stage, message=message, output_tail=tail,
        )

    def _dispatch(self, step: Step, context: StepContext) -> StepResult:
        if isinstance(step, EnsureNetwork):
            return self.ensure_network(step, context)
        if isinstance(step, DeployService):
            return self.deploy(step.spec, context, network=step.network, routes=None)
        if isinstance(step, DeployGateway):
            return self.deploy(step.spec, context, network=None, routes=step.routes)
        if isinstance(step, SetRoutes):
            return self.routes.set_routes(step, context)
        if isinstance(step, StopContainer):
            return self.stop(step, context)
        if isinstance(step, StartContainer):
            return self.start(step, context)
        if isinstance(step, RemoveContainer):
            return self.remove(step, context)
        if isinstance(step, RemoveNetwork):
            return self.remove_network(step, context)
        raise BadRequest(f"unknown step {step!r}")  # pragma: no cover - the union is closed

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
        return repository

    def _own_container(self, name: str) -> dict[str, Any] | None:
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

    def deploy(
        self, spec: ContainerSpec, context: StepContext, *, network: str | None,
        routes: dict[str, str] | None,
    ) -> StepResult:
        gateway = routes is not None
        repository = self._check_spec(spec, gateway=gateway)
        if network is not None and network != self.names.network(spec.sandbox):
            raise BadRequest(f"network {network!r} is not SDP's name for {spec.sandbox!r}")
        self.recover_aside(spec.container, log=context.log)
        current = self.engine.find(spec.container)
        if (
            current is not None and not spec.recreate
            and current["Config"]["Labels"].get(LABEL_SPEC) == spec.spec_hash
            and current["State"].get("Running")
        ):
            context.log(f"{spec.container} already runs this spec; nothing to do")
            context.state(DeployState.RUNNING)
            return self._ok(spec, context, changed=False)
        if routes is not None:
            tree = self._prepare_gateway(repository, spec, routes, context)
        else:
            tree = self._prepare_service(repository, spec, context)
        with context.stage(Stage.START):
            self._replace(repository, spec, tree, network, context)
        self.specs.save(spec.container, spec.public_spec)
        if gateway:
            self.gateway_files.prune_trees(spec.sandbox, keep={spec.commit})
        context.state(DeployState.RUNNING)
        return self._ok(spec, context, changed=True)

    def _ok(self, spec: ContainerSpec, context: StepContext, *, changed: bool) -> StepResult:
        return StepResult(
            step_id=context.step_id, action="deploy", ok=True, state=DeployState.RUNNING,
            changed=changed, container=spec.container, commit=spec.commit, port=spec.port,
        )

    def _fetch(self, repository: RepositoryConfig, spec: ContainerSpec, context: StepContext)\
            -> None:
        with context.stage(Stage.FETCH):
            if self.git.has_commit(repository, spec.commit):
                context.log(f"commit {spec.commit[:12]} is already in the node's store")
                return
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

    def _prepare_service(
        self, repository: RepositoryConfig, spec: ContainerSpec, context: StepContext
    ) -> Path:
        self._fetch(repository, spec, context)
        tree = self._trees / repository.name / spec.commit
        with context.stage(Stage.CHECKOUT):
            written = self.git.checkout(repository, spec.commit, tree)
            context.log(f"{'checked out' if written else 'reusing tree of'} {spec.commit[:12]} "
                        f"({spec.branch})")
        with context.stage(Stage.GO_BUILD):
            self.builder.build(repository, tree, log=context.log)
        return tree

    def _prepare_gateway(
        self, repository: RepositoryConfig, spec: ContainerSpec, routes: dict[str, str],
        context: StepContext,
    ) -> Path:
        self._fetch(repository, spec, context)
        tree = self.gateway_files.tree(spec.sandbox, spec.commit)
        with context.stage(Stage.CHECKOUT):
            written = self.git.checkout(repository, spec.commit, tree)
            context.log(f"{'checked out' if written else 'reusing tree of'} {spec.commit[:12]} "
                        f"({spec.branch}) for sandbox {spec.sandbox}")
        with context.stage(Stage.COMPOSER):
            self.gateway_files.composer_install(repository, tree, log=context.log)
        with context.stage(Stage.ROUTES):
            written_routes = replace_routes_file(tree, repository.routes_file, routes)
            for key in sorted(routes):
                context.log(f"{key}_url = {written_routes.get(key)}")
        return tree

    def _run_spec(
        self, repository: RepositoryConfig, spec: ContainerSpec, tree: Path,
        network: str | None,
    ) -> RunSpec:
        env = {**spec.env, **{k: v.reveal() for k, v in spec.secret_env.items()}}
        env.setdefault("SDP_SANDBOX", spec.sandbox)
        env.setdefault("SDP_SERVICE", spec.service)
        mounts = [Mount(str(p), t) for t, p in self._env_files(spec).items()]
        if repository.kind is RepositoryKind.GO:
            env.setdefault("PORT", str(repository.effective_port))
            mounts.insert(0, Mount(str(tree), "/src"))
            command: list[str] | None = repository.command or [
                f"/src/{binary_name(repository.name)}"
            ]
        else:
            target = repository.effective_mount_target
            env.setdefault("SDP_GATEWAY_ROOT", target)
            env.setdefault("SDP_URL_PREFIX", repository.url_prefix)
            mounts.insert(0, Mount(str(tree), target, read_only=False))
            mounts.extend(
                Mount(str(path), container_target)
                for container_target, path in self.gateway_files.serving_files(repository).items()
            )
            command = repository.command or None
        labels = self.engine.own_labels(
            **{
                LABEL_SANDBOX: spec.sandbox, LABEL_SERVICE: spec.service,
                LABEL_REPOSITORY: spec.repository, LABEL_BRANCH: spec.branch,
                LABEL_COMMIT: spec.commit, LABEL_PORT: str(spec.port), LABEL_SPEC: spec.spec_hash,
                LABEL_KIND: "gateway" if spec.service == GATEWAY else "service",
            }
        )
        return RunSpec(
            name=spec.container, image=repository.effective_image, command=command, env=env,
            labels=labels, container_port=repository.effective_port, host_port=spec.port,
            mounts=mounts, network=network,
            alias=spec.service if network else None,
            nano_cpus=spec.cpu_millicores * 1_000_000 if spec.cpu_millicores else None,
            memory_bytes=spec.memory_bytes, init=repository.init,
        )

    def _env_files(self, spec: ContainerSpec) -> dict[str, Path]:
        if not spec.files:
            return {}
        folder = self._files / spec.container / spec.spec_hash[:16]
        out = {}
        for index, env_file in enumerate(spec.files):
            path = folder / f"{index}-{Path(env_file.path).name}"
            if not path.exists():
                folder.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".partial")
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(env_file.content.reveal())
                os.replace(partial, path)
            out[env_file.path] = path
        return out

    def _replace(
        self, repository: RepositoryConfig, spec: ContainerSpec, tree: Path,
        network: str | None, context: StepContext,
    ) -> None:
        run_spec = self._run_spec(repository, spec, tree, network)
        self.engine.require_image(run_spec.image)
        user = self.engine.port_user(spec.port)
        if user is not None and user[0] != spec.container:
            raise StepFailed(
                Stage.START,
                f"port {spec.port} on node {self.config.name} is published by container "
                f"{user[0]!r} ({self.engine.describe_owner(user[1])}): SDP does not touch it",
                [],
            )
        current = self.engine.find(spec.container)
        aside = None
        if current is not None:
            aside = current["Id"]
            context.log(f"moving the running {spec.container} aside")
            self.engine.stop(aside)
            self.engine.rename(aside, spec.container + ASIDE_SUFFIX)
        new_id = None
        try:
            new_id = self.engine.create(run_spec)
            self.engine.start(new_id, name=spec.container, port=spec.port)
            context.log(f"container {spec.container} started on port {spec.port}; waiting for "
                        f"{repository.effective_health_path}")
            self.engine.wait_healthy(
                new_id, name=spec.container, port=spec.port,
                path=repository.effective_health_path,
                timeout=repository.health_timeout_seconds, log=context.log,
            )
        except NodeError as e:
            tail = self.engine.logs_tail(new_id) if new_id else []
            errors = self._error_output(new_id, spec.container, tail, context) if new_id else []
            for line in tail:
                context.log(f"[{spec.container}] {line}")
            if new_id:
                self.engine.remove(new_id)
            if aside:
                self.engine.rename(aside, spec.container)
                self.engine.start(aside, name=spec.container, port=spec.port)
                context.log(f"the previous {spec.container} is back in service")
            reason = f"{e}; its error log ends: {errors[-1]}" if errors else str(e)
            raise StepFailed(Stage.START, reason, tail or list(context.tail)) from e
        if aside:
            self.engine.remove(aside)
            context.log("the previous container was removed")

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

    def recover_aside(self, name: str, *, log: Any) -> None:
        """Heal an interrupted replacement: the container kept aside goes back in service."""
        previous = self.engine.find(name + ASIDE_SUFFIX)
        if previous is None:
            return
        current = self.engine.find(name)
        if current is not None:
            log(f"removing {name}, started by an interrupted replacement and never confirmed")
            self.engine.remove(current["Id"])
        self.engine.rename(previous["Id"], name)
        self.engine.start(previous["Id"], name=name)
        log(f"restored {name} from an interrupted replacement")

    def recover_all(self) -> list[str]:
        restored = []
        for container in self.engine.list_containers():
            if container.aside:
                name = container.name.removesuffix(ASIDE_SUFFIX)
                self.recover_aside(name, log=lambda _line: None)
                restored.append(name)
        return restored

    # -- stop, start, remove ---------------------------------------------------------------------

    def stop(self, step: StopContainer, context: StepContext) -> StepResult:
        current = self._own_container(step.container)
        if current is None:
            raise NotFound(f"no container {step.container!r} of this node to stop")
        running = bool(current["State"].get("Running"))
        if running:
            with context.stage(Stage.STOP):
                self.engine.stop(current["Id"])
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
        labels = current["Config"]["Labels"]
        changed = not current["State"].get("Running")
        if changed:
            with context.stage(Stage.START):
                port = int(labels.get(LABEL_PORT, "0"))
                repository = self.config.repository(labels.get(LABEL_REPOSITORY, ""))
                self.engine.start(current["Id"], name=step.container, port=port)
                self.engine.wait_healthy(
                    current["Id"], name=step.container, port=port,
                    path=repository.effective_health_path,
                    timeout=repository.health_timeout_seconds, log=context.log,
                )
        context.state(DeployState.RUNNING)
        return StepResult(
            step_id=step.step_id, action=step.action, ok=True, state=DeployState.RUNNING,
            changed=changed, container=step.container, commit=labels.get(LABEL_COMMIT),
        )

    def remove(self, step: RemoveContainer, context: StepContext) -> StepResult:
        changed = False
        labels: dict[str, str] = {}
        for name in (step.container + ASIDE_SUFFIX, step.container):
            current = self._own_container(name)
            if current is not None:
                labels = current["Config"]["Labels"] or labels
                with context.stage(Stage.REMOVE):
                    self.engine.remove(current["Id"])
                    context.log(f"{name} removed")
                changed = True
        self.specs.forget(step.container)
        shutil.rmtree(self._files / step.container, ignore_errors=True)
        if labels.get(LABEL_KIND) == "gateway":
            self.gateway_files.prune_trees(labels.get(LABEL_SANDBOX, ""), keep=set())
        context.state(DeployState.REMOVED)
        return StepResult(
            step_id=step.step_id, action=step.action, ok=True, state=DeployState.REMOVED,
            changed=changed, container=step.container,
        )


__all__ = ["Converger", "SpecStore", "StepContext", "StepFailed"]
