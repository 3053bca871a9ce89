"""A read within one block returns the block without checking it against its map entry's crc.

A fast path for small reads that skips the verification the chunked path does (the bug of a
read cache or a short-read shortcut): a rotted, misdirected-over or lost data write is returned
as the file's bytes.
"""

from . import Mutant

MUTANT = Mutant(
    "store-read-unverified-block", __doc__.splitlines()[0],
    "blkjournal.store:Store._read_in_block",
    (("""
if verify and crc32c(buf) != crc:
""", """
if False:
"""),),
    kind="faults")
