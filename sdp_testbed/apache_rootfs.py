"""A Debian Apache + mod_php root file system, laid out like the official `php:8.3-apache`.

`php_apache_tarball(cache_dir)` runs `debootstrap --variant=minbase
--include=apache2,libapache2-mod-php bookworm` (about 45 s; see `debootstrap`), adjusts the
tree and tars it into `cache_dir`, named by `RECIPE_HASH`, so later calls return the cached
tarball at once. The adjustments: ServerName set (no AH00558 warning), the official image's
`docker-php.conf` (PHP handler, `DirectoryIndex index.php index.html`, `/var/www/` with
AllowOverride All), Apache's logs linked to the container's stdout (access) and stderr
(errors), an empty docroot /var/www/html, mod_dir and mod_php enabled (checked) and — as in the
official image — mod_rewrite available in mods-available/ but not enabled (checked), opcache
not loaded (as in the official image: a rewritten config.php is served at once), apt's caches
dropped, and `apache2ctl -D FOREGROUND` exec'ing httpd so that httpd is PID 1 and `docker stop`
is quick (Debian's script would keep sh as PID 1, which ignores SIGTERM).
"""

from __future__ import annotations

from pathlib import Path

from sdp_testbed.debootstrap import (
    DebootstrapError,
    Recipe,
    cached_tarball,
    debootstrap_command,
    drop_apt_caches,
)

__all__ = ["DEBOOTSTRAP_COMMAND", "RECIPE", "RECIPE_HASH", "ApacheRootfsError",
           "php_apache_tarball"]

_PACKAGES = ("apache2", "libapache2-mod-php")
DEBOOTSTRAP_COMMAND = debootstrap_command(_PACKAGES)

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
# Available but not enabled, as in php:8.3-apache: gateways load what their .htaccess needs.
_AVAILABLE_NOT_ENABLED = ("rewrite.load",)


class ApacheRootfsError(DebootstrapError):
    """debootstrap failed or produced a tree without what the image promises."""


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
    drop_apt_caches(root)
    _exec_httpd_in_foreground(root / "usr/sbin/apache2ctl")
    missing = [m for m in _REQUIRED_MODULES if not (apache / "mods-enabled" / m).exists()]
    if missing:
        raise ApacheRootfsError(f"Apache modules not enabled after debootstrap: {missing}")
    for module in _AVAILABLE_NOT_ENABLED:
        if not (apache / "mods-available" / module).is_file():
            raise ApacheRootfsError(f"{module} is not in mods-available/ after debootstrap")
        if (apache / "mods-enabled" / module).exists():
            raise ApacheRootfsError(f"{module} is enabled, unlike in php:8.3-apache")


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


# The hash is that of the recipe before it moved onto `debootstrap`: cached tarballs and
# images built by other checkouts sharing /var/cache/sdp-testbed stay valid.
RECIPE = Recipe(
    name="php-apache",
    include=_PACKAGES,
    adjust=_adjust,
    version="4",
    fingerprint=(_SERVERNAME_CONF, _DOCKER_PHP_CONF, *_LOG_LINKS, _APACHE2CTL_EXEC,
                 _OPCACHE_INI),
)
RECIPE_HASH = RECIPE.hash


def php_apache_tarball(cache_dir: Path) -> Path:
    """The cached rootfs tarball of the Apache + PHP image, built first if missing."""
    return cached_tarball(cache_dir, RECIPE)
