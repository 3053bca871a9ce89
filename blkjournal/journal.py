"""The journal (seed B, made cheap): one checksummed transaction per operation, ordered data.

A transaction is a run of contiguous journal blocks.  Its first block is the descriptor: sequence
number, length, and `commit`, a crc32c over everything the transaction says -- the byte-range
records of the metadata it changes and the crc32c of every data block it orders.  There is no
separate commit block: a transaction is committed exactly when all of its blocks *and* the data
blocks it names read back with the checksums it promises.  So the writer needs no barrier between
data, records and commit; one flush makes all of them durable at once (DESIGN §3, "the physical
minimum"), and a crash that keeps only some of them leaves a transaction recovery refuses.

Records are deltas (home block, offset, bytes), not whole block images, so appending 4 KiB to a
file costs one data block and one journal block.  A block first allocated in a transaction is
logged whole, so replay never depends on what its home held before.

Verbs, in the order of a transaction's life (cf. xv6 log.c):
    encode()      build the blocks of a transaction
    append()      write them at the head of the circular log
    checkpoint()  (protocols.py) write the changed metadata home, then advance the tail here
    replay()      at open: walk the log from the tail, return every committed transaction
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from dataclasses import dataclass
from operator import itemgetter

from . import memo
from .device import BLOCK_SIZE, AtLeast, BlockDevice
from .errors import CorruptError, FieldError, MisdirectedError, NoSpaceError, StaleBlockError
from .format import (FRAMED_PAYLOAD, HDR, HEADER, JSB_CRCS, MAGIC, T_BITMAP, T_OBJMAP, T_TXN, VERSION, JournalSuper,
                     Superblock, check, crc32c, frame, damaged_sector, reframe, unframe, weak_detection)

DESC = struct.Struct("<QIIIIIQ")  # seq, nblocks, ndata, nrecords, prev (commit of the txn before), commit, durable
COMMITTED = struct.Struct("<QIIQ")  # what `commit` covers before the stream: seq, nblocks, prev, durable
DATA = struct.Struct("<QI")  # data block, crc32c
REC = struct.Struct("<QHH")  # home block, offset, length


@memo.immutable  # tuples of plain values: a memoised decode is kept without walking them
@dataclass(frozen=True)
class Txn:
    """A decoded transaction: metadata deltas and the data blocks it orders."""

    seq: int
    pos: int
    nblocks: int
    data: tuple  # ((block, crc), ...)
    records: tuple  # ((home, offset, bytes), ...)
    commit: int = 0
    inline: tuple = ()  # the data blocks it carries whole (its WHOLE_DATA records' homes), in order


_FIRST, _SECOND = itemgetter(0), itemgetter(1)
ZERO_FILL = 0xFFFF  # record offset meaning "this block starts as zeros" (a freshly allocated block)
WHOLE_DATA = 0xFFFE  # record offset meaning "these BLOCK_SIZE bytes are a data block, whole" (inline data)
_ZERO = bytes(BLOCK_SIZE)
_PAD = bytes(FRAMED_PAYLOAD)  # a transaction block's payload padding


def delta(old: bytes | None, new: bytes, chunk: int = 64) -> list[tuple[int, bytes]]:
    """Byte ranges where `new` differs from `old`, merged.

    old=None means the block is fresh: its home holds anything, so the record starts with a
    zero-fill and then carries only the non-zero ranges (a new used list block is mostly zeros).
    """
    if old is None:
        if chunk == _CHUNK and len(new) == BLOCK_SIZE and isinstance(new, bytes):
            return [(ZERO_FILL, b"")] + (_delta_fresh(new) if new != _ZERO else [])
        return [(ZERO_FILL, b"")] + delta(_ZERO, new, chunk)
    if old == new:
        return []
    return _runs(new, (off for big in range(0, BLOCK_SIZE, 512) if old[big:big + 512] != new[big:big + 512]
                       for off in range(big, big + 512, chunk) if old[off:off + chunk] != new[off:off + chunk]),
                 chunk)  # (equal 512-byte stretches skipped at C speed)


def _runs(new, offs, chunk: int = 64) -> list[tuple[int, bytes]]:
    """The records of new's chunks at `offs` (ascending): (offset, bytes), adjacent ones merged."""
    out: list[tuple[int, bytes]] = []
    lo = hi = -1  # the range being merged
    for off in offs:
        if off == hi:
            hi = off + chunk
        else:
            if hi > 0:
                out.append((lo, new[lo:hi]))
            lo, hi = off, off + chunk
    if hi > 0:
        out.append((lo, new[lo:hi]))
    return out


_CHUNK = 64
_ZERO_CHUNK = bytes(_CHUNK)
STRICT_HINTS_ENV = "BLKJOURNAL_STRICT_HINTS"  # test-only: a wrong hint raises instead of falling back


class _HintStats:
    """How commits took their deltas (tests read it): from a hint, or whole (`delta`).  One
    object's slots, not a class's attributes: every metadata block a commit records counts one,
    and setting an attribute of a class costs ten times as much (it invalidates its type caches)."""

    __slots__ = ("hinted", "missed")

    def __init__(self) -> None:
        self.hinted = 0
        self.missed = 0  # a hint that left out a changed chunk: the whole delta was taken instead


HintStats = _HintStats()


def delta_in(old: bytes, new: bytes, chunks) -> list[tuple[int, bytes]] | None:
    """delta(old, new) found by comparing only `chunks` (64-byte aligned offsets, ascending,
    no repeats): the chunks the metadata object that packed `new` knows it may have changed
    since it packed `old` (a commit's five metadata blocks each change in two to four chunks
    of 64; comparing those costs a fifth of comparing the block).

    The answer is proven, not trusted: `old` with the records applied must be `new`.  Then
    every chunk that differs was among `chunks` (one that was not would still be old), so the
    records -- the differing ones among them, merged into runs in ascending order -- are
    exactly delta()'s.  A hint that fails the proof gives None (the caller takes delta());
    with BLKJOURNAL_STRICT_HINTS=1 (the test suite) it raises, so a tracking bug is seen."""
    out: list[tuple[int, bytes]] = []
    img = bytearray(old)  # old, the records applied as they are made
    lo = hi = -1
    for off in chunks:
        nxt = off + _CHUNK
        piece = new[off:nxt]
        if not old.startswith(piece, off):  # (old's chunk compared where it lies: no copy of it)
            img[off:nxt] = piece
            if off == hi:
                hi = nxt
            else:
                if hi > 0:
                    out.append((lo, new[lo:hi]))
                lo, hi = off, nxt
    if hi > 0:
        out.append((lo, new[lo:hi]))
    if img != new:
        HintStats.missed += 1
        if os.environ.get(STRICT_HINTS_ENV) == "1":
            raise AssertionError(f"internal: a delta hint {list(chunks)} leaves out a changed chunk: "
                                 f"{[o for o, _ in delta(old, new)]} differ")
        return None
    HintStats.hinted += 1
    return out


def chunks_of(ranges) -> list[int]:
    """The 64-byte chunk offsets, ascending, that byte ranges [(lo, hi), ...] touch."""
    out = set()
    for lo, hi in ranges:
        out.update(range(lo & -_CHUNK, hi, _CHUNK))
    return sorted(out)


def _delta_fresh(new) -> list[tuple[int, bytes]]:
    """delta(zeros, new) for a whole block, at C speed: the same records (the maximal runs of
    64-byte chunks that are not all zeros), bounded by the block's first and last non-zero
    bytes, a chunk inside being all zeros only where `new` holds a run of at least 64 zero
    bytes -- instead of testing chunk after chunk in Python.  A commit logs every block it
    allocates this way (a 1 MiB write's new map node is 49 non-zero chunks)."""
    lo = (BLOCK_SIZE - len(new.lstrip(b"\0"))) // _CHUNK * _CHUNK  # the chunk of the first non-zero byte
    hi = -(-len(new.rstrip(b"\0")) // _CHUNK) * _CHUNK  # the end of the chunk of the last
    out = []
    i = new.find(_ZERO_CHUNK, lo, hi)
    while i >= 0:
        end = hi - len(new[i:hi].lstrip(b"\0"))  # zeros from i to end
        a, b = -(-i // _CHUNK) * _CHUNK, end // _CHUNK * _CHUNK  # the whole chunks they hold
        if a < b:
            out.append((lo, new[lo:a]))
            lo = b
        i = new.find(_ZERO_CHUNK, end, hi)
    out.append((lo, new[lo:hi]))
    return out


@memo.pure
def patched(raw: bytes, records: tuple) -> bytes:
    """`raw` (a home's content) with journal records ((offset, bytes), in order) applied: replay's
    image of the home.  Recovery and fsck both build homes with it; the explorer asks again for
    every content a torn home may have, and state after state for the same ones."""
    img = bytearray(raw)
    for off, buf in records:
        if off == WHOLE_DATA:
            img[:] = buf
        elif off == ZERO_FILL:
            img[:] = _ZERO
        else:
            img[off:off + len(buf)] = buf
    return bytes(img)


def _nblocks(stream_len: int) -> int:
    return 1 + max(0, -(-(stream_len - (FRAMED_PAYLOAD - DESC.size)) // FRAMED_PAYLOAD))


class DataCrcs:
    """The (block, crc32c) pairs of the data blocks a transaction orders, in block order, held as
    the runs the operation wrote -- (first block, array of crcs) -- and never expanded into pairs
    on the commit path: a 1 MiB write orders 256 blocks, and a tuple per block cost as much as
    packing them.  Behaves as the list of pairs (len, iteration, indexing, ==)."""

    __slots__ = ("runs", "_n")

    def __init__(self, runs) -> None:
        self.runs = runs
        self._n = sum(len(c) for _, c in runs)

    def __len__(self) -> int:
        return self._n

    def __iter__(self):
        for first, crcs in self.runs:
            yield from zip(range(first, first + len(crcs)), crcs)

    def __getitem__(self, i):
        return list(self)[i]

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


def pack_data(data) -> bytes:
    """The DATA records of `data` ((block, crc32c) pairs, or DataCrcs) as bytes, in bulk for a
    long list: a streaming write orders 65,536 data blocks per 256 MiB, and a pack call per record
    cost about as much as computing their crcs.  The same bytes as packing each record."""
    if len(data) < 64 or sys.byteorder != "little":
        return b"".join(DATA.pack(b, c) for b, c in data)
    if isinstance(data, DataCrcs):
        blocks, crcs = array("Q"), array("I")
        for first, c in data.runs:
            blocks.extend(range(first, first + len(c)))
            crcs.extend(c)
    else:
        blocks, crcs = array("Q", map(_FIRST, data)), array("I", map(_SECOND, data))
    out = bytearray(DATA.size * len(data))
    words, halves = memoryview(out).cast("I"), memoryview(blocks).cast("B").cast("I")
    words[0::3], words[1::3], words[2::3] = halves[0::2], halves[1::2], memoryview(crcs)
    return bytes(out)


def txn_stream(data, records) -> bytes:
    """What a transaction's blocks carry after its descriptor: the DATA records of `data`, then
    each metadata record (REC header, bytes).  Built once per commit: its length places the
    transaction (stream_blocks), and encode() frames the same bytes."""
    parts = [pack_data(data)] if len(data) else []  # (an inline write orders no data blocks)
    pack = REC.pack
    for h, off, buf in records:
        parts += (pack(h, off, len(buf)), buf)
    return b"".join(parts)


def stream_bound(ndata: int, nmeta: int) -> int:
    """A bound on the journal blocks of a transaction ordering `ndata` data blocks and recording
    at most `nmeta` metadata blocks, whatever their contents: a block's records (delta()) are at
    most 32 byte ranges of at least 64 bytes, 4096 bytes in all, plus a zero-fill record, each
    behind a REC header."""
    return _nblocks(DATA.size * ndata + nmeta * (33 * REC.size + BLOCK_SIZE))


def stream_blocks(stream: bytes) -> int:
    """How many journal blocks a transaction carrying `stream` takes."""
    return _nblocks(len(stream))


def encode(seq: int, prev: int, data: list[tuple[int, int]], records: list[tuple[int, int, bytes]], *,
           at: int, durable: int = 0, stream: bytes | None = None) -> tuple[list[bytes], int]:
    """The blocks of one transaction (descriptor first) to be written from block `at`, and its
    commit checksum.  Each block's header names its own address and the sequence number, and each
    block is framed per sector (format.frame): replay tells a torn write from damage.

    `durable` is the newest transaction known durable (flushed, or completed FUA) as this one is
    written: evidence that lets replay tell a damaged durable transaction from a torn tail.
    `stream` is txn_stream(data, records) when the caller has built it already."""
    if stream is None:
        stream = txn_stream(data, records)
    first_room = FRAMED_PAYLOAD - DESC.size
    nblocks = _nblocks(len(stream))
    commit = crc32c(stream, crc32c(COMMITTED.pack(seq, nblocks, prev, durable)))  # (no copy of the stream)
    # each block's header and payload laid out whole (frame()'s, padded: format.reframe takes it as is)
    blocks = [reframe(b"".join((HEADER.pack(MAGIC, T_TXN, VERSION, 0, at, seq),
                                DESC.pack(seq, nblocks, len(data), len(records), prev, commit, durable),
                                stream[:first_room], _PAD[:max(0, first_room - len(stream))])), at)]
    for k, i in enumerate(range(first_room, len(stream), FRAMED_PAYLOAD), 1):
        piece = stream[i:i + FRAMED_PAYLOAD]
        blocks.append(reframe(b"".join((HEADER.pack(MAGIC, T_TXN, VERSION, 0, at + k, seq), piece,
                                        _PAD[:FRAMED_PAYLOAD - len(piece)])), at + k))
    return blocks, commit


def blank(block: int) -> bytes:
    """What mkfs writes into every journal slot: a framed transaction block of generation 0, which
    no transaction's sequence number matches.  So every later write to a slot lands on a framed
    block, and a torn one leaves every sector passing its own crc (see damaged())."""
    return frame(T_TXN, b"", block, 0)


def damaged(raw, block: int, seq: int, prev: int | None, *, only_proven: bool = False) -> int | None:
    """The first sector failing its own crc when block `block` of transaction `seq` is damaged
    (bit rot, garbage sectors), else None.  No sector failing: a torn write (each sector old or
    new).  Every sector failing: no framed block was ever there (a foreign write).  Some failing:
    damage -- unless sector 0 passes and its header (and, for a descriptor, `prev`) shows another
    transaction's block, an older lap of the log: damage to a dead block is no loss.  With
    `only_proven`, a block whose sector 0 failed counts as unknown, not damage."""
    s = damaged_sector(raw, block)
    if s is None:
        return None
    if s == 0:
        return None if only_proven else 0
    magic, t, _, _, own, gen = HEADER.unpack_from(raw)
    if magic != MAGIC or t != T_TXN or own != block or gen != seq:
        return None
    if prev is not None:
        d = DESC.unpack_from(raw, HDR)  # header and descriptor lie in sector 0
        if d[0] != seq or d[4] != prev:
            return None
    return s


@memo.pure
def _decode(seq: int, pos: int, blocks: list[bytes], desc, at: int) -> Txn | None:
    _, nblocks, ndata, nrec, prev, commit, durable = desc
    try:
        for k, b in enumerate(blocks):
            check(b, T_TXN, at + k, gen=seq)
    except CorruptError:
        return None
    payloads = [unframe(b)[HDR:] for b in blocks]
    stream = payloads[0][DESC.size:] + b"".join(payloads[1:])
    if ndata * DATA.size + nrec * REC.size > len(stream):
        return None  # counts that overrun the transaction: not a committed one (its commit cannot match)
    data = []
    o = 0
    for _ in range(ndata):
        data.append(DATA.unpack_from(stream, o))
        o += DATA.size
    recs = []
    for _ in range(nrec):
        if o + REC.size > len(stream):
            return None
        h, off, n = REC.unpack_from(stream, o)
        o += REC.size
        if o + n > len(stream) or (n != BLOCK_SIZE if off == WHOLE_DATA else off + n > BLOCK_SIZE and off != ZERO_FILL):
            return None
        recs.append((h, off, stream[o:o + n]))
        o += n
    if crc32c(COMMITTED.pack(seq, nblocks, prev, durable) + stream[:o]) != commit:
        return None
    return Txn(seq, pos, nblocks, tuple(data), tuple(recs), commit, tuple(h for h, off, _ in recs if off == WHOLE_DATA))


@memo.pure  # asked of every journal block replay reads, state after state
def _damage_refusal(raw, block: int, k: int, seq: int, prev: int | None, only_proven: bool) -> str | None:
    """Why block `block` (block `k` of transaction `seq`) is refused as damaged, or None."""
    if weak_detection():  # format 1's detection: a block crc only
        return None
    _refuse_misdirected(raw, block)
    s = damaged(raw, block, seq, prev, only_proven=only_proven)
    if s is None:
        return None
    return f"journal transaction {seq}: block {block} (its block {k}): sector {s} fails its own crc (damage, not a torn write)"


@memo.pure
def _whole_at(raw, block: int) -> bool:
    """Does the transaction block read from `block` pass every check of its own (written whole)?"""
    try:
        check(raw, T_TXN, block)
        return True
    except CorruptError:
        return False


def _read_txn_blocks(read, start: int, first: bytes, n: int, chunk: int = 64,
                     look=None) -> list[bytes] | None:
    """The n blocks of a transaction, read a chunk at a time; None at the first that is not a
    transaction block, so a descriptor claiming thousands of blocks costs one chunk, not all.
    `look(k, raw)` sees each block k >= 1 first (to refuse damage before a bad magic hides it)."""
    blocks = [first]
    while len(blocks) < n:
        k = min(chunk, n - len(blocks))
        raw = read(start + len(blocks), k)
        for i in range(k):
            b = raw[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]
            if look is not None:
                look(len(blocks), b)
            if b[:4] != MAGIC or HEADER.unpack_from(b)[1] != T_TXN:
                return None
            blocks.append(b)
    return blocks


class Journal:
    """Position bookkeeping for the circular log; the device I/O is the caller's (protocols.py).

    Transactions form a hash chain: each descriptor carries the commit checksum of the one before
    (the journal superblock holds the first link).  So a transaction left behind by an earlier
    crash -- torn then, perhaps whole now that later writes landed around it -- can never be
    taken as the continuation of the log: its link names a predecessor that is not the one
    replayed.  Replay therefore follows only the chain; the rest of the area is only searched for evidence
    of a loss when the chain ends (_no_durable_successor).
    """

    def __init__(self, sb: Superblock) -> None:
        self.data_area = range(sb.data_start, sb.nblocks)
        self.jsb_block = sb.journal_start
        self.fixed = list(range(sb.objmap_start, sb.data_start))[:JSB_CRCS]  # blocks whose crc the jsb keeps
        self.fixed_crcs: tuple = ()  # as the last checkpoint left them
        self.bitmap_start = sb.bitmap_start
        self.area = sb.journal_start + 1
        self.size = sb.journal_blocks - 1
        self.tail_pos = 0
        self.tail_seq = 1
        self.tail_prev = 0
        self.head_pos = 0
        self.next_seq = 1
        self.prev = 0  # commit checksum of the newest transaction
        self.used = 0  # blocks from tail to head, including any skipped at a wrap
        self.durable = 0  # the newest transaction known durable (what the next descriptor claims)
        self.fua = sb.barrier == "fua"  # a transaction is written only once its data's FUA completed

    def load_super(self, dev: BlockDevice) -> None:
        js = JournalSuper.unpack(dev.read(self.jsb_block), self.jsb_block)
        if js.tail_pos >= self.size:
            raise CorruptError(f"block {self.jsb_block}: journal tail {js.tail_pos} outside the journal")
        self.tail_pos, self.tail_seq, self.tail_prev = js.tail_pos, js.tail_seq, js.tail_prev
        self.fixed_crcs = js.crcs
        self.head_pos, self.next_seq, self.prev, self.used = js.tail_pos, js.tail_seq, js.tail_prev, 0
        self.durable = js.tail_seq - 1

    def blanks(self) -> bytes:
        """The whole log area as mkfs writes it, one framed blank per slot (see blank()): from
        then on every slot holds a framed block -- a blank or a transaction block of an older
        lap, which checkpoints never rewrite -- and a torn write over any slot is told from damage."""
        return b"".join(blank(self.area + p) for p in range(self.size))

    def super_image(self, crcs: tuple) -> bytes:
        """The journal superblock for the current tail; `crcs` of the fixed blocks, as checkpointed."""
        self.fixed_crcs = crcs
        return JournalSuper(self.tail_seq, self.tail_pos, self.tail_prev, crcs).pack(self.jsb_block)

    def check_fixed(self, read, replayed) -> list[tuple[int, CorruptError]]:
        """The fixed blocks no replayed transaction rewrites that are not what the last checkpoint
        wrote (a lost or misdirected home write): [(block, error naming the fault)]."""
        bad = []
        for b, crc in zip(self.fixed, self.fixed_crcs):
            if b not in replayed:
                try:
                    check(read(b), T_OBJMAP if b < self.bitmap_start else T_BITMAP, b, crc=crc)
                except CorruptError as e:
                    bad.append((b, e))
        return bad

    def place(self, nblocks: int) -> int | None:
        """Where a transaction of nblocks goes next, or None when the log must be checkpointed."""
        if nblocks > self.size:
            raise NoSpaceError(f"transaction of {nblocks} blocks exceeds the journal ({self.size} blocks)")
        pos, skip = self.head_pos, 0
        if pos + nblocks > self.size:
            pos, skip = 0, self.size - self.head_pos
        if self.used + skip + nblocks > self.size:
            return None
        return pos

    def fits(self, nblocks: int) -> bool:
        """Would a transaction of nblocks be placed now without a checkpoint?  (place() is
        monotone: when nblocks fits, so does any smaller transaction.)"""
        return nblocks <= self.size and self.place(nblocks) is not None

    def advance(self, pos: int, nblocks: int, commit: int) -> None:
        skip = self.size - self.head_pos if pos != self.head_pos else 0
        self.used += skip + nblocks
        self.head_pos = pos + nblocks
        if self.head_pos == self.size:
            self.head_pos = 0
        self.next_seq += 1
        self.prev = commit

    def retire(self) -> None:
        """Everything up to the head is checkpointed: the live log is empty again."""
        self.tail_pos, self.tail_seq, self.tail_prev, self.used = self.head_pos, self.next_seq, self.prev, 0

    def replay(self, dev: BlockDevice, verify_data=True) -> list[Txn]:
        """Every committed transaction from the tail on, in order; stops at the first that is not.

        A transaction counts only if it sits where the log continues (at the head, or at block 0
        after a wrap), carries the expected sequence number and link, all its blocks check,
        `commit` matches, and every data block it orders has the crc it names.

        Taken one transaction at a time (`_step`, a function of the position and of what it
        reads): the explorer's checks replay the same committed transactions state after state
        and differ near the log's end, so each resumes a former replay after the last
        transaction whose reads match (memo.stepped) and replays only the rest.
        """
        key = (self.area, self.size, self.data_area.start, self.data_area.stop, self.fua, bool(verify_data))
        start = (self.tail_pos, self.tail_seq, self.tail_prev, 0, ())
        pos, seq, prev, used, txns = memo.stepped("journal.replay", key, dev.read, start,
                                                  lambda state, read: self._step(state, read, verify_data))
        self.head_pos, self.next_seq, self.prev, self.used = pos, seq, prev, used
        if used < self.size:
            self._no_durable_successor(dev, pos, seq, prev)
        return list(txns)

    def _step(self, state: tuple, read, verify_data) -> tuple[tuple, bool]:
        """One transaction of replay: ((pos, seq, prev, used, txns), done) after the transaction
        at `pos` -- the same state and done when none continues the log there.  `read(b, n=1)`
        reads n blocks; nothing else of the device is looked at."""
        pos, seq, prev, used, txns = state
        if used >= self.size:
            return state, True
        txn = None
        for p in ((pos, 0) if pos else (pos,)):
            first = read(self.area + p)
            self._refuse_damage(first, p, 0, seq, prev, only_proven=p != pos)  # before any field is trusted
            magic, t = HEADER.unpack_from(first)[:2]
            if magic != MAGIC or t != T_TXN:
                continue
            d = DESC.unpack_from(first, HEADER.size)
            if d[0] != seq or d[4] != prev or not 0 < d[1] <= self.size - p:
                continue
            n = d[1]
            look = None
            if self._whole(first, p):  # the descriptor was written whole: its later blocks count
                def look(k, raw, p=p, seq=seq):
                    self._refuse_damage(raw, p + k, k, seq, None)
            blocks = _read_txn_blocks(read, self.area + p, first, n, look=look)
            txn = _decode(seq, p, blocks, d, self.area + p) if blocks else None
            bad = next((b for b, _ in txn.data if b not in self.data_area), None) if txn else None
            if bad is None and txn:
                bad = next((b for b in txn.inline if b not in self.data_area), None)
            if bad is not None:
                raise FieldError(f"journal transaction {seq} names data block {bad}, outside the data area")
            if txn and verify_data and not all(crc32c(read(b)) == c for b, c in txn.data):
                self._refuse_lost_data(read, txn)
                txn = None
            if txn:
                skip = self.size - pos if p != pos else 0
                if used + skip + n > self.size:
                    txn = None
                else:
                    used += skip + n
                break
        if txn is None:
            return state, True
        pos = txn.pos + txn.nblocks
        if pos == self.size:
            pos = 0
        return (pos, seq + 1, txn.commit, used, txns + (txn,)), used >= self.size

    def _refuse_lost_data(self, read, txn: Txn) -> None:
        """Under fua a transaction is issued only after the FUA writes of its data completed, so a
        whole, committed transaction whose data fails its crc is not a torn tail: the data was
        durable and has since been lost, misdirected over or damaged.  Refuse, by name (under
        flush data and transaction share one flush, and a crash may keep either)."""
        if not self.fua or weak_detection():
            return
        b, c = next((b, c) for b, c in txn.data if crc32c(read(b)) != c)
        raise StaleBlockError(f"journal transaction {txn.seq}: data block {b} fails the crc32c its commit promises "
                              f"({c:#010x}), though under fua its data is durable before it is written: a durable "
                              f"data write was lost or damaged")

    def _whole(self, raw, p: int) -> bool:
        return _whole_at(raw, self.area + p)

    def _refuse_damage(self, raw, p: int, k: int, seq: int, prev: int | None, *, only_proven: bool = False) -> None:
        """Refuse, by name, a transaction block at slot `p` (block `k` of transaction `seq`) that is
        damaged rather than torn (see damaged()).  Replay would otherwise stop there as at a torn
        tail and silently roll back a transaction that may have been durable (the last synced
        batch has no successor that could say so).  At block 0, tried only in case the log
        wrapped, only a block sector 0 proves to be `seq`'s counts: there the log may as well
        continue at its head, and block 0 hold a checkpointed transaction."""
        why = _damage_refusal(raw, self.area + p, k, seq, prev, only_proven)
        if why is not None:
            raise CorruptError(why)

    def _no_durable_successor(self, dev: BlockDevice, pos: int, seq: int, prev: int) -> None:
        """Replay stopped at `seq`: a torn tail, unless a later transaction says `seq` was durable
        when it was written.  Then `seq` was damaged after the fact (a lost, misdirected or rotted
        write), and stopping here would silently drop durable transactions: refuse, by name.

        A descriptor claims durability only after a flush (or a completed FUA write) made `seq`
        durable, so any valid one with a later seq and `durable >= seq` is proof.  Such a claimer
        may sit anywhere after `seq`: the transactions between (unflushed ones) may be lost, each
        hole showing an older lap, which looks exactly like the log's end.  So every slot of the
        log is searched (BlockDevice.find: one read of the area on a device; the explorer answers
        it per class of crash states), and a slot holding another block's frame is refused as a
        misdirected write.  A stale claimer left by an earlier crash cannot prove a
        loss: it claims only transactions its run made durable, which replay then replayed, so
        its claim is below every sequence number replay can stop at since."""
        if weak_detection():  # a generation check: off with format 1's detection
            return
        own = None
        try:
            check(dev.read(self.area + pos), T_TXN, self.area + pos, gen=seq)
        except CorruptError as e:
            own = e.with_traceback(None)  # (no cycle through this frame: the check dies by reference counting)
        hit = dev.find(self.area, self.size, AtLeast(_evidence, seq, _evidence_sealed), key=("journal-evidence", seq))
        if hit is None:
            return
        q, raw = hit
        _refuse_misdirected(raw, q)
        if raw[:4] != MAGIC or HEADER.unpack_from(raw)[1] != T_TXN:
            raise MisdirectedError(f"journal slot {q} holds no transaction block (every slot holds one from mkfs "
                                   f"on): a misdirected write landed there, and transaction {seq} may have been lost "
                                   f"under it")
        gen = HEADER.unpack_from(raw)[5]
        cls = type(own) if own else StaleBlockError
        raise cls(f"journal transaction {seq} at block {self.area + pos} fails its checks"
                  f"{f' ({own})' if own else ''}, but transaction {gen} (block {q}), "
                  f"written after it was durable, follows it: a durable transaction was lost or damaged")


def _evidence(raw, block: int):
    """The latest stop of replay that journal slot `block` proves lost something, if its frame
    is sound (`_evidence_sealed`): a search with `AtLeast(_evidence, seq, _evidence_sealed)` asks
    whether replay, stopped at `seq`, did (Journal._no_durable_successor).  Every stop (+inf) if
    the slot holds no transaction frame at all or another block's (a misdirected write: mkfs
    frames every slot, and only transaction frames of the slot's own address are written there
    since); for a transaction, every stop before it up to the last its descriptor claims
    durable; else none (-inf)."""
    if raw[:4] != MAGIC:
        return _ALWAYS  # no frame at all: every slot holds one from mkfs on, so a foreign write landed here
    _, t, _, _, own, gen = HEADER.unpack_from(raw)
    if t != T_TXN or own != block:
        return _ALWAYS  # another kind of block, or another block's frame (if sound): a misdirected write
    d = DESC.unpack_from(raw, HEADER.size)
    if d[0] != gen:
        return _NEVER
    return min(gen - 1, d[6])  # a later transaction (gen > seq) that claims seq durable (d[6] >= seq)


def _evidence_sealed(raw, block: int) -> bool:
    """Is the frame `_evidence` ranked sound?  (Always, for a slot with no transaction frame.)"""
    if raw[:4] != MAGIC:
        return True
    _, t, _, _, own, gen = HEADER.unpack_from(raw)
    if t != T_TXN:
        return True
    try:
        check(raw, T_TXN, own) if own != block else check(raw, T_TXN, block, gen=gen)
        return True
    except CorruptError:
        return False


_ALWAYS, _NEVER = float("inf"), float("-inf")


def _refuse_misdirected(raw, block: int) -> None:
    """A journal slot holding a whole transaction block framed for another address: no crash
    leaves one (every slot is only ever written with its own frames, mkfs's blanks included), so
    it is a misdirected write -- and the transaction meant for this slot may have been durable."""
    if raw[:4] == MAGIC and HEADER.unpack_from(raw)[4] != block:
        try:
            check(raw, T_TXN, block)
        except MisdirectedError as e:
            raise MisdirectedError(f"journal slot {e}") from None
        except CorruptError:
            pass
