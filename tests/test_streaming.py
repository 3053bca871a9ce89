"""Streaming writes and short reads cost per run, not per block (issue 12).

Exact counts: a put of 3000 fresh blocks under journal/flush on an empty store reaches the device
as 3 data writes (runs of MAX_RUN = 1024, 1024 and 952 blocks: the allocator hands out one
contiguous run) + 1 journal transaction, and one flush at sync.  The run allocator hands out
exactly the blocks the per-block one does; a file that keeps growing seals one or two used-list
blocks per operation (a full chain gets a new head), not its whole chain; a 4 KiB read of a
large file walks only the map entries that cover it.
"""

from __future__ import annotations

import copy
import os
import random

import pytest

from blkjournal.blockmap import BlockMap
from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.format import FANOUT, ROOT_SLOTS, UL_SLOTS
from blkjournal.freelist import Freelist
from blkjournal.protocols import MAX_RUN
from blkjournal.store import Store

from devutil import WriteLogDevice


def _alloc_both(a: Freelist, r: Freelist, n: int):
    """(a.alloc(n), r.alloc_runs(n) as blocks): the blocks each hands out, or the class of its refusal."""
    try:
        want = a.alloc(n)
    except Exception as e:  # noqa: BLE001 - the same refusal is the point
        want = type(e)
    try:
        got = [b for lo, c in r.alloc_runs(n) for b in range(lo, lo + c)]
    except Exception as e:  # noqa: BLE001
        got = type(e)
    return want, got


def test_alloc_runs_hands_out_what_alloc_does():
    rnd = random.Random(12)
    for _ in range(200):
        nb = rnd.randrange(20, 3000)
        a = Freelist(nb, 1, 1)
        for b in rnd.sample(range(nb), rnd.randrange(nb // 2)):
            a.mark_used(b)
        a.hint = rnd.randrange(nb + 2)
        a.held = {b for b in range(nb) if not a.used(b) and rnd.random() < 0.1}
        r = copy.deepcopy(a)
        for _ in range(5):
            n = rnd.choice((1, 1, rnd.randrange(1, 80)))  # one block: the fast path of an append
            want, got = _alloc_both(a, r, n)
            assert got == want
            assert (r.bits, r.hint, r.nfree, r.dirty) == (a.bits, a.hint, a.nfree, a.dirty)


def test_alloc_runs_follows_the_held_blocks_as_they_change():
    """alloc_runs keeps the held blocks in order between allocations (Freelist._held_sorted):
    blocks held, given back one by one or all at once in between must be what it skips, as
    the per-block allocator (which asks the set) does."""
    rnd = random.Random(5)
    for _ in range(100):
        nb = rnd.randrange(50, 2000)
        a = Freelist(nb, 1, 1)
        for b in rnd.sample(range(nb), rnd.randrange(nb // 2, nb - 10)):
            a.mark_used(b)
        a.hint = rnd.randrange(nb)
        r = copy.deepcopy(a)
        for _ in range(12):
            step = rnd.random()
            used = [b for b in range(nb) if a.used(b)]
            if step < 0.5 and used:  # an operation releases blocks: held until its checkpoint
                for b in rnd.sample(used, min(len(used), rnd.randrange(1, 30))):
                    a.hold(b)
                    r.hold(b)
            elif step < 0.7 and a.held:
                back = rnd.sample(sorted(a.held), rnd.randrange(1, len(a.held) + 1))
                a.unhold(back)
                r.unhold(back)
            elif step < 0.8:
                a.unhold_all()
                r.unhold_all()
            want, got = _alloc_both(a, r, rnd.choice((1, rnd.randrange(1, 40))))
            assert got == want
            assert not set(got if isinstance(got, list) else ()) & r.held
            assert (r.bits, r.hint, r.nfree, r.held) == (a.bits, a.hint, a.nfree, a.held)


@pytest.mark.parametrize("protocol", ["journal", "ordered"])
def test_big_put_is_one_write_per_run(image, protocol):
    n = 3000
    with Device(image, create_size=64 << 20) as dev:
        st = Store.mkfs(dev, protocol, "flush")
        dev.counters.reset()
        data = bytes(random.Random(1).getrandbits(8) for _ in range(256)) * (n * BLOCK_SIZE // 256)
        st.put("f", data)
        st.sync()
        c = dev.counters
        runs = -(-n // MAX_RUN)
        if protocol == "journal":  # data runs + one transaction; one flush
            assert (c.writes, c.flushes) == (runs + 1, 1)
        else:  # A: used-list chain (7 fresh blocks, contiguous), B: data runs + 12 map nodes
            # (contiguous, one run), C: origin, object map entry (one run each); sync: bitmap
            assert (c.writes, c.flushes) == (1 + runs + 1 + 2 + 1, 2)
        assert st.read("f") == data
        st.close()
    with Device(image) as dev:
        assert Store.open(dev).read("f") == data


@pytest.mark.parametrize("protocol", ["journal", "ordered"])
def test_growing_file_seals_only_its_head(image, protocol):
    """Each 300-block append adds entries to the head (or a new head) only: the used-list blocks
    an op seals stay at 1-3 while the chain grows to 6 blocks."""
    with WriteLogDevice(image, create_size=64 << 20) as dev:
        st = Store.mkfs(dev, protocol, "flush")
        st.create("g")
        per_op = []
        for i in range(10):
            dev.log.clear()
            before = dict(st.protocol.images) if protocol == "journal" else {}
            st.write("g", i * 300 * BLOCK_SIZE, bytes([i + 1]) * (300 * BLOCK_SIZE))
            st.sync()  # (journal: the write's running transaction is committed here)
            if protocol == "ordered":  # used-list blocks written (copy-on-write: each to a fresh block)
                per_op.append(len({b for b, _, role in dev.log if "used list" in role}))
            else:  # used-list blocks the transaction changed
                per_op.append(sum(st.protocol.images[b] != before.get(b) for b in st.lookup("g").ul.chain))
        # new entries go to the head (a new head when it is full: 2); under ordered the head that
        # lists the map node the op copies is rewritten too (3).  Links added at the tail instead
        # reseal the chain from its tail: 1, 2, 2, 3, 3, 4, 5, 5, 6, 6.
        assert per_op == {"journal": [1, 2, 1, 2, 1, 2, 2, 1, 2, 1],
                          "ordered": [1, 2, 1, 3, 1, 3, 3, 1, 3, 1]}[protocol]
        f = st.lookup("g")
        assert len(f.ul.chain) == -(-(3000 + len(f.map.nodes)) // UL_SLOTS)
        st.close()
    with Device(image) as dev:
        st = Store.open(dev)
        assert st.read("g") == b"".join(bytes([i + 1]) * (300 * BLOCK_SIZE) for i in range(10))


def test_entries_in_is_the_range_of_data_entries():
    class Edit:  # the map's view of an operation, reduced to allocation
        def __init__(self):
            self.next = 10 ** 6

        def new_node(self, m):
            from blkjournal.format import MapNode
            self.next += 1
            m.nodes[self.next] = MapNode()
            return self.next

        def writable(self, m, b):
            return b

        def touch(self, node):
            pass

    m, e = BlockMap(), Edit()
    rnd = random.Random(3)
    idxs = sorted(rnd.sample(range(ROOT_SLOTS * FANOUT * 3), 400))
    for k, i in enumerate(idxs):
        m.set(i, 1000 + k, k, e)
    m.set_run(5, 50000, list(range(700)), e)
    assert m.height == 2
    every = list(m.data_entries())
    want = {i: (1000 + k, k) for k, i in enumerate(idxs)} | {5 + j: (50000 + j, j) for j in range(700)}
    assert every == [(i, *want[i]) for i in sorted(want)]  # (data_entries is entries_in's whole range)
    for _ in range(200):
        lo = rnd.randrange(ROOT_SLOTS * FANOUT * 3)
        hi = lo + rnd.choice([0, 1, 5, 300, 70000])
        assert list(m.entries_in(lo, hi)) == [x for x in every if lo <= x[0] <= hi]


def test_set_run_returns_what_it_replaced():
    class Edit:
        def new_node(self, m):
            from blkjournal.format import MapNode
            b = 900000 + len(m.nodes)
            m.nodes[b] = MapNode()
            return b

        def writable(self, m, b):
            return b

        def touch(self, node):
            pass

    m = BlockMap()
    e = Edit()
    for i in range(0, 600, 3):
        m.set(i, 10 + i, 1, e)
    old = m.set_run(100, 5000, [7] * 400, e)
    assert old == [10 + i for i in range(0, 600, 3) if 100 <= i < 500]
    assert [m.lookup(i) for i in (99, 100, 499, 500)] == [(10 + 99, 1), (5000, 7), (5399, 7), (0, 0)]


def test_bulk_data_records_are_the_packed_records():
    from blkjournal.journal import DATA, pack_data
    rnd = random.Random(4)
    for n in (0, 1, 63, 64, 65, 5000):
        data = [(rnd.getrandbits(64), rnd.getrandbits(32)) for _ in range(n)]
        assert pack_data(data) == b"".join(DATA.pack(b, c) for b, c in data)


def test_data_crcs_runs_are_their_pairs():
    """An operation's data crcs are kept as runs (journal.DataCrcs); as a list of pairs, and
    packed, they are exactly the pairs of every block of every run, in block order."""
    from array import array

    from blkjournal.journal import DATA, DataCrcs, pack_data
    from blkjournal.op import Op
    rnd = random.Random(6)
    for _ in range(30):
        op = Op("w", cow=False)
        pairs = []
        for first in rnd.sample(range(0, 1 << 30, 1 << 12), rnd.randrange(0, 4)):
            crcs = array("I", (rnd.getrandbits(32) for _ in range(rnd.choice((1, 2, 63, 300)))))
            op.data[first], op.crcs[first] = bytes(len(crcs) * BLOCK_SIZE), crcs
            pairs += [(first + k, c) for k, c in enumerate(crcs)]
        pairs.sort()
        got = op.data_crcs()
        assert isinstance(got, DataCrcs) and len(got) == len(pairs) and list(got) == pairs == got
        assert got[:1] == pairs[:1]
        assert pack_data(got) == b"".join(DATA.pack(b, c) for b, c in pairs)


@pytest.mark.parametrize("barrier", ["flush", "fua"])
def test_data_issued_early_is_the_request_stream_commit_issues(tmp_path, monkeypatch, barrier):
    """A journal write of EARLY_MIN blocks or more issues its data before its crcs, from the
    Device's worker thread, when a bound on its transaction fits the log; its transaction may
    still be in flight when the write returns.  Every request (block, length, FUA flag, bytes) and
    every flush, in the order the device got them, is what the same workload issues with the early
    path off -- on a small log, so that large writes both fit (early) and do not (a checkpoint
    first, then the data, as before).  With the running transaction off (GROUP_MAX 0: every
    streaming write commits a transaction of its own, the order before group commit); group
    commit's own stream: test_group_commit_*."""
    from bench.requests import request_log
    import blkjournal.protocols as P

    taken = {"early": 0, "no-fit": 0, "threaded": 0}
    issue = P.JournalProtocol.issue_data_early

    def counted(self, op, f, need):
        r = issue(self, op, f, need)
        if sum(len(v) for v in op.data.values()) // BLOCK_SIZE >= P.EARLY_MIN:
            taken["early" if self._early is not None else "no-fit"] += 1
        taken["threaded"] += r or (self._early is not None and self._early.staged and self._early.last is not None)
        return r

    monkeypatch.setattr(P.JournalProtocol, "issue_data_early", counted)
    monkeypatch.setattr(P, "GROUP_MAX", 0)
    early = request_log(str(tmp_path / "a.img"), "journal", barrier, 5, 150)
    monkeypatch.setattr(P, "EARLY_MIN", 1 << 40)
    plain = request_log(str(tmp_path / "b.img"), "journal", barrier, 5, 150)
    assert taken["early"] >= 20 and taken["no-fit"] >= 5 and taken["threaded"] == taken["early"], taken
    assert len(early) == len(plain) and early == plain


def test_a_failed_background_write_stops_the_stream(image):
    """A data write issued early that fails is raised by the operation's commit, and nothing is
    issued after it: not the rest of its data, not its transaction."""
    class Failing(Device):
        fail_at, issued = None, 0

        def _pwrite(self, block, bufs, fua, *rest, **kw):
            self.issued += 1
            if self.issued == self.fail_at:
                raise OSError(5, "planted EIO")
            return super()._pwrite(block, bufs, fua, *rest, **kw)

    with Failing(image, create_size=64 << 20) as dev:
        st = Store.mkfs(dev, "journal", "flush")
        st.create("f")
        dev.fail_at = dev.issued + 2  # the second of the write's three data runs
        with pytest.raises(OSError, match="planted EIO"):
            st.write("f", 0, bytes(3000 * BLOCK_SIZE))
        assert dev.issued == dev.fail_at  # neither the third run nor the transaction


def test_a_failed_background_write_leaves_the_counters_exact(image):
    """The writes queued behind a failed background write are never issued, so they are not
    counted either: the counters say exactly what reached the device (counted when queued, a
    refused write is taken back when the wait raises)."""
    class Failing(Device):
        fail_at, issued, bytes_issued = None, 0, 0

        def _pwrite(self, block, bufs, fua, *rest, **kw):
            self.issued += 1
            if self.issued == self.fail_at:
                raise OSError(5, "planted EIO")
            self.bytes_issued += sum(len(b) for b in bufs)
            return super()._pwrite(block, bufs, fua, *rest, **kw)

    with Failing(image, create_size=64 << 20) as dev:
        st = Store.mkfs(dev, "journal", "flush")
        st.create("f")
        dev.fail_at = dev.issued + 1  # the first of the write's three data runs: the other two are refused
        with pytest.raises(OSError, match="planted EIO"):
            st.write("f", 0, bytes(3000 * BLOCK_SIZE))
        assert dev.issued == dev.fail_at
        # the failed write counts (it was issued: MAX_RUN blocks), the two refused ones do not
        assert dev.counters.writes == dev.issued
        assert dev.counters.bytes_written == dev.bytes_issued + MAX_RUN * BLOCK_SIZE


def test_a_write_asked_to_start_is_issued_before_writev_background_returns(image):
    """writev_background(start=True) returns only once the worker has taken its write up, the
    write before it having completed: the caller then computes while the write runs, and the
    worker never waits for a CPU the caller holds.  Without `start` it returns at once."""
    import threading

    release = threading.Event()
    entered = []

    class Slow(Device):
        def _pwrite(self, block, bufs, fua, *rest, **kw):
            entered.append(block)
            if block == 10:
                release.wait(10)  # the first write is held in flight
            return super()._pwrite(block, bufs, fua, *rest, **kw)

    with Slow(image, create_size=8 << 20) as dev:
        dev.writev_background(10, [bytes(BLOCK_SIZE)])
        dev.writev_background(11, [bytes(BLOCK_SIZE)])  # queued behind it: returns at once
        assert entered in ([], [10])
        threading.Timer(0.2, release.set).start()
        dev.writev_background(12, [bytes(BLOCK_SIZE)], start=True)
        assert release.is_set() and entered[:2] == [10, 11] and dev.queued() == 0
        dev.wait()
        assert dev.counters.writes == 3


def test_a_streaming_writes_transaction_waits_in_the_queue_behind_its_data(image):
    """Streaming writes' running transaction is queued behind their data before the caller waits
    (here the sync's), so the worker, woken by the last data write's completion, issues it at
    once: when that write returns, the transaction is already the next request in the worker's
    queue (no hop through the caller, whose wake-up would stand between the two requests); behind
    each earlier write waits the next one's data.  A FUA transaction stays synchronous."""
    import time

    seen = []

    class Watching(Device):
        def _pwrite(self, block, bufs, fua, buf=None, n=None, **kw):
            super()._pwrite(block, bufs, fua, buf, n, **kw)
            if n == 256 * BLOCK_SIZE:  # the data of a 1 MiB write: held in flight a while, what waits next?
                until = time.monotonic() + 2
                while not self._worker.pending and time.monotonic() < until:
                    time.sleep(0.001)
                seen.append([r.block for r in list(self._worker.pending)[:1]])

    with Watching(image, create_size=64 << 20) as dev:
        st = Store.mkfs(dev, "journal", "flush")
        st.create("f")
        area = st.protocol.journal.area
        for k in range(4):
            st.write("f", k << 20, os.urandom(1 << 20))
        st.sync()
    assert len(seen) == 4
    log = range(area, area + st.sb.journal_blocks)
    assert all(len(q) == 1 for q in seen) and [q[0] in log for q in seen] == [False, False, False, True], seen


def test_writes_queued_on_a_device_never_closed_are_issued_at_exit(tmp_path):
    """The worker thread is a daemon (an unclosed device cannot keep the interpreter from
    exiting), so at exit the writes it still holds are drained, not dropped."""
    import subprocess
    import sys

    img = tmp_path / "x.img"
    code = f"""if True:
        import time
        from blkjournal.device import Device
        class Slow(Device):
            def _pwrite(self, *a, **kw):
                time.sleep(0.3)  # still in flight when the interpreter exits
                return super()._pwrite(*a, **kw)
        dev = Slow({str(img)!r}, create_size=1 << 20)
        dev.writev_background(3, [b"x" * {BLOCK_SIZE}])
    """
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd(), timeout=60)
    with open(img, "rb") as f:
        f.seek(3 * BLOCK_SIZE)
        assert f.read(BLOCK_SIZE) == b"x" * BLOCK_SIZE


def test_a_forked_child_does_not_wait_for_the_parents_writes(image):
    """A child forked while a background write is in flight (the explorer and the bench fork
    workers) does not wait for it: the thread issuing it is the parent's, so the child would
    hang.  The parent's write still completes."""
    import signal
    import threading

    go = threading.Event()

    class Slow(Device):
        def _pwrite(self, block, bufs, fua, *rest, **kw):
            go.wait(10)  # held in flight until the child has run
            return super()._pwrite(block, bufs, fua, *rest, **kw)

    with Slow(image, create_size=8 << 20) as dev:
        h = dev.writev_background(10, [bytes(BLOCK_SIZE)])
        assert h is not None and dev._inflight
        pid = os.fork()
        if pid == 0:  # the child: any call on the device first waits for what is in flight
            signal.alarm(5)
            try:
                dev.read(3)
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        go.set()
        dev.wait()
        assert os.waitstatus_to_exitcode(status) == 0, "the child hung on the parent's write"
        assert dev.counters.writes == 1


def test_page_aligned_memory_is_written_without_a_copy(image):
    """O_DIRECT can write from page-aligned memory as it is: a write too large to stage (more
    than STREAM_MAX, which waits for its data) is written from an mmap with neither of the
    device's copy buffers grown and no staging ring made; the same bytes from a bytes object are
    copied by the worker.  A streaming write of at most STREAM_MAX is staged -- copied once, by
    the caller, into the ring the worker writes from as it is -- whatever its memory."""
    import mmap

    from blkjournal.device import STAGE_BYTES
    from blkjournal.protocols import STREAM_MAX

    big = STREAM_MAX + (1 << 20)
    payload = random.Random(2).randbytes(big)
    m = mmap.mmap(-1, len(payload))
    m.write(payload)
    with Device(image, create_size=64 << 20) as dev:
        Store.mkfs(dev, "journal", "flush").close()
    with Device(image) as dev:  # fresh buffers (mkfs's blank journal write grew this one)
        st = Store.open(dev)
        st.create("f")
        size = len(dev._buf._map)  # (grown by recovery's reads)
        st.write("f", 0, memoryview(m))  # issued early: from the worker thread, from the caller's memory
        st.sync()
        assert len(dev._buf._map) == size and len(dev._worker_buf._map) < 64 * BLOCK_SIZE  # (transactions only)
        assert dev._ring is None
        st.write("f", big, memoryview(m)[:1 << 20])  # staged: copied into the ring
        st.write("f", big + (1 << 20), memoryview(m)[:64 * BLOCK_SIZE])
        st.sync()
        assert len(dev._buf._map) == size and len(dev._worker_buf._map) < 64 * BLOCK_SIZE
        assert dev._ring is not None and len(dev._ring._map) == STAGE_BYTES
        assert st.read("f", 0, len(payload)) == payload
        assert st.read("f", big, 1 << 20) == payload[:1 << 20]
        st.write("f", 0, payload)
        st.sync()
        assert len(dev._worker_buf._map) >= 1024 * BLOCK_SIZE  # (copied by the worker, a run at a time)
        st.close()


def test_group_commit_crash_states_are_legal_and_a_lost_data_crc_is_caught(tmp_path):
    """The `stream` workload's runs of streaming writes join running transactions (its stream has
    transactions of several writes, and checkpoints), every crash state of it is legal, and the
    same run with a joining write's data crcs left out of the group (mutant
    journal-group-omits-joined-data) has illegal ones: the explorer sees the group."""
    from blkjournal.crash.explore import crashtest
    from blkjournal.crash.image import Overlay
    from blkjournal.crash.workload import NAMED, run
    from tests.mutants import applied, by_name

    class Roles(Overlay):
        def write(self, block, data, *, fua=False, role=""):
            roles.append(role)
            super().write(block, data, fua=fua, role=role)

    roles: list[str] = []
    run(Store.mkfs(Roles(unit=BLOCK_SIZE, nblocks=1024), "journal", "flush"), NAMED["stream"](0))
    groups = [r for r in roles if r.startswith("journal txn") and " ops: " in r]
    assert len(groups) >= 5 and sum(r.startswith("journal superblock") for r in roles) >= 5, roles
    res, _ = crashtest(str(tmp_path), protocol="journal", barrier="flush", workload="stream", seed=0, jobs=1)
    assert res.illegal == 0 and res.coverage == 1.0 and res.states_checked > 100
    with applied(by_name("journal-group-omits-joined-data")):
        bad, _ = crashtest(str(tmp_path), protocol="journal", barrier="flush", workload="stream", seed=0, jobs=1,
                           first_failure=True)
    assert bad.illegal > 0
