"""A released block leaves its used list before the origin that dropped it is durable (release rule 1 ignored).

EQUIVALENT under this design: blocks an operation releases are handled at the start of the next
operation's commit, after its allocation, and every operation that writes an origin ends phase B
with a barrier before its own phase C -- so by the time a released block can be handed out again
(the operation after next) the origin that dropped it is durable anyway.  And a removal that
lands before that origin leaves a referenced block unlisted, which recovery lists again.  The
rule is defence in depth; the runner checks the mutant is *not* caught.
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
    protocols=("ordered",), barriers=("flush", "fua"),
    equivalent="program order: a released block is reusable only two operations later, and each "
               "operation's phase-B barrier has made the dropping origin durable by then")
