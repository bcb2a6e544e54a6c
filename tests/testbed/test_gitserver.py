"""The Basic-auth git server, driven by dulwich's client (as agents use it), by git and curl.

The server decodes Basic auth as UTF-8, like Bitbucket and Apache in front of git-http-backend:
git and curl get in with a non-ASCII password, a latin-1 header does not. dulwich is handed the
credentials through ``sdp_node.git.dulwich_credentials``, as the agents do, so that its header
is UTF-8 too.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import urllib3.util
from dulwich import porcelain
from dulwich.client import HTTPUnauthorized
from dulwich.config import ConfigDict
from dulwich.refs import Ref

from sdp_node.git import dulwich_credentials
from sdp_node.protocol import Credentials, Secret
from sdp_testbed.gitserver import GitServer
from sdp_testbed.repos import branch_head, commit_files, init_bare
from sdp_testbed.waiting import http_get

from .helpers import free_port


def wire(username: str, password: str) -> tuple[str, str]:
    """The credentials as the agents hand them to dulwich (a UTF-8 Basic-auth header)."""
    return dulwich_credentials(Credentials(username=Secret(username), password=Secret(password)))


def info_refs(server: GitServer, name: str) -> str:
    return server.repo_url(name) + "/info/refs?service=git-upload-pack"


@pytest.fixture
def account_head(git_server: GitServer) -> str:
    path = git_server.repo_path("account")
    init_bare(path)
    commit_files(path, branch="main", files={"README": b"main\n"}, message="first")
    return commit_files(
        path, branch="feature/login-error", base="main", files={"x": b"1"}, message="feature"
    )


def test_ls_remote_with_the_right_credentials_lists_the_branches(
    git_server: GitServer, git_credentials: tuple[str, str], account_head: str
) -> None:
    username, password = wire(*git_credentials)
    refs = porcelain.ls_remote(
        git_server.repo_url("account"), config=ConfigDict(), username=username, password=password
    )
    heads = {name.decode(): sha.decode() for name, sha in refs.refs.items() if sha is not None}
    assert heads["refs/heads/feature/login-error"] == account_head
    assert "refs/heads/main" in heads


@pytest.mark.parametrize("wrong", ["wrong", "Pa$$:w@rd%^/e", ""])
def test_wrong_password_is_unauthorized_and_not_echoed(
    git_server: GitServer, git_credentials: tuple[str, str], account_head: str, wrong: str
) -> None:
    username, password = git_credentials
    with pytest.raises(HTTPUnauthorized) as raised:
        porcelain.ls_remote(
            git_server.repo_url("account"), config=ConfigDict(), username=username, password=wrong
        )
    assert password not in str(raised.value)
    assert password not in repr(raised.value)
    if wrong:
        assert wrong not in str(raised.value)


def test_wrong_username_is_unauthorized(
    git_server: GitServer, git_credentials: tuple[str, str], account_head: str
) -> None:
    username, password = wire("other", git_credentials[1])
    with pytest.raises(HTTPUnauthorized):
        porcelain.ls_remote(
            git_server.repo_url("account"), config=ConfigDict(), username=username,
            password=password,
        )


def test_no_credentials_get_401_with_the_basic_challenge(
    git_server: GitServer, account_head: str
) -> None:
    answer = http_get(info_refs(git_server, "account"))
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="sdp-testbed"'


def test_a_missing_repository_is_404_even_with_credentials(
    git_server: GitServer, git_credentials: tuple[str, str]
) -> None:
    token = base64.b64encode(":".join(git_credentials).encode()).decode()
    answer = http_get(
        info_refs(git_server, "nope"),
        headers={"Authorization": f"Basic {token}"},
    )
    assert answer.status == 404


def test_clone_with_the_right_credentials_checks_out_the_branch(
    git_server: GitServer, git_credentials: tuple[str, str], account_head: str, tmp_path: Path
) -> None:
    username, password = wire(*git_credentials)
    target = tmp_path / "clone"
    with porcelain.clone(
        git_server.repo_url("account"),
        str(target),
        config=ConfigDict(),
        username=username,
        password=password,
        branch="feature/login-error",
        errstream=io.BytesIO(),
    ) as repo:
        assert repo.head().decode() == account_head
    assert (target / "README").read_bytes() == b"main\n"
    assert (target / "x").read_bytes() == b"1"
    assert git_credentials[1] not in (target / ".git" / "config").read_text()
    assert password not in (target / ".git" / "config").read_text()


def test_push_with_the_right_credentials_moves_the_branch(
    git_server: GitServer, git_credentials: tuple[str, str], account_head: str, tmp_path: Path
) -> None:
    username, password = wire(*git_credentials)
    url = git_server.repo_url("account")
    work = tmp_path / "work"
    with porcelain.clone(
        url,
        str(work),
        config=ConfigDict(),
        username=username,
        password=password,
        errstream=io.BytesIO(),
    ) as repo:
        (work / "state.yaml").write_text("sandboxes: {}\n")
        porcelain.add(repo, [str(work / "state.yaml")])
        pushed = porcelain.commit(
            repo,
            message=b"add state",
            author=b"A <a@example.invalid>",
            committer=b"A <a@example.invalid>",
        )
        porcelain.push(
            repo, url, "main", username=username, password=password, errstream=io.BytesIO()
        )
    assert branch_head(git_server.repo_path("account"), "main") == pushed.decode()


@pytest.mark.usefixtures("git_cli")
def test_the_git_cli_sends_utf8_credentials_and_gets_in(
    git_server: GitServer, git_credentials: tuple[str, str], account_head: str, tmp_path: Path
) -> None:
    username, password = git_credentials
    # git reads the password from an askpass helper, not from argv or the URL.
    askpass = tmp_path / "askpass"
    askpass.write_text('#!/bin/sh\nprintf "%s" "$SDP_TEST_GIT_PASSWORD"\n')
    askpass.chmod(0o700)
    url = git_server.repo_url("account").replace("http://", f"http://{username}@")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GIT_ASKPASS": str(askpass),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "SDP_TEST_GIT_PASSWORD": password,
    }
    result = subprocess.run(
        ["git", "ls-remote", url], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert f"{account_head}\trefs/heads/feature/login-error" in result.stdout


def test_curl_u_with_the_utf8_password_gets_in(
    git_server: GitServer, git_credentials: tuple[str, str], account_head: str
) -> None:
    """``curl -u user:password``, given on curl's stdin config (``user = ...``) so that the
    password is not in argv, sends the bytes it was given: UTF-8 here."""
    curl = shutil.which("curl")
    assert curl is not None, "curl is not installed: apt-get install -y curl (scripts/setup does)"
    username, password = git_credentials
    result = subprocess.run(
        [curl, "--silent", "--show-error", "--config", "-", "--output", "/dev/null",
         "--write-out", "%{http_code}", info_refs(git_server, "account")],
        input=f'user = "{username}:{password}"\n'.encode(), capture_output=True, check=False,
    )
    assert result.stdout == b"200", result.stderr
    wrong = subprocess.run(
        [curl, "--silent", "--config", "-", "--output", "/dev/null", "--write-out",
         "%{http_code}", info_refs(git_server, "account")],
        input=f'user = "{username}:{password[:-1]}"\n'.encode(), capture_output=True,
        check=False,
    )
    assert wrong.stdout == b"401"


def test_a_list_only_password_lists_the_branches_but_cannot_fetch(
    git_server: GitServer, git_credentials: tuple[str, str], account_head: str, tmp_path: Path,
) -> None:
    username, password = git_credentials
    with GitServer(git_server.root, username=username, password=password,
                   list_only_password="list-only") as server:
        listed = porcelain.ls_remote(server.repo_url("account"), config=ConfigDict(),
                                     username=username, password="list-only")
        assert listed.refs[Ref(b"refs/heads/feature/login-error")] == account_head.encode()
        with pytest.raises(HTTPUnauthorized):
            porcelain.clone(server.repo_url("account"), str(tmp_path / "clone"),
                            config=ConfigDict(), username=username, password="list-only",
                            errstream=io.BytesIO())
        with pytest.raises(HTTPUnauthorized):
            porcelain.ls_remote(server.repo_url("account"), config=ConfigDict(),
                                username=username, password="not-even-list-only")
        user, secret = wire(username, password)
        with porcelain.clone(server.repo_url("account"), str(tmp_path / "ok"),
                             config=ConfigDict(), username=user, password=secret,
                             errstream=io.BytesIO()) as repo:
            assert repo.refs[Ref(b"refs/remotes/origin/feature/login-error")] \
                == account_head.encode()


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_the_basic_auth_header_is_decoded_as_utf8_only(
    git_server: GitServer, account_head: str, encoding: str
) -> None:
    username, password = "sdp-tester", "Pa$$:w@rd%^/é"  # a password latin-1 can encode
    server = GitServer(git_server.root, username=username, password=password)
    with server:
        token = base64.b64encode(f"{username}:{password}".encode(encoding)).decode()
        answer = http_get(info_refs(server, "account"),
                          headers={"Authorization": f"Basic {token}"})
    assert answer.status == (200 if encoding == "utf-8" else 401)


def test_sdp_hands_dulwich_credentials_that_make_a_utf8_header(
    git_credentials: tuple[str, str],
) -> None:
    username, password = wire(*git_credentials)
    header = urllib3.util.make_headers(basic_auth=f"{username}:{password}")["authorization"]
    sent = base64.b64decode(header.removeprefix("Basic "))
    assert sent == ":".join(git_credentials).encode("utf-8")


def test_the_cli_serves_until_sigterm_with_credentials_from_the_environment(
    git_root: Path, git_credentials: tuple[str, str], tmp_path: Path
) -> None:
    username, password = git_credentials
    init_bare(git_root / "gateway.git")
    head = commit_files(git_root / "gateway.git", branch="main", files={"a": b""}, message="m")
    pid_file = tmp_path / "git.pid"
    port = free_port()
    env = {
        **os.environ,
        "SDP_TESTBED_GIT_USERNAME": username,
        "SDP_TESTBED_GIT_PASSWORD": password,
    }
    command = [sys.executable, "-m", "sdp_testbed.gitserver", "--root", str(git_root)]
    command += ["--port", str(port), "--pid-file", str(pid_file)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line == f"listening on http://127.0.0.1:{port}"
        assert pid_file.read_text().strip() == str(process.pid)
        assert password not in " ".join(command)
        wire_username, wire_password = wire(username, password)
        refs = porcelain.ls_remote(
            f"http://127.0.0.1:{port}/gateway.git",
            config=ConfigDict(),
            username=wire_username,
            password=wire_password,
        )
        assert refs.refs[Ref(b"refs/heads/main")] == head.encode()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert not pid_file.exists()


def test_the_cli_refuses_to_start_without_credentials(git_root: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDP_TESTBED_GIT_")}
    result = subprocess.run(
        [sys.executable, "-m", "sdp_testbed.gitserver", "--root", str(git_root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "SDP_TESTBED_GIT_PASSWORD" in result.stderr
