"""Which block each writer writes next, and with which generation.

The region is split into one contiguous part per writer thread (disjoint, so a block's
generations come from one writer and are totally ordered).  A writer cycles over its part; on
lap k (from 0) every block gets generation k + 1, so generation 0 never exists and "zeros" is
never mistaken for a write.

Within a lap the blocks are visited with a stride coprime to the part size, not in LBA order:
a disk that writes its cache back in LBA order (elevator style) instead of submission order then
leaves later-submitted blocks on disk while earlier-acked ones are missing, which verify reports
as an ordering violation instead of it hiding behind sequential writes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..device import BLOCK_SIZE
from ..errors import BlkError

DEFAULT_REGION_BYTES = 64 << 20
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, what: str) -> int:
    """A count of 4 KiB blocks ("256") or bytes with a binary suffix ("1M", "64MiB") -> blocks."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise BlkError(f"{what} {text!r}: expected a block count or a size such as 64M")
    n, unit = int(m.group(1)), m.group(2).lower()
    if not unit and not m.group(3):
        return n  # plain number: blocks
    nbytes = n * _UNITS[unit]
    if nbytes % BLOCK_SIZE:
        raise BlkError(f"{what} {text!r} is not a multiple of {BLOCK_SIZE} bytes")
    return nbytes // BLOCK_SIZE


def parse_region(spec: str | None, nblocks: int) -> tuple[int, int]:
    """`START:LEN` (blocks, or sizes with K/M/G suffixes; empty LEN = to the end) -> (start, length).

    Default: the first 64 MiB (or the whole device if smaller); verify reads the whole region, so
    defaulting to all of a large disk would make every check take hours.
    """
    if spec is None:
        return 0, min(nblocks, DEFAULT_REGION_BYTES // BLOCK_SIZE)
    start_s, sep, len_s = spec.partition(":")
    if not sep:
        raise BlkError(f"region {spec!r}: expected START:LEN")
    start = parse_size(start_s or "0", "region start")
    length = parse_size(len_s, "region length") if len_s.strip() else nblocks - start
    if length <= 0 or start < 0 or start + length > nblocks:
        raise BlkError(f"region {spec!r} does not fit the device ({nblocks} blocks of {BLOCK_SIZE} bytes)")
    return start, length


@dataclass(frozen=True)
class Part:
    """One writer's share of the region and the order it visits it in."""

    writer: int
    start: int
    length: int
    stride: int

    def at(self, seq: int) -> tuple[int, int]:
        """(block, generation) of this writer's `seq`-th write."""
        lap, j = divmod(seq, self.length)
        return self.start + (j * self.stride) % self.length, lap + 1


def split(start: int, length: int, threads: int, batch: int) -> list[Part]:
    """Disjoint contiguous parts, sizes differing by at most one, each at least `batch` blocks.

    A part at least one batch long means no block is written twice between two barriers, so
    each acked generation of a block is acked before the next one is submitted.
    """
    if threads < 1:
        raise BlkError("--threads must be at least 1")
    if batch < 1:
        raise BlkError("--batch must be at least 1")
    if length // threads < batch:
        raise BlkError(f"region of {length} blocks is too small for {threads} threads with batches of {batch}")
    parts, base = [], start
    for w in range(threads):
        n = length // threads + (1 if w < length % threads else 0)
        parts.append(Part(w, base, n, _stride(n)))
        base += n
    return parts


def _stride(n: int) -> int:
    """A step coprime with n near n/phi, so consecutive writes land far apart."""
    if n <= 2:
        return 1
    s = max(1, round(n * 0.6180339887))
    while math.gcd(s, n) != 1:
        s += 1
    return s
