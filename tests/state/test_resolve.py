"""Template merge semantics (``sdp_reconciler.state.resolve``) as tables, on real state directories.

Each row writes a template and a sandbox that extends it over the example state, loads the
directory and compares the resolved sandbox with the facts the row names; facts a row does not
name are not compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sdp_reconciler.state.resolve import ResolvedSandbox, resolve_all, resolve_sandbox
from tests.state.conftest import loads, write_files

SHA = "0123456789abcdef0123456789abcdef01234567"


def facts(resolved: ResolvedSandbox) -> dict[str, Any]:
    def dump(model: Any) -> Any:
        return None if model is None else model.model_dump(exclude_none=True)

    gateway = resolved.gateway
    return {
        "templates": resolved.templates,
        "gateway": dump(gateway.spec) if gateway else None,
        "gateway.environment": gateway.environment if gateway else None,
        "gateway.resources": dump(gateway.resources) if gateway else None,
        "environment": resolved.environment,
        "resources": dump(resolved.resources),
        "lifecycle": dump(resolved.lifecycle),
        "services": {name: dump(s.spec) for name, s in resolved.services.items()},
        "services.environment": {n: s.environment for n, s in resolved.services.items()},
        "services.resources": {n: dump(s.resources) for n, s in resolved.services.items()},
    }


OCP = {"use_ocp": True}
MERGE_TABLE: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "a sandbox's service entry replaces the template's entry whole",
        "services:\n"
        f"  account: {{branch: feature/account, commit: {SHA}, node: micro-1, "
        "environment: qa, resources: {cpu: '2'}}\n"
        "  payment: {branch: develop}\n",
        "services:\n  account: {use_ocp: true}\n  payment: {branch: feature/refund}\n",
        {"services": {"account": OCP, "payment": {"branch": "feature/refund"}}},
    ),
    (
        "template services the sandbox does not name are kept; new ones are added",
        "services:\n  account: {use_ocp: true}\n  payment: {use_ocp: true}\n",
        "services:\n  ledger: {target: 'https://ledger-dev.company.invalid'}\n",
        {"services": {
            "account": OCP, "payment": OCP,
            "ledger": {"target": "https://ledger-dev.company.invalid"},
        }},
    ),
    (
        "gateway merges key by key: a sandbox sets only the port and keeps the branch",
        "gateway: {branch: develop, environment: qa}\n",
        "gateway: {port: 8085}\n",
        {"gateway": {"branch": "develop", "environment": "qa", "port": 8085}},
    ),
    (
        "gateway merges key by key: a sandbox's branch wins, the rest is kept",
        "gateway: {branch: develop, node: gateway-1}\n",
        "gateway: {branch: feature/gateway-login}\n",
        {"gateway": {"branch": "feature/gateway-login", "node": "gateway-1"}},
    ),
    (
        "resources merge key by key",
        "resources: {cpu: '1', memory: 512Mi}\n",
        "resources: {memory: 1Gi}\n",
        {"resources": {"cpu": "1", "memory": "1Gi"}},
    ),
    (
        "lifecycle merges key by key",
        "lifecycle: {expire_after: 14d, retention: 30d}\n",
        "lifecycle: {suspended: true}\n",
        {"lifecycle": {"suspended": True, "expire_after": "14d", "retention": "30d"}},
    ),
    (
        "an explicit false in the sandbox overrides the template's true",
        "lifecycle: {suspended: true}\n",
        "lifecycle: {suspended: false}\n",
        {"lifecycle": {"suspended": False}},
    ),
    (
        "environment replaces the template's",
        "environment: qa\n",
        "environment: qa2\n",
        {"environment": "qa2", "gateway.environment": "qa2",
         "services.environment": {"account": "qa2"}},
    ),
    (
        "an explicit null environment in the sandbox replaces the template's with none",
        "environment: qa\n",
        "environment: null\n",
        {"environment": None, "gateway.environment": None,
         "services.environment": {"account": None}},
    ),
    (
        "a sandbox without the key keeps the template's environment",
        "environment: qa2\n",
        "",
        {"environment": "qa2", "services.environment": {"account": "qa2"}},
    ),
    (
        "a service's own environment wins over the sandbox's",
        "environment: qa\nservices:\n  account: {branch: develop, environment: qa2}\n",
        "",
        {"services.environment": {"account": "qa2"}, "gateway.environment": "qa"},
    ),
    (
        "service and gateway resources are the sandbox's merged key by key with their own",
        "resources: {cpu: '1', memory: 512Mi}\n"
        "gateway: {branch: develop, resources: {cpu: 250m}}\n"
        "services:\n  account: {branch: develop, resources: {memory: 256Mi}}\n",
        "resources: {cpu: '2'}\n",
        {
            "resources": {"cpu": "2", "memory": "512Mi"},
            "gateway.resources": {"cpu": "250m", "memory": "512Mi"},
            "services.resources": {"account": {"cpu": "2", "memory": "256Mi"}},
        },
    ),
]


def _write_pair(root: Path, template: str, sandbox: str) -> None:
    base = "gateway: {branch: develop}\nservices:\n  account: {use_ocp: true}\n"
    write_files(root, {
        "environments/qa2.yaml": "environment: qa2\n",
        "templates/BASE.yaml": f"template: BASE\n{base}",
        "templates/MID.yaml": f"template: MID\nextends: BASE\n{template}",
        "sandboxes/QA-MERGE.yaml": f"sandbox: QA-MERGE\nextends: MID\n{sandbox}",
    })


@pytest.mark.parametrize(
    ("template", "sandbox", "expected"),
    [row[1:] for row in MERGE_TABLE],
    ids=[row[0] for row in MERGE_TABLE],
)
def test_merge_semantics(
    state_dir: Path, template: str, sandbox: str, expected: dict[str, Any]
) -> None:
    _write_pair(state_dir, template, sandbox)

    resolved = facts(resolve_sandbox(loads(state_dir), "QA-MERGE"))

    assert {key: resolved[key] for key in expected} == expected
    assert resolved["templates"] == ("MID", "BASE")


def test_each_part_remembers_the_file_it_was_written_in(state_dir: Path) -> None:
    _write_pair(
        state_dir,
        "services:\n  payment: {use_ocp: true}\n",
        "gateway: {port: 8085}\nservices:\n  account: {branch: develop}\n",
    )

    resolved = resolve_sandbox(loads(state_dir), "QA-MERGE")

    origins = {name: str(s.origin).removeprefix(f"{state_dir}/")
               for name, s in resolved.services.items()}
    assert origins == {
        "account": "sandboxes/QA-MERGE.yaml:5:12",
        "payment": "templates/MID.yaml:4:12",
    }
    assert resolved.gateway is not None
    assert str(resolved.gateway.origin).removeprefix(f"{state_dir}/") == \
        "sandboxes/QA-MERGE.yaml:3:10"


def test_the_seed_example_resolves_as_documented(state_dir: Path) -> None:
    resolved = facts(resolve_sandbox(loads(state_dir), "QA-LOGIN-ERROR"))

    assert resolved["templates"] == ("QA-DEFAULT",)
    assert resolved["gateway"] == {"branch": "develop"}
    assert resolved["environment"] == "qa"
    assert resolved["services"] == {
        "account": {"branch": "feature/login-error",
                    "resources": {"cpu": "500m", "memory": "256Mi"}},
        "payment": OCP,
        "user": OCP,
    }
    assert resolved["services.resources"]["account"] == {"cpu": "500m", "memory": "256Mi"}
    assert resolved["services.resources"]["payment"] == {"cpu": "1", "memory": "512Mi"}


def test_the_template_reference_is_live(state_dir: Path) -> None:
    write_files(state_dir, {
        "sandboxes/QA-OTHER.yaml": "sandbox: QA-OTHER\nextends: QA-DEFAULT\n",
    })
    before = resolve_all(loads(state_dir))
    assert before["QA-OTHER"].services["payment"].spec.use_ocp is True

    template = state_dir / "templates/QA-DEFAULT.yaml"
    template.write_text(
        template.read_text()
        .replace("  payment:\n    use_ocp: true", "  payment:\n    branch: feature/refund")
        .replace("branch: develop", "branch: release/2.0")
    )
    after = resolve_all(loads(state_dir))

    for name in ("QA-LOGIN-ERROR", "QA-OTHER"):
        assert after[name].services["payment"].spec.branch == "feature/refund"
        gateway = after[name].gateway
        assert gateway is not None
        assert gateway.spec.branch == "release/2.0"
    # The sandbox's own entry still replaces the template's.
    assert after["QA-LOGIN-ERROR"].services["account"].spec.branch == "feature/login-error"


INFRA_NODE = """\
  - name: infra-1
    type: INFRA
    address: host.docker.internal
    public_address: 127.0.0.1
"""


def test_a_data_entry_replaces_the_templates_entry_whole_and_the_others_are_inherited(
    state_dir: Path,
) -> None:
    nodes = (state_dir / "nodes.yaml").read_text(encoding="utf-8") + INFRA_NODE
    state = loads(state_dir, {
        "nodes.yaml": nodes,
        "templates/QA-DEFAULT.yaml": (
            "template: QA-DEFAULT\ngateway: {branch: develop}\n"
            "services:\n  account: {use_ocp: true}\n"
            "data:\n"
            "  db: {postgresql: {from: qa-snapshot, env: {host: PGHOST}}}\n"
            "  cache: {redis: {}}\n"
        ),
        "sandboxes/QA-LOGIN-ERROR.yaml": (
            "sandbox: QA-LOGIN-ERROR\nextends: QA-DEFAULT\n"
            "data:\n  db: {postgresql: {from: qa-dump}}\n  queue: {rabbitmq: {}}\n"
        ),
    })

    data = resolve_sandbox(state, "QA-LOGIN-ERROR").data

    assert sorted(data) == ["cache", "db", "queue"]
    assert data["db"].entry.source == "qa-dump"
    assert data["db"].entry.spec.env.host is None  # replaced whole: the rename is gone
    assert data["db"].origin.file.endswith("sandboxes/QA-LOGIN-ERROR.yaml")
    assert data["cache"].origin.file.endswith("templates/QA-DEFAULT.yaml")
    assert (data["queue"].entry.kind.value, data["cache"].entry.kind.value) == (
        "rabbitmq", "redis")


def test_each_sandbox_is_resolved_once_by_loading_and_reused(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 10: the rules resolved every sandbox twice and threw the results away, then the
    pass resolved them again. Now ``load_state`` resolves each once; the rules and
    ``resolve_all`` use those values."""
    from sdp_reconciler.state import loading, resolve

    write_files(state_dir, {
        "sandboxes/QA-OTHER.yaml": "sandbox: QA-OTHER\nextends: QA-DEFAULT\n",
    })
    calls: list[str] = []
    real = resolve.resolve_sandbox

    def counted(state: Any, name: str) -> ResolvedSandbox:
        calls.append(name)
        return real(state, name)

    monkeypatch.setattr(loading, "resolve_sandbox", counted)
    monkeypatch.setattr(resolve, "resolve_sandbox", counted)
    state = loads(state_dir)
    assert sorted(calls) == ["QA-LOGIN-ERROR", "QA-OTHER"]
    assert resolve_all(state) == dict(state.resolved or {})
    assert resolve_all(state)["QA-OTHER"] is (state.resolved or {})["QA-OTHER"]
    assert sorted(calls) == ["QA-LOGIN-ERROR", "QA-OTHER"]
