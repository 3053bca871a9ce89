"""Recovery keeps used-list entries the durable origin no longer reaches (an orphan-list leak).

An allocation is listed before its block is written; if the crash comes before the origin that
would reference it, the entry must be dropped at recovery or the block leaks for ever.
(Format 1 updated used lists in place, ahead of the origin; format 2 cannot produce the state.)
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
    protocols=("ordered",),
    equivalent="format 2: the used list is copy-on-write and committed by the origin, whose head pointer "
               "and every next link carry the crc and generation of the block they expect; an origin "
               "recovery accepts therefore comes with exactly the used list its own operation wrote, "
               "which lists what its map reaches, so no durable state under lost or torn writes holds a "
               "stray (the repair stays for states the fault explorer makes, where it is named first)")
