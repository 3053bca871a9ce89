"""The block index map (seed A): file block index -> (data block, crc32c), a sparse radix tree.

The origin holds ROOT_SLOTS entries; at height h each covers FANOUT**h file blocks through map
nodes of FANOUT entries, so a hole costs nothing and a file of many GiB needs height 2 or 3.
A zero block number is a hole (reads as zeros).

Copy-on-write is the "ordered" protocol's tool: a node is never edited in place once the durable
origin may point at it; the first edit in an operation moves it to a fresh block (`cow=True`), so
the old tree stays intact on disk until the new origin is durable.  Under "journal" the journal
gives atomicity and nodes are edited in place.

Every entry carries the crc32c of what it points at -- a data block at height 1, a child node
above -- so the tree is a Merkle tree hung from the origin: a stale (lost) or misplaced node is
caught by its parent.  `seal()` restores that after an operation's edits, bottom up.
"""

from __future__ import annotations

from array import array
from itertools import compress

from .errors import FieldError
from .format import FANOUT, FANOUT_BITS, HDR, ROOT_SLOTS, MapNode, crc32c


_CRCS_AT = HDR + 8 * FANOUT  # where a map node's crcs start in its image


class BlockMap:
    def __init__(self, height: int = 0, root_blocks=None, root_crcs=None,
                 nodes: dict[int, MapNode] | None = None) -> None:
        self.height = height
        self.root_blocks = array("Q", root_blocks if root_blocks is not None else bytes(8 * ROOT_SLOTS))
        self.root_crcs = array("I", root_crcs if root_crcs is not None else bytes(4 * ROOT_SLOTS))
        self.nodes: dict[int, MapNode] = nodes if nodes is not None else {}
        # Delta hints (journal.delta_in): per node with a base image (sealed, or as loaded), the
        # 64-byte chunks of its image edited since; the root slots edited since the origin was
        # last packed (None: unknown -- the tree grew or was cut); per node sealed, (its image,
        # the chunks where it may differ from the one before)
        self.touched: dict[int, set] = {}
        self.root_touched: set | None = set()
        self.hints: dict[int, tuple] = {}

    def clone(self) -> "BlockMap":
        """An independent copy (its nodes copied too; no delta hints until it is sealed)."""
        c = BlockMap(self.height, self.root_blocks, self.root_crcs, {b: n.copy() for b, n in self.nodes.items()})
        c.root_touched = None
        return c

    @classmethod
    def load(cls, origin, read_node) -> "BlockMap":
        """Read every node reachable from the origin with `read_node(b, crc) -> MapNode`, `crc`
        being what the parent entry expects of the node."""
        m = cls(origin.height, origin.root_blocks, origin.root_crcs)
        m.read_nodes(read_node)
        return m

    def read_nodes(self, read_node) -> None:
        """Fill self.nodes from the root down; `read_node(b, crc)` may return None to skip a subtree.

        A tree names each node once.  A node reached a second time -- a cycle, or a subtree
        shared by two parents -- is a FieldError: walking it would visit FANOUT**height entries
        (a self-pointing node under height 4 is four billion of them) and free a block twice.
        """
        seen: set[int] = set()

        def walk(b: int, crc: int, h: int) -> None:
            if b in seen:
                raise FieldError(f"block index map: node {b} is reached twice (a cycle or a shared subtree)")
            seen.add(b)
            node = read_node(b, crc)
            if node is None:
                return
            self.nodes[b] = node
            self.touched[b] = set()  # loaded: its image is what the committed one packs
            if h > 1:
                for c, cc in zip(node.blocks, node.crcs):
                    if c:
                        walk(c, cc, h - 1)

        try:
            if self.height:
                for b, crc in zip(self.root_blocks, self.root_crcs):
                    if b:
                        walk(b, crc, self.height)
        finally:
            walk = None  # noqa: F841 -- the closure names itself: unnamed, what it holds dies by reference counting

    def seal(self, dirty, gen: int) -> dict[int, bytes]:
        """After an operation edited the nodes in `dirty`: stamp them and every ancestor with `gen`
        and refresh, bottom up, the crc each parent (or the root) holds for them.  Returns the
        nodes whose image changed (under "journal" the ancestors are edited in place too), each
        with its new image (what the parent's crc is of: the commit writes these very bytes).

        Only the interior levels are walked (a leaf's parent is found by a search of its
        parent level's entries at C speed), so sealing an append to a file of thousands of
        leaves costs the tree's height, not a visit of every leaf."""
        if not self.height or not dirty:
            return {}
        h, nodes = self.height, self.nodes
        where: dict[int, tuple[int | None, int, int]] = {}  # node -> (parent or None, slot, depth)
        level = [(None, self.root_blocks)]  # the nodes of one depth, with their entries
        for depth in range(h - 1):  # depths whose nodes have nodes below them
            below = []
            for p, blocks in level:
                for s in compress(range(len(blocks)), blocks):
                    c = blocks[s]
                    where[c] = (p, s, depth)
                    below.append((c, nodes[c].blocks))
            level = below
        for b in dirty:  # a leaf: a child of a node of `level` (of the root when the height is 1)
            if b not in where:
                for p, blocks in level:
                    if b in blocks:
                        where[b] = (p, blocks.index(b), h - 1)
                        break
        todo = {b for b in dirty if b in where}
        for b in list(todo):
            p = where[b][0]
            while p is not None and p not in todo:
                todo.add(p)
                p = where[p][0]
        images = {}
        for b in sorted(todo, key=lambda n: where[n][2], reverse=True):
            node = nodes[b]
            node.gen = gen
            p, slot, _ = where[b]
            images[b] = img = node.pack(b)
            t = self.touched.get(b)
            if t is not None:
                t.add(0)  # the header: generation, crc
                self.hints[b] = (img, t)
            self.touched[b] = set()
            (self.root_crcs if p is None else nodes[p].crcs)[slot] = crc32c(img)
            self._edited(p, slot, slot + 1, crcs=True)
        return images

    def _edited(self, node, lo: int, hi: int, *, blocks: bool = False, crcs: bool = False) -> None:
        """Entries lo..hi-1 of `node` (None: the root) changed, in its blocks or crcs."""
        if node is None:
            if self.root_touched is not None:
                self.root_touched.update(range(lo, hi))
            return
        t = self.touched.get(node)
        if t is not None:
            if blocks:
                t.update(range((HDR + 8 * lo) & -64, HDR + 8 * hi, 64))
            if crcs:
                t.update(range((_CRCS_AT + 4 * lo) & -64, _CRCS_AT + 4 * hi, 64))

    def capacity(self, height: int | None = None) -> int:
        return ROOT_SLOTS << (FANOUT_BITS * (self.height if height is None else height))

    def lookup(self, idx: int) -> tuple[int, int]:
        """(data block, crc) for file block idx; (0, 0) for a hole (or past capacity())."""
        shift = FANOUT_BITS * self.height
        slot = idx >> shift
        if slot >= ROOT_SLOTS or idx < 0:
            return 0, 0
        if not shift:
            return self.root_blocks[slot], self.root_crcs[slot]
        child, nodes = self.root_blocks[slot], self.nodes
        while child:  # one node per level; the last level's entries are the data blocks
            node = nodes[child]
            shift -= FANOUT_BITS
            slot = (idx >> shift) & (FANOUT - 1)
            if not shift:
                return node.blocks[slot], node.crcs[slot]
            child = node.blocks[slot]
        return 0, 0

    def set(self, idx: int, block: int, crc: int, edit) -> int:
        """Point file block idx at `block`; returns the block it pointed at before (0: hole).

        `edit` is the operation's MapEdit: it allocates nodes, copies on write, and records which
        nodes changed and which were released.
        """
        while idx >= self.capacity():
            self._grow(edit)
        blocks, crcs, slot, parent = self._leaf(idx, edit)
        old = blocks[slot]
        blocks[slot], crcs[slot] = block, crc
        self._edited(parent, slot, slot + 1, blocks=True, crcs=True)
        edit.touch(parent)
        return old

    def set_run(self, idx: int, block: int, crcs, edit) -> list[int]:
        """Point file blocks idx.. at the contiguous blocks block.., one per crc in `crcs`;
        returns the blocks they pointed at before (holes left out).

        One walk down the tree per leaf node the run crosses and slice assignments within it,
        so a run costs the same per leaf whatever its length (a leaf holds FANOUT entries)."""
        n = len(crcs)
        while n and idx + n - 1 >= self.capacity():
            self._grow(edit)
        old: list[int] = []
        k = 0
        while k < n:
            blocks, leaf_crcs, slot, parent = self._leaf(idx + k, edit)
            span = min(n - k, len(blocks) - slot)
            if span == 1:  # (an append's one block: no slices)
                if blocks[slot]:
                    old.append(blocks[slot])
                blocks[slot], leaf_crcs[slot] = block + k, crcs[k]
            else:
                before = blocks[slot:slot + span]
                if before.count(0) != span:
                    old.extend(x for x in before if x)
                blocks[slot:slot + span] = array("Q", range(block + k, block + k + span))
                leaf_crcs[slot:slot + span] = array("I", crcs[k:k + span])
            self._edited(parent, slot, slot + span, blocks=True, crcs=True)
            edit.touch(parent)
            k += span
        return old

    def _leaf(self, idx: int, edit):
        """(blocks, crcs, slot, node) of the leaf entry for file block idx (idx < capacity),
        every node on the way made writable (allocated, or copied on write) through `edit`;
        node is None when the leaf is the root."""
        blocks, crcs = self.root_blocks, self.root_crcs
        shift = FANOUT_BITS * self.height
        slot = idx >> shift
        parent = None  # None = root
        for _ in range(self.height):
            child = blocks[slot]
            if not child:
                child = edit.new_node(self)
                blocks[slot] = child
                self._edited(parent, slot, slot + 1, blocks=True)
                edit.touch(parent)
            else:
                moved = edit.writable(self, child)
                if moved != child:
                    blocks[slot] = moved
                    self._edited(parent, slot, slot + 1, blocks=True)
                    edit.touch(parent)
                    child = moved
            node = self.nodes[child]
            parent = child
            blocks, crcs = node.blocks, node.crcs
            shift -= FANOUT_BITS
            slot = (idx >> shift) & (FANOUT - 1)
        return blocks, crcs, slot, parent

    def _grow(self, edit) -> None:
        """Add a level: the root's entries move into a new node hung at root slot 0."""
        nb = edit.new_node(self)
        node = self.nodes[nb]
        node.blocks[:ROOT_SLOTS] = self.root_blocks
        node.crcs[:ROOT_SLOTS] = self.root_crcs
        self.root_blocks = array("Q", bytes(8 * ROOT_SLOTS))
        self.root_crcs = array("I", bytes(4 * ROOT_SLOTS))
        self.root_blocks[0] = nb
        self.height += 1
        self.root_touched = None  # the whole root changed
        edit.touch(None)

    def truncate(self, nblocks: int, edit) -> list[int]:
        """Drop every entry at file block index >= nblocks; returns the data blocks released.

        Nodes left covering nothing are released too (through `edit`).
        """
        released: list[int] = []
        self.touched.clear()  # (not tracked entry by entry: no hints until the nodes are sealed again)
        self.root_touched = None

        def prune(blocks, crcs, h: int, base: int, container) -> bool:
            """Clear entries >= nblocks below this container; True if it is now empty."""
            span = 1 << (FANOUT_BITS * h)
            changed = False
            if h == 0:  # a leaf: every entry from the cut on goes, by slices
                cut = max(0, nblocks - base)
                if cut < len(blocks):
                    gone = blocks[cut:]
                    if gone.count(0) != len(gone):
                        released.extend(x for x in gone if x)
                        blocks[cut:] = array("Q", bytes(8 * len(gone)))
                        crcs[cut:] = array("I", bytes(4 * len(gone)))
                        changed = True
                if changed:
                    edit.touch(container)
                return not any(blocks)
            for slot in range(len(blocks)):
                lo = base + slot * span
                b = blocks[slot]
                if not b or lo + span <= nblocks:
                    continue
                if lo >= nblocks:
                    released.extend(self._subtree_data(b, h))
                    edit.release_subtree(self, b, h)
                    blocks[slot], crcs[slot] = 0, 0
                    changed = True
                    continue
                moved = edit.writable(self, b)
                if moved != b:
                    blocks[slot] = moved
                    changed = True
                node = self.nodes[moved]
                prune(node.blocks, node.crcs, h - 1, lo, moved)
            if changed:
                edit.touch(container)
            return not any(blocks)

        prune(self.root_blocks, self.root_crcs, self.height, 0, None)
        return released

    def _subtree_data(self, b: int, h: int) -> list[int]:
        node = self.nodes[b]
        if h == 1:
            return list(filter(None, node.blocks))
        out = []
        for c in node.blocks:
            if c:
                out.extend(self._subtree_data(c, h - 1))
        return out

    def subtree_nodes(self, b: int, h: int) -> list[int]:
        out = [b]
        if h > 1:
            for c in self.nodes[b].blocks:
                if c:
                    out.extend(self.subtree_nodes(c, h - 1))
        return out

    def all_nodes(self) -> list[int]:
        out = []
        if self.height:
            for b in self.root_blocks:
                if b:
                    out.extend(self.subtree_nodes(b, self.height))
        return out

    def entries_in(self, first: int, last: int):
        """Yield (file block index, data block, crc) for the mapped blocks first..last, in index
        order, visiting only the subtrees that cover them: a 4 KiB read of a large file costs
        the map's height, not a walk over every entry before it."""
        def walk(blocks, crcs, h: int, base: int):
            span = 1 << (FANOUT_BITS * h)
            lo = max(0, (first - base) // span)
            hi = min(len(blocks), (last - base) // span + 1)
            if h == 0:  # the mapped slots of a leaf, picked in C (a hole's slot holds 0)
                sel = blocks[lo:hi]
                yield from compress(zip(range(base + lo, base + hi), sel, crcs[lo:hi]), sel)
                return
            for slot in range(lo, hi):
                b = blocks[slot]
                if b:
                    node = self.nodes[b]
                    yield from walk(node.blocks, node.crcs, h - 1, base + slot * span)

        try:
            if first <= last:
                yield from walk(self.root_blocks, self.root_crcs, self.height, 0)
        finally:
            walk = None  # noqa: F841 -- (as in read_nodes)

    def data_blocks(self) -> list[int]:
        """Every mapped data block (as data_entries() names them), without the index and crc:
        what the owner accounting needs, at list speed."""
        if not self.height:
            return list(filter(None, self.root_blocks))
        out: list[int] = []
        for b in self.root_blocks:
            if b:
                out.extend(self._subtree_data(b, self.height))
        return out

    def data_entries(self):
        """Yield (file block index, data block, crc) for every mapped block, in index order."""
        return self.entries_in(0, self.capacity() - 1)
