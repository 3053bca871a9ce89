"""Recovery takes a later transaction as proof that an unflushed one was durable (an off-by-one in the durability claim).

When replay stops at transaction n, recovery searches the log for a later transaction whose
descriptor claims n durable, and refuses the store if one exists.  Here the claim is read one
generation early: a transaction written after n-1's flush, in the same unflushed batch as n, is
taken as proof that n was durable.  An honest crash that kept that transaction but not n is
then refused as damage.  The claimer lies beyond a lost transaction, in a slot only the search
reads: the explorer catches this only if it answers the search for every state of a class
(explore.Tracer.find), not just its representative.
"""

from . import Mutant

MUTANT = Mutant(
    "journal-evidence-one-early", __doc__.splitlines()[0],
    "blkjournal.journal:_evidence",
    (("""
    return min(gen - 1, d[6])  # a later transaction (gen > seq) that claims seq durable (d[6] >= seq)
""", """
    return min(gen - 1, d[6] + 1)  # the claim read one generation early
"""),),
    protocols=("journal",))
