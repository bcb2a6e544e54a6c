"""A node's fetch over many pushes: does it stay as fast as the first one?

One repository (40 Go files) on the Basic-auth git server over HTTP, in its own process as
Bitbucket is another host (``Bench.git_server``); ``--pushes`` times, one file changes and
each variant fetches the new commit, interleaved push by push:

* ``sdp``: the agent's ``GitStore.fetch`` (it offers its branch heads as haves; the packs are
  merged in the background once there are more than ``packs.LIMIT``, waited for outside
  the timing and reported apart);
* ``dulwich defaults (before)``: a bare store fetched as ``GitStore`` did before: dulwich's
  own graph walker over ``refs/heads`` (which a store has none of), no merge;
* ``git fetch (by hand)``: the git CLI into a bare mirror (git's own auto-gc applies).

Medians of the first and the last ten fetches per variant, and how much each grew. The test
git server's own work grows with the history, for every variant alike (git's fetch grows
with it), so the goal is relative to git: sdp's last ten
at most git's (ratio <= 1.0), and sdp growing by no more than git does.

    .venv/bin/python bench/bench_store_packs.py [--pushes 150]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Bench, bench_run, git_env, load_average, ratio, say, table, write_results
from dulwich.repo import Repo

from sdp_node.config import RepositoryConfig
from sdp_node.git import GitStore
from sdp_node.gitremote import remote_client
from sdp_node.protocol import Credentials, Secret
from sdp_testbed.repos import commit_files

GOAL = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=150)
    args = parser.parse_args()
    with bench_run("store-packs") as bench:
        return measure(bench, args.pushes)


def measure(bench: Bench, pushes: int) -> int:
    root = bench.workdir
    server = bench.git_server()
    path, url = server.make_repo("svc")
    commit_files(path, branch="main", message="first", files={
        f"f{i}.go": f"package main // file {i}\n".encode() * 20 for i in range(40)})
    config = RepositoryConfig(name="svc", url=url, kind="go", image="micro")
    credentials = Credentials(username=Secret(server.username),
                              password=Secret(server.password))
    store = GitStore(root / "workspace")
    before = root / "before.git"
    Repo.init_bare(str(before), mkdir=True).close()
    mirror = root / "mirror.git"
    env = git_env(server.username, server.password, root / "home")
    subprocess.run(["git", "clone", "-q", "--bare", url, str(mirror)], env=env, check=True)
    times: dict[str, list[float]] = {"sdp": [], "dulwich defaults (before)": [],
                                     "git fetch (by hand)": []}
    merging = 0.0
    loads = [load_average()]

    def old_fetch() -> None:
        client, remote = remote_client(url, credentials)
        repo = Repo(str(before))
        try:
            client.fetch(remote, repo)
        finally:
            repo.close()

    for index in range(pushes):
        commit_files(path, branch="main", message=f"change {index}",
                     files={f"f{index % 40}.go": f"package main // {index}\n".encode()})
        start = time.perf_counter()
        store.fetch(config, credentials, log=lambda _line: None)
        times["sdp"].append(time.perf_counter() - start)
        start = time.perf_counter()
        store.settle(config)
        merging += time.perf_counter() - start
        start = time.perf_counter()
        old_fetch()
        times["dulwich defaults (before)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(["git", "-C", str(mirror), "fetch", "-q", "origin",
                        "+refs/heads/*:refs/heads/*"], env=env, check=True)
        times["git fetch (by hand)"].append(time.perf_counter() - start)
        if (index + 1) % 25 == 0:
            say(f"push {index + 1}/{pushes}: " + ", ".join(
                f"{name} {samples[-1] * 1000:.0f} ms" for name, samples in times.items()))
    loads.append(load_average())
    rows, result = [], {"pushes": pushes, "load_average": loads, "variants": {},
                        "sdp_merge_seconds_total": round(merging, 3)}
    for name, samples in times.items():
        first = statistics.median(samples[:10])
        last = statistics.median(samples[-10:])
        packs = len(list((store.store_path(config) if name == "sdp" else
                          before if name.startswith("dulwich") else mirror)
                         .glob("objects/pack/*.pack")))
        size = sum(f.stat().st_size for f in (store.store_path(config) if name == "sdp" else
                   before if name.startswith("dulwich") else mirror).glob("objects/**/*")
                   if f.is_file())
        result["variants"][name] = {"first_ten_median": round(first, 4),
                                    "last_ten_median": round(last, 4),
                                    "growth": round(last - first, 4), "packs": packs,
                                    "bytes": size}
        rows.append([name, round(first * 1000, 1), round(last * 1000, 1),
                     round((last - first) * 1000, 1), packs, size // 1024])
    sdp, git = result["variants"]["sdp"], result["variants"]["git fetch (by hand)"]
    result["sdp_last_over_git_last"] = ratio(sdp["last_ten_median"], git["last_ten_median"])
    meets = result["sdp_last_over_git_last"] <= GOAL and sdp["growth"] <= git["growth"]
    path_ = write_results("store-packs", result)
    print(table(["variant", "first 10 ms", "last 10 ms", "growth ms", "packs", "KiB"], rows))
    print(f"sdp last ten / git last ten = {result['sdp_last_over_git_last']} (goal <= {GOAL}); "
          f"growth sdp {sdp['growth'] * 1000:.1f} ms, git {git['growth'] * 1000:.1f} ms; "
          f"{'meets' if meets else 'MISSES'} the goal; background merges {merging:.2f} s in "
          f"all; load {loads[0]} -> {loads[-1]}; results: {path_}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
