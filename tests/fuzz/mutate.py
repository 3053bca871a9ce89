"""Turning a fuzzer's bytes into a damaged input: a small mutation program over a seed.

The fuzzer (atheris, hypothesis or a seeded random loop) hands over raw bytes; `Provider` reads
them as a program -- which seed, which block or line, which field, which value -- so every input
is reproducible from its bytes, and a shrinking fuzzer shrinks the program.  Image mutations
re-seal the block's crc afterwards (and, for a journal descriptor, the transaction's commit), so
the damage gets past the checksums to the code that must range-check every field.
"""

from __future__ import annotations

import json
import struct

import crc32c as _crc

from blkjournal.device import BLOCK_SIZE
from blkjournal.format import HDR, HEADER, MAGIC, T_TXN
from imgedit import reseal

INTERESTING = (0, 1, 2, 3, 7, 8, 127, 128, 255, 256, 511, 512, 4095, 4096, 0x7FFF, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, 1 << 40, (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


class Provider:
    """Reads integers and choices from a byte string; past its end every read is 0."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def more(self) -> bool:
        return self.pos < len(self.data)

    def byte(self) -> int:
        v = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return v

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(bytes(self.byte() for _ in range(nbytes)), "little")

    def below(self, n: int) -> int:
        if n <= 1:
            return 0
        return self.uint(1 if n <= 256 else 2 if n <= 65536 else 4) % n

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, in256: int) -> bool:
        return self.byte() < in256


# --------------------------------------------------------------------------- images
def _value(p: Provider, width: int, near: list[int]) -> int:
    mask = (1 << (8 * width)) - 1
    kind = p.below(4)
    if kind == 0:
        return p.choice(INTERESTING) & mask
    if kind == 1 and near:
        return (p.choice(near) + p.below(5) - 2) & mask  # another block, itself, off by a little
    if kind == 2:
        return p.uint(width)
    return (1 << p.below(8 * width)) & mask


def mutate_image(image: bytes, meta: tuple[int, ...], p: Provider, owned: tuple[int, ...] = ()) -> bytes:
    """1..4 mutations of metadata blocks (or any block), each re-sealed unless the program says not."""
    img = bytearray(image)
    nblocks = len(img) // BLOCK_SIZE
    near = list(meta) + list(owned) + [nblocks, nblocks - 1, 0]
    for _ in range(1 + p.below(4)):
        b = p.choice(meta) if meta and p.chance(230) else p.below(nblocks)
        blk = memoryview(img)[b * BLOCK_SIZE:(b + 1) * BLOCK_SIZE]
        op = p.below(6)
        if op == 0:  # flip one bit anywhere
            i = p.below(BLOCK_SIZE)
            blk[i] ^= 1 << p.below(8)
        elif op in (1, 2, 3):  # an integer field, aligned, in the first 1 KiB of the payload mostly
            width = p.choice((1, 2, 4, 8))
            span = 1024 if p.chance(200) else BLOCK_SIZE - HDR - width
            off = HDR + p.below(span // width) * width
            struct.pack_into(f"<{ {1: 'B', 2: 'H', 4: 'I', 8: 'Q'}[width] }", blk, off, _value(p, width, near))
        elif op == 4:  # another block's bytes here (a misdirected write)
            src = p.choice(meta) if meta else p.below(nblocks)
            blk[:] = bytes(img[src * BLOCK_SIZE:(src + 1) * BLOCK_SIZE])
        else:  # a run of bytes zeroed or set to 0xff
            i, n = p.below(BLOCK_SIZE), 1 + p.below(64)
            fill = p.choice((0, 0xFF))
            blk[i:i + n] = bytes([fill]) * len(blk[i:i + n])
        if bytes(blk[:4]) == MAGIC and not p.chance(16):
            seal_block(img, b)
    return bytes(img)


def seal_block(img: bytearray, b: int) -> None:
    """Re-seal block b; a journal descriptor also gets its transaction's commit recomputed."""
    blk = bytearray(img[b * BLOCK_SIZE:(b + 1) * BLOCK_SIZE])
    t = HEADER.unpack_from(blk)[1]
    if t == T_TXN:
        _reseal_commit(img, b, blk)
    reseal(blk, b)
    img[b * BLOCK_SIZE:(b + 1) * BLOCK_SIZE] = blk


def _reseal_commit(img: bytearray, b: int, desc: bytearray) -> None:
    """Make a descriptor's `commit` match its (possibly damaged) records, where they parse."""
    from blkjournal.journal import DATA, DESC, REC

    seq, nblocks, ndata, nrec, prev = DESC.unpack_from(desc, HDR)[:5]
    if not 0 < nblocks <= 64 or (b + nblocks) * BLOCK_SIZE > len(img):
        return
    stream = bytes(desc[HDR + DESC.size:]) + b"".join(
        bytes(img[(b + k) * BLOCK_SIZE + HDR:(b + k + 1) * BLOCK_SIZE]) for k in range(1, nblocks))
    o = ndata * DATA.size
    if o > len(stream):
        return
    for _ in range(nrec):
        if o + REC.size > len(stream):
            return
        _, _, n = REC.unpack_from(stream, o)
        o += REC.size + n
    if o > len(stream):
        return
    commit = _crc.crc32c(struct.pack("<QII", seq, nblocks, prev) + stream[:o])
    struct.pack_into("<I", desc, HDR + struct.calcsize("<QIIII"), commit)  # the field after prev


# --------------------------------------------------------------------------- JSON text
def _deep(n: int):
    v: list = []
    for _ in range(n):
        v = [v]
    return v


JSON_VALUES = (0, -1, 1, 2, 511, 512, 4096, 1 << 31, 1 << 32, (1 << 53) + 1, 1 << 62, 1 << 63, 1 << 64,
               1 << 70, 10 ** 30, 1.5, -0.0, float("inf"), float("-inf"), float("nan"), "", "x", "x" * 5000,
               "\u00e9\u2028\n", "write", "fua", "flush", "mark", "discard", "put", "delete", "journal",
               "ordered", [], [1, 2], [0, "x"], {}, {"a": 1}, None, True, False)


def _paths(obj, prefix=()):
    yield prefix
    if len(prefix) >= 6:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:64]):
            yield from _paths(v, prefix + (i,))


def mutate_json(obj, p: Provider):
    """One structural change: a value replaced, a key dropped or added, a list shortened."""
    paths = list(_paths(obj))
    path = p.choice(paths)
    new = p.choice(JSON_VALUES) if p.chance(240) else _deep(5000)
    if not path:
        return new
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    op = p.below(8)
    if op == 0 and isinstance(parent, dict):
        del parent[key]
    elif op == 1 and isinstance(parent, dict):
        parent[p.choice(("seq", "kind", "entry", "nblocks", "sector", "ops", "extra", "a", "i", "t"))] = new
    elif op == 2 and isinstance(parent, list):
        del parent[key:]
    else:
        parent[key] = new
    return obj


def dump(obj) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        return b"[" * 5000


def mutate_bytes(raw: bytes, p: Provider) -> bytes:
    """Byte-level damage to a text line: bad UTF-8, truncation, a duplicated run."""
    if not raw:
        return b"\xff"
    i = p.below(len(raw) + 1)
    op = p.below(4)
    if op == 0:
        return raw[:i] + p.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\n")) + raw[i:]
    if op == 1:
        return raw[:i]
    if op == 2:
        return raw + raw[i:]
    return raw[:i] + bytes([p.byte()]) + raw[i + 1:]


def mutate_lines(text: bytes, p: Provider, encode_line) -> bytes:
    """1..3 mutations of a file of JSON lines; `encode_line(obj) -> bytes` re-seals a line."""
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for _ in range(1 + p.below(3)):
        if not lines:
            lines = [b""]
        i = p.below(len(lines))
        op = p.below(8)
        if op <= 4:  # a field changed, the line re-sealed
            try:
                obj = json.loads(_body(lines[i]))
            except (ValueError, RecursionError):  # a line an earlier mutation made unreadable
                continue
            lines[i] = encode_line(mutate_json(obj, p))
        elif op == 5:
            lines[i] = mutate_bytes(lines[i], p)
        elif op == 6:  # a line duplicated or moved
            lines.insert(p.below(len(lines) + 1), lines[i])
        else:
            del lines[i]
    return b"\n".join(lines) + (b"\n" if p.chance(230) else b"")


def _body(line: bytes) -> bytes:
    """A JSON line, without an acks-log crc suffix if it has one."""
    body, sep, crc = line.rpartition(b" ")
    return body if sep and len(crc) == 8 else line


def plain_line(obj) -> bytes:
    return dump(obj)


def acks_line(obj) -> bytes:
    body = dump(obj)
    return body + b" %08x" % _crc.crc32c(body)


# --------------------------------------------------------------------------- dm-log-writes logs
def mutate_log(raw: bytes, p: Provider) -> bytes:
    """1..3 changes to header fields of the log superblock or an entry (sector, nr_sectors, flags,
    data_len), or a byte anywhere; entries are found by walking the log as the reader would."""
    from blkjournal.crash.logwrites import parse_log

    log = bytearray(raw)
    try:
        entries = [e.offset for e in parse_log(bytes(log)).entries]
    except Exception:  # noqa: BLE001 -- a seed always parses; a broken one just gets byte flips
        entries = []
    for _ in range(1 + p.below(3)):
        op = p.below(6)
        if op == 0:  # superblock: nr_entries or sectorsize
            field = p.choice(((16, 8), (24, 4)))
            struct.pack_into("<Q" if field[1] == 8 else "<I", log, field[0], _value(p, field[1], [len(entries)]))
        elif op <= 3 and entries:  # an entry header field
            off = p.choice(entries) + 8 * p.below(4)
            struct.pack_into("<Q", log, off, _value(p, 8, [0, 1, 8, len(log) // 512]))
        elif op == 4 and entries:  # a DISCARD or a flag change on an entry
            off = p.choice(entries)
            struct.pack_into("<Q", log, off + 16, p.choice((1, 2, 4, 8, 16, 3, 5, 0, 32, 1 << 40)))
        else:
            i = p.below(len(log))
            log[i] ^= 1 << p.below(8)
    if p.chance(20):
        log = log[:p.below(len(log) + 1)]
    return bytes(log)
