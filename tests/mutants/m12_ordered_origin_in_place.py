"""The origin updated in place instead of in the other slot (a torn inode write).

Seed A alternates two origin slots so the newest valid origin is always whole: a 4 KiB origin
write can tear at 512-byte sectors.  Here every origin goes to the same slot: a torn write
destroys the only current origin and recovery falls back to a stale one (or none).  Only a torn
exploration sees it.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-origin-in-place", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.commit",
    (("""
f.slot ^= 1
""", """
f.slot = f.slot
"""),),
    protocols=("ordered",))
