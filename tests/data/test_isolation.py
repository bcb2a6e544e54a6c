"""Sandbox A's credentials reach A's database, keys and queues, and none of sandbox B's; a
drop removes everything of one sandbox and nothing of another."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pika
import pika.exceptions
import psycopg
import pytest
import redis

from sdp_node.data.redisacl import key_count
from sdp_testbed.dataservers import DataServers
from tests.support.agents import AgentProcess
from tests.support.data import (
    drop_cache,
    drop_db,
    drop_queue,
    ensure_cache,
    ensure_db,
    ensure_queue,
    new_password,
    pg_admin,
    pg_login,
    rabbit_admin,
    redis_admin,
    redis_login,
)
from tests.support.names import NAMES
from tests.support.plans import run


def amqp(servers: DataServers, *, vhost: str, user: str, password: str)\
        -> pika.BlockingConnection:
    parameters = pika.ConnectionParameters(
        host=servers.rabbitmq.host, port=servers.rabbitmq.port, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password), connection_attempts=1,
        blocked_connection_timeout=10, socket_timeout=10)
    return pika.BlockingConnection(parameters)


@pytest.fixture
def two_sandboxes(make_infra_agent: Callable[..., AgentProcess])\
        -> Iterator[tuple[AgentProcess, dict[str, str]]]:
    agent = make_infra_agent()
    passwords = {"A": new_password("A"), "B": new_password("B")}
    steps = []
    for sandbox, password in passwords.items():
        steps += [ensure_db(sandbox, password), ensure_cache(sandbox, password),
                  ensure_queue(sandbox, password)]
    outcome = run(agent.client(), steps, None)
    assert outcome.ok, [r.message for r in outcome.results]
    yield agent, passwords


def test_postgres_a_reaches_only_its_own_database(
    two_sandboxes: tuple[AgentProcess, dict[str, str]], data_servers: DataServers,
) -> None:
    _, passwords = two_sandboxes
    a, b = NAMES.database("A", "db"), NAMES.database("B", "db")
    with pg_login(data_servers, user=a, password=passwords["A"], database=a) as c:
        assert c.execute("SELECT count(*) FROM accounts").fetchone() == (101,)
    with pytest.raises(psycopg.OperationalError, match=f'permission denied for database "{b}"'):
        pg_login(data_servers, user=a, password=passwords["A"], database=b)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        pg_login(data_servers, user=b, password=passwords["A"], database=b)
    with pg_admin(data_servers) as admin:
        acl = admin.execute("SELECT datacl::text FROM pg_database WHERE datname = %s",
                            (b,)).fetchone()
    assert acl is not None and "=Tc/" not in acl[0] and "=c/" not in acl[0]  # no PUBLIC


def test_redis_a_reaches_only_its_own_keys(
    two_sandboxes: tuple[AgentProcess, dict[str, str]], data_servers: DataServers,
) -> None:
    _, passwords = two_sandboxes
    a_prefix, b_prefix = NAMES.redis_key_prefix("A", "cache"), NAMES.redis_key_prefix("B",
                                                                                       "cache")
    b = redis_login(data_servers, user=NAMES.redis_user("B", "cache"), password=passwords["B"])
    a = redis_login(data_servers, user=NAMES.redis_user("A", "cache"), password=passwords["A"])
    try:
        assert b.set(b_prefix + "session", "b-secret-value")
        assert a.set(a_prefix + "session", "a-value")
        assert a.get(a_prefix + "session") == "a-value"
        for attempt in (lambda: a.get(b_prefix + "session"), lambda: a.set("unprefixed", "x"),
                        lambda: a.keys("*"), lambda: a.scan(0), lambda: a.flushall(),
                        lambda: a.execute_command("SELECT", "1"), lambda: a.randomkey(),
                        lambda: a.config_get("*"), lambda: a.publish(b_prefix + "ch", "x")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()
        assert a.publish(a_prefix + "ch", "hello") == 0
    finally:
        a.close()
        b.close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis_login(data_servers, user=NAMES.redis_user("B", "cache"),
                    password=passwords["A"]).ping()


def test_rabbitmq_a_reaches_only_its_own_vhost(
    two_sandboxes: tuple[AgentProcess, dict[str, str]], data_servers: DataServers,
) -> None:
    _, passwords = two_sandboxes
    a_vhost, b_vhost = NAMES.rabbitmq_vhost("A", "queue"), NAMES.rabbitmq_vhost("B", "queue")
    connection = amqp(data_servers, vhost=a_vhost, user=a_vhost, password=passwords["A"])
    channel = connection.channel()
    channel.queue_declare("orders")
    channel.basic_publish("", "orders", b"order-1")
    method, _, body = channel.basic_get("orders", auto_ack=True)
    assert body == b"order-1" and method is not None
    connection.close()
    for vhost in (b_vhost, "/"):
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
            amqp(data_servers, vhost=vhost, user=a_vhost, password=passwords["A"])
    with rabbit_admin(data_servers) as api:
        permissions = api.get(f"/users/{a_vhost}/permissions").json()
        assert [p["vhost"] for p in permissions] == [a_vhost]
        # The sandbox's user has no management tag: the HTTP API refuses it.
    assert rabbit_answer(data_servers, a_vhost, passwords["A"]) == 401


def rabbit_answer(servers: DataServers, user: str, password: str) -> int:
    import httpx

    return httpx.get(f"{servers.management_url}/api/overview", auth=(user, password),
                     trust_env=False, timeout=10).status_code


def test_drop_removes_everything_of_a_and_nothing_of_b(
    two_sandboxes: tuple[AgentProcess, dict[str, str]], data_servers: DataServers,
) -> None:
    agent, passwords = two_sandboxes
    a_db, b_db = NAMES.database("A", "db"), NAMES.database("B", "db")
    a_user, b_user = NAMES.redis_user("A", "cache"), NAMES.redis_user("B", "cache")
    a_vhost, b_vhost = NAMES.rabbitmq_vhost("A", "queue"), NAMES.rabbitmq_vhost("B", "queue")
    for user, password in ((a_user, passwords["A"]), (b_user, passwords["B"])):
        client = redis_login(data_servers, user=user, password=password)
        client.set(f"{user}:k1", "v")
        client.set(f"{user}:k2", "v")
        client.close()
    held = redis_login(data_servers, user=a_user, password=passwords["A"])
    held.ping()

    outcome = run(agent.client(), [drop_db("A"), drop_cache("A"), drop_queue("A")], None)
    assert outcome.ok, [r.message for r in outcome.results]
    assert all(r.changed for r in outcome.results)

    with pg_admin(data_servers) as admin:
        names = {r[0] for r in admin.execute(
            "SELECT datname FROM pg_database UNION ALL SELECT rolname FROM pg_roles")}
    assert a_db not in names and b_db in names
    admin_redis = redis_admin(data_servers)
    try:
        users = set(admin_redis.acl_users())
        assert a_user not in users and b_user in users
        assert key_count(admin_redis, a_user + ":") == 0
        assert key_count(admin_redis, b_user + ":") == 2
    finally:
        admin_redis.close()
    with pytest.raises(redis.exceptions.ConnectionError):
        held.ping()  # Redis closed the deleted user's connection
    with rabbit_admin(data_servers) as api:
        assert api.get(f"/vhosts/{a_vhost}").status_code == 404
        assert api.get(f"/users/{a_vhost}").status_code == 404
        assert api.get(f"/vhosts/{b_vhost}").status_code == 200
    observed = {(s.kind.value, s.sandbox) for s in agent.client().observe().data_services}
    assert observed == {("postgresql", "B"), ("redis", "B"), ("rabbitmq", "B")}
    with pg_login(data_servers, user=b_db, password=passwords["B"], database=b_db) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
