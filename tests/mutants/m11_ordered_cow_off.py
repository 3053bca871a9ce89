"""A block index map node edited in place while the durable origin still points at it (copy-on-write skipped).

Under ordered, a map node reachable from the durable origin is never rewritten: the first edit
in an operation moves it to a fresh block, so the old tree stays intact until the new origin is
durable.  Here nodes are edited in place, so a crash after phase B shows the old origin (old
size) over the new mapping -- a file whose visible bytes match no version of it.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-cow-off", __doc__.splitlines()[0],
    "blkjournal.store:MapEdit.writable",
    (("""
if not self.op.cow or b in self.op.fresh:
""", """
if True:
"""),),
    protocols=("ordered",))
