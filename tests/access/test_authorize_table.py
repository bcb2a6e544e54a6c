"""``authorize`` as a table: (role, change) → allowed or refused, on real git repositories.

Each case commits one change to the example state as a person of the given role (after ops,
the ADMIN, committed access.yaml) and checks which permissions ``authorize_range`` refused.
The table is the documented default (docs/access.md), written out literally here so that a
change to ``DEFAULT_PERMISSIONS`` fails until the docs and this table agree.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.access.conftest import ROLES, AccessRepo
from tests.access.gitrepo import SANDBOX, Person

Edit = Callable[[AccessRepo], None]

NEW_SANDBOX = "sandbox: QA-NEW\nextends: QA-DEFAULT\nservices:\n  user: {branch: feature/u}\n"


def _write(relative: str, text: str | None) -> Edit:
    return lambda repo: repo.write({relative: text})


def _replace(relative: str, old: str, new: str) -> Edit:
    return lambda repo: repo.replace(relative, old, new)


# change -> (the edit, the permissions it needs)
CHANGES: dict[str, tuple[Edit, set[str]]] = {
    "add a sandbox": (_write("sandboxes/QA-NEW.yaml", NEW_SANDBOX), {"deploy"}),
    "remove a sandbox": (_write(SANDBOX, None), {"delete_sandbox"}),
    "change a service's branch": (
        _replace(SANDBOX, "branch: feature/login-error", "branch: feature/other"), {"deploy"}),
    "pin a service's commit": (
        _replace(SANDBOX, "branch: feature/login-error",
                 "branch: feature/login-error\n    commit: 50bde4b"), {"deploy"}),
    "change a service's resources": (_replace(SANDBOX, "cpu: 500m", "cpu: 250m"), {"deploy"}),
    "route a service from OCP to a target": (
        _replace(SANDBOX, "resources:\n  cpu",
                 "  payment: {target: 'https://payment.staging.invalid'}\nresources:\n  cpu"),
        {"manage_routes"}),
    "route a deployed service to OCP": (
        _replace(SANDBOX, "branch: feature/login-error\n    resources:\n      cpu: 500m\n"
                 "      memory: 256Mi", "use_ocp: true"), {"manage_routes"}),
    "drop an entry so the template's OCP route applies": (
        _replace(SANDBOX, "services:\n  account:\n    branch: feature/login-error\n"
                 "    resources:\n      cpu: 500m\n      memory: 256Mi\n", ""),
        {"manage_routes"}),
    "deploy a service that was on OCP": (
        _replace(SANDBOX, "resources:\n  cpu",
                 "  user: {branch: feature/user}\nresources:\n  cpu"),
        {"manage_routes", "deploy"}),
    "change the gateway's branch": (
        _replace(SANDBOX, "resources:\n  cpu", "gateway: {branch: release}\nresources:\n  cpu"),
        {"deploy", "manage_routes"}),
    "change the gateway's port": (
        _replace(SANDBOX, "resources:\n  cpu", "gateway: {port: 8090}\nresources:\n  cpu"),
        {"deploy"}),
    "suspend a sandbox": (
        _replace(SANDBOX, "resources:\n  cpu", "lifecycle: {suspended: true}\nresources:\n  cpu"),
        {"deploy"}),
    "edit a template": (
        _replace("templates/QA-DEFAULT.yaml", "branch: develop", "branch: release"),
        {"manage_templates"}),
    "add a template": (
        _write("templates/NEW.yaml", "template: NEW\ngateway: {branch: develop}\n"),
        {"manage_templates"}),
    "edit an environment": (
        _replace("environments/qa.yaml", "DB_PORT: 5432", "DB_PORT: 5433"),
        {"manage_environments"}),
    "remove an environment": (_write("environments/qa.yaml", None), {"manage_environments"}),
    "edit nodes.yaml": (_replace("nodes.yaml", "first: 9001", "first: 9002"), {"manage_nodes"}),
    "add notifications.yaml": (
        _write("notifications.yaml", "notifications:\n  - {name: ci, webhook: {env: HOOK}}\n"),
        {"manage_nodes"}),
    "edit access.yaml": (
        _replace("access.yaml", '"QA"', '"BACKEND"'), {"manage_access"}),
    "edit a port allocation": (
        _write("ports.yaml", "allocations:\n  - {sandbox: QA-LOGIN-ERROR, service: account, "
               "node: micro-1, port: 9005, allocated_at: '2026-01-01T00:00:00+00:00'}\n"),
        {"deploy"}),
    "only comments and formatting": (
        _replace(SANDBOX, "services:\n  account:\n    branch: feature/login-error\n"
                 "    resources:\n      cpu: 500m\n      memory: 256Mi\n",
                 "# reviewed\nservices: {account: {branch: feature/login-error,  # keep\n"
                 "  resources: {memory: 256Mi, cpu: 500m}}}\n"), set()),
}

# role -> the changes it may make (the default table of docs/access.md)
ALLOWED: dict[str, set[str]] = {
    "ADMIN": set(CHANGES),
    "BACKEND": set(CHANGES) - {"edit nodes.yaml", "add notifications.yaml", "edit access.yaml"},
    "QA": {
        "add a sandbox", "change a service's branch", "pin a service's commit",
        "change a service's resources", "route a service from OCP to a target",
        "route a deployed service to OCP", "drop an entry so the template's OCP route applies",
        "deploy a service that was on OCP", "change the gateway's branch",
        "change the gateway's port", "suspend a sandbox", "edit a port allocation",
        "only comments and formatting",
    },
    "VIEWER": {"only comments and formatting"},
}
PERSON_OF = {role: name for name, role in ROLES.items()}


@pytest.mark.parametrize("role", sorted(ALLOWED))
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_role_and_change(repo: AccessRepo, people: dict[str, Person], role: str,
                         change: str) -> None:
    edit, needs = CHANGES[change]
    edit(repo)
    sha = repo.commit(people[PERSON_OF[role]], change)

    decision = repo.authorize(repo.base)

    (commit,) = decision.commits
    assert commit.commit == sha
    assert {str(v.permission) for v in commit.changes} == needs
    refused = {str(v.permission) for v in commit.changes if not v.allowed}
    if change in ALLOWED[role]:
        assert refused == set(), decision.refusals
        assert decision.allowed
        assert all(v.role is not None for v in commit.changes)
    else:
        assert refused and refused <= needs
        assert not decision.allowed
        for line in decision.refusals:
            assert line.startswith(f"commit {sha[:7]} by {people[PERSON_OF[role]].email} "
                                   f"({role}): ")
            assert line.endswith(f" is not granted to {role}")


def test_a_qa_removing_a_sandbox_gets_the_contract_line(repo: AccessRepo,
                                                       people: dict[str, Person]) -> None:
    sha = repo.commit(people["rina"], "remove", files={SANDBOX: None})

    decision = repo.authorize(repo.base)

    assert decision.refusals == (
        f"commit {sha[:7]} by rina@company.invalid (QA): sandboxes/QA-LOGIN-ERROR.yaml: "
        "delete_sandbox is not granted to QA",
    )
    assert decision.held == {"QA-LOGIN-ERROR"}


def test_an_author_not_in_access_yaml_is_refused_everything(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    repo.replace(SANDBOX, "branch: feature/login-error", "branch: feature/eve")
    sha = repo.commit(people["eve"], "eve")

    decision = repo.authorize(repo.base)

    assert decision.refusals == (
        f"commit {sha[:7]} by eve@company.invalid (no user): sandboxes/QA-LOGIN-ERROR.yaml: "
        "deploy is not granted: no user in access.yaml has this email",
    )


def test_a_viewer_commit_that_changes_nothing_is_allowed(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    repo.replace(SANDBOX, "sandbox: QA-LOGIN-ERROR", "# looked at it\nsandbox: QA-LOGIN-ERROR")
    repo.write({"README.md": "notes are not state\n"})
    repo.commit(people["vic"], "a comment and a README")
    repo.commit(people["vic"], "an empty commit")

    decision = repo.authorize(repo.base)

    assert decision.allowed
    assert [c.changes for c in decision.commits] == [(), ()]
    assert [c.roles for c in decision.commits] == [("VIEWER",), ("VIEWER",)]
    assert decision.held == frozenset()
    assert decision.next_base == repo.head()


def test_a_user_with_two_roles_is_credited_with_the_first_that_grants(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    repo.replace("access.yaml", '"QA"', '"VIEWER", "QA"')
    repo.commit(people["ops"], "rina is VIEWER and QA")
    base = repo.head()
    repo.replace(SANDBOX, "branch: feature/login-error", "branch: feature/two-roles")
    repo.commit(people["rina"], "deploy")
    repo.commit(people["rina"], "remove", files={SANDBOX: None})

    decision = repo.authorize(base)

    deploy, remove = decision.commits
    assert [v.role for v in deploy.changes] == ["QA"]
    assert remove.changes[0].refusal is not None
    assert remove.changes[0].refusal.endswith("delete_sandbox is not granted to VIEWER or QA")
    assert deploy.roles == ("VIEWER", "QA")


def test_role_overrides_replace_a_roles_permissions(repo: AccessRepo,
                                                    people: dict[str, Person]) -> None:
    repo.replace("access.yaml", '"users"', '"roles": {"QA": ["deploy", "delete_sandbox"]},\n'
                 ' "users"')
    repo.commit(people["ops"], "QA may delete, but no longer route")
    base = repo.head()
    repo.replace(SANDBOX, "resources:\n  cpu",
                 "  payment: {target: 'https://payment.staging.invalid'}\nresources:\n  cpu")
    route = repo.commit(people["rina"], "route")
    repo.commit(people["rina"], "remove", files={SANDBOX: None})

    decision = repo.authorize(base)

    assert decision.refusals == (
        f"commit {route[:7]} by rina@company.invalid (QA): sandboxes/QA-LOGIN-ERROR.yaml: "
        "manage_routes is not granted to QA",
    )
    assert [str(v.permission) for v in decision.commits[1].changes] == ["delete_sandbox"]
    assert decision.commits[1].allowed
