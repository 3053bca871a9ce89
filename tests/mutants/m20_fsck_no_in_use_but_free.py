"""fsck stops comparing the bitmap with what files reference (e2fsck pass 5 "block bitmap differences" gone).

A block in use but free in the journal protocol's bitmap will be handed out twice; fsck must say so.
"""

from . import Mutant

MUTANT = Mutant(
    "fsck-no-in-use-but-free", __doc__.splitlines()[0],
    "blkjournal.fsck:check_objects",
    (("""
if free_used:
""", """
if False:
"""),), kind="fsck")
