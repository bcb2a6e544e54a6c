"""The canary sweep (clones, a re-clone, a captured source, drops): the sandbox passwords the
reconciler sends, and the administrators' passwords, appear in no agent log, event, SSE byte,
operation summary, observation, workspace file or process argv, and reach the servers only as
hashes (PostgreSQL's statement log, the Redis ACL file and MONITOR, RabbitMQ's logs)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx

from sdp_testbed.dataservers import DataServers
from sdp_testbed.waiting import wait_for
from tests.support.agents import AgentProcess
from tests.support.data import (
    capture_db,
    drop_cache,
    drop_db,
    drop_queue,
    drop_source,
    ensure_cache,
    ensure_db,
    ensure_queue,
    new_password,
    reclone_db,
    redis_admin,
)


def forms(values: list[str]) -> list[bytes]:
    out: set[bytes] = set()
    for value in values:
        out |= {value.encode(), quote(value, safe="").encode(),
                base64.b64encode(value.encode())}
    return sorted(out)


class Sweep:
    """Every form of every needle, looked for in blobs; argv sampled in a thread."""

    def __init__(self, needles: list[str]) -> None:
        self.forms = forms(needles)
        self.argv_hits: list[bytes] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def hits(self, blob: bytes) -> list[bytes]:
        return [form for form in self.forms if form in blob]

    def _sample(self) -> None:
        while not self._stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    found = self.hits(cmdline.read_bytes())
                except OSError:
                    continue
                self.argv_hits += found
            self.samples += 1

    def __enter__(self) -> Sweep:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tail_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read()


def test_generated_and_admin_passwords_appear_nowhere(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
) -> None:
    agent = make_infra_agent()
    client = agent.client()
    sandbox_passwords = [new_password("Db"), new_password("Cache"), new_password("Queue")]
    admins = [data_servers.postgresql.admin_password, data_servers.redis.admin_password,
              data_servers.rabbitmq.admin_password]
    pg_log, pg_offset = data_servers.postgresql.log, data_servers.postgresql.log.stat().st_size
    rabbit_logs = {p: p.stat().st_size for p in data_servers.rabbitmq.log.glob("*.log")}

    monitored: list[str] = []
    monitor_client = redis_admin(data_servers, socket_timeout=None)
    monitor = monitor_client.monitor().__enter__()  # MONITOR is on once this returns

    def watch() -> None:
        try:
            for command in monitor.listen():
                monitored.append(str(command))
        except Exception as e:  # the connection is closed at the end of the test
            monitored.append(f"ended: {e!r}")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    db, cache, queue = sandbox_passwords
    raw_sse = bytearray()
    with Sweep(sandbox_passwords + admins) as sweep:
        steps = [ensure_db("S1", db), ensure_db("S2", db, source="qa-dump"),
                 reclone_db("S1", db, source="qa-dump"), capture_db("S2", "canary-src"),
                 ensure_db("S4", db, source="canary-src"), ensure_cache("S1", cache),
                 ensure_queue("S1", queue), ensure_db("S3", db, source="missing"),
                 drop_db("S1"), drop_db("S2"), drop_db("S4"),
                 drop_source("canary-src", sandbox="S2"), drop_cache("S1"), drop_queue("S1")]
        lease = client.acquire_lease("canary", 300)
        operation = client.apply(lease_id=lease.id, steps=steps, requested_by="canary",
                                 credentials=None)
        with httpx.stream("GET", f"{agent.url}/v1/operations/{operation}/events",
                          headers={"Authorization": f"Bearer {agent.token}"},
                          timeout=300) as response:
            for line in response.iter_lines():
                raw_sse.extend(line.encode() + b"\n")
                if line == "event: end":
                    break
        client.release_lease(lease.id)
    # MONITOR's lines may still be in flight: wait for the drop's registry HDEL to arrive.
    wait_for(lambda: True if any("HDEL" in line for line in monitored) else None,
             what="Redis MONITOR to show the steps' commands", timeout=30)
    monitor.connection.disconnect()
    watcher.join(timeout=10)
    monitor_client.close()
    summaries = b"".join(o.model_dump_json().encode() for o in client.operations())
    observation = client.observe().model_dump_json().encode()
    agent.stop()

    results = [r for o in client_operations(summaries) for r in o]
    assert results.count(True) == 13 and results.count(False) == 1, summaries[:2000]
    assert sweep.samples > 5
    assert sweep.argv_hits == []
    assert sweep.hits(bytes(raw_sse)) == []
    assert sweep.hits(summaries) == []
    assert sweep.hits(observation) == []
    assert sweep.hits(agent.log_path.read_bytes()) == []
    for file in agent.workspace.rglob("*"):
        if file.is_file() and not file.is_symlink():
            assert sweep.hits(file.read_bytes()) == [], file
    server_log = tail_from(pg_log, pg_offset)
    assert b"SCRAM-SHA-256$" in server_log  # the server saw the verifier...
    assert sweep.hits(server_log) == []  # ...and never a password
    acl_file = data_servers.root / "redis" / "users.acl"
    assert sweep.hits(acl_file.read_bytes()) == []
    assert any("HSET" in line.upper() for line in monitored), monitored[:5]
    assert sweep.hits("\n".join(monitored).encode()) == []
    for path, offset in rabbit_logs.items():
        assert sweep.hits(tail_from(path, offset)) == [], path


def client_operations(summaries: bytes) -> list[list[bool]]:
    import json

    decoder, text, out, index = json.JSONDecoder(), summaries.decode(), [], 0
    while index < len(text):
        item, index = decoder.raw_decode(text, index)
        out.append([r["ok"] for r in item["results"]])
    return out
