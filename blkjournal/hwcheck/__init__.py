"""hwcheck: does a disk honour FLUSH and FUA across a power cut?

write (writer.py) stamps self-describing records (record.py) onto the disk with O_DIRECT and a
barrier each, logging intents and acks durably off the device (acklog.py, sink.py,
listener.py); after the cut, verify (verify.py) holds every block against that log and names
what the disk did: lost acked writes, torn records, misplaced records, flush reordering.

The library is importable without typer; cli.py is the `blkjournal hwcheck` shell.
"""

from .acklog import RunHeader, RunLog, read_run
from .listener import Listener
from .record import Record
from .verify import Finding, Report, verify_blocks, verify_device
from .writer import WriteOptions, WriteResult, write

__all__ = ["Finding", "Listener", "Record", "Report", "RunHeader", "RunLog", "WriteOptions", "WriteResult",
           "read_run", "verify_blocks", "verify_device", "write"]
