"""Issue 17: a shared history and placement over many nodes.

* **event latency**: a page server in its own process (``create_app`` + uvicorn) with 20
  viewers' streams open; this process writes one event with the reconciler's ``History``; the
  time until every stream has it. SQLite (the page polls every 0.25 s, the default) vs
  PostgreSQL (the page is woken by LISTEN/NOTIFY). Rounds interleave the two; p50/p99 of all
  samples, and the ratio PostgreSQL / SQLite.
* **write throughput**: ``History.add_event`` in a loop, events per second on each store.
* **placement**: ``placement.place`` of 1,000 sandboxes x 5 services over 10 MICRO nodes that
  declare capacity, against the same sandboxes over one node (the baseline: what placement
  cost when everything went to the first node); in memory.

PostgreSQL is the data server the tests use (``.ci/start-data-servers``, 127.0.0.1:17432); the
benchmark makes its own database and drops it. Results go to bench/results/bench_scaleout.json.

    .venv/bin/python bench/bench_scaleout.py [--rounds 5] [--events 20] [--viewers 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results

POLL = 0.25


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_server(history: str, port: int, state: str) -> None:
    from sdp_reconciler.web import WebSettings, create_app
    from sdp_reconciler.web.server import serve_forever

    app = create_app(state_dir=Path(state), history_path=history, env=dict(os.environ),
                     settings=WebSettings(poll_interval=POLL, heartbeat_seconds=60),
                     login=lambda username, password: None)
    serve_forever(app, f"127.0.0.1:{port}")


class Page:
    def __init__(self, history: str, env: dict[str, str], folder: Path) -> None:
        from sdp_reconciler.history import History

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = subprocess.Popen(
            [sys.executable, __file__, "--serve", history, str(self.port), str(folder)],
            stdout=subprocess.DEVNULL, env={**os.environ, **env})
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.writer = History(history, env=env)
        answer = httpx.post(f"{self.url}/login", data={"username": "b", "password": "x"})
        assert answer.status_code == 303, answer.text
        self.cookie = answer.cookies["sdp_session"]

    def stop(self) -> None:
        self.writer.close()
        self.server.terminate()
        self.server.wait(timeout=15)


async def latencies(page: Page, viewers: int, events: int) -> list[float]:
    """Seconds from each write until the last of ``viewers`` streams has the event."""
    async with httpx.AsyncClient(base_url=page.url, cookies={"sdp_session": page.cookie},
                                 timeout=60, limits=httpx.Limits(max_connections=None)
                                 ) as client:
        streams: list[tuple[httpx.Response, AsyncIterator[str]]] = []
        for _ in range(viewers):
            response = await client.send(client.build_request("GET", "/events"), stream=True)
            streams.append((response, response.aiter_lines()))
        for _, lines in streams:
            assert (await anext(lines)).startswith(":")
        while int((await client.get("/healthz")).json()["open_streams"]) < viewers:
            await asyncio.sleep(0.01)
        samples = []
        for n in range(events):
            await asyncio.sleep(0.05 + (n % 7) * 0.031)  # not in step with the poller
            written = time.perf_counter()
            event_id = await asyncio.to_thread(page.writer.add_event, sandbox="BENCH",
                                               kind="log", message=f"event {n}")

            async def until(lines: AsyncIterator[str], wanted: str = f"id: {event_id}") -> None:
                async for line in lines:
                    if line == wanted:
                        return

            await asyncio.gather(*(until(lines) for _, lines in streams))
            samples.append(time.perf_counter() - written)
        for response, _ in streams:
            await response.aclose()
        return samples


def throughput(history: str, env: dict[str, str], count: int) -> float:
    from sdp_reconciler.history import History

    writer = History(history, env=env)
    try:
        started = time.perf_counter()
        for n in range(count):
            writer.add_event(sandbox="BENCH", kind="log", message=f"line {n}")
        return count / (time.perf_counter() - started)
    finally:
        writer.close()


def placement(nodes_count: int, sandboxes: int, services: int, repeat: int) -> float:
    from sdp_reconciler.planner.placement import place
    from sdp_reconciler.state.models import NodeCapacity, NodeType, Resources
    from tests.planning.builders import (
        Desired,
        branch,
        by_name,
        go_repository,
        node,
        nodes,
        sandbox,
    )

    names = [f"svc{j}" for j in range(services)]
    capacity = NodeCapacity(cpu="64", memory="256Gi", containers=1000)
    extra = {node(f"micro-{i + 2:02d}", NodeType.MICRO, f"10.0.2.{i}", (9001, 9999))
             .model_copy(update={"capacity": capacity}): [go_repository(r) for r in names]
             for i in range(nodes_count - 1)}
    observed = nodes(micro_ports=(9001, 9999), micro_repositories=names, extra=extra)
    desired = Desired(by_name(*(sandbox(f"qa-{i:04d}", {s: branch("main") for s in names},
                                        gateway=None, resources=Resources(cpu="100m",
                                                                          memory="128Mi"))
                                for i in range(sandboxes))))
    world = desired.world(observed)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        placed, problems = place(desired.sandboxes, world)
        best = min(best, time.perf_counter() - started)
        assert not problems and len(placed) == sandboxes * services, problems[:3]
    return best


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=20, help="events per round")
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--only", choices=("latency", "placement"),
                        help="run one part (default: all)")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve[0], int(args.serve[1]), args.serve[2])
        return 0

    report: dict[str, Any] = {"viewers": args.viewers, "rounds": args.rounds}
    if args.only != "placement":
        event_latency(args, report)
    if args.only != "latency":
        placements(report)
    print(f"results: {write_results('bench_scaleout', report)}")
    return 0


def event_latency(args: argparse.Namespace, report: dict[str, Any]) -> None:
    from sdp_testbed.dataservers import ensure_started
    from tests.support.data import drop_database
    from tests.support.pghistory import new_history_db

    data = ensure_started(wait=False)
    database = new_history_db(data, f"bench{uuid.uuid4().hex[:4]}")
    try:
        with tempfile.TemporaryDirectory(prefix="sdp-bench-scaleout-") as folder:
            root = Path(folder)
            stores = {"sqlite": (str(root / "history.sqlite"), {}),
                      "postgresql": (database.url, database.env)}
            pages = {name: Page(where, env, root) for name, (where, env) in stores.items()}
            samples: dict[str, list[float]] = {name: [] for name in stores}
            try:
                for round_number in range(args.rounds):
                    for name, page in pages.items():
                        got = asyncio.run(latencies(page, args.viewers, args.events))
                        samples[name].extend(got)
                        print(f"round {round_number + 1} {name:>10}: p50 "
                              f"{pct(got, .5) * 1000:6.1f} ms  max {max(got) * 1000:6.1f} ms",
                              flush=True)
            finally:
                for page in pages.values():
                    page.stop()
            writes = {name: throughput(where, env, args.writes)
                      for name, (where, env) in stores.items()}
        for name, values in samples.items():
            report[f"latency_{name}_p50_ms"] = round(pct(values, .5) * 1000, 2)
            report[f"latency_{name}_p99_ms"] = round(pct(values, .99) * 1000, 2)
            report[f"writes_{name}_per_s"] = round(writes[name], 1)
        report["latency_p99_ratio_pg_over_sqlite"] = round(
            pct(samples["postgresql"], .99) / pct(samples["sqlite"], .99), 3)
    finally:
        drop_database(data, database.name)
    print()
    for name in ("sqlite", "postgresql"):
        print(f"event latency, {args.viewers} viewers, {name:>10}: p50 "
              f"{report[f'latency_{name}_p50_ms']:7.1f} ms  p99 "
              f"{report[f'latency_{name}_p99_ms']:7.1f} ms  | writes "
              f"{report[f'writes_{name}_per_s']:8.1f} events/s")
    print(f"p99 PostgreSQL/SQLite: {report['latency_p99_ratio_pg_over_sqlite']} "
          "(goal: PostgreSQL p99 <= 50 ms)")


def placements(report: dict[str, Any]) -> None:
    spread = placement(10, 1000, 5, 5)
    single = placement(1, 1000, 5, 5)
    report.update({"place_1000x5_over_10_nodes_s": round(spread, 4),
                   "place_1000x5_on_1_node_s": round(single, 4),
                   "place_ratio_10_over_1": round(spread / single, 2)})
    print(f"placement of 1,000 sandboxes x 5 services: over 10 nodes {spread:.3f} s, on one "
          f"node {single:.3f} s (ratio {spread / single:.2f}; goal <= 0.1 s)")


if __name__ == "__main__":
    sys.exit(main())
