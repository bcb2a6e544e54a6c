"""``load_state`` of an unchanged state directory: every file parsed (cold) against the
documents of the previous load reused (warm, ``state/doccache.py``).

Two directories: a copy of the repository's example ``state/`` (5 files) and the same with
N more sandboxes (each extends QA-DEFAULT and puts one service on its own branch). Cold
empties the process's document cache before each load, which is what every load did before
the cache (plus the SHA-256 of the bytes); warm loads after a load of the same directory, as
a ``watch`` pass or ``--once``'s second round does. Both load in-process, interleaved load
by load, with the cyclic collector run before each one; medians of ``--repeat`` loads.

    .venv/bin/python bench/bench_load_state.py [--repeat 50] [--sandboxes 50]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved, load_average, ratio, say, stats, table, write_results

from sdp_reconciler.state.doccache import DOCUMENTS
from sdp_reconciler.state.loading import load_state

REPO = Path(__file__).resolve().parents[1]
SANDBOX = """\
sandbox: BENCH-{n:03d}
extends: QA-DEFAULT
services:
  account:
    branch: feature/bench-{n:03d}
    resources:
      cpu: 500m
      memory: 256Mi
resources:
  cpu: "1"
  memory: 512Mi
"""


def make_state(destination: Path, sandboxes: int) -> Path:
    shutil.copytree(REPO / "state", destination)
    for n in range(sandboxes):
        (destination / "sandboxes" / f"BENCH-{n:03d}.yaml").write_text(SANDBOX.format(n=n))
    return destination


def timed_load(root: Path, variant: str) -> float:
    if variant == "cold":
        DOCUMENTS.clear()
    else:
        load_state(root)  # the previous pass
    gc.collect()
    start = time.perf_counter()
    load_state(root)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--sandboxes", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sdp-bench-load-state-") as work:
        roots = {
            "example": make_state(Path(work) / "example", 0),
            f"example+{args.sandboxes}": make_state(Path(work) / "big", args.sandboxes),
        }
        files = {name: sum(1 for p in root.rglob("*.yaml")) for name, root in roots.items()}
        for root in roots.values():
            load_state(root)  # imports, pydantic's deferred model builds
        samples: dict[tuple[str, str], list[float]] = {
            (name, v): [] for name in roots for v in ("cold", "warm")}
        loads = [load_average()]
        for index in range(args.repeat):
            for name, root in roots.items():
                for variant in interleaved(index, ["cold", "warm"]):
                    samples[(name, variant)].append(timed_load(root, variant))
            if (index + 1) % 10 == 0:
                loads.append(load_average())
                say(f"repetition {index + 1}/{args.repeat}, load {loads[-1]}")

    rows, figures = [], []
    for name in roots:
        cold, warm = stats(samples[(name, "cold")]), stats(samples[(name, "warm")])
        rows.append([name, files[name], cold["median"] * 1000, warm["median"] * 1000,
                     ratio(warm["median"], cold["median"])])
        figures.append({"state": name, "files": files[name], "cold": cold, "warm": warm,
                        "warm_over_cold": ratio(warm["median"], cold["median"])})
    path = write_results("load_state", {"repeat": args.repeat, "load_average": loads,
                                        "figures": figures})
    print(table(["state", "files", "cold ms", "warm ms", "warm / cold"], rows))
    say(f"results in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
