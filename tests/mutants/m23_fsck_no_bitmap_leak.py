"""fsck stops reporting bitmap bits set for blocks nobody owns (a space leak unseen, seed B's cases 2 and 4).
"""

from . import Mutant

MUTANT = Mutant(
    "fsck-no-bitmap-leak", __doc__.splitlines()[0],
    "blkjournal.fsck:check_objects",
    (("""
stray_int = marked_int & ~owned_int
""", """
stray_int = 0
"""),), kind="fsck")
