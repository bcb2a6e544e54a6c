"""The test runs' port lanes (tests/support/ports.py): real processes, a lock directory of
their own (TMPDIR), the layout xdist gives a run (a controller and its gw0, gw1... workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.ports import FIRST_PORT, LANE_SIZE, LANES

ROOT = Path(__file__).resolve().parents[2]
# Prints this process's first block and the lanes' lock files, once every process of the
# round has its block (so that none exits, freeing its lane, before the others claimed).
CLAIM = """
import json, os, sys, time
from pathlib import Path
from tests.support import ports
first, last = ports.port_block(100)
ready = Path(sys.argv[1]) / f"ready-{os.getpid()}"
ready.write_text("")
while len(list(ready.parent.glob("ready-*"))) < int(sys.argv[2]):
    time.sleep(0.01)
print(json.dumps({"worker": os.environ.get("PYTEST_XDIST_WORKER"), "block": [first, last],
                  "pid": os.getpid(), "ppid": os.getppid()}))
"""
# A controller: starts its workers (their parent, as xdist's are), passes on their lines and
# frees its lanes at the end, as tests/conftest.py's pytest_unconfigure does.
CONTROLLER = """
import os, subprocess, sys
from tests.support.ports import release_lanes
count = int(sys.argv[1])
workers = [subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[3], sys.argv[4]],
                            env={**os.environ, "PYTEST_XDIST_WORKER": f"gw{i}",
                                 "PYTEST_XDIST_WORKER_COUNT": str(count)},
                            stdout=subprocess.PIPE, text=True) for i in range(count)]
for worker in workers:
    out, _ = worker.communicate(timeout=60)
    sys.stdout.write(out)
print(os.getpid(), flush=True)
if sys.argv[5:] != ["keep"]:
    release_lanes()
"""


def environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    return {**env, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}


def lane_of(port: int) -> int:
    return (port - FIRST_PORT) // LANE_SIZE


def test_a_runs_workers_share_one_lane_in_halves_and_a_plain_run_gets_another(
    tmp_path: Path,
) -> None:
    rounds = tmp_path / "round"
    rounds.mkdir()
    env = environment(tmp_path)
    controller = subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, "2", CLAIM, str(rounds), "3"], env=env,
        stdout=subprocess.PIPE, text=True)
    plain = subprocess.run([sys.executable, "-c", CLAIM, str(rounds), "3"], env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    out, _ = controller.communicate(timeout=60)
    assert controller.returncode == 0
    *lines, controller_pid = out.splitlines()
    workers = {w["worker"]: w for w in map(json.loads, lines)}
    alone = json.loads(plain.stdout)
    assert {w["ppid"] for w in workers.values()} == {int(controller_pid)}
    gw0, gw1 = workers["gw0"]["block"][0], workers["gw1"]["block"][0]
    assert lane_of(gw0) == lane_of(gw1) != lane_of(alone["block"][0])
    assert gw1 - gw0 == LANE_SIZE // 2, "each worker hands out blocks from its own half"
    assert list((tmp_path / "sdp-test-port-lanes").glob("lane-*")) == [], \
        "the controller freed the lane held in its name, the plain run its own"


def test_a_lane_left_by_a_controller_that_died_is_taken_over(tmp_path: Path) -> None:
    rounds = tmp_path / "round"
    rounds.mkdir()
    env = environment(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", CONTROLLER, "2", CLAIM, str(rounds), "2", "keep"], env=env,
        capture_output=True, text=True, timeout=60, check=True).stdout
    *lines, controller_pid = out.splitlines()
    lane = lane_of(json.loads(lines[0])["block"][0])
    lock = tmp_path / "sdp-test-port-lanes" / f"lane-{lane}"
    assert lock.read_text() == controller_pid, "held in the (now gone) controller's name"
    # Every other lane is held by a live process: the next claimer gets the dead one's.
    for other in set(range(LANES)) - {lane}:
        (tmp_path / "sdp-test-port-lanes" / f"lane-{other}").write_text(str(os.getpid()))
    for ready in rounds.iterdir():
        ready.unlink()
    again = subprocess.run([sys.executable, "-c", CLAIM, str(rounds), "1"], env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    assert lane_of(json.loads(again.stdout)["block"][0]) == lane


def test_three_workers_hold_two_lanes(tmp_path: Path) -> None:
    rounds = tmp_path / "round"
    rounds.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", CONTROLLER, "3", CLAIM, str(rounds), "3"],
        env=environment(tmp_path), capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    *lines, _ = out.splitlines()
    first = {w["worker"]: w["block"][0] for w in map(json.loads, lines)}
    assert lane_of(first["gw0"]) == lane_of(first["gw1"]) != lane_of(first["gw2"])
    assert len({first["gw0"], first["gw1"], first["gw2"]}) == 3
