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
repair = Op("recovery: used lists made to match their maps", cow=True)
""", """
st.freelist.load(self.dev.read)
repair = Op("recovery: used lists made to match their maps", cow=True)
"""),),
    protocols=("ordered",))
