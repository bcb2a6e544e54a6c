"""Every page over a real history and state: what a viewer signed in sees.

The data comes from ``sdp-reconcile --once`` against real agents (``conftest.deployed``):
one sandbox converged, one with a failed go build, one suspended.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from html import unescape
from pathlib import Path

from msgspec.structs import replace
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sdp_reconciler.history import History, StatusRow
from tests.support.agents import free_port
from tests.support.names import PREFIX
from tests.support.statedirs import write_nodes
from tests.web.conftest import Deployed, sign_in
from tests.web.stack import JWT_SECRET_VALUE


def status_of(deployed: Deployed, sandbox: str, service: str) -> dict[str, object]:
    with sqlite3.connect(deployed.stack.history) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM status WHERE sandbox = ? AND service = ?",
                         (sandbox, service)).fetchone()
    return dict(row)


def text(html: str) -> str:
    """The page's text, tags removed and spaces collapsed."""
    words = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))
    return re.sub(r" ([:,)])", r"\1", words)


def test_overview_shows_each_sandbox_with_status_gateway_url_services_and_routes(
        client: TestClient, deployed: Deployed) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    gateway = status_of(deployed, deployed.ok, "gateway")
    account = status_of(deployed, deployed.ok, "account")
    assert gateway["url"] == f"http://127.0.0.1:{gateway['port']}"
    words = text(html)
    for name in (deployed.ok, deployed.broken, deployed.sleepy):
        assert f'data-sandbox="{name}"' in html
    ok_card = html.split(f'data-sandbox="{deployed.ok}"')[1].split("</article>")[0]
    ok_words = text(ok_card)
    assert "InSync" in ok_words and "Healthy" in ok_words and "Active" in ok_words
    assert f"App gateway URL: {gateway['url']}" in ok_words
    assert "feature/login-error" in ok_words
    assert str(account["applied_commit"])[:7] in ok_words
    assert str(account["port"]) in ok_words
    assert 'data-route="sandbox">sandbox' in ok_card
    assert f"http://host.docker.internal:{account['port']}" in ok_card
    assert ok_card.count('data-route="ocp">OCP') == 2
    sleepy_card = html.split(f'data-sandbox="{deployed.sleepy}"')[1].split("</article>")[0]
    assert ">Suspended<" in sleepy_card
    assert "App gateway URL: none: suspended" in text(sleepy_card), "nothing answers there"
    assert status_of(deployed, deployed.sleepy, "gateway")["url"] is None
    assert f"{deployed.sleepy}: point the app at" not in deployed.once_output
    broken_card = html.split(f'data-sandbox="{deployed.broken}"')[1].split("</article>")[0]
    # a failed go build is BuildFailed (issue 11)
    assert "OutOfSync" in broken_card and "BuildFailed" in broken_card
    assert "Last pass:" in words and "NOT_CONVERGED" in words
    # Colours always come with their word.
    for badge in re.findall(r'<span class="badge" data-tone="[a-z]+">([^<]*)</span>', html):
        assert badge.strip()


def test_sandbox_page_shows_the_agent_stages_the_outcome_and_the_log(
        client: TestClient, deployed: Deployed) -> None:
    page = client.get(f"/sandboxes/{deployed.ok}")
    assert page.status_code == 200
    words = text(page.text)
    for stage in ("git fetch", "git checkout", "go build", "start container", "composer install",
                  "routes"):
        assert f"✓ {stage}" in words
    assert "RUNNING" in words
    assert "checked out" in words and "health check /healthz answered 200" in words
    assert f'data-stream="/events?sandbox={deployed.ok}&amp;after=' in page.text
    assert "account_url = http://host.docker.internal:" in words


def test_a_failed_deploy_shows_failed_with_the_reason(client: TestClient,
                                                      deployed: Deployed) -> None:
    words = text(client.get(f"/sandboxes/{deployed.broken}").text)
    assert "✓ git fetch" in words and "✓ git checkout" in words
    assert "✗ go build: go build of account failed (exit 2)" in words
    assert "FAILED go build of account failed (exit 2)" in words
    assert "syntax error" in words


def test_fragments_render_the_live_regions(client: TestClient, deployed: Deployed) -> None:
    overview = client.get("/fragments/overview")
    assert overview.status_code == 200 and "<html" not in overview.text
    assert deployed.ok in overview.text and "data-last-event-id" in overview.text
    sandbox = client.get(f"/fragments/sandboxes/{deployed.ok}")
    assert sandbox.status_code == 200 and "✓ git fetch" in text(sandbox.text)
    assert client.get("/fragments/sandboxes/NOPE").status_code == 404


def test_unknown_sandbox_and_deployment_are_404(client: TestClient) -> None:
    assert client.get("/sandboxes/NOPE").status_code == 404
    assert client.get("/deployments/999999").status_code == 404
    assert client.get(f"/deployments/{10**30}").status_code == 404  # past SQLite's integers
    assert client.get(f"/history?before={10**30}").status_code == 200
    assert client.get(f"/audit?before={10**30}").status_code == 200
    # Not row ids, and no 500: '²' passes str.isdigit, and int() refuses 5,000 digits.
    for before in ("²", "9" * 5000, "-1", "1e3"):
        assert client.get("/history", params={"before": before}).status_code == 200, before
        assert client.get("/audit", params={"before": before}).status_code == 200, before


def test_history_filters_by_sandbox_repository_and_status(client: TestClient,
                                                          deployed: Deployed) -> None:
    everything = client.get("/history").text
    assert deployed.ok in everything and deployed.broken in everything

    def rows(query: str) -> list[str]:
        html = client.get(f"/history?{query}").text
        body = html.split("<tbody>")[1].split("</tbody>")[0] if "<tbody>" in html else ""
        return re.findall(r"<tr>.*?</tr>", body, flags=re.S)

    broken = rows(f"sandbox={deployed.broken}")
    assert broken and all(deployed.broken in r for r in broken)
    failed = rows("status=FAILED")
    assert len(failed) == 1 and "feature/broken" in failed[0] and "go build" in failed[0]
    gateways = rows("repository=erangel")
    assert len(gateways) == 2 and all("erangel" in r for r in gateways)
    both = rows(f"sandbox={deployed.ok}&repository=account&status=RUNNING")
    assert len(both) == 1 and "feature/login-error" in both[0]
    assert rows("sandbox=NOPE") == []
    page = client.get("/history?status=FAILED").text
    assert '<option value="FAILED" selected>' in page
    assert "Achmad" in page and "ci-runner" in page


def test_history_pages_older_rows(make_app: Callable[..., Starlette]) -> None:
    from tests.web.conftest import FAST

    settings = replace(FAST, page_rows=2)
    with TestClient(make_app(settings=settings)) as test_client:
        sign_in(test_client)
        first = test_client.get("/history").text
        link = re.search(r'href="(/history\?[^"]*before=(\d+))"', first)
        assert link is not None
        older = test_client.get(link.group(1).replace("&amp;", "&")).text
        ids = re.findall(r'href="/deployments/(\d+)"', older)
        assert ids and all(int(i) < int(link.group(2)) for i in ids)


def test_deployment_page_lists_its_events(client: TestClient, deployed: Deployed) -> None:
    history = client.get(f"/history?sandbox={deployed.broken}&status=FAILED").text
    deployment_id = re.search(r'href="/deployments/(\d+)"', history)
    assert deployment_id is not None
    page = client.get(f"/deployments/{deployment_id.group(1)}")
    words = text(page.text)
    assert page.status_code == 200
    assert "BUILD_STARTED" in words and "DEPLOY_FAILED" in words
    assert "feature/broken" in words and "✗ go build" in words


def test_audit_trail_names_user_runner_and_what_changed(client: TestClient,
                                                        deployed: Deployed) -> None:
    page = client.get("/audit")
    words = text(page.text)
    assert page.status_code == 200
    assert "Achmad <achmad@example.invalid>" in words and "ci-runner" in words
    assert "create service" in words and "create gateway" in words
    assert "FAILED" in words and "SUCCESS" in words
    only = client.get(f"/audit?sandbox={deployed.broken}").text.split("<tbody>")[1]
    assert deployed.broken in only and deployed.ok not in only


def test_templates_page(client: TestClient, deployed: Deployed) -> None:
    words = text(client.get("/templates").text)
    assert "QA-DEFAULT" in words and "branch develop" in words
    assert "account OCP" in words
    for name in (deployed.ok, deployed.broken, deployed.sleepy):
        assert name in words


def test_environments_show_variables_and_secret_references_never_values(
        client: TestClient) -> None:
    page = client.get("/environments").text
    words = text(page)
    assert "DB_HOST qa-db.internal.invalid" in words and "DB_PORT 5432" in words
    assert "JWT_SECRET secret env:SDP_SECRET_TEST_JWT" in words
    assert "/etc/sdp/flags.json" in words and '{"banner": true}' in page.replace("&#34;", '"')
    assert JWT_SECRET_VALUE not in page


def test_nodes_page_asks_the_agents(client: TestClient, deployed: Deployed) -> None:
    page = client.get("/nodes")
    assert page.status_code == 200
    html = page.text
    micro = html.split('data-node="micro-1"')[1].split("</article>")[0]
    words = text(micro)
    assert "Reachable" in words and "Unreachable" not in words
    account = status_of(deployed, deployed.ok, "account")
    container = f"{PREFIX}-{deployed.ok.lower()}-account"
    assert container in words and str(account["port"]) in words
    assert "Ports in use" in words
    assert "feature/login-error" in words and "feature/broken" in words and "main" in words
    gateway = text(html.split('data-node="gateway-1"')[1].split("</article>")[0])
    assert "erangel" in gateway and "develop" in gateway and "php" in gateway
    assert deployed.stack.micro.token not in html and deployed.stack.gateway.token not in html


def test_an_unreachable_node_is_shown_as_such(make_app: Callable[..., Starlette],
                                              deployed: Deployed, state_copy: Path) -> None:
    stack = deployed.stack
    from tests.support.statedirs import NodeEntry

    nodes = [NodeEntry(stack.micro, "MICRO", ports=(20000, 20019)),
             NodeEntry(stack.gateway, "GATEWAY", ports=(20020, 20039))]
    env = write_nodes(state_copy, installation=stack.installation, nodes=nodes, extra_nodes=[{
        "name": "micro-2", "type": "MICRO", "agent_url": f"http://127.0.0.1:{free_port()}",
        "agent_token": {"env": "SDP_TEST_TOKEN_MICRO_1"}, "address": "127.0.0.1",
        "public_address": "127.0.0.1", "ports": {"first": 20040, "last": 20059}}])
    (state_copy / "ports.yaml").unlink(missing_ok=True)
    with TestClient(make_app(state_dir=state_copy, env={**stack.env, **env})) as test_client:
        assert sign_in(test_client).status_code == 303
        html = test_client.get("/nodes").text
    dead = text(html.split('data-node="micro-2"')[1].split("</article>")[0])
    assert "Unreachable" in dead and "is unreachable" in dead
    assert "Reachable" in text(html.split('data-node="micro-1"')[1].split("</article>")[0])


def test_an_invalid_state_is_shown_not_hidden(make_app: Callable[..., Starlette],
                                              state_copy: Path) -> None:
    (state_copy / "sandboxes" / "BAD.yaml").write_text("sandbox: BAD\nservices: [1]\n")
    with TestClient(make_app(state_dir=state_copy, login=lambda u, p: None)) as test_client:
        assert sign_in(test_client).status_code == 303
        for path in ("/", "/templates", "/environments", "/nodes"):
            page = test_client.get(path)
            assert page.status_code == 200
            assert "The state directory has problems" in page.text
            assert "BAD.yaml" in page.text


def test_everything_the_page_prints_is_escaped(make_app: Callable[..., Starlette],
                                               tmp_path: Path, state_copy: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    pass_id = history.start_pass(mode="once", runner=evil, state_revision=None)
    deployment = history.start_deployment(
        pass_id=pass_id, step_id="s", sandbox="EVIL", service="account", node="micro-1",
        resource="sandbox-evil-account", action="create service", reason=evil,
        repository="account", branch=evil, commit_sha="a" * 40, runner=evil, status="QUEUED")
    history.add_event(pass_id=pass_id, deployment_id=deployment, sandbox="EVIL", kind="log",
                      stage="go build", message=evil)
    history.add_audit(deployment_id=deployment, user=evil, runner=evil, action="create service",
                      sandbox="EVIL", service="account", status="SUCCESS")
    history.set_status([StatusRow(sandbox="EVIL", service="", node=None, sync="InSync",
                                  health="Healthy", reason="UpToDate", message=evil)],
                       sandboxes={"EVIL"})
    history.close()
    with TestClient(make_app(history_path=tmp_path / "h.sqlite", state_dir=state_copy,
                             login=lambda u, p: None)) as test_client:
        assert sign_in(test_client).status_code == 303
        for path in ("/", "/sandboxes/EVIL", "/history", f"/deployments/{deployment}",
                     "/audit", "/fragments/overview"):
            page = test_client.get(path).text
            assert "<script>alert" not in page and "<img src=x" not in page, path
            assert "&lt;script&gt;" in page, path


def test_pages_send_a_strict_content_security_policy(client: TestClient) -> None:
    for path in ("/", "/login", "/healthz", "/static/page.css"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    assert client.get("/").headers["cache-control"] == "no-store"
    page = client.get("/").text
    assert "<script>" not in page and " on" + "click=" not in page and "style=" not in page


def test_static_files_and_healthz_need_no_session(make_app: Callable[..., Starlette]) -> None:
    with TestClient(make_app()) as anonymous:
        assert anonymous.get("/static/page.js").status_code == 200
        assert anonymous.get("/static/page.css").status_code == 200
        health = anonymous.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"ok": True, "open_streams": 0, "polling": False}


def test_browsing_every_page_changes_neither_the_history_nor_the_state(
        client: TestClient, deployed: Deployed) -> None:
    def snapshot() -> tuple[list[list[object]], dict[str, bytes]]:
        with sqlite3.connect(deployed.stack.history) as db:
            tables = [list(db.execute(f"SELECT * FROM {t} ORDER BY 1"))  # noqa: S608
                      for t in ("passes", "deployments", "events", "audit", "status")]
        files = {str(p): p.read_bytes() for p in sorted(deployed.stack.state.rglob("*"))
                 if p.is_file() and ".git" not in p.parts}
        return tables, files

    before = snapshot()
    for path in ("/", f"/sandboxes/{deployed.ok}", "/history", "/deployments/1", "/audit",
                 "/templates", "/environments", "/nodes", "/fragments/overview",
                 f"/fragments/sandboxes/{deployed.broken}"):
        assert client.get(path).status_code == 200, path
    assert snapshot() == before


def test_the_signed_in_user_sees_their_roles_and_the_audit_names_grants_and_refusals(
        make_app: Callable[..., Starlette], tmp_path: Path, state_copy: Path) -> None:
    from sdp_reconciler.access.enforcement import ROLES_KEY
    from tests.conftest import CANARY_USER

    path = tmp_path / "h.sqlite"
    history = History(path)
    refusal = ("commit 1a2b3c4 by vic@company.invalid (VIEWER): sandboxes/QA-A.yaml: deploy "
               "is not granted to VIEWER")
    history.add_audit(runner="ci", action="create service", sandbox="QA-B", service="account",
                      status="SUCCESS", permission="deploy", role="QA",
                      state_commit="9f8e7d6c" * 5)
    assert history.add_refusal(sandbox="QA-A", line=refusal, commit="1a2b3c4d" * 5,
                               permission="deploy", runner="ci")
    assert not history.add_refusal(sandbox="QA-A", line=refusal, commit="1a2b3c4d" * 5,
                                   permission="deploy", runner="ci")
    history.close()
    with TestClient(make_app(history_path=path, state_dir=state_copy,
                             login=lambda u, p: None)) as test_client:
        assert sign_in(test_client).status_code == 303
        assert "every permission (no access.yaml)" in text(test_client.get("/").text)
        history = History(path)
        history.set_meta(ROLES_KEY, f'{{"{CANARY_USER}": ["QA", "BACKEND"]}}')
        history.close()
        assert "QA, BACKEND" in text(test_client.get("/").text)
        audit = text(test_client.get("/audit").text)
        assert "deploy (QA) in 9f8e7d6" in audit
        assert audit.count(refusal) == 1
        history = History(path)
        history.set_meta(ROLES_KEY, '{"someone-else": ["ADMIN"]}')
        history.close()
        assert "no role in access.yaml" in text(test_client.get("/audit").text)


def test_the_sandbox_page_shows_its_data_services_with_state_and_source(
        make_app: Callable[..., Starlette], tmp_path: Path, state_copy: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    history.set_status([
        StatusRow(sandbox="QA-LOGIN-ERROR", service="", node=None, sync="InSync",
                  health="Healthy", reason="UpToDate"),
        StatusRow(sandbox="QA-LOGIN-ERROR", service="data.db", node="infra-1", sync="InSync",
                  health="Healthy", reason="Ready", message="ready, from qa-snapshot, 7.9 MiB",
                  branch="qa-snapshot", route="postgresql",
                  url="postgresql://10.0.0.3:5432/sandbox_qa_login_error_db"),
    ], sandboxes={"QA-LOGIN-ERROR"})
    history.close()
    with TestClient(make_app(history_path=tmp_path / "h.sqlite", state_dir=state_copy,
                             login=lambda u, p: None)) as test_client:
        assert sign_in(test_client).status_code == 303
        page = unescape(test_client.get("/sandboxes/QA-LOGIN-ERROR").text)
    text = re.sub(r"<[^>]+>", " ", page)
    assert "data.db" in text, text
    row = text[text.index("data.db"):][:2000]
    for shown in ("postgresql", "qa-snapshot", "infra-1", "Ready"):
        assert shown in row, shown
