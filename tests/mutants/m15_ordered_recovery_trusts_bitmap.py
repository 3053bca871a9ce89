"""Recovery trusts the on-disk freelist instead of rebuilding it (a freelist recovery rebuilt wrongly).

Under ordered the bitmap is only a hint written at sync; the used lists are the allocation
record.  Here recovery keeps the stale bitmap: every state looks clean right after recovery,
but blocks allocated since the last sync are free again, and the next operations hand them out
twice -- visible only to a crash, a recovery, more operations and a second crash.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-recovery-trusts-bitmap", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.recover",
    (("""
st.freelist.rebuild(st.owned_blocks())
for b in st.freelist.homes():  # the on-disk bitmap is only a hint: rewrite it whole
    writes[b] = None
""", """
st.freelist.load(self.dev.read)
"""),),
    protocols=("ordered",))
