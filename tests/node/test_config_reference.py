"""node.yaml: the reference generated from the model, and the example files kept valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from sdp_node import configdoc
from sdp_node.config import NodeConfig, load_config
from sdp_node.protocol import NodeType, RepositoryKind

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "packaging" / "examples"
SDP_NODE = Path(sys.executable).parent / "sdp-node"


def test_the_committed_reference_is_what_the_model_generates() -> None:
    assert configdoc.DOC.read_text() == configdoc.reference(), (
        "docs/node-yaml.md is stale: run '.venv/bin/python -m sdp_node.configdoc' and commit it")
    check = subprocess.run([sys.executable, "-m", "sdp_node.configdoc", "--check"],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr


def test_every_key_of_every_mapping_is_in_the_reference() -> None:
    text = configdoc.reference()
    sections = dict(configdoc.documented_models(NodeConfig, "node.yaml"))
    assert set(sections) == {"node.yaml", "token", "hardening", "isolation", "pruning",
                             "repositories[]", "repositories[].go"}
    for model in sections.values():
        for key, field in model.model_fields.items():
            assert f"| `{key}` |" in text and field.description
    for documented in ("`command`", "`init`", "`apache_modules`", "docker --init"):
        assert documented in text


def test_a_key_without_a_description_is_refused(tmp_path: Path) -> None:
    class Undocumented(BaseModel):
        documented: int = Field(default=1, description="has one")
        bare: int = 2

    with pytest.raises(ValueError, match=r"Undocumented.bare has no description"):
        configdoc._section("x", Undocumented)
    stale = tmp_path / "node-yaml.md"
    stale.write_text("old\n")
    assert configdoc.main(["--check", "--output", str(stale)]) == 1
    assert configdoc.main(["--output", str(stale)]) == 0
    assert stale.read_text() == configdoc.reference()


@pytest.mark.parametrize(("example", "node_type", "kinds"), [
    ("node-micro.yaml", NodeType.MICRO, {RepositoryKind.GO}),
    ("node-gateway.yaml", NodeType.GATEWAY, {RepositoryKind.PHP}),
])
def test_the_example_node_yaml_files_are_valid(
    example: str, node_type: NodeType, kinds: set[RepositoryKind],
) -> None:
    config = load_config(EXAMPLES / example)
    assert config.type is node_type
    assert {r.kind for r in config.repositories} == kinds
    assert config.token.file == Path("/etc/sdp/node.token")
    assert config.workspace == Path("/var/lib/sdp-node")  # the unit's StateDirectory
    checked = subprocess.run([str(SDP_NODE), "--check", "--config", str(EXAMPLES / example)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    assert f"({node_type.value}) of installation company-sdp" in checked.stdout


def test_check_names_the_bad_key_and_reads_no_token(tmp_path: Path) -> None:
    broken = tmp_path / "node.yaml"
    broken.write_text((EXAMPLES / "node-micro.yaml").read_text()
                      .replace("kind: go", "kind: rust", 1))
    checked = subprocess.run([str(SDP_NODE), "--check", "--config", str(broken)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 1
    assert "repositories.0.kind: Input should be 'go' or 'php'" in checked.stderr
    assert "token" not in checked.stderr
