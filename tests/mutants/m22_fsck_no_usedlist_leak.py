"""fsck stops reporting used-list entries that reference nothing (an orphan leak unseen).
"""

from . import Mutant

MUTANT = Mutant(
    "fsck-no-usedlist-leak", __doc__.splitlines()[0],
    "blkjournal.fsck:check_objects",
    (("""
stray = {x for x in listed - reach if in_data(x)}
""", """
stray = set()
"""),), kind="fsck")
