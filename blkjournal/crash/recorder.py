"""Record every block write the way the kernel's dm-log-writes target would, plus who wrote it.

`LogWritesTarget` is the target's ordering logic as a state machine fed by submit and complete
events: a completed plain write (or discard) is held; an empty flush, when *issued*, takes the
writes completed so far, and when it *completes* logs them in completion order followed by the
FLUSH entry; a FUA write is logged when it completes; a mark is logged at once.  Writes that
complete while a flush is in flight stay held for the next one, as in the kernel.

`RecordingDevice` drives that machine synchronously (the store's I/O is synchronous, so submission
order is completion order) around any `BlockDevice`, and keeps the sidecar `<log>.roles`: one JSON
line per operation in *submission* order with the entry index it ended up at.  The log alone
under-approximates the crash states (DESIGN §4: a plain write submitted before a FUA write is logged
after it), so the crash-state enumerator prefers the sidecar whenever it is present.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

from ..device import BLOCK_SIZE, BlockDevice
from ..errors import BlkError, CorruptError
from ..untrusted import integer, json_object, lines, optional_integer, text
from .logwrites import DISCARD, END_MARK, FLUSH, FUA, MARK, SECTOR_SIZES, LogWriter

SIDECAR_FORMAT = "blkjournal-roles"
SIDECAR_VERSION = 1
KINDS = ("write", "fua", "flush", "discard", "mark")


def sidecar_path(log_path: str | os.PathLike) -> str:
    return os.fspath(log_path) + ".roles"


class Bio:
    """A request as the target sees it; `entry` is set when (if) it reaches the log."""

    __slots__ = ("flags", "sector", "nr_sectors", "data", "text", "spliced", "entry", "on_logged")

    def __init__(self, flags: int, sector: int = 0, nr_sectors: int = 0, data=b"", text: str | None = None,
                 on_logged: Callable[[Bio], None] | None = None) -> None:
        self.flags = flags
        self.sector = sector
        self.nr_sectors = nr_sectors
        self.data = data
        self.text = text
        self.spliced: list[Bio] = []
        self.entry: int | None = None
        self.on_logged = on_logged

    def __repr__(self) -> str:
        return f"Bio(flags={self.flags}, sector={self.sector}, nr_sectors={self.nr_sectors}, entry={self.entry})"


class LogWritesTarget:
    """The dm-log-writes ordering rules, separate from any I/O so they can be tested event by event."""

    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer
        self.unflushed: list[Bio] = []  # completed, not yet claimed by a flush

    def submit(self, bio: Bio) -> Bio:
        """Map time.  A flush claims every write completed before it was issued (and only those)."""
        if bio.flags & FLUSH:
            bio.spliced, self.unflushed = self.unflushed, []
        return bio

    def unsubmit(self, bio: Bio) -> None:
        """A flush that failed before completing hands its claimed writes back (oldest first)."""
        self.unflushed[:0] = bio.spliced
        bio.spliced = []

    def complete(self, bio: Bio) -> None:
        if bio.flags & FLUSH:
            for b in bio.spliced:
                self._log(b)
            bio.spliced = []
            self._log(bio)
        elif bio.flags & FUA:
            self._log(bio)
        else:
            self.unflushed.append(bio)

    def mark(self, text: str, on_logged: Callable[[Bio], None] | None = None) -> Bio:
        bio = Bio(MARK, text=text, on_logged=on_logged)
        self._log(bio)
        return bio

    def close(self, on_logged: Callable[[Bio], None] | None = None) -> None:
        """Table removal: log what is still held, then the end mark; the writer rewrites nr_entries."""
        held, self.unflushed = self.unflushed, []
        for b in held:
            self._log(b)
        self.mark(END_MARK, on_logged)
        self.writer.close()

    def _log(self, bio: Bio) -> None:
        if bio.flags & MARK:
            bio.entry = self.writer.mark(bio.text or "")
        else:
            data = b"" if bio.flags & DISCARD else bio.data
            bio.entry = self.writer.append(bio.flags, bio.sector, bio.nr_sectors, data)
        if bio.on_logged:
            bio.on_logged(bio)


@dataclass(frozen=True)
class SidecarOp:
    """One submitted operation: what, where, why (`role`), and where the log put it."""

    seq: int
    kind: str
    sector: int | None = None
    nr_sectors: int = 0
    block: int | None = None
    nblocks: int = 0
    role: str = ""
    entry: int | None = None
    text: str | None = None  # marks: the full text (the log may hold it truncated)

    def pack(self) -> str:
        d = {"seq": self.seq, "kind": self.kind}
        if self.sector is not None:
            d.update(block=self.block, nblocks=self.nblocks, sector=self.sector, nr_sectors=self.nr_sectors)
        if self.role:
            d["role"] = self.role
        if self.text is not None:
            d["text"] = self.text
        d["entry"] = self.entry
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def unpack(cls, line: bytes | str | None, where: str, n: int | None = None) -> SidecarOp:
        """One record line; CorruptError unless every field has its type and range.  Errors name
        `where` (with `:n`, a line number, when given: made only for an error)."""
        try:
            d = json_object(line)
            kind = text(d["kind"], "kind", 16)
            if kind not in KINDS:
                raise CorruptError(f"{_line(where, n)}: unknown operation kind {kind!r}")
            op = cls(seq=integer(d["seq"], "seq"), kind=kind,
                     sector=optional_integer(d.get("sector"), "sector", 0, MAX_SECTOR),
                     nr_sectors=integer(d.get("nr_sectors", 0), "nr_sectors", 0, MAX_SECTOR),
                     block=optional_integer(d.get("block"), "block", 0, MAX_SECTOR),
                     nblocks=integer(d.get("nblocks", 0), "nblocks", 0, MAX_SECTOR),
                     role=text(d.get("role", ""), "role"), entry=optional_integer(d.get("entry"), "entry"),
                     text=None if d.get("text") is None else text(d["text"], "text"))
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptError(f"{_line(where, n)}: not a sidecar record ({e.__class__.__name__}: {e})") from None
        return op


def _line(where: str, n: int | None) -> str:
    return where if n is None else f"{where}:{n}"


@dataclass(frozen=True)
class Sidecar:
    """The sidecar of a log: geometry of the recorded device and the operations in submission order."""

    sectorsize: int
    nblocks: int | None
    ops: list[SidecarOp]

    def by_entry(self) -> dict[int, list[SidecarOp]]:
        out: dict[int, list[SidecarOp]] = {}
        for op in self.ops:
            if op.entry is not None:
                out.setdefault(op.entry, []).append(op)
        return out


MAX_SECTOR = 1 << 48  # sectors and counts past this are no device's (2^48 x 4 KiB = 1 EiB)
MAX_NBLOCKS = 1 << 40  # a recorded device of more blocks than this is refused, never allocated for


def read_sidecar(path: str | os.PathLike) -> Sidecar:
    """Read `<log>.roles`, streamed.  CorruptError names the line that is bad or out of sequence."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BlkError(f"{path}: {e.strerror}") from None
    with f:
        try:
            return _parse_sidecar(lines(f), path)
        except OSError as e:
            raise BlkError(f"{path}: {e.strerror}") from None


def _parse_sidecar(it, path: str) -> Sidecar:
    first = next(it, None)
    if first is None:
        raise CorruptError(f"{path}: empty sidecar (no header line)")
    try:
        head = json_object(first)
        if head.get("format") != SIDECAR_FORMAT:
            raise ValueError("wrong format name")
    except ValueError:
        raise CorruptError(f"{path}:1: not a {SIDECAR_FORMAT} sidecar header") from None
    if head.get("version") != SIDECAR_VERSION:
        raise CorruptError(f"{path}:1: unsupported sidecar version {str(head.get('version'))[:20]}")
    try:
        sectorsize = integer(head.get("sectorsize", 0), "sectorsize", 0, 1 << 16)
        nblocks = optional_integer(head.get("nblocks"), "nblocks", 0, MAX_NBLOCKS)
    except ValueError as e:
        raise CorruptError(f"{path}:1: bad sidecar header ({e})") from None
    ops = []
    for n, line in enumerate(it, start=2):
        if line is not None and not line.strip():
            continue
        op = SidecarOp.unpack(line, path, n)
        if op.seq != len(ops):
            raise CorruptError(f"{path}:{n}: operation seq {op.seq} out of order (expected {len(ops)})")
        ops.append(op)
    return Sidecar(sectorsize, nblocks, ops)


class _SidecarWriter:
    """Writes records in submission order although held writes learn their entry index later.

    A record is queued at submission and a line is written once it and every earlier record know
    their entry; a flush resolves everything before it, so the queue never grows past one epoch.
    """

    def __init__(self, path: str, sectorsize: int, nblocks: int) -> None:
        try:
            self._f = open(path, "w", encoding="utf-8")
        except OSError as e:
            raise BlkError(f"{path}: {e.strerror}") from None
        head = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "sectorsize": sectorsize, "nblocks": nblocks}
        self._f.write(json.dumps(head) + "\n")
        self._queue: list[dict] = []
        self.seq = 0

    def add(self, kind: str, **fields) -> dict:
        rec = {"seq": self.seq, "kind": kind, "entry": None, **fields}
        self.seq += 1
        self._queue.append(rec)
        return rec

    def resolved(self, rec: dict, entry: int) -> None:
        rec["entry"] = entry
        n = 0
        while n < len(self._queue) and self._queue[n]["entry"] is not None:
            n += 1
        if n:
            for r in self._queue[:n]:
                self._f.write(SidecarOp(**r).pack() + "\n")
            del self._queue[:n]
            self._f.flush()

    def close(self) -> None:
        for r in self._queue:  # never logged (cannot happen after a clean close); keep them visible
            self._f.write(SidecarOp(**r).pack() + "\n")
        self._queue.clear()
        self._f.close()


class RecordingDevice(BlockDevice):
    """A `BlockDevice` that passes I/O to `inner` and records it in dm-log-writes format.

    `sectorsize` defaults to the inner device's logical block size, as the kernel target uses the
    data device's.  Counters are the inner device's: recording adds no I/O to the data device.
    Closing logs what is still held plus the end mark, closes the sidecar, and closes `inner`
    unless `close_inner=False`.
    """

    def __init__(self, inner: BlockDevice, log_path: str | os.PathLike, *, sectorsize: int | None = None,
                 close_inner: bool = True) -> None:
        ss = sectorsize or inner.logical_block_size
        if ss not in SECTOR_SIZES or BLOCK_SIZE % ss:
            raise BlkError(f"log sectorsize must be one of {', '.join(map(str, SECTOR_SIZES))}, not {ss}")
        self.inner = inner
        self.nblocks = inner.nblocks
        self.logical_block_size = inner.logical_block_size
        self.counters = inner.counters
        self.sectorsize = ss
        self.log_path = os.fspath(log_path)
        self._spb = BLOCK_SIZE // ss  # sectors per block
        self._close_inner = close_inner
        self._writer = LogWriter(self.log_path, ss)
        self._target = LogWritesTarget(self._writer)
        self._sidecar = _SidecarWriter(sidecar_path(self.log_path), ss, inner.nblocks)
        self._closed = False

    def read(self, block: int, count: int = 1) -> bytes:
        return self.inner.read(block, count)

    def _logged(self, rec: dict) -> Callable[[Bio], None]:
        return lambda bio: self._sidecar.resolved(rec, bio.entry)

    def _range(self, block: int, nblocks: int) -> dict:
        return {"block": block, "nblocks": nblocks, "sector": block * self._spb, "nr_sectors": nblocks * self._spb}

    def write(self, block: int, data: bytes, *, fua: bool = False, role: str = "") -> None:
        self._check_open()
        self.inner.write(block, data, fua=fua, role=role)
        nb = len(data) // BLOCK_SIZE
        rec = self._sidecar.add("fua" if fua else "write", role=role, **self._range(block, nb))
        flags = FUA if fua else 0
        # The kernel copies the payload at map time; bytes() does the same for a caller's buffer.
        bio = Bio(flags, block * self._spb, nb * self._spb, bytes(data), on_logged=self._logged(rec))
        self._target.complete(self._target.submit(bio))

    def flush(self) -> None:
        self._check_open()
        bio = self._target.submit(Bio(FLUSH))
        try:
            self.inner.flush()
        except BaseException:
            self._target.unsubmit(bio)
            raise
        rec = self._sidecar.add("flush")
        bio.on_logged = self._logged(rec)
        self._target.complete(bio)

    def discard(self, block: int, count: int = 1, *, role: str = "") -> None:
        self._check_open()
        self.inner.discard(block, count, role=role)
        rec = self._sidecar.add("discard", role=role, **self._range(block, count))
        bio = Bio(DISCARD, block * self._spb, count * self._spb, on_logged=self._logged(rec))
        self._target.complete(self._target.submit(bio))

    def mark(self, text: str) -> None:
        self._check_open()
        self.inner.mark(text)
        rec = self._sidecar.add("mark", text=text)
        self._target.mark(text, self._logged(rec))

    def _check_open(self) -> None:
        if self._closed:
            raise BlkError(f"{self.log_path}: recording device is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            rec = self._sidecar.add("mark", text=END_MARK, role="recorder close")
            self._target.close(self._logged(rec))
            self._sidecar.close()
        finally:
            if self._close_inner:
                self.inner.close()
