"""The one-machine demo: a git server with the example repositories, OCP stand-ins, two agents.

``python -m sdp_testbed.demo up`` (what ``scripts/demo`` runs after setup) makes
``.sdp-demo/``, generates the demo's secrets once (``.sdp-demo/secrets.env``, mode 0600: the
demo's own stand-in for a CI secret store), fills bare repositories for the seed's services
(account, payment, user) and gateway (erangel), and starts, each in the background with a pid
file: the fixtures process (git server on 127.0.0.1:3460 and OCP stand-ins on 3461-3463) and
the MICRO and GATEWAY agents on 127.0.0.1:3453 and :3454, as ``state/nodes.yaml`` expects.
``down`` stops them by pid and removes the demo's containers and networks by label, and the
port isolation rules its MICRO agent wrote (tagged with the demo's installation).
``up --with-data`` adds the INFRA part (``demodata.py``): the agent ``infra-1`` on :3455 over
the data servers of ``.ci/start-data-servers``, a QA template database and the account branch
that reads it. Everything listens on this machine; nothing reaches a company host.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import docker

from sdp_node.isolation import remove_installation
from sdp_testbed import demodata
from sdp_testbed.erangel import gateway_files
from sdp_testbed.gitserver import PASSWORD_ENV, USERNAME_ENV, GitServer
from sdp_testbed.go_service import go_service_files
from sdp_testbed.images import IMAGE_TAGS
from sdp_testbed.ocp import OcpStandIn
from sdp_testbed.repos import branch_head, commit_files, init_bare
from sdp_testbed.waiting import wait_for_http

ROOT = Path(".sdp-demo")
GIT_PORT = 3460
OCP_PORTS = {"account": 3461, "payment": 3462, "user": 3463}
AGENTS = {"micro-1": ("MICRO", 3453), "gateway-1": ("GATEWAY", 3454)}
INSTALLATION = "demo"
SERVICE_BRANCHES = {
    "account": {"main": "account main", "feature/login-error": "account feature/login-error",
                "feature/account": "account feature/account"},
    "payment": {"main": "payment main"},
    "user": {"main": "user main"},
}


def _secrets(root: Path) -> dict[str, str]:
    """The demo's secrets, made once; a value a newer demo needs is added to an older file."""
    path = root / "secrets.env"
    wanted: dict[str, Callable[[], str]] = {
        "SDP_SPEC_HASH_KEY": lambda: secrets.token_hex(32),
        "SDP_MICRO_TOKEN": lambda: secrets.token_hex(24),
        "SDP_GATEWAY_TOKEN": lambda: secrets.token_hex(24),
        "SDP_INFRA_TOKEN": lambda: secrets.token_hex(24),
        "SDP_SECRET_QA_JWT": lambda: secrets.token_hex(16),
        "SDP_GIT_USERNAME": lambda: "demo-developer",
        "SDP_GIT_PASSWORD": lambda: secrets.token_urlsafe(18),
    }
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    missing = {k: make() for k, make in wanted.items() if k not in values}
    if missing:
        with path.open("a") as handle:
            handle.writelines(f"{k}={v}\n" for k, v in missing.items())
        values.update(missing)
    return values


def _token_env(node_type: str) -> str:
    return {"MICRO": "SDP_MICRO_TOKEN", "GATEWAY": "SDP_GATEWAY_TOKEN",
            "INFRA": "SDP_INFRA_TOKEN"}[node_type]


def _agents(with_data: bool) -> dict[str, tuple[str, int]]:
    if not with_data:
        return dict(AGENTS)
    return {**AGENTS, demodata.INFRA_NODE: ("INFRA", demodata.INFRA_PORT)}


def _host_config(root: Path, with_data: bool = False) -> Path:
    """The demo reconciler host's reconciler.yaml: agents pinned, tokens and key by reference."""
    path = root / "reconciler.yaml"
    path.write_text(json.dumps({
        "installation": INSTALLATION,
        "spec_hash_key": {"env": "SDP_SPEC_HASH_KEY"},
        "agents": {
            name: {"url": f"http://127.0.0.1:{port}", "token": {"env": _token_env(kind)}}
            for name, (kind, port) in _agents(with_data).items()
        },
        "secrets": {"env_prefix": "SDP_SECRET_"},
    }, indent=1) + "\n")
    return path


def _fill_repositories(git_root: Path) -> None:
    git_root.mkdir(parents=True, exist_ok=True)
    for service, branches in SERVICE_BRANCHES.items():
        path = git_root / f"{service}.git"
        if not path.exists():
            init_bare(path)
        for branch, revision in branches.items():
            if branch_head(path, branch) is None:
                commit_files(path, branch=branch, base="main" if branch != "main" else None,
                             files=go_service_files(service=service, revision=revision),
                             message=f"{service}: {revision}")
    gateway = git_root / "erangel.git"
    if not gateway.exists():
        init_bare(gateway)
    if branch_head(gateway, "develop") is None:
        urls = {s: f"http://host.docker.internal:{p}" for s, p in OCP_PORTS.items()}
        commit_files(gateway, branch="develop", message="erangel develop",
                     files=gateway_files(revision="erangel develop", ocp_urls=urls))


def _node_config(name: str, node_type: str, port: int, git_base: str,
                 data: dict[str, object] | None = None) -> dict[str, object]:
    token_env = _token_env(node_type)
    extra: dict[str, object] = {}
    if node_type == "INFRA":
        repositories: list[dict[str, object]] = []
        extra = {"data": data}
    elif node_type == "MICRO":
        repositories = [
            {"name": s, "url": f"{git_base}/{s}.git", "kind": "go", "image": IMAGE_TAGS["micro"]}
            for s in SERVICE_BRANCHES
        ]
    else:
        repositories = [{
            "name": "erangel", "url": f"{git_base}/erangel.git", "kind": "php",
            "image": IMAGE_TAGS["php-apache"], "health_path": "/erangel/healthz",
            "mount_target": "/var/www/html/erangel-ocean",
        }]
    return {
        "name": name, "type": node_type, "installation": INSTALLATION,
        "listen": f"127.0.0.1:{port}", "token": {"env": token_env},
        "workspace": str((ROOT / name / "workspace").resolve()),
        "subnet_range": "10.232.0.0/16", "repositories": repositories, **extra,
    }


def _running(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _start(name: str, command: list[str], env: dict[str, str]) -> None:
    pid_file = ROOT / f"{name}.pid"
    if _running(pid_file):
        return
    log = (ROOT / f"{name}.log").open("ab")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(f"{process.pid}\n")


def up(with_data: bool = False) -> int:
    ROOT.mkdir(exist_ok=True)
    values = _secrets(ROOT)
    _host_config(ROOT, with_data)
    env = {**os.environ, **values,
           USERNAME_ENV: values["SDP_GIT_USERNAME"], PASSWORD_ENV: values["SDP_GIT_PASSWORD"]}
    _fill_repositories(ROOT / "git")
    data = None
    if with_data:
        data = demodata.node_data(demodata.prepare())
        demodata.fill_repository(ROOT / "git")
    python = sys.executable
    _start("fixtures", [python, "-m", "sdp_testbed.demo", "fixtures"], env)
    wait_for_http(f"http://127.0.0.1:{OCP_PORTS['payment']}/", timeout=30,
                  what="the demo's OCP stand-ins")
    git_base = f"http://127.0.0.1:{GIT_PORT}"
    for name, (node_type, port) in _agents(with_data).items():
        folder = ROOT / name
        folder.mkdir(exist_ok=True)
        config = folder / "node.yaml"
        config.write_text(json.dumps(_node_config(name, node_type, port, git_base, data),
                                     indent=1))
        node = str(Path(python).parent / "sdp-node")
        _start(name, [node, "--config", str(config)], env)
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30, what=f"agent {name}")
    ports = " and :".join(str(p) for _t, p in _agents(with_data).values())
    print(f"demo: git server {git_base}, agents on 127.0.0.1:{ports} (logs in {ROOT}/)")
    return 0


def fixtures() -> int:
    """Serve the git repositories and the OCP stand-ins until SIGTERM."""
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = GitServer(ROOT / "git", username=os.environ[USERNAME_ENV],
                       password=os.environ[PASSWORD_ENV], port=GIT_PORT)
    stand_ins = [OcpStandIn(f"ocp-{name}", port=port) for name, port in OCP_PORTS.items()]
    server.start()
    for stand_in in stand_ins:
        stand_in.start()
    try:
        stopping.wait()
    finally:
        for stand_in in stand_ins:
            stand_in.stop()
        server.stop()
    return 0


def down() -> int:
    for pid_file in sorted(ROOT.glob("*.pid")):
        if _running(pid_file):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink(missing_ok=True)
    client = docker.from_env()
    label = f"sdp.instance={INSTALLATION}"
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": label}):
        network.remove()
    remove_installation(INSTALLATION)
    demodata.drop_demo_data(INSTALLATION)
    print("demo: stopped the fixtures and agents; removed the demo's containers, networks, "
          "port isolation rules and databases")
    return 0


def env_lines() -> int:
    """Print the demo's environment as shell exports (for `eval`)."""
    for key, value in _secrets(ROOT).items():
        print(f"export {key}={value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdp_testbed.demo",
                                     description="Run SDP's one-machine demo fixtures.")
    parser.add_argument("command", choices=["up", "down", "fixtures", "env", "add-data"])
    parser.add_argument("--with-data", action="store_true",
                        help="up: also an INFRA agent, a QA template database and the branch "
                        "that reads it (docs/infra.md)")
    parser.add_argument("--state", type=Path, help="add-data: the demo's state copy")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.with_data)
    if args.command == "add-data":
        if args.state is None:
            parser.error("add-data needs --state DIR")
        return 0 if demodata.add_to_state(args.state) else 1
    return {"down": down, "fixtures": fixtures, "env": env_lines}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
