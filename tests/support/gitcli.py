"""The git command line against the test git server, as a developer uses it: clone, commit,
push over HTTP Basic auth. The password comes from an askpass helper reading it from the
environment, never from argv or the URL; the host's git configuration is not read."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path


class GitCli:
    def __init__(self, home: Path, username: str, password: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        askpass = home / "askpass"
        askpass.write_text('#!/bin/sh\nprintf "%s" "$SDP_TEST_GIT_PASSWORD"\n')
        askpass.chmod(0o700)
        self.username = username
        self.env = {
            "PATH": os.environ["PATH"], "HOME": str(home), "GIT_ASKPASS": str(askpass),
            "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
            "SDP_TEST_GIT_PASSWORD": password,
            "GIT_AUTHOR_NAME": "Achmad", "GIT_AUTHOR_EMAIL": "achmad@example.invalid",
            "GIT_COMMITTER_NAME": "Achmad", "GIT_COMMITTER_EMAIL": "achmad@example.invalid",
        }

    def git(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, env=self.env, capture_output=True,
                              text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise AssertionError(f"git {' '.join(args[:2])} failed: {done.stderr}")
        return done.stdout

    def clone(self, url: str, dest: Path) -> Path:
        self.git("clone", "-q", url.replace("http://", f"http://{self.username}@"), str(dest))
        return dest

    def commit_and_push(self, work: Path, branch: str, files: Mapping[str, bytes],
                        message: str) -> str:
        """Write ``files`` on ``branch`` (created from HEAD if new), commit, push; the SHA."""
        if branch in self.git("branch", "-a", "--format=%(refname:short)", cwd=work).split():
            self.git("checkout", "-q", branch, cwd=work)
        elif f"origin/{branch}" in self.git("branch", "-r", "--format=%(refname:short)",
                                            cwd=work).split():
            self.git("checkout", "-q", "-b", branch, f"origin/{branch}", cwd=work)
        else:
            self.git("checkout", "-q", "-b", branch, cwd=work)
        for relative, content in files.items():
            path = work / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        self.git("add", "-A", cwd=work)
        self.git("commit", "-q", "-m", message, cwd=work)
        self.git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
        return self.git("rev-parse", "HEAD", cwd=work).strip()
