"""The ``data:`` models of sandboxes and templates: what validates, and every problem as
``file:line:col`` through the loader's own error mapping; the variables a container gets and
the derived passwords."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import ValidationError

from sdp_node.naming import ResourceNames
from sdp_node.protocol import DataKind, DataServerInfo
from sdp_reconciler.planner.dataenv import data_password, injected_env
from sdp_reconciler.state.loading import validation_problems
from sdp_reconciler.state.models import DataEntry, SandboxFile, variable_collisions
from sdp_reconciler.state.sources import parse_source


def problems(text: str) -> list[str]:
    source = parse_source(textwrap.dedent(text), "sandboxes/QA.yaml")
    try:
        SandboxFile.model_validate(source.data)
    except ValidationError as e:
        return [str(p) for p in validation_problems(e, source, SandboxFile)]
    return []


def test_the_issue_example_validates() -> None:
    sandbox = SandboxFile.model_validate(parse_source(textwrap.dedent("""\
        sandbox: QA
        data:
          db: {postgresql: {from: qa-snapshot}}
          cache: {redis: {}}
          queue: {rabbitmq: {node: infra-1}}
        """), "x").data)
    assert sandbox.data["db"].kind is DataKind.POSTGRESQL
    assert sandbox.data["db"].source == "qa-snapshot"
    assert sandbox.data["cache"].kind is DataKind.REDIS and sandbox.data["cache"].source is None
    assert sandbox.data["queue"].node == "infra-1"


@pytest.mark.parametrize(("text", "expected"), [
    ("sandbox: QA\ndata:\n  db: {postgresql: {}}\n",
     "sandboxes/QA.yaml:3:20: data.db.postgresql: missing required key 'from'"),
    ("sandbox: QA\ndata:\n  db: {}\n",
     "sandboxes/QA.yaml:3:7: data.db: a data entry is exactly one of 'postgresql: {from: "
     "SOURCE}', 'redis: {}' or 'rabbitmq: {}'; this one has none of them"),
    ("sandbox: QA\ndata:\n  db:\n    redis: {}\n    rabbitmq: {}\n",
     "sandboxes/QA.yaml:4:5: data.db: a data entry is exactly one of"),
    ("sandbox: QA\ndata:\n  db: {mysql: {}}\n",
     "sandboxes/QA.yaml:3:8: data.db.mysql: unknown key 'mysql'; allowed keys: postgresql, "
     "redis, rabbitmq"),
    ("sandbox: QA\ndata:\n  db: {postgresql: {from: 'qa snapshot'}}\n",
     "sandboxes/QA.yaml:3:27: data.db.postgresql.from: 'qa snapshot' is not a valid name"),
    ("sandbox: QA\ndata:\n  cache: {redis: {env: {vhost: X}}}\n",
     "sandboxes/QA.yaml:3:25: data.cache.redis.env.vhost: unknown key 'vhost'; allowed keys: "
     "host, port, user, password, prefix"),
    ("sandbox: QA\ndata:\n  db: {postgresql: {from: s, env: {password: 1BAD}}}\n",
     "data.db.postgresql.env.password: '1BAD' is not a valid environment variable name"),
    ("sandbox: QA\ndata:\n  1db: {redis: {}}\n",
     "sandboxes/QA.yaml:3:3: data.1db: key '1db': data entry '1db' must start with a letter"),
    ("sandbox: QA\ndata:\n  db: [postgresql]\n",
     "sandboxes/QA.yaml:3:7: data.db: expected a mapping of keys to values (got a list)"),
])
def test_a_bad_data_entry_is_reported_at_its_position(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found


def test_variables_default_to_the_entry_name_and_can_be_renamed() -> None:
    names = ResourceNames("sandbox")
    entry = DataEntry.model_validate({"postgresql": {"from": "qa", "env": {"password":
                                                                            "PGPASSWORD"}}})
    server = DataServerInfo(kind=DataKind.POSTGRESQL, host="172.18.136.93", port=5432,
                            reachable=True)
    password = data_password(b"k" * 32, installation="demo", kind=DataKind.POSTGRESQL,
                             resource="sandbox_qa_login_error_db")
    env, secret_env = injected_env("db", entry, sandbox="QA-LOGIN-ERROR", names=names,
                                   server=server, password=password)
    assert env == {"DB_HOST": "172.18.136.93", "DB_PORT": "5432",
                   "DB_NAME": "sandbox_qa_login_error_db",
                   "DB_USER": "sandbox_qa_login_error_db"}
    assert secret_env == {"PGPASSWORD": password}
    cache = DataEntry.model_validate({"redis": {}})
    env, secret_env = injected_env("session-cache", cache, sandbox="QA", names=names,
                                   server=server.model_copy(update={"kind": DataKind.REDIS}),
                                   password=password)
    assert env["SESSION_CACHE_PREFIX"] == "sandbox-qa-session-cache:"
    assert set(secret_env) == {"SESSION_CACHE_PASSWORD"}
    queue = DataEntry.model_validate({"rabbitmq": {}})
    env, _ = injected_env("queue", queue, sandbox="QA", names=names, server=server,
                          password=password)
    assert env["QUEUE_VHOST"] == env["QUEUE_USER"] == "sandbox-qa-queue"


def test_two_entries_setting_one_variable_are_found() -> None:
    entries = {
        "db": DataEntry.model_validate({"postgresql": {"from": "qa"}}),
        "cache": DataEntry.model_validate({"redis": {"env": {"host": "DB_HOST"}}}),
    }
    assert variable_collisions(entries) == [("DB_HOST", "db", "cache")]


def test_derived_passwords_are_stable_distinct_and_fit_the_agent() -> None:
    first = data_password(b"key", installation="demo", kind=DataKind.REDIS, resource="a")
    assert first == data_password(b"key", installation="demo", kind=DataKind.REDIS,
                                  resource="a")
    others = {data_password(b"key", installation="demo", kind=DataKind.REDIS, resource="b"),
              data_password(b"key2", installation="demo", kind=DataKind.REDIS, resource="a"),
              data_password(b"key", installation="prod", kind=DataKind.REDIS, resource="a")}
    assert first not in others and len(others) == 3
    assert len(first.reveal()) == 43 and str(first) == "***"
    assert first.reveal().replace("-", "").replace("_", "").isalnum()
