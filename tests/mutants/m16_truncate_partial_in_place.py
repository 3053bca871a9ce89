"""ext4 "truncate zeroes the partial last block in place" (the zeroed tail reaches the disk before the new size).

Truncating mid-block zeroes the rest of the last block so a later extension reads zeros.  Data
is never overwritten in place: the zeroed copy goes to a fresh block.  Here it is written over
the live block: a crash before the operation commits leaves the old map's crc over new bytes.
"""

from . import Mutant

MUTANT = Mutant(
    "truncate-partial-in-place", __doc__.splitlines()[0],
    "blkjournal.store:Store._truncate",
    (("""
nb = self.freelist.alloc(1)[0]
op.data[nb] = content
op.roles[nb] = f"data block {idx} of file {f.fid}"
op.own(f, nb)
op.crcs[nb] = crc32c_blocks(content)
op.release(f, f.map.set(idx, nb, op.crcs[nb][0], edit))
""", """
nb = b
op.data[nb] = content
op.roles[nb] = f"data block {idx} of file {f.fid}"
op.crcs[nb] = crc32c_blocks(content)
f.map.set(idx, nb, op.crcs[nb][0], edit)
"""),))
