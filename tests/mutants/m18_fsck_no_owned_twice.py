"""fsck's double-ownership check removed (e2fsck pass 1B/1D "multiply-claimed blocks" gone).

Two files claiming one block is seed B's "block owned twice"; without the check fsck calls such
a state clean, and the explorer would accept every protocol bug that produces it.  fsck's own
tests (tests/test_fsck.py) must fail.
"""

from . import Mutant

MUTANT = Mutant(
    "fsck-no-owned-twice", __doc__.splitlines()[0],
    "blkjournal.fsck:check_objects",
    (("""
if b in owner and owner[b] != fid:
    r.add(OWNED_TWICE, f"block {b} ({what}) is owned by files {owner[b]} and {fid}", [b])
""", """
if False:  # the check across files removed (a file naming a block twice is still reported)
    pass
"""),), kind="fsck")
