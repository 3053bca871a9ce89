"""The sync stamps the bitmap with the newest commit *issued*, not the newest one a barrier made durable.

Recovery (format 5) refuses a store whose bitmap says a newer commit was durable than any origin
or object map block shows: the newest commit was lost.  That claim is only true if the stamp is
the generation a barrier (or a completed FUA) has made durable.  Stamped with the last issued
commit, a crash that keeps the sync's bitmap write but not the last operation's origin -- both
in flight before the sync's flush -- is refused as a lost write.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-bitmap-stamps-issued", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.sync",
    (("""
st.freelist.stamp(self.durable_gen)
""", """
st.freelist.stamp(self.issued_gen)
"""),),
    protocols=("ordered",))
