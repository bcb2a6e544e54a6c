"""Login, sessions and the guard: who may see the page, and for how long.

Logins are checked for real, by ls-remote through the gateway agent against the test git
server (the canary account); only the throttle and expiry tests use a clock or a check of
their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from msgspec.structs import replace
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from sdp_reconciler.history import History
from sdp_reconciler.web.guard import safe_next
from sdp_reconciler.web.sessions import COOKIE, SessionStore
from tests.conftest import CANARY_PASSWORD, CANARY_USER
from tests.support.agents import free_port
from tests.web.conftest import FAST, Deployed, sign_in

PUBLIC = {"/login", "/healthz"}


def protected_routes(app: Starlette) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if isinstance(route, Mount):
            continue
        assert isinstance(route, Route)
        path = route.path.replace("{name}", "SOME-SANDBOX").replace("{id:int}", "1")
        for method in sorted(route.methods or {"GET"}):
            if path not in PUBLIC and method != "HEAD":
                found.append((method, path))
    return found


def test_every_route_but_login_healthz_and_static_needs_a_session(
        make_app: Callable[..., Starlette]) -> None:
    app = make_app()
    routes = protected_routes(app)
    assert {p for _, p in routes} >= {"/", "/sandboxes/SOME-SANDBOX", "/history", "/audit",
                                      "/templates", "/environments", "/nodes", "/events",
                                      "/deployments/1", "/logout", "/fragments/overview"}
    with TestClient(app, follow_redirects=False) as anonymous:
        for method, path in routes:
            answer = anonymous.request(method, path, headers={"Accept": "text/html"})
            if method == "GET" and path != "/events" and not path.startswith("/fragments/"):
                assert answer.status_code == 303, (method, path)
                assert answer.headers["location"].startswith("/login?next=")
            else:
                assert answer.status_code == 401, (method, path)
        assert anonymous.get("/", headers={"Accept": "text/html"}).headers["location"] == \
            "/login?next=%2F"
        assert anonymous.get("/login").status_code == 200
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/static/page.js").status_code == 200
        forged = anonymous.get("/", headers={"Accept": "text/html",
                                             "Cookie": f"{COOKIE}=forged-token"})
        assert forged.status_code == 303


def test_login_with_the_bitbucket_account_starts_a_session(
        make_app: Callable[..., Starlette]) -> None:
    with TestClient(make_app(), follow_redirects=False) as browser:
        answer = browser.post("/login", data={"username": CANARY_USER,
                                              "password": CANARY_PASSWORD,
                                              "next": "/history?sandbox=X"})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/history?sandbox=X"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Max-Age=43200" in cookie and "Secure" not in cookie
        token = cookie.split(";")[0].split("=", 1)[1]
        assert len(token) >= 43
        page = browser.get("/")
        assert page.status_code == 200 and CANARY_USER in page.text


def test_a_password_beyond_latin1_signs_in_and_one_char_less_does_not(
        make_app: Callable[..., Starlette]) -> None:
    # The git server decodes Basic auth as UTF-8 (as Bitbucket does): this login passes only
    # when the gateway agent's ls-remote sends the password's UTF-8 bytes.
    assert "é" in CANARY_PASSWORD and "€" in CANARY_PASSWORD
    with TestClient(make_app(), follow_redirects=False) as browser:
        assert sign_in(browser).status_code == 303
    with TestClient(make_app(), follow_redirects=False) as browser:
        assert sign_in(browser, password=CANARY_PASSWORD.replace("€", "")).status_code == 403


def test_secure_cookies_over_https(make_app: Callable[..., Starlette]) -> None:
    with TestClient(make_app(), base_url="https://page.example",
                    follow_redirects=False) as browser:
        answer = sign_in(browser)
        assert answer.status_code == 303 and "Secure" in answer.headers["set-cookie"]


def test_a_wrong_password_is_login_failed_and_starts_nothing(
        make_app: Callable[..., Starlette]) -> None:
    with TestClient(make_app(), follow_redirects=False) as browser:
        answer = sign_in(browser, password="not-the-password")
        assert answer.status_code == 403
        assert "LOGIN FAILED" in answer.text
        assert "set-cookie" not in answer.headers
        assert "not-the-password" not in answer.text
        assert f'value="{CANARY_USER}"' in answer.text
        empty = browser.post("/login", data={"username": CANARY_USER, "password": ""})
        assert empty.status_code == 400


def test_each_login_gets_a_new_token_and_the_old_one_stops_working(
        make_app: Callable[..., Starlette]) -> None:
    with TestClient(make_app(), follow_redirects=False) as browser:
        sign_in(browser)
        first = browser.cookies[COOKIE]
        sign_in(browser)
        second = browser.cookies[COOKIE]
        assert first != second
        browser.cookies.clear()
        old = browser.get("/", headers={"Accept": "text/html", "Cookie": f"{COOKIE}={first}"})
        assert old.status_code == 303
        assert browser.get("/", headers={"Cookie": f"{COOKIE}={second}"}).status_code == 200


def test_a_token_planted_before_login_is_replaced(make_app: Callable[..., Starlette]) -> None:
    app = make_app()
    planted = app.state.context.sessions.create("someone-else")
    with TestClient(app, follow_redirects=False) as browser:
        answer = browser.post("/login", data={"username": CANARY_USER,
                                              "password": CANARY_PASSWORD},
                              headers={"Cookie": f"{COOKIE}={planted}"})
        assert answer.status_code == 303
        assert planted not in answer.headers["set-cookie"]
    assert app.state.context.sessions.get(planted) is None


def test_logout_ends_the_session(make_app: Callable[..., Starlette]) -> None:
    with TestClient(make_app(), follow_redirects=False) as browser:
        sign_in(browser)
        token = browser.cookies[COOKIE]
        answer = browser.post("/logout")
        assert answer.status_code == 303 and answer.headers["location"] == "/login"
        assert re.search(rf'{COOKIE}="?"?;', answer.headers["set-cookie"])
        browser.cookies.clear()
        again = browser.get("/", headers={"Accept": "text/html", "Cookie": f"{COOKIE}={token}"})
        assert again.status_code == 303


def test_sessions_last_twelve_hours(tmp_path: Path) -> None:
    now = [1000.0]
    store = SessionStore(History(tmp_path / "h.sqlite"), lifetime=12 * 3600,
                         clock=lambda: now[0])
    token = store.create("viewer")
    now[0] += 12 * 3600 - 1
    session = store.get(token)
    assert session is not None and session.username == "viewer"
    now[0] += 1
    assert store.get(token) is None
    assert len(store) == 0


def test_the_app_uses_a_twelve_hour_session(make_app: Callable[..., Starlette]) -> None:
    assert make_app().state.context.sessions.lifetime == 12 * 3600


def test_failed_logins_are_throttled_per_user(make_app: Callable[..., Starlette]) -> None:
    settings = replace(FAST, login_failures_per_user=3,
                       login_failures_per_address=100)
    app = make_app(settings=settings)
    with TestClient(app, follow_redirects=False, client=("10.1.1.1", 1000)) as one:
        for _ in range(3):
            assert sign_in(one, password="wrong").status_code == 403
        blocked = sign_in(one)
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
        assert "Too many failed logins" in blocked.text
    with TestClient(app, follow_redirects=False, client=("10.2.2.2", 1000)) as other:
        assert sign_in(other).status_code == 429, "the same user from another address"
        assert sign_in(other, username="another-user", password="wrong").status_code == 403


def test_failed_logins_are_throttled_per_address(make_app: Callable[..., Starlette]) -> None:
    settings = replace(FAST, login_failures_per_user=100,
                       login_failures_per_address=4)
    app = make_app(settings=settings)
    with TestClient(app, follow_redirects=False, client=("10.3.3.3", 1000)) as one:
        for number in range(4):
            assert sign_in(one, username=f"guess-{number}", password="x").status_code == 403
        assert sign_in(one).status_code == 429
    with TestClient(app, follow_redirects=False, client=("10.4.4.4", 1000)) as other:
        assert sign_in(other).status_code == 303


def test_logins_posted_from_another_site_are_refused(
        make_app: Callable[..., Starlette]) -> None:
    with TestClient(make_app(), follow_redirects=False) as browser:
        answer = browser.post("/login", data={"username": CANARY_USER,
                                              "password": CANARY_PASSWORD},
                              headers={"Origin": "http://evil.example"})
        assert answer.status_code == 403 and "set-cookie" not in answer.headers
        same = browser.post("/login", data={"username": CANARY_USER,
                                            "password": CANARY_PASSWORD},
                            headers={"Origin": "http://testserver"})
        assert same.status_code == 303


@pytest.mark.parametrize(("given", "expected"), [
    ("/sandboxes/X?a=1", "/sandboxes/X?a=1"), ("//evil.example/", "/"),
    ("https://evil.example/", "/"), ("/\\evil.example", "/"), ("", "/"), (None, "/"),
    ("javascript:alert(1)", "/"),
])
def test_after_login_only_local_paths(given: str | None, expected: str) -> None:
    assert safe_next(given) == expected


def test_a_huge_login_form_is_refused(make_app: Callable[..., Starlette]) -> None:
    with TestClient(make_app(), follow_redirects=False) as browser:
        answer = browser.post("/login", data={"username": "u", "password": "p" * 20000})
        assert answer.status_code == 413


def test_login_says_so_when_the_gateway_agent_cannot_check_it(
        make_app: Callable[..., Starlette], state_copy: Path, deployed: Deployed) -> None:
    # The host's pin names an agent that is down (the state cannot move an agent itself).
    dead = f"http://127.0.0.1:{free_port()}"
    nodes = (state_copy / "nodes.yaml").read_text()
    (state_copy / "nodes.yaml").write_text(nodes.replace(deployed.stack.gateway.url, dead))
    config = Path(deployed.stack.env["SDP_RECONCILER_CONFIG"])
    moved = state_copy.parent / "moved-reconciler.yaml"
    moved.write_text(config.read_text().replace(deployed.stack.gateway.url, dead))
    env = {**deployed.stack.env, "SDP_RECONCILER_CONFIG": str(moved)}
    settings = replace(FAST, login_failures_per_user=1)
    with TestClient(make_app(state_dir=state_copy, settings=settings, env=env),
                    follow_redirects=False) as browser:
        answer = sign_in(browser)
        assert answer.status_code == 503
        assert "gateway-1" in answer.text and "unreachable" in answer.text
        assert CANARY_PASSWORD not in answer.text
        assert sign_in(browser).status_code == 503, "an agent outage is not a failed login"


def test_the_page_only_reads(make_app: Callable[..., Starlette]) -> None:
    for route in make_app().routes:
        if isinstance(route, Route):
            methods = route.methods or set()
            assert methods <= {"GET", "HEAD", "POST"}
            if "POST" in methods:
                assert route.path in ("/login", "/logout")


def test_a_login_page_shows_strangers_no_state_or_agent_details(
        make_app: Callable[..., Starlette], state_copy: Path, deployed: Deployed) -> None:
    (state_copy / "sandboxes" / "BAD.yaml").write_text("sandbox: BAD\nservices: [1]\n")
    with TestClient(make_app(state_dir=state_copy), follow_redirects=False) as browser:
        answer = sign_in(browser)
        assert answer.status_code == 503
        assert "state directory has problems" in answer.text
        assert "BAD.yaml" not in answer.text and str(state_copy) not in answer.text
        assert deployed.stack.gateway.url not in answer.text
