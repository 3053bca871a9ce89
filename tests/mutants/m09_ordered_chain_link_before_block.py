"""A used-list chain block linked before it is durable (the ext2 "pointer before the block it points at").

When a used list outgrows its last block, the new chain block must be durable before the block
that links to it (phase A0).  Here both go out together in phase A: a crash that keeps the link
and loses the new block leaves a used list chained to garbage, and recovery cannot read the file.
Needs used lists past 509 entries (the grow workload).
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-chain-link-before-block", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.commit",
    (("""
links = new - heads
""", """
links = set()
"""),),
    protocols=("ordered",))
