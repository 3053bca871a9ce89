"""crash/jobs.py's hand-out of segments: contiguous ranges, one per job, and steals of the later
half of the most loaded range, so consecutive segments stay in one process (checkmemo.py, the
memo's tries) and no process idles while another has work queued."""

import multiprocessing
import os
import time

import multiprocessing.util

import pytest

from blkjournal.crash import jobs
from blkjournal.crash.jobs import share_out, split, take
from blkjournal.crash.workload import ModelStates, model_states, random_workload


def test_split_cuts_contiguous_ranges_of_equal_cost():
    assert split([1] * 10, 2) == [(0, 5), (5, 10)]
    assert split([8, 1, 1, 1, 1, 1, 1, 1, 1], 2) == [(0, 1), (1, 9)]  # a heavy first item is a half alone
    assert split([3, 3, 3], 3) == [(0, 1), (1, 2), (2, 3)]
    assert split([1], 2) == [(0, 1), (1, 1)] and split([], 3) == [(0, 0), (0, 0), (0, 0)]


def _ranges(cost, jobs):
    prefix = [0]
    for c in cost:
        prefix.append(prefix[-1] + c)
    return multiprocessing.get_context("fork").Array("q", [x for r in split(cost, jobs) for x in r]), prefix


def test_a_process_takes_its_own_range_in_order_then_the_later_half_of_the_fullest():
    ranges, prefix = _ranges([1] * 12, 2)  # [0, 6) and [6, 12)
    assert [take(ranges, prefix, 0) for _ in range(6)] == [0, 1, 2, 3, 4, 5]
    assert take(ranges, prefix, 1) == 6
    # process 0 is out of work: it takes the later half of [7, 12) -- [9, 12), first to last
    assert take(ranges, prefix, 0) == 9
    assert list(ranges) == [10, 12, 7, 9]
    assert [take(ranges, prefix, 1) for _ in range(2)] == [7, 8]
    assert take(ranges, prefix, 0) == 10
    assert take(ranges, prefix, 1) == 11  # a range of one item is taken whole
    assert take(ranges, prefix, 0) is None and take(ranges, prefix, 1) is None


def test_steals_follow_cost_not_count():
    ranges, prefix = _ranges([1, 1, 1, 1, 1, 1, 1, 1, 20, 1], 2)
    assert list(ranges) == [0, 8, 8, 10]  # the heavy item and its neighbour weigh as much as the rest
    assert take(ranges, prefix, 1) == 8
    assert take(ranges, prefix, 1) == 9
    assert take(ranges, prefix, 1) == 4  # the later half of [0, 8), not of what remains of its own range
    assert list(ranges) == [0, 4, 5, 8]


def _search(parent, mine: float, theirs: float):
    def search(i):
        time.sleep(mine if os.getpid() == parent else theirs)
        return i, os.getpid()
    return search


def _jumps(got) -> int:
    """How often a process went on to another item than the next one (results cross the pipe in
    the order they were searched)."""
    n = 0
    for pid in {pid for _, pid in got}:
        order = [i for i, p in got if p == pid]
        n += sum(b != a + 1 for a, b in zip(order, order[1:]))
    return n


def test_every_segment_once_and_consecutive_ones_in_one_process():
    n = 40
    got = list(share_out(_search(os.getpid(), 0.005, 0.005), [1] * n, 2))
    assert sorted(i for i, _ in got) == list(range(n))  # each exactly once
    assert _jumps(got) <= 3  # two halves, a steal or two at the end: not a run every few segments


def test_a_slow_process_sheds_work():
    n = 40
    got = list(share_out(_search(os.getpid(), 0.0, 0.02), [1] * n, 2))  # the worker slowed by other load
    assert sorted(i for i, _ in got) == list(range(n))
    assert sum(p == os.getpid() for _, p in got) > n // 2 + 5  # this process took over much of its half


_registered = []


def test_a_worker_that_said_done_is_not_waited_for():
    """share_out hands back the last result without waiting for the worker to exit (its exit ran
    up to 6 ms: finalizers, the kernel freeing its copy-on-write pages); reap() joins it later."""
    ctx = multiprocessing.get_context("fork")
    parent, started, gate = os.getpid(), ctx.Event(), ctx.Event()

    def search(i):
        if os.getpid() == parent:
            started.wait(30)  # the worker has begun (and taken its first item)
        elif not _registered:  # the worker's exit waits for the gate (multiprocessing runs this at exit)
            _registered.append(multiprocessing.util.Finalize(None, gate.wait, args=(5,), exitpriority=10))
            started.set()
        return i

    jobs.reap()  # (the workers of the tests before)
    got = list(share_out(search, [1] * 8, 2))
    workers = list(jobs._exiting)
    try:
        assert sorted(got) == list(range(8))
        assert len(workers) == 1 and workers[0].is_alive()  # still in its exit: not joined
    finally:
        gate.set()
        jobs.reap()
    assert not jobs._exiting and workers[0].exitcode == 0


def test_models_are_made_by_the_job_that_judges_them_and_equal_the_list():
    """explore's models are made on first use (after the fork), in order: a job whose range ends
    part-way makes only the states up to there, and every state is model_states' own."""
    ops = random_workload(3, 120)
    initial = {"f0": b"abc", "f9": bytes(5000)}
    for init in (None, initial):
        want = model_states(ops, init)
        lazy = ModelStates(ops, init)
        assert len(lazy) == len(want) == len(ops) + 1
        assert lazy[40] == want[40] and len(lazy._made) == 41  # nothing past what was asked for
        assert lazy[3] == want[3] and lazy[-1] == want[-1] and lazy[10:15] == want[10:15]
        assert [lazy[k] for k in range(len(lazy))] == want and list(lazy) == want
        with pytest.raises(IndexError):
            lazy[len(want)]
