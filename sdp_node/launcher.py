"""``sdp-launch``: what lets a Go service's new container start while its commit still builds.

Starting a container costs Docker about as long as the ``go build`` of a small service; done
one after the other, the two are most of a deploy. So a deploy starts ``<name>--next`` beside
the build, running ``sdp-launch`` (``launch.go``, mounted read-only at ``LAUNCH_TARGET``): it
waits for the binary to appear in the build folder mounted at ``/sdp`` (the build's atomic
rename), then ``exec``\\ s the service's command in its place. Nothing reaches the container
before it is healthy (no alias, no route), and a failed build removes it.

Promises:

* the launcher is built once per agent workspace and Go version, from the source shipped with
  SDP, with the builders' environment (``sdp_node.childenv``: never the agent's token), in
  the background at agent start; a deploy never waits for it: until it is ready (or if it
  cannot be built), deploys start their container after the build, as before;
* its binary is written atomically (``.partial`` then rename) under ``launcher/<hash>/``, the
  hash naming the source and the Go version, so a container keeps the launcher it started with.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from sdp_node.childenv import child_environment

LAUNCH_TARGET = "/sdp-launch"
"""Where the launcher appears in a container that starts before its binary exists."""

SOURCE = Path(__file__).with_name("launch.go")
BUILD_TIMEOUT = 300


class Launcher:
    def __init__(self, workspace: Path, *, go_cache: Path, log: Callable[[str], None]) -> None:
        self._root = workspace / "launcher"
        self._go_cache = go_cache
        self._log = log
        self._path: Path | None = None
        self._done = threading.Event()
        self._problem: str | None = None
        self._started = False

    def start(self) -> None:
        """Build it in the background (if it is not built already)."""
        self._started = True
        threading.Thread(target=self._build, name="sdp-launcher-build", daemon=True).start()

    def ready(self) -> Path | None:
        """The launcher's binary on the host, or None while it builds or if it cannot."""
        return self._path if self._done.is_set() else None

    def wait(self, timeout: float) -> Path | None:
        self._done.wait(timeout)
        return self.ready()

    @property
    def state(self) -> str:
        """``ready``, ``building``, ``unavailable`` (it cannot be built) or ``off`` (the node
        builds no Go): what ``GET /healthz`` shows."""
        if not self._started:
            return "off"
        if not self._done.is_set():
            return "building"
        return "ready" if self._path is not None else "unavailable"

    @property
    def problem(self) -> str | None:
        """Why there is no launcher (None: there is one, or it is still being built)."""
        return self._problem

    @staticmethod
    def command(binary: str, timeout_seconds: int, command: list[str]) -> list[str]:
        """The container command that waits up to ``timeout_seconds`` for ``binary``, then
        runs ``command``."""
        return [LAUNCH_TARGET, binary, str(max(1, timeout_seconds)), *command]

    def _build(self) -> None:
        try:
            self._path = self._built()
        except (OSError, subprocess.SubprocessError) as e:
            self._problem = f"cannot build the launcher: {e}"
            self._log(f"{self._problem}; containers start after their build")
        finally:
            self._done.set()

    def _built(self) -> Path:
        env = child_environment(GOCACHE=str(self._go_cache), GOTOOLCHAIN="local", GOENV="off",
                                GOTELEMETRY="off", GOPROXY="off", CGO_ENABLED="0",
                                HOME=str(self._root), GOPATH=str(self._root / "gopath"))
        version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True,
                                 check=True, timeout=30, env=env).stdout.strip()
        source = SOURCE.read_bytes()
        digest = hashlib.sha256(source + b"\0" + version.encode()).hexdigest()[:16]
        folder = self._root / digest
        binary = folder / "sdp-launch"
        if binary.is_file():
            return binary
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "launch.go").write_bytes(source)
        partial = folder / ".sdp-launch.partial"
        done = subprocess.run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "launch.go"],
            cwd=folder, capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=env)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            lines = (done.stdout + done.stderr).strip().splitlines()
            raise subprocess.SubprocessError(lines[-1] if lines else f"exit {done.returncode}")
        os.replace(partial, binary)
        return binary


__all__ = ["LAUNCH_TARGET", "Launcher"]
