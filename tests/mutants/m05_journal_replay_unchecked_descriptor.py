"""jbd2 "recovery trusts an unchecked descriptor": a transaction is replayed without its commit checksum.

Each journal block is sealed on its own, so a transaction whose descriptor landed while a later
block still holds a (valid, sealed) block of an older lap of the log looks whole block by block;
only the commit checksum over the whole transaction tells.  Here replay skips it and installs
records parsed from a stale block.  (That was the case on format 1; see `equivalent`.)
"""

from . import Mutant

MUTANT = Mutant(
    "journal-replay-unchecked-descriptor", __doc__.splitlines()[0],
    "blkjournal.journal:_decode",
    (("""
if crc32c(COMMITTED.pack(seq, nblocks, prev, durable) + stream[:o]) != commit:
    return None
""", """
if False:
    return None
"""),),
    protocols=("journal",),
    equivalent="format 2: every transaction block is sealed with its own address and the transaction's "
               "sequence number as its generation, checked on read before the commit checksum, so an "
               "older lap's sealed block (an older sequence) or a torn one (its own crc) is refused "
               "first; a journal never writes one sequence twice, so no crash state leaves a block that "
               "passes those checks and fails only the commit (under BLKJOURNAL_WEAK_DETECTION it would)")
