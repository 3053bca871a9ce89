"""A released block leaves its used list before the origin that dropped it is durable (release rule 1 ignored).

Marked equivalent until session 7, on the argument that every operation writing an origin ends
phase B with a barrier, so by the time a released block is handed out again the operation that
dropped it is durable.  A remove writes no origin: its object map block may still be in the
volatile cache when the next operation reuses the removed file's used-list block.  The explorer
shows it once the mix holds such a sequence (ordered/flush random seed 4, 60 ops: `rm f3`, then
a write whose new used list lands in f3's old used-list block while the object map write that
removed f3 is lost -- recovery finds f3 still listed and its used list overwritten).  The epoch
rule is what keeps the block until the remove is durable.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-release-ignores-epoch", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.free_released",
    (("""
if self.epoch > tag:
""", """
if True:
"""),),
    protocols=("ordered",), barriers=("flush", "fua"))
