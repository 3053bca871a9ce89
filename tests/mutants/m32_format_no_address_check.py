"""A metadata block is accepted wherever it is read: its header's own block number goes unchecked.

btrfs checks a tree block's bytenr and ZFS a block pointer's DVA: a valid block written to the
wrong address (a misdirected write) passes its own checksum.  Without the address check it is
taken as the block that should be there.
"""

from . import Mutant

MUTANT = Mutant(
    "format-no-address-check", __doc__.splitlines()[0],
    "blkjournal.format:check",
    (("""
if isinstance(where, int) and block != where:
""", """
if False:
"""),),
    kind="faults")
