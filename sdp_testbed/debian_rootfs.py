"""Plain Debian 12 root file systems: what an offline VM and a fresh CI machine start from.

- `DEBIAN_PYTHON`: minbase with python3, python3-venv and systemd — a VM that SDP's offline
  bundle is installed on (`tests/install`): Debian's CPython 3.11 and `python3 -m venv`, and
  systemd as PID 1 when the container runs `/sbin/init`, so the bundle's units run for real.
  Made for a container: no getty, no udev trigger, an empty machine-id filled at boot.
- `DEBIAN_MINBASE`: minbase alone — a machine that has never had SDP's packages
  (`scripts/fresh-machine-check`).

Both are built with `debootstrap` and cached as tarballs by recipe hash.
"""

from __future__ import annotations

from pathlib import Path

from sdp_testbed.debootstrap import Recipe, cached_tarball, drop_apt_caches

__all__ = ["DEBIAN_MINBASE", "DEBIAN_PYTHON", "debian_minbase_tarball", "debian_python_tarball"]

# Units that wait for hardware or a terminal a container does not have.
_MASKED_UNITS = (
    "getty.target", "console-getty.service", "systemd-udevd.service",
    "systemd-udev-trigger.service", "systemd-firstboot.service", "systemd-logind.service",
)


def _for_containers(root: Path) -> None:
    drop_apt_caches(root)
    (root / "etc/machine-id").write_text("")
    system = root / "etc/systemd/system"
    system.mkdir(parents=True, exist_ok=True)
    for unit in _MASKED_UNITS:
        link = system / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def _minbase(root: Path) -> None:
    drop_apt_caches(root)


DEBIAN_PYTHON = Recipe(
    name="debian-python",
    # iptables: a MICRO agent guards its published ports (docker.io brings it on a real VM).
    include=("python3", "python3-venv", "systemd", "systemd-sysv", "iptables"),
    adjust=_for_containers,
    version="2",
    fingerprint=_MASKED_UNITS,
)
DEBIAN_MINBASE = Recipe(name="debian-minbase", include=(), adjust=_minbase, version="1")


def debian_python_tarball(cache_dir: Path) -> Path:
    return cached_tarball(cache_dir, DEBIAN_PYTHON)


def debian_minbase_tarball(cache_dir: Path) -> Path:
    return cached_tarball(cache_dir, DEBIAN_MINBASE)
