"""``AccessDecision`` as text and JSON, for ``sdp-reconcile authorize``. Pure.

Text: one refusal line per refused change on stdout (the contract other tools parse:
``commit 1a2b3c4 by rina@company.invalid (QA): sandboxes/QA-X.yaml: delete_sandbox is not
granted to QA``), and a one-line summary for people on stderr. JSON: ``decision_json``; its
shape is documented in docs/access.md.
"""

from __future__ import annotations

from typing import Any

from sdp_reconciler.access.decision import AccessDecision, ChangeVerdict, Grant


def summary(decision: AccessDecision) -> str:
    if not decision.enforced:
        return f"authorized: {decision.notice}"
    commits = len(decision.commits)
    counted = f"{commits} commit{'s' if commits != 1 else ''}"
    refused = [v for v in decision.verdicts if not v.allowed]
    if not refused:
        return f"authorized: every change of {counted} is allowed"
    in_effect = [v for v in refused if v.outstanding]
    held = ", ".join(sorted(decision.held))
    parts = [f"refused: {len(refused)} change{'s' if len(refused) != 1 else ''} in {counted}",
             f"{len(in_effect)} still in effect at HEAD"]
    if decision.halted:
        parts.append("nothing would be applied")
    elif held:
        parts.append(f"left as they run: {held}")
    return "; ".join(parts)


def _change(verdict: ChangeVerdict) -> dict[str, Any]:
    return {
        "file": verdict.file, "aspect": verdict.aspect, "permission": str(verdict.permission),
        "description": verdict.description, "sandbox": verdict.sandbox,
        "allowed": verdict.allowed, "role": verdict.role, "refusal": verdict.refusal,
        "outstanding": verdict.outstanding,
    }


def _grant(grant: Grant) -> dict[str, Any]:
    return {"commit": grant.commit, "author": grant.author, "user": grant.user,
            "permission": str(grant.permission), "role": grant.role, "file": grant.file,
            "aspect": grant.aspect}


def decision_json(decision: AccessDecision) -> dict[str, Any]:
    return {
        "base": decision.base,
        "head": decision.head,
        "enforced": decision.enforced,
        "allowed": decision.allowed,
        "notice": decision.notice,
        "refusals": list(decision.refusals),
        "halted": list(decision.halted),
        "commits": [
            {"commit": c.commit, "parents": list(c.parents), "author": c.author,
             "user": c.user, "roles": list(c.roles), "signature": c.signature,
             "rules": c.policy, "allowed": c.allowed,
             "changes": [_change(v) for v in c.changes]}
            for c in decision.commits
        ],
        "uncommitted": [_change(v) for v in decision.uncommitted],
        "stale": [{"commit": v.commit, **_change(v)} for v in decision.stale],
        "sandboxes": {
            name: {"authorised": s.authorised, "refusals": list(s.refusals),
                   "grants": [_grant(g) for g in s.grants]}
            for name, s in sorted(decision.sandboxes.items())
        },
        "files": {path: list(lines) for path, lines in decision.files.items()},
        "next_base": decision.next_base,
    }
