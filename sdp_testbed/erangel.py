"""File set of the fixture PHP gateway "erangel", CodeIgniter style.

`application/config/production/config.php` holds one `$config['<service>_url']` per service,
written the way hand-kept configs look: single and double quotes, odd spacing, comments and a
string that mention `account_url` with assignment-looking text, and keys that merely start
with a service name (`account_url_timeout`). A reader or writer of routes must get all of
that right; this file is its test material.

It is laid out like a CodeIgniter 3 application: `index.php` is the front controller, and the
usual `.htaccess` removes `index.php` from URLs (`RewriteEngine On`, then every path that is not
a file or directory is rewritten to `index.php/<path>`, without an `<IfModule>` guard, so an
Apache without mod_rewrite answers 500 as it would for the real gateway), while
`application/.htaccess` denies direct access to the configuration. The front controller
reports the `PATH_INFO` it was given (`path_info`): behind Apache, set only when the rewrite to
`index.php/<path>` ran.

`index.php` (which holds the revision constant) defines BASEPATH, includes the config and
forwards `<prefix>/<service>/<rest>` to `$config['<service>_url'] . '/' . <rest>` with
`file_get_contents` (needs only allow_url_fopen). The prefix is the directory the script is
served from (`/erangel` behind Apache's alias, empty under `php -S`). It answers JSON
`{"gateway_revision", "service", "upstream", "upstream_status", "body", "path_info"}` with the
upstream's status, 404 for an unknown service, 502 when the upstream cannot be reached, and 200 on
`<prefix>/healthz` and `<prefix>/`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

__all__ = ["CONFIG_PATH", "HTACCESS", "gateway_files", "php_single_quoted"]

CONFIG_PATH = "application/config/production/config.php"

# CodeIgniter 3's documented .htaccess ("Removing the index.php file").
HTACCESS = """\
RewriteEngine On
RewriteCond %{REQUEST_FILENAME} !-f
RewriteCond %{REQUEST_FILENAME} !-d
RewriteRule ^(.*)$ index.php/$1 [L]
"""
# As CodeIgniter ships it in application/ and system/.
_DENY_HTACCESS = """\
<IfModule authz_core_module>
    Require all denied
</IfModule>
<IfModule !authz_core_module>
    Deny from all
</IfModule>
"""

_SERVICE_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]*")

# Each service line takes the next of these spellings, so the file mixes them.
_ASSIGNMENT_STYLES = (
    "$config['{key}'] = '{url}';",
    '$config[ "{key}" ]   =   "{url}" ;',
    "$config[\"{key}\"]='{url}';",
    "$config['{key}']\t=\t\"{url}\";",
)

_CONFIG_HEAD = """\
<?php defined('BASEPATH') OR exit('No direct script access allowed');

/*
|--------------------------------------------------------------------------
| Upstream services of the erangel gateway
|--------------------------------------------------------------------------
|
| Each $config['<service>_url'] is where requests for /erangel/<service>/ go.
| Retired value, kept for reference: $config['account_url'] = 'http://retired.invalid';
*/

$config['base_url'] = '';
$config['index_page'] = '';
"""

_CONFIG_TAIL = """
// $config['account_url'] = 'http://commented-out.invalid'; (the old staging host)
$config['account_url_timeout'] = 30;
$config["release_note"] = "Do not write \\$config['account_url'] = 'x'; by hand";
$config['route_help'] = 'set $config[\\'account_url\\'] = \\'x\\'; in the state repo';
"""

_INDEX_PHP = """\
<?php
// erangel: forwards <prefix>/<service>/<rest> to $config['<service>_url'] . '/' . <rest>.
const GATEWAY_REVISION = {revision};

define('ENVIRONMENT', 'production');
define('BASEPATH', __DIR__ . '/system/');
$config = [];
require __DIR__ . '/application/config/' . ENVIRONMENT . '/config.php';
$path_info = $_SERVER['PATH_INFO'] ?? null;

function answer(int $status, array $body): void
{{
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), "\\n";
}}

$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);
$path = is_string($path) ? $path : '/';
$query = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_QUERY);
$prefix = rtrim(str_replace('\\\\', '/', dirname($_SERVER['SCRIPT_NAME'] ?? '/')), '/');
if ($prefix !== '' && strncmp($path, $prefix . '/', strlen($prefix) + 1) === 0) {{
    $path = substr($path, strlen($prefix));
}}
// As CodeIgniter does: /index.php/<path> and /<path> are the same request.
if (strncmp($path, '/index.php/', 11) === 0) {{
    $path = substr($path, 10);
}}
$segments = explode('/', ltrim($path, '/'), 2);
$service = $segments[0];
$rest = $segments[1] ?? '';

if ($service === '' || $service === 'healthz' || $service === 'index.php') {{
    answer(200, ['status' => 'ok', 'gateway_revision' => GATEWAY_REVISION]);
    return;
}}
$key = $service . '_url';
if (!preg_match('/^[a-z][a-z0-9_-]*$/', $service) || !isset($config[$key])
    || !is_string($config[$key])) {{
    answer(404, ['gateway_revision' => GATEWAY_REVISION, 'error' => 'unknown service',
        'service' => $service, 'path_info' => $path_info]);
    return;
}}
$upstream = rtrim($config[$key], '/') . '/' . $rest . (is_string($query) ? '?' . $query : '');
$context = stream_context_create(['http' => ['ignore_errors' => true, 'timeout' => 10]]);
$raw = @file_get_contents($upstream, false, $context);
if ($raw === false) {{
    answer(502, ['gateway_revision' => GATEWAY_REVISION, 'service' => $service,
        'upstream' => $upstream, 'error' => 'upstream unreachable', 'path_info' => $path_info]);
    return;
}}
$status = 0;
foreach ($http_response_header ?? [] as $line) {{
    if (preg_match('#^HTTP/\\S+\\s+(\\d{{3}})#', $line, $m)) {{
        $status = (int) $m[1];
    }}
}}
$decoded = json_decode($raw, true);
answer($status > 0 ? $status : 502, [
    'gateway_revision' => GATEWAY_REVISION,
    'service' => $service,
    'upstream' => $upstream,
    'upstream_status' => $status,
    'body' => ($decoded === null && trim($raw) !== 'null') ? $raw : $decoded,
    'path_info' => $path_info,
]);
"""

_COMPOSER_JSON = {
    "name": "sdp/erangel",
    "description": "SDP fixture gateway",
    "type": "project",
    "require": {},
    # No package repository at all: `composer install` must work offline.
    "repositories": [{"packagist.org": False}],
}


def gateway_files(
    *, revision: str, ocp_urls: Mapping[str, str], with_composer: bool = False,
    htaccess: bool = True,
) -> dict[str, bytes]:
    """The gateway's files at one revision, routing each service to its URL in `ocp_urls`;
    `htaccess=False` leaves out the rewrite rules (for an Apache without mod_rewrite)."""
    files = {
        CONFIG_PATH: _config_php(ocp_urls).encode(),
        "index.php": _INDEX_PHP.format(revision=php_single_quoted(revision)).encode(),
        "application/.htaccess": _DENY_HTACCESS.encode(),
        "system/.htaccess": _DENY_HTACCESS.encode(),
    }
    if htaccess:
        files[".htaccess"] = HTACCESS.encode()
    if with_composer:
        files["composer.json"] = (json.dumps(_COMPOSER_JSON, indent=4) + "\n").encode()
    return files


def php_single_quoted(text: str) -> str:
    """`text` as a PHP single-quoted string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _config_php(ocp_urls: Mapping[str, str]) -> str:
    lines = [_CONFIG_HEAD]
    for index, (service, url) in enumerate(ocp_urls.items()):
        if not _SERVICE_KEY.fullmatch(service):
            raise ValueError(f"service {service!r} cannot be a config key prefix")
        if not _PLAIN_URL.fullmatch(url):
            raise ValueError(f"{service}: {url!r} is not a plain http(s) URL")
        style = _ASSIGNMENT_STYLES[index % len(_ASSIGNMENT_STYLES)]
        lines.append(style.format(key=f"{service}_url", url=url) + "\n")
        if index == 0:
            lines.append(f"$config['{service}_url_timeout_ms'] = 1500;\n")
    lines.append(_CONFIG_TAIL)
    return "".join(lines)
