"""``POST /hooks/bitbucket`` over a real listener: signatures, size and rate bounds, payloads.

The endpoint runs in the page's real uvicorn server (``WebServer``), as in ``watch``; what a
signed push means is recorded by a receiver standing in for the watcher's pass loop.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdp_node.protocol import Secret
from sdp_reconciler.web import WebServer, create_app
from sdp_reconciler.web.bitbucket import (
    CLOUD_PUSH,
    SERVER_PUSH,
    PayloadError,
    Push,
    RateLimit,
    parse_push,
    sign,
    signature_ok,
)
from sdp_reconciler.web.hooks import BitbucketHook, HookAnswer
from tests.support.agents import free_port

SECRET = "hook-canary-" + secrets.token_hex(8)


def server_payload(slug: str = "account", *branches: str, deleted: str | None = None) -> bytes:
    changes = [{"ref": {"id": f"refs/heads/{b}", "displayId": b, "type": "BRANCH"},
                "refId": f"refs/heads/{b}", "fromHash": "0" * 40, "toHash": "a" * 40,
                "type": "UPDATE"} for b in branches]
    if deleted:
        changes.append({"ref": {"id": f"refs/heads/{deleted}", "displayId": deleted,
                                "type": "BRANCH"}, "type": "DELETE"})
    changes.append({"ref": {"id": "refs/tags/v1", "displayId": "v1", "type": "TAG"},
                    "type": "ADD"})
    return json.dumps({
        "eventKey": SERVER_PUSH, "date": "2026-12-02T01:00:00+0000",
        "actor": {"name": "achmad"},
        "repository": {"slug": slug, "name": slug, "project": {"key": "SDP"},
                       "links": {"clone": [
                           {"href": f"https://bitbucket.example.invalid/scm/sdp/{slug}.git",
                            "name": "http"},
                           {"href": f"ssh://git@bitbucket.example.invalid:7999/sdp/{slug}.git",
                            "name": "ssh"}]}},
        "changes": changes,
    }).encode()


def cloud_payload(full_name: str, branch: str) -> bytes:
    return json.dumps({
        "actor": {"display_name": "Achmad"},
        "repository": {"full_name": full_name, "name": full_name.split("/")[1],
                       "links": {"html": {"href": f"https://bitbucket.org/{full_name}"}}},
        "push": {"changes": [
            {"new": {"type": "branch", "name": branch, "target": {"hash": "b" * 40}},
             "old": {"type": "branch", "name": branch, "target": {"hash": "c" * 40}}},
            {"new": None, "old": {"type": "branch", "name": "gone"}},
        ]},
    }).encode()


def test_the_signature_is_the_hmac_of_the_raw_body() -> None:
    body = server_payload("account", "main")
    good = sign(SECRET.encode(), body)
    assert good.startswith("sha256=") and len(good) == 7 + 64
    assert signature_ok(SECRET.encode(), body, good)
    assert not signature_ok(SECRET.encode(), body + b" ", good)
    assert not signature_ok(SECRET.encode(), body, None)
    assert not signature_ok(SECRET.encode(), body, good.replace("sha256=", "sha1="))
    assert not signature_ok(b"", body, sign(b"", body)), "no secret: nothing is signed"


def test_server_and_cloud_pushes_name_their_repository_and_moved_branches() -> None:
    server = parse_push(SERVER_PUSH, server_payload("account", "main", "feature/x",
                                                    deleted="old"))
    assert server == Push(
        sender="server", slug="account", full_name="SDP/account",
        clone_urls=("https://bitbucket.example.invalid/scm/sdp/account.git",
                    "ssh://git@bitbucket.example.invalid:7999/sdp/account.git"),
        branches=("main", "feature/x"))
    cloud = parse_push(CLOUD_PUSH, cloud_payload("team/erangel", "develop"))
    assert cloud is not None and cloud.slug == "erangel" and cloud.branches == ("develop",)
    assert cloud.full_name == "team/erangel" and cloud.sender == "cloud"
    assert parse_push("pr:opened", b"{}") is None
    for event, body, why in [
        (SERVER_PUSH, b"not json", "not JSON"),
        (SERVER_PUSH, b"[]", "not a JSON object"),
        (SERVER_PUSH, b'{"repository": {"slug": "a"}}', "'changes' list"),
        (CLOUD_PUSH, b'{"repository": {"full_name": "t/a"}}', "'push.changes'"),
        (SERVER_PUSH, b'{"repository": {}, "changes": []}', "names no repository"),
        (SERVER_PUSH, b"[" * 100_000, "too deeply"),  # within the size bound: 400, not 500
        (CLOUD_PUSH, b'{"a":' * 100_000, "too deeply"),
    ]:
        with pytest.raises(PayloadError, match=why):
            parse_push(event, body)


def test_the_rate_limit_is_per_client_and_in_total_in_a_sliding_window() -> None:
    now = [0.0]
    limit = RateLimit(per_client=2, total=3, window=10, clock=lambda: now[0])
    assert limit.allow("a") and limit.allow("a") and not limit.allow("a")
    assert limit.allow("b") and not limit.allow("c"), "the total holds for everyone"
    now[0] = 10.5
    assert limit.allow("a") and limit.allow("c")


class Received:
    def __init__(self) -> None:
        self.pushes: list[tuple[Push, str]] = []

    def __call__(self, push: Push, event: str) -> HookAnswer:
        self.pushes.append((push, event))
        return HookAnswer("queued", f"a pass for {push.describe()}")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, Received, BitbucketHook]]:
    received = Received()
    hook = BitbucketHook(secret=Secret(SECRET), receive=received,
                         limit=RateLimit(per_client=8, total=8, window=60), max_body=64 * 1024)
    (tmp_path / "state").mkdir()
    app = create_app(state_dir=tmp_path / "state", history_path=tmp_path / "history.sqlite",
                     env={}, extra_routes=[hook.route()])
    listen = f"127.0.0.1:{free_port()}"
    server = WebServer(app, listen)
    server.start()
    try:
        yield f"http://{listen}/hooks/bitbucket", received, hook
    finally:
        server.stop()


def post(url: str, body: bytes, *, event: str = SERVER_PUSH, signature: str | None = None,
         **headers: str) -> httpx.Response:
    sent = {"X-Event-Key": event, "Content-Type": "application/json", **headers}
    if signature is not None:
        sent["X-Hub-Signature"] = signature
    return httpx.post(url, content=body, headers=sent, timeout=10)


def test_only_a_correctly_signed_push_reaches_the_pass_loop(
    listener: tuple[str, Received, BitbucketHook],
) -> None:
    url, received, hook = listener
    body = server_payload("account", "feature/x")
    assert post(url, body).status_code == 401
    assert post(url, body, signature="sha256=" + "0" * 64).status_code == 401
    assert post(url, body, signature=sign(b"another secret", body)).status_code == 401
    # Not even parsed: a wrongly signed non-JSON body is 401, not 400.
    assert post(url, b"{not json", signature="sha256=00").status_code == 401
    assert received.pushes == []
    answer = post(url, body, signature=sign(SECRET.encode(), body))
    assert answer.status_code == 202
    assert answer.json() == {"result": "queued", "detail": "a pass for SDP/account@feature/x"}
    cloud = cloud_payload("team/account", "main")
    assert post(url, cloud, event=CLOUD_PUSH,
                signature=sign(SECRET.encode(), cloud)).status_code == 202
    assert [(p.full_name, p.branches) for p, _ in received.pushes] == [
        ("SDP/account", ("feature/x",)), ("team/account", ("main",))]
    bad = b'{"repository": {"slug": "a"}}'
    assert post(url, bad, signature=sign(SECRET.encode(), bad)).status_code == 400
    other = post(url, b"{}", event="pr:opened", signature=sign(SECRET.encode(), b"{}"))
    assert other.status_code == 202 and other.json()["result"] == "ignored"
    assert len(received.pushes) == 2
    counts = hook.counters.snapshot()
    assert counts["unauthorized"] == 4 and counts["queued"] == 2
    assert counts["bad_payload"] == 1 and counts["ignored"] == 1
    # The endpoint needs no session, and no answer carries the secret.
    assert SECRET not in answer.text


def test_an_oversized_body_is_refused_unread_and_a_flood_is_throttled(
    listener: tuple[str, Received, BitbucketHook],
) -> None:
    url, received, hook = listener
    big = b"x" * (64 * 1024 + 1)
    assert post(url, big, signature=sign(SECRET.encode(), big)).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while reading
        for _ in range(80):
            yield b"y" * 1024

    streamed = httpx.post(url, content=chunks(), headers={"X-Event-Key": SERVER_PUSH},
                          timeout=10)
    assert streamed.status_code == 413
    statuses = [post(url, b"{}", signature="sha256=00").status_code for _ in range(8)]
    assert statuses[-1] == 429 and statuses.count(401) == 6
    answer = post(url, b"{}", signature="sha256=00")
    assert answer.status_code == 429 and answer.headers["retry-after"] == "60"
    assert received.pushes == []
    assert hook.counters.snapshot()["too_large"] == 2


def test_a_signed_body_nested_too_deeply_is_refused_and_not_a_server_error(
    listener: tuple[str, Received, BitbucketHook],
) -> None:
    url, received, hook = listener
    for event, deep in [(SERVER_PUSH, b"[" * 20_000), (CLOUD_PUSH, b'{"a":' * 10_000)]:
        assert len(deep) < 64 * 1024  # within the size bound, so it is parsed
        answer = post(url, deep, event=event, signature=sign(SECRET.encode(), deep))
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"] == ("the body nests arrays or objects too deeply to be "
                                           "a push")
    assert received.pushes == []
    assert hook.counters.snapshot()["bad_payload"] == 2


def test_without_a_secret_on_the_host_every_request_is_refused(tmp_path: Path) -> None:
    received = Received()
    hook = BitbucketHook(secret=None, receive=received)
    (tmp_path / "state").mkdir()
    app = create_app(state_dir=tmp_path / "state", history_path=tmp_path / "h.sqlite", env={},
                     extra_routes=[hook.route()])
    listen = f"127.0.0.1:{free_port()}"
    server = WebServer(app, listen)
    server.start()
    try:
        body = server_payload("account", "main")
        answer = post(f"http://{listen}/hooks/bitbucket", body, signature=sign(b"", body))
        assert answer.status_code == 503 and "SDP_WEBHOOK_SECRET" in answer.json()["detail"]
        assert received.pushes == []
    finally:
        server.stop()
