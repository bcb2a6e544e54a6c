"""Properties of ``sdp_node.naming``: the one mapping from SDP names to resource names.

The collision property runs the loader's real rules (``names_do_not_collide`` and
``gateway_is_not_a_service``) on state built from generated names; the branch property asks
the real ``git check-ref-format --branch``.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from sdp_node.naming import (
    DEFAULT_NAMES,
    GATEWAY,
    NAME_MAX,
    RESOURCE_NAME_MAX,
    ResourceNames,
    branch_problem,
    name_problem,
    prefix_problem,
    slug,
)
from sdp_reconciler.state import rules
from sdp_reconciler.state.loading import Document, LoadedState, load_state
from sdp_reconciler.state.models import SandboxFile
from sdp_reconciler.state.sources import parse_source
from tests.state.conftest import EXAMPLE_STATE

NAME_PATTERN = r"[A-Za-z0-9]+([-_][A-Za-z0-9]+)*"
valid_names = st.from_regex(NAME_PATTERN, fullmatch=True).filter(lambda n: len(n) <= NAME_MAX)
# Docker's own rule for container names, and an RFC 1123 label for DNS on the sandbox network.
DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


# --- names and slugs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("QA-LOGIN-ERROR", "sandbox-qa-login-error-account"),
        ("qa_login", "sandbox-qa-login-account"),
        ("a1", "sandbox-a1-account"),
    ],
)
def test_seed_style_names_map_to_resource_names(name: str, expected: str) -> None:
    assert name_problem(name) is None
    assert DEFAULT_NAMES.container(name, "account") == expected
    assert DEFAULT_NAMES.network(name) == expected.removesuffix("-account")


def test_an_installation_prefix_starts_every_resource_name() -> None:
    names = ResourceNames("sdp-staging")
    assert names.container("QA-LOGIN-ERROR", "account") == "sdp-staging-qa-login-error-account"
    assert names.network("QA-LOGIN-ERROR") == "sdp-staging-qa-login-error"
    assert names.owns("sdp-staging-qa-x") and not names.owns("sandbox-qa-x")
    assert not DEFAULT_NAMES.owns("sdp-staging-qa-x")


@pytest.mark.parametrize("prefix", ["", "Sandbox", "a_b", "-a", "a-", "a--b", "x" * 21])
def test_invalid_prefixes_are_refused(prefix: str) -> None:
    assert prefix_problem(prefix) is not None
    with pytest.raises(ValueError, match="resource prefix"):
        ResourceNames(prefix)


@pytest.mark.parametrize(
    "name", ["", "-a", "a-", "a--b", "a_-b", "a b", "a.b", "a/b", "é", "a" * (NAME_MAX + 1)]
)
def test_invalid_names_are_refused(name: str) -> None:
    assert name_problem(name) is not None


@settings(max_examples=60)
@given(valid_names)
def test_slug_is_idempotent_and_stays_a_valid_name(name: str) -> None:
    assert name_problem(name) is None
    assert slug(slug(name)) == slug(name)
    assert name_problem(slug(name)) is None


@given(st.text(max_size=NAME_MAX + 5))
def test_name_problem_accepts_exactly_the_documented_names(text: str) -> None:
    documented = re.fullmatch(NAME_PATTERN, text) is not None and len(text) <= NAME_MAX
    assert (name_problem(text) is None) == documented


@settings(max_examples=60)
@given(valid_names, st.one_of(valid_names, st.just(GATEWAY)))
def test_valid_names_make_valid_docker_and_dns_names(sandbox: str, service: str) -> None:
    container = DEFAULT_NAMES.container(sandbox, service)
    assert DOCKER_NAME.fullmatch(container)
    assert DOCKER_NAME.fullmatch(DEFAULT_NAMES.network(sandbox))
    if len(container) <= RESOURCE_NAME_MAX:
        assert DEFAULT_NAMES.problem(sandbox, service) is None
        assert DNS_LABEL.fullmatch(container)
    else:
        problem = DEFAULT_NAMES.problem(sandbox, service)
        assert problem is not None and container in problem


# --- collisions, through the loader's rules -----------------------------------------------------

# A tiny alphabet so that generated names often share a slug or a container name.
short_names = st.from_regex(r"[abAB]{1,2}([-_][abAB]{1,2}){0,2}", fullmatch=True)
service_names = st.one_of(short_names, st.sampled_from(["gateway", "Gateway", "b-gateway"]))
_example_nodes = load_state(EXAMPLE_STATE).nodes


def _sandbox_document(name: str, services: list[str]) -> Document[SandboxFile]:
    lines = [f'sandbox: "{name}"', "gateway: {branch: develop}", "services:"]
    lines += [f'  "{service}": {{use_ocp: true}}' for service in services] or ["  {}"]
    source = parse_source("\n".join(lines) + "\n", f"sandboxes/{name}.yaml")
    return Document(model=SandboxFile.model_validate(source.data), stem=name, source=source,
                    path=Path(f"sandboxes/{name}.yaml"))


def _state(sandboxes: dict[str, list[str]]) -> LoadedState:
    return LoadedState(
        root=Path("state"),
        nodes=_example_nodes,
        sandboxes={n: _sandbox_document(n, s) for n, s in sandboxes.items()},
        templates={},
        environments={},
        ports=None,
    )


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(short_names, st.lists(service_names, max_size=4, unique=True),
                       min_size=1, max_size=4))
@example({"a-b": ["c"], "a": ["b-c"]})
@example({"QA-X": [], "qa_x": []})
@example({"a": ["b-gateway"], "a-b": []})
def test_distinct_pairs_never_share_a_container_name_silently(
    sandboxes: dict[str, list[str]],
) -> None:
    # (sandbox, service, is the gateway): a service named 'gateway' is not the gateway.
    owners: dict[str, set[tuple[str, str, bool]]] = defaultdict(set)
    for sandbox, services in sandboxes.items():
        owners[DEFAULT_NAMES.container(sandbox, GATEWAY)].add((sandbox, GATEWAY, True))
        for service in services:
            owners[DEFAULT_NAMES.container(sandbox, service)].add((sandbox, service, False))
    shared = {name for name, pairs in owners.items() if len(pairs) > 1}

    state = _state(sandboxes)
    messages = [
        p.message
        for rule in (rules.names_do_not_collide, rules.gateway_is_not_a_service)
        for p in rule(state)
    ]

    assert bool(messages) == bool(shared), (shared, messages)
    for name in shared:
        sandbox_part = {DEFAULT_NAMES.network(s) for s, _, _ in owners[name]}
        assert any(
            name in m
            or any(f"({n})" in m for n in sandbox_part)  # two sandboxes share every name
            or (name.endswith(f"-{GATEWAY}") and "is not a service name" in m)
            for m in messages
        ), (name, messages)


# --- branches against git -----------------------------------------------------------------------

_BRANCH_PIECES = [
    "a", "b", "feature", "/", ".", "-", "_", "@", "{", "}", "~", "^", ":", "?", "*", "[", "\\",
    " ", "\t", "\x7f", "\n", "é", ".lock", "..", "@{", "HEAD", "//",
]
branch_batches = st.lists(
    st.lists(st.sampled_from(_BRANCH_PIECES), min_size=1, max_size=6).map("".join),
    min_size=30, max_size=30,
)
_CHECK_EACH = 'for b; do git check-ref-format --branch "$b" >/dev/null 2>&1; echo $?; done'


def git_accepts(branches: list[str]) -> list[bool]:
    """``git check-ref-format --branch`` on each name: one shell, many git runs."""
    with tempfile.TemporaryDirectory() as outside_any_repo:
        result = subprocess.run(
            ["sh", "-c", _CHECK_EACH, "sh", *branches], capture_output=True, text=True,
            cwd=outside_any_repo, check=True, timeout=60,
            env={**os.environ, "GIT_CEILING_DIRECTORIES": str(Path(outside_any_repo).parent)},
        )
    codes = result.stdout.split()
    assert len(codes) == len(branches)
    return [code == "0" for code in codes]


def sdp_only_rule(branch: str) -> bool:
    """SDP's rules beyond git's: no leading '-', not '@' alone, at most 200 characters."""
    return branch.startswith("-") or branch == "@" or len(branch) > 200


# No shrinking: the failing assertion already names the one branch git and SDP disagree on,
# and shrinking a batch would run git hundreds of times.
@settings(max_examples=12, deadline=None, database=None, phases=[Phase.explicit, Phase.generate])
@given(branch_batches)
def test_branch_problem_agrees_with_git_check_ref_format(branches: list[str]) -> None:
    for branch, git_ok in zip(branches, git_accepts(branches), strict=True):
        sdp_ok = branch_problem(branch) is None
        if sdp_only_rule(branch):
            assert not sdp_ok, branch
        else:
            assert sdp_ok == git_ok, (branch, branch_problem(branch))


def test_branch_problem_agrees_with_git_on_known_cases() -> None:
    cases = [
        "develop", "feature/login-error", "release/1.2", "x.lock.y", "a@b", "é", "-f",
        "--upload-pack=x", "HEAD", "@", "@{-1}", "a..b", "a/.b", ".a", "a.", "a.lock",
        "a/b.lock/c", "/a", "a/", "a//b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b",
        "a\tb", "a\x7fb", "x" * 201,
    ]
    for branch, git_ok in zip(cases, git_accepts(cases), strict=True):
        sdp_ok = branch_problem(branch) is None
        assert sdp_ok == (git_ok and not sdp_only_rule(branch)), branch
