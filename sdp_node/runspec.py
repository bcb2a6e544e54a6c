"""What a sandbox container looks like on this node: a plan's ``ContainerSpec`` plus the node's
own settings, turned into the ``RunSpec`` the engine creates.

Promises:

* a Go service runs the binary SDP built (``builds/<repository>/<commit>``, that folder
  mounted read-only at ``/sdp``, the binary at ``/sdp/app-<repository>``), never a file of the
  commit: its tree is only data, mounted read-only at ``/src``; a container started while its
  commit builds runs ``/sdp-launch`` first, which waits for the binary (``sdp_node.launcher``);
* a gateway's tree is mounted read-only at its mount target when ``hardening.read_only_trees``
  (the agent edits config.php from the host side, and the container sees the new file);
* every container is confined as ``hardening`` says: pids limit, ``no-new-privileges``,
  capabilities dropped to the repository's list, and the node's default CPU and memory limits
  where the plan sets none;
* environment files are written once per spec, readable by root only, and mounted read-only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from msgspec.structs import replace

from sdp_node.build import binary_name
from sdp_node.config import NodeConfig, RepositoryConfig
from sdp_node.containers import Confinement, Engine, Mount, RunSpec
from sdp_node.gateway import GatewayFiles, serving_root
from sdp_node.launcher import LAUNCH_TARGET, Launcher
from sdp_node.protocol import (
    LABEL_BRANCH,
    LABEL_COMMIT,
    LABEL_KIND,
    LABEL_PORT,
    LABEL_REPOSITORY,
    LABEL_SANDBOX,
    LABEL_SERVICE,
    LABEL_SPEC,
    LABEL_TREE,
    TREE_SWITCH,
    ContainerSpec,
    RepositoryKind,
)

BINARY_DIR = "/sdp"
"""Where a Go service's build folder (its binary, ``app-<repository>``, and the build's
record) appears in its container."""

LAUNCH_MARGIN = 60
"""Seconds an early-started container waits for its binary beyond the build's timeout."""


def binary_target(repository: str) -> str:
    return f"{BINARY_DIR}/{binary_name(repository)}"


class RunSpecs:
    def __init__(self, config: NodeConfig, engine: Engine, gateway_files: GatewayFiles) -> None:
        self.config = config
        self.engine = engine
        self.gateway_files = gateway_files
        self._files = config.workspace / "files"
        self._files.mkdir(parents=True, exist_ok=True)

    def confinement(self, repository: RepositoryConfig) -> Confinement:
        hardening = self.config.hardening
        return Confinement(
            pids_limit=hardening.pids_limit,
            no_new_privileges=hardening.no_new_privileges,
            capabilities=tuple(repository.effective_capabilities)
            if hardening.drop_capabilities else None,
        )

    def service(
        self, repository: RepositoryConfig, spec: ContainerSpec, *, tree: Path, binary: Path,
        network: str,
    ) -> RunSpec:
        """``binary``: where the build puts (or put) the binary; its folder is mounted at
        ``/sdp``."""
        env = self._env(spec)
        env.setdefault("PORT", str(repository.effective_port))
        mounts = [
            Mount(str(tree), "/src"),
            Mount(str(binary.parent), BINARY_DIR),
            *self._env_file_mounts(spec),
        ]
        command = repository.command or [binary_target(repository.name)]
        return self._run_spec(repository, spec, env=env, mounts=mounts, command=command,
                              network=network)

    @staticmethod
    def launched(repository: RepositoryConfig, run_spec: RunSpec, launcher: Path) -> RunSpec:
        """``run_spec`` (a Go service's) started before its binary exists: the launcher mounted,
        waiting for the binary, then running the command (``sdp_node.launcher``)."""
        return replace(
            run_spec, mounts=[*run_spec.mounts, Mount(str(launcher), LAUNCH_TARGET)],
            command=Launcher.command(binary_target(repository.name),
                                     int(repository.go.build_timeout_seconds) + LAUNCH_MARGIN,
                                     run_spec.command or [binary_target(repository.name)]))

    def switchable(self, repository: RepositoryConfig) -> bool:
        """Whether a gateway of ``repository`` switches commits inside its running container:
        only a server that a reload makes read the new tree (Apache: ``apache2ctl graceful``);
        ``php -S`` caches resolved paths, so it is replaced instead."""
        return repository.kind is RepositoryKind.PHP and bool(self.config.reload_command) \
            and not repository.command

    def gateway(self, repository: RepositoryConfig, spec: ContainerSpec, *, tree: Path)\
            -> RunSpec:
        env = self._env(spec)
        switchable = self.switchable(repository)
        target = repository.effective_mount_target
        env.setdefault("SDP_GATEWAY_ROOT", serving_root(repository, switchable=switchable))
        env.setdefault("SDP_URL_PREFIX", repository.url_prefix)
        # php -S's router invalidates this file's opcache entry on every request (set_routes
        # rewrites it in place, and the built-in server has no reload); node.yaml names it.
        env["SDP_ROUTES_FILE"] = repository.routes_file
        source = tree.parent if switchable else tree
        mounts = [
            Mount(str(source), target, read_only=self.config.hardening.read_only_trees),
            *self._env_file_mounts(spec),
            *(Mount(str(path), container_target) for container_target, path
              in self.gateway_files.serving_files(repository, switchable=switchable).items()),
        ]
        run_spec = self._run_spec(repository, spec, env=env, mounts=mounts,
                                  command=repository.command or None, network=None)
        if switchable:
            run_spec.labels[LABEL_TREE] = TREE_SWITCH
        return run_spec

    def _run_spec(
        self, repository: RepositoryConfig, spec: ContainerSpec, *, env: dict[str, str],
        mounts: list[Mount], command: list[str] | None, network: str | None,
    ) -> RunSpec:
        labels = self.engine.own_labels(
            **{
                LABEL_SANDBOX: spec.sandbox, LABEL_SERVICE: spec.service,
                LABEL_REPOSITORY: spec.repository, LABEL_BRANCH: spec.branch,
                LABEL_COMMIT: spec.commit, LABEL_PORT: str(spec.port), LABEL_SPEC: spec.spec_hash,
                LABEL_KIND: "gateway" if repository.kind is RepositoryKind.PHP else "service",
            }
        )
        hardening = self.config.hardening
        cpu = spec.cpu_millicores or hardening.cpu_millicores
        return RunSpec(
            name=spec.container, image=repository.effective_image, command=command, env=env,
            labels=labels, container_port=repository.effective_port, host_port=spec.port,
            mounts=mounts, network=network,
            alias=spec.service if network else None,
            nano_cpus=cpu * 1_000_000 if cpu else None,
            memory_bytes=spec.memory_bytes or hardening.memory_bytes, init=repository.init,
            confinement=self.confinement(repository),
        )

    @staticmethod
    def _env(spec: ContainerSpec) -> dict[str, str]:
        env = {**spec.env, **{k: v.reveal() for k, v in spec.secret_env.items()}}
        env.setdefault("SDP_SANDBOX", spec.sandbox)
        env.setdefault("SDP_SERVICE", spec.service)
        return env

    def _env_file_mounts(self, spec: ContainerSpec) -> list[Mount]:
        if not spec.files:
            return []
        folder = self._files / spec.container / spec.spec_hash[:16]
        out = []
        for index, env_file in enumerate(spec.files):
            path = folder / f"{index}-{Path(env_file.path).name}"
            if not path.exists():
                folder.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".partial")
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(env_file.content.reveal())
                os.replace(partial, path)
            out.append(Mount(str(path), env_file.path))
        return out

    def forget(self, container: str) -> None:
        """Drop the environment files of a removed container."""
        shutil.rmtree(self._files / container, ignore_errors=True)


__all__ = ["BINARY_DIR", "RunSpecs", "binary_target"]
