"""Issue 11: requests dropped by a redeploy, SDP's switch vs the by-hand stop/rm/run.

Two sandboxes of one SDP installation (MICRO + GATEWAY agents, gateways on the Apache + mod_php
test image, reloaded gracefully, as in production; ``--php-s`` uses PHP's built-in server
instead, as ``bench_push_to_live.py`` does); payment and user go to OCP stand-ins in both:

* **sdp**: ``account: {branch: bench/sdp}``; a commit is pushed and ``sdp-reconcile once`` runs:
  the new container starts beside the old one on a spare port, the route moves once it is
  healthy, the old one drains and goes.
* **by hand**: ``account: {target: http://host.docker.internal:<port>}``; a commit is pushed
  and deployed with the CLIs as an operator would (``git fetch``, ``git worktree add``, ``go
  build``, ``docker stop``/``rm``/``run``, health poll) on the port the gateway routes to.

During each deploy a load loop (``sdp_testbed.load.LoadLoop``, one GET every 25 ms, in a
thread) runs through that sandbox's gateway from 1 s before the deploy until its gateway has
served the new revision for 1 s. Per deploy: failed requests (no answer, or not 200 with an
upstream 200), the longest gap between two good answers, and the time from the push until the
gateway serves the new revision (push-to-live; for SDP the pass goes on meanwhile, draining and
retiring the previous instance, so the time until ``once`` exits is reported too). Rounds
alternate which goes first. Goal (issue 11): zero failed requests for SDP; push-to-live sdp /
by hand < 1.2.

    .venv/bin/python bench/bench_zero_drop.py [--rounds 5] [--keep] [--php-s]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
from stack import build_stack, sandbox_yaml

from sdp_testbed.load import LoadLoop

MICRO_PORTS = (20950, 20958)
HAND_PORT = 20959
GATEWAY_PORTS = (21080, 21089)
SUBNET_RANGE = "10.240.64.0/20"
HAND_SUBNET = "10.240.50.0/27"
GOAL = 1.2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--php-s", action="store_true",
                        help="gateways on php -S (no reload) instead of Apache")
    args = parser.parse_args()
    require_free_ports([*range(MICRO_PORTS[0], MICRO_PORTS[1] + 1), HAND_PORT,
                        *range(GATEWAY_PORTS[0], GATEWAY_PORTS[1] + 1)])
    with bench_run("zero-drop", keep=args.keep) as bench:
        return measure(bench, args.rounds, apache=not args.php_s)


def measure(bench: Bench, rounds: int, *, apache: bool) -> int:
    images = bench.images(["micro", "php-apache" if apache else "php-cli"])
    stack = build_stack(bench, images=images, micro_ports=MICRO_PORTS,
                        gateway_ports=GATEWAY_PORTS, subnet_range=SUBNET_RANGE,
                        branches={"account": ["bench/sdp", "bench/hand"]}, apache=apache)
    sdp_sandbox, hand_sandbox = f"zd{bench.id}-sdp", f"zd{bench.id}-hand"
    ocp = {"use_ocp": True}
    stack.write(f"sandboxes/{sdp_sandbox}.yaml", sandbox_yaml(sdp_sandbox, {
        "account": {"branch": "bench/sdp"}, "payment": ocp, "user": ocp}))
    stack.write(f"sandboxes/{hand_sandbox}.yaml", sandbox_yaml(hand_sandbox, {
        "account": {"target": f"http://host.docker.internal:{HAND_PORT}"},
        "payment": ocp, "user": ocp}))
    stack.commit_state("two sandboxes")

    network = f"zd{bench.id}-hand"
    create_network(bench, network, HAND_SUBNET)
    hand = HandDeploy(bench=bench, repository="account", url=stack.git.repo_url("account"),
                      username=stack.git.username, password=stack.git.password,
                      image=images["micro"], port=HAND_PORT, network=network,
                      container=f"zd{bench.id}-hand-account", sandbox=hand_sandbox,
                      go_cache=GO_CACHE)
    hand.deploy(stack.heads[("account", "bench/hand")])
    first = stack.reconcile("once")
    if first.code != 0:
        raise RuntimeError(f"first --once failed:\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}")
    urls = dict(re.findall(r"^(\S+): point the app at (\S+)$", first.stdout, re.M))
    gateways = {"sdp": urls[sdp_sandbox], "hand": urls[hand_sandbox]}
    say(f"first --once {first.seconds:.1f} s; gateways {gateways}")

    counter = {"n": 0}
    samples: dict[str, list[dict[str, float]]] = {"sdp": [], "hand": []}

    def one(variant: str) -> dict[str, float]:
        counter["n"] += 1
        revision = f"account {variant} {counter['n']}"
        url = f"{gateways[variant]}/erangel/account/ping"
        with LoadLoop(url) as load:
            load.wait_for_answers(40)  # ~1 s of traffic before the deploy
            start = time.perf_counter()
            sha = stack.push("account", f"bench/{variant}", revision)
            process = None
            if variant == "sdp":
                # The clock stops when the gateway serves the new revision (what a user sees);
                # the pass goes on to drain and retire the previous instance meanwhile.
                process = subprocess.Popen(
                    [str(BIN / "sdp-reconcile"), "once", "--state", str(stack.state),
                     "--history", str(stack.history)], env=stack.env, cwd=bench.workdir,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            else:
                hand.deploy(sha)
            wait_until(lambda: get_json(url)["body"]["revision"] == revision, timeout=60,
                       interval=0.02, what=f"{url} to serve {revision!r}")
            live = time.perf_counter() - start
            whole = live
            if process is not None:
                output, _ = process.communicate(timeout=600)
                whole = time.perf_counter() - start
                if process.returncode != 0:
                    raise RuntimeError(f"--once failed ({process.returncode}):\n{output[-3000:]}")
            load.wait_for_answers(40)  # ~1 s of traffic after it
        for failure in load.failures()[:3]:
            say(f"  {variant} failed: {failure.status} {failure.problem} "
                f"(at +{failure.at - start:.2f} s)")
        return {"failed": float(len(load.failures())), "longest_gap_s": load.longest_gap(),
                "push_to_live_s": live, "until_done_s": whole,
                "requests": float(len(load.answers))}

    for variant in ("sdp", "hand"):  # warm-up, not counted
        one(variant)
    say("warm-up done; measuring")
    loads = [load_average()]
    for index in range(rounds):
        for variant in interleaved(index, ["sdp", "hand"]):
            sample = one(variant)
            samples[variant].append(sample)
            say(f"round {index + 1}/{rounds} {variant:<4} failed {sample['failed']:.0f} of "
                f"{sample['requests']:.0f}, longest gap {sample['longest_gap_s']:.3f} s, "
                f"push-to-live {sample['push_to_live_s']:.2f} s")
        loads.append(load_average())

    def summary(variant: str) -> dict[str, Any]:
        got = samples[variant]
        return {
            "failed_total": sum(s["failed"] for s in got),
            "requests_total": sum(s["requests"] for s in got),
            "failed_per_deploy_median": statistics.median(s["failed"] for s in got),
            "longest_gap_s": stats([s["longest_gap_s"] for s in got]),
            "push_to_live_s": stats([s["push_to_live_s"] for s in got]),
            "until_done_s": stats([s["until_done_s"] for s in got]),
        }

    sdp, by_hand = summary("sdp"), summary("hand")
    result: dict[str, Any] = {
        "goal": f"sdp: 0 failed requests; push-to-live sdp / by hand < {GOAL}",
        "rounds": rounds, "load_average": loads, "interval_s": 0.025,
        "gateway": "apache (graceful reload)" if apache else "php -S",
        "sdp": sdp, "by_hand": by_hand,
        "ratio_push_to_live": ratio(sdp["push_to_live_s"]["median"],
                                    by_hand["push_to_live_s"]["median"]),
        "ratio_until_done": ratio(sdp["until_done_s"]["median"],
                                  by_hand["until_done_s"]["median"]),
        "ratio_longest_gap": ratio(sdp["longest_gap_s"]["median"],
                                   by_hand["longest_gap_s"]["median"]),
    }
    path = write_results("zero-drop", result)
    print(table(["variant", "failed / requests", "failed per deploy (median)",
                 "longest gap median s", "push-to-live median s"], [
        [name, f"{v['failed_total']:.0f} / {v['requests_total']:.0f}",
         v["failed_per_deploy_median"], v["longest_gap_s"]["median"],
         v["push_to_live_s"]["median"]]
        for name, v in (("sdp (switch)", sdp), ("by hand (stop/rm/run)", by_hand))]))
    print(f"ratios sdp / by hand: push-to-live {result['ratio_push_to_live']:.2f} (goal < {GOAL}),"
          f" until the pass is done {result['ratio_until_done']:.2f},"
          f" longest gap {result['ratio_longest_gap']:.2f}; load average {loads[0]} -> "
          f"{loads[-1]}; results: {path}")
    return 0 if sdp["failed_total"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
