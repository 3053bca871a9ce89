"""A partial-block write done read-modify-write in place (the torn/misordered RMW of ext3 data=writeback).

A write that covers part of a block copies the block to a fresh one with the new bytes in it.
Here the existing block is rewritten in place: a crash that keeps the new bytes but not the
metadata leaves the map's crc over different data.
"""

from . import Mutant

MUTANT = Mutant(
    "write-partial-in-place", __doc__.splitlines()[0],
    "blkjournal.store:Store._write",
    (("""
b = fresh[k]
""", """
b = fresh[k]
cur = f.map.lookup(idx)[0]
if hi - lo != BLOCK_SIZE and cur and cur not in op.data and cur not in op.released.get(f.fid, ()):
    self.freelist.mark_free(b)
    b = cur
"""), ("""
op.own(f, b)
""", """
if b != cur or hi - lo == BLOCK_SIZE:
    op.own(f, b)
"""), ("""
if old:
    op.release(f, old)
""", """
if old and old != b:
    op.release(f, old)
""")))
