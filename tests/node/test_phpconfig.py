"""The gateway route reader and writer, checked against the real PHP interpreter.

PHP is the oracle: every file the tests read or write is also included by ``php`` (with
``BASEPATH`` defined, as CodeIgniter does) and the ``$config`` it leaves is compared with what
``sdp_node.phpconfig`` claims. PHP runs in batches (one process for many files) to stay fast.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdp_node.errors import RouteConfigError
from sdp_node.phpconfig import (
    MAX_CONFIG_BYTES,
    _php_single_quoted,  # the defence-in-depth escaping, checked on its own against PHP
    read_routes,
    read_routes_file,
    replace_routes_file,
    same_structure,
    validate_route_url,
    write_routes,
)

PHP = shutil.which("php")
needs_php = pytest.mark.usefixtures("php")  # fails, never skips, without PHP: CI installs it
REL = "application/config/production/config.php"

FIXTURE = b"""<?php defined('BASEPATH') OR exit('No direct script access allowed');

/*
|--------------------------------------------------------------------------
| Service routing
|--------------------------------------------------------------------------
| Previous value, kept for reference:
| $config['account_url'] = 'http://evil';
*/
$config['base_url'] = '';
$config['account_url'] = 'https://account-dev.company.invalid';
$config["payment_url"]="https://payment-dev.company.invalid/api/v1";
$config [ 'order_url' ]
    =
    'http://order-dev.company.invalid:8080' ;
// $config['account_url'] = 'http://evil';
# $config['payment_url'] = 'http://evil';
$config['account_url_timeout'] = 30;
$config['banner'] = "Set \\$config['account_url'] = 'x'; to reroute";
$config['note'] = '$config[\\'account_url\\'] = \\'x\\';';
$config['help'] = <<<EOT
  To reroute: \\$config['account_url'] = 'http://evil';
  EOT;
$config['raw'] = <<<'RAW'
$config['order_url'] = 'http://evil';
RAW;
$config["user_url"] = "http://user-dev.company.invalid\\x2fv2";
$config['search_url']\t=\t/* inline */ b'https://search-dev.company.invalid' ?>
<?php
$config['language'] = 'english';
"""

FIXTURE_ROUTES = {
    "base": "",
    "account": "https://account-dev.company.invalid",
    "payment": "https://payment-dev.company.invalid/api/v1",
    "order": "http://order-dev.company.invalid:8080",
    "user": "http://user-dev.company.invalid/v2",
    "search": "https://search-dev.company.invalid",
}

# The value token of each route in FIXTURE, each of which occurs exactly once.
FIXTURE_LITERALS = {
    "account": b"'https://account-dev.company.invalid'",
    "payment": b'"https://payment-dev.company.invalid/api/v1"',
    "order": b"'http://order-dev.company.invalid:8080'",
    "user": b'"http://user-dev.company.invalid\\x2fv2"',
    "search": b"b'https://search-dev.company.invalid'",
}

PHP_INCLUDE = r"""
error_reporting(E_ALL);
ini_set('display_errors', 'stderr');
define('BASEPATH', '/');
function sdp_load($file) {
    $config = [];
    ob_start();
    try {
        include $file;
    } catch (\Throwable $e) {
        ob_end_clean();
        return ['__error__' => get_class($e) . ': ' . $e->getMessage()];
    }
    ob_end_clean();
    return $config;
}
$out = [];
foreach (array_slice($argv, 1) as $file) {
    $out[] = (object) sdp_load($file);
}
echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE | JSON_THROW_ON_ERROR);
"""


def php_configs(paths: Sequence[Path]) -> list[dict[str, object]]:
    """Include each file in real PHP (one process) and return the ``$config`` each leaves."""
    assert PHP is not None
    done = subprocess.run(
        [PHP, "-r", PHP_INCLUDE, "--", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    configs: list[dict[str, object]] = json.loads(done.stdout)
    for path, config in zip(paths, configs, strict=True):
        assert "__error__" not in config, (path, config["__error__"], path.read_bytes())
    return configs


def php_config(path: Path) -> dict[str, object]:
    return php_configs([path])[0]


def url_keys(config: Mapping[str, object]) -> dict[str, object]:
    return {k[: -len("_url")]: v for k, v in config.items() if k.endswith("_url") and k != "_url"}


def php_lint(path: Path) -> subprocess.CompletedProcess[str]:
    assert PHP is not None
    return subprocess.run([PHP, "-l", str(path)], capture_output=True, text=True, check=False)


def make_tree(root: Path, content: bytes, *, mode: int = 0o644) -> Path:
    config = root / REL
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_bytes(content)
    config.chmod(mode)
    return config


def snapshot(path: Path) -> tuple[bytes, int, int, int]:
    st_ = path.stat()
    return path.read_bytes(), st_.st_ino, st_.st_mtime_ns, stat.S_IMODE(st_.st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------ reading


def test_reads_the_codeigniter_fixture() -> None:
    assert read_routes(FIXTURE) == FIXTURE_ROUTES


@needs_php
def test_php_reads_the_fixture_the_same_way(tmp_path: Path) -> None:
    config = make_tree(tmp_path, FIXTURE)
    assert url_keys(php_config(config)) == FIXTURE_ROUTES


READ_CASES = [
    pytest.param(b"<?php $config['a_url'] = 'http://a';", {"a": "http://a"}, id="single"),
    pytest.param(b'<?php $config["a_url"] = "http://a";', {"a": "http://a"}, id="double"),
    pytest.param(
        b"<?php\n$config\n[\n'a_url'\n]\n/* c */=\n// x\n'http://a'\n;",
        {"a": "http://a"},
        id="tokens-spread-over-lines-and-comments",
    ),
    pytest.param(b"<?php $config['a_url']='http://a'?>\n", {"a": "http://a"}, id="close-tag-ends"),
    pytest.param(b"<?php\r\n$config['a_url'] = 'x';\r\n", {"a": "x"}, id="crlf"),
    pytest.param(
        rb"<?php $config['a_url'] = 'it\'s \\ \n \x';", {"a": "it's \\ \\n \\x"}, id="sq-escapes"
    ),
    pytest.param(
        rb'<?php $config["a_url"] = "\x68ttp:\u{2F}/a\101\t\$x\q\"\\\e";',
        {"a": 'http://aA\t$x\\q"\\\x1b'},
        id="dq-escapes",
    ),
    pytest.param(rb'<?php $config["a_url"] = "\400";', {"a": "\x00"}, id="octal-wraps"),
    pytest.param(rb'<?php $config["a_url"] = "\xff";', {}, id="not-utf8"),
    pytest.param(rb'<?php $config["a\x5furl"] = "x";', {"a": "x"}, id="escaped-key"),
    pytest.param(
        b"<?php $h = 'h'; $config['a_url'] = \"http://$h\"; $config['b_url'] = \"{$h}\";"
        b" $config['c_url'] = \"${h}\"; $config['d_url'] = \"\\{$h}\"; $config['e_url'] = 'e';",
        {"e": "e"},
        id="interpolation-is-not-a-value",
    ),
    pytest.param(rb'<?php $config["a_url"] = "http://a/\$b";', {"a": "http://a/$b"}, id="dollar"),
    pytest.param(
        b"<?php $config['a_url'] = 'one'; $config['a_url'] = 'two';", {"a": "two"}, id="last-wins"
    ),
    pytest.param(
        b"<?php // note ?> $config['a_url'] = 'html'; <?php $config['b_url'] = 'b';",
        {"b": "b"},
        id="close-tag-ends-slash-comment",
    ),
    pytest.param(
        b"<?php # note ?> $config['a_url'] = 'html'; <?php $config['b_url'] = 'b';",
        {"b": "b"},
        id="close-tag-ends-hash-comment",
    ),
    pytest.param(
        b"<?php #[Note('x')] function f() {} $config['a_url'] = 'a';",
        {"a": "a"},
        id="hash-bracket-is-an-attribute",
    ),
    pytest.param(
        b"<?php $s = <<<EOT\n\\$config['a_url'] = 'evil';\nEOT;\n$config['b_url'] = 'b';",
        {"b": "b"},
        id="heredoc",
    ),
    pytest.param(
        b"<?php $s = <<<'EOT'\n$config['a_url'] = 'evil';\nEOT;\n$config['b_url'] = 'b';",
        {"b": "b"},
        id="nowdoc",
    ),
    pytest.param(
        b"<?php $s = <<<  \"EOT\"\n  EOTX;\n  $config\n  EOT;\n$config['b_url'] = 'b';",
        {"b": "b"},
        id="heredoc-indented-close-and-longer-label",
    ),
    pytest.param(
        b"<?php $s = <<<EOT\nx\\\nEOT;\n$config['b_url'] = 'b';",
        {"b": "b"},
        id="heredoc-backslash-does-not-escape-newline",
    ),
    pytest.param(
        b"<?php $arr = ['k' => '\"'];\n$s = \"{$arr[\"k\"]}\"; $config['a_url'] = 'a';",
        {"a": "a"},
        id="quotes-inside-complex-interpolation",
    ),
    pytest.param(
        b"<?php $config['note'] = '$config[\\'a_url\\'] = \\'x\\';'; $s = '?>';",
        {},
        id="assignment-inside-a-string",
    ),
    pytest.param(b"<?php $x = `printf \"'\"`; $config['a_url'] = 'a';", {"a": "a"}, id="backticks"),
    pytest.param(
        b"<?php $config['a_url'] = 'a'; $config['a_url'] .= '/x';", {}, id="concat-assign"
    ),
    pytest.param(
        b"<?php if (true) { $config['a_url'] = 'x'; } $config['a_url'] = 'y';",
        {},
        id="write-in-a-block-poisons",
    ),
    pytest.param(
        b"<?php if (true): $config['b_url'] = 'x'; $config['a_url'] = 'x'; endif;",
        {},
        id="alternative-syntax-block",
    ),
    pytest.param(b"<?php if (true) $config['a_url'] = 'x';", {}, id="braceless-if"),
    pytest.param(b"<?php $config['a_url'] = 'x'; $config = [];", {}, id="wholesale-reset-after"),
    pytest.param(
        b"<?php $config = array(); $config['a_url'] = 'x';",
        {"a": "x"},
        id="wholesale-reset-before",
    ),
    pytest.param(
        b"<?php $reset = function () use (&$config) { $config = []; };\n"
        b"$config['a_url'] = 'x'; $reset();",
        {},
        id="closure-resets-later",
    ),
    pytest.param(
        b"<?php $k = 'a_url'; $config['a_url'] = 'x'; $config[$k] = 'y';",
        {},
        id="computed-key-after",
    ),
    pytest.param(b"<?php $config['a_url'] = 'x'; unset($config['a_url']);", {}, id="unset"),
    pytest.param(
        b"<?php $config['a_url'] = 'x'; $config['cb_url'] = $config['a_url'] . '/cb';"
        b" $y = $config['a_url'] ?? 'd';",
        {"a": "x"},
        id="reads-do-not-poison",
    ),
    pytest.param(
        b"<?php $config['a_url_timeout'] = 'x'; $config['_url'] = 'x'; $config['A_URL'] = 'x';"
        b" $config['url'] = 'x'; $configuration['b_url'] = 'x'; $config['c_url'] == 'x';",
        {},
        id="not-routes",
    ),
    pytest.param(
        b"<?php $config['a_url'] = 'a' . 'b'; $config['b_url'] = 1; $config['c_url'] = PHP_OS;",
        {},
        id="not-literals",
    ),
    pytest.param(
        b"<?php $config['a_url'] = 'a'; __halt_compiler(); $config['a_url'] = 'evil';",
        {"a": "a"},
        id="halt-compiler",
    ),
    pytest.param(
        b"<html>\n<?PHP $config['a_url'] = 'a';", {"a": "a"}, id="inline-html-and-uppercase-tag"
    ),
    pytest.param(
        b"<?php $config['b_url'] = 'b' ?><?= $config['a_url'] = 'x' ?>",
        {"b": "b"},
        id="echo-tag-is-an-expression",
    ),
    pytest.param(b"", {}, id="empty"),
    pytest.param(b"<?php", {}, id="bare-open-tag"),
]


@pytest.mark.parametrize(("source", "expected"), READ_CASES)
def test_read_cases(source: bytes, expected: dict[str, str]) -> None:
    assert read_routes(source) == expected


@needs_php
def test_read_cases_are_what_php_sees(tmp_path: Path) -> None:
    paths = []
    for n, case in enumerate(READ_CASES):
        path = tmp_path / f"case{n}.php"
        path.write_bytes(case.values[0])  # type: ignore[arg-type]
        paths.append(path)
    for case, config in zip(READ_CASES, php_configs(paths), strict=True):
        ours = read_routes(case.values[0])  # type: ignore[arg-type]
        assert {k: url_keys(config).get(k) for k in ours} == ours, case.id


@pytest.mark.parametrize(
    ("source", "line", "problem"),
    [
        (b"<?php\n$config['a_url'] = 'x;", 2, "unterminated single-quoted"),
        (b'<?php\n\n$config["a_url"] = "x;', 3, "unterminated double-quoted"),
        (b"<?php\n/* note", 2, "unterminated /*"),
        (b"<?php\n$s = <<<EOT\nbody\n", 2, "unterminated heredoc"),
        (b'<?php $s = "{$a', 1, "unterminated '{$'"),
        (b"<?xml version='1.0'?>", 1, "short_open_tag"),
        (b'<?php $s = "{$a ?> }";', 1, "'?>' inside"),
    ],
)
def test_unreadable_php_is_refused_with_file_and_line(
    source: bytes, line: int, problem: str
) -> None:
    with pytest.raises(RouteConfigError) as excinfo:
        read_routes(source, path_label=REL)
    assert str(excinfo.value).startswith(f"{REL}:{line}: ")
    assert problem in str(excinfo.value)


def test_a_file_over_the_size_bound_is_refused_before_it_is_lexed() -> None:
    # What a gateway commit carries is read from the git store, not through the on-disk bound:
    # a branch author's 5 MB routes file must not cost the agent seconds of lexing per pass.
    at_bound = b"<?php\n" + b" " * (MAX_CONFIG_BYTES - 7) + b"\n"
    assert len(at_bound) == MAX_CONFIG_BYTES and read_routes(at_bound, path_label=REL) == {}
    over = at_bound + b" "
    for call in (lambda: read_routes(over, path_label=REL),
                 lambda: write_routes(over, NEW_ROUTES, path_label=REL)):
        with pytest.raises(RouteConfigError) as excinfo:
            call()
        assert str(excinfo.value) == f"{REL}: is larger than {MAX_CONFIG_BYTES} bytes"


# ------------------------------------------------------------------------------------ writing

NEW_ROUTES = {"account": "http://127.0.0.1:8081", "payment": "http://sandbox-qa-payment:8080/v1"}


def spliced(source: bytes, routes: Mapping[str, str]) -> bytes:
    """``source`` with exactly the value tokens of ``routes`` replaced, found independently."""
    spans = []
    for service, url in routes.items():
        literal = FIXTURE_LITERALS[service]
        assert source.count(literal) == 1
        start = source.index(literal)
        spans.append((start, start + len(literal), f"'{url}'".encode()))
    out, cursor = b"", 0
    for start, end, new in sorted(spans):
        out += source[cursor:start] + new
        cursor = end
    return out + source[cursor:]


@pytest.mark.parametrize(
    "routes",
    [
        NEW_ROUTES,
        {"order": "https://order.example:443/"},
        {"user": "http://u", "search": "http://s/%2Fx~y"},
        dict.fromkeys(FIXTURE_LITERALS, "http://host.docker.internal:32001"),
    ],
)
def test_write_changes_only_the_value_tokens(routes: dict[str, str]) -> None:
    written = write_routes(FIXTURE, routes, path_label=REL)
    assert written == spliced(FIXTURE, routes)
    assert read_routes(written) == {**FIXTURE_ROUTES, **routes}


def test_write_of_the_current_values_changes_nothing() -> None:
    same = {k: FIXTURE_ROUTES[k] for k in FIXTURE_LITERALS}
    assert write_routes(FIXTURE, same, path_label=REL) == FIXTURE
    assert write_routes(FIXTURE, {}, path_label=REL) == FIXTURE


@needs_php
def test_php_sees_the_new_routes_and_everything_else_unchanged(tmp_path: Path) -> None:
    before = make_tree(tmp_path / "before", FIXTURE)
    after = make_tree(tmp_path / "after", write_routes(FIXTURE, NEW_ROUTES, path_label=REL))
    old, new = php_configs([before, after])
    assert new == {**old, **{f"{k}_url": v for k, v in NEW_ROUTES.items()}}
    lint = php_lint(after)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_unknown_key_is_refused_naming_the_known_keys() -> None:
    with pytest.raises(RouteConfigError) as excinfo:
        write_routes(FIXTURE, {"acount": "http://a"}, path_label=REL)
    message = str(excinfo.value)
    assert message.startswith(f"{REL}: $config['acount_url'] is not assigned")
    assert "account, base, order, payment, search, user" in message


def test_key_assigned_twice_is_refused() -> None:
    source = b"<?php\n$config['a_url'] = 'http://one';\n$config['b_url'] = 'http://b';\n" + (
        b"$config['a_url'] = 'http://two';\n"
    )
    assert read_routes(source) == {"a": "http://two", "b": "http://b"}
    with pytest.raises(RouteConfigError, match=r"'a_url'\] is assigned 2 times \(lines 2, 4\)"):
        write_routes(source, {"a": "http://x"}, path_label=REL)
    # Another key of the same file stays editable: only the ambiguous route is refused.
    assert read_routes(write_routes(source, {"b": "http://x"}, path_label=REL))["b"] == "http://x"


@pytest.mark.parametrize(
    ("source", "why"),
    [
        (b"<?php $config['a_url'] = 'x'; $config = [];", "changed as a whole on line 1"),
        (b"<?php if (1) { $config['a_url'] = 'x'; }", "may be changed on line 1"),
        (b'<?php $config["a_url"] = "$x";', "not set to a plain string literal"),
        (b"<?php $config['a_url'] = 'x'; include 'other.php';", "changed as a whole"),
    ],
)
def test_key_without_a_provable_value_is_refused(source: bytes, why: str) -> None:
    with pytest.raises(RouteConfigError, match="cannot edit") as excinfo:
        write_routes(source, {"a": "http://x"}, path_label=REL)
    assert why in str(excinfo.value)


def test_the_writer_refuses_the_whole_table_when_one_value_is_bad() -> None:
    with pytest.raises(RouteConfigError, match="payment_url"):
        write_routes(FIXTURE, {"account": "http://ok", "payment": "http://a b"}, path_label=REL)


@needs_php
def test_single_quoted_escaping_round_trips_in_php(tmp_path: Path) -> None:
    nasty = ["a'b", "a\\", "\\'", "x'; system('id'); //", "\\\\'", "?>", "${x}{$x}"]
    paths = []
    for n, value in enumerate(nasty):
        path = tmp_path / f"e{n}.php"
        path.write_bytes(f"<?php $config['a_url'] = {_php_single_quoted(value)};".encode())
        paths.append(path)
    assert [c["a_url"] for c in php_configs(paths)] == nasty


# ------------------------------------------------------------------------------------ allow-list

INJECTIONS = [
    "x'; system('id'); //",
    "http://a/'.system('id').'",
    "http://a/\nb",
    "http://a\n",
    "http://a\r",
    "http://a/?>",
    "http://a/?><?php system('id');",
    "http://a/\\b",
    "http://a/${x}",
    "http://a/{$x}",
    'http://a/"b',
    "http://a/'b",
    "http://a/ b",
    "http://a\x00",
    "http://user:pw@host",
    "http://host@evil",
    "ftp://x",
    "javascript:alert(1)",
    "//a",
    "http://",
    "",
    "http://a?b=c",
    "http://a/#frag",
    "http://[::1]:8080",
    "http://a:0",
    "http://a:65536",
    "http://a:99999",
    "http://a:080",
    "http://a:",
    "http://-a",
    "http://a..b",
    "http://a_b",
    "http://a/%zz",
    "http://\uff41",
    "http://a:\u0668\u0660",
    "http://a/\u2028",
    "http://a/" + "x" * 2048,
]

VALID_URLS = [
    "http://a",
    "https://account-dev.company.invalid",
    "http://127.0.0.1:8081",
    "http://host.docker.internal:32001/api/v1/",
    "http://sandbox-qa-account:8080",
    "http://a:1",
    "http://a:65535",
    "http://a/%2F~x._-",
    "http://a/",
]


@pytest.mark.parametrize("url", VALID_URLS)
def test_allow_list_accepts(url: str) -> None:
    assert validate_route_url(url) == url


@pytest.mark.parametrize("url", INJECTIONS)
def test_allow_list_refuses(url: str) -> None:
    with pytest.raises(RouteConfigError) as excinfo:
        validate_route_url(url)
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    assert len(message) < 320  # at most a short prefix of the value is echoed
    assert "pw" not in message and "x" * 100 not in message


@pytest.mark.parametrize("url", INJECTIONS)
def test_injection_is_refused_and_the_file_left_alone(tmp_path: Path, url: str) -> None:
    config = make_tree(tmp_path, FIXTURE)
    before = snapshot(config)
    with pytest.raises(RouteConfigError, match=r"\$config\['account_url'\]"):
        write_routes(FIXTURE, {"account": url}, path_label=REL)
    with pytest.raises(RouteConfigError):
        replace_routes_file(tmp_path, REL, {"order": "http://ok", "account": url})
    assert snapshot(config) == before
    assert leftovers(config.parent) == []


# ------------------------------------------------------------------------------------ files


def test_replace_writes_atomically_and_keeps_the_mode(tmp_path: Path) -> None:
    config = make_tree(tmp_path, FIXTURE, mode=0o640)
    inode = config.stat().st_ino
    assert replace_routes_file(tmp_path, REL, NEW_ROUTES) == {**FIXTURE_ROUTES, **NEW_ROUTES}
    assert config.read_bytes() == spliced(FIXTURE, NEW_ROUTES)
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert config.stat().st_ino != inode  # a new file renamed over the old one
    assert leftovers(config.parent) == []
    assert read_routes_file(tmp_path, REL) == {**FIXTURE_ROUTES, **NEW_ROUTES}


@needs_php
def test_replaced_file_passes_php_and_php_reads_the_routes(tmp_path: Path) -> None:
    config = make_tree(tmp_path, FIXTURE)
    old = php_config(config)
    replace_routes_file(tmp_path, REL, NEW_ROUTES, php_binary=PHP)
    assert php_config(config) == {**old, **{f"{k}_url": v for k, v in NEW_ROUTES.items()}}
    assert php_lint(config).returncode == 0


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    config = make_tree(tmp_path, FIXTURE)
    os.utime(config, ns=(1_000_000_000, 1_000_000_000))
    before = snapshot(config)
    same = {k: FIXTURE_ROUTES[k] for k in ("account", "payment")}
    assert replace_routes_file(tmp_path, REL, same) == FIXTURE_ROUTES
    assert snapshot(config) == before
    assert leftovers(config.parent) == []


@needs_php
def test_php_lint_failure_keeps_the_old_file(tmp_path: Path) -> None:
    broken = b"<?php\n$config['a_url'] = 'http://a';\n$y = ;\n"
    config = make_tree(tmp_path, broken)
    before = snapshot(config)
    with pytest.raises(RouteConfigError, match="php -l refused the new file") as excinfo:
        replace_routes_file(tmp_path, REL, {"a": "http://b"})
    assert "syntax error" in str(excinfo.value)
    assert REL in str(excinfo.value) and ".tmp" not in str(excinfo.value)
    assert snapshot(config) == before
    assert leftovers(config.parent) == []


@needs_php
def test_a_literal_change_of_a_file_php_already_parses_skips_php_lint(tmp_path: Path) -> None:
    # php -l refuses this file (as the test above shows), so its success here proves that no
    # lint ran: the caller said PHP parses the file as it is (set_routes: the served file),
    # and only a string literal changed.
    broken = b"<?php\n$config['a_url'] = 'http://a';\n$y = ;\n"
    config = make_tree(tmp_path, broken)
    assert replace_routes_file(tmp_path, REL, {"a": "http://b"}, parsed_already=True) == {
        "a": "http://b"}
    assert config.read_bytes() == broken.replace(b"'http://a'", b"'http://b'")


def test_same_structure_allows_only_changed_string_literals() -> None:
    edited = write_routes(FIXTURE, NEW_ROUTES, path_label=REL)
    assert edited != FIXTURE and same_structure(FIXTURE, edited)
    base = b"<?php\n// routes\n$config['a_url'] = 'http://a'; ?>\n<p>html</p>\n"
    assert same_structure(base, base.replace(b"'http://a'", b"'http://b/v1'"))
    assert same_structure(base, base.replace(b"'http://a'", b'"http://b"'))
    for changed in (
        base.replace(b"'http://a'", b"'http://a' . 'b'"),  # a token more
        base.replace(b"$config", b"$other"),  # another variable
        base.replace(b"// routes", b"// other"),  # a comment
        base.replace(b"<p>html</p>", b"<p>other</p>"),  # inline HTML
        base.replace(b"'http://a'", b'"http://$host"'),  # an interpolated string
        base.replace(b"'a_url'", b"'a_url' "),  # whitespace between tokens
        base + b"\n",  # after the last token
    ):
        assert not same_structure(base, changed), changed
    assert not same_structure(base, b"<?php\n$x = 'unterminated;\n")


@pytest.mark.parametrize("php_binary", [None, "sdp-no-such-php"])
def test_without_php_the_file_is_written_unchecked(tmp_path: Path, php_binary: str | None) -> None:
    config = make_tree(tmp_path, b"<?php\n$config['a_url'] = 'http://a';\n$y = ;\n")
    assert replace_routes_file(tmp_path, REL, {"a": "http://b"}, php_binary=php_binary) == {
        "a": "http://b"
    }
    assert b"'http://b'" in config.read_bytes()


def test_config_symlinked_outside_the_tree_is_refused(tmp_path: Path) -> None:
    tree, outside = tmp_path / "tree", tmp_path / "outside.php"
    outside.write_bytes(FIXTURE)
    (tree / REL).parent.mkdir(parents=True)
    (tree / REL).symlink_to(outside)
    with pytest.raises(RouteConfigError, match="leaves the tree through a symlink"):
        replace_routes_file(tree, REL, NEW_ROUTES)
    with pytest.raises(RouteConfigError, match="leaves the tree through a symlink"):
        read_routes_file(tree, REL)
    assert outside.read_bytes() == FIXTURE


def test_parent_directory_symlinked_outside_the_tree_is_refused(tmp_path: Path) -> None:
    tree, outside = tmp_path / "tree", tmp_path / "elsewhere"
    make_tree(outside, FIXTURE)
    (tree / "application/config").mkdir(parents=True)
    (tree / "application/config/production").symlink_to(outside / "application/config/production")
    with pytest.raises(RouteConfigError, match="leaves the tree through a symlink"):
        replace_routes_file(tree, REL, NEW_ROUTES)
    with pytest.raises(RouteConfigError, match="leaves the tree through a symlink"):
        read_routes_file(tree, REL)
    assert (outside / REL).read_bytes() == FIXTURE


def test_symlink_that_stays_inside_the_tree_is_followed(tmp_path: Path) -> None:
    real = make_tree(tmp_path, FIXTURE)
    (tmp_path / "application/config/staging").symlink_to("production")
    staged = "application/config/staging/config.php"
    assert replace_routes_file(tmp_path, staged, NEW_ROUTES) == {**FIXTURE_ROUTES, **NEW_ROUTES}
    assert real.read_bytes() == spliced(FIXTURE, NEW_ROUTES)
    assert (tmp_path / "application/config/staging").is_symlink()


@pytest.mark.parametrize(
    "rel", ["../outside.php", "/etc/passwd", "application/../../x.php", "", "a\0b"]
)
def test_paths_that_are_not_plainly_inside_the_tree_are_refused(tmp_path: Path, rel: str) -> None:
    make_tree(tmp_path / "tree", FIXTURE)
    with pytest.raises(RouteConfigError, match="relative path inside the tree"):
        replace_routes_file(tmp_path / "tree", rel, NEW_ROUTES)


def test_missing_and_irregular_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RouteConfigError, match="does not exist"):
        read_routes_file(tmp_path, REL)
    (tmp_path / REL).mkdir(parents=True)
    with pytest.raises(RouteConfigError, match="not a regular file"):
        replace_routes_file(tmp_path, REL, NEW_ROUTES)
    os.mkfifo(tmp_path / "fifo.php")  # opening a FIFO for reading would block: never done
    with pytest.raises(RouteConfigError, match="not a regular file"):
        read_routes_file(tmp_path, "fifo.php")


# ------------------------------------------------------------------------------------ properties

_host_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,12}[A-Za-z0-9])?", fullmatch=True)
_path_piece = st.sampled_from(list("AZaz09._~/-")) | st.integers(0, 255).map("%{:02X}".format)
route_urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https"]),
    st.lists(_host_label, min_size=1, max_size=4).map(".".join),
    st.one_of(st.just(""), st.integers(1, 65535).map(":{}".format)),
    st.one_of(st.just(""), st.lists(_path_piece, max_size=20).map(lambda p: "/" + "".join(p))),
)


@needs_php
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tables=st.lists(st.fixed_dictionaries(dict.fromkeys(FIXTURE_LITERALS, route_urls)),
                       min_size=4, max_size=10))  # fmt: skip
def test_allow_listed_urls_round_trip_through_php(
    tmp_path: Path, tables: list[dict[str, str]]
) -> None:
    batch = tmp_path / f"batch-{os.urandom(4).hex()}"
    batch.mkdir()
    paths = []
    for n, table in enumerate(tables):
        assert all(validate_route_url(url) == url for url in table.values())
        path = batch / f"{n}.php"
        path.write_bytes(write_routes(FIXTURE, table, path_label=REL))
        paths.append(path)
    for table, config in zip(tables, php_configs(paths), strict=True):
        assert url_keys(config) == {**FIXTURE_ROUTES, **table}


_url_ish = st.text(alphabet=st.sampled_from(list("htps:/.a-9%'\"\\$?{}@# \n;<>()")), max_size=30)


@settings(max_examples=400, deadline=None)
@given(
    service=st.sampled_from([*FIXTURE_LITERALS, "base", "missing"]),
    value=st.one_of(st.text(), _url_ish, st.tuples(route_urls, _url_ish).map("".join)),
)
def test_arbitrary_values_are_refused_or_read_back(service: str, value: str) -> None:
    try:
        written = write_routes(FIXTURE, {service: value}, path_label=REL)
    except RouteConfigError as e:
        assert "\n" not in str(e)
        return
    validate_route_url(value)  # the writer never accepts what the allow-list refuses
    assert read_routes(written) == {**FIXTURE_ROUTES, service: value}


# A differential test of the reader: files assembled from statements that look alike to a
# regex (comments, strings, heredocs, inline HTML, conditional writes) and PHP's verdict.

_KEYS = ("alpha", "beta", "gamma")
_values = st.text(alphabet=st.sampled_from(list("ab/:.$'\"\\{}?>\n\t #\u00e9\u20ac")), max_size=12)
_gaps = st.sampled_from(["", " ", "\n", "\t", " /* c */ ", "\n// note\n", "\n# note\n"])


def _sq(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _dq(value: str) -> str:
    escapes = {"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n", "\t": "\\t"}
    return (
        '"'
        + "".join(escapes.get(c, c if c.isascii() else f"\\u{{{ord(c):x}}}") for c in value)
        + '"'
    )


@st.composite
def _statements(draw: st.DrawFn) -> tuple[str, str | None, bool]:
    """(PHP code, the route key it writes if any, whether that write is a plain literal)."""
    key = draw(st.sampled_from(_KEYS))
    value = draw(_values)
    quoted_key = draw(st.sampled_from([_sq, _dq]))(f"{key}_url")
    lookalike = f"$config[{_sq(key + '_url')}] = {_sq(value)};"
    g = [draw(_gaps) for _ in range(5)]
    kind = draw(st.integers(0, 13))
    if kind <= 3:
        literal = draw(st.sampled_from([_sq, _dq]))(value)
        end = draw(st.sampled_from([";", " ?>\n<?php\n"]))
        return f"$config{g[0]}[{g[1]}{quoted_key}{g[2]}]{g[3]}={g[4]}{literal}{end}", key, True
    dynamic = {
        4: f"$config[{quoted_key}] .= {_sq(value)};",
        5: f"if ($h) {{ $config[{quoted_key}] = {_sq(value)}; }}",
        6: f"$config[{quoted_key}] = {_sq(value)} . $h;",
        7: f"unset($config[{quoted_key}]);",
    }
    if kind in dynamic:
        return dynamic[kind], key, False
    one_line = lookalike.replace("\n", " ").replace("?", "")  # `?>` would end a line comment
    in_heredoc = lookalike.replace("\\", "\\\\").replace("$", "\\$")
    noise = {
        8: f"// {one_line}\n# {one_line}\n",
        9: f"/* {lookalike.replace('*', '')} */",
        10: f"$s = {_sq(lookalike)}; $t = {_dq(lookalike)};",
        11: f"$s = <<<EOT\n{in_heredoc}\nEOT;\n",
        12: f"$s = <<<'EOT'\n{lookalike}\nEOT;\n",
        13: f"?>{lookalike}<?php\n",
    }
    return noise[kind], None, False


@needs_php
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=st.lists(st.lists(_statements(), max_size=12), min_size=8, max_size=16))
def test_reader_agrees_with_php_on_generated_files(
    tmp_path: Path, files: list[list[tuple[str, str | None, bool]]]
) -> None:
    batch = tmp_path / f"batch-{os.urandom(4).hex()}"
    batch.mkdir()
    sources: list[bytes] = []
    paths: list[Path] = []
    for n, statements in enumerate(files):
        text = "<?php\n$h = 'h';\n" + "\n".join(code for code, _, _ in statements) + "\n"
        sources.append(text.encode())
        paths.append(batch / f"{n}.php")
        paths[-1].write_bytes(sources[-1])
    for statements, source, config in zip(files, sources, php_configs(paths), strict=True):
        ours = read_routes(source)
        php = url_keys(config)
        assert {k: php.get(k) for k in ours} == ours  # never a value PHP would not have
        dynamic = {key for _, key, plain in statements if key is not None and not plain}
        plain = {key for _, key, is_plain in statements if key is not None and is_plain}
        assert plain - dynamic <= set(ours)  # never a plainly assigned route missed
