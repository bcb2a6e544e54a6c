"""Issue 15: what a no-op ``sdp-reconcile once`` costs itself, outside the agents' work.

One sandbox (gateway + account, payment and user on OCP stand-ins) deployed on a MICRO and a
GATEWAY agent; then rounds of a no-op ``once`` (nothing to change). Measured per run: the wall
time of the process and its own CPU time (user + sys of the child: start-up and imports,
loading the state, the client side of observe and branch heads, planning, recording and the
summary; the agents' work is in their own processes). The baseline is the interpreter's own
start-up (``python -c pass``) in the same rounds. ``--source DIR`` runs the reconciler from
another checkout (e.g. ``git archive main``) instead of the installed one, for before/after
figures in one run; ``--profile`` writes a pyinstrument profile of one run (needs
``pip install pyinstrument``); ``--phases N`` runs this checkout's ``once`` N more times with
the CPU time (``time.process_time``) of its imports and of each phase after them printed:
host config, state load, observe, heads, desire + plan, and the rest (recording, summary).

    .venv/bin/python bench/bench_once_overhead.py [--rounds 10] [--source DIR ...] [--profile]
                                                  [--phases 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Bench,
    bench_run,
    load_average,
    require_free_ports,
    say,
    stats,
    table,
    write_results,
)
from stack import SdpStack, build_stack, sandbox_yaml

MICRO_PORTS = (20940, 20948)
GATEWAY_PORTS = (21060, 21068)
SUBNET_RANGE = "10.240.80.0/20"
GOAL = 0.15
RUNNER = """\
import runpy, sys
source = sys.argv.pop(1)
if source != "-":  # the reconciler from another checkout, not the installed (editable) one
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
    sys.path.insert(0, source)
sys.argv[0] = "sdp-reconcile"
runpy.run_module("sdp_reconciler.cli.main", run_name="__main__")
"""
# The same, with the CPU time of the imports and of each phase written to stderr as JSON at
# exit. Each phase's function is wrapped where the pass looks it up (its module's importers).
PHASES_RUNNER = """\
import atexit, json, runpy, sys, time
started = time.process_time()
import sdp_reconciler.cli.commands
imported = time.process_time()
PHASES = {
    "host config": ("sdp_reconciler.state.hostconfig", "require_host_config"),
    "state load": ("sdp_reconciler.state.loading", "load_state"),
    "observe": ("sdp_reconciler.observe.observing", "observe_nodes"),
    "heads": ("sdp_reconciler.observe.observing", "resolve_heads"),
    "desire + plan": ("sdp_reconciler.planner.planning", "plan"),
    "desire": ("sdp_reconciler.planner.desired", "desire"),
}
spent = dict.fromkeys(PHASES, 0.0)
def timed(phase, function):
    def run(*args, **kwargs):
        begin = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[phase] += time.process_time() - begin
    return run
for phase, (module, name) in PHASES.items():
    original = getattr(sys.modules[module], name)
    wrapper = timed(phase, original)
    for loaded in list(sys.modules.values()):
        if getattr(loaded, "__name__", "").startswith("sdp_") and \\
                getattr(loaded, name, None) is original:
            setattr(loaded, name, wrapper)
def report():
    total = time.process_time() - imported
    spent["desire + plan"] += spent.pop("desire")
    spent["the rest"] = total - sum(spent.values())
    print("PHASES " + json.dumps({"imports": imported - started, **spent}), file=sys.stderr)
atexit.register(report)
sys.argv[0] = "sdp-reconcile"
runpy.run_module("sdp_reconciler.cli.main", run_name="__main__")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--source", action="append", default=[], metavar="DIR",
                        help="also measure the reconciler of this checkout (repeatable)")
    parser.add_argument("--profile", action="store_true", help="pyinstrument one run")
    parser.add_argument("--phases", type=int, default=0, metavar="N",
                        help="then N runs with the CPU time of each phase printed")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    args = parser.parse_args()
    require_free_ports([*range(MICRO_PORTS[0], MICRO_PORTS[1] + 1),
                        *range(GATEWAY_PORTS[0], GATEWAY_PORTS[1] + 1)])
    with bench_run("once-overhead", keep=args.keep) as bench:
        return measure(bench, args.rounds, args.source, args.profile, args.phases)


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(wall s, the child's CPU s, exit code) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0,):
        raise RuntimeError(f"{command[2:4]} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return wall, cpu, done.returncode


def measure(bench: Bench, rounds: int, sources: list[str], profile: bool, phases: int) -> int:
    images = bench.images(["micro", "php-cli"])
    stack: SdpStack = build_stack(bench, images=images, micro_ports=MICRO_PORTS,
                                  gateway_ports=GATEWAY_PORTS, subnet_range=SUBNET_RANGE)
    name = f"oo{bench.id}"
    ocp = {"use_ocp": True}
    stack.write(f"sandboxes/{name}.yaml", sandbox_yaml(name, {
        "account": {"branch": "main"}, "payment": ocp, "user": ocp}))
    stack.commit_state("one sandbox")
    first = stack.reconcile("once")
    if first.code != 0:
        raise RuntimeError(f"first --once failed:\n{first.stderr[-3000:]}")
    runner = bench.workdir / "runner.py"
    runner.write_text(RUNNER)
    once = ["once", "--state", str(stack.state), "--history", str(stack.history)]
    variants: dict[str, list[str]] = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "once (this checkout)": [sys.executable, str(runner), "-", *once],
    }
    for index, source in enumerate(sources):  # its own history: schemas may differ
        variants[f"once ({source})"] = [
            sys.executable, str(runner), source, *once[:-1],
            str(bench.workdir / f"history-{index}.sqlite")]
    env = {**stack.env, "PYTHONDONTWRITEBYTECODE": "1"}
    # Warm-up, not timed, which also writes the .pyc of every source as an installed package
    # has them: without them each run compiled ~60 modules (~40 ms) that no install compiles.
    warm = {k: v for k, v in stack.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for command in variants.values():
        subprocess.run([*command], env=warm, cwd=bench.workdir, capture_output=True,
                       timeout=300, check=False)
    samples: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": []} for v in variants}
    loads = [load_average()]
    names = list(variants)
    for index in range(rounds):
        order = names[index % len(names):] + names[:index % len(names)]
        for variant in order:
            wall, cpu, _ = timed(variants[variant], env, bench.workdir)
            samples[variant]["wall"].append(wall)
            samples[variant]["cpu"].append(cpu)
        loads.append(load_average())
        say(f"round {index + 1}/{rounds}: " + ", ".join(
            f"{v} {samples[v]['cpu'][-1]:.3f} s cpu" for v in names))
    result: dict[str, Any] = {
        "goal": f"no-op once, its own CPU time <= {GOAL} s above the interpreter's start-up",
        "rounds": rounds, "load_average": loads,
        "variants": {v: {"wall": stats(s["wall"]), "cpu": stats(s["cpu"])}
                     for v, s in samples.items()},
    }
    base = result["variants"]["python -c pass"]["cpu"]["median"]
    rows = []
    for variant, figures in result["variants"].items():
        rows.append([variant, figures["wall"]["median"], figures["cpu"]["median"],
                     figures["cpu"]["min"], round(figures["cpu"]["median"] - base, 3)])
    path = write_results("once-overhead", result)
    print(table(["variant", "wall median s", "cpu median s", "cpu min s",
                 "cpu above python s"], rows))
    print(f"load average {loads[0]} -> {loads[-1]}; results: {path}")
    if profile:
        out = bench.workdir / "once.pyinstrument.txt"
        subprocess.run([sys.executable, "-m", "pyinstrument", "-o", str(out),
                        str(runner), "-", *once], env=env, cwd=bench.workdir,
                       capture_output=True, timeout=300, check=True)
        keep = Path(os.environ.get("SDP_BENCH_PROFILE_OUT", "bench/results/once.pyinstrument.txt"))
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_text(out.read_text())
        print(f"profile: {keep}")
    if phases:
        print_phases(bench, once, env, phases)
    return 0


def print_phases(bench: Bench, once: list[str], env: dict[str, str], runs: int) -> None:
    """``runs`` of this checkout's ``once`` through PHASES_RUNNER: a table of CPU ms a phase."""
    runner = bench.workdir / "phases.py"
    runner.write_text(PHASES_RUNNER)
    measured: list[dict[str, float]] = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, str(runner), *once], env=env, cwd=bench.workdir,
                              capture_output=True, text=True, timeout=300, check=True)
        line = next(x for x in done.stderr.splitlines() if x.startswith("PHASES "))
        measured.append(json.loads(line.removeprefix("PHASES ")))
    rows = [[phase, *(round(1000 * m[phase], 1) for m in measured)] for phase in measured[0]]
    print(table(["CPU ms", *(f"run {i + 1}" for i in range(runs))], rows))


if __name__ == "__main__":
    sys.exit(main())
