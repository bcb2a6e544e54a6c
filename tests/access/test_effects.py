"""What a refusal means for the pass, encoded in the decision: which sandboxes are left as
they run, what halts everything, which grants back each sandbox's content, how a refusal is
superseded, and how merges are judged. Real git repositories throughout."""

from __future__ import annotations

from tests.access.conftest import AccessRepo
from tests.access.gitrepo import EXAMPLE_STATE, SANDBOX, Person

BRANCH = "branch: feature/login-error"
OTHER = "sandboxes/QA-OTHER.yaml"


def _second_sandbox(repo: AccessRepo, people: dict[str, Person]) -> str:
    """A second sandbox, from ACCOUNT-TESTING, added by achmad: the new base."""
    return repo.commit(people["achmad"], "another sandbox", files={
        OTHER: "sandbox: QA-OTHER\nextends: ACCOUNT-TESTING\n"})


def test_an_unauthorised_sandbox_is_held_while_an_authorised_one_is_not(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    base = _second_sandbox(repo, people)
    repo.replace(SANDBOX, BRANCH, "branch: feature/vic")
    repo.commit(people["vic"], "vic deploys")
    repo.replace(OTHER, "extends: ACCOUNT-TESTING", "extends: ACCOUNT-TESTING\n"
                 "services: {account: {branch: feature/rina}}")
    rina = repo.commit(people["rina"], "rina deploys")

    decision = repo.authorize(base)

    assert decision.held == {"QA-LOGIN-ERROR"}
    assert decision.sandbox("QA-OTHER").authorised
    grant = decision.sandbox("QA-OTHER").grant_for("account")
    assert grant is not None
    assert (grant.commit, grant.user, grant.permission, grant.role) == (
        rina, "rina", "deploy", "QA")
    assert decision.next_base == base, "a held change is judged again next pass"


def test_an_unauthorised_template_change_holds_every_sandbox_that_uses_it(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    base = _second_sandbox(repo, people)
    repo.replace("templates/QA-DEFAULT.yaml", "branch: develop", "branch: release")
    line_commit = repo.commit(people["rina"], "QA edits a template")

    decision = repo.authorize(base)

    line = (f"commit {line_commit[:7]} by rina@company.invalid (QA): templates/QA-DEFAULT.yaml: "
            "manage_templates is not granted to QA")
    assert decision.sandbox("QA-LOGIN-ERROR").refusals == (line,)
    assert decision.sandbox("QA-OTHER").authorised, "QA-OTHER extends ACCOUNT-TESTING"
    assert decision.files == {"templates/QA-DEFAULT.yaml": (line,)}
    assert decision.halted == ()


def test_an_unauthorised_environment_change_holds_the_sandboxes_that_use_it(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    base = repo.commit(people["achmad"], "a sandbox without an environment", files={
        OTHER: "sandbox: QA-OTHER\ngateway: {branch: develop}\n"})
    repo.replace("environments/qa.yaml", "DB_PORT: 5432", "DB_PORT: 6543")
    repo.commit(people["vic"], "vic edits the qa environment")

    decision = repo.authorize(base)

    assert decision.held == {"QA-LOGIN-ERROR"}  # through its template's 'environment: qa'


def test_an_unauthorised_nodes_change_halts_the_pass(repo: AccessRepo,
                                                     people: dict[str, Person]) -> None:
    repo.replace("nodes.yaml", "first: 9001", "first: 9101")
    sha = repo.commit(people["achmad"], "backend edits nodes.yaml")

    decision = repo.authorize(repo.base)

    assert decision.halted == (
        f"commit {sha[:7]} by achmad@company.invalid (BACKEND): nodes.yaml: manage_nodes is "
        "not granted to BACKEND",
    )
    assert decision.held == frozenset()


def test_a_revert_by_someone_with_the_permission_supersedes_a_refusal(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    repo.replace(SANDBOX, BRANCH, "branch: feature/vic")
    repo.commit(people["vic"], "vic deploys")
    repo.git("revert", "--no-edit", "HEAD", person=people["rina"])

    decision = repo.authorize(repo.base)

    assert len(decision.refusals) == 1, "authorize still reports the refused commit"
    assert not decision.allowed
    assert decision.held == frozenset()
    assert [v.outstanding for c in decision.commits for v in c.changes] == [False, True]
    assert decision.next_base == repo.head()


def test_an_authorised_edit_of_another_key_does_not_launder_a_refusal(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    """vic moves the branch; rina then changes the same service's CPU: the branch vic set is
    still his, so the sandbox stays held."""
    repo.replace(SANDBOX, BRANCH, "branch: feature/vic")
    vic = repo.commit(people["vic"], "vic deploys")
    repo.replace(SANDBOX, "cpu: 500m", "cpu: 750m")
    repo.commit(people["rina"], "rina tunes the CPU")

    decision = repo.authorize(repo.base)

    assert decision.sandbox("QA-LOGIN-ERROR").refusals == (
        f"commit {vic[:7]} by vic@company.invalid (VIEWER): sandboxes/QA-LOGIN-ERROR.yaml: "
        "deploy is not granted to VIEWER",
    )
    aspects = {g.aspect for g in decision.sandbox("QA-LOGIN-ERROR").grants}
    assert aspects == {"services.account.resources.cpu"}


def test_merging_a_pull_request_does_not_authorise_its_commits(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    repo.git("checkout", "-q", "-b", "vic-pr")
    repo.replace(SANDBOX, BRANCH, "branch: feature/vic")
    vic = repo.commit(people["vic"], "vic's pull request")
    repo.git("checkout", "-q", "main")
    repo.replace("templates/ACCOUNT-TESTING.yaml", "branch: feature/account",
                 "branch: feature/account-2")
    repo.commit(people["achmad"], "meanwhile on main")
    repo.git("merge", "-q", "--no-ff", "--no-edit", "vic-pr", person=people["ops"])

    decision = repo.authorize(repo.base)

    merge = decision.commits[-1]
    assert repo.authorize(repo.base, "HEAD^2").commits[-1].commit == vic
    assert len(merge.parents) == 2 and merge.user == "ops"
    assert merge.changes == ()
    assert decision.sandbox("QA-LOGIN-ERROR").refusals == (
        f"commit {vic[:7]} by vic@company.invalid (VIEWER): sandboxes/QA-LOGIN-ERROR.yaml: "
        "deploy is not granted to VIEWER",
    )


def test_a_merge_is_judged_for_what_it_changes_itself(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    """Two branches set the same key; vic's merge resolves the conflict with a third value."""
    repo.git("checkout", "-q", "-b", "side")
    repo.replace(SANDBOX, BRANCH, "branch: feature/side")
    repo.commit(people["rina"], "side")
    repo.git("checkout", "-q", "main")
    repo.replace(SANDBOX, BRANCH, "branch: feature/main")
    repo.commit(people["achmad"], "main")
    conflict = repo.try_git("merge", "-q", "--no-edit", "side", person=people["vic"])
    assert conflict.returncode != 0, "the two branches conflict"
    resolved = (EXAMPLE_STATE / SANDBOX).read_text().replace(BRANCH, "branch: feature/vic")
    sha = repo.commit(people["vic"], "vic resolves the conflict his way",
                      files={SANDBOX: resolved})

    decision = repo.authorize(repo.base)

    assert len(decision.commits[-1].parents) == 2
    assert decision.sandbox("QA-LOGIN-ERROR").refusals == (
        f"commit {sha[:7]} by vic@company.invalid (VIEWER): sandboxes/QA-LOGIN-ERROR.yaml: "
        "deploy is not granted to VIEWER",
    )


def test_a_branch_forked_before_a_role_was_taken_is_judged_by_todays_rules(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    repo.git("branch", "old-fork")
    repo.replace("access.yaml", '"QA"', '"VIEWER"')
    base = repo.commit(people["ops"], "rina is VIEWER now")
    repo.git("checkout", "-q", "old-fork")
    repo.replace(SANDBOX, BRANCH, "branch: feature/rina")
    rina = repo.commit(people["rina"], "rina, on a branch from before")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "--no-edit", "old-fork", person=people["ops"])

    decision = repo.authorize(base)

    assert decision.refusals == (
        f"commit {rina[:7]} by rina@company.invalid (VIEWER): sandboxes/QA-LOGIN-ERROR.yaml: "
        "deploy is not granted to VIEWER",
    )
    assert decision.held == {"QA-LOGIN-ERROR"}


def _merge_with(repo: AccessRepo, person: Person, old: str, *, take: str) -> str:
    """A merge of HEAD and the old commit ``old`` whose tree takes ``take`` (a path under
    state/) from ``old``: what git's plumbing (and a push) allows, though 'git merge' of an
    ancestor would say 'Already up to date'."""
    repo.git("checkout", old, "--", f"state/{take}")
    tree = repo.git("write-tree")
    sha = repo.git("commit-tree", tree, "-p", "HEAD", "-p", old, "-m", "merge", person=person)
    repo.git("reset", "-q", "--hard", sha)
    return sha


def test_a_merge_naming_an_old_commit_cannot_bring_back_old_access_rules(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    """rina loses QA; she then merges an old commit, keeping its access.yaml (where she is
    still QA): that is her own change of access.yaml, refused, and the rules stay."""
    old = repo.base
    repo.replace("access.yaml", '"QA"', '"VIEWER"')
    base = repo.commit(people["ops"], "rina is VIEWER now")
    merge = _merge_with(repo, people["rina"], old, take="access.yaml")
    repo.commit(people["rina"], "and deploys", files={
        "sandboxes/QA-NEW.yaml": "sandbox: QA-NEW\nextends: QA-DEFAULT\n"})

    decision = repo.authorize(base)

    assert decision.refusals[0] == (
        f"commit {merge[:7]} by rina@company.invalid (VIEWER): access.yaml: manage_access is "
        "not granted to VIEWER")
    assert decision.halted == decision.refusals[:1]
    assert decision.commits[-1].roles == ("VIEWER",)
    assert "QA-NEW" in decision.held
    assert decision.policy is not None and decision.policy.users["rina"].roles == ["VIEWER"]


def test_a_merge_naming_an_old_commit_cannot_bring_back_a_removed_sandbox(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    old = repo.base
    base = repo.commit(people["achmad"], "removed", files={SANDBOX: None})
    merge = _merge_with(repo, people["vic"], old, take=SANDBOX)

    decision = repo.authorize(base)

    assert decision.refusals == (
        f"commit {merge[:7]} by vic@company.invalid (VIEWER): sandboxes/QA-LOGIN-ERROR.yaml: "
        "deploy is not granted to VIEWER",)
    assert decision.held == {"QA-LOGIN-ERROR"}


def test_a_history_without_base_cannot_bring_back_old_values(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    """HEAD rewritten onto an older commit (a force-push): what BASE had changed since comes
    back without any commit of the range making it, and is refused."""
    old = repo.base
    repo.replace(SANDBOX, BRANCH, "branch: feature/applied")
    base = repo.commit(people["rina"], "the branch SDP applied")
    repo.git("reset", "-q", "--hard", old)
    repo.commit(people["rina"], "rewritten history", files={"README.md": "x\n"})

    decision = repo.authorize(base)

    assert decision.refusals == (
        f"commit {old[:7]} (outside the range): sandboxes/QA-LOGIN-ERROR.yaml: deploy is not "
        "granted: HEAD has this commit's services.account.branch, not BASE's, and no commit "
        "of the range makes that change",)
    assert decision.held == {"QA-LOGIN-ERROR"}
    assert [v.aspect for v in decision.stale] == ["services.account.branch"]
