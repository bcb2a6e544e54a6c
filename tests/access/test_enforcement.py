"""``enforcement``: what the pass judges, where it judges from, what it keeps for the next pass.

Real git repositories (``gitrepo``) and a real history database; no node is involved (the
end-to-end behaviour is ``tests/e2e/test_access.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

from sdp_reconciler.access.effects import NOT_ENFORCED
from sdp_reconciler.access.enforcement import (
    BASE_KEY,
    ENFORCED_KEY,
    ROLES_KEY,
    audit_refusals,
    enforce,
    record,
    roles_in_force,
)
from sdp_reconciler.history import History
from tests.access.conftest import AccessRepo
from tests.access.gitrepo import SANDBOX, Person


def test_without_access_yaml_nothing_is_judged_not_even_a_directory_outside_git(
        tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    (tmp_path / "state").mkdir()
    enforcement = enforce(tmp_path / "state", has_access_file=False, history=history)
    assert enforcement.decision is None and enforcement.notes == (NOT_ENFORCED,)
    assert enforcement.held == frozenset() and enforcement.problems({}) == []
    record(history, enforcement)
    assert history.meta(BASE_KEY) is None and history.meta(ENFORCED_KEY) is None


def test_the_next_pass_judges_from_the_recorded_base_and_a_held_change_is_judged_again(
        repo: AccessRepo, people: dict[str, Person], tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    history.set_meta(BASE_KEY, repo.base)
    history.set_meta(ENFORCED_KEY, "1")
    repo.replace(SANDBOX, "branch: feature/login-error", "branch: feature/vic")
    vic = repo.commit(people["vic"], "vic moves QA-LOGIN-ERROR")

    enforcement = enforce(repo.state, has_access_file=True, history=history)
    assert enforcement.held == {"QA-LOGIN-ERROR"}
    [problem] = enforcement.problems({"QA-LOGIN-ERROR": SANDBOX})
    assert str(problem).startswith(f"{SANDBOX}:1:1: commit {vic[:7]} by vic@company.invalid "
                                   "(VIEWER): ")
    record(history, enforcement)
    assert history.meta(BASE_KEY) == repo.base, "a refusal in effect keeps the base"
    assert json.loads(history.meta(ROLES_KEY) or "{}")["rina"] == ["QA"]
    assert roles_in_force(history, "vic") == ("VIEWER",)
    assert roles_in_force(history, "nobody") == ()
    assert audit_refusals(history, enforcement, runner="ci") == 1
    assert audit_refusals(history, enforcement, runner="ci") == 0, "audited once"

    repo.replace(SANDBOX, "branch: feature/vic", "branch: feature/login-error")
    repo.commit(people["rina"], "rina reverts it")
    again = enforce(repo.state, has_access_file=True, history=history)
    assert again.held == frozenset()
    record(history, again)
    assert history.meta(BASE_KEY) == repo.head(), "nothing refused: the base moves to HEAD"


def test_removing_access_yaml_is_judged_because_a_pass_enforced_it(
        repo: AccessRepo, people: dict[str, Person], tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    record(history, enforce(repo.state, has_access_file=True, history=history))
    assert history.meta(ENFORCED_KEY) == "1"
    repo.commit(people["rina"], "rina drops the roles", files={"access.yaml": None})

    enforcement = enforce(repo.state, has_access_file=False, history=history)
    assert enforcement.halted and "manage_access is not granted to QA" in enforcement.halted[0]
    assert enforcement.everything_held({"A", "B"}) == {"A", "B"}
    assert [str(p) for p in enforcement.problems({})] == [
        f"access.yaml:1:1: nothing is applied: {enforcement.halted[0]}"]


def test_a_base_that_left_the_history_is_dropped_for_the_root_with_a_note(
        repo: AccessRepo, tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    history.set_meta(BASE_KEY, "0" * 40)
    enforcement = enforce(repo.state, has_access_file=True, history=history)
    assert enforcement.decision is not None and enforcement.decision.base is None
    assert any("no longer in the state's history" in note for note in enforcement.notes)


def test_an_access_yaml_outside_git_applies_nothing(tmp_path: Path,
                                                   people: dict[str, Person]) -> None:
    import shutil

    from tests.access.conftest import standard_access
    from tests.access.gitrepo import EXAMPLE_STATE

    state = tmp_path / "state"
    shutil.copytree(EXAMPLE_STATE, state)
    (state / "access.yaml").write_text(standard_access(people))
    enforcement = enforce(state, has_access_file=True, history=None)
    assert enforcement.halted, enforcement.decision
    assert enforcement.everything_held({"QA-LOGIN-ERROR"}) == {"QA-LOGIN-ERROR"}
