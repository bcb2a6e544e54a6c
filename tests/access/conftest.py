"""Fixtures: people with real SSH keys, and a state repository where access.yaml is in force.

``people`` are ops (ADMIN), achmad (BACKEND), rina (QA), vic (VIEWER) and eve (in no
access.yaml). ``repo`` is a real git repository: the example state committed by ops, then
access.yaml naming the first four, committed by ops; ``repo.base`` is that commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.access.gitrepo import Person, StateRepo, access_yaml, make_person

ROLES = {"ops": "ADMIN", "achmad": "BACKEND", "rina": "QA", "vic": "VIEWER"}


@pytest.fixture(scope="session")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Person]:
    directory = tmp_path_factory.mktemp("keys")
    return {name: make_person(name, directory) for name in [*ROLES, "eve"]}


def standard_access(people: dict[str, Person], **options: object) -> str:
    return access_yaml({people[n]: [r] for n, r in ROLES.items()}, **options)  # type: ignore[arg-type]


class AccessRepo(StateRepo):
    base: str


@pytest.fixture
def repo(tmp_path: Path, people: dict[str, Person]) -> AccessRepo:
    state = AccessRepo(tmp_path / "repo")
    state.commit(people["ops"], "the example state")
    state.base = state.commit(people["ops"], "roles",
                              files={"access.yaml": standard_access(people)})
    return state
