"""The on-disk format: block types, the common metadata header, and every on-disk record.

Every metadata block starts with the same 28-byte header (magic, type, version, crc32c of the whole
block with the crc field zeroed, the block's own number, the generation that wrote it), so any block
read back can be checked before it is trusted: a block of the wrong type, a valid block written to
the wrong address (`misdirected-write`) and, where a pointer says which generation and crc it
expects, a valid but outdated block (`stale-block`, a lost write) are all caught where they are
used, as ZFS and btrfs block pointers do.  Data blocks carry no header: their crc32c lives in the
block index map entry that points at them, which is what lets fsck tell "metadata says the data is
there" from "the data is really there" (seed B's crash case 6).

BLKJOURNAL_WEAK_DETECTION=1 (test-only) turns off what format 2 added -- the address and generation
checks, the crcs carried by used-list, origin, map-node and journal-superblock pointers, and the
generation evidence recovery uses (a journal descriptor's `durable`, an object map entry's
creation generation), and the origin sector crcs' verdict of damage (originslots.py) -- and keeps every block's own crc and the data crcs: detection as format 1
had it, so the fault explorer can show that the checks it turns off are what catch misdirected
and lost writes.

Layout of a store (4 KiB blocks):
    0                      superblock
    [journal]              journal superblock + circular journal area (protocol "journal" only)
    object map             one 148-byte entry per file id: origin slots (+ expected gen, crc), birth, name
    bitmap                 the global freelist, one bit per block
    data start ...         origins, used lists, map nodes and data blocks, all allocated
"""

from __future__ import annotations

import os
import functools
import struct
from itertools import compress, count, repeat
from operator import attrgetter, is_not
from array import array
from dataclasses import dataclass, field

import crc32c as _crc

from . import memo
from .device import BLOCK_SIZE
from .errors import CorruptError, FieldError, MisdirectedError, StaleBlockError

MAGIC = b"BJRN"
VERSION = 7  # 2: the header names the block's address and generation; pointers carry crc + gen;
# 3: an origin's every sector carries its own crc (a torn origin write is told from bit rot);
# 4: so does every journal transaction block, and mkfs fills the journal area with framed blanks;
# 5: an ordered origin names the generation of every other file durable when it was written;
# 6: so does an ordered object map block (the newest MAX_OBJMAP_SEEN), in its sectors' spare bytes;
# 7: a journal transaction may carry a small write's data blocks whole (inline), up to the
#    superblock's inline_max blocks, so a synced small write is one device request
HEADER = struct.Struct("<4sHHIQQ")  # magic, type, version, crc32c, own block number, generation
HDR = HEADER.size
PAYLOAD = BLOCK_SIZE - HDR

T_SUPER, T_OBJMAP, T_BITMAP, T_ORIGIN, T_USEDLIST, T_MAPNODE, T_JSUPER, T_TXN = range(1, 9)
TYPE_NAMES = {T_SUPER: "superblock", T_OBJMAP: "object map", T_BITMAP: "bitmap", T_ORIGIN: "origin",
              T_USEDLIST: "used list", T_MAPNODE: "block index map", T_JSUPER: "journal superblock",
              T_TXN: "journal transaction"}

PROTOCOLS = ("journal", "ordered", "none")
# A journal write of at most INLINE_MAX blocks (32 KiB, ZFS's zfs_immediate_write_sz) logs its data
# whole in its transaction: data and commit are one device request, and the checkpoint writes the
# data home later (docs/protocols.md, "Inline data").  MAX_INLINE bounds what a superblock may say.
INLINE_MAX, MAX_INLINE = 8, 32
BARRIERS = ("flush", "fua")


crc32c = _crc.crc32c  # crc32c(data) -> int, the C function itself: no Python frame per block checked
_ZERO4 = bytes(4)  # a crc field as the crc over its block sees it
_SECTOR_ID = struct.Struct("<QI")  # block number, sector index: what each sector crc ends with
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ZEROS = memoryview(bytes(BLOCK_SIZE))  # padding, sliced without a copy


def crc32c_blocks(buf, *, release_gil: bool = False) -> array:
    """The crc32c of each BLOCK_SIZE block of `buf` (a whole number of blocks): one C call per
    block on a memoryview slice -- no copy, and no interpreter work per block beyond the call
    (the crc32c package has no batched form; the per-block crc is what a map entry keeps).

    `release_gil`: each call lets go of the GIL while it computes (about 15% slower), so a thread
    waiting in a device write gets the interpreter back as soon as its write returns instead of
    after the 5 ms switch interval (a streaming write's crcs overlap its data write: store.py)."""
    mv = memoryview(buf)
    n = mv.nbytes
    if n == BLOCK_SIZE:  # one block (a synced append's): no map pipeline to set up
        return array("I", (_crc.crc32c(mv),))
    views = map(mv.__getitem__, _block_slices(n // BLOCK_SIZE))
    if release_gil:
        return array("I", map(_crc.crc32c, views, repeat(0), repeat(1)))
    return array("I", map(_crc.crc32c, views))


@functools.lru_cache(maxsize=64)
def _block_slices(n: int) -> tuple:
    """The slices of the n blocks of a buffer (kept: a streaming write crcs runs of the same few lengths)."""
    return tuple(slice(o, o + BLOCK_SIZE) for o in range(0, n * BLOCK_SIZE, BLOCK_SIZE))


WEAK_ENV = "BLKJOURNAL_WEAK_DETECTION"
# os.environ's own dict of encoded names and values, when it has one (CPython): a lookup there costs
# a fraction of os.environ.get, and every metadata block checked asks
_ENV_DATA = getattr(os.environ, "_data", None)
_WEAK_KEY, _ONE = (os.environ.encodekey(WEAK_ENV), os.environ.encodevalue("1")) if _ENV_DATA is not None else (None, None)


def weak_detection() -> bool:
    """Test-only: format 1's detection (own crc and data crcs only); see the module docstring."""
    if _ENV_DATA is not None:
        return _ENV_DATA.get(_WEAK_KEY) == _ONE
    return os.environ.get(WEAK_ENV) == "1"


memo.depends_on(weak_detection)


def seal(btype: int, payload: bytes, block: int, gen: int = 0) -> bytes:
    """A whole metadata block for address `block`, written by generation `gen`, crc filled in."""
    body = bytearray(HEADER.pack(MAGIC, btype, VERSION, 0, block, gen))
    body += payload
    if len(body) > BLOCK_SIZE:
        raise ValueError(f"{TYPE_NAMES[btype]} payload of {len(payload)} bytes does not fit a block")
    body += _ZEROS[:BLOCK_SIZE - len(body)]
    _U32.pack_into(body, 8, crc32c(body))  # over the block as written, its crc field zero
    return bytes(body)


def header(raw: bytes) -> tuple:
    """(magic, type, version, crc, block, gen) of a block, unchecked."""
    return HEADER.unpack_from(raw)


SECTOR = 512
SECTOR_DATA = SECTOR - 4  # the rest of a sector of a sector-framed block: its own crc32c
FRAMED = (T_ORIGIN, T_TXN)  # block types whose every sector carries its own crc (see frame())


def whole_crc(raw, btype: int) -> int:
    """The block's own crc: crc32c of the block with the crc field zeroed (a sector-framed block's
    sector 0 crc zeroed too: it covers the block crc, see frame())."""
    mv = memoryview(raw)  # incremental over the pieces: no copy of the block (every check calls this)
    c = crc32c(_ZERO4, crc32c(mv[:8]))
    if btype in FRAMED:
        return crc32c(mv[SECTOR:], crc32c(_ZERO4, crc32c(mv[12:SECTOR_DATA], c)))
    return crc32c(mv[12:], c)


def check(raw: bytes, btype: int, where: int | str, *, gen: int | None = None, crc: int | None = None,
          whole: bool = True) -> memoryview:
    """Verify a metadata block read from block `where` and return its payload.

    `gen` and `crc` are what the pointer that led here expects (None: it expects nothing).
    `whole=False` skips the block's own crc (each of its sectors carries one: a torn object map).
    CorruptError (its subclass names the fault) says which block and what is wrong.
    """
    magic, t, version, own, block, bgen = HEADER.unpack_from(raw)
    name = TYPE_NAMES.get(btype, str(btype))
    if magic != MAGIC:
        raise CorruptError(f"block {where}: bad magic for {name} ({magic!r})")
    if version != VERSION:
        if t == T_SUPER and version < VERSION:
            raise CorruptError(f"block {where}: a format {version} store; this blkjournal reads format "
                               f"{VERSION} only (mkfs a new store)")
        raise CorruptError(f"block {where}: {name} has unsupported format version {version} (want {VERSION})")
    if t != btype:
        raise CorruptError(f"block {where}: expected {name}, found type {TYPE_NAMES.get(t, t)}")
    if whole and whole_crc(raw, btype) != own:
        raise CorruptError(f"block {where}: {name} checksum mismatch")
    if weak_detection():
        return memoryview(raw)[HDR:]
    if isinstance(where, int) and block != where:
        raise MisdirectedError(f"block {where}: misdirected-write: holds the {name} of block {block} "
                               f"(generation {bgen})")
    if gen is not None and bgen != gen:
        raise StaleBlockError(f"block {where}: stale-block: {name} of generation {bgen}, its pointer "
                              f"expects generation {gen}")
    if crc is not None and crc32c(raw) != crc:
        raise StaleBlockError(f"block {where}: stale-block: {name} (generation {bgen}) is not the "
                              f"version its pointer expects")
    return memoryview(raw)[HDR:]


NSECT = BLOCK_SIZE // SECTOR
FRAMED_PAYLOAD = NSECT * SECTOR_DATA - HDR  # 4036 bytes


def _framed_crc(body, block: int, s: int) -> int:
    return _piece_crc(memoryview(body)[s * SECTOR:s * SECTOR + SECTOR_DATA], block, s)


def _piece_crc(piece, block: int, s: int) -> int:
    """Sector s's crc in a block for address `block`: crc32c of its piece (the 508 bytes before
    the crc) followed by its (block number, sector index)."""
    return crc32c(_SECTOR_ID.pack(block, s), crc32c(piece))


def frame(btype: int, payload: bytes, block: int, gen: int = 0) -> bytes:
    """A sector-framed metadata block (origins, format 3; journal transaction blocks, format 4): header and payload spread over the first
    508 bytes of each 512-byte sector, each sector ending in the crc32c of those 508 bytes followed
    by the block number and sector index.  Sectors 1..7 are framed first, then the block crc (over
    everything but itself and sector 0's crc), then sector 0, whose crc covers the block crc.  So a
    write torn at sector boundaries leaves every sector passing its own crc (each old or new) while
    the block crc fails, and bit rot anywhere -- the block crc field included -- makes the sector it
    hits fail its own: recovery can tell an interrupted write from damage (damaged_sector)."""
    return reframe(framed_logical(btype, payload, block, gen), block)


def framed_logical(btype: int, payload: bytes, block: int, gen: int = 0) -> bytes:
    """The header and payload frame() spreads over the sectors (zero-padded to a full block's
    worth: what unframe returns)."""
    if len(payload) > FRAMED_PAYLOAD:
        raise ValueError(f"{TYPE_NAMES[btype]} payload of {len(payload)} bytes does not fit a framed block")
    return b"".join((HEADER.pack(MAGIC, btype, VERSION, 0, block, gen), payload, _NOTHING[:FRAMED_PAYLOAD - len(payload)]))


def reframe(logical: bytes, block: int) -> bytes:
    """Spread a framed block's header and payload (as unframe returns them) over the sectors of
    block `block` and fill in every crc (frame's second half; test image editors use it too).

    Built by one struct pack of the eight sectors, their pieces cut by one unpack, with sector
    0's crc and the block crc zero -- which makes the block crc one crc32c call over the packed
    block -- and those two filled in after: framing is on the path of every journal commit (the
    origin, each transaction block), and each call here costs about as much as a sector's crc.
    A sector's crc is one crc32c call over its 508 bytes followed by its (block, sector) id,
    laid out so by one more pack (two calls per sector cost a third of the framing)."""
    if len(logical) != _FULL:
        logical = _padded(logical)
    p0, p1, p2, p3, p4, p5, p6, p7 = _PIECES.unpack(logical)
    w = _WITH_IDS.pack(p0, block, 0, p1, block, 1, p2, block, 2, p3, block, 3, p4, block, 4,
                       p5, block, 5, p6, block, 6, p7, block, 7)
    # sectors 1..7, each with its id (slices of bytes: a crc32c call on a memoryview costs twice as much)
    c1, c2, c3, c4, c5, c6, c7 = map(crc32c, map(w.__getitem__, _ID_SLICES))
    body = bytearray(_FRAMED.pack(p0, 0, p1, c1, p2, c2, p3, c3, p4, c4, p5, c5, p6, c6, p7, c7))
    _U32.pack_into(body, 8, 0)  # (the block crc field as its crc sees it, whatever the input held)
    _U32.pack_into(body, 8, crc32c(body))  # the block crc: the block with its crc field and sector 0's crc zeroed
    _U32.pack_into(body, SECTOR_DATA, crc32c(w[SECTOR_DATA:_WITH_ID], crc32c(body[:SECTOR_DATA])))
    return bytes(body)


def reframe_from(logical: bytes, block: int, prev_logical: bytes, prev: bytes) -> bytes:
    """reframe(logical, block), given `prev` = reframe(prev_logical, block) (both logical images a
    full _FULL bytes): a sector of 1..7 whose 508 bytes are unchanged keeps its crc (it covers
    only them and the block's address), so only the changed ones are framed again, then the
    block crc and sector 0.  A journal commit frames its file's origin again with every
    operation, and an append changes its sector 0 (generation, size, mtime, used-list head) and
    the one or two holding the root slot it edited."""
    body = bytearray(prev)
    for s, o in _SECTOR_SPANS:
        if not prev_logical.startswith(piece := logical[o:o + SECTOR_DATA], o):
            at = s * SECTOR
            body[at:at + SECTOR_DATA] = piece
            _U32.pack_into(body, at + SECTOR_DATA, _piece_crc(piece, block, s))
    body[:SECTOR_DATA] = logical[:SECTOR_DATA]
    _U32.pack_into(body, 8, 0)
    _U32.pack_into(body, SECTOR_DATA, 0)  # (sector 0's crc, as the block crc sees it)
    _U32.pack_into(body, 8, crc32c(body))
    _U32.pack_into(body, SECTOR_DATA, _piece_crc(body[:SECTOR_DATA], block, 0))
    return bytes(body)


def _padded(logical) -> bytes:
    """A framed block's header and payload cut or zero-padded to a full _FULL bytes."""
    return bytes(logical[:_FULL]) + _NOTHING[:max(0, _FULL - len(logical))]


_FULL = NSECT * SECTOR_DATA  # a framed block's header and payload
_NOTHING = bytes(_FULL)
_PIECES = struct.Struct(f"{SECTOR_DATA}s" * NSECT)  # the header and payload, cut into the sectors' pieces
_FRAMED = struct.Struct("<" + f"{SECTOR_DATA}sI" * NSECT)  # a framed block: each sector's piece and crc
_WITH_IDS = struct.Struct("<" + f"{SECTOR_DATA}sQI" * NSECT)  # each sector's piece and (block, sector) id; NSECT is 8
_WITH_ID = SECTOR_DATA + _SECTOR_ID.size
_ID_SLICES = tuple(slice(s * _WITH_ID, (s + 1) * _WITH_ID) for s in range(1, NSECT))
_SECTOR_SPANS = tuple((s, s * SECTOR_DATA) for s in range(1, NSECT))  # sector, where its piece starts (logical)


def unframe(raw) -> bytes:
    """The header and payload of a sector-framed block, the sector crcs taken out."""
    if len(raw) == BLOCK_SIZE:  # (the sectors' pieces in one unpack)
        return b"".join(_FRAMED.unpack_from(raw)[0::2])
    return b"".join(bytes(raw[s * SECTOR:s * SECTOR + SECTOR_DATA]) for s in range(NSECT))


@memo.pure  # 16 crc calls a framed block; recovery asks of every journal block it reads, state after state
def damaged_sector(raw, block: int) -> int | None:
    """The first sector of a sector-framed block (read from `block`) failing its own crc when the
    block is damaged (bit rot, garbage sectors: some sectors fail), else None.  None failing while
    the block crc fails is a torn write (each sector old or new); all failing is no framed block of
    this address (never written here, or overwritten whole).  Origins and journal transactions
    both judge their blocks by this one rule."""
    if len(raw) == BLOCK_SIZE:  # each sector's piece and crc in one unpack
        got = _FRAMED.unpack_from(raw)
        bad = [s for s in range(NSECT) if got[2 * s + 1] != _piece_crc(got[2 * s], block, s)]
    else:
        bad = [s for s in range(NSECT)
               if struct.unpack_from("<I", raw, s * SECTOR + SECTOR_DATA)[0] != _framed_crc(raw, block, s)]
    return bad[0] if bad and len(bad) < NSECT else None


def block_type(raw: bytes) -> int | None:
    """The type of a valid metadata block, or None (data, garbage, torn)."""
    try:
        t = HEADER.unpack_from(raw)[1]
        check(raw, t, "?")
        return t
    except (CorruptError, struct.error):
        return None


@dataclass(frozen=True)
class Superblock:
    """Block 0: geometry, protocol and barrier kind, fixed at mkfs."""

    FMT = struct.Struct("<QBBB5xQQQQQQQ16s")
    nblocks: int
    protocol: str
    barrier: str
    journal_start: int
    journal_blocks: int
    objmap_start: int
    objmap_blocks: int
    bitmap_start: int
    bitmap_blocks: int
    data_start: int
    uuid: bytes = bytes(16)
    inline_max: int = 0  # journal: a write of at most this many blocks logs its data in its transaction

    @property
    def max_files(self) -> int:
        return self.objmap_blocks * OBJ_PER_BLOCK

    def pack(self) -> bytes:
        return seal(T_SUPER, self.FMT.pack(
            self.nblocks, PROTOCOLS.index(self.protocol), BARRIERS.index(self.barrier), self.inline_max,
            self.journal_start, self.journal_blocks, self.objmap_start, self.objmap_blocks,
            self.bitmap_start, self.bitmap_blocks, self.data_start, self.uuid), 0)

    @classmethod
    @memo.pure
    def unpack(cls, raw: bytes) -> "Superblock":
        (n, p, b, inl, js, jb, os_, ob, bs, bb, ds, uuid) = cls.FMT.unpack_from(check(raw, T_SUPER, 0))
        if p >= len(PROTOCOLS) or b >= len(BARRIERS):
            raise CorruptError("block 0: superblock names an unknown protocol or barrier kind")
        sb = cls(n, PROTOCOLS[p], BARRIERS[b], js, jb, os_, ob, bs, bb, ds, uuid, inl)
        if inl > MAX_INLINE or (inl and PROTOCOLS[p] != "journal"):
            raise FieldError(f"block 0: superblock inline_max of {inl} blocks (at most {MAX_INLINE}, journal only)")
        if not (1 <= os_ and os_ + ob <= bs and bs + bb == ds and ds < n and ob > 0 and bb > 0):
            raise CorruptError("block 0: superblock geometry is inconsistent")
        if bb != -(-n // BITS_PER_BITMAP):  # what geometry() lays out; memory is sized from it
            raise FieldError(f"block 0: superblock bitmap of {bb} blocks does not match {n} blocks")
        if ob > MAX_OBJMAP_BLOCKS:
            raise FieldError(f"block 0: superblock object map of {ob} blocks (at most {MAX_OBJMAP_BLOCKS})")
        if jb and not (js == 1 and js + jb == os_):
            raise CorruptError("block 0: superblock journal geometry is inconsistent")
        return sb


# --- object map: file id -> origin slots (+ the name: the flat namespace lives in the same entry) ---
OBJ = struct.Struct("<QQQQIH110s")  # origin slot a, slot b, birth, origin gen, origin crc, name length, name
OBJ_PER_SECTOR = 3  # (512 - 4) // 148, and 3 fit after the header in sector 0 too
OBJ_PER_BLOCK = OBJ_PER_SECTOR * (BLOCK_SIZE // SECTOR)  # 24
_EMPTY_ENTRY = bytes(OBJ.size)  # an entry never used
SEEN_ENTRY = struct.Struct("<IQ")  # (file id or OBJMAP_ID | object map index, generation)


def _entry_offset(k: int) -> int:
    s, j = divmod(k, OBJ_PER_SECTOR)
    return s * SECTOR + (HDR if s == 0 else 0) + j * OBJ.size


_ENTRY_OFFSETS = tuple(_entry_offset(k) for k in range(OBJ_PER_BLOCK))


@functools.lru_cache(maxsize=1 << 14)
def _packed_entry(e: "ObjEntry") -> bytes:
    """An entry's bytes, by value: a commit repacks a whole object map block of which one entry
    changed (entries are frozen, so equal entries pack equally)."""
    return e.pack()


def _sector_crc(body, block: int, s: int) -> int:
    """crc32c of sector s but its last 4 bytes (where it goes), sector 0 with the block crc zeroed,
    followed by the block number and sector index: a sector of another block fails, and the
    sectors are not crc codewords (a block of codewords would have a constant whole-block crc)."""
    mv = memoryview(body)[s * SECTOR:(s + 1) * SECTOR - 4]
    c = crc32c(mv[12:], crc32c(_ZERO4, crc32c(mv[:8]))) if s == 0 else crc32c(mv)
    return crc32c(_SECTOR_ID.pack(block, s), c)


def _seen_slots() -> tuple:
    """Where an object map block keeps its seen entries: the bytes of each sector after its three
    entries and before its crc, 3 slots in sector 0 (after the header), 5 in each other."""
    out = []
    for s in range(BLOCK_SIZE // SECTOR):
        start = _entry_offset(s * OBJ_PER_SECTOR + OBJ_PER_SECTOR - 1) + OBJ.size
        out += [start + k * SEEN_ENTRY.size for k in range((s * SECTOR + SECTOR_DATA - start) // SEEN_ENTRY.size)]
    return tuple(out)


_SEEN_SLOTS = _seen_slots()
MAX_OBJMAP_SEEN = len(_SEEN_SLOTS)  # 38


def _put_seen(body: bytearray, seen) -> None:
    """The seen entries in their slots, the rest of the slots zero (generation 0 claims nothing)."""
    if len(seen) > MAX_OBJMAP_SEEN:
        raise ValueError(f"{len(seen)} seen entries for an object map block (at most {MAX_OBJMAP_SEEN})")
    for k, off in enumerate(_SEEN_SLOTS):
        SEEN_ENTRY.pack_into(body, off, *(seen[k] if k < len(seen) else (0, 0)))


@memo.pure
def pack_objmap(entries: list, block: int, gen: int, seen: tuple = ()) -> bytes:
    """An object map block: entries never straddle a 512-byte sector and every sector ends in its
    own crc32c, so a write torn at any sector boundary leaves each sector whole (old or new).
    `seen` (ordered, format 6): (file id or OBJMAP_ID | index, generation) pairs known durable
    when the block was written, in the sectors' spare bytes -- recovery's evidence of a lost
    write when the only later write is of an object map block (a create, a remove, a rename)."""
    body = bytearray(BLOCK_SIZE)
    body[:HDR] = HEADER.pack(MAGIC, T_OBJMAP, VERSION, 0, block, gen)
    for off, e in zip(_ENTRY_OFFSETS, entries):
        body[off:off + OBJ.size] = _packed_entry(e)
    if seen:
        _put_seen(body, seen)
    for s in range(BLOCK_SIZE // SECTOR):
        body[(s + 1) * SECTOR - 4:(s + 1) * SECTOR] = struct.pack("<I", _sector_crc(body, block, s))
    body[8:12] = struct.pack("<I", crc32c(body))
    return bytes(body)


def repack_objmap(prev: bytes, prev_entries, entries, block: int, gen: int, prev_seen: tuple = (),
                  seen: tuple = (), chunks: set | None = None) -> bytes:
    """pack_objmap(entries, block, gen, seen), given `prev` = pack_objmap(prev_entries, block, any
    gen, prev_seen): only the entries that are not the very objects they were (entries are
    frozen) are packed again, and only their sectors' crcs, sector 0's (the header's generation)
    and the block crc computed again.  Every journal commit rewrites the object map block of the
    file it changes (the entry carries the origin's generation and crc): one entry of 24 changes.
    (A changed `seen`, ordered only, rewrites every sector's slots.)

    `chunks`, if given, gets the 64-byte chunks where the image may differ from `prev` (a delta
    hint, journal.delta_in): the header's, each repacked entry's, each recomputed sector crc's."""
    body = bytearray(prev)
    HEADER.pack_into(body, 0, MAGIC, T_OBJMAP, VERSION, 0, block, gen)
    sectors = {0}
    for k in compress(range(OBJ_PER_BLOCK), map(is_not, entries, prev_entries)):
        off = _ENTRY_OFFSETS[k]
        body[off:off + OBJ.size] = entries[k].pack()
        sectors.add(k // OBJ_PER_SECTOR)
        if chunks is not None:
            chunks.update(range(off & -64, off + OBJ.size, 64))
    if seen != prev_seen:
        _put_seen(body, seen)
        sectors = range(BLOCK_SIZE // SECTOR)
        if chunks is not None:
            chunks.update(range(0, BLOCK_SIZE, 64))
    for s in sectors:  # (the crc field is zero: packed so above, as _sector_crc reads it)
        _U32.pack_into(body, (s + 1) * SECTOR - 4, _piece_crc(body[s * SECTOR:(s + 1) * SECTOR - 4], block, s))
    if chunks is not None:
        chunks.add(0)  # the header: generation, block crc
        chunks.update((s + 1) * SECTOR - 64 for s in sectors)
    _U32.pack_into(body, 8, crc32c(body))
    return bytes(body)


@memo.pure
def read_objmap(raw: bytes, block: int, first_fid: int, *, torn_ok: bool) -> list:
    """The entries of object map block `block` (file ids from `first_fid`).

    With `torn_ok` (ordered: entries are written in place, no journal) a block failing its own
    crc is accepted when every sector passes its own: a torn write, each sector old or new, and
    every entry whole.  A sector that fails is damage: CorruptError naming block and sector."""
    try:
        check(raw, T_OBJMAP, block)
    except CorruptError as e:
        if not torn_ok or e.fault != "checksum":
            raise
        check(raw, T_OBJMAP, block, whole=False)  # header (magic, type, version, address) still
        for s in range(BLOCK_SIZE // SECTOR):
            if struct.unpack_from("<I", raw, (s + 1) * SECTOR - 4)[0] != _sector_crc(raw, block, s):
                raise CorruptError(f"block {block}: object map checksum mismatch (sector {s})") from None
    out = []
    for k, off in enumerate(_ENTRY_OFFSETS):
        ent = raw[off:off + OBJ.size]
        out.append(_UNUSED if ent == _EMPTY_ENTRY else ObjEntry.unpack(ent, first_fid + k))
    return out


def objmap_torn(raw) -> bool:
    """Whether an object map block read_objmap accepted is a torn write: its own crc fails while
    every sector passes its own, each sector old or new.  Its header's generation is then that of
    sector 0 only: an entry in another sector may be of the write in flight (newer) or of the one
    before it (older), and nothing in the sector says which (claims.judge)."""
    return whole_crc(raw, T_OBJMAP) != HEADER.unpack_from(raw)[3]


@memo.pure
def objmap_seen(raw) -> tuple:
    """The seen entries of an object map block read_objmap accepted (each sector passed its crc:
    a torn block's sectors are each old or new, and each one's claims were true when written)."""
    got = (SEEN_ENTRY.unpack_from(raw, off) for off in _SEEN_SLOTS)
    return tuple(x for x in got if x[1])


MAX_NAME = 110
MAX_OBJMAP_BLOCKS = 1 << 16  # far past what geometry() lays out (4096 files at most)


@memo.immutable
@dataclass(frozen=True)
class ObjEntry:
    """One file: where its origin lives (two slots in "ordered", one in "journal") and its name.

    `birth` is a store-wide creation counter copied into the origin, so an origin slot that still
    holds a deleted file's valid origin is never mistaken for this file's.  A freed entry keeps
    its last birth (origin slots 0), so the counter -- the maximum over all entries -- never goes
    back after a delete and a reopen.

    Under "journal" the entry is the origin's pointer and carries what it expects (`origin_gen`,
    `origin_crc`: the journal rewrites both with every origin change, so a lost or misdirected
    checkpoint write of the origin is a stale-block).  Under "ordered" the origin slots are the
    commit point and nothing above them is rewritten per operation: `origin_gen` is the
    generation that created the file (recovery's evidence that its first origin is durable) and
    `origin_crc` 0.
    """

    origin_a: int = 0
    origin_b: int = 0
    birth: int = 0
    name: str = ""
    origin_gen: int = 0
    origin_crc: int = 0

    @property
    def in_use(self) -> bool:
        return self.origin_a != 0

    def expecting(self, origin_gen: int, origin_crc: int) -> "ObjEntry":
        """This entry naming another origin (generation, crc): what every journal commit of the
        file puts in its object map.  The fields copied as they are (a frozen dataclass's own
        __init__ sets each through object.__setattr__: it cost as much as packing the entry)."""
        e = _new_object(ObjEntry)
        d = e.__dict__
        d.update(self.__dict__)
        d["origin_gen"], d["origin_crc"] = origin_gen, origin_crc
        return e

    def pack(self) -> bytes:
        nm = self.name.encode()
        return OBJ.pack(self.origin_a, self.origin_b, self.birth, self.origin_gen, self.origin_crc, len(nm), nm)

    @classmethod
    def unpack(cls, raw, where="?") -> "ObjEntry":
        a, b, birth, ogen, ocrc, n, nm = OBJ.unpack(raw)
        if n > MAX_NAME:
            raise CorruptError(f"object map entry {where}: name length {n} too long")
        try:
            return cls(a, b, birth, nm[:n].decode(), ogen, ocrc)
        except UnicodeDecodeError:
            raise CorruptError(f"object map entry {where}: name is not UTF-8") from None


_new_object = object.__new__
_UNUSED = ObjEntry()  # an entry never used, as read_objmap hands it out: one object (entries are frozen)


def in_use_ids(entries, first: int = 0):
    """The ids (first + index) of the entries in use (ObjEntry.in_use: origin_a != 0), in order,
    picked at C speed: loading a store and fsck walk every object map entry."""
    return compress(count(first), map(_ORIGIN_A, entries))


_ORIGIN_A = attrgetter("origin_a")


def _as_bytes(code: str, values) -> bytes:
    """`values` as an array of `code` entries, in bytes (no copy into a new array when it is one)."""
    if isinstance(values, array) and values.typecode == code:
        return values.tobytes()
    return array(code, values).tobytes()


# --- origin: one per file (two alternating slots under "ordered") ---
ROOT_SLOTS = 128
SEEN = struct.Struct("<H")  # an origin's count of (file id, generation) pairs
MAX_SEEN = 200  # what fits a framed origin after its roots
OBJMAP_ID = 1 << 31  # a seen entry for object map block i names OBJMAP_ID | i (file ids stay below)
FANOUT_BITS = 8
FANOUT = 1 << FANOUT_BITS
MAX_HEIGHT = 4


def map_capacity(height: int) -> int:
    """File blocks a block index map of this height covers (so a file size can be range-checked)."""
    return ROOT_SLOTS << (FANOUT_BITS * height)


MAX_FILE_SIZE = map_capacity(MAX_HEIGHT) * BLOCK_SIZE  # 2^51 bytes: the largest file a map addresses


@dataclass(frozen=True)
class Origin:
    """A file's origin block: size, map root, used list head, and the generation that wrote it.

    The used-list head is a full pointer (block, generation, crc32c of the head block); the map
    root entries carry the crc32c of the node or data block they point at.
    """

    FMT = struct.Struct("<QQQQQQQIB3x")  # file id, birth, gen, size, mtime_ns, used list head, head gen, head crc, height
    file_id: int
    birth: int
    gen: int
    size: int
    mtime_ns: int
    usedlist: int
    height: int
    root_blocks: tuple = field(default=(0,) * ROOT_SLOTS)
    root_crcs: tuple = field(default=(0,) * ROOT_SLOTS)
    ul_gen: int = 0
    ul_crc: int = 0
    # ((file id, generation), ...): under ordered, the newest origin of each other file and the
    # generation of each object map block (OBJMAP_ID | index), the MAX_SEEN most recently
    # written, durable when this one was issued -- so a later commit of any file is evidence
    # against a lost or misdirected-over newest origin or object map write (docs/protocols.md)
    seen: tuple = ()

    def pack(self, block: int) -> bytes:
        return frame(T_ORIGIN, self.payload(self.file_id, self.birth, self.gen, self.size, self.mtime_ns,
                                            self.usedlist, self.height, self.root_blocks, self.root_crcs,
                                            self.ul_gen, self.ul_crc, self.seen), block, self.gen)

    @classmethod
    def payload(cls, file_id, birth, gen, size, mtime_ns, usedlist, height, root_blocks, root_crcs, ul_gen,
                ul_crc, seen=()) -> bytes:
        """The origin's payload (what frame() spreads over its sectors) from its fields; the map
        root may be given as the map's own arrays (store.FileState packs a file's origin from
        them on every commit, with no Origin object and no tuples of 128 entries)."""
        parts = [cls.FMT.pack(file_id, birth, gen, size, mtime_ns, usedlist, ul_gen, ul_crc, height),
                 _as_bytes("Q", root_blocks), _as_bytes("I", root_crcs), SEEN.pack(len(seen))]
        if seen:  # (journal origins name nothing: no generator per commit)
            parts += [SEEN_ENTRY.pack(f, g) for f, g in seen]
        return b"".join(parts)  # (one copy: a concatenation copied the growing prefix four times)

    @classmethod
    @memo.pure
    def unpack(cls, raw, where="?", *, gen=None, crc=None) -> "Origin":
        check(raw, T_ORIGIN, where, gen=gen, crc=crc)
        p = unframe(raw)[HDR:]
        fid, birth, gen, size, mtime, ul, ul_gen, ul_crc, height = cls.FMT.unpack_from(p)
        o = cls.FMT.size
        blocks = array("Q", bytes(p[o:o + 8 * ROOT_SLOTS]))
        crcs = array("I", bytes(p[o + 8 * ROOT_SLOTS:o + 12 * ROOT_SLOTS]))
        if height > MAX_HEIGHT:
            raise FieldError(f"block {where}: origin has impossible map height {height}")
        if size > MAX_FILE_SIZE:
            raise FieldError(f"block {where}: origin size {size} exceeds the largest file a map can address "
                             f"({MAX_FILE_SIZE} bytes)")
        o += 12 * ROOT_SLOTS
        (n,) = SEEN.unpack_from(p, o)
        if n > MAX_SEEN:
            raise FieldError(f"block {where}: origin names {n} other files' generations (at most {MAX_SEEN})")
        seen = tuple(SEEN_ENTRY.unpack_from(p, o + SEEN.size + k * SEEN_ENTRY.size) for k in range(n))
        return cls(fid, birth, gen, size, mtime, ul, height, tuple(blocks), tuple(crcs), ul_gen, ul_crc, seen)


def framed_chunks(ranges) -> set:
    """The 64-byte chunks of a framed block (as reframe lays it out) that change when bytes
    [lo, hi) of its header and payload (unframed offsets) do: theirs, those of the crcs of the
    sectors they lie in, and sector 0's header and crc (the block crc is in it) -- a delta hint
    (journal.delta_in)."""
    out = {0, SECTOR_DATA & -64}
    for lo, hi in ranges:
        while lo < hi:
            s, o = divmod(lo, SECTOR_DATA)
            n = min(hi - lo, SECTOR_DATA - o)
            at = s * SECTOR + o
            out.update(range(at & -64, at + n, 64))
            out.add((s * SECTOR + SECTOR_DATA) & -64)
            lo += n
    return out


def origin_chunks(root_slots) -> set:
    """The 64-byte chunks of an origin's image that change when its header and fixed fields and
    the entries of `root_slots` change (an origin's delta hint, journal.delta_in)."""
    return _ORIGIN_FIXED.union(*map(_ROOT_SLOT_CHUNKS.__getitem__, root_slots))


_ROOTS_AT = HDR + Origin.FMT.size  # an origin's root entries, in its header and payload (unframed)
_CRCS_AT = _ROOTS_AT + 8 * ROOT_SLOTS
_ORIGIN_FIXED = frozenset(framed_chunks([(0, _ROOTS_AT)]))  # the header and fixed fields' chunks
_ROOT_SLOT_CHUNKS = tuple(frozenset(framed_chunks([(_ROOTS_AT + 8 * s, _ROOTS_AT + 8 * s + 8),
                                                   (_CRCS_AT + 4 * s, _CRCS_AT + 4 * s + 4)]))
                          for s in range(ROOT_SLOTS))  # root slot s's two entries' (with their sectors' crcs)


class MapNode:
    """A block index map node: FANOUT (block, crc32c) pairs; at height 1 they point at data blocks,
    above that at nodes (the crc is then the child node's, so a stale node is caught by its parent).

    Mutable in memory (arrays) because a large write edits thousands of entries; pack()/unpack()
    are the on-disk boundary.  `gen` is the generation that last wrote the node.
    """

    __slots__ = ("blocks", "crcs", "gen")

    def __init__(self, blocks=None, crcs=None, gen: int = 0):
        self.blocks = blocks if blocks is not None else array("Q", bytes(8 * FANOUT))
        self.crcs = crcs if crcs is not None else array("I", bytes(4 * FANOUT))
        self.gen = gen

    def copy(self) -> "MapNode":
        return MapNode(array("Q", self.blocks), array("I", self.crcs), self.gen)

    def pack(self, block: int) -> bytes:
        return seal(T_MAPNODE, self.blocks.tobytes() + self.crcs.tobytes(), block, self.gen)

    @classmethod
    def unpack(cls, raw, where="?", *, crc=None) -> "MapNode":
        p = check(raw, T_MAPNODE, where, crc=crc)
        return cls(array("Q", bytes(p[:8 * FANOUT])), array("I", bytes(p[8 * FANOUT:12 * FANOUT])),
                   header(raw)[5])


UL_NEXT = struct.Struct("<QQI4x")  # next block, its generation, its crc32c
UL_SLOTS = (PAYLOAD - UL_NEXT.size) // 8  # 505 block ids after the next pointer


class UsedListBlock:
    """One block of a file's used list: a next pointer (block, gen, crc) and slots of owned block
    ids (0 = empty).  The chain is sealed from its tail (usedlist.py), so every link says exactly
    which version of the next block it expects.
    """

    __slots__ = ("next", "next_gen", "next_crc", "slots", "gen")

    def __init__(self, next_block: int = 0, slots=None, next_gen: int = 0, next_crc: int = 0, gen: int = 0):
        self.next = next_block
        self.next_gen = next_gen
        self.next_crc = next_crc
        self.slots = slots if slots is not None else array("Q", bytes(8 * UL_SLOTS))
        self.gen = gen

    def pack(self, block: int) -> bytes:
        return seal(T_USEDLIST, UL_NEXT.pack(self.next, self.next_gen, self.next_crc) + self.slots.tobytes(),
                    block, self.gen)

    @classmethod
    def unpack(cls, raw, where="?", *, gen=None, crc=None) -> "UsedListBlock":
        p = check(raw, T_USEDLIST, where, gen=gen, crc=crc)
        nxt, ngen, ncrc = UL_NEXT.unpack_from(p)
        return cls(nxt, array("Q", bytes(p[UL_NEXT.size:UL_NEXT.size + 8 * UL_SLOTS])), ngen, ncrc, header(raw)[5])


BITS_PER_BITMAP = PAYLOAD * 8


@dataclass(frozen=True)
class JournalSuper:
    """First block of the journal: where the live log starts (tail), the sequence number found
    there, and the commit checksum of the transaction before it (the start of the hash chain).

    It also records the crc32c of every fixed-address block (object map, then bitmap) as that
    checkpoint left it: nothing else points at them, so this is how a lost or misdirected
    checkpoint write of one is caught (up to JSB_CRCS blocks; docs/format.md)."""

    FMT = struct.Struct("<QQII")  # tail seq, tail pos, tail prev, number of crcs that follow
    tail_seq: int
    tail_pos: int
    tail_prev: int = 0
    crcs: tuple = ()

    def pack(self, block: int) -> bytes:
        return seal(T_JSUPER, self.FMT.pack(self.tail_seq, self.tail_pos, self.tail_prev, len(self.crcs))
                    + array("I", self.crcs).tobytes(), block, self.tail_seq)

    @classmethod
    @memo.pure
    def unpack(cls, raw, where="?") -> "JournalSuper":
        p = check(raw, T_JSUPER, where)
        seq, pos, prev, n = cls.FMT.unpack_from(p)
        if n > JSB_CRCS:
            raise CorruptError(f"block {where}: journal superblock lists {n} crcs (at most {JSB_CRCS})")
        return cls(seq, pos, prev, tuple(array("I", bytes(p[cls.FMT.size:cls.FMT.size + 4 * n]))))


JSB_CRCS = (PAYLOAD - JournalSuper.FMT.size) // 4  # 1011 fixed blocks: 133 object map + 878 bitmap (~114 GB)


def geometry(nblocks: int, protocol: str, barrier: str, *, max_files: int | None = None,
             journal_blocks: int | None = None, uuid: bytes = bytes(16), inline_max: int | None = None) -> Superblock:
    """Lay out a store of `nblocks` blocks: the journal gets 1/16 of the device (64 .. 32768 blocks).
    `inline_max` (journal only; default INLINE_MAX, 0: never) -- see Superblock.inline_max."""
    if protocol not in PROTOCOLS:
        raise ValueError(protocol)
    if inline_max is None:
        inline_max = INLINE_MAX if protocol == "journal" else 0
    if not 0 <= inline_max <= MAX_INLINE or (inline_max and protocol != "journal"):
        raise ValueError(f"inline_max {inline_max} (0..{MAX_INLINE}, journal only)")
    if max_files is None:
        max_files = max(64, min(4096, nblocks // 64))
    objmap_blocks = -(-max_files // OBJ_PER_BLOCK)
    if protocol == "journal":
        jb = journal_blocks or max(64, min(32768, nblocks // 16))
    else:
        jb = 0
    objmap_start = 1 + jb
    bitmap_blocks = -(-nblocks // BITS_PER_BITMAP)
    bitmap_start = objmap_start + objmap_blocks
    data_start = bitmap_start + bitmap_blocks
    return Superblock(nblocks, protocol, barrier, 1 if jb else 0, jb, objmap_start, objmap_blocks,
                      bitmap_start, bitmap_blocks, data_start, uuid, inline_max)


def is_own_store(path: str) -> bool:
    """True if `path` starts with a valid blkjournal superblock (read without O_DIRECT: a probe)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(BLOCK_SIZE)
        if len(raw) < BLOCK_SIZE:
            return False
        Superblock.unpack(raw)
        return True
    except CorruptError:  # an older format's superblock is still ours (mkfs may replace it)
        magic, t, version = HEADER.unpack_from(raw)[:3]
        return magic == MAGIC and t == T_SUPER and 0 < version < VERSION
    except OSError:
        return False
