"""The integration surface: ``authorize_range(state_dir, base, head) -> AccessDecision``.

What the pass calls before it plans, and what ``sdp-reconcile authorize`` prints:

    decision = authorize_range(state.root, base=last_applied_commit, check_worktree=True)
    if decision.notice: report(decision.notice)          # no access.yaml: once per pass
    if decision.halted: apply nothing; show decision.halted
    for name in decision.held: leave sandbox `name` as it runs; show decision.sandbox(name).refusals
    audit: decision.sandbox(name).grant_for(service) -> commit, permission, role
    record decision.next_base as the base of the next pass

``base`` is the last state commit the reconciler applied (trusted: its access.yaml is the rule
for the first commit of the range); None checks the whole history from the root commit, where
the trust start applies. ``check_worktree`` adds the state directory's uncommitted changes
(compared with ``head``), which are never authorised while access.yaml is in force. Reads git
objects through dulwich and runs ``ssh-keygen`` for signed commits; judging itself is pure
(``judging.judge``).
"""

from __future__ import annotations

from pathlib import Path

from sdp_reconciler.access.decision import AccessDecision
from sdp_reconciler.access.facts import AccessVersion, RangeFacts
from sdp_reconciler.access.gitrange import (
    AccessError,
    Snapshot,
    StateHistory,
    diff,
    gather,
    usage,
    worktree_snapshot,
)
from sdp_reconciler.access.identity import SignatureFacts
from sdp_reconciler.access.judging import judge
from sdp_reconciler.access.model import ACCESS_FILE
from sdp_reconciler.access.signatures import SignatureVerifier

__all__ = ["AccessDecision", "AccessError", "SignatureVerifier", "authorize_range",
           "parse_range"]

NOTHING_COMMITTED = "(nothing committed)"
_VERIFIER = SignatureVerifier()


def authorize_range(
    state_dir: Path, base: str | None, head: str = "HEAD", *, check_worktree: bool = False,
    verifier: SignatureVerifier | None = None,
) -> AccessDecision:
    """Judge every commit of ``base..head`` that touches ``state_dir`` (and, with
    ``check_worktree``, its uncommitted changes). Raises AccessError when the range cannot be
    read (an unknown revision, a shallow clone); a state directory outside any repository
    judges only the work tree (everything in it is uncommitted)."""
    verifier = verifier or _VERIFIER
    history = StateHistory.open(state_dir)
    if history is None:
        return _without_repository(state_dir, check_worktree=check_worktree)
    try:
        if head == "HEAD" and not history.has_commits():
            # a repository without a commit yet: nothing is committed, all is uncommitted
            return _without_repository(state_dir, check_worktree=check_worktree)
        head_commit = history.resolve(head)
        base_commit = history.resolve(base) if base is not None else None
        facts = gather(history, base_commit, head_commit,
                       worktree=worktree_snapshot(state_dir) if check_worktree else None)
        commits = {c.sha: c for c in facts.commits}

        def signature(sha: str) -> SignatureFacts:
            assert sha in commits
            return verifier.check(history.commit(sha.encode()))

        return judge(facts, signature)
    finally:
        history.close()


def _without_repository(state_dir: Path, *, check_worktree: bool) -> AccessDecision:
    if not check_worktree:
        raise AccessError(f"{state_dir} is not in a git repository with a commit: authorize "
                          "judges commits")
    worktree = worktree_snapshot(state_dir)
    facts = RangeFacts(
        base=None, head=NOTHING_COMMITTED, base_access=AccessVersion(), commits=(),
        usage=usage(worktree), worktree=diff(Snapshot.empty(), worktree),
        worktree_access=ACCESS_FILE in worktree.files,
    )
    return judge(facts, _no_commits)


def _no_commits(sha: str) -> SignatureFacts:
    raise AssertionError(f"there is no commit {sha} to check")  # pragma: no cover


def parse_range(text: str) -> tuple[str | None, str]:
    """``BASE..HEAD`` -> (BASE, HEAD); ``HEAD`` alone -> (None, HEAD): from the root commit;
    ``BASE..`` -> (BASE, 'HEAD')."""
    if "..." in text:
        raise AccessError(f"{text!r}: give a range as BASE..HEAD (two dots), not BASE...HEAD")
    base, dots, head = text.partition("..")
    if not dots:
        return None, text
    if not base:
        raise AccessError(f"{text!r}: the range needs a BASE before '..' (or give HEAD alone "
                          "to check from the root commit)")
    return base, head or "HEAD"
