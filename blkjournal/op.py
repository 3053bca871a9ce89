"""An operation's change set: what the store edited in memory, for the protocol to write.

Its own module so that the store (which builds one) and the protocols (which write it, and build
one for recovery's repairs) both import it without importing each other both ways.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from .device import BLOCK_SIZE
from .journal import DataCrcs


class Roles(dict):
    """block -> role text, plus ranges of data blocks whose text is made only when asked for.

    A streaming write names 65,536 data blocks per 256 MiB; a role is only ever read for the
    first and last block of a device write (or per block under "none"), so the text of a run
    of data blocks is derived on demand instead of formatted for every block up front."""

    _runs: tuple | list = ()  # (first block, count, fid, first file block), sorted; a list once one is added
    # (no __init__ of its own: an operation makes one, and a dict subclass's own __init__ cost as
    # much as the rest of the Op)

    def data_run(self, first: int, count: int, fid: int, idx: int) -> None:
        if not self._runs:
            self._runs = []
        self._runs.append((first, count, fid, idx))
        self._runs.sort()

    def get(self, b, default=None):
        if b in self:
            return self[b]
        i = bisect_right(self._runs, (b, float("inf"))) - 1
        if i >= 0:
            first, count, fid, idx = self._runs[i]
            if b < first + count:
                return f"data block {idx + b - first} of file {fid}"
        return default


@dataclass(slots=True, init=False)  # (made once per operation: slots make it, and its attributes, cheaper)
class Op:
    """What one operation changed; built by Store, written by the protocol.

    `data` maps the first block of each piece of new data to its bytes: a whole number of
    blocks (one, or a contiguous run held as a memoryview into the caller's buffer, never
    copied per block); `crcs` maps the same first block to the crc32c of each of its blocks."""

    name: str
    cow: bool
    data: dict = field(default_factory=dict)  # first block -> bytes of 1+ blocks (always fresh blocks)
    crcs: dict = field(default_factory=dict)  # first block -> crc32c of each block of data[first], computed once
    roles: dict = field(default_factory=Roles)  # block -> role text
    meta: set = field(default_factory=set)  # metadata blocks changed in place (not fresh)
    fresh: set = field(default_factory=set)  # metadata blocks allocated by this op
    owned: dict = field(default_factory=dict)  # fid -> [blocks] newly owned
    released: dict = field(default_factory=dict)  # fid -> [blocks] no longer referenced
    origins: set = field(default_factory=set)  # fids whose origin changes
    objmap: set = field(default_factory=set)  # object map blocks changed
    created: set = field(default_factory=set)
    deleted: list = field(default_factory=list)  # FileStates removed (their blocks all released)
    images: dict = field(default_factory=dict)  # metadata block -> its image as this commit sealed it
    hints: dict = field(default_factory=dict)  # metadata block -> (image, chunks it may differ in): journal.delta_in

    def __init__(self, name: str, cow: bool) -> None:
        """(Its own: the empty containers made by literals, where the generated __init__ called a
        default factory per field -- a synced append makes one operation, and that was 1.5% of it.)"""
        self.name, self.cow = name, cow
        self.data, self.crcs, self.roles, self.owned, self.released, self.images, self.hints = {}, {}, Roles(), {}, {}, {}, {}
        self.meta, self.fresh, self.origins, self.objmap, self.created = set(), set(), set(), set(), set()
        self.deleted = []

    def own(self, f, b: int) -> None:
        self.owned.setdefault(f.fid, []).append(b)

    def own_run(self, f, first: int, count: int) -> None:
        self.owned.setdefault(f.fid, []).extend(range(first, first + count))

    def release(self, f, b: int) -> None:
        if b in self.fresh:
            self.fresh.discard(b)
        self.data.pop(b, None)
        self.crcs.pop(b, None)
        self.released.setdefault(f.fid, []).append(b)

    def release_many(self, f, blocks) -> None:
        """release() of each of `blocks` (the blocks a run of map entries pointed at before)."""
        if not blocks:
            return
        if not self.fresh.isdisjoint(blocks) or not self.data.keys().isdisjoint(blocks):
            for b in blocks:
                self.release(f, b)
            return
        self.released.setdefault(f.fid, []).extend(blocks)

    def block_data(self, b: int):
        """The new bytes of block b if this operation wrote it (else None)."""
        if b in self.data:
            return self.data[b][:BLOCK_SIZE]
        for first, buf in self.data.items():
            if first < b < first + len(buf) // BLOCK_SIZE:
                return buf[(b - first) * BLOCK_SIZE:(b - first + 1) * BLOCK_SIZE]
        return None

    def data_crcs(self) -> DataCrcs:
        """(block, crc32c) of every data block written, in block order (as runs: journal.DataCrcs)."""
        return DataCrcs([(first, self.crcs[first]) for first in sorted(self.data)])
