"""fsck stops reporting used-list entries that reference nothing (an orphan leak unseen).
"""

from . import Mutant

MUTANT = Mutant(
    "fsck-no-usedlist-leak", __doc__.splitlines()[0],
    "blkjournal.fsck:_check_file",
    (("""
stray = {x for x in listed - reach if in_data(x)}
""", """
stray = set()
"""),), kind="fsck")
