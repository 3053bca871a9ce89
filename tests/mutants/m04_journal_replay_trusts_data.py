"""Recovery replays a commit whose ordered data never reached the disk (data=ordered without the data check).

Replay must refuse a transaction unless every data block it orders reads back with the crc the
commit promises (there is no flush between data and commit).  Here replay skips that check, so a
crash that keeps the transaction but not its data installs a map pointing at stale blocks.
"""

from . import Mutant

MUTANT = Mutant(
    "journal-replay-trusts-data", __doc__.splitlines()[0],
    "blkjournal.journal:Journal._step",
    (("""
if txn and verify_data and not all(crc32c(read(b)) == c for b, c in txn.data):
""", """
if txn and False and not all(crc32c(read(b)) == c for b, c in txn.data):
"""),),
    protocols=("journal",))
