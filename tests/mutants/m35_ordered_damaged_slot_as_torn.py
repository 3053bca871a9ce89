"""A damaged origin slot is taken for a torn write, and the other slot for the file.

Format 3: a torn origin write leaves every sector passing its own crc (each old or new); a
sector failing its own is damage, and a damaged slot that may have held the newest origin
refuses the file.  Taken for torn, bit rot in the newest slot silently rolls the file back one
version.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-damaged-slot-as-torn", __doc__.splitlines()[0],
    "blkjournal.originslots:choose",
    (("""
d = None if weak_detection() else _damage(slot, b, raw, fid, e)
""", """
d = None
"""),),
    protocols=("ordered",), kind="faults", fault_kinds=("bitrot",), fault_samples=400)
