"""Under fua, a committed transaction whose data fails its crc is taken for a torn tail.

Under fua a transaction is written only after its data's FUA writes completed, so its data was
durable: a data block failing the crc the commit promises was lost or damaged afterwards.
Taken for a torn tail, the loss is a silent rollback of the transaction and everything after.
(Since format 7 only a write of more than `inline_max` blocks has data written apart from its
transaction: the `big` workload's.)
"""

from . import Mutant

MUTANT = Mutant(
    "journal-fua-trusts-committed-data", __doc__.splitlines()[0],
    "blkjournal.journal:Journal._refuse_lost_data",
    (("""
if not self.fua or weak_detection():
""", """
if True:
"""),),
    protocols=("journal",), barriers=("fua",), kind="faults", fault_workloads=("big",),
    fault_kinds=("lost-write",), fault_seeds=2)
