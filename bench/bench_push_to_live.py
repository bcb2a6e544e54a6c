"""Issue 5: push-to-live — a new commit on a sandbox's branch until its gateway serves it.

Two sandboxes of one SDP installation (MICRO + GATEWAY agents, gateways on the php-cli test
image as in ``tests/e2e/stack.py``); payment and user go to OCP stand-ins in both:

* **sdp**: ``account: {branch: bench/sdp}``. A commit is pushed to ``bench/sdp``; the clock runs
  from launching ``sdp-reconcile once`` (a subprocess, as CI runs it) until a request through
  the sandbox's gateway (``/erangel/account/...``) answers with the new revision.
* **by hand**: ``account: {target: http://host.docker.internal:<port>}``, so the gateway
  already routes to a container deployed by hand. A commit is pushed to ``bench/hand``; the
  clock runs from ``git fetch`` through ``git worktree add``, ``go build`` (the agent's
  environment, same GOCACHE), ``docker stop``/``rm``/``run`` and the health wait, until a
  request through the gateway answers with the new revision. The gateway is not touched.

Rounds alternate which goes first. Goal (issue 11; issue 5's was 1.5): sdp / by hand < 1.2.
The SDP time is also broken down with the pass's timestamps in the history file
(start-up and planning, lease, agent stages, recording, exit).

    .venv/bin/python bench/bench_push_to_live.py [--rounds 5] [--keep]
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BIN,
    GO_CACHE,
    Bench,
    HandDeploy,
    bench_run,
    create_network,
    get_json,
    interleaved,
    load_average,
    ratio,
    require_free_ports,
    say,
    stats,
    table,
    wait_until,
    write_results,
)
from stack import SdpStack, build_stack, sandbox_yaml

MICRO_PORTS = (20970, 20978)
HAND_PORT = 20979
GATEWAY_PORTS = (21090, 21099)
SUBNET_RANGE = "10.240.16.0/20"
HAND_SUBNET = "10.240.49.0/27"
GOAL = 1.2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    args = parser.parse_args()
    require_free_ports([*range(MICRO_PORTS[0], MICRO_PORTS[1] + 1), HAND_PORT,
                        *range(GATEWAY_PORTS[0], GATEWAY_PORTS[1] + 1)])
    with bench_run("push-to-live", keep=args.keep) as bench:
        return measure(bench, args.rounds)


def measure(bench: Bench, rounds: int) -> int:
    images = bench.images(["micro", "php-cli"])
    stack = build_stack(bench, images=images, micro_ports=MICRO_PORTS,
                        gateway_ports=GATEWAY_PORTS, subnet_range=SUBNET_RANGE,
                        branches={"account": ["bench/sdp", "bench/hand"]})
    sdp_sandbox, hand_sandbox = f"pl{bench.id}-sdp", f"pl{bench.id}-hand"
    ocp = {"use_ocp": True}
    stack.write(f"sandboxes/{sdp_sandbox}.yaml", sandbox_yaml(sdp_sandbox, {
        "account": {"branch": "bench/sdp"}, "payment": ocp, "user": ocp}))
    stack.write(f"sandboxes/{hand_sandbox}.yaml", sandbox_yaml(hand_sandbox, {
        "account": {"target": f"http://host.docker.internal:{HAND_PORT}"},
        "payment": ocp, "user": ocp}))
    stack.commit_state("two sandboxes")

    network = f"pl{bench.id}-hand"
    create_network(bench, network, HAND_SUBNET)
    hand = HandDeploy(bench=bench, repository="account", url=stack.git.repo_url("account"),
                      username=stack.git.username, password=stack.git.password,
                      image=images["micro"], port=HAND_PORT, network=network,
                      container=f"pl{bench.id}-hand-account", sandbox=hand_sandbox,
                      go_cache=GO_CACHE)
    hand.deploy(stack.heads[("account", "bench/hand")])
    first = stack.reconcile("once")
    if first.code != 0:
        raise RuntimeError(f"first --once failed:\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}")
    urls = dict(re.findall(r"^(\S+): point the app at (\S+)$", first.stdout, re.M))
    gateways = {"sdp": urls[sdp_sandbox], "hand": urls[hand_sandbox]}
    say(f"first --once {first.seconds:.1f} s; gateways {gateways}")

    counter = {"n": 0}
    samples: dict[str, list[float]] = {"sdp": [], "hand": []}
    details: dict[str, list[dict[str, float]]] = {"sdp": [], "hand": []}

    def one(variant: str) -> tuple[float, dict[str, float]]:
        counter["n"] += 1
        revision = f"account {variant} {counter['n']}"
        sha = stack.push("account", f"bench/{variant}", revision)
        launched = time.time()
        start = time.perf_counter()
        url = f"{gateways[variant]}/erangel/account/ping"
        if variant == "sdp":
            # Live is when the gateway serves it, while the pass goes on draining and retiring
            # the previous instance; the time until ``once`` exits is kept too.
            process = subprocess.Popen(
                [str(BIN / "sdp-reconcile"), "once", "--state", str(stack.state),
                 "--history", str(stack.history)], env=stack.env, cwd=bench.workdir,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_until(lambda: get_json(url)["body"]["revision"] == revision, timeout=60,
                       interval=0.02, what=f"{url} to serve {revision!r}")
            total = time.perf_counter() - start
            _out, err = process.communicate(timeout=600)
            exited = time.perf_counter() - start
            if process.returncode != 0:
                raise RuntimeError(f"--once failed ({process.returncode}):\n{err[-3000:]}")
            detail = {"push → live (gateway serves it)": total, "until once exits": exited}
            detail.update(pass_breakdown(stack, launched, launched + exited))
            return total, detail
        detail = hand.deploy(sha)
        mark = time.perf_counter()
        wait_until(lambda: get_json(url)["body"]["revision"] == revision, timeout=60,
                   interval=0.02, what=f"{url} to serve {revision!r}")
        total = time.perf_counter() - start
        detail["until the gateway serves it"] = time.perf_counter() - mark
        return total, detail

    for variant in ("sdp", "hand"):  # warm-up, not timed
        one(variant)
    say("warm-up done; measuring")
    loads = [load_average()]
    for index in range(rounds):
        for variant in interleaved(index, ["sdp", "hand"]):
            total, detail = one(variant)
            samples[variant].append(total)
            details[variant].append(detail)
            say(f"round {index + 1}/{rounds} {variant:<4} {total:.3f} s")
        loads.append(load_average())

    sdp, by_hand = stats(samples["sdp"]), stats(samples["hand"])
    exits = stats([d["until once exits"] for d in details["sdp"]])
    result: dict[str, Any] = {
        "goal": f"sdp (--once, push until live) / by hand < {GOAL}",
        "installation": "2 sandboxes (one per variant), each: gateway + account, payment and "
                        "user on OCP stand-ins",
        "rounds": rounds, "load_average": loads,
        "sdp": {**sdp, "breakdown_median": medians(details["sdp"])},
        "by_hand": {**by_hand, "breakdown_median": medians(details["hand"])},
        "ratio_sdp_over_hand": ratio(sdp["median"], by_hand["median"]),
        "until_once_exits": exits,
        "ratio_once_exit_over_hand": ratio(exits["median"], by_hand["median"]),
    }
    path = write_results("push-to-live", result)
    print(table(["variant", "median s", "min s", "max s"], [
        ["sdp: push → --once → gateway serves it", sdp["median"], sdp["min"], sdp["max"]],
        ["by hand: git/go/docker CLI → gateway", by_hand["median"], by_hand["min"],
         by_hand["max"]],
    ]))
    verdict = "meets" if result["ratio_sdp_over_hand"] < GOAL else "MISSES"
    print(f"ratio sdp / by hand = {result['ratio_sdp_over_hand']:.2f} ({verdict} the goal "
          f"< {GOAL}); until once exits (drain and retire included) {exits['median']:.3f} s, "
          f"ratio {result['ratio_once_exit_over_hand']:.2f}; load average {loads[0]} -> "
          f"{loads[-1]}; results: {path}")
    print(table(["sdp breakdown (medians)", "s"],
                [[k, v] for k, v in result["sdp"]["breakdown_median"].items()]))
    print(table(["by-hand breakdown (medians)", "s"],
                [[k, v] for k, v in result["by_hand"]["breakdown_median"].items()]))
    return 0


SWITCH_MARKS = {  # the agent's log lines of a switch (sdp_node/converge.py), in order
    "container started": re.compile(r"^container \S+ started"),
    "healthy": re.compile(r"^health check "),
    "alias joined": re.compile(r"^\S+ joined \S+ as "),
    "renamed": re.compile(r"^\S+ now runs "),
}


def pass_breakdown(stack: SdpStack, launched: float, exited: float) -> dict[str, float]:
    """Split one pass by the timestamps it left in the history file: the stages, the switch's
    steps (from the agent's log lines), the route move and the retire."""
    with sqlite3.connect(stack.history) as db:
        pass_id, started, finished = db.execute(
            "SELECT id, started_at, finished_at FROM passes ORDER BY id DESC LIMIT 1").fetchone()
        rows = db.execute("SELECT event, at, message, kind FROM events WHERE pass_id = ? "
                          "ORDER BY id", (pass_id,)).fetchall()
    t: dict[str, float] = {}
    for event, at, _message, _kind in rows:
        if event is not None:
            t.setdefault(event, _epoch(at))
    start, end = _epoch(started), _epoch(finished)
    out = {"start-up, load, observe, heads, plan": start - launched}
    if "FETCH_STARTED" in t and "DEPLOY_COMPLETED" in t:
        out["lease + apply request"] = t["FETCH_STARTED"] - start
        for stage, (a, b) in {
            "agent: git fetch": ("FETCH_STARTED", "FETCH_COMPLETED"),
            "agent: git checkout": ("CHECKOUT_STARTED", "CHECKOUT_COMPLETED"),
            "agent: go build": ("BUILD_STARTED", "BUILD_COMPLETED"),
            "agent: start container (replace + health)": ("DEPLOY_STARTED", "DEPLOY_COMPLETED"),
        }.items():
            if a in t and b in t:
                out[stage] = t[b] - t[a]
        mark = t["DEPLOY_STARTED"]
        for name, pattern in SWITCH_MARKS.items():
            found = [_epoch(at) for _e, at, message, kind in rows
                     if kind == "log" and pattern.match(message or "")]
            if found and found[0] >= mark:
                out[f"  switch: until {name}"] = found[0] - mark
                mark = found[0]
        if "ROUTES_STARTED" in t and "ROUTES_COMPLETED" in t:
            out["deploy result → routes started"] = t["ROUTES_STARTED"] - t["DEPLOY_COMPLETED"]
            out["gateway: routes (write + reload)"] = t["ROUTES_COMPLETED"] - t["ROUTES_STARTED"]
            out["routes moved → pass recorded (drain, retire)"] = end - t["ROUTES_COMPLETED"]
        else:
            out["result → pass recorded"] = end - t["DEPLOY_COMPLETED"]
    out["summary + exit"] = exited - end
    return out


def _epoch(text: str) -> float:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run if k not in keys]
    return {k: round(statistics.median(r[k] for r in runs if k in r), 4) for k in keys}


if __name__ == "__main__":
    sys.exit(main())
