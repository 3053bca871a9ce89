"""A torn object map block's header is trusted for every entry: a torn remove is taken for a lost create.

An object map block is written in place, sector-framed: a crash tearing it leaves each sector old
or new, and the generation in its header (sector 0) describes sector 0's entries only.  A remove
whose entry's sector landed while sector 0 did not reads as a free entry in a block older than a
claim that the file was durable -- the shape of a lost create -- and recovery refuses an honest
crash (docs/protocols.md, "A torn object map write").  Only a torn exploration of ordered sees it.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-torn-objmap-trusts-header", __doc__.splitlines()[0],
    "blkjournal.claims:judge",
    (("""
if not e.in_use and (objmap_gens.get(home, 0) >= g or home in torn and _torn_remove(x, e)):
""", """
if not e.in_use and objmap_gens.get(home, 0) >= g:
"""),),
    protocols=("ordered",))
