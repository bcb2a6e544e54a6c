"""Where trust starts and how it can end: the commit that introduces access.yaml, removing
it, granting oneself a right, and uncommitted changes. Real git repositories throughout."""

from __future__ import annotations

from pathlib import Path

from sdp_reconciler.access.authorize import authorize_range
from tests.access.conftest import AccessRepo, standard_access
from tests.access.gitrepo import SANDBOX, Person, StateRepo, access_yaml

BRANCH = "branch: feature/login-error"


def _fresh(tmp_path: Path, people: dict[str, Person]) -> StateRepo:
    repo = StateRepo(tmp_path / "repo")
    repo.commit(people["eve"], "state before roles (anyone may do anything)")
    return repo


def test_before_access_yaml_every_change_is_allowed_and_the_notice_says_so(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = _fresh(tmp_path, people)
    repo.commit(people["eve"], "remove", files={SANDBOX: None})

    decision = repo.authorize(None)

    assert decision.allowed
    assert not decision.enforced
    assert decision.notice == ("no access.yaml: every change is authorised, as before roles "
                               "(docs/access.md)")
    assert {c.policy for c in decision.commits} == {"none"}


def test_access_yaml_introduced_by_an_admin_it_names_starts_trust(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = _fresh(tmp_path, people)
    repo.commit(people["ops"], "roles", files={"access.yaml": standard_access(people)})
    removal = repo.commit(people["rina"], "remove", files={SANDBOX: None})

    decision = repo.authorize(None)

    assert decision.enforced and decision.notice is None
    assert [c.policy for c in decision.commits] == ["none", "none", "access.yaml"]
    assert decision.commits[1].changes[0].role == "ADMIN"
    assert decision.refusals == (
        f"commit {removal[:7]} by rina@company.invalid (QA): sandboxes/QA-LOGIN-ERROR.yaml: "
        "delete_sandbox is not granted to QA",
    )
    assert decision.policy is not None and set(decision.policy.users) == {
        "ops", "achmad", "rina", "vic"}


def test_access_yaml_introduced_by_someone_it_does_not_name_as_admin_authorises_nothing(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = _fresh(tmp_path, people)
    intro = repo.commit(people["rina"], "roles", files={"access.yaml": standard_access(people)})
    later = repo.commit(people["achmad"], "deploy", files={
        "sandboxes/QA-NEW.yaml": "sandbox: QA-NEW\nextends: QA-DEFAULT\n"})

    decision = repo.authorize(None)

    assert decision.refusals == (
        f"commit {intro[:7]} by rina@company.invalid (QA): access.yaml: manage_access is not "
        "granted: the commit that introduces access.yaml must be authored by a user it names "
        "as ADMIN; rina is QA",
        f"commit {later[:7]} by achmad@company.invalid (access.yaml untrusted): "
        "sandboxes/QA-NEW.yaml: deploy is not granted: access.yaml was introduced by commit "
        f"{intro[:7]}, which it does not trust; nothing is authorised until an ADMIN it names "
        "commits it again or it is removed",
    )
    assert decision.halted == decision.refusals[:1]
    assert decision.held == {"QA-NEW"}
    assert decision.policy is None
    assert decision.next_base is None


def test_an_author_outside_the_file_cannot_start_trust_either(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = _fresh(tmp_path, people)
    intro = repo.commit(people["eve"], "roles", files={"access.yaml": standard_access(people)})

    decision = repo.authorize(None)

    assert decision.refusals == (
        f"commit {intro[:7]} by eve@company.invalid (no user): access.yaml: manage_access is "
        "not granted: the commit that introduces access.yaml must be authored by a user it "
        "names as ADMIN; no user in it has this email",
    )


def test_an_invalid_access_yaml_does_not_start_trust(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = _fresh(tmp_path, people)
    broken = standard_access(people).replace('"VIEWER"', '"VIEWR"')
    repo.commit(people["ops"], "roles, with a typo", files={"access.yaml": broken})

    decision = repo.authorize(None)

    (line,) = decision.refusals
    assert line.endswith("and the access.yaml it introduces is not valid (sdp-reconcile "
                         "validate says why)")
    assert decision.halted == (line,)


def test_an_untrusted_access_yaml_is_repaired_by_an_admin_it_names(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = _fresh(tmp_path, people)
    repo.commit(people["rina"], "roles", files={"access.yaml": standard_access(people)})
    repo.replace("access.yaml", '"VIEWER"', '"QA"')
    repair = repo.commit(people["ops"], "ops confirms the file (vic is QA now)")
    repo.replace(SANDBOX, BRANCH, "branch: feature/vic")
    repo.commit(people["vic"], "vic deploys")

    decision = repo.authorize(None)

    assert [c.policy for c in decision.commits] == ["none", "none", "untrusted", "access.yaml"]
    assert decision.commits[2].changes[0].role == "ADMIN"
    assert decision.commits[3].allowed
    assert decision.halted == () and decision.held == frozenset()
    assert len(decision.refusals) == 1  # the first introduction stays refused, superseded
    assert not decision.commits[1].changes[0].outstanding
    assert decision.next_base == repo.head()
    assert repair in {c.commit for c in decision.commits}


def test_an_untrusted_access_yaml_may_be_removed_by_anyone(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = _fresh(tmp_path, people)
    repo.commit(people["rina"], "roles", files={"access.yaml": standard_access(people)})
    repo.commit(people["rina"], "oops, no roles after all", files={"access.yaml": None})
    repo.commit(people["vic"], "vic removes a sandbox", files={SANDBOX: None})

    decision = repo.authorize(None)

    assert [c.policy for c in decision.commits] == ["none", "none", "untrusted", "none"]
    assert decision.commits[2].allowed and decision.commits[3].allowed
    assert decision.halted == () and decision.held == frozenset()


def test_removing_access_yaml_needs_manage_access(repo: AccessRepo,
                                                  people: dict[str, Person]) -> None:
    removal = repo.commit(people["achmad"], "no more roles", files={"access.yaml": None})
    repo.commit(people["vic"], "vic removes a sandbox", files={SANDBOX: None})

    decision = repo.authorize(repo.base)

    vic = decision.commits[1]
    assert decision.refusals == (
        f"commit {removal[:7]} by achmad@company.invalid (BACKEND): access.yaml: manage_access "
        "is not granted to BACKEND",
        f"commit {vic.commit[:7]} by vic@company.invalid (VIEWER): "
        "sandboxes/QA-LOGIN-ERROR.yaml: delete_sandbox is not granted to VIEWER",
    )
    assert decision.halted == decision.refusals[:1]
    assert vic.policy == "access.yaml", "the refused removal never took effect"
    assert decision.policy is not None
    assert decision.enforced


def test_an_admin_removes_access_yaml_and_roles_end(repo: AccessRepo,
                                                    people: dict[str, Person]) -> None:
    repo.commit(people["ops"], "no more roles", files={"access.yaml": None})
    repo.commit(people["vic"], "vic removes a sandbox", files={SANDBOX: None})

    decision = repo.authorize(repo.base)

    assert decision.allowed
    assert decision.commits[0].changes[0].role == "ADMIN"
    assert [c.policy for c in decision.commits] == ["access.yaml", "none"]
    assert decision.policy is None


def test_a_user_cannot_grant_themselves_a_right_in_the_commit_that_uses_it(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    repo.replace("access.yaml", '"VIEWER"', '"ADMIN"')
    grab = repo.commit(people["vic"], "vic makes himself ADMIN and deletes",
                       files={SANDBOX: None})
    later = repo.commit(people["vic"], "and deploys a template next", files={
        "templates/VIC.yaml": "template: VIC\ngateway: {branch: develop}\n"})

    decision = repo.authorize(repo.base)

    assert decision.refusals == (
        f"commit {grab[:7]} by vic@company.invalid (VIEWER): access.yaml: manage_access is not "
        "granted to VIEWER",
        f"commit {grab[:7]} by vic@company.invalid (VIEWER): sandboxes/QA-LOGIN-ERROR.yaml: "
        "delete_sandbox is not granted to VIEWER",
        f"commit {later[:7]} by vic@company.invalid (VIEWER): templates/VIC.yaml: "
        "manage_templates is not granted to VIEWER",
    )
    assert decision.policy is not None
    assert decision.policy.users["vic"].roles == ["VIEWER"]


def test_a_right_an_admin_grants_binds_from_the_next_commit(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    repo.replace("access.yaml", '"QA"', '"BACKEND"')
    repo.commit(people["ops"], "rina is BACKEND now")
    repo.commit(people["rina"], "rina removes a sandbox", files={SANDBOX: None})

    decision = repo.authorize(repo.base)

    assert decision.allowed, decision.refusals
    assert decision.commits[1].roles == ("BACKEND",)


# --- uncommitted changes ----------------------------------------------------------------------


def test_uncommitted_changes_are_never_authorised_while_access_yaml_is_in_force(
        repo: AccessRepo) -> None:
    repo.replace(SANDBOX, BRANCH, "branch: feature/uncommitted")
    repo.write({"ports.yaml": "allocations: []\n"})  # the reconciler's own file: exempt

    decision = repo.authorize(repo.base, check_worktree=True)

    assert decision.refusals == (
        "uncommitted: sandboxes/QA-LOGIN-ERROR.yaml: deploy is not granted: changes not "
        "committed are never authorised while access.yaml is in force",
    )
    assert decision.held == {"QA-LOGIN-ERROR"}
    assert [v.file for v in decision.uncommitted] == [SANDBOX]
    assert repo.authorize(repo.base).allowed, "without check_worktree only commits count"


def test_uncommitted_removal_of_access_yaml_halts(repo: AccessRepo) -> None:
    repo.write({"access.yaml": None})

    decision = repo.authorize(repo.base, check_worktree=True)

    assert decision.halted == (
        "uncommitted: access.yaml: manage_access is not granted: changes not committed are "
        "never authorised while access.yaml is in force",
    )


def test_without_access_yaml_uncommitted_changes_are_as_before(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = _fresh(tmp_path, people)
    repo.replace(SANDBOX, BRANCH, "branch: feature/local")

    decision = repo.authorize(None, check_worktree=True)

    assert decision.allowed and not decision.enforced


def test_an_uncommitted_access_yaml_is_never_a_trust_start(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = _fresh(tmp_path, people)
    repo.write({"access.yaml": access_yaml({people["ops"]: ["ADMIN"]})})

    decision = repo.authorize(None, check_worktree=True)

    assert decision.halted == (
        "uncommitted: access.yaml: manage_access is not granted: changes not committed are "
        "never authorised while access.yaml is in force",
    )


def test_a_state_directory_outside_git_with_access_yaml_applies_nothing(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = _fresh(tmp_path, people)
    state = tmp_path / "plain"
    repo.state.rename(state)
    (state / "access.yaml").write_text(access_yaml({people["ops"]: ["ADMIN"]}))

    decision = authorize_range(state, None, check_worktree=True)

    assert decision.halted and decision.held == {"QA-LOGIN-ERROR"}
    assert all(line.startswith("uncommitted: ") for line in decision.refusals)


def test_a_repository_without_a_commit_yet_is_all_uncommitted(
        tmp_path: Path, people: dict[str, Person]) -> None:
    repo = StateRepo(tmp_path / "repo")
    repo.write({"access.yaml": access_yaml({people["ops"]: ["ADMIN"]})})

    decision = repo.authorize(None, check_worktree=True)

    assert decision.head == "(nothing committed)"
    assert decision.halted and decision.held == {"QA-LOGIN-ERROR"}


def test_symbolic_links_in_the_state_are_never_authorised_content(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    """The loader follows links in the work tree; what a link points at is not what was
    committed. A committed link is a whole-file change (what a BACKEND may add), but the pass
    (check_worktree) sees its target as uncommitted, and a linked folder the same way."""
    (repo.root / "elsewhere").mkdir()
    (repo.root / "elsewhere" / "QA-LINK.yaml").write_text("sandbox: QA-LINK\nextends: QA-DEFAULT\n")
    (repo.state / "sandboxes" / "QA-LINK.yaml").symlink_to("../../elsewhere/QA-LINK.yaml")
    repo.commit(people["achmad"], "a linked sandbox")
    (repo.state / "templates").rename(repo.root / "elsewhere" / "templates")
    (repo.state / "templates").symlink_to("../elsewhere/templates")
    repo.commit(people["achmad"], "linked templates")
    (repo.state / "sandboxes" / "QA-LINK.yaml").unlink()
    (repo.state / "sandboxes" / "QA-LINK.yaml").symlink_to("../nodes.yaml")
    relinked = repo.commit(people["achmad"], "the link points elsewhere")

    committed = repo.authorize(repo.base)
    applied = repo.authorize(repo.base, check_worktree=True)

    assert committed.allowed
    assert [(v.aspect, str(v.permission)) for v in committed.commits[0].changes] == [
        ("(file)", "deploy")]
    (change, routes) = committed.commits[2].changes
    assert committed.commits[2].commit == relinked
    assert {str(change.permission), str(routes.permission)} == {"deploy", "manage_routes"}
    assert change.description.startswith("one version is not a readable YAML mapping")
    assert "QA-LINK" in applied.held
    uncommitted = {v.file for v in applied.uncommitted}
    assert {"sandboxes/QA-LINK.yaml", "templates/QA-DEFAULT.yaml"} <= uncommitted
