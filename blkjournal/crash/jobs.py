"""Spreading the explorer's segment searches over processes: each process (the caller and forked
workers) searches a contiguous range of segments in order, and one whose range runs out takes
the later part of the range with the most work left.

Why contiguous ranges: consecutive segments in one process share what the process keeps -- a
segment's first check meets the previous segment's last one (checkmemo.py), and neighbouring
crash points walk the same paths of the memo's tries -- so every range boundary is reuse lost.
Handing out runs of segments from one counter (as before) cut the segments into about four runs
per job and cost two jobs about 6 % more work than one (function calls, journal/flush 200 ops),
and its static run sizes left the longer process with 55 % of it.  Here the cuts are only the
first split (one range per job, of equal estimated cost) and the steals, and a steal takes the
later half (by cost) of what is queued, so a process slowed by the machine's other load sheds
work and the processes end within about one segment of each other.

Why not multiprocessing.Pool: a pool's start-up (its handler threads, a task queue fed one
segment at a time) and its idle parent cost more than a short run's whole search -- the 200-op
ordered run checks in well under a second, and every second phase of a run is shorter still.
Here `jobs` processes search, the caller being one of them (its memo tables stay warm across
phases), the workers are forked with the explorer's context already in place, and each result
crosses one pipe.  Which process searches a segment changes nothing it finds.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import traceback

from ..errors import BlkError


def share_out(search, cost: list[float], jobs: int):
    """Yield search(i) for every i of range(len(cost)), searched by `jobs` processes (this one
    included), in the order they finish.  `cost[i]`: segment i's estimated work (only its
    proportions matter).  An exception in a worker is raised here (with its traceback)."""
    reap()  # (those of an earlier call, long gone by now)
    ctx = multiprocessing.get_context("fork")
    ranges = ctx.Array("q", [x for r in split(cost, jobs) for x in r])  # [lo0, hi0, lo1, hi1, ...]
    prefix = [0.0]
    for c in cost:
        prefix.append(prefix[-1] + c)
    procs, conns, done = [], [], False
    try:
        for k in range(1, jobs):
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, args=(search, ranges, prefix, k, w), daemon=True)
            p.start()
            w.close()
            procs.append(p)
            conns.append(r)
        while True:
            i = take(ranges, prefix, 0)
            if i is None:
                break
            yield search(i)
            for c in list(conns):  # what the workers finished meanwhile
                while c in conns and c.poll():
                    got = _receive(c, conns)
                    if got is not None:
                        yield got
        while conns:  # this process is done: wait for the workers' last segments
            for c in multiprocessing.connection.wait(conns):
                got = _receive(c, conns)
                if got is not None:
                    yield got
        done = True
    finally:
        for p in procs:
            if done:  # it said "done" and exits by itself: reaped later (reap()), not waited for here
                _exiting.append(p)
                continue
            if p.is_alive():
                p.terminate()
            p.join()


# Workers that said "done" and are exiting.  A worker's exit (its finalizers, the kernel freeing
# its copy-on-write pages) took up to 6 ms, which the caller spent waiting with its own work
# (the report, the second phases) still to do.
_exiting: list = []


def reap() -> None:
    """Wait for the workers share_out left exiting (so their CPU time is counted as children's)."""
    while _exiting:
        _exiting.pop().join()


def split(cost: list[float], jobs: int) -> list[tuple[int, int]]:
    """range(len(cost)) cut into `jobs` contiguous (lo, hi) ranges of about equal total cost (a
    range may be empty when there are fewer items than jobs)."""
    total, out, lo, acc = sum(cost), [], 0, 0.0
    for k in range(1, jobs):
        hi = lo
        while hi < len(cost) and acc + cost[hi] / 2 <= total * k / jobs:  # its middle before the cut
            acc += cost[hi]
            hi += 1
        out.append((lo, hi))
        lo = hi
    out.append((lo, len(cost)))
    return out


def take(ranges, prefix: list[float], k: int) -> int | None:
    """The next item process k searches: the first of its own range, else the first of the later
    part it takes from the range with the most cost queued (that part becomes its range).  None:
    nothing is left anywhere."""
    with ranges.get_lock():
        lo, hi = ranges[2 * k], ranges[2 * k + 1]
        if lo < hi:
            ranges[2 * k] = lo + 1
            return lo
        jobs = len(ranges) // 2
        v = max(range(jobs), key=lambda j: prefix[ranges[2 * j + 1]] - prefix[ranges[2 * j]])
        lo, hi = ranges[2 * v], ranges[2 * v + 1]
        if lo >= hi:
            return None
        m = _cut(prefix, lo, hi)
        ranges[2 * v + 1] = m
        ranges[2 * k], ranges[2 * k + 1] = m + 1, hi
        return m


def _cut(prefix: list[float], lo: int, hi: int) -> int:
    """Where a steal cuts [lo, hi): the last m whose part [m, hi) costs at least [lo, m) -- the
    thief takes the later half or a little more (all of a range of one item)."""
    m = hi - 1
    while m > lo and prefix[hi] - prefix[m] < prefix[m] - prefix[lo]:
        m -= 1
    return m


def _receive(c, conns: list):
    try:
        kind, payload = c.recv()
    except EOFError:  # the worker died without a word
        conns.remove(c)
        raise BlkError("an explorer worker process died") from None
    if kind == "done":
        conns.remove(c)
        return None
    if kind == "error":
        conns.remove(c)
        raise RuntimeError(f"explorer worker failed:\n{payload}")
    return payload


def _worker(search, ranges, prefix: list[float], k: int, w) -> None:
    try:
        while True:
            i = take(ranges, prefix, k)
            if i is None:
                break
            w.send(("result", search(i)))
        w.send(("done", None))
    except BaseException:  # noqa: BLE001 -- handed to the parent, which raises it
        w.send(("error", traceback.format_exc()))
    finally:
        w.close()


def fork_map(fn, items: list) -> list:
    """[fn(x) for x in items], the first in this process and each other in a forked child of its
    own, side by side; results in the order of `items`.  An exception in a child is raised here:
    the same exception when it can cross the pipe, else a RuntimeError with its traceback."""
    ctx = multiprocessing.get_context("fork")
    procs, conns, done = [], [], False
    try:
        for x in items[1:]:
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_one, args=(fn, x, w), daemon=True)
            p.start()
            w.close()
            procs.append(p)
            conns.append(r)
        out = [fn(items[0])] if items else []
        for c in conns:
            try:
                kind, payload = c.recv()
            except EOFError:
                raise BlkError("an explorer worker process died") from None
            if kind == "raise":
                raise payload
            if kind == "error":
                raise RuntimeError(f"explorer worker failed:\n{payload}")
            out.append(payload)
        done = True
        return out
    finally:
        for p in procs:
            if not done and p.is_alive():  # (a child that handed its result back exits by itself: a
                p.terminate()  # signal then could meet it still in its send)
            p.join()


def _one(fn, x, w) -> None:
    import pickle

    try:
        got = ("result", fn(x))
    except BaseException as e:  # noqa: BLE001 -- handed to the parent, which raises it
        got = ("raise", e)
        try:
            pickle.loads(pickle.dumps(e))
        except Exception:  # noqa: BLE001
            got = ("error", traceback.format_exc())
    try:
        w.send(got)
    finally:
        w.close()
