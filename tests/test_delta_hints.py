"""Delta hints (journal.delta_in): a commit takes a metadata block's records from the 64-byte
chunks the object that packed it knows it changed, proven against the whole-block delta.  The
records, and so every byte the store writes, must be exactly what comparing whole blocks gives;
the suite runs with BLKJOURNAL_STRICT_HINTS=1 (conftest), so a hint that leaves out a changed
chunk fails whatever test made it.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from blkjournal import journal, protocols
from blkjournal.crash.image import Overlay
from blkjournal.device import BLOCK_SIZE
from blkjournal.journal import HintStats, delta, delta_in
from blkjournal.store import Store


def test_delta_in_is_delta_for_any_superset_of_the_changed_chunks():
    rnd = random.Random(5)
    for _ in range(300):
        old = bytearray(rnd.randbytes(BLOCK_SIZE))
        new = bytearray(old)
        for _ in range(rnd.randrange(0, 6)):
            o = rnd.randrange(BLOCK_SIZE)
            new[o:o + rnd.randrange(1, 200)] = rnd.randbytes(200)[:BLOCK_SIZE - o]
        old, new = bytes(old), bytes(new[:BLOCK_SIZE])
        need = {o for o, buf in delta(old, new) for o in range(o, o + len(buf), 64)}
        extra = set(rnd.sample(range(0, BLOCK_SIZE, 64), rnd.randrange(0, 10)))
        assert delta_in(old, new, sorted(need | extra)) == delta(old, new)


def test_a_hint_that_misses_a_changed_chunk_is_refused(monkeypatch):
    old = bytes(BLOCK_SIZE)
    new = old[:100] + b"x" + old[101:3000] + b"y" + old[3001:]
    with pytest.raises(AssertionError, match="leaves out a changed chunk"):
        delta_in(old, new, [64])
    monkeypatch.setenv(journal.STRICT_HINTS_ENV, "0")
    assert delta_in(old, new, [64]) is None  # the commit then compares the whole block
    assert delta_in(old, new, [64, 2944]) == delta(old, new)


def _appending_store():
    dev = Overlay(nblocks=1 << 16, unit=BLOCK_SIZE)
    st = Store.mkfs(dev, "journal", "flush")
    st.create("log")
    st.sync()
    return st


def test_a_synced_append_takes_all_five_deltas_from_hints():
    """A 4 KiB append to a file of a few hundred blocks changes five metadata blocks in place
    (bitmap, object map, origin, used-list head, map leaf): each one's records come from its
    hint, none from comparing the whole block."""
    st = _appending_store()
    for i in range(130):
        st.write("log", i * BLOCK_SIZE, bytes([i]) * BLOCK_SIZE)
        st.sync()
    h, m = HintStats.hinted, HintStats.missed
    for i in range(130, 250):  # (one map leaf, one used-list block: nothing allocated but data)
        st.write("log", i * BLOCK_SIZE, bytes([i % 256]) * BLOCK_SIZE)
        st.sync()
        assert (HintStats.hinted - h, HintStats.missed - m) == (5, 0), i
        h = HintStats.hinted


def _workload(st: Store, rnd: random.Random, have: dict) -> None:
    """Creates, appends, overwrites, puts, truncates, removes, syncs: every kind of metadata edit
    (`have`: file -> size, kept across calls)."""
    def write(name):
        n = rnd.choice([1, 100, BLOCK_SIZE, 3 * BLOCK_SIZE + 7, 40 * BLOCK_SIZE])
        off = rnd.choice([have[name], rnd.randrange(0, have[name] + 1)])
        st.write(name, off, rnd.randbytes(n))
        have[name] = max(have[name], off + n)

    def put(name):
        have[name] = rnd.choice([BLOCK_SIZE, 300 * BLOCK_SIZE + 5])
        st.put(name, rnd.randbytes(have[name]))

    def truncate(name):
        have[name] = rnd.randrange(0, have[name] + 1)
        st.truncate(name, have[name])

    def remove(name):
        st.remove(name)
        del have[name]

    kinds = [write] * 9 + [put] * 2 + [truncate] * 2 + [remove] + [lambda name: st.sync()] * 6
    for _ in range(220):
        name = rnd.choice(["a", "b", "c"])
        if name in have:
            rnd.choice(kinds)(name)
        else:
            st.create(name)
            have[name] = 0
    st.sync()


@pytest.mark.parametrize("barrier", ["flush", "fua"])
def test_hinted_commits_write_the_very_bytes_of_whole_block_deltas(monkeypatch, barrier):
    """The same seeded workload (a small journal: checkpoints; a reopen half-way: recovery and
    the loaded state's first commits) twice, once with every hint ignored: the same requests,
    byte for byte, and hints were taken."""
    def run() -> list:
        dev = Overlay(nblocks=8192, unit=BLOCK_SIZE)
        log = []
        write = dev.write

        def logged(block, data, **kw):
            log.append((block, kw.get("fua", False), hashlib.sha256(bytes(data)).hexdigest()))
            write(block, data, **kw)

        dev.write = logged
        monkeypatch.setattr("blkjournal.store.time.time_ns", lambda: 1)
        monkeypatch.setattr("blkjournal.store.os.urandom", lambda n: bytes(n))
        st = Store.mkfs(dev, "journal", barrier, journal_blocks=96)
        rnd, have = random.Random(11), {}
        _workload(st, rnd, have)
        st = Store.open(dev)
        _workload(st, rnd, have)
        st.close()
        return log

    h, m = HintStats.hinted, HintStats.missed
    hinted = run()
    assert HintStats.hinted - h > 500 and HintStats.missed == m
    monkeypatch.setattr(protocols, "delta_in", lambda old, new, chunks: None)
    assert run() == hinted
