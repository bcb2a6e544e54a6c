"""A Debian Apache + mod_php root file system, laid out like the official `php:8.3-apache`.

`php_apache_tarball(cache_dir)` runs `debootstrap --variant=minbase
--include=apache2,libapache2-mod-php bookworm` (about 45 s; needs root and the Debian mirror),
adjusts the tree and tars it into `cache_dir`, named by `RECIPE_HASH`, so later calls return the
cached tarball at once. The adjustments: ServerName set (no AH00558 warning), the official
image's `docker-php.conf` (PHP handler, `DirectoryIndex index.php index.html`, `/var/www/`
with AllowOverride All), Apache's logs linked to the container's stdout/stderr, an empty
docroot /var/www/html, mod_dir and mod_php enabled (checked), opcache not loaded (as in
the official image: a rewritten config.php is served at once), apt's caches dropped, and
`apache2ctl -D FOREGROUND` exec'ing httpd so that httpd is PID 1 and `docker stop` is quick
(Debian's script would keep sh as PID 1, which ignores SIGTERM).

The scratch tree is removed only when no file system is still mounted under it: debootstrap
mounts /proc (and may bind /dev) inside its target, and a recursive delete through a bind
mount would reach the host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["DEBOOTSTRAP_COMMAND", "RECIPE_HASH", "ApacheRootfsError", "php_apache_tarball"]

DEBOOTSTRAP_COMMAND = (
    "debootstrap",
    "--variant=minbase",
    "--include=apache2,libapache2-mod-php",
    "bookworm",
    "{target}",
    "http://deb.debian.org/debian",
)

_SERVERNAME_CONF = "ServerName localhost\n"
# As in the official php:*-apache images (docker-php.conf).
_DOCKER_PHP_CONF = """\
<FilesMatch \\.php$>
\tSetHandler application/x-httpd-php
</FilesMatch>

DirectoryIndex disabled
DirectoryIndex index.php index.html

<Directory /var/www/>
\tOptions -Indexes
\tAllowOverride All
</Directory>
"""
_LOG_LINKS = {
    "access.log": "/dev/stdout",
    "other_vhosts_access.log": "/dev/stdout",
    "error.log": "/dev/stderr",
}
# Debian's apache2ctl runs httpd as a child for unknown verbs such as `-D FOREGROUND`, which
# leaves sh as PID 1, deaf to SIGTERM: every `docker stop` would wait out its timeout.
_APACHE2CTL_CHILD = '*)\n    $HTTPD ${APACHE_ARGUMENTS} "$@"\n'
_APACHE2CTL_EXEC = '*)\n    exec $HTTPD ${APACHE_ARGUMENTS} "$@"\n'
_OPCACHE_INI = "etc/php/8.2/apache2/conf.d/10-opcache.ini"
_REQUIRED_MODULES = ("dir.load", "php8.2.load", "mpm_prefork.load", "alias.load")
_RECIPE_VERSION = "4"

RECIPE_HASH = hashlib.sha256(
    "\0".join(
        (
            _RECIPE_VERSION,
            *DEBOOTSTRAP_COMMAND,
            _SERVERNAME_CONF,
            _DOCKER_PHP_CONF,
            *_LOG_LINKS,
            _APACHE2CTL_EXEC,
            _OPCACHE_INI,
        )
    ).encode()
).hexdigest()


class ApacheRootfsError(RuntimeError):
    """debootstrap failed or produced a tree without what the image promises."""


def php_apache_tarball(cache_dir: Path) -> Path:
    """The cached rootfs tarball of the Apache + PHP image, built first if missing."""
    tarball = cache_dir / f"php-apache-{RECIPE_HASH[:16]}.tar"
    if tarball.is_file():
        return tarball
    scratch_parent = cache_dir / "tmp"
    scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="php-apache-", dir=scratch_parent))
    try:
        target = scratch / "rootfs"
        _debootstrap(target, log=scratch / "debootstrap.log")
        _adjust(target)
        partial = scratch / "rootfs.tar"
        _tar(target, partial)
        os.replace(partial, tarball)
    finally:
        _remove_unmounted_tree(scratch)
    for stale in cache_dir.glob("php-apache-*.tar"):
        if stale != tarball:
            stale.unlink(missing_ok=True)
    return tarball


def _debootstrap(target: Path, *, log: Path) -> None:
    command = [part.format(target=target) for part in DEBOOTSTRAP_COMMAND]
    with log.open("wb") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise ApacheRootfsError(
            f"{' '.join(command)} failed (exit {result.returncode}):\n" + "\n".join(tail)
        )


def _adjust(root: Path) -> None:
    apache = root / "etc/apache2"
    for name, text in (("servername", _SERVERNAME_CONF), ("docker-php", _DOCKER_PHP_CONF)):
        (apache / f"conf-available/{name}.conf").write_text(text)
        _relink(apache / f"conf-enabled/{name}.conf", f"../conf-available/{name}.conf")
    for name, target in _LOG_LINKS.items():
        _relink(root / "var/log/apache2" / name, target)
    # The official image loads no opcache; Debian's would serve a rewritten config.php stale
    # for up to opcache.revalidate_freq (2 s) unless Apache is reloaded.
    (root / _OPCACHE_INI).unlink(missing_ok=True)
    docroot = root / "var/www/html"
    for child in docroot.iterdir():
        child.unlink()
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for child in (root / cache).glob("*"):
            if child.is_file():
                child.unlink()
    _exec_httpd_in_foreground(root / "usr/sbin/apache2ctl")
    missing = [m for m in _REQUIRED_MODULES if not (apache / "mods-enabled" / m).exists()]
    if missing:
        raise ApacheRootfsError(f"Apache modules not enabled after debootstrap: {missing}")


def _exec_httpd_in_foreground(apache2ctl: Path) -> None:
    if not apache2ctl.is_file():
        raise ApacheRootfsError("apache2ctl is missing after debootstrap")
    script = apache2ctl.read_text()
    if script.count(_APACHE2CTL_CHILD) != 1:
        raise ApacheRootfsError(f"{apache2ctl} no longer has the branch this recipe patches")
    apache2ctl.write_text(script.replace(_APACHE2CTL_CHILD, _APACHE2CTL_EXEC))


def _relink(link: Path, target: str) -> None:
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def _tar(root: Path, dest: Path) -> None:
    command = [
        "tar",
        "--create",
        "--file",
        str(dest),
        "--directory",
        str(root),
        "--numeric-owner",
        "--sort=name",
        "--exclude=./dev/*",
        "--exclude=./proc/*",
        "--exclude=./sys/*",
        ".",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ApacheRootfsError(f"tar of {root} failed: {result.stderr.strip()}")


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    decoded = [p.replace("\\040", " ").replace("\\011", "\t") for p in points]
    return sorted((p for p in decoded if p.startswith(prefix)), reverse=True)


def _remove_unmounted_tree(path: Path) -> None:
    for point in _mounts_under(path):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    left = _mounts_under(path)
    if left:
        raise ApacheRootfsError(f"not removing {path}: still mounted under it: {left}")
    shutil.rmtree(path)
