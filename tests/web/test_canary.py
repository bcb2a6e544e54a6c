"""The credentials canary: a viewer's password is checked and forgotten, never shown or kept.

``sdp-reconcile serve`` runs as a real subprocess over the deployed installation. A viewer
signs in with a wrong password, then the right one (the canary, full of characters that break
quoting), opens every page and the event stream, and signs out. Neither password, in any
encoding tools tend to print, may appear in a response (body, headers, cookies), in the
server's or the gateway agent's log, or in the history database.
"""

from __future__ import annotations

import base64
import re
import sqlite3
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx

from tests.conftest import CANARY_PASSWORD, CANARY_USER
from tests.web.conftest import Deployed

WRONG_PASSWORD = "Wr0ng:$canary%^é/@second"


def forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret),
            base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"{CANARY_USER}:{secret}".encode()).decode()}


OWN: list[str] = []
"""SDP's own secrets of the stack under test (agent tokens, the spec-hash key): set below."""


def leaks(blob: bytes | str) -> list[str]:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    found = sorted(f for s in (CANARY_PASSWORD, WRONG_PASSWORD) for f in forms(s) if f in text)
    return found + sorted(f"own secret {i}" for i, own in enumerate(OWN) if own in text)


def test_the_login_password_is_never_shown_logged_stored_or_put_in_a_cookie(
        deployed: Deployed, tmp_path: Path) -> None:
    stack = deployed.stack
    OWN[:] = [stack.micro.token, stack.gateway.token, stack.env["SDP_SPEC_HASH_KEY"]]
    log = tmp_path / "serve.log"
    agent_log_start = stack.gateway.log_path.stat().st_size
    process, url = stack.start_serve(log=log)
    seen: list[httpx.Response] = []
    try:
        with httpx.Client(base_url=url, timeout=30, follow_redirects=False,
                          event_hooks={"response": [seen.append]}) as browser:
            refused = browser.post("/login", data={"username": CANARY_USER,
                                                   "password": WRONG_PASSWORD})
            assert refused.status_code == 403
            signed_in = browser.post("/login", data={"username": CANARY_USER,
                                                     "password": CANARY_PASSWORD, "next": "/"})
            assert signed_in.status_code == 303
            overview = browser.get("/")
            assert overview.status_code == 200 and deployed.ok in overview.text
            history = browser.get("/history").text
            deployment = re.search(r'href="(/deployments/\d+)"', history)
            assert deployment is not None
            for path in (f"/sandboxes/{deployed.ok}", f"/sandboxes/{deployed.broken}",
                         deployment.group(1), "/audit", "/templates", "/environments",
                         "/nodes", "/fragments/overview", f"/fragments/sandboxes/{deployed.ok}",
                         "/healthz", "/login"):
                assert browser.get(path).status_code == 200, path
            with browser.stream("GET", "/events?after=0") as stream:
                lines = []
                for line in stream.iter_lines():
                    lines.append(line)
                    if len(lines) > 60:
                        break
                assert any(line.startswith("id:") for line in lines)
                assert not leaks("\n".join(lines))
            assert browser.post("/logout").status_code == 303
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert process.returncode in (0, -15)
    assert len(seen) > 15
    for response in seen:
        if not response.is_stream_consumed:
            assert not leaks(response.read()), response.url
        assert not leaks(str(response.headers.raw)), response.url
    assert "status page on" in log.read_text()
    assert not leaks(log.read_bytes())
    with stack.gateway.log_path.open("rb") as agent_log:
        agent_log.seek(agent_log_start)
        assert not leaks(agent_log.read())
    for path in stack.history.parent.glob(stack.history.name + "*"):
        assert not leaks(path.read_bytes()), path
    with sqlite3.connect(stack.history) as db:
        assert not leaks("\n".join(db.iterdump()))
