"""jbd2/ext3 "block reuse before the release is durable".

A block a committed transaction frees may still be referenced by the checkpointed metadata (and
by any replay that stops before that transaction).  The journal holds such blocks until the
checkpoint makes the release durable in the homes.  Here the release frees them at once, so the
next operation's data can land on a block the durable state still points at: after a crash
that loses the releasing transaction, a file reads another file's bytes.
"""

from . import Mutant

MUTANT = Mutant(
    "journal-reuse-before-checkpoint", __doc__.splitlines()[0],
    "blkjournal.protocols:JournalProtocol.commit",
    (("""
for b in released:
    st.freelist.hold(b)
""", """
for b in released:
    st.freelist.mark_free(b)
"""),),
    protocols=("journal",))
