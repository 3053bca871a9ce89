"""Recovery holds a re-created file to what an older origin said of the removed file that had its id.

An origin names the generation of every other file's newest durable origin (format 5), and
recovery refuses a file whose newest origin is older than that.  A file id is reused after a
remove: an old origin of another file may still name the removed file.  Here recovery forgets
to check that the entry now holds a file created after the generation named, so a crash in the
create of the new file -- its object map entry durable, its first origin not -- is refused as a
lost write instead of dropping the half-done create.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-seen-claims-reused-id", __doc__.splitlines()[0],
    "blkjournal.claims:judge",
    (("""
            if e.in_use and e.origin_gen > g:
""", """
            if False:
"""),),
    protocols=("ordered",))
