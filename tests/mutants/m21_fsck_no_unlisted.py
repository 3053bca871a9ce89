"""fsck stops checking that every block a file references is in its used list.

Under ordered a referenced block missing from the used list is free as far as recovery's
freelist rebuild knows (seed A's allocation record); fsck must name it.
"""

from . import Mutant

MUTANT = Mutant(
    "fsck-no-unlisted", __doc__.splitlines()[0],
    "blkjournal.fsck:_check_file",
    (("""
unlisted = reach - listed
""", """
unlisted = set()
"""),), kind="fsck")
