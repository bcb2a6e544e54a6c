"""A no-op ``sdp-reconcile once`` of two builds of SDP against one installation, interleaved.

For a change that must not make the no-op pass slower (issue 10): ``--baseline BIN`` is the
``sdp-reconcile`` of the code before it, the one of this checkout is the other. The stack is
``bench_noop_once.py``'s (50 sandboxes x 3 services plus a gateway each, by default); after a
first ``--once`` deploys it, each round runs both binaries' ``--once`` (a no-op) in alternating
order, and the script reports medians and the ratio this/baseline. No docker-compose needed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_noop_once import GATEWAY_PORTS, MICRO_PORTS, SUBNET_RANGE
from common import BIN, bench_run, interleaved, load_average, require_free_ports, say
from stack import SERVICES, SdpStack, build_stack, sandbox_yaml


def once(binary: Path, stack: SdpStack) -> tuple[int, float, str]:
    command = [str(binary), "once", "--state", str(stack.state), "--history", str(stack.history)]
    start = time.perf_counter()
    done = subprocess.run(command, env=stack.env, capture_output=True, text=True, timeout=600,
                          cwd=stack.bench.workdir)
    return done.returncode, time.perf_counter() - start, done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--sandboxes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    count = args.sandboxes
    require_free_ports([*range(MICRO_PORTS[0], MICRO_PORTS[0] + 3 * count),
                        *range(GATEWAY_PORTS[0], GATEWAY_PORTS[0] + count)])
    binaries = {"this": BIN / "sdp-reconcile", "baseline": args.baseline.resolve()}
    with bench_run("noop-ab") as bench:
        images = bench.images(["micro", "php-cli"])
        stack = build_stack(bench, images=images, micro_ports=MICRO_PORTS,
                            gateway_ports=GATEWAY_PORTS, subnet_range=SUBNET_RANGE)
        for name in (f"nb{bench.id}-{i:03d}" for i in range(count)):
            stack.write(f"sandboxes/{name}.yaml",
                        sandbox_yaml(name, {s: {"branch": "main"} for s in SERVICES}))
        stack.commit_state(f"{count} sandboxes")
        say(f"first --once: deploying {count} sandboxes")
        first = stack.reconcile("once")
        if first.code != 0:
            raise RuntimeError(f"first --once failed ({first.code}):\n{first.stderr[-3000:]}")
        samples: dict[str, list[float]] = {"this": [], "baseline": []}
        loads = [load_average()]
        for index in range(args.rounds):
            for variant in interleaved(index, ["this", "baseline"]):
                code, seconds, stderr = once(binaries[variant], stack)
                if code != 0 or "No changes" not in stderr:
                    raise RuntimeError(f"{variant} --once was not a no-op ({code}):\n"
                                       f"{stderr[-3000:]}")
                samples[variant].append(seconds)
                say(f"round {index + 1}/{args.rounds} {variant:<8} {seconds:.3f} s")
        loads.append(load_average())
    this, base = (statistics.median(samples[v]) for v in ("this", "baseline"))
    print(f"no-op --once, {count} sandboxes x (3 services + gateway), {args.rounds} rounds: "
          f"this {this:.3f} s, baseline {base:.3f} s, this/baseline {this / base:.3f} "
          f"(load {loads[0]} -> {loads[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
