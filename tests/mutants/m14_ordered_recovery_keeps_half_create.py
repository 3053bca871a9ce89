"""Recovery keeps the object map entry of a create whose origin never became durable (a dangling directory entry).

A create writes the object map entry and the first origin together; a crash can keep the entry
without the origin.  Recovery must drop such an entry; here it keeps it, so the name points at
no valid origin.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-recovery-keeps-half-create", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.recover",
    (("""
st.entries[fid] = ObjEntry(birth=e.birth)  # a create that never became durable
writes[home] = None
""", """
pass
"""),),
    protocols=("ordered",))
