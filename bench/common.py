"""What every benchmark shares: a workdir, a git server, agents, cleanup, figures and results.

Benchmarks are standalone scripts (``.venv/bin/python bench/bench_X.py``), never part of CI.
Each reports ratios against a baseline measured in the same script, interleaving the two
variants so the load of other work on this machine falls on both. Promises:

* everything a benchmark starts is stopped by pid or removed by label in ``finally`` (also on
  Ctrl-C and SIGTERM): containers and networks labelled with the run's SDP installation
  (``sdp.instance``) or with ``sdp.bench=<run id>``, agent and git-server processes by pid;
  nothing is ever stopped by process name;
* connections go only to 127.0.0.1 and to local Docker networks;
* credentials reach child processes through their environment, never their argv;
* results are written as JSON to ``bench/results/`` (gitignored) with the load average.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # so `tests.support` imports from a script; appended, so a
    sys.path.append(str(ROOT))  # PYTHONPATH copy of a package (a prototype fix) still wins

import docker  # noqa: E402

from sdp_testbed.gitserver import PASSWORD_ENV, USERNAME_ENV  # noqa: E402
from sdp_testbed.images import ensure_images  # noqa: E402
from sdp_testbed.repos import init_bare  # noqa: E402
from tests.support.agents import AgentProcess, cleanup_instance  # noqa: E402

BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
IMAGE_CACHE = Path(os.environ.get("SDP_TESTBED_CACHE", "/var/cache/sdp-testbed"))
GO_CACHE = Path(os.environ.get("SDP_TEST_GOCACHE", str(IMAGE_CACHE / "gocache")))
BENCH_LABEL = "sdp.bench"


# -- figures ----------------------------------------------------------------------------------


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def stats(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the samples (seconds, rounded to 0.1 ms)."""
    return {
        "median": round(statistics.median(samples), 4),
        "min": round(min(samples), 4),
        "max": round(max(samples), 4),
        "n": len(samples),
        "samples": [round(s, 4) for s in samples],
    }


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("inf")


def interleaved(round_index: int, variants: Sequence[str]) -> list[str]:
    """ABAB... on even rounds, BABA... on odd ones, so neither variant always goes first."""
    return list(variants) if round_index % 2 == 0 else list(reversed(variants))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, headers))] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def machine() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "git_commit": _git_head(),
    }


def _git_head() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    return None


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """``bench/results/<name>.json`` (latest) and a timestamped copy; returns the latest."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {"benchmark": name, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine(), **payload}
    text = json.dumps(document, indent=1, sort_keys=False, default=str) + "\n"
    (RESULTS / f"{name}-{stamp}.json").write_text(text)
    latest = RESULTS / f"{name}.json"
    latest.write_text(text)
    return latest


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- ports ------------------------------------------------------------------------------------


def require_free_ports(ports: Sequence[int]) -> None:
    """Fail fast, naming the port, when something on this machine already holds one."""
    taken = []
    for port in ports:
        with socket.socket() as s:
            # SO_REUSEADDR: connections in TIME_WAIT from an earlier run do not count (dockerd
            # binds the same way); a listener does.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                taken.append(port)
    if taken:
        shown = ", ".join(map(str, taken[:10])) + (" ..." if len(taken) > 10 else "")
        raise SystemExit(f"bench: ports already in use on this machine: {shown}; another "
                         "benchmark run may still be up (see bench/README.md: cleanup)")


# -- HTTP -------------------------------------------------------------------------------------


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (127.0.0.1)
        return json.loads(answer.read())


def wait_until(probe: Callable[[], bool], *, timeout: float, interval: float,
               what: str) -> float:
    """Call ``probe`` every ``interval`` s until it is true; the time it took."""
    start = time.perf_counter()
    deadline = start + timeout
    last: object = None
    while True:
        try:
            if probe():
                return time.perf_counter() - start
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = e
        if time.perf_counter() >= deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what} (last: {last})")
        time.sleep(interval)


# -- the run ----------------------------------------------------------------------------------


@dataclass
class GitServerProcess:
    """``python -m sdp_testbed.gitserver`` in a child process (as Bitbucket is another host)."""

    root: Path
    username: str
    password: str
    base_url: str
    process: subprocess.Popen[bytes]

    def repo_url(self, name: str) -> str:
        return f"{self.base_url}/{name}.git"

    def repo_path(self, name: str) -> Path:
        return self.root / f"{name}.git"

    def make_repo(self, name: str) -> tuple[Path, str]:
        path = self.repo_path(name)
        init_bare(path)
        return path, self.repo_url(name)


@dataclass
class Bench:
    """One benchmark run: its id, workdir, docker client and the cleanups it owes."""

    name: str
    keep: bool = False
    id: str = field(default_factory=lambda: secrets.token_hex(3))
    workdir: Path = field(init=False)
    docker: docker.DockerClient = field(init=False)
    _cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    installations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"sdp-bench-{self.name}-{self.id}-"))
        self.docker = docker.from_env(timeout=300)

    @property
    def installation(self) -> str:
        """This run's SDP installation name (labels ``sdp.instance``)."""
        name = f"bench-{self.id}"
        if name not in self.installations:
            self.installations.append(name)
        return name

    @property
    def labels(self) -> dict[str, str]:
        """Labels for what a benchmark creates by hand (docker CLI, compose)."""
        return {BENCH_LABEL: self.id}

    def defer(self, what: str, cleanup: Callable[[], None]) -> None:
        self._cleanups.append((what, cleanup))

    def close(self) -> None:
        failures = []
        for what, cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except Exception as e:  # keep cleaning; report at the end
                failures.append(f"{what}: {type(e).__name__}: {e}")
        self._cleanups.clear()
        try:
            self.remove_labelled()
        except Exception as e:
            failures.append(f"docker cleanup: {type(e).__name__}: {e}")
        if self.keep:
            say(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.docker.close()
        for failure in failures:
            say(f"cleanup problem: {failure}")

    def remove_labelled(self) -> None:
        """Containers and networks of this run's installations or with its bench label."""
        for installation in self.installations:
            cleanup_instance(self.docker, installation)
        label = f"{BENCH_LABEL}={self.id}"
        for container in self.docker.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
        for network in self.docker.networks.list(filters={"label": label}):
            network.remove()

    # -- parts ------------------------------------------------------------------------------

    def git_server(self) -> GitServerProcess:
        root = self.workdir / "git"
        root.mkdir()
        username, password = f"bench-{self.id}", secrets.token_urlsafe(18)
        env = {**os.environ, USERNAME_ENV: username, PASSWORD_ENV: password}
        process = subprocess.Popen(
            [sys.executable, "-m", "sdp_testbed.gitserver", "--root", str(root),
             "--host", "127.0.0.1", "--port", "0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        self.defer("git server", lambda: _stop(process))
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the git server did not start: {line!r}")
        return GitServerProcess(root=root, username=username, password=password,
                                base_url=line.removeprefix("listening on "), process=process)

    def agent(self, *, name: str, node_type: str = "MICRO",
              repositories: list[dict[str, Any]], **settings: Any) -> AgentProcess:
        settings.setdefault("go_cache", str(GO_CACHE))
        agent = AgentProcess.create(self.workdir / "agents", name=name,
                                    installation=self.installation, node_type=node_type,
                                    repositories=repositories, **settings)
        self.defer(f"agent {name}", agent.stop)
        agent.start()
        return agent

    def images(self, kinds: Sequence[str]) -> dict[str, str]:
        return ensure_images(list(kinds), cache_dir=IMAGE_CACHE)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def bench_run(name: str, *, keep: bool = False) -> Iterator[Bench]:
    """A ``Bench`` whose cleanup also runs on SIGTERM (turned into SystemExit)."""

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"bench {name}: stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)
    run = Bench(name, keep=keep)
    say(f"bench {name}: run {run.id}, workdir {run.workdir}, load {load_average()}")
    try:
        yield run
    finally:
        run.close()
        signal.signal(signal.SIGTERM, previous)


# -- by hand: the CLI path the agent is compared with ---------------------------------------------


def go_env(go_cache: Path, home: Path) -> dict[str, str]:
    """What the agent's GoBuilder gives ``go build`` (sdp_node/build.py), for the CLI path."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home), "GOPATH": str(home / "go"), "GOCACHE": str(go_cache),
        "GOMODCACHE": str(home / "gomodcache"), "GOPROXY": "off", "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0", "GOENV": "off", "GOSUMDB": "off", "GOTELEMETRY": "off",
    }


def git_env(username: str, password: str, home: Path) -> dict[str, str]:
    """git CLI environment with Basic credentials as an http.extraHeader: never in argv.

    Like dulwich in the agent, git then sends the credentials with the first request, and the
    host's git configuration is ignored.
    """
    import base64

    home.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {token}",
    }


def run(command: Sequence[str], *, env: dict[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(command), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {done.returncode}: "
                           f"{(done.stderr or done.stdout)[-2000:]}")
    return done


@dataclass
class HandDeploy:
    """A Go service deployed by hand with git, go and docker CLIs, as the agent does it.

    ``git fetch`` → ``git worktree add --detach`` of the commit → ``go build`` with the agent's
    environment (CGO_ENABLED=0, GOTOOLCHAIN=local, -trimpath, GOPROXY=off, the same GOCACHE)
    → ``docker stop`` / ``docker rm`` / ``docker run`` with the agent's image, mount, port,
    network alias, restart policy and host-gateway → poll the health URL.
    """

    bench: Bench
    repository: str
    url: str
    username: str
    password: str
    image: str
    port: int
    network: str
    container: str
    sandbox: str
    go_cache: Path
    health_interval: float = 0.05
    folder: Path = field(init=False)
    _started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.folder = self.bench.workdir / f"hand-{self.container}"
        self.folder.mkdir(parents=True)
        self._git = git_env(self.username, self.password, self.folder / "home")
        self._go = go_env(self.go_cache, self.folder / "home")
        self.clone = self.folder / "repo"
        run(["git", "init", "-q", str(self.clone)], env=self._git)
        run(["git", "-C", str(self.clone), "remote", "add", "origin", self.url], env=self._git)

    def fetch(self) -> None:
        run(["git", "-C", str(self.clone), "fetch", "-q", "origin"], env=self._git)

    def checkout(self, commit: str) -> Path:
        tree = self.folder / "trees" / commit
        if not tree.is_dir():
            run(["git", "-C", str(self.clone), "worktree", "add", "-q", "--detach", str(tree),
                 commit], env=self._git)
        return tree

    def build(self, tree: Path) -> None:
        binary = tree / f"app-{self.repository}"
        if not binary.is_file():
            # -buildvcs=false: the agent's trees hold no .git, so its builds stamp no VCS
            # data; a worktree does, and stamping would run git (~0.1 s) on this side only.
            run(["go", "build", "-trimpath", "-buildvcs=false", "-o", str(binary), "."],
                env=self._go, cwd=tree)

    def replace(self, tree: Path) -> None:
        if self._started:  # known from the previous deploy: no extra docker call to ask
            run(["docker", "stop", "-t", "10", self.container])
            run(["docker", "rm", self.container])
        label_args = [a for k, v in self.bench.labels.items() for a in ("--label", f"{k}={v}")]
        run([
            "docker", "run", "-d", "--name", self.container, *label_args,
            "--network", self.network, "--network-alias", self.repository,
            "-p", f"0.0.0.0:{self.port}:8080", "-v", f"{tree}:/src:ro",
            "-e", "PORT=8080", "-e", f"SDP_SANDBOX={self.sandbox}",
            "-e", f"SDP_SERVICE={self.repository}",
            "--restart", "unless-stopped", "--add-host", "host.docker.internal:host-gateway",
            self.image, f"/src/app-{self.repository}",
        ])
        self._started = True

    def wait_healthy(self) -> None:
        url = f"http://127.0.0.1:{self.port}/healthz"

        def healthy() -> bool:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status < 400)

        wait_until(healthy, timeout=30, interval=self.health_interval, what=url)

    def deploy(self, commit: str) -> dict[str, float]:
        """The whole path; seconds per step."""
        steps: dict[str, float] = {}
        start = time.perf_counter()
        self.fetch()
        steps["git fetch"] = time.perf_counter() - start
        mark = time.perf_counter()
        tree = self.checkout(commit)
        steps["git checkout"] = time.perf_counter() - mark
        mark = time.perf_counter()
        self.build(tree)
        steps["go build"] = time.perf_counter() - mark
        mark = time.perf_counter()
        self.replace(tree)
        steps["docker replace"] = time.perf_counter() - mark
        mark = time.perf_counter()
        self.wait_healthy()
        steps["health"] = time.perf_counter() - mark
        return steps


def create_network(bench: Bench, name: str, subnet: str) -> None:
    """A bridge network with its own subnet (this dockerd's default pools may be small)."""
    label_args = [a for k, v in bench.labels.items() for a in ("--label", f"{k}={v}")]
    run(["docker", "network", "create", "--driver", "bridge", "--subnet", subnet, *label_args,
         name])


def default_address_pools() -> str:
    """Whether this machine's dockerd was started with --default-address-pool."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info = subprocess.run(["docker", "info", "--format", "{{json .DefaultAddressPools}}"],
                              capture_output=True, text=True, timeout=30)
        if info.returncode == 0 and info.stdout.strip() not in ("", "null", "[]"):
            return info.stdout.strip()
    return "docker's defaults (about 30 user networks): dockerd runs without " \
        "--default-address-pool"


def event_seconds(events: Sequence[Any]) -> dict[str, float]:
    """Seconds per agent stage from an operation's stage events (the agent's clock)."""
    started: dict[str, datetime] = {}
    out: dict[str, float] = {}
    for event in events:
        if event.kind != "event" or event.event is None or event.stage is None:
            continue
        name = event.event.value
        if name.endswith("_STARTED"):
            started[event.stage.value] = event.at
        elif name.endswith("_COMPLETED") and event.stage.value in started:
            out[event.stage.value] = (event.at - started[event.stage.value]).total_seconds()
    return out


__all__ = [
    "BIN", "GO_CACHE", "ROOT", "Bench", "GitServerProcess", "HandDeploy", "bench_run",
    "create_network", "default_address_pools", "event_seconds", "get_json", "git_env",
    "go_env", "interleaved", "load_average", "ratio", "require_free_ports", "run", "say",
    "stats", "table", "wait_until", "write_results",
]
