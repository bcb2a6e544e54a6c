"""Whatever a state committer writes, the load either succeeds or reports problems as
``file:line:col: path: message``, and changes nothing: never another exception, never a
problem without a position (non-negotiable 2).

Three kinds of input, each written over a copy of the example state in place of one of its
files (or as a new one): YAML trees whose keys are the state files' own; the example files
with one value, anywhere in them, replaced by such a tree (so the models and the rules run on
them, deep); and raw text from YAML's significant characters (so the parser and its positions
do).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from sdp_reconciler.errors import StateError
from sdp_reconciler.state.loading import load_state
from tests.state.conftest import EXAMPLE_STATE, snapshot

FILES = ("sandboxes/QA-LOGIN-ERROR.yaml", "sandboxes/QA-FUZZ.yaml", "templates/QA-DEFAULT.yaml",
         "environments/qa.yaml", "nodes.yaml", "ports.yaml", "notifications.yaml", "access.yaml")
KEYS = sorted({
    # the top-level and nested keys of the state files (docs/state.md), and a few that are not
    "sandbox", "template", "extends", "environment", "services", "gateway", "lifecycle",
    "resources", "data", "branch", "commit", "use_ocp", "target", "port", "node", "cpu",
    "memory", "suspended", "expire_after", "warn_before", "retention", "variables", "secrets",
    "files", "path", "content", "env", "file", "installation", "nodes", "name", "type",
    "agent_url", "address", "public_address", "ports", "first", "last", "capacity",
    "containers", "cordoned", "drained", "allocations", "postgresql", "redis", "rabbitmq",
    "from", "account", "payment", "user", "QA-LOGIN-ERROR", "micro-1", "gateway-1", "qa",
    "roles", "users", "permissions", "sandboxes", "email", "webhooks", "events", "to",
    "url", "not_a_key", "",
})
POSITION = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): \S")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.sampled_from(["main", "feature/x", "../x", "QA-DEFAULT", "qa", "MICRO", "GATEWAY",
                     "http://127.0.0.1:9", "500m", "1Gi", "14d", "-1", "", "a" * 300,
                     "0123456789abcdef0123456789abcdef01234567", "${HOME}", "~"]),
    st.text(max_size=20),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=30,
)
documents = st.dictionaries(st.sampled_from(KEYS), trees, max_size=6)
YAML_TEXT = st.text(alphabet=st.sampled_from([
    *"abcXYZ019 _-./:{}[],&*!|>'\"#%@?~=\t\n\\", "\u00e9", "\u00b2", "\ufeff", "\x00"]),
    max_size=120)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _check(root: Path) -> None:
    before = snapshot(root)
    try:
        load_state(root)
    except StateError as e:
        assert e.problems, "a StateError without problems"
        for problem in e.problems:
            text = str(problem).removeprefix(f"{root}/")
            match = POSITION.match(text)
            assert match is not None, f"no file:line:col: {text!r}"
            assert (root / match["file"]).exists() or match["file"] in FILES, text
            assert int(match["line"]) >= 1 and int(match["col"]) >= 1, text
    assert snapshot(root) == before, "loading must not change the state directory"


def _fresh(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(EXAMPLE_STATE, root)
    return root


@SETTINGS
@given(target=st.sampled_from(FILES), document=documents)
def test_any_yaml_tree_loads_or_is_reported_with_positions(
    tmp_path: Path, target: str, document: dict[str, Any]
) -> None:
    root = _fresh(tmp_path)
    # JSON is YAML: every tree hypothesis makes can be written, floats and big ints included.
    (root / target).write_text(json.dumps(document, indent=1), encoding="utf-8")
    _check(root)


@SETTINGS
@given(target=st.sampled_from(FILES), text=YAML_TEXT)
def test_any_text_loads_or_is_reported_with_positions(
    tmp_path: Path, target: str, text: str
) -> None:
    root = _fresh(tmp_path)
    (root / target).write_bytes(text.encode("utf-8"))
    _check(root)


EXAMPLES = {relative: YAML(typ="safe").load((EXAMPLE_STATE / relative).read_text())
            for relative in FILES if (EXAMPLE_STATE / relative).is_file()}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``value`` (a parsed YAML document) a value sits, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, new)}
    return [_replaced(v, rest, new) if i == head else v for i, v in enumerate(value)]


@SETTINGS
@given(data=st.data())
def test_an_example_file_with_any_value_replaced_loads_or_is_reported_with_positions(
    tmp_path: Path, data: st.DataObject
) -> None:
    target = data.draw(st.sampled_from(sorted(EXAMPLES)))
    example = EXAMPLES[target]
    place = data.draw(st.sampled_from(_paths(example)))
    document = _replaced(example, place, data.draw(trees))
    root = _fresh(tmp_path)
    (root / target).write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    _check(root)
