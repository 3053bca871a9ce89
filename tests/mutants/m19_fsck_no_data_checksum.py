"""fsck stops checking data blocks against the crcs in the map (seed B's case 6, "garbage data", unseen).

Without it a map that points at a block which never received the file's data passes as clean.
"""

from . import Mutant

MUTANT = Mutant(
    "fsck-no-data-checksum", __doc__.splitlines()[0],
    "blkjournal.fsck:_check_file",
    (("""
if crc32c(raw) != crc:
""", """
if False:
"""),), kind="fsck")
