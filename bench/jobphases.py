"""Where a crashtest's time goes with several jobs: every phase of the explorer, in every process.

    python -m bench.jobphases [--protocol P] [--barrier B] [--seed S] [--ops N] [--jobs J] [--bytecodes]

The explorer's phase functions are wrapped in this process before the run, so the forked workers
(jobs.share_out's) and second phases (jobs.fork_map's) inherit the wrappers; each process hands
its events over in a file when it ends.  Per process it prints when each phase ran, its wall
time, its CPU time (with --bytecodes: the bytecodes it executed, which no other load on the host
disturbs, though work in C is not counted) and its minor faults (copy-on-write after a fork).
Then the critical path the run's seconds would have on idle CPUs: the set-up and report (the
first phase's time outside its checks, one process alone), the checks (the busier process's, and
balanced: their mean), the second phases (one after the other with one job, the longer with more).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sys
import tempfile
import time

from blkjournal import memo
from blkjournal.crash import explore, jobs, multicrash

SETUP = ("read_log", "read_sidecar", "load_workload", "CrashSpace", "_check_marks", "segments_of", "_init_ctx")
_events: list = []  # (pid, label, t0, t1, cost0, cost1, faults0, faults1)
_ops = [0]
_bytecodes = [False]


def _now() -> tuple[float, float, int]:
    if _bytecodes[0]:
        return time.perf_counter(), float(_ops[0]), 0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), ru.ru_utime + ru.ru_stime, ru.ru_minflt


def _count(frame, event, arg):
    if event == "opcode":
        _ops[0] += 1
    return _count


def _trace(frame, event, arg):
    frame.f_trace_opcodes = True
    return _count


def _wrap(mod, name: str, label: str | None = None, dump_to: str | None = None) -> None:
    f = getattr(mod, name, None)
    if f is None:  # (an older tree, measured from a copy of this file: e.g. without jobs.reap)
        return

    @functools.wraps(f)
    def timed(*a, **k):
        s = _now()
        try:
            return f(*a, **k)
        finally:
            e = _now()
            lab = label or name
            _events.append((os.getpid(), f"{lab}[{a[0]}]" if lab == "search" else lab, s[0], e[0], s[1], e[1], s[2],
                            e[2]))
            if dump_to:  # a forked process's last act: its events to the parent
                with open(os.path.join(dump_to, f"{os.getpid()}.json"), "w") as fh:
                    json.dump([x for x in _events if x[0] == os.getpid()], fh)

    setattr(mod, name, timed)


def measure(protocol: str, barrier: str, seed: int, nops: int, jobs_: int, bytecodes: bool) -> dict:
    out = tempfile.mkdtemp(prefix="jobphases-")
    for name in SETUP + ("_run_checks", "explore_log", "record", "second_phases"):
        _wrap(explore, name)
    _wrap(explore, "_search_segment", "search")
    _wrap(explore, "reap")
    _wrap(memo, "enable", "memo.enable")
    _wrap(multicrash, "record_phase2")
    _wrap(jobs, "_worker", "worker", dump_to=out)
    _wrap(jobs, "_one", "phase process", dump_to=out)
    _bytecodes[0] = bytecodes
    if bytecodes:
        sys.settrace(_trace)
    with tempfile.TemporaryDirectory() as d:
        res, _ = explore.crashtest(d, protocol=protocol, barrier=barrier, nops=nops, seed=seed, jobs=jobs_)
    sys.settrace(None)
    evs = [e for e in _events if e[0] == os.getpid()]
    for fn in os.listdir(out):
        with open(os.path.join(out, fn)) as fh:
            evs += [tuple(e) for e in json.load(fh)]
        os.unlink(os.path.join(out, fn))
    os.rmdir(out)
    return {"protocol": protocol, "seed": seed, "jobs": jobs_, "seconds": res.seconds, "checks": res.states_checked,
            "parent": os.getpid(), "bytecodes": bytecodes, "events": evs}


def critical_path(run: dict) -> dict:
    """The phases of the run's seconds, in the unit measured (CPU seconds or bytecodes)."""
    ev, par = sorted(run["events"], key=lambda e: (e[2], -e[3])), run["parent"]
    cost = lambda e: e[5] - e[4]  # noqa: E731
    inside = lambda x, e: x[0] == e[0] and e[2] <= x[2] and x[3] <= e[3] and x is not e  # noqa: E731

    def span(e):  # an exploration up to its end mark: without what explore_log does after it
        checks = [x for x in ev if inside(x, e) and x[1] == "_run_checks"]
        end = checks[0][3] if checks else e[2]
        return cost(e) - sum(cost(x) for x in ev if inside(x, e) and x[1] in ("memo.enable", "reap") and x[2] >= end)

    explorations = [e for e in ev if e[1] == "explore_log"]
    first, rest = explorations[0], explorations[1:]
    checks = next(x for x in ev if inside(x, first) and x[1] == "_run_checks")
    others: dict[int, float] = {}
    for x in ev:
        if x[1].startswith("search[") and x[0] != par and first[2] <= x[2] <= first[3]:
            others[x[0]] = others.get(x[0], 0.0) + cost(x)
    worker = max(others.values(), default=0.0)
    phases = [span(e) for e in rest]
    setup_report = span(first) - cost(checks)
    late = max(phases, default=0.0) if run["jobs"] > 1 else sum(phases)
    return {"setup_report": setup_report, "search_parent": cost(checks), "search_worker": worker,
            "second_phases": phases, "path": setup_report + max(cost(checks), worker) + late,
            "path_balanced": setup_report + ((cost(checks) + worker) / 2 if others else cost(checks)) + late}


def show(run: dict) -> None:
    unit, scale = ("M bytecodes", 1e-6) if run["bytecodes"] else ("ms CPU", 1e3)
    ev = sorted(run["events"], key=lambda e: (e[2], -e[3]))
    t0 = ev[0][2]
    print(f"{run['protocol']} seed {run['seed']}, {run['jobs']} job(s): {run['checks']} checks, "
          f"seconds {run['seconds']:.3f}")
    for pid in sorted({e[0] for e in ev}, key=lambda p: (p != run["parent"], min(e[2] for e in ev if e[0] == p))):
        print(f"  process {'(this one)' if pid == run['parent'] else pid}")
        mine, searches = [e for e in ev if e[0] == pid], []
        for e in mine + [None]:
            if e is not None and e[1].startswith("search["):
                searches.append(e)
                continue
            if searches:
                print(f"    {1e3 * (searches[0][2] - t0):8.1f} ms  {len(searches)} segments searched: wall "
                      f"{1e3 * sum(x[3] - x[2] for x in searches):.1f} ms, {sum(x[5] - x[4] for x in searches) * scale:.2f} "
                      f"{unit}, {sum(x[7] - x[6] for x in searches)} faults")
                searches = []
            if e is not None:
                print(f"    {1e3 * (e[2] - t0):8.1f} ms  {e[1]:<16} wall {1e3 * (e[3] - e[2]):7.1f} ms, "
                      f"{(e[5] - e[4]) * scale:8.2f} {unit}, {e[7] - e[6]} faults")
    c = critical_path(run)
    print(f"  critical path ({unit}): set-up and report {c['setup_report'] * scale:.2f}, checks "
          f"{c['search_parent'] * scale:.2f} here / {c['search_worker'] * scale:.2f} in the worker, second phases "
          f"{' + '.join(f'{x * scale:.2f}' for x in c['second_phases'])}: {c['path'] * scale:.2f} "
          f"({c['path_balanced'] * scale:.2f} with the checks balanced)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.jobphases", description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="journal")
    ap.add_argument("--barrier", default="flush")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ops", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--bytecodes", action="store_true", help="count bytecodes instead of CPU time (about 30x slower)")
    ap.add_argument("--json", metavar="FILE", help="append the run's events to FILE (one JSON line)")
    a = ap.parse_args(argv)
    run = measure(a.protocol, a.barrier, a.seed, a.ops, a.jobs, a.bytecodes)
    show(run)
    if a.json:
        with open(a.json, "a") as fh:
            fh.write(json.dumps(run) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
