"""The fixture dependency `example.invalid/greet` v1.0.0 and an offline Go module cache of it.

Offline VMs get their modules from `vendor/` or from a module cache prepared beforehand.
`write_module_proxy` lays the module out as a GOPROXY directory (`@v/list`, `.info`, `.mod`,
`.zip`); `build_module_cache` fills a GOMODCACHE from that directory with the real
`go mod download` (nothing leaves the machine: GOPROXY=file://, GOSUMDB=off).
`greet_go_sum` gives the go.sum lines a module requiring greet needs, hashed the way the go
command hashes (`h1:`, golang.org/x/mod/sumdb/dirhash.Hash1).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "GREET_MODULE",
    "GREET_VERSION",
    "ModuleCacheError",
    "build_module_cache",
    "go_env",
    "greet_go_sum",
    "greet_module_files",
    "write_module_proxy",
]

GREET_MODULE = "example.invalid/greet"
GREET_VERSION = "v1.0.0"

_GREET_GO = b"""\
// Package greet is the fixture services' one dependency.
package greet

// Hello greets name.
func Hello(name string) string {
	return "hello, " + name
}
"""
_GREET_GO_MOD = f"module {GREET_MODULE}\n\ngo 1.19\n".encode()
# A fixed time keeps the proxy files, and so the cache, byte-for-byte reproducible.
_GREET_TIME = "2024-01-01T00:00:00Z"


class ModuleCacheError(RuntimeError):
    """`go mod download` could not fill the module cache; the message carries its output."""


def greet_module_files() -> dict[str, bytes]:
    """The files of example.invalid/greet v1.0.0, relative to the module root."""
    return {"go.mod": _GREET_GO_MOD, "greet.go": _GREET_GO}


def greet_go_sum() -> str:
    """The go.sum lines for example.invalid/greet v1.0.0 (zip hash and go.mod hash)."""
    zip_hash = _hash1(_zip_entries().items())
    mod_hash = _hash1([("go.mod", _GREET_GO_MOD)])
    return (
        f"{GREET_MODULE} {GREET_VERSION} {zip_hash}\n"
        f"{GREET_MODULE} {GREET_VERSION}/go.mod {mod_hash}\n"
    )


def write_module_proxy(dest: Path) -> Path:
    """Lay greet out under `dest` as a GOPROXY directory; return `dest`."""
    version_dir = dest / GREET_MODULE / "@v"
    version_dir.mkdir(parents=True, exist_ok=True)
    info = json.dumps({"Version": GREET_VERSION, "Time": _GREET_TIME}).encode()
    (version_dir / "list").write_bytes(f"{GREET_VERSION}\n".encode())
    (version_dir / f"{GREET_VERSION}.info").write_bytes(info)
    (version_dir / f"{GREET_VERSION}.mod").write_bytes(_GREET_GO_MOD)
    (version_dir / f"{GREET_VERSION}.zip").write_bytes(_module_zip())
    return dest


def build_module_cache(dest: Path) -> Path:
    """Fill the GOMODCACHE directory `dest` with greet v1.0.0, offline; return `dest`.

    The cache is left writable (`-modcacherw`) so it can be deleted like any directory.
    """
    dest.mkdir(parents=True, exist_ok=True)
    go = shutil.which("go")
    if go is None:
        raise ModuleCacheError("the go command is not on PATH")
    with tempfile.TemporaryDirectory(prefix="sdp-goproxy-") as scratch:
        proxy = write_module_proxy(Path(scratch) / "proxy")
        env = go_env(
            {
                "GOMODCACHE": str(dest.resolve()),
                "GOPROXY": proxy.resolve().as_uri(),
                "GOFLAGS": "-modcacherw",
                "GOCACHE": str(Path(scratch) / "gocache"),
            }
        )
        result = subprocess.run(
            [go, "mod", "download", "-json", f"{GREET_MODULE}@{GREET_VERSION}"],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise ModuleCacheError(
            f"go mod download {GREET_MODULE}@{GREET_VERSION} into {dest} failed "
            f"(exit {result.returncode}): {result.stdout}{result.stderr}"
        )
    return dest


def go_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without inherited GO* settings, plus offline defaults.

    Defaults: CGO_ENABLED=0, GOTOOLCHAIN=local, GOPROXY=off, GOSUMDB=off, GOFLAGS empty;
    `overrides` win.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(
        {
            "CGO_ENABLED": "0",
            "GOTOOLCHAIN": "local",
            "GOPROXY": "off",
            "GOSUMDB": "off",
            "GOFLAGS": "",
            "GO111MODULE": "on",
        }
    )
    env.update(overrides)
    return env


def _zip_entries() -> dict[str, bytes]:
    prefix = f"{GREET_MODULE}@{GREET_VERSION}/"
    return {prefix + name: content for name, content in sorted(greet_module_files().items())}


def _module_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in _zip_entries().items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def _hash1(files: Iterable[tuple[str, bytes]]) -> str:
    """dirhash.Hash1: sha256 over sorted "<sha256 hex>  <name>\\n" lines, base64, "h1:"."""
    summary = "".join(
        f"{hashlib.sha256(content).hexdigest()}  {name}\n" for name, content in sorted(files)
    )
    digest = hashlib.sha256(summary.encode("utf-8")).digest()
    return "h1:" + base64.b64encode(digest).decode("ascii")
