"""Go builds on the host, offline, cached by commit.

``go build`` runs in the commit's own tree with the node's Go: ``CGO_ENABLED=0``,
``GOTOOLCHAIN=local``, ``-trimpath``, ``GOPROXY`` off unless the repository's settings say
otherwise, one shared ``GOCACHE`` and the node's module cache, and an environment of its own
(``sdp_node.childenv``: never the agent's token). Promises:

* the binary is written to ``builds/<repository>/<commit>/app-<repository>``, outside every
  checked-out tree, where no commit can put a file: a file of that name in the commit is never
  taken for the build, nor executed;
* "already built" is decided by SDP's own record of the build (``build.json`` beside the
  binary, written after a successful build, with the binary's size and SHA-256), never by a
  file's presence, so the same commit in a second sandbox builds nothing and a damaged binary
  is built again;
* before building, go.mod is read so that a Go too old for it, or a module that neither
  ``vendor/`` nor the module cache holds, fails with a message naming it.
* one build per (repository, commit, build target, Go settings) at a time: deploys of a plan
  that need it while it runs wait for it and take its binary or its failure (with its output
  lines); builds of different commits run side by side.

Output lines are passed to ``log`` as the compiler produces them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path

from msgspec import Struct

from sdp_node.childenv import child_environment
from sdp_node.config import RepositoryConfig
from sdp_node.errors import BuildError
from sdp_node.pool import SingleFlight

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
TAIL = 30


def binary_name(repository: str) -> str:
    return f"app-{repository}"


@cache
def local_go_version() -> tuple[int, ...]:
    try:
        out = subprocess.run(
            ["go", "env", "GOVERSION"], capture_output=True, text=True, check=True, timeout=30,
            env=child_environment(GOTOOLCHAIN="local", GOENV="off", GOTELEMETRY="off"),
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


class Build(Struct, frozen=True):
    """A binary SDP built for one commit of one repository."""

    repository: str
    commit: str
    binary: Path
    built: bool
    """False when SDP's record said this commit was already built"""


RECORD = "build.json"


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


_Identity = tuple[int, int, int, int, int]


def _identity(path: Path) -> _Identity:
    """What changes whenever the file's content may have: any write or replacement changes
    its ctime (which no user-space call can set back), inode or size."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class DigestMemo:
    """SHA-256 of a file, hashed again only when its identity changed: 40 deploys of one
    commit check the same binary's record 40 times (each several MB of hashing on a CPU that
    the engine needs), and a binary unchanged since it was last hashed has the same digest."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[_Identity, str]] = {}
        self._lock = threading.Lock()

    def digest(self, path: Path) -> str:
        before = _identity(path)
        with self._lock:
            known = self._known.get(path)
        if known is not None and known[0] == before:
            return known[1]
        value = _digest(path)
        if _identity(path) == before:  # not written to while it was read
            with self._lock:
                self._known[path] = (before, value)
        return value


class GoBuilder:
    def __init__(self, workspace: Path, *, go_cache: Path | None = None) -> None:
        self._cache = go_cache or workspace / "gocache"
        self._default_modcache = workspace / "gomodcache"
        self._home = workspace / "home"
        self._builds = workspace / "builds"
        for path in (self._cache, self._default_modcache, self._home, self._builds):
            path.mkdir(parents=True, exist_ok=True)
        self._flights: SingleFlight[tuple[str, ...], Build] = SingleFlight()
        self._digests = DigestMemo()

    def environment(self, repository: RepositoryConfig) -> dict[str, str]:
        settings = repository.go
        modcache = settings.module_cache or self._default_modcache
        return child_environment(
            HOME=str(self._home),
            GOPATH=str(self._home / "go"),
            GOCACHE=str(self._cache),
            GOMODCACHE=str(modcache),
            GOPROXY=settings.proxy,
            GOFLAGS=settings.flags,
            GOTOOLCHAIN="local",
            CGO_ENABLED="0",
            GOENV="off",
            GOSUMDB="off" if settings.proxy == "off" else os.environ.get("GOSUMDB", ""),
            GOTELEMETRY="off",
        )

    @property
    def cache(self) -> Path:
        """The ``GOCACHE`` every build of this node shares."""
        return self._cache

    def folder(self, repository: str, commit: str) -> Path:
        return self._builds / repository / commit

    def output(self, repository: str, commit: str) -> Path:
        """Where the binary of ``commit`` is (or will be, once built): known before the build,
        so that a container can start beside it (``sdp_node.launcher``)."""
        return self.folder(repository, commit) / binary_name(repository)

    def recorded(self, repository: str, commit: str) -> Path | None:
        """The binary SDP's record names for this commit, if the record and binary agree."""
        folder = self.folder(repository, commit)
        try:
            record = json.loads((folder / RECORD).read_text())
            binary = self.output(repository, commit)
            if (
                record.get("repository") == repository and record.get("commit") == commit
                and binary.is_file() and not binary.is_symlink()
                and binary.stat().st_size == record.get("size")
                and self._digests.digest(binary) == record.get("sha256")
            ):
                return binary
        except (OSError, ValueError, AttributeError):
            pass
        return None

    def build(
        self, repository: RepositoryConfig, tree: Path, *, commit: str, log: Log
    ) -> Build:
        """Build ``commit`` (checked out in ``tree``) unless SDP's record has it already, or
        another deploy is building it with the same settings now: then wait for that build
        and take its binary (or its failure)."""
        existing = self.recorded(repository.name, commit)
        if existing is not None:
            log(f"{existing.name} already built for this commit; nothing to do")
            return Build(repository.name, commit, existing, built=False)
        settings = repository.go
        key = (repository.name, commit, repository.build_target, settings.proxy,
               settings.flags, str(settings.module_cache or ""))

        joined: list[bool] = []

        def joining() -> None:
            joined.append(True)
            log(f"another deploy is building {repository.name} {commit[:12]} with the same "
                "settings; waiting for its build")

        try:
            build, shared = self._flights.do(
                key, lambda: self._build(repository, tree, commit=commit, log=log),
                joining=joining)
        except BuildError as e:
            if joined:
                for line in e.output:
                    log(line)
            raise
        if shared:
            log(f"{build.binary.name} built by the other deploy; nothing to do")
            return Build(repository.name, commit, build.binary, built=False)
        return build

    def _build(
        self, repository: RepositoryConfig, tree: Path, *, commit: str, log: Log
    ) -> Build:
        existing = self.recorded(repository.name, commit)
        if existing is not None:  # a build that finished between our look and our flight
            log(f"{existing.name} already built for this commit; nothing to do")
            return Build(repository.name, commit, existing, built=False)
        check_go_mod(tree, repository.name)
        folder = self.folder(repository.name, commit)
        folder.mkdir(parents=True, exist_ok=True)
        output = self.output(repository.name, commit)
        partial = folder / f".{output.name}.partial"
        command = ["go", "build", "-trimpath", "-o", str(partial), repository.build_target]
        log(f"$ {' '.join(command[:3])} -o {output.name} {repository.build_target}")
        code, lines = self._run(repository, tree, command, log=log)
        if code != 0:
            partial.unlink(missing_ok=True)
            raise BuildError(_explain(repository, tree, lines, code), output=lines[-TAIL:])
        os.replace(partial, output)
        record = {"repository": repository.name, "commit": commit, "size": output.stat().st_size,
                  "sha256": _digest(output)}
        (folder / f".{RECORD}.partial").write_text(json.dumps(record, indent=1))
        os.replace(folder / f".{RECORD}.partial", folder / RECORD)
        return Build(repository.name, commit, output, built=True)

    def _run(
        self, repository: RepositoryConfig, tree: Path, command: list[str], *, log: Log
    ) -> tuple[int, list[str]]:
        lines: list[str] = []
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
            return process.wait(), lines
        finally:
            timer.cancel()


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
