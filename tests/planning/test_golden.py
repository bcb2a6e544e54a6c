"""Golden plans: the ``plan --json`` output and the steps of fixed inputs, kept as files.

The reorganisation of issue 10 must not change a single plan. These inputs are the example
state (``state/`` at the top of the repository, loaded and resolved as ``reconcile.prepare``
does, against the standard in-memory installation of the planner tests) and every case of the
planner's table test, each planned as ``sdp-reconcile plan --json`` would print it.

To record the files again after an intended change of the plan (never for a refactoring):
``SDP_GOLDEN_UPDATE=1 .venv/bin/pytest tests/planning/test_golden.py``, then review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from msgspec.structs import asdict

from sdp_reconciler.observe.credentials import resolve_environments
from sdp_reconciler.planner.plan import Plan
from sdp_reconciler.state.loading import load_state
from sdp_reconciler.state.resolve import resolve_all
from tests.planning.builders import HEADS, Desired, nodes, plan_pass, sha
from tests.planning.test_plan_table import CASES

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden")
UPDATE = os.environ.get("SDP_GOLDEN_UPDATE") == "1"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def recorded(result: Plan) -> str:
    """``plan --json``, then the rendered plan, then every change's step and route choices
    (what the applier sends; a refactoring must not change a byte of it either)."""
    steps = [
        {"step": c.step.model_dump(mode="json"),
         "routes": [asdict(r) for r in c.routes]}
        for c in result.changes
    ]
    text = "\n\n".join([result.to_json(), result.render(), json.dumps(steps, indent=2)])
    return text.replace(str(ROOT), "<root>")


def check(name: str, result: Plan) -> None:
    text = recorded(result)
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        path.write_text(text + "\n", encoding="utf-8")
    assert path.exists(), f"{path} missing: record it with SDP_GOLDEN_UPDATE=1"
    assert text + "\n" == path.read_text(encoding="utf-8"), f"the plan of {name} changed"


def example_desired() -> Desired:
    state = load_state(ROOT / "state")
    environments, errors = resolve_environments(
        state, {"SDP_SECRET_QA_JWT": "golden-canary-jwt-secret"})
    assert not errors
    heads = {**HEADS, "account": {**HEADS["account"], "feature/account": sha("acc0acc")}}
    return Desired(resolve_all(state), heads=heads, environments=environments)


def test_example_state_plan_is_unchanged() -> None:
    check("example-state", plan_pass(example_desired(), nodes()).plan)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_table_case_plan_is_unchanged(case: object) -> None:
    from tests.planning.test_plan_table import Case

    assert isinstance(case, Case)
    check("table-" + slug(case.id), plan_pass(case.desired, case.observed()).plan)
