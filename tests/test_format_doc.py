"""docs/format.md matches the code: the documented record sizes are the struct formats' sizes.

The table "Record sizes" is parsed and each row compared with the value computed from the code,
so a format change that forgets the document fails here (as the object-map entry size, 128 vs 136
bytes, and the descriptor's missing `prev` once did).
"""

from __future__ import annotations

import os
import re

from blkjournal import format as F
from blkjournal import journal as J

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "format.md")

FROM_CODE = {
    "common header": F.HEADER.size,
    "superblock fields": F.Superblock.FMT.size,
    "object map entry": F.OBJ.size,
    "object map entries per block": F.OBJ_PER_BLOCK,
    "object map seen slots per block (3 + 7 × 5)": F.MAX_OBJMAP_SEEN,
    "origin fields (before the map root)": F.Origin.FMT.size,
    "origin map root (128 × u64 + 128 × u32)": F.ROOT_SLOTS * 12,
    "origin seen entry (file id u32, generation u64)": F.SEEN_ENTRY.size,
    "map node (256 × u64 + 256 × u32)": F.FANOUT * 12,
    "used list link (next u64, next generation u64, next crc u32, pad)": F.UL_NEXT.size,
    "used list slots per block": F.UL_SLOTS,
    "bitmap bits per block": F.BITS_PER_BITMAP,
    "journal superblock fields": F.JournalSuper.FMT.size,
    "transaction descriptor fields": J.DESC.size,
    "transaction data entry": J.DATA.size,
    "transaction record header": J.REC.size,
}


def _doc() -> str:
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def documented_sizes(text: str) -> dict[str, int]:
    table = text.split("## Record sizes", 1)[1].split("\n## ", 1)[0]
    return {m[1].strip(): int(m[2]) for m in re.finditer(r"^\| ([^|]+) \| (\d+) \|$", table, re.M)}


def test_documented_record_sizes_match_the_struct_formats():
    assert documented_sizes(_doc()) == FROM_CODE


def test_prose_numbers_match_the_code():
    text = " ".join(_doc().split())  # prose wraps anywhere
    assert f"one {F.OBJ.size}-byte entry per file id ({F.OBJ_PER_BLOCK} per block" in text
    assert f"**Object map entry** ({F.OBJ.size} bytes, {F.OBJ_PER_BLOCK} per block)" in text
    assert f"{F.UL_SLOTS} u64 slots" in text
    assert f"{F.BITS_PER_BITMAP:,} bits per block" in text
    assert f"{F.PAYLOAD} bytes of bits" in text
    # the descriptor's fields, in struct order
    fields = re.search(r"holds (seq u64, nblocks u32, .*?), then the stream", text, re.S)[1]
    names = [w.split()[0] for w in re.sub(r"\(.*?\)", "", fields, flags=re.S).split(",")]
    assert names == ["seq", "nblocks", "ndata", "nrecords", "prev", "commit", "durable"]
    assert len(names) == len(J.DESC.format) - 1  # one name per field of "<QIIIIIQ"


def test_the_check_fails_on_a_wrong_document():
    wrong = _doc().replace(f"| object map entry | {F.OBJ.size} |", "| object map entry | 128 |")
    assert documented_sizes(wrong) != FROM_CODE


def _ref_crc(raw: bytes, zeroed: list[tuple[int, int]], tail: bytes = b"") -> int:
    """A checksum as docs/format.md defines it, computed the plain way: copy, zero, crc."""
    body = bytearray(raw)
    for lo, hi in zeroed:
        body[lo:hi] = bytes(hi - lo)
    return F.crc32c(bytes(body) + tail)


def test_checksums_match_their_plain_definitions():
    """format.py computes its crcs incrementally over memoryviews (no copy of the block per
    check); the bytes on disk must stay what the plain definition gives, or every existing image
    would read as damaged.  Random blocks, every sector, framed and unframed."""
    import struct

    rnd = __import__("random").Random(5)
    for _ in range(50):
        raw = rnd.randbytes(F.BLOCK_SIZE)
        block = rnd.randrange(1 << 40)
        assert F.whole_crc(raw, F.T_MAPNODE) == _ref_crc(raw, [(8, 12)])
        assert F.whole_crc(raw, F.T_ORIGIN) == _ref_crc(raw, [(8, 12), (F.SECTOR_DATA, F.SECTOR)])
        for s in range(F.BLOCK_SIZE // F.SECTOR):
            tail = struct.pack("<QI", block, s)
            sec = raw[s * F.SECTOR:(s + 1) * F.SECTOR - 4]
            assert F._sector_crc(raw, block, s) == _ref_crc(sec, [(8, 12)] if s == 0 else [], tail)
            assert F._framed_crc(raw, block, s) == _ref_crc(raw[s * F.SECTOR:s * F.SECTOR + F.SECTOR_DATA], [], tail)


def _ref_frame(logical: bytes, block: int) -> bytes:
    """A sector-framed block as docs/format.md defines it, built the plain way: place each
    sector's 508 bytes, crc sectors 1..7, then the block crc, then sector 0's crc."""
    import struct

    body = bytearray(F.BLOCK_SIZE)
    for s in range(F.NSECT):
        chunk = logical[s * F.SECTOR_DATA:(s + 1) * F.SECTOR_DATA]
        body[s * F.SECTOR:s * F.SECTOR + len(chunk)] = chunk
    sec = lambda s: _ref_crc(body[s * F.SECTOR:s * F.SECTOR + F.SECTOR_DATA], [], struct.pack("<QI", block, s))  # noqa: E731
    for s in range(1, F.NSECT):
        body[s * F.SECTOR + F.SECTOR_DATA:(s + 1) * F.SECTOR] = struct.pack("<I", sec(s))
    body[8:12] = struct.pack("<I", _ref_crc(body, [(8, 12), (F.SECTOR_DATA, F.SECTOR)]))
    body[F.SECTOR_DATA:F.SECTOR] = struct.pack("<I", sec(0))
    return bytes(body)


def test_framing_matches_its_plain_definition():
    """frame()/reframe() build a framed block in one join (they are on every journal commit's
    path); the bytes must be what the plain sector-by-sector definition gives, for payloads of
    every length up to a full block, a stale crc field in the input (image editors reframe what
    unframe returned) and input longer than a block's worth."""
    rnd = __import__("random").Random(7)
    for n in [0, 1, 479, 480, 481, 987, 3000, F.FRAMED_PAYLOAD] + [rnd.randrange(F.FRAMED_PAYLOAD) for _ in range(20)]:
        block = rnd.randrange(1 << 40)
        payload = rnd.randbytes(n)
        logical = F.HEADER.pack(F.MAGIC, F.T_TXN, F.VERSION, 0, block, 9) + payload
        got = F.frame(F.T_TXN, payload, block, 9)
        assert got == _ref_frame(logical, block)
        stale = logical[:8] + b"\xde\xad\xbe\xef" + logical[12:]
        assert F.reframe(stale, block) == got
        assert F.reframe(F.unframe(got), block) == got
        assert F.damaged_sector(got, block) is None
        F.check(got, F.T_TXN, block, gen=9)
    long = rnd.randbytes(F.BLOCK_SIZE)
    assert F.reframe(long, 5) == _ref_frame(long, 5)


def test_reframe_from_a_former_frame_is_a_whole_frame():
    """A commit frames its file's origin again from the origin it framed before (format.reframe_from:
    only the sectors whose bytes changed get a new crc); the block must be the one framing it
    whole gives -- edits in one sector, in several, in none, at sector edges, in the header
    (sector 0), the crc field and sector 0's crc of the former frame as they were."""
    rnd = __import__("random").Random(12)
    for step in range(600):
        block = rnd.randrange(1 << 40)
        before = bytearray(rnd.randbytes(F.FRAMED_PAYLOAD))
        if rnd.random() < 0.5:  # an origin's tail is zeros
            cut = rnd.randrange(F.FRAMED_PAYLOAD)
            before[cut:] = bytes(F.FRAMED_PAYLOAD - cut)
        after = bytearray(before)
        for _ in range(rnd.choice((0, 1, 1, 2, 3, 8))):
            at = rnd.choice((rnd.randrange(F.FRAMED_PAYLOAD), F.SECTOR_DATA * rnd.randrange(1, F.NSECT) - F.HDR,
                             F.SECTOR_DATA * rnd.randrange(1, F.NSECT) - F.HDR - 1))
            after[at] ^= 1 << rnd.randrange(8)
        old = F.framed_logical(F.T_ORIGIN, bytes(before), block, rnd.randrange(9))
        new = F.framed_logical(F.T_ORIGIN, bytes(after), block, rnd.randrange(9))
        got = F.reframe_from(new, block, old, F.reframe(old, block))
        assert got == F.frame(F.T_ORIGIN, bytes(after), block, F.header(new)[5]) == _ref_frame(new, block), step


def test_a_framed_blocks_damaged_sectors_and_pieces_match_their_plain_definitions():
    """damaged_sector() and unframe() take a framed block's sectors apart in one unpack (every
    journal block replay reads asks); they must say what the plain sector-by-sector definition
    says: the first sector whose own crc fails when some but not all fail, and the sectors'
    508-byte pieces -- for framed blocks with any set of sectors rotted, at another address, as
    bytes or as a view."""
    import struct

    rnd = __import__("random").Random(11)
    for _ in range(60):
        block = rnd.randrange(1 << 40)
        raw = bytearray(F.frame(F.T_TXN, rnd.randbytes(rnd.randrange(F.FRAMED_PAYLOAD)), block, 3))
        for s in rnd.sample(range(F.NSECT), rnd.randrange(F.NSECT + 1)):
            raw[s * F.SECTOR + rnd.randrange(F.SECTOR)] ^= 1 << rnd.randrange(8)
        at = block if rnd.random() < 0.8 else block + 1
        fails = [s for s in range(F.NSECT) if struct.unpack_from("<I", raw, s * F.SECTOR + F.SECTOR_DATA)[0] !=
                 _ref_crc(raw[s * F.SECTOR:s * F.SECTOR + F.SECTOR_DATA], [], struct.pack("<QI", at, s))]
        want = fails[0] if fails and len(fails) < F.NSECT else None
        pieces = b"".join(raw[s * F.SECTOR:s * F.SECTOR + F.SECTOR_DATA] for s in range(F.NSECT))
        for form in (bytes(raw), memoryview(bytes(raw))):
            assert F.damaged_sector(form, at) == want
            assert F.unframe(form) == pieces
