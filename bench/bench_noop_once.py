"""Issue 5: a no-op ``sdp-reconcile --once`` over 50 sandboxes vs ``docker-compose up -d``.

SDP side: 50 sandboxes, each with account, payment and user built from ``main`` on the MICRO
agent **and its own gateway** (the php-cli test image, as ``tests/e2e/stack.py`` runs it) on
the GATEWAY agent: 150 service containers + 50 gateways + 50 sandbox networks (subnets from the
agent's ``subnet_range``). After a first ``--once`` deploys everything, the timed runs are
``sdp-reconcile once`` subprocesses that must print "No changes" and exit 0.

Yardstick: Debian's docker-compose 1.29 over 50 equivalent projects x 3 services (same image,
same binaries bind-mounted at /src, same port mappings, env, restart policy and host-gateway;
no gateway, which SDP's side has on top), already up, so ``up -d`` is a no-op too ("is
up-to-date" for every service, checked). Each project has its own network with a subnet from
10.241.0.0/16 (this dockerd may run with Docker's default address pools, ~30 networks), or
``--compose-network bridge`` puts the services on the default bridge. The compose time is the
wall time of ``up -d`` over all 50 projects, one after another.

Rounds interleave the two. Goal (issue 5): SDP / compose ≤ 0.1. Afterwards (untimed) the
script breaks SDP's pass down: Python start-up and imports, the phases of ``prepare`` and
``run`` in-process, each agent's ``/v1/observe``, and a py-spy profile of the MICRO agent
answering observe.

    .venv/bin/python bench/bench_noop_once.py [--sandboxes 50] [--rounds 5] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BIN,
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
from stack import SERVICES, SdpStack, build_stack, sandbox_yaml

MICRO_PORTS = (16000, 16499)
COMPOSE_FIRST_PORT = 16500
GATEWAY_PORTS = (16700, 16799)
SUBNET_RANGE = "10.240.64.0/18"
GOAL = 0.1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sandboxes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compose-network", choices=["subnet", "bridge"], default="subnet")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    args = parser.parse_args()
    count = args.sandboxes
    compose_ports = list(range(COMPOSE_FIRST_PORT, COMPOSE_FIRST_PORT + 3 * count))
    require_free_ports([*range(MICRO_PORTS[0], MICRO_PORTS[0] + 3 * count),
                        *range(GATEWAY_PORTS[0], GATEWAY_PORTS[0] + count), *compose_ports])
    with bench_run("noop-once", keep=args.keep) as bench:
        return measure(bench, args)


def measure(bench: Bench, args: argparse.Namespace) -> int:
    count = args.sandboxes
    images = bench.images(["micro", "php-cli"])
    stack = build_stack(bench, images=images, micro_ports=MICRO_PORTS,
                        gateway_ports=GATEWAY_PORTS, subnet_range=SUBNET_RANGE)
    names = [f"nb{bench.id}-{i:03d}" for i in range(count)]
    for name in names:
        stack.write(f"sandboxes/{name}.yaml",
                    sandbox_yaml(name, {s: {"branch": "main"} for s in SERVICES}))
    stack.commit_state(f"{count} sandboxes")
    say(f"first --once: deploying {count} sandboxes x (3 services + gateway)")
    first = stack.reconcile("once")
    if first.code != 0:
        raise RuntimeError(f"first --once failed ({first.code}):\n{first.stdout[-3000:]}\n"
                           f"{first.stderr[-3000:]}")
    say(f"first --once took {first.seconds:.1f} s")
    idle = stack.reconcile("plan")
    if idle.code != 0:
        raise RuntimeError(f"plan after --once is not empty:\n{idle.stdout[-3000:]}")

    compose = ComposeProjects(bench, stack, names, network=args.compose_network)
    say(f"bringing up {count} compose projects x 3 services (untimed)")
    compose.up_all(expect_noop=False)

    samples: dict[str, list[float]] = {"sdp": [], "compose": []}
    loads = [load_average()]
    for index in range(args.rounds):
        for variant in interleaved(index, ["sdp", "compose"]):
            if variant == "sdp":
                once = stack.reconcile("once")
                if once.code != 0 or "No changes" not in once.stderr:
                    raise RuntimeError(f"--once was not a no-op ({once.code}):\n"
                                       f"{once.stderr[-3000:]}")
                seconds = once.seconds
            else:
                seconds = compose.up_all(expect_noop=True)
            samples[variant].append(seconds)
            say(f"round {index + 1}/{args.rounds} {variant:<7} {seconds:.3f} s")
        loads.append(load_average())

    sdp, yardstick = stats(samples["sdp"]), stats(samples["compose"])
    result: dict[str, Any] = {
        "goal": f"sdp-reconcile --once / docker-compose up -d <= {GOAL}",
        "sandboxes": count,
        "sdp_containers": {"services": 3 * count, "gateways": count, "networks": count},
        "compose": {"projects": count, "services_per_project": 3,
                    "network": args.compose_network},
        "docker_address_pools": default_address_pools(),
        "first_once_seconds": round(first.seconds, 2),
        "rounds": args.rounds, "load_average": loads,
        "sdp_once": sdp, "compose_up": yardstick,
        "compose_per_project_median": round(yardstick["median"] / count, 4),
        "ratio_sdp_over_compose": ratio(sdp["median"], yardstick["median"]),
    }
    if not args.no_breakdown:
        say("breaking the no-op pass down (untimed against compose)")
        result["breakdown"] = breakdown(stack)
    path = write_results("noop-once", result)
    print(table(["variant", "median s", "min s", "max s", "what"], [
        ["sdp-reconcile --once", sdp["median"], sdp["min"], sdp["max"],
         f"{count} sandboxes: {3 * count} services + {count} gateways, no-op"],
        ["docker-compose up -d", yardstick["median"], yardstick["min"], yardstick["max"],
         f"{count} projects x 3 services, no-op, one after another"],
    ]))
    verdict = "meets" if result["ratio_sdp_over_compose"] <= GOAL else "MISSES"
    print(f"ratio sdp / compose = {result['ratio_sdp_over_compose']:.3f} ({verdict} the goal "
          f"<= {GOAL}); load average {loads[0]} -> {loads[-1]}; results: {path}")
    if "breakdown" in result:
        print_breakdown(result["breakdown"])
    return 0


# -- the yardstick ------------------------------------------------------------------------------


class ComposeProjects:
    def __init__(self, bench: Bench, stack: SdpStack, names: list[str], *, network: str):
        self.bench = bench
        self.folder = bench.workdir / "compose"
        self.folder.mkdir()
        self.projects: list[tuple[str, Path]] = []
        trees = {s: stack.tree(s, stack.heads[(s, "main")]) for s in SERVICES}
        for s, tree in trees.items():
            if not (tree / f"app-{s}").is_file():
                raise RuntimeError(f"the agent's binary for {s} is missing in {tree}")
        for index, sandbox in enumerate(names):
            project = f"bench{bench.id}c{index:03d}"
            path = self.folder / f"{project}.yml"
            path.write_text(json.dumps(self.document(index, sandbox, trees, network), indent=1))
            self.projects.append((project, path))

    def document(self, index: int, sandbox: str, trees: dict[str, Path],
                 network: str) -> dict[str, Any]:
        services = {}
        for k, s in enumerate(SERVICES):
            service: dict[str, Any] = {
                "image": "sdp-testbed/micro:busybox",
                "command": [f"/src/app-{s}"],
                "environment": {"PORT": "8080", "SDP_SANDBOX": sandbox, "SDP_SERVICE": s},
                "volumes": [f"{trees[s]}:/src:ro"],
                "ports": [f"0.0.0.0:{COMPOSE_FIRST_PORT + 3 * index + k}:8080"],
                "extra_hosts": ["host.docker.internal:host-gateway"],
                "restart": "unless-stopped",
                "labels": self.bench.labels,
            }
            if network == "bridge":
                service["network_mode"] = "bridge"
            services[s] = service
        document: dict[str, Any] = {"version": "2.4", "services": services}
        if network == "subnet":
            document["networks"] = {"default": {
                "ipam": {"config": [{"subnet": f"10.241.{index}.0/24"}]},
                "labels": self.bench.labels}}
        return document

    def up_all(self, *, expect_noop: bool) -> float:
        start = time.perf_counter()
        outputs = []
        for project, path in self.projects:
            done = subprocess.run(["docker-compose", "-p", project, "-f", str(path), "up", "-d"],
                                  capture_output=True, text=True, cwd=self.folder)
            if done.returncode != 0:
                raise RuntimeError(f"docker-compose up -d for {project} failed:\n{done.stderr}")
            outputs.append(done.stderr)
        seconds = time.perf_counter() - start
        if expect_noop:
            for (project, _), output in zip(self.projects, outputs, strict=True):
                if output.count("is up-to-date") != len(SERVICES):
                    raise RuntimeError(f"compose {project} was not a no-op:\n{output}")
        return seconds


# -- where SDP's time goes ----------------------------------------------------------------------


def breakdown(stack: SdpStack) -> dict[str, Any]:
    """Each part on its own: one that breaks (product code moved on) is reported, not fatal."""
    out: dict[str, Any] = {}
    parts = {
        "python_startup_and_imports": import_time, "in_process_phases": in_process_phases,
        "observe_http": observe_times, "agent_profile_micro_observe": profile_agent_observe,
        "cprofile_once": cprofile_once,
    }
    for name, part in parts.items():
        try:
            out[name] = part() if part is import_time else part(stack)  # type: ignore[operator]
        except Exception as e:
            out[name] = {"skipped": f"{type(e).__name__}: {e}"}
            say(f"breakdown {name} failed: {type(e).__name__}: {e}")
    return out


def import_time(repeat: int = 5) -> dict[str, float]:
    python = sys.executable

    def timed(code: str) -> float:
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([python, "-c", code], check=True)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    bare = timed("pass")
    full = timed("import sdp_reconciler.cli.main, sdp_reconciler.cli.commands, "
                 "sdp_reconciler.apply.reconcile")
    return {"python_bare": round(bare, 4), "python_with_sdp_imports": round(full, 4),
            "imports_only": round(full - bare, 4)}


def in_process_phases(stack: SdpStack, repeat: int = 3) -> dict[str, Any]:
    """The same prepare()/run() the CLI calls, with their parts wrapped by timers."""
    from sdp_reconciler.apply import reconcile
    from sdp_reconciler.history import History

    timings: dict[str, list[float]] = {}
    wrapped = ["load_state", "resolve_all", "observe_nodes", "resolve_heads", "allocate",
               "plan", "status_rows"]
    originals = {name: getattr(reconcile, name) for name in wrapped}

    def timer(name: str, function: Any) -> Any:
        @functools.wraps(function)
        def inner(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                timings.setdefault(name, []).append(time.perf_counter() - start)
        return inner

    history_methods = ["start_pass", "set_status", "forget_sandboxes_except", "finish_pass"]
    history_originals = {m: getattr(History, m) for m in history_methods}
    try:
        for name in wrapped:
            setattr(reconcile, name, timer(name, originals[name]))
        for method in history_methods:
            setattr(History, method, timer(f"history.{method}", history_originals[method]))
        for _ in range(repeat):
            start = time.perf_counter()
            prepared = reconcile.prepare(stack.state, env=stack.env)
            timings.setdefault("prepare (total)", []).append(time.perf_counter() - start)
            assert prepared.plan.empty, prepared.plan.render()
            history = History(stack.history)
            try:
                start = time.perf_counter()
                reconcile.run(prepared, history=history, mode="once", env=stack.env)
                timings.setdefault("run (total)", []).append(time.perf_counter() - start)
            finally:
                history.close()
                prepared.close()
    finally:
        for name in wrapped:
            setattr(reconcile, name, originals[name])
        for method in history_methods:
            setattr(History, method, history_originals[method])
    return {k: round(statistics.median(v), 4) for k, v in timings.items()}


def observe_times(stack: SdpStack, repeat: int = 5) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for agent in (stack.micro, stack.gateway):
        client = agent.client()
        try:
            samples, size = [], 0
            for _ in range(repeat):
                start = time.perf_counter()
                observation = client.observe()
                samples.append(time.perf_counter() - start)
                size = len(observation.containers)
            out[agent.name] = {"median": round(statistics.median(samples), 4),
                               "containers": size}
        finally:
            client.close()
    return out


def profile_agent_observe(stack: SdpStack, seconds: float = 8.0) -> dict[str, Any]:
    """py-spy on the MICRO agent while observe is called in a loop: where its time goes."""
    py_spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(py_spy).exists() or stack.micro.process is None:
        return {"skipped": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    raw = stack.bench.workdir / "micro-observe.txt"
    stop = threading.Event()
    calls = Counter[str]()

    def loop() -> None:
        client = stack.micro.client()
        try:
            while not stop.is_set():
                client.observe()
                calls["observe"] += 1
        finally:
            client.close()

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        done = subprocess.run([py_spy, "record", "-p", str(stack.micro.process.pid), "-d",
                               str(int(seconds)), "-r", "200", "-f", "raw", "-o", str(raw),
                               "--nonblocking"], capture_output=True, text=True)
    finally:
        stop.set()
        worker.join(timeout=30)
    if done.returncode != 0 or not raw.exists():
        return {"skipped": f"py-spy failed: {done.stderr[-500:]}"}
    return summarize_stacks(raw, calls["observe"])


def summarize_stacks(raw: Path, observes: int) -> dict[str, Any]:
    """Inclusive share of samples per function of interest, from py-spy's collapsed stacks."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack_text.split(";")
        if not any("collect" in f or "observe" in f for f in frames):
            continue  # idle threads (uvicorn loop waiting, workers parked)
        total += count
        seen = set()
        for frame in frames:
            match = re.match(r"(\S+) \((\S+?):\d+\)", frame)
            key = f"{match[1]} ({Path(match[2]).parent.name}/{Path(match[2]).name})" \
                if match else frame
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
    top = [(k, round(v / total, 3)) for k, v in inclusive.most_common(60)
           if any(s in k for s in ("sdp_node/", "pydantic", "json", "docker/", "requests/",
                                   "socket", "http"))]
    return {"observes_during_profile": observes, "samples_in_observe": total,
            "inclusive_share": top[:20]}


def cprofile_once(stack: SdpStack) -> dict[str, Any]:
    """cProfile of one whole `sdp-reconcile once` process (imports included)."""
    profile = stack.bench.workdir / "once.prof"
    command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m",
               "sdp_reconciler.cli.main", "once", "--state", str(stack.state),
               "--history", str(stack.history)]
    done = subprocess.run(command, env=stack.env, capture_output=True, text=True,
                          cwd=stack.bench.workdir)
    if done.returncode != 0:
        return {"skipped": f"exit {done.returncode}: {done.stderr[-500:]}"}
    import io
    import pstats

    out = io.StringIO()
    stats_ = pstats.Stats(str(profile), stream=out)
    stats_.sort_stats("cumulative").print_stats(r"sdp_reconciler|sdp_node|httpx|_bootstrap", 30)
    rows = []
    for (file, line, function), (_cc, _nc, _tt, ct, _callers) in stats_.stats.items():  # type: ignore[attr-defined]
        if "sdp_reconciler" in file or "sdp_node" in file:
            rows.append((round(ct, 4), f"{Path(file).parent.name}/{Path(file).name}:{line}"
                         f" {function}"))
    rows.sort(reverse=True)
    with contextlib.suppress(OSError):
        (stack.bench.workdir / "once-profile.txt").write_text(out.getvalue())
    return {"top_cumulative_sdp": rows[:25]}


def print_breakdown(breakdown: dict[str, Any]) -> None:
    try:
        _print_breakdown(breakdown)
    except (KeyError, TypeError, AttributeError) as e:
        print(f"(breakdown incomplete: {e}; see the results file)")


def _print_breakdown(breakdown: dict[str, Any]) -> None:
    imports = breakdown["python_startup_and_imports"]
    print(f"\nwhere a no-op pass goes: python start {imports['python_bare']:.3f} s, SDP "
          f"imports {imports['imports_only']:.3f} s")
    print(table(["in-process phase", "median s"],
                [[k, v] for k, v in breakdown["in_process_phases"].items()]))
    print(table(["agent /v1/observe", "median s", "containers"],
                [[k, v["median"], v["containers"]] for k, v in breakdown["observe_http"].items()]))
    profile = breakdown["agent_profile_micro_observe"]
    if "inclusive_share" in profile:
        print(table(["MICRO agent during observe (py-spy, inclusive)", "share"],
                    profile["inclusive_share"][:14]))
    rows = breakdown["cprofile_once"].get("top_cumulative_sdp", [])[:12]
    if rows:
        print(table(["cProfile of one --once (cumulative s)", "function"], rows))


if __name__ == "__main__":
    sys.exit(main())
