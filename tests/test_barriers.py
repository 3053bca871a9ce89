"""Exact I/O and barrier counts, from Device.counters and from the kernel's own /sys/block stat.

One `put` of a new 1-block file + `sync` (what `blkjournal put` does after opening):
    journal/flush  1 write of 2 journal blocks (the data logged inline: format 7), 1 flush
                   -- the physical minimum: one request and one barrier
    journal/fua    1 FUA write, 0 flushes
    ordered/flush  5 writes = 7 blocks (the two origin slots' blanks with the used-list head in one
                   run, data, origin, object map, bitmap), 2 flushes: one after the data (it
                   orders the used-list entry, the blanks and the data before the origin) and
                   the sync's.  Phase A has no flush of its own: data goes to fresh blocks and
                   recovery frees what no durable origin reaches, so B's flush is enough.
    ordered/fua    5 writes = 7 blocks, of which 4 FUA (the bitmap is a hint recovery rebuilds:
                   plain), 0 flushes
    none           6 writes (its elevator issues one per block, slot a's blank and origin as one), no barrier
A synced 4 KiB append to an existing file:
    journal/flush  1 write = 8192 bytes (a 2-block transaction carrying the data), 1 flush
    ordered/flush  4 writes (used-list entry, data, origin, bitmap), 2 flushes; fua: 3 FUA + bitmap plain
    none           4 writes, no barrier

On a loop device the kernel counts the same: flushes in field 16 of /sys/block/loopN/stat, sectors
written in field 7.  A loop device has a volatile write cache but no native FUA, so the block layer
emulates each RWF_DSYNC write: the write, then a post-flush, and the fsync that O_DSYNC implies
issues one more -- 2 kernel flushes per FUA write (what `blkjournal devices` calls "emulated").
"""

from __future__ import annotations

import os

import pytest

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.store import Store

PUT = {  # (writes, flushes, fua_writes[, blocks written when not one per write])
    ("journal", "flush"): (1, 1, 0, 2),
    ("journal", "fua"): (1, 0, 1, 2),
    ("ordered", "flush"): (5, 2, 0, 7),
    ("ordered", "fua"): (5, 0, 4, 7),
    ("none", "flush"): (6, 0, 0),
    ("none", "fua"): (6, 0, 0),
}
APPEND = {
    ("journal", "flush"): (1, 1, 0, 2),
    ("journal", "fua"): (1, 0, 1, 2),
    ("ordered", "flush"): (4, 2, 0),
    ("ordered", "fua"): (4, 0, 3),
    ("none", "flush"): (4, 0, 0),
    ("none", "fua"): (4, 0, 0),
}
COMBOS = sorted(PUT)


def _fresh(path: str, protocol: str, barrier: str, *, create_size=None) -> Device:
    dev = Device(path, create_size=create_size)
    Store.mkfs(dev, protocol, barrier)
    dev.close()
    return Device(path)  # counters start at zero; the store is opened the way the CLI opens it


def _expect(counters, want) -> None:
    writes, flushes, fua, *blocks = want
    got = counters.snapshot()
    assert (got["writes"], got["flushes"], got["fua_writes"]) == (writes, flushes, fua), got
    assert got["bytes_written"] == (blocks[0] if blocks else writes) * BLOCK_SIZE, got
    assert got["discards"] == 0


MKFS = {  # 8 MiB: 3 object map blocks, 1 bitmap block, journal 128 blocks (superblock + 127 log slots)
    "journal": (7, 2, 0, 3 + 1 + 1 + 127 + 1),  # + 1 write of framed blanks over the whole log (format 4)
    "ordered": (5, 2, 0),
    "none": (5, 2, 0),
}


@pytest.mark.parametrize("protocol,barrier", COMBOS)
def test_mkfs_writes_and_barriers(image, protocol, barrier):
    """mkfs: the fixed blocks (journal: its superblock and, in one write, a framed blank in every
    log slot), a flush, the superblock, a flush."""
    dev = Device(image, create_size=8 << 20)
    dev.counters.reset()
    Store.mkfs(dev, protocol, barrier)
    _expect(dev.counters, MKFS[protocol])
    dev.close()


@pytest.mark.parametrize("protocol,barrier", COMBOS)
def test_put_one_block_and_sync(image, protocol, barrier):
    dev = _fresh(image, protocol, barrier, create_size=8 << 20)
    s = Store.open(dev)
    dev.counters.reset()
    s.put("f", os.urandom(BLOCK_SIZE))
    s.sync()
    _expect(dev.counters, PUT[protocol, barrier])
    # a second sync with nothing new issues nothing
    dev.counters.reset()
    s.sync()
    assert dev.counters.flushes == 0 and dev.counters.fua_writes == 0
    dev.close()


@pytest.mark.parametrize("protocol,barrier", COMBOS)
def test_synced_append(image, protocol, barrier):
    dev = _fresh(image, protocol, barrier, create_size=8 << 20)
    s = Store.open(dev)
    s.put("f", os.urandom(BLOCK_SIZE))
    s.sync()
    s.sync()
    dev.counters.reset()
    s.write("f", BLOCK_SIZE, os.urandom(BLOCK_SIZE))
    s.sync()
    _expect(dev.counters, APPEND[protocol, barrier])
    if (protocol, barrier) == ("journal", "flush"):
        assert dev.counters.bytes_written == 8192
    dev.close()


def _stat(dev_path: str) -> list[int]:
    with open(f"/sys/block/{os.path.basename(dev_path)}/stat") as f:
        return [int(x) for x in f.read().split()]


@pytest.mark.loop
@pytest.mark.parametrize("protocol,barrier", COMBOS)
def test_kernel_counts_the_same_on_a_loop_device(make_loop, protocol, barrier):
    loop = make_loop(16 << 20, 4096)
    name = os.path.basename(loop)
    with open(f"/sys/block/{name}/queue/fua") as f:
        native_fua = f.read().strip() == "1"
    dev = _fresh(loop, protocol, barrier)
    s = Store.open(dev)
    dev.counters.reset()
    before = _stat(loop)
    s.put("f", os.urandom(BLOCK_SIZE))
    s.sync()
    after = _stat(loop)
    _expect(dev.counters, PUT[protocol, barrier])
    sectors_written = after[6] - before[6]
    kernel_flushes = after[15] - before[15]
    assert sectors_written * 512 == dev.counters.bytes_written
    c = dev.counters
    if native_fua:
        assert kernel_flushes >= c.flushes
    else:
        assert kernel_flushes == c.flushes + 2 * c.fua_writes, (kernel_flushes, c.snapshot())
    if barrier == "flush" or protocol == "none":
        assert kernel_flushes == c.flushes  # journal/flush: exactly 1, ordered/flush: 2, none: 0
    dev.close()


@pytest.mark.loop
@pytest.mark.parametrize("barrier", ["flush", "fua"])
def test_kernel_counts_a_synced_append_the_same(make_loop, barrier):
    """journal: a synced 4 KiB append as the block layer sees it (/sys/block/NAME/stat), next to
    the store's own counters.  The kernel counts a flush request among the write requests too
    (field 5): under flush the one write (the transaction, data inline) + the flush = 2
    requests, 16 sectors, 1 flush.  Under fua (emulated on a loop device: no queue/fua) the
    RWF_DSYNC write's post-flush rides on its own request and the fsync that O_DSYNC implies is
    one more request and flush: 2 requests, 2 flushes."""
    loop = make_loop(16 << 20, 4096)
    dev = _fresh(loop, "journal", barrier)
    s = Store.open(dev)
    s.put("f", os.urandom(BLOCK_SIZE))
    s.sync()
    for k in range(1, 4):
        dev.counters.reset()
        before = _stat(loop)
        s.write("f", k * BLOCK_SIZE, os.urandom(BLOCK_SIZE))
        s.sync()
        after = _stat(loop)
        _expect(dev.counters, APPEND["journal", barrier])
        got = (after[4] - before[4], after[6] - before[6], after[15] - before[15])
        assert got == ((2, 16, 1) if barrier == "flush" else (2, 16, 2)), got
    dev.close()


# 16 writes of 1 MiB + sync on a 64 MiB store (journal of 4,096 blocks): (writes, flushes, fua
# writes, blocks written).  Under flush the writes join one running transaction (group commit,
# docs/protocols.md): 16 data writes + 1 transaction of 34 blocks (the 4,096 data crcs, 12 blocks;
# the 16 new map leaves and 8 new used-list blocks logged whole; origin, object map, bitmap) + the
# sync's flush.  Under fua every write stays its own: 16 FUA data + 16 FUA transactions of 3 blocks.
STREAM = {
    ("flush", None): (17, 1, 0, 4096 + 34),
    ("fua", None): (32, 0, 32, 4096 + 48),
    ("flush", 1024): (20, 1, 0, 4096 + 36),  # GROUP_MAX of 4 MiB: 4 running transactions of 4 writes
    ("flush", 0): (32, 1, 0, 4096 + 48),  # GROUP_MAX 0: a transaction per write, as before group commit
}


def _streaming_writes(s: Store) -> None:
    for k in range(16):
        s.write("f", k << 20, bytes([k + 1]) * (1 << 20))
    s.sync()


def _store_with_file(path, barrier: str, *, create_size=None) -> tuple[Device, Store]:
    dev = _fresh(path, "journal", barrier, create_size=create_size)
    s = Store.open(dev)
    s.create("f")
    s.sync()
    dev.counters.reset()
    return dev, s


@pytest.mark.parametrize("barrier,group_max", sorted(STREAM, key=str))
def test_streaming_writes_and_sync(image, monkeypatch, barrier, group_max):
    import blkjournal.protocols as P

    if group_max is not None:
        monkeypatch.setattr(P, "GROUP_MAX", group_max)
    dev, s = _store_with_file(image, barrier, create_size=64 << 20)
    _streaming_writes(s)
    _expect(dev.counters, STREAM[barrier, group_max])
    dev.close()
    with Device(image) as dev:
        assert Store.open(dev).read("f") == b"".join(bytes([k + 1]) * (1 << 20) for k in range(16))


@pytest.mark.loop
def test_kernel_counts_streaming_writes_the_same(make_loop):
    """The group commit as the block layer sees it: 16 data writes of 2,048 sectors and one
    transaction of 34 blocks, 33,040 sectors in all, and one flush.  (How many requests the block
    layer makes of a 1 MiB write depends on how its memory's pages lie -- a request holds at most
    max_segments of them -- so only the store's own request count is exact: 17.)"""
    loop = make_loop(64 << 20, 4096)
    dev, s = _store_with_file(loop, "flush")
    before = _stat(loop)
    _streaming_writes(s)
    after = _stat(loop)
    _expect(dev.counters, STREAM["flush", None])
    got = (after[6] - before[6], after[15] - before[15])
    assert got == ((4096 + 34) * 8, 1), got
    dev.close()
