"""The route tables of running gateways: change them in place, read them back, and know the
values each gateway commit carries (the OCP values), read from git so hand edits and earlier
overrides never leak into them.

A plan may change only route keys of that gateway: ``<key>_url`` entries its config.php
assigns, minus the repository's ``ignored_route_keys`` (CodeIgniter's own ``base_url``). Any
other key, in ``set_routes`` or in a gateway deploy, is refused with a message naming it,
before the file is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sdp_node.config import NodeConfig, RepositoryConfig
from sdp_node.containers import ContainerDetails, Engine
from sdp_node.errors import BadRequest, NodeError, NotFound, RouteConfigError
from sdp_node.gateway import GatewayFiles
from sdp_node.git import GitStore
from sdp_node.memo import BoundedMemo
from sdp_node.naming import GATEWAY, commit_problem
from sdp_node.phpconfig import read_routes, read_routes_file, replace_routes_file
from sdp_node.protocol import (
    LABEL_COMMIT,
    LABEL_KIND,
    LABEL_REPOSITORY,
    LABEL_SANDBOX,
    Credentials,
    DeployState,
    ObservedContainer,
    ObservedGateway,
    SetRoutes,
    Stage,
    StepResult,
)
from sdp_node.steps import StepContext, StepFailed

COMMITS_KEPT = 1024
"""Gateway commits whose routes an agent keeps parsed: every running gateway's, with room."""


class GatewayRoutes:
    def __init__(self, config: NodeConfig, engine: Engine, git: GitStore,
                 files: GatewayFiles) -> None:
        self.config = config
        self.engine = engine
        self.git = git
        self.files = files
        self._committed_routes: BoundedMemo[tuple[str, str], dict[str, str]] = BoundedMemo(
            COMMITS_KEPT)

    def _own(self, name: str) -> ContainerDetails | None:
        return self.engine.find(name)

    def set_routes(self, step: SetRoutes, context: StepContext) -> StepResult:
        if step.container != self.config.names.container(step.sandbox, GATEWAY):
            raise BadRequest(f"{step.container!r} is not the gateway of {step.sandbox!r}")
        current = self._own(step.container)
        if current is None:
            raise NotFound(f"no gateway container {step.container!r} on this node")
        repository = self.config.repository(current.label(LABEL_REPOSITORY))
        commit = current.label(LABEL_COMMIT)
        problem = ignored_keys_problem(repository, step.routes)
        if problem:
            raise BadRequest(problem)
        tree = self.files.tree(step.sandbox, commit)
        with context.stage(Stage.ROUTES):
            check_route_keys(repository, tree, step.routes, commit=commit)
            before = read_routes_file(tree, repository.routes_file)
            # The running gateway serves this file: a change of its literals needs no php -l.
            after = replace_routes_file(tree, repository.routes_file, step.routes,
                                        parsed_already=True)
            changed = {k for k in step.routes if before.get(k) != after.get(k)}
            for key in sorted(changed):
                context.log(f"{key}_url: {before.get(key)} -> {after.get(key)}")
            if changed and self.config.reload_command:
                code, output = self.engine.exec(current.id, self.config.reload_command)
                for line in output.splitlines():
                    context.log(line)
                if code != 0:
                    raise StepFailed(
                        Stage.ROUTES,
                        f"{' '.join(self.config.reload_command)} exited with {code} in "
                        f"{step.container}", list(context.tail),
                    )
                context.log(f"reloaded ({' '.join(self.config.reload_command)})")
            if not changed:
                context.log("routes already as asked; nothing to do")
        context.state(DeployState.RUNNING)
        return StepResult(
            step_id=step.step_id, action=step.action, ok=True, state=DeployState.RUNNING,
            changed=bool(changed), container=step.container,
        )

    def observe_gateways(self, containers: list[ObservedContainer]) -> list[ObservedGateway]:
        """Live and committed routes of the gateway containers among ``containers``."""
        out = []
        for container in containers:
            labels = container.labels
            if labels.get(LABEL_KIND) != "gateway" or container.aside:
                continue
            sandbox, commit = labels.get(LABEL_SANDBOX, ""), labels.get(LABEL_COMMIT, "")
            live: dict[str, str] = {}
            committed: dict[str, str] = {}
            problem = None
            try:
                repository = self.config.repository(labels.get(LABEL_REPOSITORY, ""))
                committed = self._committed(repository, commit)
                live = _service_routes(repository, read_routes_file(
                    self.files.tree(sandbox, commit), repository.routes_file))
            except NodeError as e:
                problem = str(e)
            out.append(
                ObservedGateway(
                    container=container.name, sandbox=sandbox, commit=commit, live_routes=live,
                    committed_routes=committed, problem=problem,
                )
            )
        return out

    def _committed(self, repository: RepositoryConfig, commit: str) -> dict[str, str]:
        def read() -> dict[str, str]:
            source = self.git.read_file(repository, commit, repository.routes_file)
            if source is None:
                raise NotFound(
                    f"{repository.routes_file} is missing from {repository.name} at {commit[:12]}"
                )
            return _service_routes(
                repository, read_routes(source, path_label=repository.routes_file)
            )

        return self._committed_routes.get((repository.name, commit), read)

    def committed_routes(self, repository: str, commit: str,
                         credentials: Credentials | None = None) -> dict[str, str]:
        """The routes ``commit`` carries; fetched first (with ``credentials``) if missing."""
        config = self.config.repository(repository)
        problem = commit_problem(commit)
        if problem:
            raise BadRequest(problem)
        if credentials is not None and not self.git.has_commit(config, commit):
            self.git.fetch(config, credentials, log=lambda _line: None)
        return self._committed(config, commit)


def _service_routes(repository: RepositoryConfig, routes: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in routes.items() if k not in repository.ignored_route_keys}


def ignored_keys_problem(repository: RepositoryConfig, routes: Mapping[str, str]) -> str | None:
    """Why ``routes`` may not be written, when it names one of the ignored keys (base_url)."""
    ignored = sorted(k for k in routes if k in repository.ignored_route_keys)
    if not ignored:
        return None
    return (
        f"route key {ignored[0]!r} is not a route of gateway {repository.name}: "
        f"{ignored[0]}_url is one of its ignored_route_keys "
        f"({', '.join(repository.ignored_route_keys)}: settings of the gateway, not services); "
        "a plan never changes it"
    )


def check_route_keys(
    repository: RepositoryConfig, tree: Path, routes: Mapping[str, str], *, commit: str
) -> None:
    """Refuse keys that are not route keys of this gateway tree, naming them."""
    problem = ignored_keys_problem(repository, routes)
    if problem:
        raise RouteConfigError(problem)
    known = _service_routes(repository, read_routes_file(tree, repository.routes_file))
    unknown = sorted(k for k in routes if k not in known)
    if unknown:
        raise RouteConfigError(
            f"route key {unknown[0]!r} is not a route of gateway {repository.name} at "
            f"{commit[:12]}: its {repository.routes_file} assigns no plain "
            f"$config['{unknown[0]}_url'] that SDP can edit (its route keys: "
            f"{', '.join(sorted(known)) or 'none'})"
        )
