"""Go builds on the host, offline, cached by commit.

``go build`` runs in the commit's own tree with the node's Go: ``CGO_ENABLED=0``,
``GOTOOLCHAIN=local``, ``-trimpath``, ``GOPROXY`` off unless the repository's settings say
otherwise, one shared ``GOCACHE`` and the node's module cache. The binary lands in the tree as
``app-<repository>``; a tree that already holds it is not built again, so the same commit in a
second sandbox builds nothing. Before building, go.mod is read so that a Go too old for it, or a
module that neither ``vendor/`` nor the module cache holds, fails with a message naming it.
Output lines are passed to ``log`` as the compiler produces them.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path

from sdp_node.config import RepositoryConfig
from sdp_node.errors import BuildError

Log = Callable[[str], None]
_GO_LINE = re.compile(r"^go\s+(\d+(?:\.\d+){1,2})\s*$", re.M)
_TOOLCHAIN_LINE = re.compile(r"^toolchain\s+(\S+)\s*$", re.M)
_MISSING_MODULE = re.compile(
    r"cannot find module providing package|no required module provides package|"
    r"missing go\.sum entry|module lookup disabled by GOPROXY|disabled by -mod=vendor|"
    r"is not in your go\.mod file|inconsistent vendoring"
)
_NAMED = [
    re.compile(r"go: downloading (\S+) v\S+"),
    re.compile(r"providing package (\S+)"),
    re.compile(r"provides package (\S+)"),
    re.compile(r"(\S+)@v[^:\s]+: "),
]
_SOURCE_POSITION = re.compile(r"^(?P<file>[^:\s]+\.go):(?P<line>\d+):\d+: ")


def binary_name(repository: str) -> str:
    return f"app-{repository}"


@cache
def local_go_version() -> tuple[int, ...]:
    try:
        out = subprocess.run(
            ["go", "env", "GOVERSION"], capture_output=True, text=True, check=True, timeout=30,
            env={**os.environ, "GOTOOLCHAIN": "local"},
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"the Go toolchain is not usable on this node: {e}") from e
    return _version(out.removeprefix("go"))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _shown(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def check_go_mod(tree: Path, repository: str) -> None:
    """Refuse, with a clear message, a go.mod that this node's Go cannot build."""
    go_mod = tree / "go.mod"
    if not go_mod.is_file():
        raise BuildError(f"repository {repository}: no go.mod at the top of the tree")
    text = go_mod.read_text(errors="replace")
    local = local_go_version()
    match = _GO_LINE.search(text)
    if match:
        wanted = _version(match[1])
        if wanted[:2] > local[:2] or (len(wanted) == 3 and local < (1, 21)):
            raise BuildError(
                f"repository {repository}: go.mod says 'go {match[1]}' but this node has Go "
                f"{_shown(local)}"
                + (" (Go before 1.21 cannot read a three-part go line; write "
                   f"'go {wanted[0]}.{wanted[1]}')" if len(wanted) == 3 else "")
                + ": install a newer Go on the node or lower the go line"
            )
    toolchain = _TOOLCHAIN_LINE.search(text)
    if toolchain and local < (1, 21):
        raise BuildError(
            f"repository {repository}: go.mod has 'toolchain {toolchain[1]}', which Go "
            f"{_shown(local)} cannot read (toolchain lines need Go 1.21+): remove the line or "
            "install a newer Go on the node"
        )


class GoBuilder:
    def __init__(self, workspace: Path, *, go_cache: Path | None = None) -> None:
        self._cache = go_cache or workspace / "gocache"
        self._default_modcache = workspace / "gomodcache"
        self._home = workspace / "home"
        for path in (self._cache, self._default_modcache, self._home):
            path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def environment(self, repository: RepositoryConfig) -> dict[str, str]:
        settings = repository.go
        modcache = settings.module_cache or self._default_modcache
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self._home),
            "GOPATH": str(self._home / "go"),
            "GOCACHE": str(self._cache),
            "GOMODCACHE": str(modcache),
            "GOPROXY": settings.proxy,
            "GOFLAGS": settings.flags,
            "GOTOOLCHAIN": "local",
            "CGO_ENABLED": "0",
            "GOENV": "off",
            "GOSUMDB": "off" if settings.proxy == "off" else os.environ.get("GOSUMDB", ""),
            "GOTELEMETRY": "off",
        }
        return {k: v for k, v in env.items() if v != ""}

    def build(self, repository: RepositoryConfig, tree: Path, *, log: Log) -> bool:
        """Build ``app-<name>`` in ``tree``; False when the tree already holds it."""
        output = tree / binary_name(repository.name)
        if output.is_file():
            log(f"{output.name} already built for this commit; nothing to do")
            return False
        check_go_mod(tree, repository.name)
        partial = tree / f".{output.name}.partial"
        command = ["go", "build", "-trimpath", "-o", str(partial), repository.build_target]
        log(f"$ {' '.join(command[:3])} -o {output.name} {repository.build_target}")
        lines: list[str] = []
        with self._lock:
            try:
                process = subprocess.Popen(
                    command, cwd=tree, env=self.environment(repository),
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    errors="replace", start_new_session=True,
                )
            except OSError as e:
                raise BuildError(f"cannot run go: {e.strerror}") from e
            timer = threading.Timer(repository.go.build_timeout_seconds, process.kill)
            timer.start()
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    line = line.rstrip("\n")
                    lines.append(line)
                    log(line)
                code = process.wait()
            finally:
                timer.cancel()
        if code != 0:
            partial.unlink(missing_ok=True)
            raise BuildError(_explain(repository, tree, lines, code))
        os.replace(partial, output)
        return True


def _explain(repository: RepositoryConfig, tree: Path, lines: list[str], code: int) -> str:
    if code < 0:
        return (
            f"go build of {repository.name} was stopped after "
            f"{repository.go.build_timeout_seconds:.0f}s"
        )
    if any(_MISSING_MODULE.search(line) for line in lines):
        modules = sorted(_missing_modules(tree, lines))
        named = ", ".join(modules) if modules else "a required module"
        return (
            f"go build of {repository.name} failed: {named} is neither in vendor/ nor in the "
            f"node's module cache (GOPROXY={repository.go.proxy}): vendor it in the repository "
            "or load it into the node's module cache"
        )
    return f"go build of {repository.name} failed (exit {code})"


def _missing_modules(tree: Path, lines: list[str]) -> set[str]:
    """Module or package paths named by go's output, or by the import line it points at."""
    found: set[str] = set()
    for line in lines:
        for pattern in _NAMED:
            found.update(m.rstrip(":;,") for m in pattern.findall(line))
        position = _SOURCE_POSITION.match(line)
        if position and _MISSING_MODULE.search(line):
            source = (tree / position["file"]).resolve()
            if source.is_relative_to(tree.resolve()) and source.is_file():
                text = source.read_text(errors="replace").splitlines()
                number = int(position["line"]) - 1
                if 0 <= number < len(text):
                    found.update(re.findall(r'"([^"]+)"', text[number]))
    return {f for f in found if "." in f.split("/")[0]}
