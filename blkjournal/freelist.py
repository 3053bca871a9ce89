"""The global freelist: one bit per block, kept in memory, persisted as bitmap blocks.

Allocation is next-fit and hands out contiguous runs when it can, so a large write becomes a few
large device writes.  Which bitmap blocks changed is tracked here; when they reach the disk is the
protocol's business (journaled under "journal", written at sync and rebuilt by recovery otherwise).
"""

from __future__ import annotations

from .errors import NoSpaceError
from .format import PAYLOAD, T_BITMAP, check, header, seal


class Freelist:
    def __init__(self, nblocks: int, bitmap_start: int, bitmap_blocks: int) -> None:
        self.nblocks = nblocks
        self.start = bitmap_start
        self.nbitmap = bitmap_blocks
        self.bits = bytearray(bitmap_blocks * PAYLOAD)
        self.dirty: set[int] = set()
        self.gens: dict[int, int] = {}  # bitmap block -> generation that last wrote it
        self.hint = 0
        self.nfree = nblocks
        self.held: set[int] = set()  # free on disk, not yet reusable (see hold())
        self.reclaim = None  # the protocol's way to make held blocks reusable (journal: checkpoint)

    # --- persistence ---
    def load(self, read) -> None:
        """Read the bitmap blocks through `read(block) -> bytes` (CorruptError on a bad block)."""
        for i in range(self.nbitmap):
            raw = read(self.start + i)
            self.bits[i * PAYLOAD:(i + 1) * PAYLOAD] = check(raw, T_BITMAP, self.start + i)
            self.gens[self.start + i] = header(raw)[5]
        self.nfree = self.nblocks - self._count_used()

    def _count_used(self) -> int:
        return (int.from_bytes(self.bits, "little") & ((1 << self.nblocks) - 1)).bit_count()

    def image(self, home: int) -> bytes:
        i = home - self.start
        return seal(T_BITMAP, bytes(self.bits[i * PAYLOAD:(i + 1) * PAYLOAD]), home, self.gens.get(home, 0))

    def stamp(self, gen: int) -> None:
        """The dirty bitmap blocks are about to be written by generation `gen`."""
        for b in self.dirty:
            self.gens[b] = gen

    def homes(self) -> range:
        return range(self.start, self.start + self.nbitmap)

    # --- bits ---
    def used(self, block: int) -> bool:
        return bool(self.bits[block >> 3] & (1 << (block & 7)))

    def _set(self, block: int, on: bool) -> None:
        byte, bit = block >> 3, 1 << (block & 7)
        was = bool(self.bits[byte] & bit)
        if was == on:
            return
        if on:
            self.bits[byte] |= bit
            self.nfree -= 1
        else:
            self.bits[byte] &= ~bit
            self.nfree += 1
        self.dirty.add(self.start + byte // PAYLOAD)

    def mark_used(self, block: int) -> None:
        self._set(block, True)

    def mark_free(self, block: int) -> None:
        self._set(block, False)

    def hold(self, block: int) -> None:
        """Free `block` in the bitmap but keep it from being handed out until `unhold_all()`.

        The journal frees a block in the transaction that unreferences it, but the checkpointed
        state may still point at it until that transaction is checkpointed.
        """
        self._set(block, False)
        self.held.add(block)

    def unhold_all(self) -> None:
        self.held.clear()

    def rebuild(self, used_blocks) -> None:
        """Make the bitmap say exactly `used_blocks` are in use (recovery); dirty what changed."""
        want = bytearray(len(self.bits))
        for b in used_blocks:
            want[b >> 3] |= 1 << (b & 7)
        for i in range(self.nbitmap):
            lo, hi = i * PAYLOAD, (i + 1) * PAYLOAD
            if want[lo:hi] != self.bits[lo:hi]:
                self.dirty.add(self.start + i)
        self.bits = want
        self.nfree = self.nblocks - self._count_used()

    def alloc(self, n: int) -> list[int]:
        """n free blocks, as contiguous as the free space allows, marked used."""
        if n > self.nfree - len(self.held) and self.held and self.reclaim is not None:
            self.reclaim()  # space only held back by the live journal: checkpoint, then it is free
        if n > self.nfree - len(self.held):
            raise NoSpaceError(f"out of space: {n} blocks wanted, {self.nfree} free")
        out: list[int] = []
        b = self.hint
        scanned = 0
        bits = self.bits
        while len(out) < n:
            if b >= self.nblocks:
                b = 0
            byte = bits[b >> 3]
            if byte == 0xFF and (b & 7) == 0:
                b += 8
                scanned += 8
            else:
                if not byte & (1 << (b & 7)) and b not in self.held:
                    out.append(b)
                    self._set(b, True)
                b += 1
                scanned += 1
            if scanned > self.nblocks + 8 and len(out) < n:
                for x in out:
                    self._set(x, False)
                raise NoSpaceError("out of space")
        self.hint = b
        return out
