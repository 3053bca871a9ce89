"""The recorder: the kernel target's ordering rules, the roles sidecar, and a real O_DIRECT device."""

from __future__ import annotations

import json

import pytest

from blkjournal.crash.image import Overlay
from blkjournal.crash.logwrites import DISCARD, END_MARK, FLUSH, FUA, LogWriter, read_log
from blkjournal.crash.recorder import Bio, LogWritesTarget, RecordingDevice, read_sidecar, sidecar_path
from blkjournal.crash.states import replay_prefix
from blkjournal.device import BLOCK_SIZE, Counters, Device
from blkjournal.errors import BlkError, CorruptError

B = BLOCK_SIZE


def _sector_data(tag: int) -> bytes:
    return bytes([tag]) * 512


def _entries(path) -> list[str]:
    """The log as short names: the write's tag byte, 'flush', 'fua<tag>', or the mark text."""
    out = []
    for e in read_log(path).entries:
        if e.is_mark:
            out.append(e.mark)
        elif e.is_flush and not e.has_data:
            out.append("flush")
        else:
            out.append(("fua" if e.is_fua else "W") + str(bytes(e.data)[0]))
    return out


def test_kernel_ordering_example(tmp_path):
    """REFERENCE §3: W1,W2,W3,C3,C2,Wflush,C1,Cflush logs as W3,W2,flush,W1."""
    log = tmp_path / "k.log"
    t = LogWritesTarget(LogWriter(log, 512))
    w1, w2, w3 = (t.submit(Bio(0, i, 1, _sector_data(i))) for i in (1, 2, 3))
    t.complete(w3)
    t.complete(w2)
    fl = t.submit(Bio(FLUSH))
    t.complete(w1)  # completes after the flush was issued: not claimed by it
    t.complete(fl)
    assert [w3.entry, w2.entry, fl.entry, w1.entry] == [0, 1, 2, None]
    t.close()  # removal logs what is held, then the end mark
    assert _entries(log) == ["W3", "W2", "flush", "W1", END_MARK]
    assert w1.entry == 3


def test_kernel_comment_example_with_fua(tmp_path):
    """dm-log-writes.c: Wa,Wb,Wc,Cc,Ca,FLUSH,FUAd,Cb,CFLUSH,CFUAd logs c,a,flush,fuad,b."""
    log = tmp_path / "k2.log"
    t = LogWritesTarget(LogWriter(log, 512))
    a, b, c = (t.submit(Bio(0, i, 1, _sector_data(i))) for i in (10, 11, 12))
    t.complete(c)
    t.complete(a)
    fl = t.submit(Bio(FLUSH))
    d = t.submit(Bio(FUA, 13, 1, _sector_data(13)))
    t.complete(b)
    t.complete(fl)
    t.complete(d)
    t.mark("m")  # marks go straight to the log, ahead of held writes
    t.close()
    assert _entries(log) == ["W12", "W10", "flush", "fua13", "m", "W11", END_MARK]


def test_discards_are_held_like_writes(tmp_path):
    log = tmp_path / "d.log"
    t = LogWritesTarget(LogWriter(log, 512))
    t.complete(t.submit(Bio(DISCARD, 5, 3)))
    t.complete(t.submit(Bio(FUA, 1, 1, _sector_data(1))))
    t.complete(t.submit(Bio(FLUSH)))
    t.close()
    assert [e.flag_names for e in read_log(log).entries] == ["FUA", "DISCARD", "FLUSH", "MARK"]


def _mem(nblocks: int = 16, unit: int = 512) -> Overlay:
    return Overlay(None, nblocks=nblocks, unit=unit)


def test_recorder_holds_plain_writes_until_flush(tmp_path):
    log = tmp_path / "r.log"
    dev = RecordingDevice(_mem(), log)
    dev.write(1, bytes([1]) * B, role="W1")
    dev.write(2, bytes([2]) * B, role="W2")
    assert read_log(log).nr_entries == 0
    dev.flush()
    dev.write(3, bytes([3]) * B, role="W3")
    dev.write(4, bytes([4]) * B, fua=True, role="W4")
    dev.write(5, bytes([5]) * B, role="W5")
    dev.flush()
    dev.close()
    assert _entries(log) == ["W1", "W2", "flush", "fua4", "W3", "W5", "flush", END_MARK]


def test_sidecar_is_in_submission_order_with_entry_indices(tmp_path):
    log = tmp_path / "s.log"
    with RecordingDevice(_mem(), log) as dev:
        dev.write(1, bytes([1]) * B, role="data 1")
        dev.mark("op 0")
        dev.write(2, bytes([2]) * 2 * B, fua=True, role="commit")
        dev.discard(7, 2, role="trim")
        dev.flush()
    sc = read_sidecar(sidecar_path(log))
    assert sc.sectorsize == 512 and sc.nblocks == 16
    got = [(op.seq, op.kind, op.block, op.nblocks, op.sector, op.nr_sectors, op.role, op.entry) for op in sc.ops]
    assert got == [
        (0, "write", 1, 1, 8, 8, "data 1", 2),
        (1, "mark", None, 0, None, 0, "", 0),
        (2, "fua", 2, 2, 16, 16, "commit", 1),
        (3, "discard", 7, 2, 56, 16, "trim", 3),
        (4, "flush", None, 0, None, 0, "", 4),
        (5, "mark", None, 0, None, 0, "recorder close", 5),
    ]
    assert sc.ops[1].text == "op 0" and sc.ops[5].text == END_MARK
    assert {e: [o.seq for o in ops] for e, ops in sc.by_entry().items()} == {0: [1], 1: [2], 2: [0], 3: [3], 4: [4], 5: [5]}


def test_sidecar_keeps_the_full_mark_text(tmp_path):
    log = tmp_path / "long.log"
    with RecordingDevice(_mem(), log) as dev:
        dev.mark("y" * 600)
    sc = read_sidecar(sidecar_path(log))
    assert sc.ops[0].text == "y" * 600
    assert read_log(log).entries[0].mark == "y" * 479


def test_corrupt_sidecars(tmp_path):
    p = tmp_path / "x.roles"
    p.write_text("")
    with pytest.raises(CorruptError, match="empty"):
        read_sidecar(p)
    p.write_text('{"format": "something else"}\n')
    with pytest.raises(CorruptError, match=":1:"):
        read_sidecar(p)
    head = json.dumps({"format": "blkjournal-roles", "version": 1, "sectorsize": 512, "nblocks": 4})
    p.write_text(head + '\n{"seq": 0, "kind": "write", "entry": 0}\n{"seq": 2, "kind": "flush", "entry": 1}\n')
    with pytest.raises(CorruptError, match=":3: operation seq 2 out of order"):
        read_sidecar(p)
    p.write_text(head + '\n{"seq": 0, "kind": "scribble", "entry": 0}\n')
    with pytest.raises(CorruptError, match="unknown operation kind"):
        read_sidecar(p)
    p.write_text(head + "\nnot json\n")
    with pytest.raises(CorruptError, match=":2:"):
        read_sidecar(p)


class _FailingFlush(Overlay):
    def __init__(self):
        super().__init__(None, nblocks=8, unit=512)
        self.fail = True

    def flush(self):
        if self.fail:
            raise OSError(5, "Input/output error")
        super().flush()


def test_failed_flush_keeps_writes_held(tmp_path):
    log = tmp_path / "f.log"
    inner = _FailingFlush()
    dev = RecordingDevice(inner, log)
    dev.write(1, bytes([1]) * B)
    with pytest.raises(OSError):
        dev.flush()
    inner.fail = False
    dev.write(2, bytes([2]) * B)
    dev.flush()
    dev.close()
    assert _entries(log) == ["W1", "W2", "flush", END_MARK]
    assert [op.kind for op in read_sidecar(sidecar_path(log)).ops] == ["write", "write", "flush", "mark"]


def test_counters_are_the_inner_devices(tmp_path):
    inner = _mem()
    dev = RecordingDevice(inner, tmp_path / "c.log")
    dev.write(0, bytes(B), fua=True)
    dev.flush()
    assert dev.counters is inner.counters
    assert (inner.counters.writes, inner.counters.fua_writes, inner.counters.flushes) == (1, 1, 1)
    dev.close()
    with pytest.raises(BlkError, match="closed"):
        dev.write(0, bytes(B))


def test_close_inner_false_leaves_inner_open(tmp_path):
    class Inner(Overlay):
        closed = False

        def close(self):
            self.closed = True

    inner = Inner(None, nblocks=4, unit=512)
    RecordingDevice(inner, tmp_path / "a.log", close_inner=False).close()
    assert not inner.closed
    RecordingDevice(inner, tmp_path / "b.log").close()
    assert inner.closed


@pytest.mark.parametrize("lbs", [512, 4096])
def test_recorder_over_a_real_odirect_device(tmp_path, lbs):
    """End to end: the log's replay equals what actually reached the image file."""
    img = str(tmp_path / "dev.img")
    log = tmp_path / "real.log"
    dev = RecordingDevice(Device(img, create_size=64 * B, logical_block_size=lbs), log)
    assert dev.sectorsize == lbs
    payload = {b: bytes([b]) * B for b in range(1, 9)}
    dev.write(1, payload[1], role="data")
    dev.write(2, payload[2] + payload[3], role="data x2")
    dev.mark("op 1")
    dev.flush()
    dev.write(4, payload[4], fua=True, role="commit")
    dev.write(5, payload[5], role="tail")
    dev.discard(2, 1, role="free block 2")
    dev.write(1, payload[8], role="rewrite")
    counters = Counters(**dev.counters.snapshot())
    dev.close()
    assert (counters.writes, counters.fua_writes, counters.flushes, counters.discards) == (5, 1, 1, 1)

    lg = read_log(log)
    assert lg.sectorsize == lbs
    assert [e.flag_names for e in lg.entries] == ["MARK", "NONE", "NONE", "FLUSH", "FUA", "NONE", "DISCARD", "NONE", "MARK"]
    final = replay_prefix(lg, lg.nr_entries - 1)
    with Device(img, readonly=True) as d:
        on_disk = d.read(0, 64)
    expect = bytearray(64 * B)
    for s, chunk in final.items():
        expect[s * lbs:(s + 1) * lbs] = chunk
    assert on_disk == bytes(expect)
    sc = read_sidecar(sidecar_path(log))
    assert [op.role for op in sc.ops if op.kind in ("write", "fua", "discard")] == [
        "data", "data x2", "commit", "tail", "free block 2", "rewrite"]
    assert sc.nblocks == 64
