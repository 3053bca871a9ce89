"""A file's used list (seed A): the persistent record of every block the file owns.

Allocation is recorded here before the block is written, so after a crash a block is either in
some used list or free -- never in limbo.  The list is a chain of blocks of slots; adding fills the
first empty slot and removing zeroes a slot in place, so each change touches exactly one block.
The chain's own blocks and the head are owned by the list itself, not listed in it.
"""

from __future__ import annotations

from .errors import FieldError
from .format import UsedListBlock


class UsedList:
    def __init__(self, head: int, blocks: dict[int, UsedListBlock] | None = None) -> None:
        self.head = head
        self.blocks: dict[int, UsedListBlock] = blocks if blocks is not None else {head: UsedListBlock()}
        self.chain: list[int] = []
        self.where: dict[int, tuple[int, int]] = {}  # owned block -> (list block, slot)
        self._reindex()

    def _reindex(self) -> None:
        self.chain, self.where = [], {}
        self.scan = 0  # chain index below which every slot is taken
        self.hint = 0  # slot in chain[scan] below which every slot is taken
        b = self.head
        seen = set()
        while b and b not in seen and b in self.blocks:
            seen.add(b)
            self.chain.append(b)
            slots = self.blocks[b].slots
            for i, v in enumerate(slots):
                if v:
                    self.where[v] = (b, i)
            b = self.blocks[b].next

    @classmethod
    def load(cls, head: int, read_block) -> "UsedList":
        """Walk the chain from `head` with `read_block(b) -> UsedListBlock` (raises on a bad block)."""
        blocks = {}
        b = head
        while b:
            if b in blocks:
                raise FieldError(f"used list: the chain loops back to block {b}")
            blocks[b] = read_block(b)
            b = blocks[b].next
        return cls(head, blocks)

    def owned(self) -> set[int]:
        return set(self.where)

    def __contains__(self, block: int) -> bool:
        return block in self.where

    def add(self, blocks, alloc_listblock) -> tuple[set[int], list[int]]:
        """Record `blocks`; returns (changed list blocks, newly chained list blocks).

        `alloc_listblock()` supplies a block for a new chain link when every slot is taken.
        """
        changed: set[int] = set()
        new: list[int] = []
        for b in blocks:
            while True:
                if self.scan == len(self.chain):
                    nb = alloc_listblock()
                    self.blocks[self.chain[-1]].next = nb
                    changed.add(self.chain[-1])
                    self.blocks[nb] = UsedListBlock()
                    self.chain.append(nb)
                    new.append(nb)
                lb = self.chain[self.scan]
                slots = self.blocks[lb].slots
                try:
                    i = slots.index(0, self.hint)
                except ValueError:
                    self.scan += 1
                    self.hint = 0
                    continue
                self.hint = i + 1
                slots[i] = b
                self.where[b] = (lb, i)
                changed.add(lb)
                break
        return changed, new

    def remove(self, blocks) -> set[int]:
        changed = set()
        for b in blocks:
            lb, i = self.where.pop(b)
            self.blocks[lb].slots[i] = 0
            changed.add(lb)
            ci = self.chain.index(lb)
            if ci < self.scan or (ci == self.scan and i < self.hint):
                self.scan, self.hint = ci, i
        return changed

    def image(self, lb: int) -> bytes:
        return self.blocks[lb].pack()

