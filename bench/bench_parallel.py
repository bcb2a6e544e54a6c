"""Issue 11 (item 5): 40 sandboxes from nothing, a node's step pool vs one step at a time.

One installation (``stack.py``: a git server, a MICRO and a GATEWAY agent, a state repository),
three variants per round, interleaved:

* **parallel**: both agents with ``apply_workers`` = ``--workers`` (default 4, the agent's
  default on this 2-core machine); ``sdp-reconcile once`` deploys N new sandboxes, each with
  account, payment and user (a fresh commit of each, pushed for this round: one go build per
  service, which the pool's single flight does once for all N sandboxes) and a gateway (the
  php-cli image under ``php -S``, as ``tests/e2e/stack.py`` runs it);
* **serial**: the same with ``apply_workers: 1``, which is today's path (one step after
  another);
* **raw**: the floor the engine imposes (``raw_engine.py``): only the Docker work of SDP's
  pass, replayed with docker-py from a thread pool as wide as ``--workers`` (the requests
  captured from the round's first SDP variant: networks, subnets, images, mounts, env,
  labels, ports, restart policy, the port guard's one chain rewrite, the health polls to 2
  answers in a row, gateways after services), no git, no build, no agent;
* **compose**: ``docker-compose up -d`` (Debian's 1.29) of N equivalent projects, one after
  another, each 3 services and a php-cli gateway on its own network (a subnet from
  10.243.0.0/16), the same image, prebuilt binaries bind-mounted, ports, env, restart policy,
  host-gateway. Compose neither fetches, checks out, builds nor health-checks: SDP does all of
  that on top.

The timed part is ``once`` (a subprocess, exit 0 checked) or the N ``up -d`` calls; every
variant's containers are then counted as running, and removed untimed (SDP: the sandbox files
deleted and another ``once``; compose: ``down``). The CPU seconds of dockerd, containerd, the
new containers' shims, each agent (with its children: git, go) and ``once`` / docker-compose
(``children``) during each timed part are read from ``/proc`` (``cpu.py``). The agents are
restarted with the other ``apply_workers`` between variants (untimed). Goal (issue 11):
parallel / serial <= 0.4; raw / serial says whether the engine alone leaves room for it.
Results go to bench/results/bench_parallel.json.

    .venv/bin/python bench/bench_parallel.py [--sandboxes 40] [--rounds 2] [--workers 4]
        [--variants parallel serial raw compose] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Bench,
    bench_run,
    default_address_pools,
    interleaved,
    load_average,
    ratio,
    require_free_ports,
    say,
    stats,
    table,
    write_results,
)
from cpu import CpuSample, cpu_during
from raw_engine import RawEngine
from stack import SERVICES, SdpStack, build_stack, sandbox_yaml

from sdp_testbed.erangel import gateway_files
from tests.support.agents import AgentProcess

MICRO_PORTS = (23000, 23499)
GATEWAY_PORTS = (23500, 23599)
COMPOSE_FIRST_PORT = 23600
SUBNET_RANGE = "10.242.0.0/16"
GOAL = 0.4
VARIANTS = ["parallel", "serial", "raw", "compose"]
RAW_SUBNETS = "10.243.0.0/16"  # compose's, which never runs at the same time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sandboxes", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS,
                        help="a subset, to look at one (ratios need parallel and serial)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="afterwards, one more parallel deploy (untimed in the figures) "
                        "with py-spy on both agents; raw stacks to DIR")
    args = parser.parse_args()
    count = args.sandboxes
    require_free_ports([*range(MICRO_PORTS[0], MICRO_PORTS[0] + 3 * count),
                        *range(GATEWAY_PORTS[0], GATEWAY_PORTS[0] + count),
                        *range(COMPOSE_FIRST_PORT, COMPOSE_FIRST_PORT + 4 * count)])
    with bench_run("parallel", keep=args.keep) as bench:
        return measure(bench, args)


def set_workers(agent: AgentProcess, workers: int) -> None:
    """Restart ``agent`` with ``apply_workers: workers`` (its node.yaml is JSON)."""
    agent.stop()
    config = json.loads(agent.config_path.read_text())
    config["apply_workers"] = workers
    agent.config_path.write_text(json.dumps(config, indent=1))
    agent.start()


def measure(bench: Bench, args: argparse.Namespace) -> int:
    count = args.sandboxes
    images = bench.images(["micro", "php-cli"])
    stack = build_stack(bench, images=images, micro_ports=MICRO_PORTS,
                        gateway_ports=GATEWAY_PORTS, subnet_range=SUBNET_RANGE)
    compose = ComposeProjects(bench, stack, count, images=images) \
        if "compose" in args.variants else None
    raw = RawEngine(docker=bench.docker, workdir=bench.workdir, labels=bench.labels,
                    installation=bench.installation, subnet_range=RAW_SUBNETS,
                    workers=args.workers, gateway_health_path="/erangel/healthz")
    if "raw" in args.variants and not {"parallel", "serial"} & set(args.variants):
        parser_error = "--variants raw needs an SDP variant to capture its requests from"
        raise SystemExit(parser_error)
    workers = {"parallel": args.workers, "serial": 1}
    cpu: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    own = own_container_ids(bench)
    current: int | None = None
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    loads = [load_average()]
    for index in range(args.rounds):
        for variant in interleaved(index, args.variants):
            agents = {"micro agent": _pid(stack.micro), "gateway agent": _pid(stack.gateway)}
            if variant == "compose":
                assert compose is not None
                with cpu_during(agents, own) as sample:
                    compose.up_all()
                seconds = compose.check_running(sample.wall)
                compose.down_all()
            elif variant == "raw":
                if not raw.captured:
                    raise SystemExit("raw: put an SDP variant before it (--variants order)")
                try:
                    with cpu_during(agents, own) as sample:
                        raw.deploy(tag=f"r{index}")
                    seconds = sample.wall
                finally:
                    raw.remove()
            else:
                if current != workers[variant]:
                    for agent in (stack.micro, stack.gateway):
                        set_workers(agent, workers[variant])
                    current = workers[variant]
                agents = {"micro agent": _pid(stack.micro),
                          "gateway agent": _pid(stack.gateway)}
                seconds, sample = deploy_from_nothing(
                    stack, count, tag=f"r{index}{variant[0]}", agents=agents,
                    capture=None if raw.captured or "raw" not in args.variants else raw.capture)
            samples[variant].append(seconds)
            cpu[variant].append(sample.seconds)
            say(f"round {index + 1}/{args.rounds} {variant:<8} {seconds:.2f} s "
                f"(load {load_average()}) cpu s {sample.seconds}")
        loads.append(load_average())

    if args.profile is not None:
        profile_parallel(stack, count, workers=args.workers, folder=args.profile,
                         current=current)
    figures = {v: stats(samples[v] or [float("nan")]) for v in VARIANTS}
    result: dict[str, Any] = {
        "goal": f"parallel / serial <= {GOAL}",
        "sandboxes": count,
        "per_sandbox": {"services": len(SERVICES), "gateway": 1, "network": 1},
        "workers": workers,
        "docker_address_pools": default_address_pools(),
        "rounds": args.rounds, "load_average": loads,
        **{f"{v}_seconds": figures[v] for v in VARIANTS},
        "cpu_seconds": cpu,
        "ratio_parallel_over_serial": ratio(figures["parallel"]["median"],
                                            figures["serial"]["median"]),
        "ratio_raw_over_serial": ratio(figures["raw"]["median"], figures["serial"]["median"]),
        "ratio_raw_over_parallel": ratio(figures["raw"]["median"],
                                         figures["parallel"]["median"]),
        "ratio_parallel_over_compose": ratio(figures["parallel"]["median"],
                                             figures["compose"]["median"]),
        "ratio_serial_over_compose": ratio(figures["serial"]["median"],
                                           figures["compose"]["median"]),
    }
    path = write_results("bench_parallel", result)
    print(table(["variant", "median s", "min s", "max s", "what"], [
        ["sdp parallel", figures["parallel"]["median"], figures["parallel"]["min"],
         figures["parallel"]["max"], f"once, apply_workers {args.workers}"],
        ["sdp serial", figures["serial"]["median"], figures["serial"]["min"],
         figures["serial"]["max"], "once, apply_workers 1 (one step after another)"],
        ["raw engine (floor)", figures["raw"]["median"], figures["raw"]["min"],
         figures["raw"]["max"], f"SDP's Docker requests only, {args.workers} threads"],
        ["docker-compose up -d", figures["compose"]["median"], figures["compose"]["min"],
         figures["compose"]["max"], f"{count} projects x (3 services + gateway), in turn"],
    ]))
    verdict = "meets" if result["ratio_parallel_over_serial"] <= GOAL else "MISSES"
    print(f"parallel / serial = {result['ratio_parallel_over_serial']:.3f} ({verdict} the goal "
          f"<= {GOAL}); parallel / compose = {result['ratio_parallel_over_compose']:.3f}; "
          f"serial / compose = {result['ratio_serial_over_compose']:.3f}; raw / serial = "
          f"{result['ratio_raw_over_serial']:.3f}; raw / parallel = "
          f"{result['ratio_raw_over_parallel']:.3f}; load average "
          f"{loads[0]} -> {loads[-1]}; results: {path}")
    return 0


def _pid(agent: AgentProcess) -> int:
    assert agent.process is not None
    return agent.process.pid


def own_container_ids(bench: Bench) -> Callable[[], set[str]]:
    """The ids of this run's containers (its installations' and its bench label's)."""
    def ids() -> set[str]:
        found = bench.docker.api.containers(all=True)
        mine = {*bench.installations, *(f"{i}-raw" for i in bench.installations)}
        return {c["Id"] for c in found if (c.get("Labels") or {}).get("sdp.instance") in mine
                or (c.get("Labels") or {}).get("sdp.bench") == bench.id}
    return ids


def deploy_from_nothing(
    stack: SdpStack, count: int, *, tag: str, agents: dict[str, int],
    capture: Callable[[list[str]], None] | None,
) -> tuple[float, CpuSample]:
    """New commits of every service, N new sandboxes, one timed ``once`` (its CPU too); then,
    ``capture`` shown the running sandboxes, they go."""
    for service in SERVICES:
        stack.push(service, "main", f"{service} {tag}")
    names = [f"{tag}-{i:03d}" for i in range(count)]
    for name in names:
        stack.write(f"sandboxes/{name}.yaml",
                    sandbox_yaml(name, {s: {"branch": "main"} for s in SERVICES}))
    stack.commit_state(f"{count} sandboxes ({tag})")
    with cpu_during(agents, own_container_ids(stack.bench)) as sample:
        once = stack.reconcile("once")
    if once.code != 0:
        raise RuntimeError(f"once ({tag}) failed ({once.code}):\n{once.stdout[-3000:]}\n"
                           f"{once.stderr[-3000:]}")
    running = running_containers(stack.bench, {f"sandbox={n}" for n in names})
    if running != count * (len(SERVICES) + 1):
        raise RuntimeError(f"{tag}: {running} containers run, not {count * 4}")
    if capture is not None:
        capture(names)
    for name in names:
        (stack.state / "sandboxes" / f"{name}.yaml").unlink()
    stack.commit_state(f"remove ({tag})")
    gone = stack.reconcile("once", "--allow-prune")
    if gone.code != 0:
        raise RuntimeError(f"removing ({tag}) failed ({gone.code}):\n{gone.stderr[-3000:]}")
    return once.seconds, sample


def profile_parallel(stack: SdpStack, count: int, *, workers: int, folder: Path,
                     current: int | None) -> None:
    """py-spy (raw stacks, idle threads included, 100 Hz) on both agents during one more
    parallel deploy from nothing: where the agents' time goes, waiting included."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy on PATH")
    if current != workers:
        for agent in (stack.micro, stack.gateway):
            set_workers(agent, workers)
    folder.mkdir(parents=True, exist_ok=True)
    agents = {"micro": _pid(stack.micro), "gateway": _pid(stack.gateway)}
    recorders = {name: subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-r", "100", "--idle", "--threads", "-f", "raw",
         "-o", str(folder / f"{name}.txt")], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL) for name, pid in agents.items()}
    time.sleep(1.0)  # py-spy attaches (not a synchronisation of the measured work)

    def stop(_: list[str]) -> None:  # before the untimed removal
        for recorder in recorders.values():
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)
        for recorder in recorders.values():
            recorder.wait(timeout=60)

    try:
        seconds, sample = deploy_from_nothing(stack, count, tag="prof", agents=agents,
                                              capture=stop)
    finally:
        stop([])
    say(f"profiled parallel deploy {seconds:.2f} s, cpu s {sample.seconds}; stacks in {folder}")


def running_containers(bench: Bench, sandboxes: set[str]) -> int:
    found = bench.docker.containers.list(
        filters={"label": [f"sdp.instance={bench.installation}"], "status": "running"})
    return sum(1 for c in found if f"sandbox={c.labels.get('sdp.sandbox')}" in sandboxes)


class ComposeProjects:
    """N projects of 3 Go services and a php-cli gateway each, the binaries prebuilt."""

    def __init__(self, bench: Bench, stack: SdpStack, count: int, *,
                 images: dict[str, str]) -> None:
        self.bench = bench
        self.images = images
        self.count = count
        self.folder = bench.workdir / "compose"
        self.folder.mkdir()
        binaries = self.folder / "binaries"
        for service in SERVICES:
            tree = binaries / service
            tree.mkdir(parents=True)
            subprocess.run(["git", "clone", "-q", str(stack.repos[service]), str(tree / "src")],
                           check=True)
            subprocess.run(["go", "build", "-trimpath", "-buildvcs=false", "-o",
                            str(tree / f"app-{service}"), "."], cwd=tree / "src", check=True,
                           env=_go_env(bench))
        gateway = self.folder / "erangel"
        for relative, content in gateway_files(revision="erangel compose", ocp_urls={
                s: f"http://{s}:8080" for s in SERVICES}).items():
            target = gateway / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        self.projects: list[tuple[str, Path]] = []
        for index in range(count):
            project = f"bench{bench.id}p{index:03d}"
            path = self.folder / f"{project}.yml"
            path.write_text(json.dumps(self.document(index, binaries, gateway), indent=1))
            self.projects.append((project, path))

    def document(self, index: int, binaries: Path, gateway: Path) -> dict[str, Any]:
        services: dict[str, Any] = {}
        base = COMPOSE_FIRST_PORT + 4 * index
        for k, s in enumerate(SERVICES):
            services[s] = {
                "image": self.images["micro"],
                "command": [f"/src/app-{s}"],
                "environment": {"PORT": "8080", "SDP_SANDBOX": f"c{index}", "SDP_SERVICE": s},
                "volumes": [f"{binaries / s}:/src:ro"],
                "ports": [f"0.0.0.0:{base + k}:8080"],
                "extra_hosts": ["host.docker.internal:host-gateway"],
                "restart": "unless-stopped",
                "labels": self.bench.labels,
            }
        services["gateway"] = {
            "image": self.images["php-cli"],
            "command": ["php", "-S", "0.0.0.0:80", "-t", "/var/www/html/erangel-ocean"],
            "init": True,
            "volumes": [f"{gateway}:/var/www/html/erangel-ocean:ro"],
            "ports": [f"0.0.0.0:{base + 3}:80"],
            "extra_hosts": ["host.docker.internal:host-gateway"],
            "restart": "unless-stopped",
            "labels": self.bench.labels,
        }
        return {"version": "2.4", "services": services, "networks": {"default": {
            "ipam": {"config": [{"subnet": f"10.243.{index}.0/24"}]},
            "labels": self.bench.labels}}}

    def _compose(self, project: str, path: Path, *command: str) -> None:
        done = subprocess.run(["docker-compose", "-p", project, "-f", str(path), *command],
                              capture_output=True, text=True, cwd=self.folder)
        if done.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(command)} for {project} failed:\n"
                               f"{done.stderr}")

    def up_all(self) -> None:
        for project, path in self.projects:
            self._compose(project, path, "up", "-d")

    def check_running(self, seconds: float) -> float:
        running = self.bench.docker.containers.list(
            filters={"label": [f"sdp.bench={self.bench.id}"], "status": "running"})
        if len(running) != self.count * 4:
            raise RuntimeError(f"compose: {len(running)} containers run, not {self.count * 4}")
        return seconds

    def down_all(self) -> None:
        for project, path in self.projects:
            self._compose(project, path, "down", "-t", "1")


def _go_env(bench: Bench) -> dict[str, str]:
    from common import GO_CACHE, go_env

    return go_env(GO_CACHE, bench.workdir / "compose-home")


if __name__ == "__main__":
    sys.exit(main())
