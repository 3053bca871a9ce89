"""Crash states as overlays: a shared read-only base image plus the sectors a state changes.

Thousands of crash states are checked per second, so none of them is ever a full image copy: a
state is a mapping sector -> bytes (views into the log, mostly) laid over one `BaseImage` that all
states share and that caches what it has read.  Recovery runs on an `Overlay` like on any other
`BlockDevice`; its own writes land in a private dict, so the state's mapping is never modified and
the same mapping can back any number of overlays.  `materialize` writes a real image when a user
wants one (`replay --out`, `--keep-failing`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from ..device import BLOCK_SIZE, BlockDevice, Counters, _check_extent, _check_write_extent
from ..errors import BlkError

CACHE_BLOCKS = 16384  # 64 MiB of base blocks; beyond that reads go to the file every time


class BaseImage:
    """The pre-crash contents every state starts from: an image file, bytes in memory, a
    `BlockDevice`, or nothing (all zeros, `size` bytes).  Read-only; blocks read are cached."""

    def __init__(self, source=None, *, size: int | None = None) -> None:
        self.path: str | None = None
        self._fd: int | None = None
        self._buf = None
        self._dev: BlockDevice | None = None
        self._cache: dict[int, bytes] = {}
        if source is None:
            if size is None:
                raise BlkError("a zero base image needs a size")
            self.size = size
        elif isinstance(source, (str, os.PathLike)):
            self.path = os.fspath(source)
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise BlkError(f"{self.path}: {e.strerror}") from None
            self.size = os.lseek(self._fd, 0, os.SEEK_END)
        elif isinstance(source, BlockDevice):
            self._dev = source
            self.size = source.nblocks * BLOCK_SIZE
        else:
            self._buf = memoryview(source).cast("B")
            self.size = len(self._buf)
        if size is not None and source is not None and size != self.size:
            raise BlkError(f"base image is {self.size} bytes, expected {size}")
        self.nblocks = self.size // BLOCK_SIZE

    def block(self, b: int) -> bytes:
        """Block b of the base; past the end of a short base reads as zeros."""
        got = self._cache.get(b)
        if got is not None:
            return got
        off = b * BLOCK_SIZE
        if self._buf is not None:
            got = bytes(self._buf[off:off + BLOCK_SIZE])
        elif self._fd is not None:
            got = os.pread(self._fd, BLOCK_SIZE, off)
        elif self._dev is not None and b < self._dev.nblocks:
            got = self._dev.read(b)
        else:
            got = b""
        if len(got) < BLOCK_SIZE:
            got += bytes(BLOCK_SIZE - len(got))
        if len(self._cache) < CACHE_BLOCKS:
            self._cache[b] = got
        return got

    def read(self, offset: int, length: int) -> bytes:
        """Any byte range (used for per-sector content when states are hashed against the base)."""
        first, last = offset // BLOCK_SIZE, (offset + length - 1) // BLOCK_SIZE
        raw = b"".join(self.block(b) for b in range(first, last + 1))
        start = offset - first * BLOCK_SIZE
        return raw[start:start + length]

    def copy_to(self, path: str) -> None:
        """Write the whole base to a new file (sparse where it is zeros and we know it)."""
        if self.path is not None:
            shutil.copyfile(self.path, path)
            return
        with open(path, "wb") as f:
            if self._buf is not None:
                f.write(self._buf)
            elif self._dev is not None:
                for b in range(self._dev.nblocks):
                    f.write(self._dev.read(b))
            else:
                f.truncate(self.size)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def as_base(base, *, size: int | None = None) -> BaseImage:
    return base if isinstance(base, BaseImage) else BaseImage(base, size=size)


class Overlay(BlockDevice):
    """A `BlockDevice` reading `writes` (keys in `unit`-byte sectors) over `base`, writing to a dict.

    `writes` may be any Mapping -- a dict, a ChainMap of a state's chosen writes over its forced
    ones -- and is only read.  Flush is a no-op (the overlay is the medium) but counted, so a
    recovery's barrier count can still be checked.
    """

    def __init__(self, base=None, writes: Mapping[int, bytes] | None = None, *, unit: int = 512,
                 nblocks: int | None = None) -> None:
        if unit <= 0 or BLOCK_SIZE % unit:
            raise BlkError(f"overlay unit {unit} does not divide the block size {BLOCK_SIZE}")
        self.unit = unit
        self._per = BLOCK_SIZE // unit
        self.writes: Mapping[int, bytes] = writes if writes is not None else {}
        self.top: dict[int, bytes] = {}
        if base is None and nblocks is None:
            hi = max(self.writes, default=-1) + 1
            nblocks = (hi + self._per - 1) // self._per
        if base is None:
            base = BaseImage(size=nblocks * BLOCK_SIZE)
        self.base = as_base(base)
        self.nblocks = self.base.nblocks if nblocks is None else nblocks
        self.logical_block_size = unit
        self.counters = Counters()

    def _get(self, s: int):
        v = self.top.get(s)
        return self.writes.get(s) if v is None else v

    def read(self, block: int, count: int = 1) -> bytes:
        _check_extent(self, block, count)
        per, unit, get = self._per, self.unit, self._get
        out = []
        for b in range(block, block + count):
            s0 = b * per
            pieces = [get(s) for s in range(s0, s0 + per)]
            if all(p is None for p in pieces):
                out.append(self.base.block(b))
            elif per == 1:
                out.append(bytes(pieces[0]))
            else:
                raw = None
                for i, p in enumerate(pieces):
                    if p is None:
                        raw = raw or self.base.block(b)
                        pieces[i] = raw[i * unit:(i + 1) * unit]
                out.append(b"".join(pieces))
        self.counters.reads += 1
        self.counters.bytes_read += count * BLOCK_SIZE
        return b"".join(out)

    def write(self, block: int, data: bytes, *, fua: bool = False, role: str = "") -> None:
        n = len(data)
        _check_write_extent(self, block, n)
        data = bytes(data)
        s0, unit = block * self._per, self.unit
        for i in range(n // unit):
            self.top[s0 + i] = data[i * unit:(i + 1) * unit]
        self.counters.writes += 1
        self.counters.bytes_written += n
        if fua:
            self.counters.fua_writes += 1

    def flush(self) -> None:
        self.counters.flushes += 1

    def discard(self, block: int, count: int = 1, *, role: str = "") -> None:
        """Discarded blocks read back as zeros, as on an image file (hole punched)."""
        _check_extent(self, block, count)
        zero = bytes(self.unit)
        s0 = block * self._per
        for s in range(s0, s0 + count * self._per):
            self.top[s] = zero
        self.counters.discards += 1

    def sectors(self) -> dict[int, bytes]:
        """Every sector that differs from the base's own bytes (as far as the overlay knows)."""
        merged = dict(self.writes.items())
        merged.update(self.top)
        return merged

    def materialize(self, path: str | os.PathLike) -> None:
        """Write base + overlay as a full image file of nblocks blocks."""
        path = os.fspath(path)
        if self.base.path is not None and os.path.exists(path) and os.path.samefile(path, self.base.path):
            raise BlkError(f"{path}: refusing to overwrite the base image")
        try:
            self.base.copy_to(path)
            with open(path, "r+b") as f:
                f.truncate(max(self.base.size, self.nblocks * BLOCK_SIZE))
                fd = f.fileno()
                for start, chunks in _runs(self.sectors()):
                    os.pwritev(fd, chunks, start * self.unit)
        except OSError as e:
            raise BlkError(f"{path}: {e.strerror}") from None

    def close(self) -> None:
        pass  # the base is shared by every state; its owner closes it


def _runs(sectors: dict[int, bytes]):
    """(first sector, [payloads]) for each run of consecutive sectors, for few, large writes."""
    run_start, chunks, prev = None, [], None
    for s in sorted(sectors):
        if prev is not None and s == prev + 1 and len(chunks) < 512:
            chunks.append(sectors[s])
        else:
            if chunks:
                yield run_start, chunks
            run_start, chunks = s, [sectors[s]]
        prev = s
    if chunks:
        yield run_start, chunks
