"""The hwcheck record: one 4 KiB block that says, sector by sector, which write put it there.

A power cut can leave a block in four states, and a verdict must tell them apart: the acked
generation (good), an older generation or a previous run's record (stale: the acked write was
lost), zeros or foreign bytes (garbage: lost, or never written), or a mix (torn).  Telling
"torn" from "garbage" needs every 512-byte sector to identify itself, because 512 B is the
smallest unit a disk may write atomically: so each sector carries a stamp (run, block,
generation, sector index) and ends with a crc32c of itself, and the bytes between are a pattern
derived from (run, block, generation), so two generations of one block never share a sector's
content.  A sector whose stamp magic is right but whose crc fails was itself torn inside the
atomic unit.

Sector 0 also carries the record header (writer, sequence, timestamp) and the crc32c of the
whole record (every byte except that crc field and sector 0's own crc, which covers it), so a
tool that knows nothing about sectors can still check a record in one go.

Layout, little-endian, per 512-byte sector i of the block:
    [0:32)     SectorStamp  magic "HWCK", version, index i, run, block, generation
    [32:64)    RecordHeader (sector 0 only): writer, sequence, time_ns, record crc32c
    ...        pattern bytes
    [508:512)  crc32c of bytes [0:508) of this sector
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import crc32c as _crc

from ..device import BLOCK_SIZE
from ..errors import CorruptError

SECTOR = 512
SECTORS = BLOCK_SIZE // SECTOR
MAGIC = b"HWCK"
VERSION = 1
CRC_OFF = SECTOR - 4
_ZERO_SECTOR = bytes(SECTOR)
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class SectorStamp:
    """What every sector of a record says about itself."""

    run: int
    block: int
    gen: int
    index: int

    FMT = struct.Struct("<4sBBHQQQ")  # magic, version, index, reserved, run, block, gen

    def pack(self) -> bytes:
        return self.FMT.pack(MAGIC, VERSION, self.index, 0, self.run, self.block, self.gen)

    @classmethod
    def unpack(cls, data) -> "SectorStamp":
        magic, version, index, _, run, block, gen = cls.FMT.unpack_from(data)
        if magic != MAGIC:
            raise CorruptError("not an hwcheck sector (bad magic)")
        if version != VERSION:
            raise CorruptError(f"hwcheck sector version {version}, expected {VERSION}")
        return cls(run, block, gen, index)


@dataclass(frozen=True)
class RecordHeader:
    """Who wrote the record and when; lives in sector 0 after its stamp."""

    writer: int
    seq: int
    time_ns: int
    crc: int = 0

    FMT = struct.Struct("<IIQQI4x")  # writer, reserved, seq, time_ns, record crc32c
    OFF = SectorStamp.FMT.size
    CRC_AT = OFF + 24  # byte offset of the record crc inside the block

    def pack(self) -> bytes:
        return self.FMT.pack(self.writer, 0, self.seq, self.time_ns, self.crc)

    @classmethod
    def unpack(cls, data) -> "RecordHeader":
        writer, _, seq, time_ns, crc = cls.FMT.unpack_from(data, cls.OFF)
        return cls(writer, seq, time_ns, crc)


def pattern(run: int, block: int, gen: int) -> bytes:
    """Filler derived from (run, block, generation): distinct for every write of every block."""
    return hashlib.shake_128(b"blkjournal-hwcheck" + struct.pack("<QQQ", run, block, gen)).digest(BLOCK_SIZE)


def _record_crc(buf: bytearray) -> int:
    """crc32c of a record with its own crc field and sector 0's crc taken as zero."""
    tmp = bytearray(buf)
    tmp[RecordHeader.CRC_AT:RecordHeader.CRC_AT + 4] = b"\0\0\0\0"
    tmp[CRC_OFF:SECTOR] = b"\0\0\0\0"
    return _crc.crc32c(tmp)


@dataclass(frozen=True)
class Record:
    """One write of hwcheck: generation `gen` of `block`, by `writer` as its `seq`-th write."""

    run: int
    block: int
    gen: int
    writer: int
    seq: int
    time_ns: int

    def pack(self) -> bytes:
        buf = bytearray(pattern(self.run, self.block, self.gen))
        for i in range(SECTORS):
            base = i * SECTOR
            buf[base:base + SectorStamp.FMT.size] = SectorStamp(self.run, self.block, self.gen, i).pack()
        hdr = RecordHeader(self.writer, self.seq, self.time_ns)
        buf[RecordHeader.OFF:RecordHeader.OFF + RecordHeader.FMT.size] = hdr.pack()
        for i in range(1, SECTORS):
            base = i * SECTOR
            _CRC.pack_into(buf, base + CRC_OFF, _crc.crc32c(memoryview(buf)[base:base + CRC_OFF]))
        _CRC.pack_into(buf, RecordHeader.CRC_AT, _record_crc(buf))
        _CRC.pack_into(buf, CRC_OFF, _crc.crc32c(memoryview(buf)[:CRC_OFF]))
        return bytes(buf)

    @classmethod
    def unpack(cls, data: bytes) -> "Record":
        """The record in a block, or CorruptError when the block is not one whole, intact record."""
        if len(data) != BLOCK_SIZE:
            raise CorruptError(f"a record is {BLOCK_SIZE} bytes, got {len(data)}")
        first = SectorStamp.unpack(data)
        hdr = RecordHeader.unpack(data)
        if _record_crc(bytearray(data)) != hdr.crc:
            raise CorruptError(f"record crc mismatch (block {first.block} generation {first.gen})")
        for i in range(SECTORS):
            s = read_sector(data, i)
            if s.kind != OURS or (s.run, s.block, s.gen, s.index) != (first.run, first.block, first.gen, i):
                raise CorruptError(f"sector {i} does not belong to block {first.block} generation {first.gen}")
        return cls(first.run, first.block, first.gen, hdr.writer, hdr.seq, hdr.time_ns)


# What one 512-byte sector read back holds.
ZERO = "zero"  # all zero bytes: never written (or discarded)
OURS = "ours"  # an hwcheck stamp with a valid crc
CORRUPT = "corrupt"  # an hwcheck stamp whose crc fails: torn inside the sector (stamp fields kept)
FOREIGN = "foreign"  # anything else


@dataclass(frozen=True)
class Sector:
    """A decoded sector: its kind and, for OURS (and CORRUPT when readable), what its stamp says."""

    kind: str
    run: int = 0
    block: int = 0
    gen: int = 0
    index: int = 0


_ZERO = Sector(ZERO)
_FOREIGN = Sector(FOREIGN)
_CORRUPT = Sector(CORRUPT)


def read_sector(block_data, i: int) -> Sector:
    """Decode sector `i` of a block read back from the disk."""
    base = i * SECTOR
    view = memoryview(block_data)[base:base + SECTOR]
    if view == _ZERO_SECTOR:
        return _ZERO
    if view[:4] != MAGIC:
        return _FOREIGN
    try:
        stamp = SectorStamp.unpack(view)
    except CorruptError:
        return _CORRUPT
    kind = OURS if _CRC.unpack_from(view, CRC_OFF)[0] == _crc.crc32c(view[:CRC_OFF]) else CORRUPT
    return Sector(kind, stamp.run, stamp.block, stamp.gen, stamp.index)
