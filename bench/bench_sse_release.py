"""Issue 6: how fast the status page releases event streams whose clients went away.

The page keeps one subscription per open stream (``/healthz`` reports ``open_streams``). This
measures, against a page server in its own process (``create_app`` + uvicorn, over a history
file written by the reconciler's ``History``):

* **fan-out**: N streams open; one event written to the history; time until every stream got it
  (the one shared poller polls every 0.25 s, so this is dominated by the poll interval);
* **release, close**: all N clients close their streams at once; time until ``open_streams``
  is back to 0;
* **release, kill**: a separate client process holding N streams is SIGKILLed (a phone that
  drops off the network closes nothing); time until ``open_streams`` is 0.

Release is reported in milliseconds and as a fraction of the heartbeat interval (15 s), which
is how long a server that noticed dead clients only when a heartbeat write fails would hold
them. Rounds interleave sizes and modes; medians are printed.

    .venv/bin/python bench/bench_sse_release.py [--streams 50 200] [--rounds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

HEARTBEAT_SECONDS = 15.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the two helper processes ------------------------------------------------------------------


def run_server(history: str, port: int) -> None:
    """The page (login check that accepts anyone: this measures streams, not logins)."""
    from sdp_reconciler.web import WebSettings, create_app
    from sdp_reconciler.web.server import serve_forever

    app = create_app(state_dir=Path(history).parent / "state", history_path=Path(history),
                     env={}, settings=WebSettings(heartbeat_seconds=HEARTBEAT_SECONDS),
                     login=lambda username, password: None)
    serve_forever(app, f"127.0.0.1:{port}")


Stream = tuple[httpx.Response, AsyncIterator[str]]


async def open_streams(client: httpx.AsyncClient, count: int) -> list[Stream]:
    """``count`` open streams, each with its line iterator (dropping one closes the stream)."""
    streams: list[Stream] = []
    for _ in range(count):
        response = await client.send(client.build_request("GET", "/events"), stream=True)
        streams.append((response, response.aiter_lines()))
    for _, lines in streams:
        line = await anext(lines)
        assert line.startswith(":"), line
    return streams


def run_holder(url: str, cookie: str, count: int) -> None:
    """Open ``count`` streams, say so on stdout, and wait to be killed."""

    async def hold() -> None:
        async with httpx.AsyncClient(base_url=url, cookies={"sdp_session": cookie},
                                     timeout=60, limits=httpx.Limits(max_connections=None)
                                     ) as client:
            streams = await open_streams(client, count)
            print("ready", flush=True)
            await asyncio.sleep(3600)
            del streams

    asyncio.run(hold())


# -- measuring ---------------------------------------------------------------------------------


class Page:
    def __init__(self, url: str, history: Path) -> None:
        from sdp_reconciler.history import History

        self.url = url
        self.writer = History(history)
        self.health = httpx.Client(base_url=url, timeout=10)
        answer = self.health.post("/login", data={"username": "bench", "password": "x"})
        assert answer.status_code == 303, answer.text
        self.cookie = answer.cookies["sdp_session"]

    def open_count(self) -> int:
        return int(self.health.get("/healthz").json()["open_streams"])

    def wait_for(self, count: int, timeout: float = 120) -> float:
        started = time.perf_counter()
        while self.open_count() != count:
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"open_streams never reached {count}")
            time.sleep(0.002)
        return time.perf_counter() - started


def graceful(page: Page, count: int) -> tuple[float, float]:
    """(fan-out seconds, release seconds) with clients that close their streams."""

    async def run() -> tuple[float, float]:
        async with httpx.AsyncClient(base_url=page.url, cookies={"sdp_session": page.cookie},
                                     timeout=60, limits=httpx.Limits(max_connections=None)
                                     ) as client:
            streams = await open_streams(client, count)
            await asyncio.to_thread(page.wait_for, count)
            written = time.perf_counter()
            event_id = await asyncio.to_thread(page.writer.add_event, sandbox="BENCH",
                                               kind="log", message="fan-out")

            async def until_event(lines: AsyncIterator[str]) -> None:
                async for line in lines:
                    if line == f"id: {event_id}":
                        return

            await asyncio.gather(*(until_event(lines) for _, lines in streams))
            fan_out = time.perf_counter() - written
            closing = time.perf_counter()
            await asyncio.gather(*(response.aclose() for response, _ in streams))
            await asyncio.to_thread(page.wait_for, 0)
            return fan_out, time.perf_counter() - closing

    return asyncio.run(run())


def killed(page: Page, count: int) -> float:
    """Release seconds after the process holding ``count`` streams is SIGKILLed."""
    holder = subprocess.Popen([sys.executable, __file__, "--hold", page.url, page.cookie,
                               str(count)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        page.wait_for(count)
        holder.send_signal(signal.SIGKILL)
        return page.wait_for(0)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--serve", nargs=2, metavar=("HISTORY", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--hold", nargs=3, metavar=("URL", "COOKIE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve[0], int(args.serve[1]))
        return 0
    if args.hold:
        run_holder(args.hold[0], args.hold[1], int(args.hold[2]))
        return 0

    with tempfile.TemporaryDirectory(prefix="sdp-bench-sse-") as folder:
        history = Path(folder) / "history.sqlite"
        port = free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(history), str(port)],
                                  stdout=subprocess.DEVNULL, env={**os.environ})
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            page = Page(url, history)
            samples: dict[int, dict[str, list[float]]] = {
                n: {"fan_out": [], "close": [], "kill": []} for n in args.streams}
            for round_number in range(args.rounds):
                for count in args.streams:
                    fan_out, close = graceful(page, count)
                    kill = killed(page, count)
                    samples[count]["fan_out"].append(fan_out)
                    samples[count]["close"].append(close)
                    samples[count]["kill"].append(kill)
                    print(f"round {round_number + 1}: {count} streams: fan-out "
                          f"{fan_out * 1000:.0f} ms, release after close {close * 1000:.0f} ms, "
                          f"after kill {kill * 1000:.0f} ms", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=15)
    report: dict[str, Any] = {"heartbeat_seconds": HEARTBEAT_SECONDS, "rounds": args.rounds,
                              "results": {}}
    print(f"\nmedians over {args.rounds} rounds (release as a fraction of the "
          f"{HEARTBEAT_SECONDS:.0f} s heartbeat):")
    for count, figures in samples.items():
        medians = {k: statistics.median(v) for k, v in figures.items()}
        report["results"][str(count)] = {f"{k}_ms": round(v * 1000, 1)
                                         for k, v in medians.items()}
        print(f"  {count:>4} streams: fan-out {medians['fan_out'] * 1000:6.0f} ms | release "
              f"after close {medians['close'] * 1000:6.0f} ms "
              f"({medians['close'] / HEARTBEAT_SECONDS:.4f}) | after kill "
              f"{medians['kill'] * 1000:6.0f} ms ({medians['kill'] / HEARTBEAT_SECONDS:.4f})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
