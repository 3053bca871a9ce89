"""A file's used list (seed A): the persistent record of every block the file owns.

The list is a chain of blocks of slots; adding fills the first empty slot (a new link, when every
slot is taken, becomes the head) and removing zeroes a slot.  The chain's own blocks and the head
are owned by the list itself, not listed in it.

Every link is a full pointer: the origin holds (head, gen, crc32c of the head block) and each
block holds (next, gen, crc32c of the next block), so a stale (lost) or misplaced chain block is
caught where the chain is walked.  Hence a change to block k changes every block before it: an
operation edits the slots in memory, then `commit()` seals the chain from block k back to the
head with the operation's generation.  Under "ordered" that commit is copy-on-write (each sealed
block moves to a fresh block, the old ones are released), so a live used-list block is never
written in place and a torn write can only hit a block no durable origin points at yet.
"""

from __future__ import annotations

from array import array
from itertools import repeat

from .errors import FieldError
from .format import HDR, UL_NEXT, UsedListBlock, crc32c


_SLOTS_AT = HDR + UL_NEXT.size  # where a used-list block's slots start in its image


class UsedList:
    def __init__(self, head: int, blocks: dict[int, UsedListBlock] | None = None) -> None:
        self.head = head
        self.blocks: dict[int, UsedListBlock] = blocks if blocks is not None else {head: UsedListBlock()}
        self.chain: list[int] = []
        self._where: dict[int, tuple[int, int]] = {}  # owned block -> (list block, slot)
        self._pending: list[tuple] = []  # (blocks, list block, first slot) added since `where` was last asked
        self._images: dict[int, bytes] = {}  # sealed image of each chain block, as last committed
        # Delta hints (journal.delta_in): per chain block edited since it was last sealed, that
        # image and the 64-byte chunks of it the edits touched; per block sealed, (its image,
        # the chunks where it may differ from the image sealed before)
        self._base: dict[int, tuple[bytes, set]] = {}
        self.hints: dict[int, tuple] = {}
        self._reindex()

    @property
    def where(self) -> dict[int, tuple[int, int]]:
        """Owned block -> (list block, slot).  Entries added by add() are indexed only when this
        is first asked for (a removal, a lookup, a clone): a streaming write adds 256 entries
        per MiB and asks for none of them."""
        if self._pending:
            w = self._where
            for part, lb, s in self._pending:
                w.update(zip(part, zip(repeat(lb), range(s, s + len(part)))))
            self._pending.clear()
        return self._where

    def _reindex(self) -> None:
        self.chain, self._where, self._pending = [], {}, []
        self.scan = 0  # chain index below which every slot is taken
        self.hint = 0  # slot in chain[scan] below which every slot is taken
        self.full = 0  # chain index from which every slot is taken (after a load: the chain length)
        b = self.head
        seen = set()
        where = self._where
        while b and b not in seen and b in self.blocks:
            seen.add(b)
            self.chain.append(b)
            slots = self.blocks[b].slots
            # only up to the last taken slot (add() fills first-fit from slot 0), found at C speed
            for i, v in enumerate(slots[:(len(slots.tobytes().rstrip(b"\0")) + 7) // 8]):
                if v:
                    where[v] = (b, i)
            b = self.blocks[b].next
        self.full = len(self.chain)

    def clone(self) -> "UsedList":
        """An independent copy (its blocks copied too), without walking the chain again."""
        c = UsedList.__new__(UsedList)
        c.head, c.chain, c._where, c._pending, c._images = (self.head, list(self.chain), dict(self.where), [],
                                                            dict(self._images))
        c._base, c.hints = {b: (img, set(t)) for b, (img, t) in self._base.items()}, {}
        c.blocks = {b: UsedListBlock(u.next, array("Q", u.slots), u.next_gen, u.next_crc, u.gen)
                    for b, u in self.blocks.items()}
        c.scan, c.hint, c.full = self.scan, self.hint, self.full
        return c

    @classmethod
    def load(cls, head: int, read_block, gen: int | None = None, crc: int | None = None) -> "UsedList":
        """Walk the chain from `head` with `read_block(b, gen, crc) -> UsedListBlock`, each block
        checked against what the pointer to it expects (raises on a bad block)."""
        blocks = {}
        b = head
        while b:
            if b in blocks:
                raise FieldError(f"used list: the chain loops back to block {b}")
            blocks[b] = read_block(b, gen, crc)
            b, gen, crc = blocks[b].next, blocks[b].next_gen, blocks[b].next_crc
        return cls(head, blocks)

    def owned(self) -> set[int]:
        return set(self.where)

    def __contains__(self, block: int) -> bool:
        return block in self.where

    def add(self, blocks, alloc_listblock) -> tuple[set[int], list[int]]:
        """Record `blocks` in memory; returns (changed list blocks, newly chained list blocks).

        `alloc_listblock()` supplies a block for a new chain link when every slot is taken.  The
        new link becomes the head (its next pointer is the old head, which does not change), so
        a file that keeps growing changes only its head block or two per operation, however long
        its chain: sealing (commit) rewrites from the furthest changed block back to the head.
        Free slots are filled first-fit from the head, a run of empty slots by one slice.
        """
        changed: set[int] = set()
        new: list[int] = []
        blocks = list(blocks)
        i = 0
        while i < len(blocks):
            if self.scan >= self.full:  # every slot taken: a new head (the rest is full)
                nb = alloc_listblock()
                self.blocks[nb] = UsedListBlock()
                self.chain.insert(0, nb)
                self.scan = self.hint = 0
                self.full = 1
                new.append(nb)
            lb = self.chain[self.scan]
            slots = self.blocks[lb].slots
            try:
                s = slots.index(0, self.hint)
            except ValueError:
                self.scan += 1
                self.hint = 0
                continue
            k = min(len(blocks) - i, len(slots) - s)
            while slots[s:s + k].count(0) != k:  # the empty slots from s: halve until all empty
                k //= 2
            part = blocks[i:i + k]
            slots[s:s + k] = array("Q", part)
            self._pending.append((part, lb, s))
            self.hint = s + k
            self._edited(lb, s, s + k)
            changed.add(lb)
            i += k
        return changed, new

    def remove(self, blocks) -> set[int]:
        changed = set()
        pos = {b: i for i, b in enumerate(self.chain)}
        where, lists = self.where, self.blocks
        low = (self.scan, self.hint)
        for b in blocks:
            lb, i = where.pop(b)
            lists[lb].slots[i] = 0
            self._edited(lb, i, i + 1)
            if lb not in changed:
                changed.add(lb)
            at = (pos[lb], i)
            if at < low:
                low = at
            if at[0] >= self.full:
                self.full = at[0] + 1
        self.scan, self.hint = low
        return changed

    def _edited(self, lb: int, lo: int, hi: int) -> None:
        """Slots lo..hi-1 of chain block lb changed in memory: its sealed image is stale, and the
        chunks of those slots join what the next seal may change against it."""
        img = self._images.pop(lb, None)
        base = self._base.get(lb)
        if base is None and img is not None:  # (an image packed since, unsealed, is no base)
            base = self._base[lb] = (img, set())
        if base is not None:
            o = _SLOTS_AT + 8 * lo
            base[1].update(range(o & -64, _SLOTS_AT + 8 * hi, 64))

    def commit(self, gen: int, changed, *, keep=frozenset(), alloc=None) -> tuple[set[int], list[int]]:
        """Seal the chain after in-memory edits of `changed`: the furthest changed block and every
        block before it get generation `gen` and fresh links (their successors' gen and crc).

        With `alloc` (copy-on-write) each of those blocks not in `keep` (already fresh in this
        operation) moves to `alloc()`.  Returns (blocks to write, blocks given up).
        """
        chain = self.chain  # (searched at C speed: a long file's chain is long, `changed` is short)
        idx = [chain.index(b) for b in changed if b in self.blocks and b in chain]
        if not idx:
            return set(), []
        written: set[int] = set()
        released: list[int] = []
        for i in range(max(idx), -1, -1):
            b = self.chain[i]
            if alloc is not None and b not in keep:
                nb = alloc()
                blk = self.blocks.pop(b)
                self._images.pop(b, None)
                self._base.pop(b, None)
                self.blocks[nb] = blk
                self.chain[i] = nb
                for s, v in enumerate(blk.slots):
                    if v:
                        self.where[v] = (nb, s)
                released.append(b)
                b = nb
            blk = self.blocks[b]
            blk.gen = gen
            if i + 1 < len(self.chain):
                nxt = self.chain[i + 1]
                blk.next, blk.next_gen, blk.next_crc = nxt, self.blocks[nxt].gen, crc32c(self.image(nxt))
            else:
                blk.next = blk.next_gen = blk.next_crc = 0
            base = self._base.pop(b, None)
            if base is None and b in self._images:
                base = (self._images[b], {0})
            self._images[b] = img = blk.pack(b)
            if base is not None:  # header and next pointer: chunk 0; the slots edited since
                base[1].add(0)
                self.hints[b] = (img, base[1])
            written.add(b)
        self.head = self.chain[0]
        return written, released

    def image(self, lb: int) -> bytes:
        img = self._images.get(lb)
        if img is None:
            img = self._images[lb] = self.blocks[lb].pack(lb)
        return img

    def head_ptr(self) -> tuple[int, int, int]:
        """(head block, its generation, its crc32c): what the origin points at."""
        return self.head, self.blocks[self.head].gen, crc32c(self.image(self.head))
