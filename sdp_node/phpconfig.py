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
  untouched.
"""

from __future__ import annotations

import bisect
import enum
import os
import re
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sdp_node.errors import RouteConfigError

__all__ = [
    "RouteConfigError",
    "read_routes",
    "read_routes_file",
    "replace_routes_file",
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


# --------------------------------------------------------------------------- the PHP lexer


class _Kind(enum.Enum):
    OPEN_TAG = "open tag"
    CLOSE_TAG = "close tag"
    VARIABLE = "variable"
    IDENT = "identifier"
    NUMBER = "number"
    STRING = "string"
    PUNCT = "punctuation"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    start: int
    end: int
    text: str
    # For a single- or double-quoted literal without interpolation that decodes as UTF-8:
    # its value. ``None`` for every other token (heredocs and interpolated strings included).
    value: str | None = None


class _LexError(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.pos = pos


_LABEL_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_") | frozenset(
    map(chr, range(0x80, 0x100))
)
_LABEL_RE = "[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*"
_OPEN_TAG = re.compile(r"<\?php(?:[ \t\r\n]|\Z)", re.IGNORECASE)
_LINE_COMMENT_END = re.compile(r"\r|\n|\?>")
_SINGLE_QUOTED = re.compile(r"'([^'\\]*(?:\\.[^'\\]*)*)'", re.DOTALL)
_HEREDOC_HEAD = re.compile(
    rf"[bB]?<<<[ \t]*(?:(?P<bare>{_LABEL_RE})|\"(?P<dq>{_LABEL_RE})\"|'(?P<nowdoc>{_LABEL_RE})')"
    r"(?:\r\n|\n|\r)"
)
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_]*(?:\.[0-9A-Za-z_]*)?")
_IDENT = re.compile(_LABEL_RE)
_OPERATORS = (
    "<<=", ">>=", "**=", "...", "<=>", "===", "!==", "??=", "?->",
    "**", "++", "--", "->", "=>", "::", "==", "!=", "<>", "<=", ">=", "&&", "||", "??",
    "+=", "-=", "*=", "/=", ".=", "%=", "&=", "|=", "^=", "<<", ">>", "#[",
)  # fmt: skip
_OPERATOR = re.compile("|".join(map(re.escape, _OPERATORS)) + "|.", re.DOTALL)  # longest first
_SIMPLE_ESCAPES = {"n": 10, "t": 9, "r": 13, "v": 11, "e": 27, "f": 12, "\\": 92, "$": 36, '"': 34}
_OCTAL = re.compile(r"[0-7]{1,3}")
_HEX = re.compile(r"[0-9A-Fa-f]{1,2}")
_UNICODE = re.compile(r"\{([0-9A-Fa-f]+)\}")


def _match_end(pattern: re.Pattern[str], src: str, pos: int) -> int:
    m = pattern.match(src, pos)
    assert m is not None, "callers check the first character"
    return m.end()


def _utf8(raw: bytes | bytearray) -> str | None:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_double_quoted(body: str) -> str | None:
    """The value of a double-quoted literal without interpolation; ``None`` if not UTF-8."""
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if ch != "\\" or not nxt:
            out.append(ord(ch))
            i += 1
        elif nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif (m := _OCTAL.match(body, i + 1)) is not None:
            out.append(int(m.group(), 8) & 0xFF)  # PHP wraps \400 and above, with a warning
            i = m.end()
        elif nxt == "x" and (m := _HEX.match(body, i + 2)) is not None:
            out.append(int(m.group(), 16))
            i = m.end()
        elif nxt == "u" and body.startswith("{", i + 2):
            m = _UNICODE.match(body, i + 2)
            if m is None or int(m[1], 16) > 0x10FFFF:
                return None  # a compile error in PHP
            out += chr(int(m[1], 16)).encode("utf-8", "surrogatepass")
            i = m.end()
        else:  # an unknown escape keeps its backslash
            out.append(92)
            i += 1
    return _utf8(out)


class _Lexer:
    """Splits PHP source (bytes decoded as latin-1, so offsets are byte offsets) into the
    tokens that matter; whitespace and comments are dropped."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.pos = 0
        self.tokens: list[_Token] = []

    def run(self) -> list[_Token]:
        while self.pos < len(self.src) and self._inline_html():
            self._code(in_string=False)
        return self.tokens

    def _inline_html(self) -> bool:
        """Skip inline HTML up to an open tag; return whether there is one."""
        src = self.src
        at = src.find("<?", self.pos)
        if at < 0:
            self.pos = len(src)
            return False
        if (m := _OPEN_TAG.match(src, at)) is not None:
            self.tokens.append(_Token(_Kind.OPEN_TAG, at, m.end(), m.group()))
            self.pos = m.end()
        elif src.startswith("<?=", at):
            # `<?=` opens an echo statement: what follows is an expression, not a statement.
            self.tokens.append(_Token(_Kind.IDENT, at, at + 3, "echo"))
            self.pos = at + 3
        else:
            raise _LexError(
                "'<?' without 'php' is code or text depending on short_open_tag; refusing to guess",
                at,
            )
        return True

    def _code(self, *, in_string: bool) -> None:
        """Lex PHP code up to a close tag, or (in_string) up to the `}` that ends `{$...}`."""
        src, n = self.src, len(self.src)
        depth = 0
        while True:
            self._skip_space_and_comments()
            if self.pos >= n:
                if in_string:
                    raise _LexError("unterminated '{$' in a string", self.pos)
                return
            start = self.pos
            if src.startswith("?>", start):
                if in_string:
                    raise _LexError("'?>' inside string interpolation", start)
                end = start + 2
                end += 2 if src.startswith("\r\n", end) else 1 if src.startswith("\n", end) else 0
                self.tokens.append(_Token(_Kind.CLOSE_TAG, start, end, src[start:end]))
                self.pos = end
                return
            token = self._token()
            if in_string:
                if token.text == "{":
                    depth += 1
                elif token.text == "}":
                    if depth == 0:
                        return
                    depth -= 1
                continue
            self.tokens.append(token)
            if token.kind is _Kind.IDENT and token.text.lower() == "__halt_compiler":
                self.pos = n  # everything after __halt_compiler(); is data, not code
                return

    def _skip_space_and_comments(self) -> None:
        src, n = self.src, len(self.src)
        while self.pos < n:
            ch = src[self.pos]
            if ch in " \t\r\n":
                self.pos += 1
            elif src.startswith("//", self.pos) or (
                ch == "#" and not src.startswith("#[", self.pos)
            ):
                # A line comment ends at a newline or at `?>`, which still closes PHP mode.
                m = _LINE_COMMENT_END.search(src, self.pos)
                self.pos = m.start() if m is not None else n
            elif src.startswith("/*", self.pos):
                end = src.find("*/", self.pos + 2)
                if end < 0:
                    raise _LexError("unterminated /* comment", self.pos)
                self.pos = end + 2
            else:
                return

    def _token(self) -> _Token:
        src, start = self.src, self.pos
        ch = src[start]
        nxt = src[start + 1 : start + 2]
        if ch == "$" and nxt and nxt in _LABEL_START:
            return self._take(_Kind.VARIABLE, _match_end(_IDENT, src, start + 1))
        quote_at = start + 1 if ch in "bB" and nxt in ("'", '"') else start
        if src[quote_at] == "'":
            return self._single_quoted(quote_at)
        if src[quote_at] in '"`':
            return self._double_quoted(quote_at)
        if (m := _HEREDOC_HEAD.match(src, start)) is not None:
            return self._heredoc(m)
        if ch in _LABEL_START:
            return self._take(_Kind.IDENT, _match_end(_IDENT, src, start))
        if ch in "0123456789":
            return self._take(_Kind.NUMBER, _match_end(_NUMBER, src, start))
        return self._take(_Kind.PUNCT, _match_end(_OPERATOR, src, start))

    def _take(self, kind: _Kind, end: int, value: str | None = None) -> _Token:
        token = _Token(kind, self.pos, end, self.src[self.pos : end], value)
        self.pos = end
        return token

    def _single_quoted(self, quote_at: int) -> _Token:
        m = _SINGLE_QUOTED.match(self.src, quote_at)
        if m is None:
            raise _LexError("unterminated single-quoted string", self.pos)
        raw = re.sub(r"\\([\\'])", r"\1", m[1])
        return self._take(_Kind.STRING, m.end(), _utf8(raw.encode("latin-1")))

    def _double_quoted(self, quote_at: int) -> _Token:
        """A `"..."` or `` `...` `` string; interpolated ones get no value."""
        src, n, closer = self.src, len(self.src), self.src[quote_at]
        i = quote_at + 1
        interpolated = closer == "`"  # backticks run a shell command: never a plain value
        while True:
            if i >= n:
                raise _LexError("unterminated double-quoted string", self.pos)
            ch = src[i]
            if ch == closer:
                break
            if ch == "\\":
                i += 2
                continue
            skipped = self._interpolation(i)
            interpolated = interpolated or skipped != i
            i = skipped if skipped != i else i + 1
        value = None if interpolated else _decode_double_quoted(src[quote_at + 1 : i])
        return self._take(_Kind.STRING, i + 1, value)

    def _interpolation(self, i: int) -> int:
        """If an interpolation starts at ``i``, the offset just past it (or past its `$`)."""
        src = self.src
        pair = src[i : i + 2]
        if pair in ("{$", "${"):
            saved = self.pos
            self.pos = i + 1 if pair == "{$" else i + 2
            self._code(in_string=True)  # may contain strings, comments and braces of its own
            end, self.pos = self.pos, saved
            return end
        if pair[:1] == "$" and pair[1:] and pair[1] in _LABEL_START:
            return i + 1  # a simple "$name", "$name[..]" or "$name->x" holds no quote or brace
        return i

    def _heredoc(self, head: re.Match[str]) -> _Token:
        src, n = self.src, len(self.src)
        label = head["bare"] or head["dq"] or head["nowdoc"]
        nowdoc = head["nowdoc"] is not None
        closing = re.compile(rf"[ \t]*{re.escape(label)}(?![A-Za-z0-9_\x80-\xff])")
        i = head.end()
        while (m := closing.match(src, i)) is None:  # i is at the start of a line
            while True:
                if i >= n:
                    raise _LexError(f"unterminated heredoc <<<{label}", self.pos)
                ch = src[i]
                if ch in "\r\n":
                    i += 1
                    break
                if not nowdoc and ch == "\\":
                    i += 1 if src[i + 1 : i + 2] in ("", "\r", "\n") else 2
                    continue
                skipped = i if nowdoc else self._interpolation(i)
                i = skipped if skipped != i else i + 1
        return self._take(_Kind.STRING, m.end())


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


@dataclass(frozen=True, slots=True)
class _Write:
    """A statement that changes ``$config[key]``, or all of ``$config`` when ``key`` is None."""

    key: str | None
    line: int
    value: str | None = None  # set only for a plain top-level literal assignment
    span: tuple[int, int] | None = None  # the value token, for a plain assignment
    # May take effect at another time or through an alias: inside a block or a function, by
    # reference, or as a call argument. Such a write makes its key(s) unprovable for good.
    uncertain: bool = False


@dataclass(frozen=True, slots=True)
class _ConfigModel:
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


def _matching_closers(tokens: list[_Token]) -> dict[int, int]:
    """Index of each opening bracket -> index of the token that closes it."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, tok in enumerate(tokens):
        if tok.kind is not _Kind.PUNCT:
            continue
        if tok.text in _OPENERS:
            stack.append(i)
        elif tok.text in (")", "]", "}") and stack and _OPENERS[tokens[stack[-1]].text] == tok.text:
            pairs[stack.pop()] = i
    return pairs


def _scan_writes(lines: _Lines, tokens: list[_Token]) -> list[_Write]:
    closers = _matching_closers(tokens)
    writes: list[_Write] = []
    enclosing: list[int] = []  # indexes of the open brackets around the current token
    alt_depth = 0

    def text(i: int) -> str:
        return tokens[i].text if 0 <= i < len(tokens) else ""

    for i, tok in enumerate(tokens):
        low = tok.text.lower()
        if tok.kind is _Kind.PUNCT and tok.text in _OPENERS:
            enclosing.append(i)
            continue
        if tok.kind is _Kind.PUNCT and tok.text in (")", "]", "}"):
            if enclosing and closers.get(enclosing[-1]) == i:
                enclosing.pop()
            continue
        if tok.kind is _Kind.IDENT and low in _ALT_BLOCK_OPENERS and text(i + 1) == "(":
            if i + 1 in closers and text(closers[i + 1] + 1) == ":":
                alt_depth += 1
        elif tok.kind is _Kind.IDENT and low in _ALT_BLOCK_CLOSERS:
            alt_depth = max(0, alt_depth - 1)
        nested = bool(enclosing) or alt_depth > 0
        if tok.kind is _Kind.IDENT and low in _CLOBBERING_CALLS:
            writes.append(_Write(None, lines.of(tok.start), uncertain=nested))
        if tok.kind is _Kind.VARIABLE and tok.text == "$config":
            write = _config_write(lines, tokens, i, closers, enclosing, nested=nested)
            if write is not None:
                writes.append(write)
    return writes


def _config_write(
    lines: _Lines,
    tokens: list[_Token],
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
        or prev.kind in (_Kind.OPEN_TAG, _Kind.CLOSE_TAG)
        or (prev.kind is _Kind.PUNCT and prev.text in (";", "}"))
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
        and (end.text == ";" or end.kind is _Kind.CLOSE_TAG)
    ):
        return _Write(key, line, value=value.value, span=(value.start, value.end))
    if not target:
        return None
    by_ref = by_ref or (after == "=" and text(i + 5) == "&")  # `$config[k] = &$x`
    return _Write(key, line, uncertain=nested or by_ref)


def _is_callee(tokens: list[_Token], paren: int) -> bool:
    """Whether the `(` at ``paren`` opens the arguments of a call (which may take references)."""
    before = tokens[paren - 1] if paren > 0 else None
    if before is None:
        return False
    if before.kind is _Kind.IDENT:
        return before.text.lower() not in _NOT_CALLS
    return before.kind is _Kind.VARIABLE or before.text in (")", "]")


def _model(source: bytes, path_label: str) -> _ConfigModel:
    src = source.decode("latin-1")
    try:
        tokens = _Lexer(src).run()
    except _LexError as e:
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


@dataclass(frozen=True, slots=True)
class _ConfinedFile:
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


def _php_lint(php: str, path: Path, rel_path: str) -> None:
    try:
        result = subprocess.run(
            [php, "-l", str(path)],
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
) -> dict[str, str]:
    """Rewrite the routes of ``tree_root/rel_path`` atomically; return the routes read back."""
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
            if php is not None:
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
