"""ext4 journal_async_commit: the commit checksum covers only part of the ordered data.

The transaction's commit checksum names the crc of every data block it orders, which is what
lets one flush make data, records and commit durable together.  Here only the first data block
is named: a crash that keeps the transaction and loses a later data block replays a map that
points at garbage.
"""

from . import Mutant

MUTANT = Mutant(
    "journal-commit-covers-first-data", __doc__.splitlines()[0],
    "blkjournal.protocols:JournalProtocol.commit",
    (("""
data_crcs = op.data_crcs()
""", """
data_crcs = op.data_crcs()[:1]
"""),),
    protocols=("journal",))
