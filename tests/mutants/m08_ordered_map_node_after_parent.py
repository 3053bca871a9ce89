"""Soft updates / copy-on-write trees: "map node written after its parent".

A new block index map node must be durable before the origin that points at it (phase B's
barrier).  Here new and copied map nodes are written with the origin in phase C instead: a
crash that keeps the origin and loses a node leaves a map through a garbage block.  Needs files
past the origin's 128 slots (map height >= 1).
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-map-node-after-parent", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.commit",
    (("""
for b in op.fresh | op.meta:
    for f in st.files.values():
        if b in f.map.nodes:
            blocks[b] = f.map.nodes[b].pack(b)
origins = {}
""", """
origins = {}
for b in op.fresh | op.meta:
    for f in st.files.values():
        if b in f.map.nodes:
            origins[b] = f.map.nodes[b].pack(b)
"""),),
    protocols=("ordered",))
