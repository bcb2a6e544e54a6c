"""Forwarded headers decide nothing unless the host names the proxy that sets them.

uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 by default; the page listens there, so
anyone on the host (or behind an unconfigured proxy) could give every failed login another
address and never meet the per-address throttle. A real uvicorn server, as ``watch`` runs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdp_reconciler.web import WebServer, WebSettings, create_app
from sdp_reconciler.web.login import LoginRefused
from tests.support.agents import free_port

SETTINGS = WebSettings(login_failures_per_user=100, login_failures_per_address=3)


def refuse(username: str, password: str) -> None:
    raise LoginRefused("LOGIN FAILED")


def page(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    app = create_app(state_dir=tmp_path / "state", history_path=tmp_path / "history.sqlite",
                     env=env, settings=SETTINGS, login=refuse)
    server = WebServer(app, f"127.0.0.1:{free_port()}")
    server.start()
    try:
        yield f"http://{server.listen}"
    finally:
        server.stop()


def attempt(url: str, number: int, forwarded: str) -> int:
    answer = httpx.post(f"{url}/login", data={"username": f"guess-{number}", "password": "x"},
                        headers={"X-Forwarded-For": forwarded, "Origin": url}, timeout=10)
    return answer.status_code


@pytest.fixture
def untrusting(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "reconciler.yaml"
    config.write_text(json.dumps({"installation": "demo", "spec_hash_key": {"env": "K"},
                                  "agents": {}}))
    yield from page(tmp_path, env={"SDP_RECONCILER_CONFIG": str(config)})


@pytest.fixture
def trusting(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "reconciler.yaml"
    config.write_text(json.dumps({"installation": "demo", "spec_hash_key": {"env": "K"},
                                  "agents": {}, "page": {"trusted_proxies": ["127.0.0.1"]}}))
    yield from page(tmp_path, env={"SDP_RECONCILER_CONFIG": str(config)})


def test_a_forged_forwarded_address_does_not_reset_the_throttle(untrusting: str) -> None:
    codes = [attempt(untrusting, n, forwarded=f"10.0.0.{n}") for n in range(4)]
    assert codes == [403, 403, 403, 429]


def test_a_named_proxy_is_believed(trusting: str) -> None:
    codes = [attempt(trusting, n, forwarded="10.9.9.9") for n in range(4)]
    assert codes == [403, 403, 403, 429]
    assert attempt(trusting, 5, forwarded="10.8.8.8") == 403
