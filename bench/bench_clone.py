"""Issue 14: cloning a ~100 MB PostgreSQL database for a sandbox, through SDP's INFRA agent vs
by hand, in one run, on the real server that ``.ci/start-data-servers`` runs.

Variants, each making a fresh copy of the same source database (a table of 500 k rows with an
index, marked ``IS_TEMPLATE``) and timed from start to a copy that can be used:

* **sdp-template**: ``POST /v1/apply`` with one ``EnsureDatabase`` from the template source
  → the step's result on the SSE stream (role, ``CREATE DATABASE ... TEMPLATE`` with the
  agent's strategy, objects handed over, ``CONNECT`` revoked, marker, rename);
* **sdp-dump**: the same step from the dump source (``pg_restore --jobs 2`` of the ``-Fc``
  file made once before the rounds);
* **createdb -T**: ``createdb -T src new`` by hand (PostgreSQL 15's default strategy,
  ``wal_log``), and **createdb -T file_copy** (``--strategy=file_copy``, what SDP uses);
* **pg_dump | pg_restore**: ``createdb new`` then ``pg_dump -Fc src | pg_restore -d new``;
  and **pg_restore file**: ``createdb new`` then ``pg_restore --jobs=2 -d new`` of the same
  ``-Fc`` file SDP restores (the like-for-like baseline of sdp-dump, which skips the dump).

Copies are dropped between rounds, outside the clock; rounds alternate the order. Ratios:
SDP's template clone against the same copy by hand (its overhead) and against
``pg_dump | pg_restore`` (what cloning from a template saves); SDP's dump restore against
``pg_dump | pg_restore``.

    .venv/bin/python bench/bench_clone.py [--rounds 5] [--rows 500000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Bench,
    bench_run,
    interleaved,
    load_average,
    ratio,
    say,
    stats,
    table,
    write_results,
)
from psycopg import sql

from sdp_node.protocol import DropDatabase, EnsureDatabase, Secret
from sdp_reconciler.observe.node_client import NodeClient
from sdp_testbed.dataservers import PG_BIN, DataServers, ensure_started
from tests.support.data import (
    Snapshot,
    cleanup_installation,
    data_settings,
    dump_database,
    pg_admin,
)
from tests.support.names import NAMES
from tests.support.plans import run

VARIANTS = ["sdp-template", "createdb -T", "createdb -T file_copy", "sdp-dump",
            "pg_restore file", "pg_dump | pg_restore"]


def pg_env(servers: DataServers) -> dict[str, str]:
    server = servers.postgresql
    return {"PATH": os.environ["PATH"], "PGHOST": server.host, "PGPORT": str(server.port),
            "PGUSER": server.admin_user, "PGPASSWORD": server.admin_password}


def make_source(servers: DataServers, name: str, rows: int) -> int:
    with pg_admin(servers) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with pg_admin(servers, name) as connection:
        connection.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, email text, "
                           "profile text)")
        connection.execute("INSERT INTO accounts SELECT g, 'user' || g || '@qa.invalid', "
                           "md5(g::text) || md5((g * 7)::text) FROM generate_series(1, %s) g",
                           (rows,))
        connection.execute("CREATE INDEX ON accounts (email)")
        connection.execute("VACUUM ANALYZE accounts")
        size = connection.execute("SELECT pg_database_size(current_database())").fetchone()
    assert size is not None
    return int(size[0])


def drop(servers: DataServers, name: str) -> None:
    with pg_admin(servers) as admin:
        # Not WITH (FORCE): it fails on autovacuum for a non-superuser; a plain drop waits.
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def by_hand(command: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def through_sdp(client: NodeClient, *, sandbox: str, source: str) -> float:
    step = EnsureDatabase(step_id=uuid.uuid4().hex[:8], sandbox=sandbox, service="db",
                          database=NAMES.database(sandbox, "db"), source=source,
                          password=Secret("bench-" + uuid.uuid4().hex), spec_hash="bench")
    lease = client.acquire_lease("bench", 600)
    try:
        started = time.perf_counter()
        operation = client.apply(lease_id=lease.id, steps=[step], requested_by="bench",
                                 credentials=None)
        events = list(client.follow(operation))
        elapsed = time.perf_counter() - started
    finally:
        client.release_lease(lease.id)
    results = [e.result for e in events if e.result is not None]
    if not results or not results[-1].ok:
        raise RuntimeError(f"SDP's clone failed: {results[-1].message if results else events}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=500_000, help="~100 MB with the index")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    servers = ensure_started(wait=True)
    with bench_run("clone", keep=args.keep) as bench:
        return measure(bench, servers, args)


def measure(bench: Bench, servers: DataServers, args: argparse.Namespace) -> int:
    source = f"bench_{bench.id}_src"
    bench.defer("source database", lambda: _drop_template(servers, source))
    say(f"making the source database {source} ({args.rows} rows)")
    size = make_source(servers, source, args.rows)
    dump = bench.workdir / "source.dump"
    dump_database(servers, source, dump)
    with pg_admin(servers) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true ALLOW_CONNECTIONS false")
                      .format(sql.Identifier(source)))
    say(f"source: {size / 1e6:.0f} MB, dump {dump.stat().st_size / 1e6:.0f} MB")

    snapshot = Snapshot(template=source, dump=dump, row="")
    bench.defer("SDP's copies", lambda: cleanup_installation(servers, bench.installation,
                                                             ["infra-1"]))
    agent = bench.agent(name="infra-1", node_type="INFRA", repositories=[],
                        data=data_settings(servers, snapshot))
    client = agent.client()
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    loads: list[dict[str, Any]] = []
    for index in range(args.rounds):
        actions = _actions(client, servers, source=source, dump=dump, sandbox=f"B{index}",
                           target=f"bench_{bench.id}_copy")
        before = load_average()
        for variant in interleaved(index, VARIANTS):
            timed, cleanup = actions[variant]
            if variant == "pg_dump | pg_restore":  # pg_dump connects to the source
                _allow_connections(servers, source, True)
            try:
                seconds = timed()
            finally:
                _allow_connections(servers, source, False)
                cleanup()
            samples[variant].append(seconds)
            say(f"round {index + 1}: {variant:24} {seconds:7.3f} s")
        loads.append({"before": before, "after": load_average()})

    figures = {variant: stats(values) for variant, values in samples.items()}
    median = {variant: figures[variant]["median"] for variant in VARIANTS}
    ratios = {
        "sdp-template / createdb -T file_copy": ratio(median["sdp-template"],
                                                      median["createdb -T file_copy"]),
        "sdp-template / createdb -T": ratio(median["sdp-template"], median["createdb -T"]),
        "sdp-template / pg_dump | pg_restore": ratio(median["sdp-template"],
                                                     median["pg_dump | pg_restore"]),
        "sdp-dump / pg_dump | pg_restore": ratio(median["sdp-dump"],
                                                 median["pg_dump | pg_restore"]),
        "sdp-dump / pg_restore file": ratio(median["sdp-dump"], median["pg_restore file"]),
    }
    print(table(["variant", "median s", "min s", "max s"],
                [[v, figures[v]["median"], figures[v]["min"], figures[v]["max"]]
                 for v in VARIANTS]))
    print(table(["ratio", "value"], [[k, v] for k, v in ratios.items()]))
    path = write_results("clone", {"source_bytes": size, "dump_bytes": dump.stat().st_size,
                                   "rows": args.rows, "rounds": args.rounds,
                                   "figures": figures, "ratios": ratios, "load": loads})
    say(f"results: {path}")
    return 0


Action = tuple[Callable[[], float], Callable[[], None]]


def _actions(client: NodeClient, servers: DataServers, *, source: str, dump: Path,
             sandbox: str, target: str) -> dict[str, Action]:
    """Each variant's timed action and its clean-up (outside the clock)."""
    env = pg_env(servers)
    bin_dir = PG_BIN
    return {
        "sdp-template": (lambda: through_sdp(client, sandbox=sandbox + "T",
                                             source="qa-snapshot"),
                         lambda: _sdp_drop(client, sandbox + "T")),
        "sdp-dump": (lambda: through_sdp(client, sandbox=sandbox + "D", source="qa-dump"),
                     lambda: _sdp_drop(client, sandbox + "D")),
        "createdb -T": (lambda: by_hand(f"{bin_dir}/createdb -T {source} {target}", env),
                        lambda: drop(servers, target)),
        "createdb -T file_copy": (
            lambda: by_hand(f"{bin_dir}/createdb -T {source} --strategy=file_copy {target}",
                            env), lambda: drop(servers, target)),
        "pg_restore file": (
            lambda: by_hand(f"{bin_dir}/createdb {target} && {bin_dir}/pg_restore --no-owner "
                            f"--jobs=2 -d {target} {dump}", env),
            lambda: drop(servers, target)),
        "pg_dump | pg_restore": (
            lambda: by_hand(f"{bin_dir}/createdb {target} && {bin_dir}/pg_dump -Fc {source} | "
                            f"{bin_dir}/pg_restore --no-owner -d {target}", env),
            lambda: drop(servers, target)),
    }


def _allow_connections(servers: DataServers, source: str, allowed: bool) -> None:
    with pg_admin(servers) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(source), sql.SQL("true" if allowed else "false")))


def _drop_template(servers: DataServers, source: str) -> None:
    with pg_admin(servers) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(
            sql.Identifier(source)))
    drop(servers, source)


def _sdp_drop(client: NodeClient, sandbox: str) -> None:
    step = DropDatabase(step_id=uuid.uuid4().hex[:8], sandbox=sandbox, service="db",
                        database=NAMES.database(sandbox, "db"))
    outcome = run(client, [step], None)
    if not outcome.ok:
        raise RuntimeError(outcome.last().message)


if __name__ == "__main__":
    sys.exit(main())
