"""dm-log-writes v1, read and written byte for byte as the kernel target lays it out.

This is the one interchange format of the harness: the userspace recorder writes it, the kernel
target in the VM writes it, and everything downstream (`log show`, `replay`, the crash states)
reads it through `read_log`, so a log from either source is handled by the same code.

Layout (all little-endian):
    byte 0              superblock: magic, version, nr_entries, sectorsize, zero padded to a sector
    byte sectorsize     entry 0 header (one sector): sector, nr_sectors, flags, data_len [+ mark text]
                        entry 0 data: nr_sectors * sectorsize bytes (writes only; not discards, marks)
    ...                 entry 1 header, entry 1 data, ...

`sector`/`nr_sectors` count `sectorsize` units (the data device's logical block size).  A write
entry's `data_len` is 0 -- its payload length follows from nr_sectors -- and only a MARK uses
`data_len`, for the text stored inside its header sector.  `nr_entries` is rewritten only after a
FUA or MARK entry and when the target is torn down, so a log whose writer died early can hold
entries past `nr_entries`; those are invisible, exactly as for the kernel's own tools.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field

from ..errors import BlkError, CorruptError

MAGIC = 0x6A736677736872
VERSION = 1

FLUSH = 1 << 0
FUA = 1 << 1
DISCARD = 1 << 2
MARK = 1 << 3
METADATA = 1 << 4
KNOWN_FLAGS = FLUSH | FUA | DISCARD | MARK | METADATA
FLAG_NAMES = ((FLUSH, "FLUSH"), (FUA, "FUA"), (DISCARD, "DISCARD"), (MARK, "MARK"), (METADATA, "METADATA"))

SECTOR_SIZES = (512, 1024, 2048, 4096)  # the logical block sizes Linux block devices offer
SUPER = struct.Struct("<QQQI")  # magic, version, nr_entries, sectorsize
ENTRY = struct.Struct("<QQQQ")  # sector, nr_sectors, flags, data_len

END_MARK = "dm-log-writes-end"  # the mark the target logs when it is removed


def flag_names(flags: int) -> str:
    """'FLUSH|FUA' style text, as fstests' replay-log prints it ('NONE' for a plain write)."""
    names = [name for bit, name in FLAG_NAMES if flags & bit]
    if flags & ~KNOWN_FLAGS:
        names.append(f"UNKNOWN.{flags & ~KNOWN_FLAGS:#x}")
    return "|".join(names) or "NONE"


def max_mark_len(sectorsize: int) -> int:
    """Longest mark text (bytes) the kernel keeps: it strndup()s to the header room minus a NUL."""
    return sectorsize - ENTRY.size - 1


@dataclass(frozen=True)
class Superblock:
    """Block 0 of a log: identifies the format and says how many entries are valid."""

    nr_entries: int
    sectorsize: int

    def pack(self) -> bytes:
        raw = SUPER.pack(MAGIC, VERSION, self.nr_entries, self.sectorsize)
        return raw + bytes(self.sectorsize - len(raw))

    @classmethod
    def unpack(cls, raw: bytes) -> Superblock:
        if len(raw) < SUPER.size:
            raise CorruptError(f"log is {len(raw)} bytes, too short for a dm-log-writes superblock")
        magic, version, nr_entries, sectorsize = SUPER.unpack_from(raw)
        if magic != MAGIC:
            raise CorruptError(f"not a dm-log-writes log: bad magic {magic:#x} (want {MAGIC:#x})")
        if version != VERSION:
            raise CorruptError(f"dm-log-writes log has unsupported version {version} (want {VERSION})")
        if sectorsize not in SECTOR_SIZES:
            raise CorruptError(f"dm-log-writes log has invalid sectorsize {sectorsize}")
        return cls(nr_entries, sectorsize)


@dataclass(frozen=True)
class EntryHeader:
    """The 32 bytes at the start of every entry's header sector."""

    sector: int
    nr_sectors: int
    flags: int
    data_len: int

    def pack(self, sectorsize: int, text: bytes = b"") -> bytes:
        """The whole header sector: the 32 bytes, a mark's text, zeros (as the kernel pads it)."""
        raw = ENTRY.pack(self.sector, self.nr_sectors, self.flags, self.data_len) + text
        return raw + bytes(sectorsize - len(raw))

    @classmethod
    def unpack(cls, raw) -> EntryHeader:
        return cls(*ENTRY.unpack_from(raw))


@dataclass(frozen=True, eq=False)
class Entry:
    """One logged request.  `data` is a zero-copy view into the log (writes only, else empty)."""

    index: int
    sector: int
    nr_sectors: int
    flags: int
    offset: int  # byte offset of the header sector in the log
    data: memoryview | bytes = b""
    mark: str | None = None
    data_len: int = 0  # the header field, kept so a rewrite is byte-identical

    @property
    def is_flush(self) -> bool:
        return bool(self.flags & FLUSH)

    @property
    def is_fua(self) -> bool:
        return bool(self.flags & FUA)

    @property
    def is_discard(self) -> bool:
        return bool(self.flags & DISCARD)

    @property
    def is_mark(self) -> bool:
        return bool(self.flags & MARK)

    @property
    def has_data(self) -> bool:
        """A write carrying payload (a FLUSH with data -- PREFLUSH on a write -- counts too)."""
        return self.nr_sectors > 0 and not self.flags & (DISCARD | MARK)

    @property
    def flag_names(self) -> str:
        return flag_names(self.flags)

    def size(self, sectorsize: int) -> int:
        """Bytes this entry occupies in the log (header sector + payload)."""
        return sectorsize + (self.nr_sectors * sectorsize if self.has_data else 0)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return (self.index, self.sector, self.nr_sectors, self.flags, self.offset, self.mark,
                self.data_len, bytes(self.data)) == (other.index, other.sector, other.nr_sectors,
                                                     other.flags, other.offset, other.mark,
                                                     other.data_len, bytes(other.data))

    __hash__ = None  # payload views are not hashable in general


@dataclass
class Log:
    """A parsed log.  Entries hold views into `buffer`, so the log is read once and never copied."""

    path: str | None
    sectorsize: int
    entries: list[Entry]
    file_size: int
    end_offset: int  # first byte after the last counted entry
    buffer: object = field(default=b"", repr=False)

    @property
    def nr_entries(self) -> int:
        return len(self.entries)

    @property
    def trailing_bytes(self) -> int:
        """Bytes past the last counted entry: unused log device space, or entries never counted."""
        return self.file_size - self.end_offset

    def marks(self) -> list[tuple[int, str]]:
        return [(e.index, e.mark) for e in self.entries if e.is_mark]

    def find_mark(self, text: str) -> int:
        """Index of the first MARK entry with exactly this text; BlkError if there is none."""
        for e in self.entries:
            if e.is_mark and e.mark == text:
                return e.index
        raise BlkError(f"{self.path or 'log'}: no mark {text!r}")


def parse_log(buf, path: str | None = None) -> Log:
    """Parse a log held in memory (bytes, mmap, memoryview).  CorruptError names the bad entry."""
    view = memoryview(buf)
    size = len(view)
    sb = Superblock.unpack(view[:SUPER.size])
    ss = sb.sectorsize
    where = path or "log"
    entries: list[Entry] = []
    pos = ss
    for i in range(sb.nr_entries):
        if pos + ss > size:
            raise CorruptError(f"{where}: entry {i} at byte {pos} lies past the end of the log "
                               f"({size} bytes, superblock claims {sb.nr_entries} entries)")
        hdr = EntryHeader.unpack(view[pos:pos + ENTRY.size])
        _validate(hdr, view[pos + ENTRY.size:pos + ss], i, pos, ss, where)
        mark = None
        data: memoryview | bytes = b""
        if hdr.flags & MARK:
            mark = bytes(view[pos + ENTRY.size:pos + ENTRY.size + hdr.data_len]).decode("utf-8", "replace")
        entry_end = pos + ss
        if hdr.nr_sectors and not hdr.flags & (DISCARD | MARK):
            entry_end += hdr.nr_sectors * ss
            if entry_end > size:
                raise CorruptError(f"{where}: entry {i} at byte {pos}: its {hdr.nr_sectors * ss} bytes "
                                   f"of data run past the end of the log ({size} bytes)")
            data = view[pos + ss:entry_end]
        entries.append(Entry(i, hdr.sector, hdr.nr_sectors, hdr.flags, pos, data, mark, hdr.data_len))
        pos = entry_end
    return Log(path, ss, entries, size, pos, buf)


def _validate(hdr: EntryHeader, pad: memoryview, i: int, pos: int, ss: int, where: str) -> None:
    """The checks fstests' replay-log makes, plus the ones its silence would let through."""
    if hdr.flags & ~KNOWN_FLAGS:
        raise CorruptError(f"{_name(where, i, pos)}: unknown flags {hdr.flags:#x}")
    if hdr.flags == 0 and hdr.nr_sectors == 0:
        raise CorruptError(f"{_name(where, i, pos)}: all-zero header (the log ends before its superblock says)")
    if hdr.flags & MARK:
        if hdr.data_len > ss - ENTRY.size:
            raise CorruptError(f"{_name(where, i, pos)}: mark text of {hdr.data_len} bytes does not fit its "
                               "header sector")
        if _nonzero(pad[hdr.data_len:]):
            raise CorruptError(f"{_name(where, i, pos)}: mark header is not zero padded")
        return
    if _nonzero(pad):
        raise CorruptError(f"{_name(where, i, pos)}: header sector is not zero padded")
    if hdr.data_len not in (0, hdr.nr_sectors * ss):
        raise CorruptError(f"{_name(where, i, pos)}: data_len {hdr.data_len} does not match {hdr.nr_sectors} sectors")


def _name(where: str, i: int, pos: int) -> str:
    """How an error names entry i (made only for an error: a long log's parse makes no other text)."""
    return f"{where}: entry {i} at byte {pos}"


def _nonzero(view: memoryview) -> bool:
    """Does the view hold a byte other than zero?  (Counted in C: any() walks it byte by byte in
    the interpreter, a sizeable part of a long log's parse.)"""
    return view.tobytes().count(0) != view.nbytes


def read_log(path: str | os.PathLike) -> Log:
    """Map a log file read-only and parse it; payloads stay in the mapping (no per-entry reads)."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise BlkError(f"{path}: {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        buf = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else b""
    finally:
        os.close(fd)
    return parse_log(buf, path)


class LogWriter:
    """Appends entries to a new log, keeping `nr_entries` current the way the kernel does.

    The superblock is written at open (nr_entries 0, so even an empty log is readable) and
    rewritten after every FUA or MARK entry and at close -- not after each plain write, so a
    writer that dies leaves the same kind of log the kernel leaves when the VM stops without
    `dmsetup remove`.  Returns of `append` are entry indices, which the recorder's sidecar keeps.
    """

    def __init__(self, path: str | os.PathLike, sectorsize: int) -> None:
        if sectorsize not in SECTOR_SIZES:
            raise BlkError(f"log sectorsize must be one of {', '.join(map(str, SECTOR_SIZES))}, not {sectorsize}")
        self.path = os.fspath(path)
        self.sectorsize = sectorsize
        self.nr_entries = 0
        self.offset = sectorsize
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise BlkError(f"{self.path}: {e.strerror}") from None
        self._write_super()

    def _write_super(self) -> None:
        os.pwrite(self._fd, Superblock(self.nr_entries, self.sectorsize).pack(), 0)

    def append(self, flags: int, sector: int = 0, nr_sectors: int = 0, data=b"", mark: str | None = None,
               data_len: int | None = None) -> int:
        """Log one entry and return its index.  Data must be exactly nr_sectors sectors."""
        if self._fd is None:
            raise BlkError(f"{self.path}: log is closed")
        if flags & ~KNOWN_FLAGS:
            raise ValueError(f"unknown log flags {flags:#x}")
        ss = self.sectorsize
        text = b""
        if flags & MARK:
            text = (mark or "").encode()[:max_mark_len(ss)]  # the kernel truncates, so do we
            nr_sectors, data = 0, b""
            data_len = len(text)
        elif flags & DISCARD:
            data = b""
        elif len(data) != nr_sectors * ss:
            raise ValueError(f"entry data is {len(data)} bytes, want {nr_sectors} x {ss}")
        if flags == 0 and nr_sectors == 0:
            raise ValueError("an entry with no flags must carry data")
        hdr = EntryHeader(sector, nr_sectors, flags, 0 if data_len is None else data_len)
        bufs = [hdr.pack(ss, text)]
        if len(data):
            bufs.append(data)
        os.pwritev(self._fd, bufs, self.offset)
        self.offset += ss + len(data)
        index = self.nr_entries
        self.nr_entries += 1
        if flags & (FUA | MARK):
            self._write_super()
        return index

    def append_entry(self, entry: Entry) -> int:
        """Copy an entry read from another log exactly (flags, data_len and all)."""
        return self.append(entry.flags, entry.sector, entry.nr_sectors, entry.data if entry.has_data else b"",
                           entry.mark, entry.data_len)

    def write(self, sector: int, data, *, fua: bool = False) -> int:
        return self.append(FUA if fua else 0, sector, len(data) // self.sectorsize, data)

    def flush(self) -> int:
        return self.append(FLUSH)

    def discard(self, sector: int, nr_sectors: int) -> int:
        return self.append(DISCARD, sector, nr_sectors)

    def mark(self, text: str) -> int:
        return self.append(MARK, mark=text)

    def close(self) -> None:
        if self._fd is not None:
            self._write_super()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_log(path: str | os.PathLike, log: Log) -> None:
    """Write `log` anew; a log this module (or the recorder) wrote comes back byte for byte."""
    with LogWriter(path, log.sectorsize) as w:
        for e in log.entries:
            w.append_entry(e)
