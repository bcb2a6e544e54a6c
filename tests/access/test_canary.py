"""Nothing ``authorize`` prints carries a value that may be a secret: environment values and
files, a URL with credentials, a private key pasted into access.yaml, a value under an unknown
key (rule 3, with a canary). Values are shown only for keys that name things (branch, commit,
port, node, environment, template), as the loader's own messages do. The state is committed
broken on purpose: authorize reads every commit, valid or not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.access.conftest import AccessRepo
from tests.access.gitrepo import SANDBOX, Person

CANARY = "sdp-access-canary-7f3a"
SCRIPT = Path(sys.executable).parent / "sdp-reconcile"


def test_no_refusal_description_or_json_field_carries_a_secret(
        repo: AccessRepo, people: dict[str, Person]) -> None:
    repo.replace("environments/qa.yaml", "DB_PORT: 5432", f"DB_PORT: 5432\n  DB_PASSWORD: {CANARY}")
    repo.replace("environments/qa.yaml", '{"login_error_banner": true}', CANARY)
    repo.replace(SANDBOX, "resources:\n  cpu",
                 f"  payment: {{target: 'https://user:{CANARY}@pay.invalid'}}\nresources:\n  cpu")
    repo.replace(SANDBOX, "cpu: 500m", f"cpu: 500m\n      token: {CANARY}")
    repo.replace("access.yaml", '"email": "vic@company.invalid",', '"email": '
                 '"vic@company.invalid", "signing_key": "-----BEGIN OPENSSH PRIVATE KEY-----'
                 f'\\n{CANARY}\\n-----END OPENSSH PRIVATE KEY-----",')
    repo.replace("nodes.yaml", "installation: demo", f"installation: demo\n# {CANARY}\nx: {CANARY}")
    repo.commit(people["vic"], "a VIEWER pastes secrets everywhere")

    outputs = [subprocess.run([str(SCRIPT), "authorize", "--state", "state", *flags,
                               f"{repo.base}..HEAD"], capture_output=True, text=True,
                              cwd=repo.root, timeout=60, check=False) for flags in ([], ["--json"])]

    text, as_json = outputs
    assert text.returncode == as_json.returncode == 1
    document = json.loads(as_json.stdout)
    aspects = {c["aspect"] for c in document["commits"][0]["changes"]}
    assert {"variables.DB_PASSWORD", "files", "services.payment.route", "x",
            "users.vic.signing_key", "services.account.resources.token"} <= aspects
    for result in outputs:
        assert CANARY not in result.stdout + result.stderr
