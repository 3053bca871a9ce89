"""`make bench` (python -m bench.run): every figure side by side with its baselines, in one run.

Set-up: fio (apt-get if missing) and three loop devices with direct I/O over files in /var/tmp
whose used parts are written through first (so the host file system never allocates blocks under
a measurement): A, 1 GiB, for the 256 MiB file; B, 1 GiB, ext4; S for the appends, one 1 GiB
slice per protocol/barrier configuration plus a raw region.  Then three phases, in rounds:

    append   synced 4 KiB appends: 6 protocol/barrier configurations, raw pwrite+fdatasync, raw
             2×pwrite+fdatasync (the journal's I/O pattern), raw 8 KiB pwrite+fdatasync (the same
             bytes as one request), ext4 + fsync, all open at once and
             taking turns 5 appends at a time; fio after each round
    seq      a 256 MiB file on A (from page-aligned memory): put (journal, ordered), each bracketed by raw 1 MiB O_DIRECT
             writes of the same size; 1 MiB writes (journal) taking turns with raw 1 MiB writes;
             after the journal put, random 4 KiB reads taking turns with raw reads; fio
    crash    the crash explorer on the standard 200-op workload, journal/flush and ordered/flush,
             1 and 2 jobs

This host is shared and noisy: its I/O latency swings several-fold within seconds, so figures and
baselines interleave as finely as each workload allows, and the order rotates from round to round.
Results: bench/results.json and bench/results.md (see report.py).  Everything is torn down on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import traceback

from . import env, measure, report
from .crashrate import crash_rate, crash_rate_of_tree
from .stats import Samples
from blkjournal.device import Device

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20
DEVICE_SIZE = 1 << 30  # the journal is 1/16 of it: 64 MiB
SEQ_SIZE = 256 * MiB
# The append device: seven 1 GiB slices (one per protocol/barrier, and journal/flush with
# --inline-max 0: the data and its transaction as two writes, format 7's design question), then a
# raw region.  Only what the
# appends touch is written through in the backing file: each slice's first 80 MiB (superblock,
# 64 MiB journal, object map, bitmap, the first data blocks) and the raw region.
SLICE = DEVICE_SIZE
SLICE_BLOCKS = SLICE // measure.BLOCK_SIZE
SLICE_USED = 80 * MiB
RAW_REGION = (len(report.PROTOCOLS) + 1) * SLICE  # + the slice of journal/flush with --inline-max 0
RAW_REGION_SIZE = 64 * MiB
APPEND_DEVICE_SIZE = RAW_REGION + RAW_REGION_SIZE


class Budget:
    """Rounds beyond the minimum run only while the phase's share of the time budget allows."""

    MIN_ROUNDS = 3

    def __init__(self, seconds: float, notes: list[str]) -> None:
        self.seconds, self.notes = seconds, notes

    def phase(self, name: str, share: float, rounds: int):
        allot, t0 = self.seconds * share, time.perf_counter()

        def more(done: int) -> bool:
            """May round number `done` (0-based) start?"""
            if done >= rounds:
                return False
            if done < self.MIN_ROUNDS:
                return True
            spent = time.perf_counter() - t0
            if spent + spent / done > allot:
                self.notes.append(f"{name}: {done} of {rounds} rounds, to stay within the time budget")
                env.log(f"{name}: stopping after {done} rounds (time budget)")
                return False
            return True
        return more


def rotate(tasks: list, r: int) -> list:
    k = r % len(tasks)
    return tasks[k:] + tasks[:k]


class Runner:
    def __init__(self, samples: Samples, notes: list[str]) -> None:
        self.S, self.notes = samples, notes

    def run(self, task: str, rnd: int, fn, *a, **kw) -> dict | None:
        t0 = time.perf_counter()
        try:
            s = fn(*a, **kw)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # a failed workload is a note and a missing sample, not a lost run
            traceback.print_exc()
            self.notes.append(f"{task}, round {rnd}: failed: {type(e).__name__}: {e}")
            return None
        self.S.add(task, rnd, s)
        main = " ".join(f"{k}={v:,.1f}" for k, v in s.items() if k in ("ops_s", "mb_s", "checked_s", "raw_mb_s",
                                                                          "raw_ops_s", "cpus_busy"))
        env.log(f"  r{rnd} {task:<24} {main:<40} ({time.perf_counter() - t0:.1f} s)")
        return s


def phase_append(R: Runner, S_dev: str, mnt: str, B: str, fio: str | None, more, n: int, k: int,
                 payload: bytes) -> None:
    """All configurations open at once, taking turns k appends at a time (turn order rotating),
    so every configuration and baseline of a round sees the same minutes of this noisy host."""
    dev = Device(S_dev)  # one exclusive open; each store configuration gets its own 1 GiB slice
    raw = [measure.RawAppender(S_dev, RAW_REGION, None, payload),
           measure.RawAppender(S_dev, RAW_REGION, RAW_REGION + RAW_REGION_SIZE // 2, payload),
           measure.RawAppender(S_dev, RAW_REGION, None, payload, adjacent=True)]
    try:
        apps: dict[str, measure.Appender] = {}
        for i, (p, b) in enumerate(report.PROTOCOLS):
            apps[f"append:{p}/{b}"] = measure.StoreAppender(dev, S_dev, i * SLICE_BLOCKS, SLICE_BLOCKS, p, b, payload)
        apps["append:journal/flush-i0"] = measure.StoreAppender(dev, S_dev, len(report.PROTOCOLS) * SLICE_BLOCKS,
                                                                SLICE_BLOCKS, "journal", "flush", payload, inline_max=0)
        apps["append:raw"], apps["append:raw2"], apps["append:raw1x8k"] = raw
        apps["append:ext4"] = measure.Ext4Appender(mnt, B, payload)
        names = list(apps)
        # round -1 warms up every path and is not recorded
        for r in itertools.chain([-1], itertools.takewhile(more, itertools.count())):
            m = n if r >= 0 else 2 * k
            t0 = time.perf_counter()
            try:
                for a in apps.values():
                    a.start()
                for j in range(m // k):
                    for name in rotate(names, j + max(r, 0)):
                        apps[name].batch(k)
                out = {name: a.finish() for name, a in apps.items()}
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                traceback.print_exc()
                R.notes.append(f"append round {r}: failed: {type(e).__name__}: {e}")
                continue
            if r < 0:
                continue
            for name, s in out.items():
                R.S.add(name, r, s)
            env.log(f"  r{r} appends ({time.perf_counter() - t0:.1f} s): "
                    + ", ".join(f"{name[7:]} {s['ops_s']:,.0f}/s" for name, s in out.items()))
            if fio:
                R.run("append:fio", r, measure.fio_appends, fio, S_dev, n, RAW_REGION)
    finally:
        for a in raw:
            a.close()
        dev.close()
    # amortised write amplification: exact counts over a long run with its checkpoints (in memory)
    R.run("wa:journal/flush", 0, measure.amortised_wa)
    R.run("wa:journal/flush-i0", 0, measure.amortised_wa, 0)


def phase_seq(R: Runner, A: str, fio: str | None, more, nreads: int, data: bytes) -> None:
    def reads_after_put(r):
        """Random 4 KiB reads of the fresh file, store and raw taking turns (each its own random
        blocks of the file), after one untimed pass over the whole extent so that both find the
        caches below the loop device in the same state; then fio over the same extent."""
        def after(st):
            lo, hi = measure.file_extent(st, "big")
            measure.warm(A, lo, hi)
            idxs, _ = measure.read_plan(st, "big", nreads, seed=1000 + r)
            _, blocks = measure.read_plan(st, "big", nreads, seed=2000 + r)
            R.run("read:store", r, measure.reads_interleaved, st, "big", A, idxs, blocks)
            if fio:
                R.run("read:fio", r, measure.fio_reads, fio, A, lo, hi - lo + 1, nreads, 3000 + r)
            return {}
        return after

    raw_payload = data[:MiB]
    for r in itertools.takewhile(more, itertools.count()):
        tasks = [("seq:put:journal", measure.store_put, (A, "journal", data, raw_payload), {"after": reads_after_put(r)}),
                 ("seq:w1m:journal", measure.store_writes_interleaved, (A, "journal", data, raw_payload), {}),
                 ("seq:put:ordered", measure.store_put, (A, "ordered", data, raw_payload), {})]
        if fio:
            tasks.append(("seq:fio", measure.fio_seq, (fio, A, SEQ_SIZE), {}))
        for task, fn, a, kw in rotate(tasks, r):
            R.run(task, r, fn, *a, **kw)


def phase_crash(R: Runner, more, parent: str, before: str | None = None) -> None:
    """`before`: another checkout whose explorer takes turns with this one (crash_rate_of_tree)."""
    tasks = [(f"crash:{p}/{b}:j{j}", p, b, j) for p, b in report.CRASH_CONFIGS for j in report.CRASH_JOBS]
    if before:
        tasks += [(f"crash-before:{p}/{b}:j{j}", p, b, j) for p, b in report.CRASH_CONFIGS for j in report.CRASH_JOBS]
    for r in itertools.takewhile(more, itertools.count()):
        for task, p, b, j in rotate(tasks, r):
            if task.startswith("crash-before:"):
                R.run(task, r, crash_rate_of_tree, before, p, b, j, parent)
            else:
                R.run(task, r, crash_rate, p, b, j, parent)


def git_state() -> dict:
    """The tree measured: HEAD and the files that differ from it (results depend on the tree)."""
    def git(*a):
        p = subprocess.run(["git", "-C", os.path.dirname(HERE), *a], capture_output=True, text=True)
        return p.stdout if p.returncode == 0 else ""
    changed = [ln[3:] for ln in git("status", "--porcelain", "--", "blkjournal").splitlines() if len(ln) > 3]
    return {"head": git("rev-parse", "--short", "HEAD").strip(), "modified_blkjournal_files": changed}


def render(out: str) -> int:
    """Figures and targets again from saved samples: the measurement stays, the judging follows
    the code (e.g. after a target changed)."""
    pj, pm = os.path.join(out, "results.json"), os.path.join(out, "results.md")
    with open(pj) as fh:
        saved = json.load(fh)
    meta, S = saved["meta"], Samples.from_json(saved["samples"])
    figs = report.figures(bool(meta.get("fio")))
    E = report.evaluate(figs, S)
    T = report.targets(E, load=meta["host"]["loadavg"][0])
    report.write(pj, pm, figs, S, E, T, meta)
    for t in T:
        env.log(f"target {'met   ' if t.met else 'MISSED'} {t.name}: {t.measured}")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds of synced appends (default 7)")
    ap.add_argument("--appends", type=int, default=300, help="synced appends per configuration and round (default 300)")
    ap.add_argument("--turn", type=int, default=5, help="appends per turn when configurations take turns (default 5)")
    ap.add_argument("--seq-rounds", type=int, default=5, help="rounds of the 256 MiB write and reads (default 5)")
    ap.add_argument("--reads", type=int, default=3000, help="random reads per measurement (default 3000)")
    ap.add_argument("--crash-runs", type=int, default=5, help="runs per crash configuration (default 5)")
    ap.add_argument("--budget", type=float, default=540,
                    help="seconds the whole run should take at most (default 540): rounds beyond 3 are dropped "
                         "when a phase would overrun its share (append 40%%, seq 35%%, crash 20%%)")
    ap.add_argument("--only", choices=("append", "seq", "crash"), action="append",
                    help="run only these phases (repeatable); results then hold only their figures")
    ap.add_argument("--out", default=HERE, help="directory for results.json and results.md (default bench/)")
    ap.add_argument("--crash-before", metavar="TREE", help="another checkout (e.g. `git worktree add /tmp/before "
                    "main`) whose explorer takes turns with this one in the crash phase: before/after in one run")
    ap.add_argument("--render", action="store_true", help="measure nothing: judge the samples saved in OUT's "
                    "results.json again with the current targets and rewrite results.json and results.md")
    args = ap.parse_args(argv)
    if args.render:
        return render(args.out)
    if min(args.rounds, args.seq_rounds, args.crash_runs) < 3:
        env.log("note: fewer than 3 repeats: min/median/max will not mean much")
    phases = set(args.only or ("append", "seq", "crash"))

    env.need_root()
    # SIGTERM (e.g. a timeout) unwinds like Ctrl-C: loop devices detached, ext4 unmounted, files removed.
    signal.signal(signal.SIGTERM, _interrupt)
    t_start = time.perf_counter()
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "host": env.host_facts(),
            "rounds": {"append": args.rounds, "seq": args.seq_rounds, "crash": args.crash_runs},
            "n_append": args.appends, "n_read": args.reads, "turn": args.turn, "device_size": DEVICE_SIZE, "seq_size": SEQ_SIZE,
            "notes": [], "git": git_state()}
    fio = env.ensure_fio()
    if fio:
        meta["fio"] = subprocess.run([fio, "--version"], capture_output=True, text=True).stdout.strip()
    else:
        meta["notes"].append("fio could not be installed: its baselines are missing")
    S = Samples()
    R = Runner(S, meta["notes"])
    budget = Budget(args.budget, meta["notes"])
    with contextlib.ExitStack() as stack:
        wd = env.workdir(stack)
        env.log(f"work directory {wd}; writing the backing files")
        for name in ("a.img", "b.img"):
            env.zero_file(os.path.join(wd, name), DEVICE_SIZE)
        env.sparse_file(os.path.join(wd, "s.img"), APPEND_DEVICE_SIZE,
                        [(i * SLICE, SLICE_USED) for i in range(len(report.PROTOCOLS) + 1)] + [(RAW_REGION, RAW_REGION_SIZE)])
        A = env.attach_loop(stack, os.path.join(wd, "a.img"))
        B = env.attach_loop(stack, os.path.join(wd, "b.img"))
        S_dev = env.attach_loop(stack, os.path.join(wd, "s.img"))
        meta["loop_queue"] = env.queue_facts(A)
        mnt = env.mount_ext4(stack, B, os.path.join(wd, "mnt"))
        env.log(f"256 MiB file on {A}, appends on {S_dev}, ext4 on {B} at {mnt}")
        payload = os.urandom(measure.BLOCK_SIZE)
        if "append" in phases:
            t = time.perf_counter()
            env.log("phase append: synced 4 KiB appends")
            phase_append(R, S_dev, mnt, B, fio, budget.phase("append", 0.40, args.rounds), args.appends, args.turn,
                         payload)
            env.log(f"phase append done in {time.perf_counter() - t:.0f} s")
        if "seq" in phases:
            t = time.perf_counter()
            env.log("phase seq: 256 MiB sequential write, random 4 KiB reads")
            # page-aligned, as an application that reads its input with O_DIRECT holds it (and as
            # the raw baseline's buffer is): the store writes it without copying (Device.writev)
            data = measure.aligned_copy(os.urandom(SEQ_SIZE))
            phase_seq(R, A, fio, budget.phase("seq", 0.35, args.seq_rounds), args.reads, data)
            del data
            env.log(f"phase seq done in {time.perf_counter() - t:.0f} s")
        if "crash" in phases:
            t = time.perf_counter()
            env.log("phase crash: states checked per second")
            phase_crash(R, budget.phase("crash", 0.20, args.crash_runs), wd, args.crash_before)
            env.log(f"phase crash done in {time.perf_counter() - t:.0f} s")
    done = lambda task: len(S.by_task.get(task, {}))  # noqa: E731
    meta["rounds"] = {"append": done("append:raw"), "seq": done("seq:put:journal"),
                      "crash": done("crash:journal/flush:j1")}
    meta["seconds"] = time.perf_counter() - t_start
    meta["host_end"] = env.host_facts()
    figs = report.figures(bool(fio))
    E = report.evaluate(figs, S)
    T = report.targets(E, load=meta["host"]["loadavg"][0])
    os.makedirs(args.out, exist_ok=True)
    pj, pm = os.path.join(args.out, "results.json"), os.path.join(args.out, "results.md")
    report.write(pj, pm, figs, S, E, T, meta)
    env.log(f"wrote {pj} and {pm} ({meta['seconds']:.0f} s)")
    for t in T:
        env.log(f"target {'met   ' if t.met else 'MISSED'} {t.name}: {t.measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
