"""Editing a store image the way a damaged (or hostile) disk would: a field changed, the block's
crc re-sealed so the checksum no longer catches it.  Shared by the regression tests and the fuzzer."""

from __future__ import annotations

import struct

from blkjournal import format as F
from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.format import HDR
from blkjournal.store import Store


def reseal(raw: bytearray, block: int) -> None:
    """Make a metadata block image edited in place check again at address `block`: its own crc,
    and where the format gives object map sectors crcs of their own, those first; a sector-framed
    block (an origin) is framed again whole."""
    if F.HEADER.unpack_from(raw)[1] in F.FRAMED:
        raw[:] = F.reframe(F.unframe(raw), block)
        return
    if F.HEADER.unpack_from(raw)[1] == F.T_OBJMAP and hasattr(F, "_sector_crc"):
        for s in range(BLOCK_SIZE // F.SECTOR):
            struct.pack_into("<I", raw, (s + 1) * F.SECTOR - 4, F._sector_crc(raw, block, s))
    raw[8:12] = b"\0\0\0\0"
    raw[8:12] = struct.pack("<I", F.crc32c(raw))


def read_block(path: str, block: int) -> bytearray:
    with open(path, "rb") as f:
        f.seek(block * BLOCK_SIZE)
        return bytearray(f.read(BLOCK_SIZE))


def write_block(path: str, block: int, raw: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(block * BLOCK_SIZE)
        f.write(raw)


def set_field(path: str, block: int, offset: int, fmt: str, value, *, payload: bool = True) -> None:
    """Pack `value` with struct `fmt` at `offset` (of the payload, or of the block) and re-seal."""
    raw = read_block(path, block)
    values = value if isinstance(value, (tuple, list)) else (value,)
    if F.HEADER.unpack_from(raw)[1] in F.FRAMED:  # offsets are of the record, not of the sectors
        logical = bytearray(F.unframe(raw))
        struct.pack_into("<" + fmt, logical, (HDR if payload else 0) + offset, *values)
        write_block(path, block, F.reframe(bytes(logical), block))
        return
    struct.pack_into("<" + fmt, raw, (HDR if payload else 0) + offset, *values)
    reseal(raw, block)
    write_block(path, block, raw)


def sample_store(path: str, protocol: str = "journal", *, size: int = 8 << 20, checkpoint: bool = True) -> dict:
    """A store with a 1-block file "small", a sparse file "big" whose map has height 1 and a file
    "huge" at height 2; returns where things are (origin, map node, used list of each file)."""
    with Device(path, create_size=size) as d:
        s = Store.mkfs(d, protocol, "flush")
        s.put("small", b"s" * 100)
        s.put("big", b"b" * 100)
        s.write("big", 200 * BLOCK_SIZE, b"far")
        s.put("huge", b"h")
        s.write("huge", (128 * 256 + 5) * BLOCK_SIZE, b"very far")
        s.sync()
        s.close()
    where = {}
    with Device(path) as d:
        s = Store.open(d, recover=checkpoint)
        for f in s.files.values():
            where[f.name] = {"origin": f.origin_block, "usedlist": f.ul.head, "height": f.map.height,
                             "nodes": sorted(f.map.nodes), "fid": f.fid}
        where["sb"] = s.sb
    return where
