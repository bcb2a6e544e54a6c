"""A small PHP lexer: just enough of PHP's tokens to find top-level ``$config[...] = ...;``
statements without ever mistaking a comment, a string, a heredoc or inline HTML for code.

It knows ``<?php``/``?>`` (a ``?>`` ends a ``//`` or ``#`` comment), ``/* */`` comments,
single- and double-quoted strings (with interpolation detected, never evaluated), heredoc and
nowdoc, ``#[`` attributes, numbers, identifiers, variables and operators. Used by
``phpconfig``; checked against PHP itself by the tests.
"""

from __future__ import annotations

import enum
import re

from msgspec import Struct


class Kind(enum.Enum):
    OPEN_TAG = "open tag"
    CLOSE_TAG = "close tag"
    VARIABLE = "variable"
    IDENT = "identifier"
    NUMBER = "number"
    STRING = "string"
    PUNCT = "punctuation"


class Token(Struct, frozen=True):
    kind: Kind
    start: int
    end: int
    text: str
    # For a single- or double-quoted literal without interpolation that decodes as UTF-8:
    # its value. ``None`` for every other token (heredocs and interpolated strings included).
    value: str | None = None


class LexError(Exception):
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


class Lexer:
    """Splits PHP source (bytes decoded as latin-1, so offsets are byte offsets) into the
    tokens that matter; whitespace and comments are dropped."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.pos = 0
        self.tokens: list[Token] = []

    def run(self) -> list[Token]:
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
            self.tokens.append(Token(Kind.OPEN_TAG, at, m.end(), m.group()))
            self.pos = m.end()
        elif src.startswith("<?=", at):
            # `<?=` opens an echo statement: what follows is an expression, not a statement.
            self.tokens.append(Token(Kind.IDENT, at, at + 3, "echo"))
            self.pos = at + 3
        else:
            raise LexError(
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
                    raise LexError("unterminated '{$' in a string", self.pos)
                return
            start = self.pos
            if src.startswith("?>", start):
                if in_string:
                    raise LexError("'?>' inside string interpolation", start)
                end = start + 2
                end += 2 if src.startswith("\r\n", end) else 1 if src.startswith("\n", end) else 0
                self.tokens.append(Token(Kind.CLOSE_TAG, start, end, src[start:end]))
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
            if token.kind is Kind.IDENT and token.text.lower() == "__halt_compiler":
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
                    raise LexError("unterminated /* comment", self.pos)
                self.pos = end + 2
            else:
                return

    def _token(self) -> Token:
        src, start = self.src, self.pos
        ch = src[start]
        nxt = src[start + 1 : start + 2]
        if ch == "$" and nxt and nxt in _LABEL_START:
            return self._take(Kind.VARIABLE, _match_end(_IDENT, src, start + 1))
        quote_at = start + 1 if ch in "bB" and nxt in ("'", '"') else start
        if src[quote_at] == "'":
            return self._single_quoted(quote_at)
        if src[quote_at] in '"`':
            return self._double_quoted(quote_at)
        if (m := _HEREDOC_HEAD.match(src, start)) is not None:
            return self._heredoc(m)
        if ch in _LABEL_START:
            return self._take(Kind.IDENT, _match_end(_IDENT, src, start))
        if ch in "0123456789":
            return self._take(Kind.NUMBER, _match_end(_NUMBER, src, start))
        return self._take(Kind.PUNCT, _match_end(_OPERATOR, src, start))

    def _take(self, kind: Kind, end: int, value: str | None = None) -> Token:
        token = Token(kind, self.pos, end, self.src[self.pos : end], value)
        self.pos = end
        return token

    def _single_quoted(self, quote_at: int) -> Token:
        m = _SINGLE_QUOTED.match(self.src, quote_at)
        if m is None:
            raise LexError("unterminated single-quoted string", self.pos)
        raw = re.sub(r"\\([\\'])", r"\1", m[1])
        return self._take(Kind.STRING, m.end(), _utf8(raw.encode("latin-1")))

    def _double_quoted(self, quote_at: int) -> Token:
        """A `"..."` or `` `...` `` string; interpolated ones get no value."""
        src, n, closer = self.src, len(self.src), self.src[quote_at]
        i = quote_at + 1
        interpolated = closer == "`"  # backticks run a shell command: never a plain value
        while True:
            if i >= n:
                raise LexError("unterminated double-quoted string", self.pos)
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
        return self._take(Kind.STRING, i + 1, value)

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

    def _heredoc(self, head: re.Match[str]) -> Token:
        src, n = self.src, len(self.src)
        label = head["bare"] or head["dq"] or head["nowdoc"]
        nowdoc = head["nowdoc"] is not None
        closing = re.compile(rf"[ \t]*{re.escape(label)}(?![A-Za-z0-9_\x80-\xff])")
        i = head.end()
        while (m := closing.match(src, i)) is None:  # i is at the start of a line
            while True:
                if i >= n:
                    raise LexError(f"unterminated heredoc <<<{label}", self.pos)
                ch = src[i]
                if ch in "\r\n":
                    i += 1
                    break
                if not nowdoc and ch == "\\":
                    i += 1 if src[i + 1 : i + 2] in ("", "\r", "\n") else 2
                    continue
                skipped = i if nowdoc else self._interpolation(i)
                i = skipped if skipped != i else i + 1
        return self._take(Kind.STRING, m.end())
