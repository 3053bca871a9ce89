"""A partial-block write done read-modify-write in place (the torn/misordered RMW of ext3 data=writeback).

A write that covers part of a block copies the block to a fresh one with the new bytes in it.
Here the existing block is rewritten in place: a crash that keeps the new bytes but not the
metadata leaves the map's crc over different data.
"""

from . import Mutant

MUTANT = Mutant(
    "write-partial-in-place", __doc__.splitlines()[0],
    "blkjournal.store:Store._write_runs",
    (("""
plan = []  # (first block, count, first file block, [first block of each piece])
""", """
plan = []  # (first block, count, first file block, [first block of each piece])
in_place = []  # (file block, fresh block, live block): partial blocks to put back over the live one
"""), ("""
content = bytes(merged)
""", """
content = bytes(merged)
cur = f.map.lookup(j)[0]
if cur and op.block_data(cur) is None and cur not in op.released.get(f.fid, ()):
    in_place.append((j, b0 + k, cur))
"""), ("""
overlap = self.protocol.issue_data_early(op, f, need)
""", """
overlap = False  # (the data goes where the in-place blocks are decided, below: written at commit)
"""), ("""
op.release_many(f, f.map.set_run(idx, b0, crcs, edit))
""", """
op.release_many(f, f.map.set_run(idx, b0, crcs, edit))
for j, nb, cur in in_place:  # the read-modify-write lands on the live block, not a fresh one
    op.data[cur], op.crcs[cur] = op.data.pop(nb), op.crcs.pop(nb)
    f.map.set(j, cur, op.crcs[cur][0], edit)
    self.freelist.mark_free(nb)
    op.owned[f.fid].remove(nb)
    op.released[f.fid].remove(cur)
in_place.clear()
""")))
