"""Read and rewrite the service routes of a CodeIgniter gateway config (``config.php``).

The gateway routes a service with a statement such as
``$config['account_url'] = 'https://account-dev.company.invalid';``. This module finds those
statements with a small PHP lexer, so that look-alikes inside comments, strings, heredocs or
inline HTML are never taken for routes, and rewrites only the value tokens it is asked to.

What it promises:

- ``read_routes`` returns, for every ``<service>_url`` key whose value it can prove, exactly
  what PHP leaves in ``$config`` after including the file. A key it cannot prove is left out
  rather than guessed: one whose last write is not a plain string literal in a top-level
  statement, one written inside a block or a function, one changed with ``.=`` or ``unset``,
  or one followed by a wholesale change of ``$config`` (``$config = ...``, ``include``, ...).
- ``write_routes`` changes nothing but the value tokens of the named keys, writes every new
  value as an escaped single-quoted literal after ``validate_route_url`` accepted it, refuses
  a key assigned more than once, and checks that the result reads back to exactly the
  intended routes.
- The file functions never follow a symlink out of the tree, replace the file atomically with
  its mode kept, lint it with ``php -l`` when PHP is available, and leave an unchanged file
  untouched. A caller whose file PHP already parses (``set_routes``: the file the running
  gateway serves) may skip the lint when ``same_structure`` proves that only string literals
  changed: then PHP parses the new file exactly as the old one (``php -l`` costs a process,
  ~25 ms, on the path of every route move).
"""

from __future__ import annotations

import bisect
import os
import re
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath

from msgspec import Struct

from sdp_node.childenv import child_environment
from sdp_node.errors import RouteConfigError
from sdp_node.phplexer import Kind, Lexer, LexError, Token

__all__ = [
    "RouteConfigError",
    "read_routes",
    "read_routes_file",
    "replace_routes_file",
    "same_structure",
    "validate_route_url",
    "write_routes",
]

ROUTE_SUFFIX = "_url"
MAX_URL_LENGTH = 2048
MAX_CONFIG_BYTES = 4 * 1024 * 1024
PHP_LINT_TIMEOUT_SECONDS = 60

# --------------------------------------------------------------------------- the URL allow-list

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ROUTE_URL = re.compile(
    rf"(?P<scheme>https?)://(?P<host>{_LABEL}(?:\.{_LABEL})*)"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?"
    r"(?P<path>/(?:[A-Za-z0-9._~/-]|%[0-9A-Fa-f]{2})*)?",
    re.ASCII,
)


def _preview(value: str) -> str:
    """A short, escaped prefix of a refused value, cut before anything that may be a secret:
    userinfo (everything after the scheme when there is an `@`), a query or a fragment."""
    cut = min((i for i in (value.find(c) for c in "?#") if i >= 0), default=len(value))
    if "@" in value:
        scheme_end = value.find("://")
        cut = min(cut, scheme_end + 3 if 0 <= scheme_end < value.find("@") else 0)
    shown = value[: min(cut, 24)]
    return ascii(shown) + ("..." if len(shown) < len(value) else "")


def _url_problem(url: object) -> str | None:
    if not isinstance(url, str):
        return f"must be a string, not {type(url).__name__}"
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    match = _ROUTE_URL.fullmatch(url)
    if match is None:
        return (
            f"value {_preview(url)} is not an allowed route URL "
            "(http or https, a host of letters, digits, '.' and '-', an optional port, "
            "an optional path of [A-Za-z0-9._~/%-]; no userinfo, query or fragment)"
        )
    port = match["port"]
    if port is not None and int(port) > 65535:
        return f"value {_preview(url)} has a port outside 1-65535"
    if len(match["host"]) > 253:
        return f"value {_preview(url)} has a host name longer than 253 characters"
    return None


def validate_route_url(url: str) -> str:
    """Return ``url`` if it may be written into the gateway's PHP config; raise otherwise."""
    problem = _url_problem(url)
    if problem is not None:
        raise RouteConfigError(f"route URL {problem}")
    return url


# --------------------------------------------------------------------------- the statement reader

_ASSIGN_OPS = frozenset(
    {"=", "+=", "-=", "*=", "/=", ".=", "%=", "&=", "|=", "^=", "<<=", ">>=", "**=", "??="}
)
_WRITES_AFTER = _ASSIGN_OPS | {"[", "++", "--"}
_WRITES_BEFORE = frozenset({"&", "++", "--", "as", "=>"})
_CLOBBERING_CALLS = frozenset(
    {"include", "include_once", "require", "require_once", "eval", "extract"}
)
# Keywords and constructs followed by `(` that take no references.
_NOT_CALLS = frozenset(
    {"if", "elseif", "while", "switch", "match", "isset", "empty", "array", "echo", "print"}
    | {"return", "and", "or", "xor", "exit", "die", "catch", "fn", "function", "use", "new"}
)
_ALT_BLOCK_OPENERS = frozenset({"if", "while", "for", "foreach", "switch", "declare"})
_ALT_BLOCK_CLOSERS = frozenset(
    {"endif", "endwhile", "endfor", "endforeach", "endswitch", "enddeclare"}
)
_OPENERS = {"(": ")", "[": "]", "#[": "]", "{": "}"}


class _Write(Struct, frozen=True):
    """A statement that changes ``$config[key]``, or all of ``$config`` when ``key`` is None."""

    key: str | None
    line: int
    value: str | None = None  # set only for a plain top-level literal assignment
    span: tuple[int, int] | None = None  # the value token, for a plain assignment
    # May take effect at another time or through an alias: inside a block or a function, by
    # reference, or as a call argument. Such a write makes its key(s) unprovable for good.
    uncertain: bool = False


class _ConfigModel(Struct, frozen=True):
    writes: tuple[_Write, ...]
    routes: dict[str, str]  # service -> value, for the keys whose value is proven
    unproven: dict[str, str]  # service -> why its value cannot be proven


class _Lines:
    """Line numbers of source offsets, for messages."""

    def __init__(self, src: str) -> None:
        self._starts = [m.end() for m in re.finditer("\n", src)]

    def of(self, pos: int) -> int:
        return bisect.bisect_right(self._starts, pos) + 1


def _is_route_key(key: str | None) -> bool:
    return key is not None and key.endswith(ROUTE_SUFFIX) and len(key) > len(ROUTE_SUFFIX)


def _matching_closers(tokens: list[Token]) -> dict[int, int]:
    """Index of each opening bracket -> index of the token that closes it."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, tok in enumerate(tokens):
        if tok.kind is not Kind.PUNCT:
            continue
        if tok.text in _OPENERS:
            stack.append(i)
        elif tok.text in (")", "]", "}") and stack and _OPENERS[tokens[stack[-1]].text] == tok.text:
            pairs[stack.pop()] = i
    return pairs


def _scan_writes(lines: _Lines, tokens: list[Token]) -> list[_Write]:
    closers = _matching_closers(tokens)
    writes: list[_Write] = []
    enclosing: list[int] = []  # indexes of the open brackets around the current token
    alt_depth = 0

    def text(i: int) -> str:
        return tokens[i].text if 0 <= i < len(tokens) else ""

    for i, tok in enumerate(tokens):
        low = tok.text.lower()
        if tok.kind is Kind.PUNCT and tok.text in _OPENERS:
            enclosing.append(i)
            continue
        if tok.kind is Kind.PUNCT and tok.text in (")", "]", "}"):
            if enclosing and closers.get(enclosing[-1]) == i:
                enclosing.pop()
            continue
        if tok.kind is Kind.IDENT and low in _ALT_BLOCK_OPENERS and text(i + 1) == "(":
            if i + 1 in closers and text(closers[i + 1] + 1) == ":":
                alt_depth += 1
        elif tok.kind is Kind.IDENT and low in _ALT_BLOCK_CLOSERS:
            alt_depth = max(0, alt_depth - 1)
        nested = bool(enclosing) or alt_depth > 0
        if tok.kind is Kind.IDENT and low in _CLOBBERING_CALLS:
            writes.append(_Write(None, lines.of(tok.start), uncertain=nested))
        if tok.kind is Kind.VARIABLE and tok.text == "$config":
            write = _config_write(lines, tokens, i, closers, enclosing, nested=nested)
            if write is not None:
                writes.append(write)
    return writes


def _config_write(
    lines: _Lines,
    tokens: list[Token],
    i: int,
    closers: dict[int, int],
    enclosing: list[int],
    *,
    nested: bool,
) -> _Write | None:
    """The write that the mention of ``$config`` at ``tokens[i]`` makes, if any.

    Anything that may write counts as a write: assignment, ``unset``, destructuring,
    ``foreach ... as``, a reference (which lets later code write through an alias) and a
    direct call argument (which the callee may take by reference).
    """

    def text(j: int) -> str:
        return tokens[j].text if 0 <= j < len(tokens) else ""

    line = lines.of(tokens[i].start)
    calls = [text(j - 1).lower() for j in enclosing if text(j) == "("]
    destructured = any(text(closers.get(j, -2) + 1) == "=" for j in enclosing if text(j) == "[")
    target = text(i - 1) in _WRITES_BEFORE or "unset" in calls or "list" in calls or destructured
    in_call = bool(enclosing) and text(enclosing[-1]) == "(" and _is_callee(tokens, enclosing[-1])
    by_ref = text(i - 1) == "&"
    if text(i + 1) != "[":  # all of $config
        if target or in_call or text(i + 1) in _ASSIGN_OPS:
            return _Write(None, line, uncertain=nested or by_ref)
        return None
    close = closers.get(i + 1)
    if close == i + 2:  # `$config[] = ...` appends under a numeric key
        return None
    after = text(close + 1) if close is not None else ""
    argument = in_call and text(i - 1) in ("(", ",") and after in (")", ",")
    target = target or argument or after in _WRITES_AFTER
    key = tokens[i + 2].value if close == i + 3 else None
    if key is None:  # a key computed at run time may be any key
        return _Write(None, line, uncertain=nested or by_ref) if target else None
    if not _is_route_key(key):
        return None
    prev = tokens[i - 1] if i > 0 else None
    statement_start = (
        prev is None
        or prev.kind in (Kind.OPEN_TAG, Kind.CLOSE_TAG)
        or (prev.kind is Kind.PUNCT and prev.text in (";", "}"))
    )
    value = tokens[i + 5] if i + 5 < len(tokens) else None
    end = tokens[i + 6] if i + 6 < len(tokens) else None
    if (
        not nested
        and statement_start
        and after == "="
        and value is not None
        and value.value is not None
        and end is not None
        and (end.text == ";" or end.kind is Kind.CLOSE_TAG)
    ):
        return _Write(key, line, value=value.value, span=(value.start, value.end))
    if not target:
        return None
    by_ref = by_ref or (after == "=" and text(i + 5) == "&")  # `$config[k] = &$x`
    return _Write(key, line, uncertain=nested or by_ref)


def _is_callee(tokens: list[Token], paren: int) -> bool:
    """Whether the `(` at ``paren`` opens the arguments of a call (which may take references)."""
    before = tokens[paren - 1] if paren > 0 else None
    if before is None:
        return False
    if before.kind is Kind.IDENT:
        return before.text.lower() not in _NOT_CALLS
    return before.kind is Kind.VARIABLE or before.text in (")", "]")


def _model(source: bytes, path_label: str) -> _ConfigModel:
    # Bounded here as well as on disk: the routes a gateway commit carries are read from the
    # git store (``Routes.committed_routes``), where a branch author decides the file's size.
    if len(source) > MAX_CONFIG_BYTES:
        raise RouteConfigError(f"{path_label}: is larger than {MAX_CONFIG_BYTES} bytes")
    src = source.decode("latin-1")
    try:
        tokens = Lexer(src).run()
    except LexError as e:
        raise RouteConfigError(f"{path_label}:{_Lines(src).of(e.pos)}: {e}") from None
    writes = _scan_writes(_Lines(src), tokens)
    # In file order: the last top-level write decides a key's value (None when not a plain
    # literal). An uncertain write makes the key unprovable wherever it is.
    values: dict[str, str | None] = {}
    why_none: dict[str, str] = {}
    poisoned: dict[str, str] = {}
    poison_all: str | None = None
    for w in writes:
        if w.key is None:
            why = f"$config is changed as a whole on line {w.line}"
            if w.uncertain and poison_all is None:
                poison_all = why
            values = dict.fromkeys(values)
            why_none.update(dict.fromkeys(values, why))
            continue
        service = w.key[: -len(ROUTE_SUFFIX)]
        if w.uncertain:
            poisoned.setdefault(
                service,
                f"{_key_label(service)} may be changed on line {w.line} (inside a block or a "
                "function, through a reference or as a call argument)",
            )
            continue
        values[service] = w.value
        if w.value is None:
            why_none[service] = (
                f"{_key_label(service)} is not set to a plain string literal on line {w.line}"
            )
    unproven: dict[str, str] = {}
    for service, _ in _all_keys(writes):
        reason = poison_all or poisoned.get(service)
        if reason is None and values.get(service) is None:
            reason = why_none.get(service, "its value cannot be proven")
        if reason is not None:
            unproven[service] = reason
    routes = {k: v for k, v in values.items() if v is not None and k not in unproven}
    return _ConfigModel(tuple(writes), routes, unproven)


def _all_keys(writes: Iterable[_Write]) -> Iterator[tuple[str, _Write]]:
    for w in writes:
        if w.key is not None:
            yield w.key[: -len(ROUTE_SUFFIX)], w


def _key_label(service: str) -> str:
    return f"$config[{(service + ROUTE_SUFFIX)!r}]"


def read_routes(source: bytes, *, path_label: str = "<source>") -> dict[str, str]:
    """Map each service key (``account`` for ``$config['account_url']``) to its URL value."""
    return dict(_model(source, path_label).routes)


# --------------------------------------------------------------------------- the writer


def _php_single_quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + escaped.encode("utf-8").decode("latin-1") + "'"


def write_routes(source: bytes, routes: Mapping[str, str], *, path_label: str) -> bytes:
    """Return ``source`` with the value tokens of the given service keys replaced.

    Every other byte stays as it was. Raises ``RouteConfigError`` (and returns nothing) if a
    value is not an allowed URL, a key is missing, assigned more than once or not provable.
    """
    model = _model(source, path_label)
    for service, url in routes.items():
        problem = _url_problem(url)
        if problem is not None:
            raise RouteConfigError(f"{path_label}: {_key_label(service)}: {problem}")
    writes_of: dict[str, list[_Write]] = {}
    for key, write in _all_keys(model.writes):
        writes_of.setdefault(key, []).append(write)
    edits: list[tuple[int, int, str]] = []
    for service, url in sorted(routes.items()):
        writes = writes_of.get(service, [])
        if not writes:
            known = ", ".join(sorted(model.routes)) or "none"
            raise RouteConfigError(
                f"{path_label}: {_key_label(service)} is not assigned in the file "
                f"(known route keys: {known})"
            )
        if len(writes) > 1:
            lines = ", ".join(str(w.line) for w in writes)
            raise RouteConfigError(
                f"{path_label}: {_key_label(service)} is assigned {len(writes)} times "
                f"(lines {lines}); refusing to edit an ambiguous route"
            )
        if service in model.unproven or writes[0].span is None:
            why = model.unproven.get(service, "its value is not a plain string literal")
            raise RouteConfigError(f"{path_label}: cannot edit {_key_label(service)}: {why}")
        if model.routes[service] != url:  # an equal value keeps its bytes and quote style
            start, end = writes[0].span
            edits.append((start, end, _php_single_quoted(url)))
    src = source.decode("latin-1")
    pieces: list[str] = []
    cursor = 0
    for start, end, literal in sorted(edits):
        pieces += [src[cursor:start], literal]
        cursor = end
    result = ("".join(pieces) + src[cursor:]).encode("latin-1")
    expected = {**model.routes, **routes}
    if read_routes(result, path_label=path_label) != expected:
        raise RouteConfigError(f"{path_label}: the rewritten file does not read back as intended")
    return result


# --------------------------------------------------------------------------- files in a tree


class _ConfinedFile(Struct, frozen=True):
    dir_fd: int
    name: str
    path: Path  # resolved, for messages and for php -l


@contextmanager
def _confined(tree_root: Path, rel_path: str) -> Iterator[_ConfinedFile]:
    """Open the directory of ``tree_root/rel_path`` without leaving the tree through a symlink.

    Every prefix of the path is resolved and must stay inside the resolved root; the
    directories are then opened one by one with O_NOFOLLOW along the resolved path, so a
    symlink swapped in after the check is refused rather than followed.
    """
    rel = PurePosixPath(rel_path)
    if not rel_path or "\0" in rel_path or rel.is_absolute() or ".." in rel.parts:
        raise RouteConfigError(f"{rel_path!r}: must be a relative path inside the tree")
    try:
        root = tree_root.resolve(strict=True)
        for depth in range(1, len(rel.parts) + 1):
            prefix = root.joinpath(*rel.parts[:depth]).resolve(strict=True)
            if not prefix.is_relative_to(root):
                raise RouteConfigError(f"{rel_path}: leaves the tree through a symlink")
        target = root.joinpath(*rel.parts).resolve(strict=True)
    except FileNotFoundError as e:
        raise RouteConfigError(f"{rel_path}: does not exist ({e.filename})") from e
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python 3.11/3.12)
        raise RouteConfigError(f"{rel_path}: cannot be resolved: {e}") from e
    parts = target.relative_to(root).parts
    if not parts:
        raise RouteConfigError(f"{rel_path}: is the tree itself, not a file")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        dir_fd = os.open(root, flags)
    except OSError as e:
        raise RouteConfigError(f"{rel_path}: cannot open the tree: {e.strerror}") from e
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
            except OSError as e:
                raise RouteConfigError(f"{rel_path}: changed while being opened") from e
            os.close(dir_fd)
            dir_fd = next_fd
        yield _ConfinedFile(dir_fd, parts[-1], target)
    finally:
        os.close(dir_fd)


def _read_regular(file: _ConfinedFile, rel_path: str) -> tuple[bytes, os.stat_result]:
    try:
        st = os.stat(file.name, dir_fd=file.dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise RouteConfigError(f"{rel_path}: is not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise RouteConfigError(f"{rel_path}: is larger than {MAX_CONFIG_BYTES} bytes")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(file.name, flags, dir_fd=file.dir_fd)
    except OSError as e:
        raise RouteConfigError(f"{rel_path}: cannot be opened: {e.strerror}") from e
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise RouteConfigError(f"{rel_path}: is not a regular file")
        content = handle.read(MAX_CONFIG_BYTES + 1)
    if len(content) > MAX_CONFIG_BYTES:
        raise RouteConfigError(f"{rel_path}: is larger than {MAX_CONFIG_BYTES} bytes")
    return content, st


def read_routes_file(tree_root: Path, rel_path: str) -> dict[str, str]:
    """``read_routes`` of ``tree_root/rel_path``, refusing paths that leave the tree."""
    with _confined(tree_root, rel_path) as file:
        content, _ = _read_regular(file, rel_path)
    return read_routes(content, path_label=rel_path)


def same_structure(before: bytes, after: bytes) -> bool:
    """Whether ``after`` is ``before`` with nothing changed but the text of plain string
    literals (each still a literal with a value): the same tokens, kinds and bytes between
    them (comments, whitespace, inline HTML). False for anything the lexer cannot read."""
    old_src, new_src = before.decode("latin-1"), after.decode("latin-1")
    try:
        old, new = Lexer(old_src).run(), Lexer(new_src).run()
    except LexError:
        return False
    if len(old) != len(new):
        return False
    old_end = new_end = 0
    for a, b in zip(old, new, strict=True):
        if a.kind is not b.kind or old_src[old_end:a.start] != new_src[new_end:b.start]:
            return False
        if a.text != b.text and not (
                a.kind is Kind.STRING and a.value is not None and b.value is not None):
            return False
        old_end, new_end = a.end, b.end
    return old_src[old_end:] == new_src[new_end:]


def _php_lint(php: str, path: Path, rel_path: str) -> None:
    try:
        result = subprocess.run(
            [php, "-l", str(path)],
            env=child_environment(),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PHP_LINT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RouteConfigError(f"{rel_path}: php -l could not check the new file: {e}") from e
    if result.returncode != 0:
        output = (result.stdout + result.stderr).replace(str(path), rel_path).strip()
        raise RouteConfigError(f"{rel_path}: php -l refused the new file: {output[:2000]}")


def _write_beside(file: _ConfinedFile, content: bytes, st: os.stat_result) -> str:
    """Write ``content`` to a new temporary file next to ``file``; return its name."""
    tmp_name = f".{file.name}.sdp-{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp_name, flags, 0o600, dir_fd=file.dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                # Keep the owner when we may (an agent running as root); else it becomes ours.
                with suppress(PermissionError):
                    os.fchown(fd, st.st_uid, st.st_gid)
            os.fsync(fd)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp_name, dir_fd=file.dir_fd)
        raise
    return tmp_name


def replace_routes_file(
    tree_root: Path,
    rel_path: str,
    routes: Mapping[str, str],
    *,
    php_binary: str | None = "php",
    parsed_already: bool = False,
) -> dict[str, str]:
    """Rewrite the routes of ``tree_root/rel_path`` atomically; return the routes read back.
    ``parsed_already``: PHP parses the file as it is now, so a rewrite that changed only string
    literals (``same_structure``) needs no ``php -l``."""
    php = shutil.which(php_binary) if php_binary is not None else None
    with _confined(tree_root, rel_path) as file:
        content, st = _read_regular(file, rel_path)
        new_content = write_routes(content, routes, path_label=rel_path)
        if new_content == content:
            return read_routes(content, path_label=rel_path)
        try:
            tmp_name = _write_beside(file, new_content, st)
        except OSError as e:
            raise RouteConfigError(f"{rel_path}: cannot write beside it: {e.strerror}") from e
        try:
            if php is not None and not (parsed_already and same_structure(content, new_content)):
                _php_lint(php, file.path.parent / tmp_name, rel_path)
            os.replace(tmp_name, file.name, src_dir_fd=file.dir_fd, dst_dir_fd=file.dir_fd)
        except BaseException as e:
            with suppress(FileNotFoundError):
                os.unlink(tmp_name, dir_fd=file.dir_fd)
            if isinstance(e, OSError):
                raise RouteConfigError(f"{rel_path}: cannot replace it: {e.strerror}") from e
            raise
        with suppress(OSError):  # the rename is done; this only hastens its durability
            os.fsync(file.dir_fd)
        written, _ = _read_regular(file, rel_path)
    return read_routes(written, path_label=rel_path)
