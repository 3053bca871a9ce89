"""The used list's index of what a file owns (usedlist.UsedList.where), as a load rebuilds it.

_reindex walks each chain block's slots only up to the last taken one (found at C speed from
the block's bytes): a slot past the walk that still held a block would be an owned block the
index -- and so the freelist rebuild, fsck's leak checks and the oracle's allocator check --
never sees.
"""

from __future__ import annotations

from array import array

from blkjournal.format import UL_SLOTS, UsedListBlock
from blkjournal.usedlist import UsedList


def _every_taken(ul: UsedList) -> dict:
    return {v: (b, i) for b in ul.chain for i, v in enumerate(ul.blocks[b].slots) if v}


def test_the_index_names_every_taken_slot_holes_and_the_last_slot_included():
    patterns = {
        10: {0: 1000, 1: 1001, 2: 1002},  # first-fit, from slot 0
        11: {3: 2 ** 40, 7: 1, UL_SLOTS - 1: 2 ** 56},  # holes; the last slot, its low bytes zero
        12: {},  # an empty block
        13: {i: 3000 + i for i in range(UL_SLOTS)},  # full
        14: {0: 256, 5: 2 ** 63},  # values whose low bytes are zero
    }
    blocks, nxt = {}, 0
    for b in sorted(patterns, reverse=True):  # chain 10 -> 11 -> ... -> 14
        slots = array("Q", bytes(8 * UL_SLOTS))
        for i, v in patterns[b].items():
            slots[i] = v
        blocks[b] = UsedListBlock(nxt, slots)
        nxt = b
    ul = UsedList(10, blocks)
    assert ul.chain == [10, 11, 12, 13, 14]
    want = _every_taken(ul)
    assert ul.where == want and list(ul.where) == list(want)  # the same entries, in the same order
    assert len(want) == sum(map(len, patterns.values()))
