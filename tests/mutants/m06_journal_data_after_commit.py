"""ext3 data=ordered: the ordered data written after the transaction instead of before it.

EQUIVALENT under this design: the commit checksum covers the crc of every data block the
transaction orders, so a transaction whose data is not (yet) on the disk is not committed --
replay refuses it whichever of the two writes reached the disk first.  Under flush both writes
sit in the same epoch anyway; under FUA a crash between them leaves the operation in progress,
and the state before it is legal.  (Kept so the claim stays tested: the runner checks this
mutant is *not* caught.)
"""

from . import Mutant

MUTANT = Mutant(
    "journal-data-after-commit", __doc__.splitlines()[0],
    "blkjournal.protocols:JournalProtocol.commit",
    (("""
if op.data:
    self.write_blocks(op.data, op.roles, fua=self.fua and self.on("FUA data"), why=op.name)
stream = txn_stream(data_crcs, records)
""", """
stream = txn_stream(data_crcs, records)
"""), ("""
if self.fua and self.on("FUA transaction") and (self.on("FUA data") or not op.data):
""", """
if op.data:
    self.write_blocks(op.data, op.roles, fua=self.fua and self.on("FUA data"), why=op.name)
if self.fua and self.on("FUA transaction") and (self.on("FUA data") or not op.data):
"""),),
    protocols=("journal",), barriers=("flush", "fua"),
    equivalent="the commit checksum covers the ordered data's crcs: a transaction without its data is "
               "not committed, whichever write lands first")
