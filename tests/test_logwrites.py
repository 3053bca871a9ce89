"""dm-log-writes v1: the exact byte layout, round trips, and corrupt or truncated logs."""

from __future__ import annotations

import struct

import pytest

from blkjournal.crash.image import Overlay
from blkjournal.crash.logwrites import (
    DISCARD, FLUSH, FUA, MAGIC, MARK, METADATA, LogWriter, Superblock, flag_names, max_mark_len, parse_log,
    read_log, write_log,
)
from blkjournal.crash.recorder import RecordingDevice
from blkjournal.errors import BlkError, CorruptError

B = 4096


def _hand_built(ss: int) -> bytes:
    """A log assembled straight from the format description, independent of the module."""
    out = bytearray(struct.pack("<QQQI", MAGIC, 1, 4, ss).ljust(ss, b"\0"))
    out += struct.pack("<QQQQ", 8, 2, 0, 0).ljust(ss, b"\0") + b"\x11" * ss + b"\x22" * ss  # write
    out += struct.pack("<QQQQ", 0, 0, FLUSH, 0).ljust(ss, b"\0")  # empty flush
    out += (struct.pack("<QQQQ", 0, 0, MARK, 5) + b"hello").ljust(ss, b"\0")  # mark
    out += struct.pack("<QQQQ", 100, 7, DISCARD, 0).ljust(ss, b"\0")  # discard: no data
    return bytes(out)


@pytest.mark.parametrize("ss", [512, 4096])
def test_reads_the_documented_layout(tmp_path, ss):
    p = tmp_path / "hand.log"
    p.write_bytes(_hand_built(ss))
    log = read_log(p)
    assert log.sectorsize == ss and log.nr_entries == 4 and log.trailing_bytes == 0
    w, f, m, d = log.entries
    assert (w.sector, w.nr_sectors, w.flags, w.offset) == (8, 2, 0, ss)
    assert bytes(w.data) == b"\x11" * ss + b"\x22" * ss
    assert f.is_flush and not f.has_data and f.offset == 4 * ss
    assert m.is_mark and m.mark == "hello" and m.offset == 5 * ss
    assert d.is_discard and d.nr_sectors == 7 and bytes(d.data) == b"" and d.offset == 6 * ss


@pytest.mark.parametrize("ss", [512, 4096])
def test_writer_produces_the_documented_layout(tmp_path, ss):
    p = tmp_path / "w.log"
    with LogWriter(p, ss) as w:
        assert w.write(8, b"\x11" * ss + b"\x22" * ss) == 0
        assert w.flush() == 1
        assert w.mark("hello") == 2
        assert w.discard(100, 7) == 3
    assert p.read_bytes() == _hand_built(ss)


def _record(tmp_path, ss: int):
    """A recorder run touching every entry kind; returns the log path."""
    inner = Overlay(None, nblocks=32, unit=ss)
    log = tmp_path / f"rec{ss}.log"
    with RecordingDevice(inner, log) as dev:
        dev.write(1, bytes([1]) * B, role="a")
        dev.write(2, bytes([2]) * 2 * B, role="b")
        dev.mark("op 1")
        dev.write(4, bytes([4]) * B, fua=True, role="commit")
        dev.discard(6, 2, role="trim")
        dev.flush()
        dev.write(9, bytes([9]) * B, role="held at close")
    return log


@pytest.mark.parametrize("ss", [512, 4096])
def test_recorder_log_round_trips_byte_for_byte(tmp_path, ss):
    src = _record(tmp_path, ss)
    log = read_log(src)
    assert [e.flag_names for e in log.entries] == ["MARK", "FUA", "NONE", "NONE", "DISCARD", "FLUSH", "NONE", "MARK"]
    copy = tmp_path / "copy.log"
    write_log(copy, log)
    assert copy.read_bytes() == src.read_bytes()
    assert read_log(copy).entries == log.entries


def test_nr_entries_is_rewritten_only_after_fua_mark_and_close(tmp_path):
    p = tmp_path / "n.log"

    def nr() -> int:
        return struct.unpack_from("<Q", p.read_bytes(), 16)[0]

    w = LogWriter(p, 512)
    assert nr() == 0
    w.write(0, bytes(512))
    w.flush()
    assert nr() == 0  # plain writes and flushes leave the count alone, like the kernel
    assert read_log(p).nr_entries == 0 and read_log(p).trailing_bytes == 3 * 512
    w.write(1, bytes(512), fua=True)
    assert nr() == 3
    w.write(2, bytes(512))
    w.mark("m")
    assert nr() == 5
    w.write(3, bytes(512))
    w.close()
    assert nr() == 6


def test_mark_text_is_truncated_like_the_kernel(tmp_path):
    p = tmp_path / "m.log"
    with LogWriter(p, 512) as w:
        w.mark("x" * 1000)
    (e,) = read_log(p).entries
    assert e.mark == "x" * max_mark_len(512) and e.data_len == 479


def test_flag_names():
    assert flag_names(0) == "NONE"
    assert flag_names(FLUSH | FUA) == "FLUSH|FUA"
    assert flag_names(METADATA | 64) == "METADATA|UNKNOWN.0x40"


def test_kernel_style_flush_with_data_is_a_write(tmp_path):
    p = tmp_path / "pf.log"
    with LogWriter(p, 512) as w:
        w.append(FLUSH | FUA, 10, 1, b"\x05" * 512)
    (e,) = read_log(p).entries
    assert e.is_flush and e.is_fua and e.has_data and bytes(e.data) == b"\x05" * 512


# -- corrupt and truncated logs --------------------------------------------------------------------

def _corrupt(tmp_path, raw: bytes) -> str:
    p = tmp_path / "bad.log"
    p.write_bytes(raw)
    with pytest.raises(CorruptError) as ei:
        read_log(p)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_bad_superblocks(tmp_path):
    good = _hand_built(512)
    assert "too short" in _corrupt(tmp_path, good[:20])
    assert "bad magic" in _corrupt(tmp_path, b"\1" + good[1:])
    assert "version 2" in _corrupt(tmp_path, good[:8] + struct.pack("<Q", 2) + good[16:])
    assert "sectorsize 1000" in _corrupt(tmp_path, good[:24] + struct.pack("<I", 1000) + good[28:])
    assert "bad magic" in _corrupt(tmp_path, bytes(4096))


def test_truncated_data_names_the_entry(tmp_path):
    good = _hand_built(512)
    msg = _corrupt(tmp_path, good[:512 + 512 + 700])
    assert "entry 0 at byte 512" in msg and "past the end" in msg


def test_nr_entries_beyond_the_file(tmp_path):
    good = bytearray(_hand_built(512))
    good[16:24] = struct.pack("<Q", 9)
    msg = _corrupt(tmp_path, bytes(good))
    assert "entry 4" in msg and "claims 9 entries" in msg


def test_entry_header_checks(tmp_path):
    good = bytearray(_hand_built(512))
    bad = bytearray(good)
    bad[512 + 16:512 + 24] = struct.pack("<Q", 1 << 9)
    assert "entry 0" in _corrupt(tmp_path, bytes(bad)) and "unknown flags" in _corrupt(tmp_path, bytes(bad))
    bad = bytearray(good)
    bad[512 + 40] = 1
    assert "not zero padded" in _corrupt(tmp_path, bytes(bad))
    bad = bytearray(good)
    bad[5 * 512 + 24:5 * 512 + 32] = struct.pack("<Q", 600)  # mark text longer than its sector
    assert "entry 2" in _corrupt(tmp_path, bytes(bad))
    zeroed = bytearray(good[:4 * 512]) + bytes(512)  # flush entry wiped: nr_entries still says 4
    assert "entry 1" in _corrupt(tmp_path, bytes(zeroed)) and "all-zero" in _corrupt(tmp_path, bytes(zeroed))


def test_missing_file_is_a_blk_error(tmp_path):
    with pytest.raises(BlkError, match="no such file|No such file"):
        read_log(tmp_path / "nope.log")


def test_writer_refuses_bad_sizes(tmp_path):
    with pytest.raises(BlkError):
        LogWriter(tmp_path / "x.log", 1000)
    with LogWriter(tmp_path / "y.log", 512) as w, pytest.raises(ValueError):
        w.write(0, bytes(100))


def test_superblock_pack_unpack():
    sb = Superblock(7, 4096)
    raw = sb.pack()
    assert len(raw) == 4096 and Superblock.unpack(raw) == sb
    assert parse_log(Superblock(0, 4096).pack()).entries == []
    with pytest.raises(CorruptError, match="entry 0 at byte 4096"):
        parse_log(raw)
