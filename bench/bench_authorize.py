"""Issue 13: ``authorize_range`` over a range of state commits, against the git CLI reading the
same range.

A real repository (git CLI): the example state plus 20 sandboxes, access.yaml, then N commits
by four users (QA deploys and routes, BACKEND edits templates and environments, a VIEWER's
commit now and then that is refused, an ADMIN's access.yaml edit). Two variants of the
repository: unsigned, and every commit SSH-signed with ``require_signed_commits: true``.

* **SDP**: ``authorize_range(state, BASE, HEAD)`` in-process, with a fresh ``SignatureVerifier``
  each round (no cache): walk, semantic YAML diff of every changed file against every parent,
  identity, ``ssh-keygen -Y verify`` per signed commit, the decision.
* **baseline**: one ``git log --format='%H %ae %G?' --name-status BASE..HEAD -- state/`` (with
  ``gpg.ssh.allowedSignersFile`` for the signed variant, so git itself runs ssh-keygen per
  commit): the least a script must do to learn who changed which file, with no YAML read.

Rounds interleave the two; medians and the ratio SDP / baseline are reported.

    .venv/bin/python bench/bench_authorize.py [--commits 200] [--rounds 5] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved, load_average, ratio, say, stats, table, write_results

from sdp_reconciler.access.authorize import authorize_range
from sdp_reconciler.access.signatures import SignatureVerifier

ROOT = Path(__file__).resolve().parent.parent
USERS = {"ops": "ADMIN", "achmad": "BACKEND", "rina": "QA", "vic": "VIEWER"}
SANDBOXES = 20


class Repo:
    def __init__(self, root: Path, keys: dict[str, Path], *, signed: bool) -> None:
        self.root, self.keys, self.signed = root, keys, signed
        self.state = root / "state"
        root.mkdir()
        self.git("init", "-q", "-b", "main")
        shutil.copytree(ROOT / "state", self.state)

    def git(self, *args: str, user: str = "ops") -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", HOME=str(self.root),
                   GIT_AUTHOR_NAME=user, GIT_AUTHOR_EMAIL=f"{user}@company.invalid",
                   GIT_COMMITTER_NAME=user, GIT_COMMITTER_EMAIL=f"{user}@company.invalid")
        return subprocess.run(["git", "-C", str(self.root), *args], env=env, check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()

    def commit(self, user: str, message: str) -> None:
        self.git("add", "-A", user=user)
        signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.keys[user]}", "commit",
                   "-S"] if self.signed else ["commit"]
        self.git(*signing, "-q", "--allow-empty", "-m", message, user=user)

    def access(self, *, qa_roles: list[str]) -> str:
        users = {name: {"email": f"{name}@company.invalid",
                        "roles": qa_roles if role == "QA" else [role],
                        "signing_key": self.keys[name].with_suffix(".pub").read_text().strip()}
                 for name, role in USERS.items()}
        return json.dumps({"users": users, "require_signed_commits": self.signed}, indent=1)


def build(directory: Path, keys: dict[str, Path], commits: int, *, signed: bool) -> tuple[
        Repo, str]:
    repo = Repo(directory, keys, signed=signed)
    for index in range(SANDBOXES):
        (repo.state / "sandboxes" / f"QA-{index:02d}.yaml").write_text(
            f"sandbox: QA-{index:02d}\nextends: QA-DEFAULT\n"
            f"services:\n  account: {{branch: feature/a-{index}}}\n")
    repo.commit("ops", "sandboxes")
    (repo.state / "access.yaml").write_text(repo.access(qa_roles=["QA"]))
    repo.commit("ops", "roles")
    base = repo.git("rev-parse", "HEAD")
    for step in range(commits):
        sandbox = repo.state / "sandboxes" / f"QA-{step % SANDBOXES:02d}.yaml"
        match step % 10:
            case 0 | 1 | 2 | 3 | 4:
                sandbox.write_text(sandbox.read_text().replace("branch: feature/",
                                                               f"branch: f{step}/", 1))
                repo.commit("rina", f"deploy {step}")
            case 5:
                sandbox.write_text(sandbox.read_text() + f"  user: {{target: "
                                   f"'https://u{step}.invalid'}}\n")
                repo.commit("rina", f"route {step}")
            case 6:
                template = repo.state / "templates" / "ACCOUNT-TESTING.yaml"
                template.write_text(template.read_text().replace("branch: develop",
                                                                 f"branch: r{step}", 1)
                                    .replace(f"branch: r{step - 10}", f"branch: r{step}", 1))
                repo.commit("achmad", f"template {step}")
            case 7:
                environment = repo.state / "environments" / "qa.yaml"
                environment.write_text(environment.read_text().replace(
                    "DB_PORT:", f"V{step}: x\n  DB_PORT:", 1))
                repo.commit("achmad", f"environment {step}")
            case 8:
                # every other time a refused change (a VIEWER suspends), else only a comment
                refused = f"lifecycle: {{suspended: true}}  # vic {step}\n"
                sandbox.write_text(sandbox.read_text() + (
                    refused if step % 20 == 8 else f"# note {step}\n"))
                repo.commit("vic", f"vic {step}")
            case _:
                (repo.state / "access.yaml").write_text(
                    repo.access(qa_roles=["QA"] if step % 20 == 9 else ["QA", "VIEWER"]))
                repo.commit("ops", f"access {step}")
    return repo, base


def sdp(repo: Repo, base: str) -> float:
    started = time.perf_counter()
    decision = authorize_range(repo.state, base, "HEAD", verifier=SignatureVerifier())
    elapsed = time.perf_counter() - started
    assert len(decision.commits) > 0
    return elapsed


def baseline(repo: Repo, base: str, allowed_signers: Path) -> float:
    started = time.perf_counter()
    output = repo.git("-c", f"gpg.ssh.allowedSignersFile={allowed_signers}", "log",
                      "--format=%H %ae %G?", "--name-status", f"{base}..HEAD", "--", "state/")
    elapsed = time.perf_counter() - started
    assert output
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sdp-bench-authorize-"))
    try:
        keys: dict[str, Path] = {}
        for name in USERS:
            keys[name] = workdir / f"{name}_ed25519"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                            str(keys[name])], check=True, timeout=30)
        signers = workdir / "allowed_signers"
        signers.write_text("".join(
            f"{n}@company.invalid {keys[n].with_suffix('.pub').read_text().strip()}\n"
            for n in USERS))
        repos = {}
        for variant in ("unsigned", "signed"):
            say(f"building the {variant} repository ({args.commits} commits)")
            repos[variant] = build(workdir / variant, keys, args.commits,
                                   signed=variant == "signed")
        samples: dict[str, list[float]] = {}
        loads: list[dict[str, Any]] = []
        variants = [f"{kind}/{v}" for v in ("unsigned", "signed") for kind in ("sdp", "git")]
        for round_index in range(args.rounds):
            before = load_average()
            for name in interleaved(round_index, variants):
                kind, variant = name.split("/")
                repo, base = repos[variant]
                run = sdp(repo, base) if kind == "sdp" else baseline(repo, base, signers)
                samples.setdefault(name, []).append(run)
            loads.append({"round": round_index, "before": before, "after": load_average()})
        medians = {k: statistics.median(v) for k, v in samples.items()}
        rows = []
        for variant in ("unsigned", "signed"):
            ours, theirs = medians[f"sdp/{variant}"], medians[f"git/{variant}"]
            rows.append([variant, args.commits, f"{ours * 1000:.0f} ms",
                         f"{ours * 1000 / args.commits:.2f} ms",
                         f"{theirs * 1000:.0f} ms", ratio(ours, theirs)])
        print(table(["variant", "commits", "authorize", "per commit", "git log", "ratio"], rows))
        write_results("authorize", {
            "commits": args.commits, "rounds": args.rounds,
            "samples": {k: stats(v) for k, v in samples.items()},
            "ratios": {v: ratio(medians[f"sdp/{v}"], medians[f"git/{v}"])
                       for v in ("unsigned", "signed")},
            "load": loads,
        })
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
