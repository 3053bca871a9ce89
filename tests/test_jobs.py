"""crash/jobs.py's hand-out of segments: contiguous ranges, one per job, and steals of the later
half of the most loaded range, so consecutive segments stay in one process (checkmemo.py, the
memo's tries) and no process idles while another has work queued."""

import multiprocessing
import os
import time

from blkjournal.crash.jobs import share_out, split, take


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
