"""The global freelist: one bit per block, kept in memory, persisted as bitmap blocks.

Allocation is next-fit and hands out contiguous runs when it can, so a large write becomes a few
large device writes.  Which bitmap blocks changed is tracked here; when they reach the disk is the
protocol's business (journaled under "journal", written at sync and rebuilt by recovery otherwise).
"""

from __future__ import annotations

import re
from bisect import bisect_left

from .errors import NoSpaceError
from .format import HDR, PAYLOAD, T_BITMAP, check, header, seal

_NOT_FULL = re.compile(rb"[^\xff]")  # a byte with a free block in it
_NOT_EMPTY = re.compile(rb"[^\x00]")  # a byte with a used block in it


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
        self._held_order: tuple | None = None  # (the held set, its blocks in order, blocks held since): _held_sorted()
        self.reclaim = None  # the protocol's way to make held blocks reusable (journal: checkpoint)
        # Delta hints (journal.delta_in): per bitmap block imaged since the bits were last replaced,
        # the 64-byte chunks of its image that changed since image() last packed it; and per block
        # the last image packed, with the chunks where it may differ from the one before
        self.touched: dict[int, set] = {}
        self.hints: dict[int, tuple] = {}
        self.hinting = False  # (set by a protocol that takes them: the journal)

    # --- persistence ---
    def load(self, read) -> None:
        """Read the bitmap blocks through `read(block) -> bytes` (CorruptError on a bad block)."""
        for i in range(self.nbitmap):
            raw = read(self.start + i)
            self.bits[i * PAYLOAD:(i + 1) * PAYLOAD] = check(raw, T_BITMAP, self.start + i)
            self.gens[self.start + i] = header(raw)[5]
        self.nfree = self.nblocks - self._count_used()
        self.forget_hints()

    def forget_hints(self) -> None:
        """The bits were replaced wholesale (a load, a rebuild, a restored snapshot): no image
        packed before is a base a hint may name changes against."""
        self.touched.clear()
        self.hints.clear()

    def _count_used(self) -> int:
        return (int.from_bytes(self.bits, "little") & ((1 << self.nblocks) - 1)).bit_count()

    def image(self, home: int) -> bytes:
        """The bitmap block's image; its hint (self.hints) names the chunks where it may differ
        from the image this packed of it before: the header's (generation, crc) and those of the
        bits set or cleared since."""
        i = home - self.start
        with memoryview(self.bits) as bits:  # (sealed from where the bits are: one copy, into the image)
            img = seal(T_BITMAP, bits[i * PAYLOAD:(i + 1) * PAYLOAD], home, self.gens.get(home, 0))
        if self.hinting:
            t = self.touched.get(home)
            if t is not None:
                t.add(0)
                self.hints[home] = (img, t)
            self.touched[home] = set()
        return img

    def _touch(self, lo: int, hi: int) -> None:
        """Bytes lo..hi-1 of the bits changed: note their chunks in the images of their blocks."""
        touched = self.touched
        while lo < hi:
            i, o = divmod(lo, PAYLOAD)
            n = min(hi - lo, PAYLOAD - o)
            t = touched.get(self.start + i)
            if t is not None:
                t.update(range((HDR + o) & -64, HDR + o + n, 64))
            lo += n

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
        i, o = divmod(byte, PAYLOAD)
        self.dirty.add(self.start + i)
        t = self.touched.get(self.start + i)
        if t is not None:
            t.add((HDR + o) & -64)

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
        held = self.held
        if block not in held:
            held.add(block)
            o = self._held_order
            if o is not None and o[0] is held:
                o[2].append(block)

    def unhold(self, blocks) -> None:
        """`blocks` are reusable again (the transactions that freed them are checkpointed)."""
        self.held.difference_update(blocks)
        self._held_order = None

    def unhold_all(self) -> None:
        self.held.clear()
        self._held_order = None

    def _held_sorted(self) -> list[int]:
        """The held blocks in ascending order, kept from allocation to allocation: blocks held
        since are merged in (a sort of a sorted list with a short unsorted tail is a merge, at C
        speed).  Sorting the whole set at every allocation cost a synced append 0.85 ms of CPU
        with 51,504 blocks held (a 200 MiB file removed and not yet checkpointed).  `held` itself
        stays the set: a list made for another set, or for this one changed behind hold()'s back
        (its size differs), is made again."""
        held, o = self.held, self._held_order
        if o is None or o[0] is not held or len(o[1]) + len(o[2]) != len(held):
            o = self._held_order = (held, sorted(held), [])
        elif o[2]:
            o[1].extend(o[2])
            o[1].sort()
            o[2].clear()
        return o[1]

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
        self.forget_hints()

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

    # --- runs: the same next-fit allocation as alloc(), a run at a time ---
    def _find(self, b: int, end: int, used: bool) -> int:
        """The first block in [b, end) that is used (`used`) or free (not `used`); `end` if none.
        Whole bytes are skipped by a regex search at C speed, so a long run costs one search."""
        bits = self.bits
        while b < end and b & 7:
            if bool(bits[b >> 3] & (1 << (b & 7))) == used:
                return b
            b += 1
        if b >= end:
            return end
        m = (_NOT_EMPTY if used else _NOT_FULL).search(bits, b >> 3, (end + 7) >> 3)
        if m is None:
            return end
        b, byte = m.start() << 3, bits[m.start()]
        while bool(byte & 1) != used:
            byte >>= 1
            b += 1
        return min(b, end)

    def _mark_run(self, lo: int, hi: int) -> None:
        """Blocks lo..hi-1, all free, marked used: bytes in the middle by one slice assignment."""
        a, z = lo, hi
        while a < z and a & 7:
            self.bits[a >> 3] |= 1 << (a & 7)
            a += 1
        while z > a and z & 7:
            z -= 1
            self.bits[z >> 3] |= 1 << (z & 7)
        if a < z:
            self.bits[a >> 3:z >> 3] = b"\xff" * ((z - a) >> 3)
        self.nfree -= hi - lo
        self.dirty.update(range(self.start + (lo >> 3) // PAYLOAD, self.start + ((hi - 1) >> 3) // PAYLOAD + 1))
        if self.touched:
            self._touch(lo >> 3, ((hi - 1) >> 3) + 1)

    def alloc_runs(self, n: int) -> list[tuple[int, int]]:
        """n free blocks as (first block, count) runs, marked used: exactly the blocks, in the
        order, that alloc(n) hands out (next-fit from the same hint, held blocks skipped), but a
        run costs a few searches and slice assignments whatever its length."""
        if n > self.nfree - len(self.held) and self.held and self.reclaim is not None:
            self.reclaim()
        if n > self.nfree - len(self.held):
            raise NoSpaceError(f"out of space: {n} blocks wanted, {self.nfree} free")
        held = self._held_sorted() if self.held else []
        runs: list[tuple[int, int]] = []
        need = n
        start = min(self.hint, self.nblocks)
        if n == 1 and start < self.nblocks and not self.used(start):  # the next block is free (an append)
            i = bisect_left(held, start)
            if i == len(held) or held[i] != start:  # ... and not held: what the search below finds first
                self._set(start, True)  # (_mark_run of one block: the same bit, count, dirty block and chunk)
                self.hint = start + 1
                return [(start, 1)]
        pos = start
        for lo_lim, hi_lim in ((start, self.nblocks), (0, start)):
            pos = lo_lim
            while need and pos < hi_lim:
                lo = self._find(pos, hi_lim, used=False)
                if lo >= hi_lim:
                    pos = hi_lim
                    break
                # the run's end, looked for no further than this allocation can use (a search to
                # the next used block could cross the whole free rest of the device)
                free_end = self._find(lo, min(hi_lim, lo + need + len(held)), used=True)
                pos = lo
                i = bisect_left(held, pos)
                while need and pos < free_end:
                    h = held[i] if i < len(held) and held[i] < free_end else free_end
                    end = min(h, pos + need)
                    if end > pos:
                        self._mark_run(pos, end)
                        if runs and runs[-1][0] + runs[-1][1] == pos:
                            runs[-1] = (runs[-1][0], runs[-1][1] + end - pos)
                        else:
                            runs.append((pos, end - pos))
                        need -= end - pos
                        pos = end
                    if need and pos == h and h < free_end:
                        pos += 1
                        i += 1
            if not need:
                break
        if need:  # cannot happen after the count check; undo rather than half-allocate
            for lo, c in runs:
                for b in range(lo, lo + c):
                    self._set(b, False)
            raise NoSpaceError("out of space")
        self.hint = pos
        return runs
