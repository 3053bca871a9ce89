"""ext3 data=ordered: the ordered data written after the transaction instead of before it.

Under fua this is a bug: a transaction is issued only once the FUA writes of its data have
completed, and replay relies on it -- a committed transaction whose data fails its crc is a
durable data write lost or damaged, refused by name (journal.Journal._refuse_lost_data).  With
the data written after its transaction, a crash between the two leaves exactly that, and an
honest crash is refused.  (Under flush both writes share the sync's one flush, the commit
checksum covers the data's crcs, and the order does not matter: that half of the old
equivalence argument still holds, and the explorer's flush runs show it.)
"""

from . import Mutant

MUTANT = Mutant(
    "journal-data-after-commit", __doc__.splitlines()[0],
    "blkjournal.protocols:JournalProtocol.commit",
    (("""
if op.data and not inline and early is None:
    self.write_blocks(op.data, op.roles, fua=self.fua and self.on("FUA data"), why=op.name)
txn, commit = encode(self.journal.next_seq, self.journal.prev, data_crcs, records, at=self.journal.area + pos,
                     durable=self.journal.durable, stream=stream)
""", """
txn, commit = encode(self.journal.next_seq, self.journal.prev, data_crcs, records, at=self.journal.area + pos,
                     durable=self.journal.durable, stream=stream)
"""), ("""
if self.fua and self.on("FUA transaction") and (self.on("FUA data") or not op.data or inline):
""", """
if op.data and not inline and early is None:
    self.write_blocks(op.data, op.roles, fua=self.fua and self.on("FUA data"), why=op.name)
if self.fua and self.on("FUA transaction") and (self.on("FUA data") or not op.data or inline):
"""),),
    protocols=("journal",), barriers=("fua",))
