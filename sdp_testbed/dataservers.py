"""Real PostgreSQL 15, Redis 7 and RabbitMQ 3.10 servers for tests, benchmarks and CI.

``python -m sdp_testbed.dataservers start`` (what ``.ci/start-data-servers`` runs) starts the
Debian packages' servers as daemons under a directory of their own (default
``/var/lib/sdp-ci-data``, or ``$SDP_DATA_SERVERS_DIR``): no systemd, nothing of Debian's
default clusters or ports is used or touched. Promises:

* they listen on 127.0.0.1 and on the Docker bridge's address (so containers reach them
  through ``host.docker.internal``), on ports clear of the demo, the tests' port lanes and the
  packages' defaults: PostgreSQL 17432, Redis 17379, RabbitMQ AMQP 17672 and management 17673;
* each has an administrator whose generated password is in a ``0600`` file under
  ``secrets/`` and reaches a server only as a hash (a SCRAM verifier, ``#sha256``, a salted
  ``password_hash``) and a process only through its environment, never argv;
* PostgreSQL logs every statement (``log_statement=all``) so tests can sweep its log for
  passwords; its administrator ``sdp_admin`` is not a superuser (``CREATEDB CREATEROLE``);
* starting is idempotent and serialised by a lock file: a server that answers is left alone,
  so two test runs (and CI) share one set of servers. RabbitMQ boots in ~10 s; ``start``
  returns without waiting for it unless ``--wait`` (tests wait with ``wait_ready``);
* ``stop`` ends them by the pids they wrote, never by name.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from msgspec import Struct

from sdp_node.data.hashing import rabbitmq_hash, redis_acl_hash, scram_sha256
from sdp_testbed.waiting import wait_for

ROOT_ENV = "SDP_DATA_SERVERS_DIR"
DEFAULT_ROOT = Path("/var/lib/sdp-ci-data")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
POSTGRES_PORT, REDIS_PORT, AMQP_PORT, MANAGEMENT_PORT = 17432, 17379, 17672, 17673
RABBITMQ_DIST_PORT, EPMD_PORT = 17674, 17675
PG_ADMIN, REDIS_ADMIN, RABBITMQ_ADMIN = "sdp_admin", "sdp-admin", "sdp-admin"
INSTALL_HINT = "apt-get install -y postgresql redis-server rabbitmq-server (bash scripts/setup)"


class Server(Struct, frozen=True):
    """How tests reach one server as its administrator."""

    host: str
    port: int
    admin_user: str
    admin_password_file: Path
    log: Path

    @property
    def admin_password(self) -> str:
        return self.admin_password_file.read_text().strip()


class DataServers(Struct, frozen=True):
    root: Path
    postgresql: Server
    redis: Server
    rabbitmq: Server
    management_url: str
    bridge_address: str | None

    @classmethod
    def at(cls, root: Path | None = None) -> DataServers:
        root = root or Path(os.environ.get(ROOT_ENV, str(DEFAULT_ROOT)))
        secret = root / "secrets"
        bridge = _bridge_address()
        return cls(
            root=root,
            postgresql=Server("127.0.0.1", POSTGRES_PORT, PG_ADMIN, secret / "postgresql-admin",
                              root / "postgresql" / "server.log"),
            redis=Server("127.0.0.1", REDIS_PORT, REDIS_ADMIN, secret / "redis-admin",
                         root / "redis" / "redis.log"),
            rabbitmq=Server("127.0.0.1", AMQP_PORT, RABBITMQ_ADMIN, secret / "rabbitmq-admin",
                            root / "rabbitmq" / "log"),
            management_url=f"http://127.0.0.1:{MANAGEMENT_PORT}",
            bridge_address=bridge,
        )

    # -- readiness -------------------------------------------------------------------------------

    def postgresql_ready(self) -> bool:
        try:
            with psycopg.connect(host="127.0.0.1", port=POSTGRES_PORT, user=PG_ADMIN,
                                 password=self.postgresql.admin_password, dbname="postgres",
                                 connect_timeout=2) as connection:
                connection.execute("SELECT 1")
            return True
        except (psycopg.Error, OSError):
            return False

    def redis_ready(self) -> bool:
        try:
            client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, username=REDIS_ADMIN,
                                 password=self.redis.admin_password, socket_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False

    def rabbitmq_ready(self) -> bool:
        try:
            answer = httpx.get(f"{self.management_url}/api/overview", timeout=2,
                               auth=(RABBITMQ_ADMIN, self.rabbitmq.admin_password),
                               trust_env=False)
        except (httpx.HTTPError, OSError):
            return False
        return answer.status_code == 200

    def wait_ready(self, timeout: float = 180) -> DataServers:
        """Wait (bounded) until all three answer; RabbitMQ is the slow one."""
        probes: list[tuple[str, Callable[[], bool]]] = [
            ("PostgreSQL", self.postgresql_ready), ("Redis", self.redis_ready),
            ("RabbitMQ", self.rabbitmq_ready)]
        for what, probe in probes:
            wait_for(_answers(probe), what=f"{what} on 127.0.0.1 (started by bash "
                     f".ci/start-data-servers; log under {self.root})",
                     timeout=timeout, interval=0.25)
        return self


def _answers(probe: Callable[[], bool]) -> Callable[[], bool | None]:
    return lambda: True if probe() else None


# -- starting -------------------------------------------------------------------------------------


def _bridge_address() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True,
                             text=True, timeout=5, check=False).stdout.split()
        if "inet" in out:
            return out[out.index("inet") + 1].split("/")[0]
    return None


def _secret(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def _chown(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for child in path.rglob("*"):
        shutil.chown(child, user, user)


def _as(user: str, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *command], text=True, check=True,
                          capture_output=True, **kwargs)


def _need(path: Path) -> None:
    if not path.exists():
        raise SystemExit(f"dataservers: {path} is missing: {INSTALL_HINT}")


def start_postgresql(servers: DataServers) -> None:
    if servers.postgresql_ready():
        return
    _need(PG_BIN / "initdb")
    base = servers.root / "postgresql"
    data, run = base / "data", base / "run"
    password = _secret(servers.postgresql.admin_password_file)
    base.mkdir(parents=True, exist_ok=True)
    run.mkdir(exist_ok=True)
    if not (data / "PG_VERSION").exists():
        data.mkdir(exist_ok=True)
        _chown(base, "postgres")
        _as("postgres", [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-E",
                         "UTF8", "--locale=C", "--auth-local=peer",
                         "--auth-host=scram-sha-256"])
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("# Docker's networks: sandbox containers reach the server through the "
                      "bridge\nhost all all 10.0.0.0/8 scram-sha-256\n"
                      "host all all 172.16.0.0/12 scram-sha-256\n")
    _chown(base, "postgres")
    listen = ",".join(a for a in ("127.0.0.1", servers.bridge_address) if a)
    options = (f"-c port={POSTGRES_PORT} -c listen_addresses='{listen}' "
               f"-c unix_socket_directories='{run}' -c log_statement=all "
               "-c max_connections=200 -c log_line_prefix='%m [%p] %u@%d '")
    _as("postgres", [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(servers.postgresql.log),
                     "-w", "-t", "60", "-o", options, "start"], stdin=subprocess.DEVNULL)
    verifier = scram_sha256(password)
    # psql quotes the verifier (:'verifier'); the statement log shows it, never the password.
    script = "\n".join([
        f"\\set verifier {verifier}",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sdp_admin') "
        "THEN CREATE ROLE sdp_admin LOGIN CREATEDB CREATEROLE; END IF; END $$;",
        "ALTER ROLE sdp_admin LOGIN CREATEDB CREATEROLE PASSWORD :'verifier';", "",
    ])
    _as("postgres", [str(PG_BIN / "psql"), "-h", str(run), "-p", str(POSTGRES_PORT), "-d",
                     "postgres", "-v", "ON_ERROR_STOP=1", "-q"], input=script)


def start_redis(servers: DataServers) -> None:
    if servers.redis_ready():
        return
    _need(Path("/usr/bin/redis-server"))
    base = servers.root / "redis"
    base.mkdir(parents=True, exist_ok=True)
    password = _secret(servers.redis.admin_password_file)
    acl = base / "users.acl"
    if not acl.exists():
        acl.write_text(f"user default off\nuser {REDIS_ADMIN} on {redis_acl_hash(password)} "
                       "~* &* +@all\n")
    binds = " ".join(a for a in ("127.0.0.1", servers.bridge_address) if a)
    (base / "redis.conf").write_text(
        f"port {REDIS_PORT}\nbind {binds}\ndaemonize yes\npidfile {base / 'redis.pid'}\n"
        f"logfile {servers.redis.log}\ndir {base}\naclfile {acl}\nsave 60 1\n"
    )
    _chown(base, "redis")
    _as("redis", ["/usr/bin/redis-server", str(base / "redis.conf")], stdin=subprocess.DEVNULL)
    wait_for(lambda: True if servers.redis_ready() else None, what="Redis", timeout=30)


def start_rabbitmq(servers: DataServers) -> None:
    """Start the broker in the background; it answers ~10 s later (``wait_ready``)."""
    base = servers.root / "rabbitmq"
    pid_file = base / "rabbitmq.pid"
    if servers.rabbitmq_ready() or _alive(pid_file):
        return
    _need(RABBITMQ_SERVER)
    password = _secret(servers.rabbitmq.admin_password_file)
    (base / "mnesia").mkdir(parents=True, exist_ok=True)
    (base / "log").mkdir(exist_ok=True)
    definitions = {
        "users": [{"name": RABBITMQ_ADMIN, "password_hash": rabbitmq_hash(password),
                   "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": ["administrator"]}],
        "vhosts": [{"name": "/"}],
        "permissions": [{"user": RABBITMQ_ADMIN, "vhost": "/", "configure": ".*",
                         "write": ".*", "read": ".*"}],
    }
    (base / "definitions.json").write_text(json.dumps(definitions))
    listeners = [f"listeners.tcp.{i} = {a}:{AMQP_PORT}" for i, a in enumerate(
        [a for a in ("127.0.0.1", servers.bridge_address) if a], start=1)]
    (base / "rabbitmq.conf").write_text("\n".join([
        *listeners, f"management.tcp.port = {MANAGEMENT_PORT}", "management.tcp.ip = 127.0.0.1",
        f"load_definitions = {base / 'definitions.json'}", "",
    ]))
    (base / "enabled_plugins").write_text("[rabbitmq_management].\n")
    _chown(base, "rabbitmq")
    env = {
        **os.environ, "RABBITMQ_NODENAME": "sdp-ci@localhost",
        "RABBITMQ_DIST_PORT": str(RABBITMQ_DIST_PORT), "ERL_EPMD_PORT": str(EPMD_PORT),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(pid_file),
        # Erlang's distribution port and epmd on loopback only (nothing clusters here).
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    with (base / "startup.log").open("ab") as log:
        process = subprocess.Popen(
            ["runuser", "-u", "rabbitmq", "--", str(RABBITMQ_SERVER)], env=env, cwd=base,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (base / "session.pid").write_text(str(process.pid))


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_started(root: Path | None = None, *, wait: bool = True) -> DataServers:
    """Start whichever server does not answer (under the lock), then wait if asked."""
    servers = DataServers.at(root)
    with _locked(servers.root):
        start_postgresql(servers)
        start_redis(servers)
        start_rabbitmq(servers)
    return servers.wait_ready() if wait else servers


def stop(root: Path | None = None) -> None:
    """Stop the three servers by the pids they recorded (a developer's clean-up)."""
    servers = DataServers.at(root)
    data = servers.root / "postgresql" / "data"
    if (data / "postmaster.pid").exists():
        _as("postgres", [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"])
    for pid_file in (servers.root / "redis" / "redis.pid",
                     servers.root / "rabbitmq" / "rabbitmq.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    # The broker's epmd daemonises out of its session: ask the one on SDP's port to stop.
    if _alive(servers.root / "rabbitmq" / "session.pid"):
        wait_for(lambda: None if _alive(servers.root / "rabbitmq" / "session.pid") else True,
                 what="RabbitMQ to stop", timeout=60, interval=0.2)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["epmd", "-kill"], env={**os.environ, "ERL_EPMD_PORT": str(EPMD_PORT)},
                       capture_output=True, timeout=10, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdp_testbed.dataservers",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("command", choices=["start", "wait", "stop", "status"])
    parser.add_argument("--wait", action="store_true", help="start: wait for all three")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.command == "start":
        servers = ensure_started(wait=args.wait)
    elif args.command == "wait":
        servers = DataServers.at().wait_ready()
    elif args.command == "stop":
        stop()
        return 0
    else:
        servers = DataServers.at()
    for name, probe in (("postgresql", servers.postgresql_ready), ("redis", servers.redis_ready),
                        ("rabbitmq", servers.rabbitmq_ready)):
        print(f"{name}: {'answers' if probe() else 'not answering (yet)'}")
    print(f"dataservers: {args.command} done in {time.monotonic() - started:.1f} s "
          f"(under {servers.root})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
