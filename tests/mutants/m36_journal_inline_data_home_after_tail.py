"""The checkpoint writes the data carried inline home only after the journal tail has moved past it.

Format 7: a small write's data blocks ride in its transaction, and their only copy is the log
until the checkpoint writes them home, which must happen before the journal superblock moves the
tail past the transaction (with the metadata homes, between the checkpoint's first two flushes).
Written after the tail moved -- a "lazy" write-back of data the log no longer holds -- a crash in
between leaves map entries pointing at homes that never received their bytes: `data-checksum`
on a file the log said was durable.  The running store never notices (it writes the data
eventually, and serves it from memory until then).
"""

from . import Mutant

MUTANT = Mutant(
    "journal-inline-data-home-after-tail", __doc__.splitlines()[0],
    "blkjournal.protocols:JournalProtocol.checkpoint",
    (("""
roles = _Roles(self.unckpt, lambda b: f"checkpoint of {self.store.role_of(b)}")
""", """
late = {b: self.unckpt.pop(b) for b in list(self.store.logged) if b in self.unckpt}
roles = _Roles(self.unckpt, lambda b: f"checkpoint of {self.store.role_of(b)}")
"""), ("""
self.unflushed = False
self.unckpt.clear()
""", """
self.write_blocks(late, {b: "late inline data home" for b in late}, fua=self.fua)
self.unflushed = not self.fua
self.unckpt.clear()
"""),),
    protocols=("journal",))
