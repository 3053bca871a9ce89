"""A torn object map block that may be a remove in flight does not stop the bitmap stamp's judgement.

A torn remove can free the entry of the file that holds the newest commit (its remove's own,
newer generation is in the sector 0 that did not land): that file's origins are unreachable, so
the newest commit recovery finds is older than the bitmap's sync stamp, and an honest crash is
refused as a lost commit (docs/protocols.md, "A torn object map write").  Only a torn
exploration of ordered sees it.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-torn-objmap-stamp-judged", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.lost_commit",
    (("""
if hidden_by_tear(st.entries, st.objmap_torn, st.sb.objmap_start):
""", """
if False:
"""),),
    protocols=("ordered",))
