"""jbd2 "checkpoint advances the tail before installing" (log space freed before the homes are durable).

The checkpoint must make the metadata durable in its home blocks before the journal superblock
says the transactions holding it are no longer needed.  Here the tail moves first: a crash after
the new tail is durable and before the homes are loses every checkpointed transaction.
"""

from . import Mutant

MUTANT = Mutant(
    "journal-checkpoint-tail-first", __doc__.splitlines()[0],
    "blkjournal.protocols:JournalProtocol.checkpoint",
    (("""
roles = _Roles(self.unckpt, lambda b: f"checkpoint of {self.store.role_of(b)}")
self.write_blocks(self.unckpt, roles, fua=self.fua and self.on("FUA checkpoint homes"))
if not self.fua and self.on("checkpoint flush after homes"):
    self.flush()
self.journal.retire()
self.dev.write(self.journal.jsb_block, self.journal.super_image(self.fixed_crcs(self.fixed_images())),
               fua=self.fua and self.on("FUA journal superblock"), role="journal superblock (checkpoint)")
""", """
self.journal.retire()
self.dev.write(self.journal.jsb_block, self.journal.super_image(self.fixed_crcs(self.fixed_images())),
               fua=self.fua and self.on("FUA journal superblock"), role="journal superblock (checkpoint)")
if not self.fua and self.on("checkpoint flush after homes"):
    self.flush()
roles = _Roles(self.unckpt, lambda b: f"checkpoint of {self.store.role_of(b)}")
self.write_blocks(self.unckpt, roles, fua=self.fua and self.on("FUA checkpoint homes"))
"""),),
    protocols=("journal",))
