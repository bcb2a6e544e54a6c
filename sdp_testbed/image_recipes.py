"""What the small test images hold, assembled from this host's own files.

- `micro_rootfs`: busybox-static with its applets, /etc/passwd and /etc/group (root, nobody,
  www-data), /tmp. A `CGO_ENABLED=0` Go binary needs nothing more.
- `php_cli_rootfs`: the same plus Debian's /usr/bin/php8.2, the shared libraries `ldd`
  names for it and for every extension in its extension dir, the loader, the CLI ini files,
  /usr/share/zoneinfo and a CA bundle.

Both use the merged-/usr layout Debian uses (/bin, /sbin, /lib, /lib64 link into /usr), so
library paths `ldd` reports land where the loader looks for them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from sdp_testbed.rootfs import Rootfs

__all__ = ["PHP_VERSION", "micro_rootfs", "php_cli_rootfs", "shared_libraries"]

PHP_VERSION = "8.2"
_PHP_BINARY = Path(f"/usr/bin/php{PHP_VERSION}")
_PHP_ETC = Path(f"/etc/php/{PHP_VERSION}")

_MERGED_USR = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}

_PASSWD = b"""\
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
_GROUP = b"""\
root:x:0:
www-data:x:33:
nogroup:x:65534:
nobody:x:65534:
"""
_NSSWITCH = b"passwd: files\ngroup: files\nhosts: files dns\n"

_LDD_LINE = re.compile(r"^\s*(?:(\S+) => )?(\S+) \(0x[0-9a-f]+\)$")


def micro_rootfs(busybox: Path = Path("/usr/bin/busybox")) -> Rootfs:
    rootfs = Rootfs()
    for link, target in _MERGED_USR.items():
        rootfs.add_symlink(link, target)
    _add_busybox(rootfs, busybox)
    rootfs.add_bytes("/etc/passwd", _PASSWD)
    rootfs.add_bytes("/etc/group", _GROUP)
    rootfs.add_bytes("/etc/nsswitch.conf", _NSSWITCH)
    rootfs.add_dir("/tmp", 0o1777)  # noqa: S108 (the image's /tmp)
    rootfs.add_dir("/root", 0o700)
    return rootfs


def php_cli_rootfs(busybox: Path = Path("/usr/bin/busybox")) -> Rootfs:
    rootfs = micro_rootfs(busybox)
    rootfs.add_host_file(str(_PHP_BINARY))
    rootfs.add_symlink("/usr/bin/php", _PHP_BINARY.name)
    extension_dir = _php_extension_dir()
    rootfs.add_host_tree(extension_dir)
    rootfs.add_host_tree(_PHP_ETC / "cli")
    rootfs.add_host_tree(_PHP_ETC / "mods-available")
    binaries = [_PHP_BINARY, *sorted(extension_dir.glob("*.so"))]
    for soname_path, source in shared_libraries(binaries).items():
        rootfs.add_host_file(soname_path, source)
    rootfs.add_host_tree(Path("/usr/share/zoneinfo"))
    _add_ca_bundle(rootfs)
    rootfs.add_dir("/var/www/html")
    return rootfs


def shared_libraries(binaries: Iterable[Path]) -> dict[str, Path]:
    """Image path -> host file of every library (and the loader) `ldd` lists for `binaries`.

    The image path keeps the soname the loader asks for, in the real (merged-/usr)
    directory; the host file is the one the soname resolves to.
    """
    ldd = shutil.which("ldd")
    if ldd is None:
        raise FileNotFoundError("ldd is not on PATH")
    libraries: dict[str, Path] = {}
    for binary in binaries:
        output = subprocess.run(
            [ldd, str(binary)], capture_output=True, text=True, check=True
        ).stdout
        for line in output.splitlines():
            if "not found" in line:
                raise FileNotFoundError(f"{binary}: {line.strip()}")
            match = _LDD_LINE.match(line)
            if match is None or not match.group(2).startswith("/"):
                continue  # linux-vdso and statically linked notes
            listed = PurePosixPath(match.group(2))
            in_image = PurePosixPath(os.path.realpath(listed.parent)) / listed.name
            libraries[str(in_image)] = Path(os.path.realpath(listed))
    return libraries


def _add_busybox(rootfs: Rootfs, busybox: Path) -> None:
    rootfs.add_host_file("/usr/bin/busybox", busybox)
    applets = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        path = PurePosixPath("/") / applet
        top = f"/{path.parts[1]}"
        if top in _MERGED_USR:
            path = PurePosixPath("/") / _MERGED_USR[top] / path.relative_to(top)
        if str(path) not in rootfs:
            rootfs.add_symlink(str(path), "/usr/bin/busybox")


def _php_extension_dir() -> Path:
    output = subprocess.run(
        [str(_PHP_BINARY), "-n", "-r", "echo PHP_EXTENSION_DIR;"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Path(output.strip())


def _add_ca_bundle(rootfs: Rootfs) -> None:
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():
        rootfs.add_host_file(str(bundle))
        rootfs.add_symlink("/usr/lib/ssl/cert.pem", str(bundle))
    rootfs.add_symlink("/usr/lib/ssl/certs", "/etc/ssl/certs")
    if Path("/etc/ssl/openssl.cnf").is_file():
        rootfs.add_host_file("/etc/ssl/openssl.cnf")
        rootfs.add_symlink("/usr/lib/ssl/openssl.cnf", "/etc/ssl/openssl.cnf")
