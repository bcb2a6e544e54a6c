"""A new gateway tree answers its health path before the running gateway serves it.

A switchable gateway takes a new commit inside its running container (the ``current`` link,
then a graceful reload). ``php -l`` refuses a tree that does not parse; this refuses a tree
that parses but is not healthy (a fatal error at run time, a health path answering 500):
inside the running container, with the container's own PHP, configuration and environment,
the new tree is served by PHP's built-in server on a loopback port of the container (nothing
is published, no public request reaches it) through the router sdp-node already mounts, and
its health path is asked until it answered 2xx ``successes`` times in a row — the same rule
as every health gate — within the timeout. Only then does the link move. The staged server
runs as the user that serves the tree (Apache's ``APACHE_RUN_USER``, else the container's
own), so a commit's code gets no more inside the container than it gets when served.

What the staged server does not do: Apache's own configuration and ``.htaccess`` rules (the
router sends every request to ``index.php``, as CodeIgniter's rewrite does); the health gate
after the reload still checks the tree as Apache serves it.
"""

from __future__ import annotations

from msgspec import Struct

from sdp_node.gateway import ROUTER_TARGET

_POLL = r"""
[, $port, $path, $need, $timeout] = $argv;
$deadline = microtime(true) + (float) $timeout;
$context = stream_context_create(['http' => ['ignore_errors' => true, 'timeout' => 2]]);
$streak = 0;
$last = 'no answer yet';
while (true) {
    $http_response_header = [];
    $body = @file_get_contents("http://127.0.0.1:{$port}{$path}", false, $context);
    if ($body === false) {
        $streak = 0;
    } else {
        preg_match('{^HTTP/\S+\s+(\d+)}', $http_response_header[0] ?? '', $m);
        $status = (int) ($m[1] ?? 0);
        $last = "HTTP {$status}";
        $streak = ($status >= 200 && $status < 300) ? $streak + 1 : 0;
    }
    if ($streak >= (int) $need) {
        echo "staged: {$last} {$streak}\n";
        exit(0);
    }
    if (microtime(true) >= $deadline) {
        echo "staged: {$last} 0\n";
        exit(3);
    }
    usleep($body === false ? 20000 : 50000);
}
"""

_SCRIPT = """\
set -u
root=$1; prefix=$2; path=$3; need=$4; timeout=$5
port=$(php -r '$s = stream_socket_server("tcp://127.0.0.1:0", $n, $m);
  $name = stream_socket_get_name($s, false); echo substr($name, strrpos($name, ":") + 1);')
SDP_GATEWAY_ROOT=$root SDP_URL_PREFIX=$prefix \\
  php -S "127.0.0.1:$port" -t "$root" {router} >/dev/null 2>&1 &
server=$!
php -r "$6" -- "$port" "$path" "$need" "$timeout"
code=$?
kill "$server" 2>/dev/null
wait "$server" 2>/dev/null
exit $code
""".replace("{router}", ROUTER_TARGET)


SERVING_USER = ["sh", "-c", '. /etc/apache2/envvars >/dev/null 2>&1; echo "${APACHE_RUN_USER:-}"']
"""argv printing the user Apache's children serve as (empty: the container's own user, who
serves in a ``php -S`` gateway): the staged tree's code runs as that user, never as a root
the serving tree would not have"""


class StagedAnswer(Struct, frozen=True):
    """What the staged tree answered: healthy or not, and its last answer ("HTTP 500")."""

    healthy: bool
    answer: str
    output: str


def command(*, tree: str, prefix: str, path: str, successes: int, timeout: float) -> list[str]:
    """The ``docker exec`` argv that stages ``tree`` (a path inside the container) and asks
    its health ``path``. It holds no credential: paths, numbers and the poll script only."""
    return ["sh", "-c", _SCRIPT, "sdp-stage", tree, prefix, path, str(max(1, successes)),
            f"{timeout:g}", _POLL]


def answer(code: int, output: str) -> StagedAnswer:
    """The staged check's result from the exit code and output of :func:`command`."""
    last = "no answer"
    for line in output.splitlines():
        if line.startswith("staged: "):
            last = " ".join(line.removeprefix("staged: ").split()[:2])
    return StagedAnswer(healthy=code == 0, answer=last, output=output)
