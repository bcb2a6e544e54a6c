"""No pydantic plugin runs in an SDP process (sdp_node/pydanticplugins.py).

A plugin installed beside SDP would be handed every value pydantic validates, credentials
included. The canary plugin below is a real distribution on ``PYTHONPATH`` with a real
``pydantic`` entry point: in a plain interpreter pydantic loads it and it sees the canary
password; in SDP's processes it is never even imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CANARY = "canary-pw-8c1f2e"
PLUGIN = '''
import json, os
RECORD = os.environ["CANARY_PLUGIN_RECORD"]
with open(RECORD, "a") as out:
    out.write(json.dumps({"loaded": True}) + "\\n")

class Seen:
    def on_enter(self, input, **kwargs):
        with open(RECORD, "a") as out:
            out.write(json.dumps({"input": repr(input)}) + "\\n")

class Plugin:
    def new_schema_validator(self, schema, schema_type, path, kind, config, settings):
        return Seen(), Seen(), Seen()

plugin = Plugin()
'''


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    dist = site / "canary_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (site / "canary_plugin.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: canary-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pydantic]\ncanary = canary_plugin:plugin\n")
    return site


def run(code: str, site: Path, record: Path) -> list[dict[str, object]]:
    env = {**os.environ, "PYTHONPATH": str(site), "CANARY_PLUGIN_RECORD": str(record)}
    done = subprocess.run([sys.executable, "-c", code], env=env, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


VALIDATE = (
    "from MODULE import Credentials\n"
    f"Credentials.model_validate_json('{{\"username\": \"u\", \"password\": \"{CANARY}\"}}')\n"
)


def test_a_plain_interpreter_hands_the_canary_to_the_plugin(plugin_site: Path,
                                                             tmp_path: Path) -> None:
    # The control: the same model, defined outside SDP, so the plugin is what SDP refuses.
    code = (
        "from pydantic import BaseModel\n"
        "class Credentials(BaseModel):\n"
        "    username: str\n"
        "    password: str\n"
        f"Credentials.model_validate_json('{{\"username\": \"u\", \"password\": \"{CANARY}\"}}')\n"
    )
    seen = run(code, plugin_site, tmp_path / "record")
    assert {"loaded": True} in seen
    assert any(CANARY in str(line.get("input")) for line in seen)


@pytest.mark.parametrize("module", ["sdp_node.protocol", "sdp_reconciler.observe.node_client"])
def test_sdp_never_loads_a_plugin(plugin_site: Path, tmp_path: Path, module: str) -> None:
    record = tmp_path / "record"
    assert run(VALIDATE.replace("MODULE", module), plugin_site, record) == []
    assert not record.exists()


def test_loading_the_host_config_loads_no_plugin(plugin_site: Path, tmp_path: Path) -> None:
    config = tmp_path / "reconciler.yaml"
    config.write_text(
        "installation: canary\n"
        "spec_hash_key: {env: SDP_CANARY_KEY}\n"
        "agents:\n"
        "  micro-1: {url: 'http://127.0.0.1:9', token: {file: token}}\n")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sdp_reconciler.state.hostconfig import load_host_config\n"
        f"assert load_host_config(Path({str(config)!r})).model.installation == 'canary'\n"
        "assert 'importlib.metadata' not in sys.modules, 'pydantic scanned for plugins'\n"
    )
    record = tmp_path / "record"
    assert run(code, plugin_site, record) == []
