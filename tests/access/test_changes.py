"""The semantic diff as a table: two versions of a file (plain data) → (aspect, permission).

Pure: no git here (the git-backed tables are in test_authorize_table.py). These pin down the
finer rules: a service is compared as the sandbox resolves it (its own entry, else its
templates'), formatting is no change, unreadable versions need everything, values are shown
only for keys that hold nothing sensitive.
"""

from __future__ import annotations

from typing import Any

import pytest

from sdp_reconciler.access.changes import (
    Content,
    classify,
    requirements,
    sandbox_view,
)

TEMPLATES = {
    "QA-DEFAULT": {"template": "QA-DEFAULT", "gateway": {"branch": "develop"},
                   "environment": "qa", "services": {"account": {"use_ocp": True},
                                                     "payment": {"use_ocp": True}}},
    "CHILD": {"template": "CHILD", "extends": "QA-DEFAULT",
              "services": {"account": {"branch": "feature/child"}}},
}


def template(name: str) -> Content | None:
    return Content(TEMPLATES[name]) if name in TEMPLATES else None


def sandbox(**fields: Any) -> dict[str, Any]:
    return {"sandbox": "QA-X", "extends": "QA-DEFAULT", **fields}


def needs(old: Any, new: Any, path: str = "sandboxes/QA-X.yaml") -> set[tuple[str, str]]:
    file = classify(path)
    assert file is not None
    found = requirements(file, None if old is None else Content(old),
                         None if new is None else Content(new),
                         old_templates=template, new_templates=template)
    return {(r.aspect, str(r.permission)) for r in found}


CASES: list[tuple[str, Any, Any, set[tuple[str, str]]]] = [
    ("same data", sandbox(), sandbox(), set()),
    ("added", None, sandbox(), {("(file)", "deploy")}),
    ("removed", sandbox(), None, {("(file)", "delete_sandbox")}),
    ("OCP (template) → branch",
     sandbox(), sandbox(services={"account": {"branch": "feature/a"}}),
     {("services.account.route", "manage_routes"), ("services.account.branch", "deploy")}),
    ("branch → other branch",
     sandbox(services={"account": {"branch": "a"}}), sandbox(services={"account": {"branch": "b"}}),
     {("services.account.branch", "deploy")}),
    ("branch → branch pinned",
     sandbox(services={"account": {"branch": "a"}}),
     sandbox(services={"account": {"branch": "a", "commit": "50bde4b"}}),
     {("services.account.commit", "deploy")}),
    ("branch → OCP: only the route",
     sandbox(services={"account": {"branch": "a", "port": 9001}}),
     sandbox(services={"account": {"use_ocp": True}}),
     {("services.account.route", "manage_routes")}),
    ("explicit OCP = the template's OCP", sandbox(),
     sandbox(services={"account": {"use_ocp": True}}), set()),
    ("a service nobody names → OCP is no change", sandbox(),
     sandbox(services={"user": {"use_ocp": True}}), set()),
    ("target → another target",
     sandbox(services={"payment": {"target": "https://a.invalid"}}),
     sandbox(services={"payment": {"target": "https://b.invalid"}}),
     {("services.payment.route", "manage_routes")}),
    ("extends another template that deploys account",
     sandbox(), sandbox(extends="CHILD"),
     {("extends", "deploy"), ("services.account.route", "manage_routes"),
      ("services.account.branch", "deploy")}),
    ("gateway branch", sandbox(), sandbox(gateway={"branch": "release"}),
     {("gateway.branch", "deploy"), ("gateway.branch", "manage_routes")}),
    ("gateway port", sandbox(), sandbox(gateway={"port": 8090}), {("gateway.port", "deploy")}),
    ("gateway set to the template's own value", sandbox(),
     sandbox(gateway={"branch": "develop"}), set()),
    ("environment", sandbox(), sandbox(environment="other"), {("environment", "deploy")}),
    ("resources key by key", sandbox(resources={"cpu": "1"}),
     sandbox(resources={"cpu": "1", "memory": "1Gi"}), {("resources.memory", "deploy")}),
    ("lifecycle", sandbox(), sandbox(lifecycle={"suspended": True}),
     {("lifecycle.suspended", "deploy")}),
    ("true is not 1", sandbox(lifecycle={"suspended": True}), sandbox(lifecycle={"suspended": 1}),
     {("lifecycle.suspended", "deploy")}),
    ("not a mapping any more", sandbox(), ["a", "list"],
     {("(file)", "deploy"), ("(file)", "manage_routes")}),
]


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_sandbox_changes(case: str) -> None:
    _, old, new, expected = next(c for c in CASES if c[0] == case)
    assert needs(old, new) == expected


def test_an_unreadable_version_needs_everything_the_file_can_need() -> None:
    file = classify("sandboxes/QA-X.yaml")
    assert file is not None
    found = requirements(file, Content(problem="YAML syntax error"), Content(sandbox()),
                         old_templates=template, new_templates=template)
    assert {(r.aspect, str(r.permission)) for r in found} == {
        ("(file)", "deploy"), ("(file)", "manage_routes")}


@pytest.mark.parametrize("path, permission", [
    ("templates/QA-DEFAULT.yaml", "manage_templates"),
    ("environments/qa.yml", "manage_environments"),
    ("nodes.yaml", "manage_nodes"),
    ("notifications.yaml", "manage_nodes"),
    ("access.yaml", "manage_access"),
])
def test_every_other_file_needs_its_permission_per_changed_key(path: str,
                                                               permission: str) -> None:
    old = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    new = {"a": {"b": 2, "c": [1, 2]}, "e": "y"}
    assert needs(old, new, path) == {("a.b", permission), ("d", permission),
                                     ("e", permission)}
    assert needs(None, new, path) == {("(file)", permission)}


def test_port_allocations_are_a_deploy_of_the_sandbox_they_belong_to() -> None:
    def allocation(sandbox: str, port: int) -> dict[str, Any]:
        return {"sandbox": sandbox, "service": "account", "node": "micro-1", "port": port,
                "allocated_at": "2026-01-01T00:00:00+00:00"}

    old = {"allocations": [allocation("A", 9001), allocation("B", 9002)]}
    new = {"allocations": [allocation("B", 9002), allocation("A", 9003)]}
    file = classify("ports.yaml")
    assert file is not None
    found = requirements(file, Content(old), Content(new), old_templates=template,
                         new_templates=template)
    assert [(r.aspect, str(r.permission), r.sandbox) for r in found] == [
        ("allocations.A", "deploy", "A")]


@pytest.mark.parametrize("path", ["README.md", "sandboxes/notes.txt", "sandboxes/.hidden.yaml",
                                  "sandboxes/nested/X.yaml", "schemas/sandbox.schema.json",
                                  "nodes.yml"])
def test_files_the_loader_never_reads_are_not_state(path: str) -> None:
    assert classify(path) is None


def test_descriptions_show_branches_but_never_environment_values() -> None:
    file = classify("sandboxes/QA-X.yaml")
    env = classify("environments/qa.yaml")
    assert file is not None and env is not None
    (branch,) = requirements(file, Content(sandbox(services={"account": {"branch": "a"}})),
                             Content(sandbox(services={"account": {"branch": "b"}})),
                             old_templates=template, new_templates=template)
    (variable,) = requirements(env, Content({"variables": {"DB_PASSWORD": "old-value"}}),
                               Content({"variables": {"DB_PASSWORD": "new-value"}}),
                               old_templates=template, new_templates=template)
    assert branch.description == "services.account.branch: a → b"
    assert variable.description == "variables.DB_PASSWORD changed"


def test_the_view_follows_the_template_chain_and_names_a_missing_template() -> None:
    view = sandbox_view(sandbox(extends="CHILD"), template)
    assert view.templates == ("CHILD", "QA-DEFAULT")
    assert view.services["account"] == {"branch": "feature/child"}
    assert view.environments == {"qa"}
    assert sandbox_view(sandbox(extends="GONE"), template).templates == ("GONE",)
