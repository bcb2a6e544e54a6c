"""``require_signed_commits``: real SSH-signed commits (``git commit -S`` with gpg.format=ssh,
which runs ``ssh-keygen -Y sign``), checked with ``ssh-keygen -Y verify``.

A commit counts only when it is signed with the key access.yaml lists for its author's user:
unsigned commits, keys access.yaml does not list, a forged commit whose author email claims
the ADMIN but whose signature is another user's, and a signature moved onto another commit are
all refused.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from dulwich.objects import Commit
from dulwich.repo import Repo

from sdp_reconciler.access.identity import SignatureStatus
from sdp_reconciler.access.signatures import SignatureVerifier
from tests.access.conftest import standard_access
from tests.access.gitrepo import SANDBOX, Person, StateRepo

BRANCH = "branch: feature/login-error"


@pytest.fixture
def signed(tmp_path: Path, people: dict[str, Person]) -> StateRepo:
    """access.yaml with every user's key and require_signed_commits, introduced signed by ops."""
    repo = StateRepo(tmp_path / "repo")
    repo.commit(people["ops"], "the example state")
    repo.commit(people["ops"], "roles, signed", sign=people["ops"],
                files={"access.yaml": standard_access(people, require_signed=True)})
    return repo


def _deploy(repo: StateRepo, person: Person, *, sign: Person | None, to: str) -> str:
    repo.replace(SANDBOX, BRANCH, f"branch: {to}")
    return repo.commit(person, f"deploy {to}", sign=sign)


def test_commits_signed_with_their_authors_keys_are_allowed(
        signed: StateRepo, people: dict[str, Person]) -> None:
    base = signed.head()
    _deploy(signed, people["rina"], sign=people["rina"], to="feature/a")
    signed.commit(people["achmad"], "template", sign=people["achmad"], files={
        "templates/NEW.yaml": "template: NEW\ngateway: {branch: develop}\n"})

    decision = signed.authorize(base)

    assert decision.allowed, decision.refusals
    assert [c.signature for c in decision.commits] == ["verified", "verified"]
    assert [c.user for c in decision.commits] == ["rina", "achmad"]


def test_the_trust_start_itself_was_signed_by_the_admin(signed: StateRepo) -> None:
    decision = signed.authorize(None)

    assert decision.allowed, decision.refusals
    introduction = decision.commits[1].changes[0]
    assert (introduction.file, introduction.role) == ("access.yaml", "ADMIN")


def test_an_unsigned_commit_is_refused(signed: StateRepo, people: dict[str, Person]) -> None:
    base = signed.head()
    sha = _deploy(signed, people["ops"], sign=None, to="feature/unsigned")

    decision = signed.authorize(base)

    assert decision.refusals == (
        f"commit {sha[:7]} by ops@company.invalid (ADMIN): sandboxes/QA-LOGIN-ERROR.yaml: "
        "deploy is not granted: the commit is not signed, and access.yaml requires signed "
        "commits",
    )
    assert decision.held == {"QA-LOGIN-ERROR"}


def test_a_forged_admin_commit_signed_with_another_users_key_is_refused(
        signed: StateRepo, people: dict[str, Person]) -> None:
    """rina writes ops's email as the author (so the email claims the ADMIN) and signs with
    her own key: the signature is valid, but not by the key access.yaml lists for ops."""
    base = signed.head()
    forged = signed.commit(people["ops"], "ops, honest", sign=people["rina"],
                           files={SANDBOX: None})

    decision = signed.authorize(base)

    assert signed.git("log", "-1", "--format=%ae") == "ops@company.invalid"
    assert decision.refusals == (
        f"commit {forged[:7]} by ops@company.invalid (ADMIN): sandboxes/QA-LOGIN-ERROR.yaml: "
        "delete_sandbox is not granted: it is signed with rina's key, not with the key "
        "access.yaml lists for ops",
    )
    assert decision.commits[0].roles == ("ADMIN",)
    assert decision.commits[0].signature == "other key"
    assert decision.commits[0].changes[0].role is None


def test_a_key_access_yaml_does_not_list_is_refused(
        signed: StateRepo, people: dict[str, Person]) -> None:
    base = signed.head()
    sha = _deploy(signed, people["rina"], sign=people["eve"], to="feature/eve")

    decision = signed.authorize(base)

    assert decision.refusals == (
        f"commit {sha[:7]} by rina@company.invalid (QA): sandboxes/QA-LOGIN-ERROR.yaml: "
        "deploy is not granted: it is signed with a key access.yaml does not list, not with "
        "the key access.yaml lists for rina",
    )


def test_a_signature_copied_onto_another_commit_does_not_verify(
        signed: StateRepo, people: dict[str, Person]) -> None:
    """Take ops's valid signature and graft it onto a commit with other content: the blob
    still names ops's key, but ssh-keygen rejects it for this payload."""
    base = signed.head()
    _deploy(signed, people["ops"], sign=people["ops"], to="feature/genuine")
    raw = signed.git("cat-file", "commit", "HEAD")
    tree = signed.git("rev-parse", "HEAD^{tree}")
    signed.git("reset", "-q", "--hard", base)
    _deploy(signed, people["ops"], sign=None, to="feature/evil")
    evil_tree = signed.git("rev-parse", "HEAD^{tree}")
    tampered = raw.replace(f"tree {tree}", f"tree {evil_tree}", 1) + "\n"
    sha = subprocess.run(["git", "-C", str(signed.root), "hash-object", "-t", "commit", "-w",
                          "--stdin"], input=tampered, capture_output=True, text=True,
                         check=True).stdout.strip()
    signed.git("update-ref", "refs/heads/main", sha)

    decision = signed.authorize(base)

    assert decision.commits[0].commit == sha
    (line,) = decision.refusals
    assert line.startswith(f"commit {sha[:7]} by ops@company.invalid (ADMIN): "
                           "sandboxes/QA-LOGIN-ERROR.yaml: deploy is not granted: its SSH "
                           "signature does not verify (")
    assert decision.commits[0].signature == "invalid"


def test_a_user_without_a_signing_key_cannot_author_under_signed_commits(
        signed: StateRepo, people: dict[str, Person]) -> None:
    document = standard_access(people, require_signed=True)
    without_vic = document.replace(f'"signing_key": "{people["vic"].public_key}"',
                                   '"signing_key": null')
    signed.commit(people["ops"], "vic has no key", sign=people["ops"],
                  files={"access.yaml": without_vic})
    base = signed.head()
    signed.commit(people["vic"], "a README only", sign=people["vic"], files={
        "README.md": "not state\n"})
    sha = signed.commit(people["vic"], "remove", sign=people["vic"], files={SANDBOX: None})

    decision = signed.authorize(base)

    assert decision.commits[0].allowed
    assert decision.refusals == (
        f"commit {sha[:7]} by vic@company.invalid (VIEWER): sandboxes/QA-LOGIN-ERROR.yaml: "
        "delete_sandbox is not granted: access.yaml lists no signing_key for vic, and it "
        "requires signed commits",
    )


def test_turning_signing_on_binds_from_the_next_commit(
        tmp_path: Path, people: dict[str, Person]) -> None:
    """The commit that sets require_signed_commits is judged by the rules before it (no
    signature needed); the commit after it must be signed."""
    repo = StateRepo(tmp_path / "repo")
    repo.commit(people["ops"], "state")
    base = repo.commit(people["ops"], "roles", files={
        "access.yaml": standard_access(people, keys=True)})
    repo.commit(people["ops"], "sign from now on", files={
        "access.yaml": standard_access(people, require_signed=True)})
    after = _deploy(repo, people["rina"], sign=None, to="feature/late")

    decision = repo.authorize(base)

    assert [c.allowed for c in decision.commits] == [True, False]
    assert decision.refusals[0].startswith(f"commit {after[:7]} by rina@company.invalid (QA)")
    assert "not signed" in decision.refusals[0]


def test_verifier_reports_what_each_signature_proves(
        signed: StateRepo, people: dict[str, Person]) -> None:
    _deploy(signed, people["rina"], sign=people["rina"], to="feature/x")
    signed.commit(people["rina"], "unsigned", files={"README.md": "notes\n"})
    verifier = SignatureVerifier()
    with Repo(str(signed.root)) as repo:
        unsigned = repo[repo.head()]
        assert isinstance(unsigned, Commit)
        signed_commit = repo[unsigned.parents[0]]
        assert isinstance(signed_commit, Commit)
        facts = verifier.check(signed_commit)
        assert verifier.check(signed_commit) is facts
        assert verifier.check(unsigned).status is SignatureStatus.UNSIGNED
    assert facts.status is SignatureStatus.VALID
    assert facts.key is not None
    assert base64.b64encode(facts.key).decode() == people["rina"].public_key.split()[1]


def test_a_gpg_signature_is_not_an_ssh_signature(
        signed: StateRepo, people: dict[str, Person]) -> None:
    base = signed.head()
    signed.commit(people["ops"], "remove", files={SANDBOX: None})
    header, _, message = signed.git("cat-file", "commit", "HEAD").partition("\n\n")
    pgp = "gpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEzBAABCAAdFiEE\n -----END PGP SIGNATURE-----"
    sha = subprocess.run(["git", "-C", str(signed.root), "hash-object", "-t", "commit", "-w",
                          "--stdin"], input=f"{header}\n{pgp}\n\n{message}\n",
                         capture_output=True, text=True, check=True).stdout.strip()
    signed.git("update-ref", "refs/heads/main", sha)

    decision = signed.authorize(base)

    assert decision.commits[0].signature == "not-ssh"
    assert decision.refusals == (
        f"commit {sha[:7]} by ops@company.invalid (ADMIN): sandboxes/QA-LOGIN-ERROR.yaml: "
        "delete_sandbox is not granted: the commit's signature is not an SSH signature "
        "(access.yaml requires SSH-signed commits)",
    )
