"""The testbed's runtime images, made with `docker import` of a rootfs tar (nothing is pulled).

- `MICRO_IMAGE` (`sdp-testbed/micro:busybox`): busybox-static; runs `CGO_ENABLED=0` Go
  binaries; CMD ["sh"].
- `PHP_CLI_IMAGE` (`sdp-testbed/php-cli:8.2`): this host's php8.2 CLI with its libraries
  and extensions; CMD ["php", "-S", "0.0.0.0:80", "-t", "/var/www/html"]. `php -S` as PID 1
  ignores SIGTERM, so run it with `init=True` (docker's tini) or every stop waits 10 s.
- `PHP_APACHE_IMAGE` (`sdp-testbed/php-apache:8.2`): Debian bookworm Apache + mod_php from
  debootstrap (see `apache_rootfs`), laid out like `php:8.3-apache`: docroot
  /var/www/html, port 80, CMD ["apache2ctl", "-D", "FOREGROUND"], `apache2ctl graceful`
  through `docker exec` reloads a changed file under /etc/apache2/conf-enabled/.
- `DEBIAN_PYTHON_IMAGE` (`sdp-testbed/debian-python:bookworm`): a plain Debian 12 with python3,
  python3-venv and systemd (see `debian_rootfs`), the VM the offline bundle is installed on;
  CMD ["/sbin/init"] (systemd as PID 1; tests/install says how to run it).
- `DEBIAN_MINBASE_IMAGE` (`sdp-testbed/debian-minbase:bookworm`): debootstrap minbase alone, a
  machine that never had SDP's packages (scripts/fresh-machine-check); CMD ["bash"]. Built
  only when named.

Every image carries the labels `sdp.testbed.image=<kind>` and `sdp.testbed.content-hash`;
`ensure_images` rebuilds a kind only when no image with its tag and hash exists. One lock
file per kind in the cache dir serialises builders of the same kind across processes, and
each build works in its own scratch directory, so `python -m sdp_testbed.images php-apache`
can run in the background while another process builds the other kinds.

CLI: `python -m sdp_testbed.images [KIND...] [--cache-dir DIR]` (no kind = every kind the
tests use: micro, php-cli, php-apache, debian-python; default cache dir /var/cache/sdp-testbed).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final, Literal, get_args

import docker
import docker.errors
from msgspec import Struct

from sdp_testbed.apache_rootfs import RECIPE as APACHE_RECIPE
from sdp_testbed.debian_rootfs import DEBIAN_MINBASE, DEBIAN_PYTHON
from sdp_testbed.debootstrap import Recipe, cached_tarball
from sdp_testbed.image_recipes import micro_rootfs, php_cli_rootfs
from sdp_testbed.rootfs import Rootfs

__all__ = [
    "DEBIAN_MINBASE_IMAGE",
    "DEBIAN_PYTHON_IMAGE",
    "DEFAULT_CACHE_DIR",
    "HASH_LABEL",
    "IMAGE_TAGS",
    "KIND_LABEL",
    "MICRO_IMAGE",
    "PHP_APACHE_IMAGE",
    "PHP_CLI_IMAGE",
    "ImageKind",
    "ImageReport",
    "ensure_image",
    "ensure_images",
    "image_is_current",
    "main",
]

ImageKind = Literal["micro", "php-cli", "php-apache", "debian-python", "debian-minbase"]
ALL_KINDS: Final[tuple[ImageKind, ...]] = get_args(ImageKind)
TEST_KINDS: Final[tuple[ImageKind, ...]] = ("micro", "php-cli", "php-apache", "debian-python")

MICRO_IMAGE: Final = "sdp-testbed/micro:busybox"
PHP_CLI_IMAGE: Final = "sdp-testbed/php-cli:8.2"
PHP_APACHE_IMAGE: Final = "sdp-testbed/php-apache:8.2"
DEBIAN_PYTHON_IMAGE: Final = "sdp-testbed/debian-python:bookworm"
DEBIAN_MINBASE_IMAGE: Final = "sdp-testbed/debian-minbase:bookworm"
IMAGE_TAGS: Final[dict[ImageKind, str]] = {
    "micro": MICRO_IMAGE,
    "php-cli": PHP_CLI_IMAGE,
    "php-apache": PHP_APACHE_IMAGE,
    "debian-python": DEBIAN_PYTHON_IMAGE,
    "debian-minbase": DEBIAN_MINBASE_IMAGE,
}
# Kinds made with debootstrap (slow, cached as tarballs) rather than from this host's files.
_DEBOOTSTRAPPED: Final[dict[ImageKind, Recipe]] = {
    "php-apache": APACHE_RECIPE,
    "debian-python": DEBIAN_PYTHON,
    "debian-minbase": DEBIAN_MINBASE,
}
KIND_LABEL: Final = "sdp.testbed.image"
HASH_LABEL: Final = "sdp.testbed.content-hash"
DEFAULT_CACHE_DIR: Final = Path("/var/cache/sdp-testbed")

_PATH = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CHANGES: Final[dict[ImageKind, tuple[str, ...]]] = {
    "micro": (_PATH, 'CMD ["sh"]'),
    "php-cli": (
        _PATH,
        "WORKDIR /var/www/html",
        "EXPOSE 80",
        'CMD ["php", "-S", "0.0.0.0:80", "-t", "/var/www/html"]',
    ),
    "php-apache": (
        _PATH,
        "WORKDIR /var/www/html",
        "EXPOSE 80",
        'CMD ["apache2ctl", "-D", "FOREGROUND"]',
    ),
    "debian-python": (_PATH, "ENV container=docker", 'CMD ["/sbin/init"]'),
    "debian-minbase": (_PATH, 'CMD ["bash"]'),
}
# Docker's default API timeout (60 s) is too short to upload and unpack a 400 MB rootfs.
_DOCKER_TIMEOUT = 900


class ImageReport(Struct, frozen=True):
    kind: ImageKind
    tag: str
    built: bool
    seconds: float
    size_bytes: int
    content_hash: str


def ensure_images(
    kinds: Iterable[str] = TEST_KINDS, *, cache_dir: Path = DEFAULT_CACHE_DIR
) -> dict[str, str]:
    """Make sure each kind's image exists and is current; return kind -> image tag."""
    client = docker.from_env(timeout=_DOCKER_TIMEOUT)
    try:
        return {
            kind: ensure_image(_kind(kind), cache_dir=cache_dir, client=client).tag
            for kind in kinds
        }
    finally:
        client.close()


def ensure_image(kind: ImageKind, *, cache_dir: Path, client: Any) -> ImageReport:
    """Build `kind`'s image unless one with the same content hash already exists."""
    started = time.monotonic()
    tag = IMAGE_TAGS[kind]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _kind_lock(cache_dir, kind):
        rootfs = _small_rootfs(kind)
        content_hash = _content_hash(kind, rootfs)
        built = not image_is_current(client, kind, content_hash)
        if built:
            if rootfs is None:
                tarball = cached_tarball(cache_dir, _DEBOOTSTRAPPED[kind])
                _import(client, kind, tarball, content_hash)
            else:
                _import_rootfs(client, kind, rootfs, content_hash, cache_dir)
        size = int(client.images.get(tag).attrs["Size"])
    return ImageReport(kind, tag, built, time.monotonic() - started, size, content_hash)


def image_is_current(client: Any, kind: ImageKind, content_hash: str | None = None) -> bool:
    """Whether `kind`'s tag names one of our images (with `content_hash`, when given)."""
    try:
        labels = client.images.get(IMAGE_TAGS[kind]).labels or {}
    except docker.errors.ImageNotFound:
        return False
    if labels.get(KIND_LABEL) != kind:
        return False
    return content_hash is None or labels.get(HASH_LABEL) == content_hash


def _kind(name: str) -> ImageKind:
    if name not in ALL_KINDS:
        raise ValueError(f"unknown image kind {name!r}; choose from {', '.join(ALL_KINDS)}")
    return name


def _small_rootfs(kind: ImageKind) -> Rootfs | None:
    if kind == "micro":
        return micro_rootfs()
    if kind == "php-cli":
        return php_cli_rootfs()
    return None


def _content_hash(kind: ImageKind, rootfs: Rootfs | None) -> str:
    content = rootfs.content_hash() if rootfs is not None else _DEBOOTSTRAPPED[kind].hash
    recipe = "\0".join((kind, *_CHANGES[kind], content))
    return hashlib.sha256(recipe.encode()).hexdigest()


@contextmanager
def _kind_lock(cache_dir: Path, kind: ImageKind) -> Iterator[None]:
    lock_path = cache_dir / "locks" / f"{kind}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _import_rootfs(
    client: Any, kind: ImageKind, rootfs: Rootfs, content_hash: str, cache_dir: Path
) -> None:
    scratch_parent = cache_dir / "tmp"
    scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=scratch_parent))
    try:
        tarball = scratch / "rootfs.tar"
        rootfs.write_tar(tarball)
        _import(client, kind, tarball, content_hash)
    finally:
        shutil.rmtree(scratch)


def _import(client: Any, kind: ImageKind, tarball: Path, content_hash: str) -> None:
    tag = IMAGE_TAGS[kind]
    repository, _, version = tag.rpartition(":")
    previous = _image_id(client, tag)
    changes = [*_CHANGES[kind], f"LABEL {KIND_LABEL}={kind} {HASH_LABEL}={content_hash}"]
    # A file object, never a path string: docker-py takes a path it cannot open for a URL.
    with tarball.open("rb") as source:
        client.api.import_image(src=source, repository=repository, tag=version, changes=changes)
    if not image_is_current(client, kind, content_hash):
        raise RuntimeError(f"docker import of {tarball} did not produce {tag} ({kind})")
    if previous is not None and previous != _image_id(client, tag):
        # The old image is ours and now untagged; one still used by a container stays.
        with suppress(docker.errors.APIError):
            client.images.remove(previous)


def _image_id(client: Any, tag: str) -> str | None:
    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sdp_testbed.images",
        description="Build the testbed images with docker import (never pulls).",
    )
    parser.add_argument("kinds", nargs="*", metavar="KIND", help=", ".join(ALL_KINDS))
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    try:
        kinds: list[ImageKind] = [_kind(k) for k in args.kinds] or list(TEST_KINDS)
    except ValueError as error:
        parser.error(str(error))
    client = docker.from_env(timeout=_DOCKER_TIMEOUT)
    try:
        for kind in kinds:
            report = ensure_image(kind, cache_dir=args.cache_dir, client=client)
            verb = "built" if report.built else "current"
            print(
                f"{kind}: {report.tag} {verb} in {report.seconds:.1f} s "
                f"({report.size_bytes / 1e6:.1f} MB, hash {report.content_hash[:12]})",
                flush=True,
            )
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
