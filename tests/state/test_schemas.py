"""The JSON Schemas in ``schemas/``: generated from the models, referenced by every example
state file, and agreeing with an independent validator (check-jsonschema) on the examples."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sdp_reconciler.state import schemas
from tests.state.conftest import EXAMPLE_STATE, SCHEMAS, problems_of, write_files

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
SCHEMA_LINE = re.compile(r"# yaml-language-server: \$schema=(?P<path>\S+)")
EXAMPLE_FILES = sorted(
    str(p.relative_to(EXAMPLE_STATE)) for p in EXAMPLE_STATE.rglob("*.yaml")
)
SCHEMA_OF_DIR = {
    "sandboxes": "sandbox", "templates": "template", "environments": "environment",
}


def schema_for(relative: str) -> str:
    """The schema a state file must use, by where it lives in the state directory."""
    folder, _, name = relative.rpartition("/")
    kind = SCHEMA_OF_DIR[folder] if folder else name.removesuffix(".yaml")
    return f"{kind}.schema.json"


def check_jsonschema(schema: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--schemafile", str(schema), *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_committed_schemas_equal_the_generated_ones() -> None:
    assert schemas.stale(SCHEMAS) == [], "run '.venv/bin/sdp-reconcile schemas' and commit"
    assert sorted(p.name for p in SCHEMAS.glob("*.schema.json")) == sorted(schemas.generate())


def test_stale_notices_a_changed_or_missing_schema(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    assert schemas.stale(tmp_path) == []
    (tmp_path / "sandbox.schema.json").write_text("{}\n")
    (tmp_path / "ports.schema.json").unlink()

    assert sorted(schemas.stale(tmp_path)) == ["ports.schema.json", "sandbox.schema.json"]


def test_examples_include_every_kind_of_state_file() -> None:
    kinds = {schema_for(f) for f in EXAMPLE_FILES}
    assert kinds >= {"nodes.schema.json", "sandbox.schema.json", "template.schema.json",
                     "environment.schema.json"}


@pytest.mark.parametrize("relative", EXAMPLE_FILES)
def test_example_file_starts_with_its_schema_line(relative: str) -> None:
    path = EXAMPLE_STATE / relative
    first_line = path.read_text(encoding="utf-8").splitlines()[0]

    match = SCHEMA_LINE.fullmatch(first_line)
    assert match, f"{relative} must start with '# yaml-language-server: $schema=...'"
    target = (path.parent / match["path"]).resolve()
    assert target.is_file(), f"{relative} points at {match['path']}, which does not exist"
    assert target == (SCHEMAS / schema_for(relative)).resolve()


def _files_by_schema(root: Path, relatives: list[str]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for relative in relatives:
        groups.setdefault(schema_for(relative), []).append(root / relative)
    return groups


def test_check_jsonschema_accepts_every_example_file() -> None:
    for schema, files in _files_by_schema(EXAMPLE_STATE, EXAMPLE_FILES).items():
        result = check_jsonschema(SCHEMAS / schema, *files)
        assert result.returncode == 0, result.stdout + result.stderr


BROKEN_FOR_BOTH = {
    "sandboxes/QA-LOGIN-ERROR.yaml": (
        "sandbox: QA-LOGIN-ERROR\nextends: QA-DEFAULT\ngatway: {branch: develop}\n",
        "Additional properties are not allowed ('gatway' was unexpected)",
    ),
    "templates/QA-DEFAULT.yaml": (
        "template: QA-DEFAULT\nservices:\n  account: {use_ocp: false}\n",
        "$.services.account",
    ),
    "environments/qa.yaml": (
        "environment: qa\nsecrets:\n  JWT_SECRET: sdp-schema-literal\n",
        "$.secrets.JWT_SECRET",
    ),
    "nodes.yaml": (
        (EXAMPLE_STATE / "nodes.yaml").read_text().replace("first: 9001", "first: 70000"),
        "$.nodes[0].ports.first: 70000 is greater than the maximum of 65535",
    ),
}


@pytest.mark.parametrize("relative", sorted(BROKEN_FOR_BOTH))
def test_check_jsonschema_rejects_what_the_loader_rejects(
    state_dir: Path, relative: str
) -> None:
    text, expected = BROKEN_FOR_BOTH[relative]
    write_files(state_dir, {relative: text})

    result = check_jsonschema(SCHEMAS / schema_for(relative), state_dir / relative)

    assert result.returncode == 1, result.stdout
    assert expected in result.stdout
    loader_problems = problems_of(state_dir)
    assert any(line.startswith(f"{relative}:") for line in loader_problems), loader_problems
