"""Replay stops at the first transaction that fails its checks, whatever later ones say (jbd2's torn-tail rule alone).

Format 2's descriptors name the newest transaction known durable; replay refuses to stop at a
failing transaction that a later valid one says was durable, since the failure is then a lost,
misdirected or rotted durable write, not a torn tail.  Without the search a durable transaction
damaged after the fact is silently dropped with everything after it.
"""

from . import Mutant

MUTANT = Mutant(
    "journal-no-durable-evidence", __doc__.splitlines()[0],
    "blkjournal.journal:Journal._no_durable_successor",
    (("""
if weak_detection():  # a generation check: off with format 1's detection
""", """
if True:
"""),),
    protocols=("journal",), kind="faults")
