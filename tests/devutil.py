"""A Device that also keeps every block it writes, in order, with the role the store gave it."""

from __future__ import annotations

from blkjournal.device import BLOCK_SIZE, Device


class WriteLogDevice(Device):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.log: list[tuple[int, bytes, str]] = []

    def write(self, block, data, *, fua=False, role=""):
        super().write(block, data, fua=fua, role=role)
        for i in range(len(data) // BLOCK_SIZE):
            self.log.append((block + i, bytes(data[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]), role))
