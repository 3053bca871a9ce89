"""A used list written with the origin that points at it (the ext2 "pointer before the block it points at").

The used list blocks (copied on write) must be durable before the origin that names them (phase
A, ordered before C by B's barrier).  Here they go out with the origin in phase C: a crash that
keeps the origin and loses a used-list block leaves a file whose allocation record is garbage.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-used-list-after-origin", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.commit",
    (("""
self.phase(first, op.roles, durable=True, site="A used-list entries", why=op.name)
""", """
late_ul = {b: first.pop(b) for b in ul}  # a create's blank origin slots stay in phase A
self.phase(first, op.roles, durable=True, site="A used-list entries", why=op.name)
"""), ("""
tag = self.epoch
""", """
origins.update(late_ul)
tag = self.epoch
"""),),
    protocols=("ordered",))
