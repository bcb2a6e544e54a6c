"""The loader's cache of validated documents (``state/doccache.py``).

A second load of an unchanged file hands back the very Document of the first (identity);
any change of the bytes, another path for the same bytes, or a file with problems is parsed
again, so values and ``file:line:col`` positions always describe the bytes on disk now.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from sdp_reconciler.errors import StateError
from sdp_reconciler.state import loading
from sdp_reconciler.state.doccache import CacheKey, DocumentCache
from sdp_reconciler.state.documents import Document, LoadedState
from sdp_reconciler.state.loading import load_state
from sdp_reconciler.state.models import SandboxFile, TemplateFile
from tests.state.conftest import copy_example, loads, problems_of

SANDBOX = "sandboxes/QA-LOGIN-ERROR.yaml"
TEMPLATE = "templates/QA-DEFAULT.yaml"


def documents(state: LoadedState) -> dict[str, Document[Any]]:
    """Every Document of a loaded state by its file, relative to the state directory."""
    out: dict[str, Document[Any]] = {"nodes.yaml": state.nodes}
    for folder, docs in (("sandboxes", state.sandboxes), ("templates", state.templates),
                         ("environments", state.environments)):
        out.update({f"{folder}/{stem}.yaml": doc for stem, doc in docs.items()})
    for name, optional in (("ports.yaml", state.ports),
                           ("notifications.yaml", state.notifications),
                           ("access.yaml", state.access)):
        if optional is not None:
            out[name] = optional
    return out


def test_an_unchanged_directory_gives_the_same_documents(state_dir: Path) -> None:
    first = documents(loads(state_dir))
    second = documents(loads(state_dir))

    assert len(first) >= 5
    assert second.keys() == first.keys()
    for name, doc in first.items():
        assert second[name] is doc, name


def test_a_changed_file_is_parsed_again_with_its_new_positions(state_dir: Path) -> None:
    original = (state_dir / SANDBOX).read_text(encoding="utf-8")
    first = documents(loads(state_dir))
    assert first[SANDBOX].at("services", "account", "branch").line == 9

    # Two lines more above the service, and a new value: the same size would not matter.
    changed = original.replace(
        "services:\n", "# moved down\n# by two lines\nservices:\n"
    ).replace("memory: 256Mi\nresources", "memory: 300Mi\nresources")
    second = documents(loads(state_dir, {SANDBOX: changed}))

    sandbox = second[SANDBOX]
    assert sandbox is not first[SANDBOX]
    resources = sandbox.model.services["account"].resources
    assert resources is not None and resources.memory == "300Mi"
    assert str(sandbox.at("services", "account", "branch")).endswith(f"{SANDBOX}:11:13")
    for name, doc in first.items():
        if name != SANDBOX:
            assert second[name] is doc, name


def test_one_byte_changed_is_seen(state_dir: Path) -> None:
    first = documents(loads(state_dir))
    raw = (state_dir / TEMPLATE).read_bytes()
    assert b"develop" in raw
    second = documents(loads(state_dir, {TEMPLATE: raw.replace(b"develop", b"developp")}))

    template = second[TEMPLATE].model
    assert isinstance(template, TemplateFile)
    assert template.gateway is not None and template.gateway.branch == "developp"
    assert second[TEMPLATE] is not first[TEMPLATE]


def test_an_error_at_a_new_line_is_reported_there_after_a_warm_load(state_dir: Path) -> None:
    original = (state_dir / SANDBOX).read_text(encoding="utf-8")
    first = documents(loads(state_dir))

    broken = original.replace("  account:\n", "  account:\n    port: 8080\n    commit: zz\n")
    assert problems_of(state_dir, {SANDBOX: broken}) == [
        f"{SANDBOX}:10:13: services.account.commit: commit 'zz' is not a full 40-character "
        "lower-case hex SHA"
    ]
    moved = original.replace("      memory: 256Mi", "      memory: 256Mi\n      disk: 1Gi")
    assert problems_of(state_dir, {SANDBOX: moved}) == [
        f"{SANDBOX}:13:7: services.account.resources.disk: unknown key 'disk'; allowed keys: "
        "cpu, memory"
    ]

    # The original bytes again: the Document built from them the first time.
    again = documents(loads(state_dir, {SANDBOX: original}))
    assert again[SANDBOX] is first[SANDBOX]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("sandbox: QA-LOGIN-ERROR\nextends: QA-DEFAULT\nresources: {cpu: 1\n",
         f"{SANDBOX}:4:1: YAML syntax error: "),
        ("sandbox: QA-LOGIN-ERROR\nextends: QA-DEFAULT\nservise: {}\n",
         f"{SANDBOX}:3:1: servise: unknown key 'servise'"),
        (b"sandbox: QA-LOGIN-ERROR\nextends: QA-\xff\n",
         f"{SANDBOX}:2:13: file is not valid UTF-8 (byte 0xFF)"),
        ("- a list\n", f"{SANDBOX}:1:1: a state file is a mapping of keys to values"),
    ],
    ids=["syntax", "schema", "utf8", "not-a-mapping"],
)
def test_a_broken_file_is_reported_on_every_load(
    state_dir: Path, content: str | bytes, expected: str
) -> None:
    loads(state_dir)  # the good version is cached: it must not stand in for the broken one
    reported = [problems_of(state_dir, {SANDBOX: content}) for _ in range(3)]

    assert reported[0] == reported[1] == reported[2]
    assert [line for line in reported[0] if line.startswith(expected)], reported[0]


def test_the_same_bytes_in_another_directory_give_their_own_documents(tmp_path: Path) -> None:
    a = copy_example(tmp_path / "a")
    b = copy_example(tmp_path / "b")
    first, second = documents(loads(a)), documents(loads(b))

    for name, doc in first.items():
        other = second[name]
        assert other is not doc, name
        assert other.path == b / name and doc.path == a / name
        assert other.source.file == str(b / name) and doc.source.file == str(a / name)
        assert str(other.at()).startswith(f"{b / name}:")

    # Broken in both: each problem names its own file.
    bad = "sandbox: QA-LOGIN-ERROR\nextends: QA-DEFAULT\nservise: {}\n"
    assert problems_of(a, {SANDBOX: bad}) == problems_of(b, {SANDBOX: bad})
    with pytest.raises(StateError) as caught:
        load_state(b)
    assert {p.location.file for p in caught.value.problems} == {str(b / SANDBOX)}


def test_a_renamed_directory_gives_documents_of_the_new_path(tmp_path: Path) -> None:
    old = copy_example(tmp_path / "old")
    first = documents(loads(old))
    new = tmp_path / "new"
    shutil.move(old, new)
    second = documents(loads(new))

    for name, doc in second.items():
        assert doc is not first[name]
        assert doc.path == new / name and doc.source.file == str(new / name)


def test_a_relative_root_keeps_its_relative_display(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_example(tmp_path / "state")
    absolute = documents(loads(root))
    monkeypatch.chdir(tmp_path)
    relative = documents(loads(Path("state")))

    for name, doc in relative.items():
        assert doc is not absolute[name]
        assert doc.path == Path("state") / name and doc.source.file == f"state/{name}"


def test_the_same_bytes_for_another_model_are_validated_for_it(state_dir: Path) -> None:
    # A template's bytes dropped into sandboxes/: validated as a sandbox, not the template.
    loads(state_dir)
    text = (state_dir / TEMPLATE).read_text(encoding="utf-8")
    shutil.copy(state_dir / TEMPLATE, state_dir / "sandboxes" / "QA-DEFAULT.yaml")
    assert "template: QA-DEFAULT" in text

    reported = problems_of(state_dir)
    assert any(line.startswith("sandboxes/QA-DEFAULT.yaml:") and "unknown key 'template'" in line
               for line in reported), reported


def _key(n: int) -> CacheKey:
    return CacheKey.of(Path(f"/s/sandboxes/S{n}.yaml"), f"/s/sandboxes/S{n}.yaml", SandboxFile,
                       b"%d" % n)


def test_the_bound_evicts_the_least_recently_used(state_dir: Path) -> None:
    doc = loads(state_dir).sandboxes["QA-LOGIN-ERROR"]
    cache = DocumentCache(max_entries=3)
    for n in range(3):
        cache.put(_key(n), doc, 10)
    assert cache.get(_key(0)) is doc  # 0 is now the most recently used; 1 the least
    cache.put(_key(3), doc, 10)

    assert len(cache) == 3
    assert cache.get(_key(1)) is None
    assert all(cache.get(_key(n)) is doc for n in (0, 2, 3))


def test_the_byte_bound_evicts_and_refuses_what_never_fits(state_dir: Path) -> None:
    doc = loads(state_dir).sandboxes["QA-LOGIN-ERROR"]
    cache = DocumentCache(max_entries=100, max_bytes=100)
    cache.put(_key(0), doc, 60)
    cache.put(_key(1), doc, 30)
    cache.put(_key(2), doc, 30)  # 120 bytes: 0 goes

    assert cache.get(_key(0)) is None
    assert cache.get(_key(1)) is doc and cache.get(_key(2)) is doc
    cache.put(_key(3), doc, 101)
    assert cache.get(_key(3)) is None and len(cache) == 2


def test_the_key_changes_with_every_part() -> None:
    base = CacheKey.of(Path("/s/a.yaml"), "/s/a.yaml", SandboxFile, b"x: 1\n")
    assert base == CacheKey.of(Path("/s/a.yaml"), "/s/a.yaml", SandboxFile, b"x: 1\n")
    others = [
        CacheKey.of(Path("/s/b.yaml"), "/s/b.yaml", SandboxFile, b"x: 1\n"),
        CacheKey.of(Path("/s/a.yaml"), "a.yaml", SandboxFile, b"x: 1\n"),
        CacheKey.of(Path("/s/a.yaml"), "/s/a.yaml", TemplateFile, b"x: 1\n"),
        CacheKey.of(Path("/s/a.yaml"), "/s/a.yaml", SandboxFile, b"x: 2\n"),
    ]
    assert all(other != base for other in others)


def test_a_small_cache_under_loads_from_several_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DocumentCache(max_entries=3)  # smaller than the directory: entries churn
    monkeypatch.setattr(loading, "DOCUMENTS", cache)
    roots = [copy_example(tmp_path / f"s{i}") for i in range(2)]
    errors: list[BaseException] = []

    def work(root: Path) -> None:
        try:
            for _ in range(15):
                state = load_state(root)
                assert state.sandboxes["QA-LOGIN-ERROR"].path == root / SANDBOX
        except BaseException as e:  # handed to the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(roots[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert 0 < len(cache) <= 3

