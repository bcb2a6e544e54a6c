"""Apply one source change (``snapshot --data``, ``drop-source``) as a pass of its own.

Thin: the change was decided by ``planner.captureplanning``. It is carried out like any plan
(``Applier``: the INFRA node's lease, the agent's operation, the events, one deployment row
and one audit row, ``capture source`` or ``drop source``), in a pass recorded in the history
with its mode, so ``status`` and the page show who captured or dropped what, and when.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sdp_node.protocol import OperationEvent
from sdp_reconciler.apply.applying import Applier
from sdp_reconciler.apply.reconcile import Prepared
from sdp_reconciler.history import History
from sdp_reconciler.observe import credentials as creds
from sdp_reconciler.planner.plan import Change, Plan
from sdp_reconciler.state.gitinfo import Authorship, StateRepository


def apply_change(
    prepared: Prepared, change: Change, *, history: History, mode: str,
    progress: Callable[[Change, OperationEvent], None] | None = None,
    env: Mapping[str, str] | None = None, lease_wait: float | None = None,
) -> str | None:
    """Run ``change``; None when it succeeded, else why not (the agent's message)."""
    runner = creds.runner(env)
    repository = StateRepository(prepared.state.root)
    pass_id = history.start_pass(mode=mode, runner=runner, state_revision=repository.revision)
    try:
        def authorship(sandbox: str) -> Authorship:
            document = prepared.state.sandboxes.get(sandbox)
            if document is None:
                return Authorship(author=None, uncommitted=False)
            return repository.authorship(document.path)

        applier = Applier(
            clients=prepared.clients, history=history, pass_id=pass_id, runner=runner,
            credentials=None, redactor=prepared.redactor, authorship=authorship,
            grant=prepared.access.grant, progress=progress,
            **({"lease_wait": lease_wait} if lease_wait is not None else {}),
        )
        plan = Plan(changes=(change,))
        outcome = applier.run(plan)
        result = outcome.results.get(change.step_id)
        failure = None if outcome.ok(change) else prepared.redactor(
            result.message if result is not None else outcome.errors.get(change.step_id, "?"))
        history.finish_pass(pass_id, status="CONVERGED" if failure is None else "NOT_CONVERGED",
                            summary=plan.summary())
        return failure
    except BaseException as e:
        history.finish_pass(pass_id, status="ERROR", summary=prepared.redactor(str(e)))
        raise
    finally:
        repository.close()


__all__ = ["apply_change"]
