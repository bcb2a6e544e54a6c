"""One offline `go build` the way a MICRO node does it, for tests and benchmarks.

`go_build` runs `go build -trimpath -o OUTPUT TARGET` with CGO_ENABLED=0, GOTOOLCHAIN=local,
GOPROXY=off, a caller-chosen GOCACHE and GOMODCACHE, and either `-mod=vendor` or
`GOFLAGS=-mod=mod` (modules from the cache). It reports the exit code, the combined output
and the wall time; it never raises for a failed build, because failing builds are fixtures too.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Literal

from msgspec import Struct

from sdp_testbed.gomodcache import go_env

__all__ = ["GoBuildResult", "ModuleSource", "go_build"]

ModuleSource = Literal["vendor", "modcache"]


class GoBuildResult(Struct, frozen=True):
    returncode: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def go_build(
    src: Path,
    *,
    output: Path,
    gocache: Path,
    gomodcache: Path,
    modules: ModuleSource = "modcache",
    target: str = ".",
) -> GoBuildResult:
    """Build package `target` of the module at `src` into the binary `output`."""
    go = shutil.which("go")
    if go is None:
        raise FileNotFoundError("the go command is not on PATH")
    overrides = {"GOCACHE": str(gocache), "GOMODCACHE": str(gomodcache)}
    command = [go, "build", "-trimpath", "-o", str(output)]
    if modules == "vendor":
        command.append("-mod=vendor")
    else:
        overrides["GOFLAGS"] = "-mod=mod"
    command.append(target)
    started = time.monotonic()
    result = subprocess.run(
        command,
        cwd=src,
        env=go_env(overrides),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    return GoBuildResult(
        returncode=result.returncode,
        output=result.stdout,
        seconds=time.monotonic() - started,
    )
