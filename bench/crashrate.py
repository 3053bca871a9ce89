"""Crash states checked per second: the explorer on the standard 200-op random workload.

A "state checked" is one recovery + fsck + read of every file: a representative of an
equivalence class of crash states (the explorer splits a class only on the writes recovery
actually read), so it stands for many crash states.  `states_enumerated` counts the legal crash
states those classes cover; both rates are reported, and the target is judged on the checked one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

STANDARD_NOPS = 200
STANDARD_SEED = 0  # the CLI's default `blkjournal crashtest` workload


def crash_rate(protocol: str, barrier: str, jobs: int, parent: str) -> dict:
    from blkjournal.crash.explore import crashtest

    with tempfile.TemporaryDirectory(prefix="crash-", dir=parent) as d:
        c0 = os.times()
        t0 = time.perf_counter()
        res, _ = crashtest(d, protocol=protocol, barrier=barrier, nops=STANDARD_NOPS, seed=STANDARD_SEED, jobs=jobs)
        wall = time.perf_counter() - t0
        c1 = os.times()
    # CPU seconds used (this process and the explorer's worker processes, reaped by then) per wall
    # second: 1.0 = one CPU busy throughout; 2 jobs can only scale if this can reach ~2.
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) \
        + (c1.children_system - c0.children_system)
    secs = res.seconds or wall
    return {"checked_s": res.states_checked / secs, "checked_s_per_job": res.states_checked / secs / jobs,
            "enumerated_s": res.states_enumerated / secs, "states_checked": res.states_checked,
            "states_enumerated": res.states_enumerated, "seconds": secs, "wall_incl_record": wall,
            "ms_per_check": secs / max(res.states_checked, 1) * 1e3, "ok": res.ok,
            "coverage": res.coverage, "cpus_busy": cpu / wall,
            "checked_per_cpu_s": res.states_checked / cpu if cpu else None}


def crash_rate_of_tree(tree: str, protocol: str, barrier: str, jobs: int, parent: str) -> dict:
    """crash_rate() as measured by the explorer of another checkout (`--crash-before`), in a child
    process whose imports come from that tree: before/after figures from one bench run.

    Read the before/after ratio with this in mind: this tree's runs start cold in a fresh process,
    while the bench's own (crash_rate) run in the bench process, warm from the runs before.  One
    tree measured both ways, taking turns (session 8, 5 rounds, load 3.4): journal/flush 713 checks/s
    in-process against 506 in a fresh process (CPU per check 1.90 against 2.14 ms), ordered/flush
    1,784 against 1,769."""
    code = ("import json, sys; from bench.crashrate import crash_rate; "
            "print(json.dumps(crash_rate(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])))")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    p = subprocess.run([sys.executable, "-c", code, protocol, barrier, str(jobs), parent], cwd=tree, env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{tree}: crash_rate failed: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])
