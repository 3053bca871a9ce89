"""jbd2 group commit: the running transaction orders only the data of the handle that opened it.

Successive streaming writes join one running transaction (docs/protocols.md, "Group commit"),
whose commit checksum must cover the crc of every data block each of them wrote: their data is
in flight, and one flush makes data and transaction durable together.  Here a write joining a
running transaction adds its metadata images but not its data crcs (as if the transaction kept
only the first handle's ordered-data list): a crash that keeps the transaction and loses a later
write's data replays a map that points at garbage (`data-checksum`).  Only runs of streaming
writes with no sync between reach it (the `stream` workload).
"""

from . import Mutant

MUTANT = Mutant(
    "journal-group-omits-joined-data", __doc__.splitlines()[0],
    "blkjournal.protocols:JournalProtocol.join",
    (("""
r.data += crcs.runs
""", """
"""),),
    protocols=("journal",))
