"""A pointer's expected generation goes unchecked: a stale but valid block is taken as current.

Format 2's pointers carry the generation (and crc) of what they point at, as ZFS's block
pointers carry the birth txg: a lost write leaves the previous version, valid and at the right
address.  Without the generation check, what remains is the crc, which is checked only where
the pointer carries one.
"""

from . import Mutant

MUTANT = Mutant(
    "format-pointer-ignores-generation", __doc__.splitlines()[0],
    "blkjournal.format:check",
    (("""
if gen is not None and bgen != gen:
""", """
if False:
"""),),
    kind="faults",
    equivalent="defence in depth: every check that compares a generation also compares the crc of the very "
               "block expected (journal object map entries of their origins, used-list links and heads) or reads a "
               "block of a transaction whose commit crc covers all its blocks (replay); a stale version fails the "
               "crc, so the generation check only names the fault (stale-block) one test sooner")
