"""Issue 15: push-to-live through a Bitbucket push webhook into a running ``watch``.

The installation of ``bench_push_to_live.py`` (MICRO + GATEWAY agents, two sandboxes whose
payment and user go to OCP stand-ins), with ``sdp-reconcile watch`` running (interval 600 s,
so only the webhook can start the pass) and its listener serving ``POST /hooks/bitbucket``:

* **sdp**: ``account: {branch: bench/sdp}``. A commit is pushed to ``bench/sdp``; the clock runs
  from posting the signed Bitbucket Server ``repo:refs_changed`` payload (what Bitbucket sends
  right after a push) until a request through the sandbox's gateway answers with the new
  revision. The pass is scoped to that sandbox: the other one is not planned.
* **by hand**: as in ``bench_push_to_live.py``: ``git fetch``, ``git worktree add``, ``go
  build`` (same GOCACHE), ``docker stop``/``rm``/``run``, health wait, until the gateway (which
  already routes to the hand-made container) serves the new revision.

Rounds alternate which goes first. Goal (issue 15): sdp / by hand <= 1.0. The SDP time is
broken down with the pass's timestamps in the history file.

    .venv/bin/python bench/bench_webhook_push.py [--rounds 5] [--keep]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_push_to_live import medians, pass_breakdown
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

from sdp_reconciler.web.bitbucket import SERVER_PUSH, sign

MICRO_PORTS = (20920, 20928)  # its own block: zero-drop has 20950-20959
HAND_PORT = 20929
GATEWAY_PORTS = (21070, 21079)
PAGE_PORT = 21069
SUBNET_RANGE = "10.240.32.0/20"
HAND_SUBNET = "10.240.51.0/27"
GOAL = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    args = parser.parse_args()
    require_free_ports([*range(MICRO_PORTS[0], MICRO_PORTS[1] + 1), HAND_PORT, PAGE_PORT,
                        *range(GATEWAY_PORTS[0], GATEWAY_PORTS[1] + 1)])
    with bench_run("webhook-push", keep=args.keep) as bench:
        return measure(bench, args.rounds)


def payload(slug: str, url: str, branch: str) -> bytes:
    return json.dumps({
        "eventKey": SERVER_PUSH, "actor": {"name": "bench"},
        "repository": {"slug": slug, "name": slug, "project": {"key": "BENCH"},
                       "links": {"clone": [{"href": url, "name": "http"}]}},
        "changes": [{"ref": {"id": f"refs/heads/{branch}", "displayId": branch,
                             "type": "BRANCH"}, "type": "UPDATE"}],
    }).encode()


def post_hook(secret: str, body: bytes) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PAGE_PORT}/hooks/bitbucket", data=body, method="POST",
        headers={"X-Event-Key": SERVER_PUSH, "X-Hub-Signature": sign(secret.encode(), body),
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        result: dict[str, Any] = json.loads(answer.read())
        return result


def start_watch(bench: Bench, stack: SdpStack, secret: str) -> subprocess.Popen[bytes]:
    log = (bench.workdir / "watch.log").open("ab")
    process = subprocess.Popen(
        [str(BIN / "sdp-reconcile"), "watch", "--state", str(stack.state), "--history",
         str(stack.history), "--interval", "600", "--listen", f"127.0.0.1:{PAGE_PORT}"],
        env={**stack.env, "SDP_WEBHOOK_SECRET": secret}, stdout=log,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=bench.workdir)
    log.close()

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)

    bench.defer("sdp-reconcile watch", stop)
    return process


def last_pass(stack: SdpStack) -> tuple[int, str, str | None, str | None]:
    if not stack.history.exists():
        return (0, "", None, None)
    try:
        with sqlite3.connect(f"file:{stack.history}?mode=ro", uri=True) as db:
            row = db.execute("SELECT id, status, started_at, finished_at FROM passes "
                             "ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:  # watch is still creating it
        return (0, "", None, None)
    return row if row else (0, "", None, None)


def measure(bench: Bench, rounds: int) -> int:
    images = bench.images(["micro", "php-cli"])
    stack = build_stack(bench, images=images, micro_ports=MICRO_PORTS,
                        gateway_ports=GATEWAY_PORTS, subnet_range=SUBNET_RANGE,
                        branches={"account": ["bench/sdp", "bench/hand"]})
    host = Path(stack.env["SDP_RECONCILER_CONFIG"])
    config = json.loads(host.read_text())
    slug = stack.repos["account"].name.removesuffix(".git")
    config["webhooks"] = {"repositories": {slug: "account"}}
    host.write_text(json.dumps(config, indent=1) + "\n")
    sdp_sandbox, hand_sandbox = f"wh{bench.id}-sdp", f"wh{bench.id}-hand"
    ocp = {"use_ocp": True}
    stack.write(f"sandboxes/{sdp_sandbox}.yaml", sandbox_yaml(sdp_sandbox, {
        "account": {"branch": "bench/sdp"}, "payment": ocp, "user": ocp}))
    stack.write(f"sandboxes/{hand_sandbox}.yaml", sandbox_yaml(hand_sandbox, {
        "account": {"target": f"http://host.docker.internal:{HAND_PORT}"},
        "payment": ocp, "user": ocp}))
    stack.commit_state("two sandboxes")

    network = f"wh{bench.id}-hand"
    create_network(bench, network, HAND_SUBNET)
    hand = HandDeploy(bench=bench, repository="account", url=stack.git.repo_url("account"),
                      username=stack.git.username, password=stack.git.password,
                      image=images["micro"], port=HAND_PORT, network=network,
                      container=f"wh{bench.id}-hand-account", sandbox=hand_sandbox,
                      go_cache=GO_CACHE)
    hand.deploy(stack.heads[("account", "bench/hand")])
    secret = secrets.token_hex(24)
    start_watch(bench, stack, secret)
    wait_until(lambda: last_pass(stack)[1] == "CONVERGED", timeout=600, interval=0.2,
               what="watch's first pass to converge")
    first = stack.reconcile("once")  # prints the gateways' URLs; plans nothing
    gateways = dict(line.split(": point the app at ") for line in first.stdout.splitlines()
                    if ": point the app at " in line)
    say(f"watch converged; gateways {gateways}")
    url_of = {"sdp": gateways[sdp_sandbox], "hand": gateways[hand_sandbox]}
    body = payload(slug, stack.git.repo_url(slug), "bench/sdp")

    counter = {"n": 0}
    samples: dict[str, list[float]] = {"sdp": [], "hand": []}
    details: dict[str, list[dict[str, float]]] = {"sdp": [], "hand": []}

    def one(variant: str) -> tuple[float, dict[str, float]]:
        counter["n"] += 1
        revision = f"account {variant} {counter['n']}"
        sha = stack.push("account", f"bench/{variant}", revision)
        before = last_pass(stack)[0]
        posted = time.time()
        start = time.perf_counter()
        if variant == "sdp":
            answer = post_hook(secret, body)
            if answer.get("result") != "queued":
                raise RuntimeError(f"the webhook was not taken: {answer}")
            detail = {"webhook answered (202)": time.perf_counter() - start}
        else:
            detail = hand.deploy(sha)
        mark = time.perf_counter()
        url = f"{url_of[variant]}/erangel/account/ping"
        wait_until(lambda: get_json(url)["body"]["revision"] == revision, timeout=60,
                   interval=0.02, what=f"{url} to serve {revision!r}")
        total = time.perf_counter() - start
        detail["until the gateway serves it"] = time.perf_counter() - mark
        if variant == "sdp":
            wait_until(lambda: (lambda p: p[0] > before and p[3] is not None)(last_pass(stack)),
                       timeout=60, interval=0.05, what="the webhook's pass to be recorded")
            detail.update(hook_breakdown(stack, posted))
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
    result: dict[str, Any] = {
        "goal": f"sdp (webhook into watch) / by hand <= {GOAL}",
        "installation": "2 sandboxes (one per variant), each: gateway + account, payment and "
                        "user on OCP stand-ins; watch --interval 600",
        "rounds": rounds, "load_average": loads,
        "sdp": {**sdp, "breakdown_median": medians(details["sdp"])},
        "by_hand": {**by_hand, "breakdown_median": medians(details["hand"])},
        "ratio_sdp_over_hand": ratio(sdp["median"], by_hand["median"]),
    }
    path = write_results("webhook-push", result)
    print(table(["variant", "median s", "min s", "max s"], [
        ["sdp: push → webhook → watch → gateway serves it", sdp["median"], sdp["min"],
         sdp["max"]],
        ["by hand: git/go/docker CLI → gateway", by_hand["median"], by_hand["min"],
         by_hand["max"]],
    ]))
    verdict = "meets" if result["ratio_sdp_over_hand"] <= GOAL else "MISSES"
    print(f"ratio sdp / by hand = {result['ratio_sdp_over_hand']:.2f} ({verdict} the goal "
          f"<= {GOAL}); load average {loads[0]} -> {loads[-1]}; results: {path}")
    print(table(["sdp breakdown (medians)", "s"],
                [[k, v] for k, v in result["sdp"]["breakdown_median"].items()]))
    print(table(["by-hand breakdown (medians)", "s"],
                [[k, v] for k, v in result["by_hand"]["breakdown_median"].items()]))
    return 0


def hook_breakdown(stack: SdpStack, posted: float) -> dict[str, float]:
    """Split the webhook's pass by the timestamps it left in the history file (the stages,
    the switch's steps, the route move and the retire: ``bench_push_to_live``'s split)."""
    split = pass_breakdown(stack, posted, posted)
    split.pop("summary + exit", None)
    first = split.pop("start-up, load, observe, heads, plan")
    return {"hook → pass recorded (load, observe, heads, plan)": first, **split}


if __name__ == "__main__":
    sys.exit(main())
