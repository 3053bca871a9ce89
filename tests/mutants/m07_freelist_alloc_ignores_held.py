"""ext3 "allocator ignores the committing transaction's frees" (b_committed_data): a held block handed out.

Blocks freed by a journalled transaction are held (free in the bitmap, not allocatable) until
the checkpoint makes the release durable.  Here the allocator takes them anyway, so new data
overwrites a block the durable metadata still references.
"""

from . import Mutant

MUTANT = Mutant(
    "freelist-alloc-ignores-held", __doc__.splitlines()[0],
    "blkjournal.freelist:Freelist.alloc_runs",  # the allocator of data runs (issue 12)
    (("""
held = self._held_sorted() if self.held else []
""", """
held = []
"""),),
    protocols=("journal",))
