"""The corpus of broken state directories: one folder per case, the expected problems as data.

``corpus/<case>/`` holds the files that differ from the example ``state/`` (same relative
paths) and ``expected.txt``: the exact problem lines the loader must report, each
``file:line:col: path: message`` with the file relative to the state directory, in the order
``StateError`` sorts them. Optional ``delete.txt`` lists example files to remove first;
optional ``forbidden.txt`` lists strings (secret values) that no message may contain. Adding a
case is adding a folder; the case's name starts with its category (see ``CATEGORIES``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml.composer import Composer

from sdp_reconciler.errors import StateError
from sdp_reconciler.state import rules, sources
from sdp_reconciler.state.loading import LoadedState, load_state
from sdp_reconciler.state.sources import MAX_FILE_BYTES, Problem
from tests.state.conftest import copy_example, problems_of, relative_lines, snapshot

CORPUS = Path(__file__).parent / "corpus"
META_FILES = {"expected.txt", "delete.txt", "forbidden.txt"}
CATEGORIES = ("syntax", "schema", "cross", "security", "multi")
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [
        line for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def build_case(case: str, destination: Path) -> Path:
    """The example state with ``case``'s files laid over it, at ``destination``."""
    root = copy_example(destination)
    folder = CORPUS / case
    for deleted in _lines(folder / "delete.txt"):
        (root / deleted).unlink()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_dir() or str(relative) in META_FILES:
            continue
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return root


@pytest.mark.parametrize("case", CASES)
def test_case_reports_exactly_the_expected_problems(case: str, tmp_path: Path) -> None:
    root = build_case(case, tmp_path / "state")
    before = snapshot(root)

    reported = problems_of(root)

    assert reported == _lines(CORPUS / case / "expected.txt")
    assert snapshot(root) == before, "validating must not change the state directory"


@pytest.mark.parametrize(
    "case", [c for c in CASES if (CORPUS / c / "forbidden.txt").exists()]
)
def test_secret_values_never_appear_in_messages(case: str, tmp_path: Path) -> None:
    root = build_case(case, tmp_path / "state")
    with pytest.raises(StateError) as caught:
        load_state(root)
    text = str(caught.value)
    for secret in _lines(CORPUS / case / "forbidden.txt"):
        assert secret not in text


def test_corpus_covers_every_category() -> None:
    prefixes = tuple(f"{category}-" for category in CATEGORIES)
    assert len(CASES) >= 35
    for prefix in prefixes:
        assert any(case.startswith(prefix) for case in CASES), prefix
    for case in CASES:
        assert case.startswith(prefixes), f"{case} does not start with a category"
        assert _lines(CORPUS / case / "expected.txt"), f"{case} has no expected problems"


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("multi-")])
def test_one_run_reports_every_broken_file(case: str) -> None:
    """Loading never stops at the first problem: each file a case breaks is reported."""
    folder = CORPUS / case
    broken = {
        str(p.relative_to(folder)) for p in folder.rglob("*.yaml")
    }
    reported = {line.split(":", 1)[0] for line in _lines(folder / "expected.txt")}

    assert len(broken) >= 4
    assert reported == broken


def test_every_whole_state_rule_has_a_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    originals = list(rules.RULES)
    fired: set[str] = set()

    def recording(rule: rules.Rule) -> rules.Rule:
        def wrapper(state: LoadedState) -> Iterator[Problem]:
            for problem in rule(state):
                fired.add(rule.__name__)
                yield problem

        return wrapper

    monkeypatch.setattr(rules, "RULES", [recording(r) for r in originals])
    for case in [c for c in CASES if not c.startswith(("syntax-", "schema-"))]:
        with pytest.raises(StateError):
            load_state(build_case(case, tmp_path / case))

    assert fired == {r.__name__ for r in originals}


# --- cases too big for a folder ------------------------------------------------------------------


def test_file_over_the_size_bound_is_refused_unread(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    padding = "# padding\n" * (MAX_FILE_BYTES // 10 + 1)
    text = f"sandbox: BIG\nextends: QA-DEFAULT\n{padding}"
    size = len(text.encode())
    assert size > MAX_FILE_BYTES

    parse = sources.parse_source

    def parse_unless_big(text: str, display: str) -> sources.SourceDoc:
        assert not display.endswith("BIG.yaml"), "an oversized file must not be parsed"
        return parse(text, display)

    monkeypatch.setattr(sources, "parse_source", parse_unless_big)
    reported = problems_of(state_dir, {"sandboxes/BIG.yaml": text})

    assert reported == [
        f"sandboxes/BIG.yaml:1:1: file is {size} bytes; state files are limited to "
        f"{MAX_FILE_BYTES} bytes"
    ]


def test_file_at_the_size_bound_is_read(state_dir: Path) -> None:
    head = "sandbox: BIG\nextends: QA-DEFAULT\nservices: {notifications: {use_ocp: tru}}\n"
    text = head + "#" * (MAX_FILE_BYTES - len(head) - 1) + "\n"
    assert len(text.encode()) == MAX_FILE_BYTES

    reported = problems_of(state_dir, {"sandboxes/BIG.yaml": text})

    assert reported == [
        "sandboxes/BIG.yaml:3:37: services.notifications.use_ocp: use_ocp can only be true; "
        "to deploy the service give 'branch:' instead"
    ]


def test_alias_bomb_is_refused_before_anything_is_composed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Composing the billion laughs would build 9**9 nodes; the event screen stops at '&a',
    the first anchor the parser makes, before the composer gets it."""

    def refusing(compose: Any) -> Any:
        def compose_unless_anchored(self: Composer, anchor: Any) -> Any:
            assert anchor is None, f"the anchored node &{anchor} was composed"
            return compose(self, anchor)

        return compose_unless_anchored

    for name in ("compose_scalar_node", "compose_sequence_node", "compose_mapping_node"):
        monkeypatch.setattr(Composer, name, refusing(getattr(Composer, name)))
    root = build_case("security-alias-bomb", tmp_path / "state")
    with pytest.raises(StateError) as caught:
        load_state(root)

    assert relative_lines(root, caught.value) == _lines(
        CORPUS / "security-alias-bomb" / "expected.txt"
    )
