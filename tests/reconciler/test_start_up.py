"""What ``sdp-reconcile once`` pays before its pass starts stays paid for once (issue 15).

No timing here (bench/bench_once_overhead.py measures): these pin the structural gains that
would regress silently. A fresh interpreter that imports what ``once`` imports loads neither
the web page's stack, nor the mail stack, nor httpx's command line; and the command line
freezes its start-up objects out of the cyclic collector, which it leaves enabled.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What a no-op pass never uses: each loads only where it is needed.
NOT_ON_THE_ONCE_PATH = (
    "smtplib",  # apply.mailer, when a pass sends mail
    "sdp_reconciler.apply.mailer",
    "click",  # httpx's command line (httpx._main), never called
    "pygments",
    "rich",
    "starlette",  # the page (sdp-reconcile serve)
    "uvicorn",
    "sse_starlette",
    "jinja2",
    "sdp_reconciler.web",
    "watchfiles",  # watch
    "docker",  # the agents' side
    "psycopg",
    "redis",
    "sdp_reconciler.access.gitrange",  # only with access.yaml
    "sdp_reconciler.access.signatures",
    "sdp_reconciler.apply.statesync",  # watch --remote
    "httpx",  # the agents are reached over observe.agenthttp; httpx is for webhooks and
    "httpcore",  # the page's and RabbitMQ's own clients
    "anyio",
    "importlib.metadata",  # pydantic's plugin scan (sdp_node/pydanticplugins.py)
    "dulwich",  # state.gitinfo: for authors; the revision reads the refs files alone
)


def fresh(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter of this checkout; it prints one JSON value."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_once_path_imports_nothing_a_no_op_pass_does_not_use() -> None:
    loaded = fresh(
        "import json, sys\n"
        "import sdp_reconciler.cli.main, sdp_reconciler.cli.commands\n"
        "import sdp_reconciler.apply.reconcile\n"
        f"print(json.dumps({{'loaded': [m for m in {list(NOT_ON_THE_ONCE_PATH)!r} "
        "if m in sys.modules]}))\n"
    )
    assert loaded == {"loaded": []}


def test_httpx_still_works_without_its_command_line() -> None:
    result = fresh(
        "import json, sys\n"
        "import sdp_reconciler.observe.node_client\n"
        "import httpx\n"
        "response = httpx.Client(transport=httpx.MockTransport(\n"
        "    lambda request: httpx.Response(200, json={'ok': True}))).get('http://x/')\n"
        "print(json.dumps({'cli': sys.modules.get('httpx._main', 'absent') is None,\n"
        "                  'answer': response.json()}))\n"
    )
    assert result == {"cli": True, "answer": {"ok": True}}


def test_the_command_line_freezes_its_start_up_and_keeps_collecting(tmp_path: Path) -> None:
    # status, like once, is a command whose module (cli.commands) loads only when it runs.
    history = tmp_path / "missing.sqlite"
    result = fresh(
        "import gc, json\n"
        "from sdp_reconciler.cli.main import main\n"
        f"code = main(['status', '--history', {str(history)!r}])\n"
        "import sdp_reconciler.cli.commands as commands\n"
        "tracked = {id(o) for o in gc.get_objects()}\n"
        "print(json.dumps({'code': code, 'enabled': gc.isenabled(),\n"
        "                  'frozen': gc.get_freeze_count() > 0,\n"
        "                  'command frozen': id(commands.cmd_once) not in tracked}))\n"
    )
    assert result == {"code": 1, "enabled": True, "frozen": True, "command frozen": True}
