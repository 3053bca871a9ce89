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
