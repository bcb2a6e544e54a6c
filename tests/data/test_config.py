"""node.yaml of an INFRA node: what loads, what is refused and how the message names it; the
hashes and markers the agent writes; the data names."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from sdp_node.config import ConfigError, load_config
from sdp_node.data.hashing import rabbitmq_hash, redis_acl_hash, scram_sha256
from sdp_node.data.markers import Marker
from sdp_node.naming import DATABASE_NAME_MAX, ResourceNames
from sdp_node.protocol import DataSourceKind

BASE = {
    "name": "infra-1", "type": "INFRA", "installation": "demo", "token": {"env": "T"},
    "workspace": "ws",
}
POSTGRESQL = {"admin_user": "sdp_admin", "admin_password": {"file": "/etc/sdp/pg-admin"},
              "sources": {"qa-snapshot": {"template": "qa_snapshot"},
                          "qa-dump": {"dump": "/var/lib/sdp/dumps/qa.dump"}}}


def load(tmp_path: Path, **settings: object) -> object:
    path = tmp_path / "node.yaml"
    path.write_text(json.dumps({**BASE, **settings}))
    return load_config(path)


def test_an_infra_node_yaml_loads(tmp_path: Path) -> None:
    config = load(tmp_path, data={"postgresql": POSTGRESQL, "redis": {
        "port": 6380, "admin_user": "sdp-admin", "admin_password": {"env": "REDIS_ADMIN"},
        "advertise_host": "172.18.136.93"}})
    data = config.data  # type: ignore[attr-defined]
    assert data.postgresql.port == 5432
    assert data.postgresql.source("qa-dump").kind is DataSourceKind.DUMP
    assert data.postgresql.source("qa-snapshot").location == "qa_snapshot"
    assert data.redis.container_host == "172.18.136.93" and data.redis.container_port == 6380
    assert data.rabbitmq is None


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "an INFRA node names at least one server under 'data:'"),
    ({"data": {"postgresql": POSTGRESQL}, "type": "MICRO"}, "'data:' is for INFRA nodes"),
    ({"data": {"postgresql": POSTGRESQL}, "repositories": [
        {"name": "a", "url": "http://h/a.git", "kind": "go"}]}, "serves no repositories"),
    ({"data": {"postgresql": {**POSTGRESQL, "sources": {"x": {"template": "t", "dump": "/d"}}}}},
     "data.postgresql.sources.x: a source is exactly one of 'template: DATABASE' or "
     "'dump: FILE'"),
    ({"data": {"postgresql": {**POSTGRESQL, "sources": {"x": {"dump": "d.dump"}}}}},
     "dump 'd.dump' must be an absolute path"),
    ({"data": {"postgresql": {**POSTGRESQL, "sources": {"bad name": {"template": "t"}}}}},
     "source name: 'bad name' is not a valid name"),
    ({"data": {"postgresql": {**POSTGRESQL, "admin_password": "hunter2-literal"}}},
     "data.postgresql.admin_password:"),
    ({"data": {"postgresql": {**POSTGRESQL, "admin_password": {}}}},
     "give exactly one of 'env: VARIABLE' or 'file: PATH'"),
    ({"data": {"rabbitmq": {"admin_user": "a", "admin_password": {"env": "X"},
                            "management_url": "http://u:p@h:15672"}}}, "management_url"),
])
def test_a_bad_infra_node_yaml_is_refused_with_the_key(tmp_path: Path, settings: dict[str, object],
                                                       message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, **settings)
    assert message in str(refused.value)
    assert "hunter2-literal" not in str(refused.value)


def test_hashes_are_what_the_servers_expect() -> None:
    verifier = scram_sha256("pencil-pencil-pencil", salt=b"0123456789abcdef")
    head, keys = verifier.split("$", 1)[1].split("$")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert base64.b64decode(head.split(":")[1]) == b"0123456789abcdef"
    assert all(len(base64.b64decode(k)) == 32 for k in keys.split(":"))
    assert redis_acl_hash("abc") == "#" + hashlib.sha256(b"abc").hexdigest()
    raw = base64.b64decode(rabbitmq_hash("abc", salt=b"salt"))
    assert raw == b"salt" + hashlib.sha256(b"saltabc").digest()


def test_markers_round_trip_and_refuse_anything_else() -> None:
    marker = Marker.new(instance="demo", node="infra-1", sandbox="QA", service="db",
                        source="qa-snapshot").ready(spec_hash="h")
    decoded = Marker.decode(marker.encode())
    assert decoded == marker and decoded.is_ready and decoded.owned_by("demo", "infra-1")
    assert not decoded.owned_by("demo", "infra-2")
    for text in (None, "", "the QA team's", "sdp:v1 [1]", "sdp:v1 {\"instance\": 1}",
                 "sdp:v2 " + marker.encode()[7:], "sdp:v1 {broken"):
        assert Marker.decode(text) is None


def test_data_names_follow_the_resource_prefix() -> None:
    names = ResourceNames("sdp-staging")
    assert names.database("QA-LOGIN-ERROR", "db") == "sdp_staging_qa_login_error_db"
    assert names.staging_database("QA", "db") == "sdp_staging_qa_db__sdp_new"
    assert names.redis_user("QA_X", "cache") == "sdp-staging-qa-x-cache"
    assert names.redis_key_prefix("QA_X", "cache") == "sdp-staging-qa-x-cache:"
    assert names.rabbitmq_vhost("QA", "queue") == "sdp-staging-qa-queue"
    assert names.data_problem("QA", "db") is None
    long = "A" * 40
    problem = names.data_problem(long, "db")
    assert problem is not None and f"at most {DATABASE_NAME_MAX}" in problem
