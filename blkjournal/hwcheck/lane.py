"""One writer thread's I/O channel onto the shared O_DIRECT descriptor.

`Device` keeps one scratch buffer and one set of counters per instance, and a block device can
be opened O_EXCL only once, so writer threads cannot each own a `Device`.  A lane borrows the
Device's descriptor and brings its own page-aligned buffer and counters; the I/O calls are the
same as Device.write/flush (pwritev with RWF_DSYNC for FUA, fdatasync for a flush), and both
release the GIL, so N lanes keep N requests in flight at the disk.
"""

from __future__ import annotations

import os

from ..device import BLOCK_SIZE, AlignedBuffer, Counters, Device
from ..errors import BlkError


class Lane:
    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self.counters = Counters()
        self._buf = AlignedBuffer(BLOCK_SIZE)

    def write(self, block: int, data: bytes, *, fua: bool = False) -> None:
        """One block, plain or FUA (durable when it returns); OSError reaches the caller."""
        view = self._buf.view(BLOCK_SIZE)
        view[:] = data
        done = os.pwritev(self.dev.fd, [view], block * BLOCK_SIZE, os.RWF_DSYNC if fua else 0)
        if done != BLOCK_SIZE:
            raise BlkError(f"{self.dev.path}: short write at block {block} ({done} of {BLOCK_SIZE} bytes)")
        self.counters.writes += 1
        self.counters.bytes_written += BLOCK_SIZE
        if fua:
            self.counters.fua_writes += 1

    def flush(self) -> None:
        """A cache flush: every write completed before it is durable when it returns."""
        os.fdatasync(self.dev.fd)
        self.counters.flushes += 1

    def close(self) -> None:
        self._buf.close()
