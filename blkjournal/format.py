"""The on-disk format: block types, the common metadata header, and every on-disk record.

Every metadata block starts with the same 12-byte header (magic, type, version, crc32c of the whole
block with the crc field zeroed), so any block read back can be checked before it is trusted and a
block of the wrong type is caught where it is used.  Data blocks carry no header: their crc32c lives
in the block index map entry that points at them, which is what lets fsck tell "metadata says the
data is there" from "the data is really there" (seed B's crash case 6).

Layout of a store (4 KiB blocks):
    0                      superblock
    [journal]              journal superblock + circular journal area (protocol "journal" only)
    object map             one 136-byte entry per file id: two origin slots, birth, name
    bitmap                 the global freelist, one bit per block
    data start ...         origins, used lists, map nodes and data blocks, all allocated
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field

import crc32c as _crc

from .device import BLOCK_SIZE
from .errors import CorruptError, FieldError

MAGIC = b"BJRN"
VERSION = 1
HEADER = struct.Struct("<4sHHI")  # magic, type, version, crc32c
HDR = HEADER.size
PAYLOAD = BLOCK_SIZE - HDR

T_SUPER, T_OBJMAP, T_BITMAP, T_ORIGIN, T_USEDLIST, T_MAPNODE, T_JSUPER, T_TXN = range(1, 9)
TYPE_NAMES = {T_SUPER: "superblock", T_OBJMAP: "object map", T_BITMAP: "bitmap", T_ORIGIN: "origin",
              T_USEDLIST: "used list", T_MAPNODE: "block index map", T_JSUPER: "journal superblock",
              T_TXN: "journal transaction"}

PROTOCOLS = ("journal", "ordered", "none")
BARRIERS = ("flush", "fua")


def crc32c(data) -> int:
    return _crc.crc32c(data)


def seal(btype: int, payload: bytes) -> bytes:
    """A whole metadata block: header + payload (zero padded) with its crc filled in."""
    if len(payload) > PAYLOAD:
        raise ValueError(f"{TYPE_NAMES[btype]} payload of {len(payload)} bytes does not fit a block")
    body = HEADER.pack(MAGIC, btype, VERSION, 0) + payload + bytes(PAYLOAD - len(payload))
    return body[:8] + struct.pack("<I", crc32c(body)) + body[12:]


def reseal(block: bytearray) -> None:
    """Recompute the crc of a block image edited in place."""
    block[8:12] = b"\0\0\0\0"
    block[8:12] = struct.pack("<I", crc32c(block))


def check(raw: bytes, btype: int, where: int | str) -> memoryview:
    """Verify a metadata block and return its payload; CorruptError names the block and the fault."""
    magic, t, version, crc = HEADER.unpack_from(raw)
    name = TYPE_NAMES.get(btype, str(btype))
    if magic != MAGIC:
        raise CorruptError(f"block {where}: bad magic for {name} ({magic!r})")
    if t != btype:
        raise CorruptError(f"block {where}: expected {name}, found type {TYPE_NAMES.get(t, t)}")
    if version != VERSION:
        raise CorruptError(f"block {where}: {name} has unsupported version {version}")
    body = bytearray(raw)
    body[8:12] = b"\0\0\0\0"
    if crc32c(body) != crc:
        raise CorruptError(f"block {where}: {name} checksum mismatch")
    return memoryview(raw)[HDR:]


def block_type(raw: bytes) -> int | None:
    """The type of a valid metadata block, or None (data, garbage, torn)."""
    try:
        _, t, _, _ = HEADER.unpack_from(raw)
        check(raw, t, "?")
        return t
    except (CorruptError, struct.error):
        return None


@dataclass(frozen=True)
class Superblock:
    """Block 0: geometry, protocol and barrier kind, fixed at mkfs."""

    FMT = struct.Struct("<QBB6xQQQQQQQ16s")
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

    @property
    def max_files(self) -> int:
        return self.objmap_blocks * OBJ_PER_BLOCK

    def pack(self) -> bytes:
        return seal(T_SUPER, self.FMT.pack(
            self.nblocks, PROTOCOLS.index(self.protocol), BARRIERS.index(self.barrier),
            self.journal_start, self.journal_blocks, self.objmap_start, self.objmap_blocks,
            self.bitmap_start, self.bitmap_blocks, self.data_start, self.uuid))

    @classmethod
    def unpack(cls, raw: bytes) -> "Superblock":
        (n, p, b, js, jb, os_, ob, bs, bb, ds, uuid) = cls.FMT.unpack_from(check(raw, T_SUPER, 0))
        if p >= len(PROTOCOLS) or b >= len(BARRIERS):
            raise CorruptError("block 0: superblock names an unknown protocol or barrier kind")
        sb = cls(n, PROTOCOLS[p], BARRIERS[b], js, jb, os_, ob, bs, bb, ds, uuid)
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
OBJ = struct.Struct("<QQQH110s")  # origin slot a, origin slot b, birth, name length, name
OBJ_PER_BLOCK = PAYLOAD // OBJ.size  # 30
MAX_NAME = 110
MAX_OBJMAP_BLOCKS = 1 << 16  # ~2 million files; geometry() lays out at most 137 blocks (4096 files)


@dataclass(frozen=True)
class ObjEntry:
    """One file: where its origin lives (two slots in "ordered", one in "journal") and its name.

    `birth` is a store-wide creation counter copied into the origin, so an origin slot that still
    holds a deleted file's valid origin is never mistaken for this file's.  A freed entry keeps
    its last birth (origin slots 0), so the counter -- the maximum over all entries -- never goes
    back after a delete and a reopen.
    """

    origin_a: int = 0
    origin_b: int = 0
    birth: int = 0
    name: str = ""

    @property
    def in_use(self) -> bool:
        return self.origin_a != 0

    def pack(self) -> bytes:
        nm = self.name.encode()
        return OBJ.pack(self.origin_a, self.origin_b, self.birth, len(nm), nm)

    @classmethod
    def unpack(cls, raw, where="?") -> "ObjEntry":
        a, b, birth, n, nm = OBJ.unpack(raw)
        if n > MAX_NAME:
            raise CorruptError(f"object map entry {where}: name length {n} too long")
        try:
            return cls(a, b, birth, nm[:n].decode())
        except UnicodeDecodeError:
            raise CorruptError(f"object map entry {where}: name is not UTF-8") from None


# --- origin: one per file (two alternating slots under "ordered") ---
ROOT_SLOTS = 128
FANOUT_BITS = 8
FANOUT = 1 << FANOUT_BITS
MAX_HEIGHT = 4


def map_capacity(height: int) -> int:
    """File blocks a block index map of this height covers (so a file size can be range-checked)."""
    return ROOT_SLOTS << (FANOUT_BITS * height)


MAX_FILE_SIZE = map_capacity(MAX_HEIGHT) * BLOCK_SIZE  # 2^51 bytes: the largest file a map addresses


@dataclass(frozen=True)
class Origin:
    """A file's origin block: size, map root, used list head, and (ordered) the slot generation."""

    FMT = struct.Struct("<QQQQQQB7x")  # file id, birth, generation, size, mtime_ns, used list head, height
    file_id: int
    birth: int
    gen: int
    size: int
    mtime_ns: int
    usedlist: int
    height: int
    root_blocks: tuple = field(default=(0,) * ROOT_SLOTS)
    root_crcs: tuple = field(default=(0,) * ROOT_SLOTS)

    def pack(self) -> bytes:
        head = self.FMT.pack(self.file_id, self.birth, self.gen, self.size, self.mtime_ns, self.usedlist, self.height)
        return seal(T_ORIGIN, head + array("Q", self.root_blocks).tobytes() + array("I", self.root_crcs).tobytes())

    @classmethod
    def unpack(cls, raw, where="?") -> "Origin":
        p = check(raw, T_ORIGIN, where)
        fid, birth, gen, size, mtime, ul, height = cls.FMT.unpack_from(p)
        o = cls.FMT.size
        blocks = array("Q", bytes(p[o:o + 8 * ROOT_SLOTS]))
        crcs = array("I", bytes(p[o + 8 * ROOT_SLOTS:o + 12 * ROOT_SLOTS]))
        if height > MAX_HEIGHT:
            raise FieldError(f"block {where}: origin has impossible map height {height}")
        if size > MAX_FILE_SIZE:
            raise FieldError(f"block {where}: origin size {size} exceeds the largest file a map can address "
                             f"({MAX_FILE_SIZE} bytes)")
        return cls(fid, birth, gen, size, mtime, ul, height, tuple(blocks), tuple(crcs))


class MapNode:
    """A block index map node: FANOUT (block, crc32c) pairs; at height 1 they point at data blocks.

    Mutable in memory (arrays) because a large write edits thousands of entries; pack()/unpack()
    are the on-disk boundary.
    """

    __slots__ = ("blocks", "crcs")

    def __init__(self, blocks=None, crcs=None):
        self.blocks = blocks if blocks is not None else array("Q", bytes(8 * FANOUT))
        self.crcs = crcs if crcs is not None else array("I", bytes(4 * FANOUT))

    def copy(self) -> "MapNode":
        return MapNode(array("Q", self.blocks), array("I", self.crcs))

    def pack(self) -> bytes:
        return seal(T_MAPNODE, self.blocks.tobytes() + self.crcs.tobytes())

    @classmethod
    def unpack(cls, raw, where="?") -> "MapNode":
        p = check(raw, T_MAPNODE, where)
        return cls(array("Q", bytes(p[:8 * FANOUT])), array("I", bytes(p[8 * FANOUT:12 * FANOUT])))


UL_SLOTS = (PAYLOAD - 8) // 8  # 509 block ids after the next pointer


class UsedListBlock:
    """One block of a file's used list: a next pointer and slots of owned block ids (0 = empty).

    Removal zeroes a slot in place and addition fills the first empty slot, so every change is a
    single-block write: a crash can never leave an entry half-moved between two blocks.
    """

    __slots__ = ("next", "slots")

    def __init__(self, next_block: int = 0, slots=None):
        self.next = next_block
        self.slots = slots if slots is not None else array("Q", bytes(8 * UL_SLOTS))

    def pack(self) -> bytes:
        return seal(T_USEDLIST, struct.pack("<Q", self.next) + self.slots.tobytes())

    @classmethod
    def unpack(cls, raw, where="?") -> "UsedListBlock":
        p = check(raw, T_USEDLIST, where)
        return cls(struct.unpack_from("<Q", p)[0], array("Q", bytes(p[8:8 + 8 * UL_SLOTS])))


BITS_PER_BITMAP = PAYLOAD * 8


@dataclass(frozen=True)
class JournalSuper:
    """First block of the journal: where the live log starts (tail), the sequence number found
    there, and the commit checksum of the transaction before it (the start of the hash chain)."""

    FMT = struct.Struct("<QQI")
    tail_seq: int
    tail_pos: int
    tail_prev: int = 0

    def pack(self) -> bytes:
        return seal(T_JSUPER, self.FMT.pack(self.tail_seq, self.tail_pos, self.tail_prev))

    @classmethod
    def unpack(cls, raw, where="?") -> "JournalSuper":
        return cls(*cls.FMT.unpack_from(check(raw, T_JSUPER, where)))


def geometry(nblocks: int, protocol: str, barrier: str, *, max_files: int | None = None,
             journal_blocks: int | None = None, uuid: bytes = bytes(16)) -> Superblock:
    """Lay out a store of `nblocks` blocks: the journal gets 1/16 of the device (64 .. 32768 blocks)."""
    if protocol not in PROTOCOLS:
        raise ValueError(protocol)
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
                      bitmap_start, bitmap_blocks, data_start, uuid)


def is_own_store(path: str) -> bool:
    """True if `path` starts with a valid blkjournal superblock (read without O_DIRECT: a probe)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(BLOCK_SIZE)
        if len(raw) < BLOCK_SIZE:
            return False
        Superblock.unpack(raw)
        return True
    except (OSError, CorruptError):
        return False
