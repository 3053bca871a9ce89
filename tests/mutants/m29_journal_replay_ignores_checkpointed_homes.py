"""Replay stops early though a home block already holds the checkpointed effect of a later transaction.

A checkpoint writes homes only after the flush that made the transactions durable, each stamped
with the transaction that last changed it; a home stamped at or past where replay stops proves
the transaction replay stopped at was durable.  Without the check, a durable transaction lost
after its checkpoint began is a silent rollback of the other homes it changed.
"""

from . import Mutant

MUTANT = Mutant(
    "journal-replay-ignores-checkpointed-homes", __doc__.splitlines()[0],
    "blkjournal.protocols:JournalProtocol.refuse_checkpointed_past",
    (("""
if weak_detection():
""", """
if True:
"""),),
    protocols=("journal",), kind="faults", fault_workloads=("wrap",))  # only a wrapping log checkpoints
