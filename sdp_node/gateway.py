"""The gateway side of a node: trees per (sandbox, commit), composer, serving files, reloads.

Responsible for preparing what a sandbox's PHP gateway container needs besides Docker:

* a tree per (sandbox, commit), because each holds its sandbox's routes (the one place where
  SDP edits files under a running container: the route values, then a graceful reload); a
  gateway with a reload command mounts the sandbox's folder of trees and serves the one its
  ``current`` link names, so a new commit is switched to inside the running container (the
  link, then a graceful reload) and its public port never closes;
* the best-effort ``composer install --no-dev --no-interaction --no-progress --no-scripts
  --no-plugins``, with a time limit so an offline VM never hangs on it, skipped with a log line
  when composer or ``composer.json`` is missing. Branch content never runs with SDP's
  privileges: scripts and plugins (the only ways a ``composer.json`` runs code) are off, and
  composer itself runs as an unprivileged user (``hardening.composer_user``, the tree lent to
  it for the run) with an environment of its own, so it can neither read the agent's token
  nor reach the Docker socket or write outside what that user may;
* the small files that make a stock ``php:8.3-apache`` serve the tree under its URL prefix
  (an Apache alias file mounted into ``conf-enabled/``, and a file in ``mods-enabled/`` that
  loads the modules the tree's ``.htaccess`` needs — the stock image enables no mod_rewrite,
  so ``RewriteEngine On`` would make every request a 500) — and, for PHP's built-in server,
  a router script — written once per repository, content-addressed. The image is not changed:
  the modules come from its own ``mods-available/``.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sdp_node.childenv import child_environment
from sdp_node.config import RepositoryConfig
from sdp_node.naming import slug

Log = Callable[[str], None]
APACHE_CONF_TARGET = "/etc/apache2/conf-enabled/sdp-gateway.conf"
ROUTER_TARGET = "/etc/sdp/router.php"
COMPOSER_FLAGS = ("--no-dev", "--no-interaction", "--no-progress", "--no-scripts", "--no-plugins")
APACHE_MODULES_TARGET = "/etc/apache2/mods-enabled/sdp-gateway.load"
CURRENT = "current"
"""in a switchable gateway's sandbox folder: the link to the tree it serves"""


def serving_root(repository: RepositoryConfig, *, switchable: bool) -> str:
    """Where the served tree is in the container: the mount target itself, or, for a gateway
    whose commit switches inside the running container, its ``current`` link (the mount target
    then holds the sandbox's trees, one per commit)."""
    target = repository.effective_mount_target
    return f"{target}/{CURRENT}" if switchable else target

_APACHE_MODULES_HEAD = """\
# Written by sdp-node: the Apache modules the gateway tree needs (node.yaml
# apache_modules), from the image's own mods-available/, unless it already loads them.
"""
_APACHE_MODULE = """<IfModule !mod_{name}.c>
    Include /etc/apache2/mods-available/{name}.load
    IncludeOptional /etc/apache2/mods-available/{name}.conf
</IfModule>
"""

_APACHE_CONF = """# Written by sdp-node: serve the gateway tree under its URL prefix.
Alias {prefix} {root}
<Directory {root}>
    Options FollowSymLinks
    AllowOverride All
    Require all granted
    DirectoryIndex index.php
    FallbackResource {prefix}/index.php
    # A .htaccess rule like CodeIgniter's `RewriteRule ^(.*)$ index.php/$1` maps back under
    # the prefix (else, with the tree under the docroot, mod_rewrite strips the docroot and
    # the request escapes the alias); a RewriteBase of the tree's own wins.
    <IfModule mod_rewrite.c>
        RewriteOptions MergeBase
        RewriteBase {prefix}/
    </IfModule>
</Directory>
"""

_ROUTER = """<?php
// Written by sdp-node: front controller for PHP's built-in server (php -S ... router.php).
$prefix = getenv('SDP_URL_PREFIX');
$root = getenv('SDP_GATEWAY_ROOT');
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path !== $prefix && strpos($path, $prefix . '/') !== 0) {
    http_response_code(404);
    header('Content-Type: text/plain');
    echo "not under {$prefix}\\n";
    return true;
}
chdir($root);
// Routes are rewritten in place (set_routes) and the built-in server has no graceful reload:
// without this, opcache serves the previous config.php (or the repository's own routes_file,
// SDP_ROUTES_FILE) for its revalidate interval.
if (function_exists('opcache_invalidate')) {
    $configs = array_merge(glob($root . '/application/config/config.php') ?: [],
                           glob($root . '/application/config/*/config.php') ?: []);
    $routes = getenv('SDP_ROUTES_FILE');
    if (is_string($routes) && $routes !== '') {
        $configs[] = $root . '/' . $routes;
    }
    foreach ($configs as $config) {
        opcache_invalidate($config, true);
    }
}
$_SERVER['SCRIPT_FILENAME'] = $root . '/index.php';
$_SERVER['SCRIPT_NAME'] = $prefix . '/index.php';
$_SERVER['PHP_SELF'] = $prefix . '/index.php';
require $root . '/index.php';
return true;
"""


class GatewayFiles:
    def __init__(self, workspace: Path) -> None:
        self._trees = workspace / "gateways"
        self._conf = workspace / "gateway-conf"
        self._composer_home = workspace / "composer"
        for path in (self._trees, self._conf, self._composer_home):
            path.mkdir(parents=True, exist_ok=True)

    def tree(self, sandbox: str, commit: str) -> Path:
        return self._trees / slug(sandbox) / commit

    def sandbox_trees(self, sandbox: str) -> Path:
        return self._trees / slug(sandbox)

    def prune_trees(self, sandbox: str, *, keep: set[str]) -> list[str]:
        """Remove this sandbox's gateway trees of commits not in ``keep`` (and, when nothing is
        kept, its ``current`` link)."""
        removed: list[str] = []
        folder = self.sandbox_trees(sandbox)
        if not folder.is_dir():
            return removed
        for tree in folder.iterdir():
            if tree.name == CURRENT:
                if not keep:
                    tree.unlink()
                continue
            if tree.name.startswith(f".{CURRENT}"):
                tree.unlink(missing_ok=True)  # a link left by an interrupted switch
                continue
            if tree.name not in keep:
                shutil.rmtree(tree, ignore_errors=True)
                removed.append(tree.name)
        if not any(folder.iterdir()):
            folder.rmdir()
        return removed

    def current(self, sandbox: str) -> str | None:
        """The commit the sandbox's ``current`` link points at (a switchable gateway serves
        it), if any."""
        link = self.sandbox_trees(sandbox) / CURRENT
        try:
            return os.readlink(link)
        except OSError:
            return None

    def point_current(self, sandbox: str, commit: str) -> None:
        """Atomically point the sandbox's ``current`` link at the tree of ``commit`` (relative,
        so it resolves the same inside the container, where the folder is mounted)."""
        folder = self.sandbox_trees(sandbox)
        partial = folder / f".{CURRENT}-{os.getpid()}"
        partial.unlink(missing_ok=True)
        os.symlink(commit, partial)
        os.replace(partial, folder / CURRENT)

    def serving_files(self, repository: RepositoryConfig, *, switchable: bool = False)\
            -> dict[str, Path]:
        """Container target -> host file, for the alias file, the modules file and the router;
        ``switchable``: the tree is served from ``<mount_target>/current``."""
        root = serving_root(repository, switchable=switchable)
        files = {
            APACHE_CONF_TARGET: _APACHE_CONF.format(prefix=repository.url_prefix, root=root),
            ROUTER_TARGET: _ROUTER,
        }
        if repository.apache_modules:
            files[APACHE_MODULES_TARGET] = _APACHE_MODULES_HEAD + "".join(
                _APACHE_MODULE.format(name=name) for name in repository.apache_modules
            )
        out = {}
        for target, content in files.items():
            digest = hashlib.sha256(content.encode()).hexdigest()[:16]
            path = self._conf / f"{Path(target).stem}-{digest}{Path(target).suffix}"
            if not path.exists():
                # Two gateways deployed at once may write the same file: each its own partial.
                partial = path.with_suffix(f"{path.suffix}.{uuid.uuid4().hex[:8]}.partial")
                partial.write_text(content)
                partial.chmod(0o644)
                os.replace(partial, path)
            out[target] = path
        return out

    def composer_install(
        self, repository: RepositoryConfig, tree: Path, *, user: str | None, log: Log
    ) -> bool:
        """Run composer when it and composer.json exist; False when skipped. Never raises."""
        if not (tree / "composer.json").is_file():
            log("no composer.json in this commit: composer install skipped")
            return False
        composer = shutil.which(repository.composer)
        if composer is None:
            log(f"{repository.composer} is not installed on this node: composer install skipped")
            return False
        try:
            identity = _identity(user)
        except KeyError:
            log(f"composer install skipped: user {user!r} (hardening.composer_user) does not "
                "exist on this node")
            return False
        blocked = _unsearchable(tree, identity)
        if blocked is not None:
            log(f"composer install skipped: user {user} (hardening.composer_user) cannot reach "
                f"the tree: {blocked} is not searchable by it (chmod o+x {blocked}, or set "
                "hardening.composer_user: null to run composer as the agent's user)")
            return False
        log(f"$ composer install {' '.join(COMPOSER_FLAGS)}"
            + (f" (as {user})" if identity else ""))
        env = child_environment(
            HOME=str(self._composer_home), COMPOSER_HOME=str(self._composer_home),
            COMPOSER_ALLOW_SUPERUSER="" if identity else "1", COMPOSER_NO_AUDIT="1",
        )
        try:
            with _lent(tree, self._composer_home, identity):
                done = subprocess.run(
                    [composer, "install", *COMPOSER_FLAGS], cwd=tree, env=env,
                    capture_output=True, text=True, errors="replace",
                    timeout=repository.composer_timeout_seconds, check=False,
                    user=identity[0] if identity else None,
                    group=identity[1] if identity else None,
                    extra_groups=[] if identity else None,
                )
        except subprocess.TimeoutExpired:
            log(
                f"composer install did not finish within {repository.composer_timeout_seconds:.0f}s"
                " (offline?): continuing without it"
            )
            return False
        except OSError as e:
            log(f"composer install could not run ({e.strerror}): continuing without it")
            return False
        for line in (done.stdout + done.stderr).splitlines():
            if line.strip():
                log(line)
        if done.returncode != 0:
            log(f"composer install failed (exit {done.returncode}): continuing without it")
            return False
        return True


def _identity(user: str | None) -> tuple[int, int] | None:
    """(uid, gid) composer runs as, or None to run as the agent (which is then not root)."""
    if user is None or os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(user)
    if entry.pw_uid == 0:
        return None
    return entry.pw_uid, entry.pw_gid


def _unsearchable(tree: Path, identity: tuple[int, int] | None) -> Path | None:
    """The first directory above ``tree`` that ``identity`` may not pass through, if any."""
    if identity is None:
        return None
    uid, gid = identity
    for folder in reversed(tree.resolve().parents):
        st = folder.stat()
        if st.st_uid == uid:
            allowed = st.st_mode & 0o100
        elif st.st_gid == gid:
            allowed = st.st_mode & 0o010
        else:
            allowed = st.st_mode & 0o001
        if not allowed:
            return folder
    return None


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give ``root`` and everything under it to uid:gid, never following a symlink (a link in
    the tree may point anywhere on the host)."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


@contextmanager
def _lent(tree: Path, home: Path, identity: tuple[int, int] | None) -> Iterator[None]:
    """The tree and composer's home belong to ``identity`` while composer runs; the tree
    returns to the agent afterwards, whatever composer left in it."""
    if identity is None:
        yield
        return
    _chown_tree(tree, *identity)
    _chown_tree(home, *identity)
    try:
        yield
    finally:
        _chown_tree(tree, os.geteuid(), os.getegid())
