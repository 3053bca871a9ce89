"""Recovery keeps used-list entries the durable origin no longer reaches (an orphan-list leak).

An allocation is listed before its block is written; if the crash comes before the origin that
would reference it, the entry must be dropped at recovery or the block leaks for ever.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-recovery-keeps-strays", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.recover",
    (("""
stray, missing = f.ul.owned() - reach, reach - f.ul.owned()
""", """
stray, missing = set(), reach - f.ul.owned()
"""),),
    protocols=("ordered",))
