"""An object map block names the generations the store holds in memory, this operation's own included.

Format 6: an ordered object map block names (`seen`) generations a barrier had made durable when
it was issued, and recovery refuses a file older than such a claim as a lost write.  Taken from
the files' in-memory generations instead, the claim includes the origins written in the same
phase as the object map block, with nothing ordering the two: a crash that keeps a create's or
a remove's object map block but not the same operation's origin is refused as a lost write.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-objmap-seen-in-memory", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.commit",
    (("""
named = self.seen(op, limit=MAX_OBJMAP_SEEN, skip={OBJMAP_ID | (b - st.sb.objmap_start) for b in op.objmap})
""", """
named = tuple(sorted((fid, f.gen) for fid, f in st.files.items()))[-MAX_OBJMAP_SEEN:]
"""),),
    protocols=("ordered",))
