"""Commit protocols: how an operation's changes reach the disk, and how a crash is undone.

journal   seed B: data to fresh blocks, then one checksummed transaction of metadata deltas; a
          sync is one flush.  Metadata reaches its home blocks only at checkpoint.
ordered   seed A: allocation recorded in the used list and barriered before any block is
          written; the new origin (in the other origin slot) written only after the data and map
          it points at are durable; recovery trusts the newest valid origin, drops used-list
          entries it does not reach and rebuilds the freelist from the used lists.
none      the ordered protocol's writes with every barrier removed: the counter-example.

A barrier is a flush (`--barrier flush`: plain writes then fdatasync) or FUA writes (`--barrier
fua`: every write that must be durable is issued with RWF_DSYNC).  docs/protocols.md gives each
operation's exact write and barrier order and the crash argument for it.
"""

from __future__ import annotations

from .device import BLOCK_SIZE
from .errors import CorruptError
from .format import ObjEntry, Origin, crc32c
from .journal import ZERO_FILL, Journal, delta, encode

MAX_RUN = 1024  # blocks per device write (4 MiB)


def make_protocol(store):
    p = store.sb.protocol
    if p == "journal":
        return JournalProtocol(store)
    return OrderedProtocol(store, barriers=(p == "ordered"))


def run_role(roles: dict, first: int, last: int, why: str = "") -> str:
    a, b = roles.get(first, f"block {first}"), roles.get(last, f"block {last}")
    text = a if first == last else f"{a} .. {b}"
    return f"{text} [{why}]" if why else text


class Protocol:
    cow = False
    origin_slots = 1
    trusts_bitmap = True  # False: recovery rebuilds the freelist and never reads the bitmap

    def __init__(self, store) -> None:
        self.store = store
        self.dev = store.dev
        self.fua = store.sb.barrier == "fua"
        self.disabled: set[str] = set()  # barrier sites removed (crash explorer's --ablate)

    def on(self, site: str) -> bool:
        """Is this barrier site in force?  Every barrier the protocol issues is named here."""
        return site not in self.disabled

    def sites(self) -> tuple[str, ...]:
        return self.SITES_FUA if self.fua else self.SITES_FLUSH

    def write_blocks(self, blocks: dict[int, bytes], roles: dict, *, fua: bool = False, why: str = "") -> None:
        """Write blocks in ascending order, one device write per contiguous run; `why` names the op."""
        items = sorted(blocks.items())
        i = 0
        while i < len(items):
            j = i + 1
            while j < len(items) and items[j][0] == items[j - 1][0] + 1 and j - i < MAX_RUN:
                j += 1
            first, last = items[i][0], items[j - 1][0]
            data = items[i][1] if j == i + 1 else b"".join(d for _, d in items[i:j])
            self.dev.write(first, data, fua=fua, role=run_role(roles, first, last, why))
            i = j

    def mkfs_blocks(self) -> dict[int, bytes]:
        return {}

    def begin(self) -> None:
        """An operation is about to change the in-memory state (called before it does)."""

    def own_and_release(self, op, remove: bool) -> tuple[set, set]:
        """Record op.owned in the used lists (and, if `remove`, drop op.released).

        Returns (used-list blocks changed in place, used-list blocks newly chained).
        """
        st = self.store
        changed, new = set(), set()

        def alloc_listblock() -> int:
            b = st.freelist.alloc(1)[0]
            op.fresh.add(b)
            return b

        for fid, blocks in op.owned.items():
            f = st.files.get(fid)
            if f is None:
                continue
            c, n = f.ul.add(blocks, alloc_listblock)
            changed |= c
            new.update(n)
            for b in n:
                op.roles[b] = f"used list of file {fid}"
        if remove:
            for fid, blocks in op.released.items():
                f = st.files.get(fid)
                if f is not None:
                    changed |= f.ul.remove([b for b in blocks if b in f.ul])
        for fid in op.owned:
            f = st.files.get(fid)
            if f:
                for b in changed:
                    if b in f.ul.blocks:
                        op.roles[b] = f"used list of file {fid}"
        new |= {b for b in changed if b in op.fresh}
        return changed - new, new


# ====================================================================== journal
class JournalProtocol(Protocol):
    """Seed B's journal with ordered data, one flush per sync (see journal.py)."""

    SITES_FLUSH = ("sync flush", "checkpoint flush before homes", "checkpoint flush after homes",
                   "checkpoint flush after journal superblock")
    SITES_FUA = ("FUA data", "FUA transaction", "FUA checkpoint homes", "FUA journal superblock")

    def __init__(self, store) -> None:
        super().__init__(store)
        self.journal = Journal(store.sb)
        self._images: dict[int, bytes] | None = {}  # committed image of every metadata block (lazy)
        self.unckpt: dict[int, bytes] = {}  # committed to the journal, not yet written home
        self.held: list[int] = []  # freed by committed transactions: reusable after checkpoint
        self.unflushed = False
        store.freelist.reclaim = self.checkpoint  # held blocks come back at a checkpoint

    def mkfs_blocks(self) -> dict[int, bytes]:
        return {self.journal.jsb_block: self.journal.super_image()}

    def begin(self) -> None:
        self.images  # the lazy committed images must be taken before the op edits the state

    @property
    def images(self) -> dict[int, bytes]:
        if self._images is None:
            self._images = self.metadata_images()
        return self._images

    def metadata_images(self) -> dict[int, bytes]:
        st = self.store
        out = {b: st.objmap_image(b) for b in range(st.sb.objmap_start, st.sb.bitmap_start)}
        out.update({b: st.freelist.image(b) for b in st.freelist.homes()})
        for f in st.files.values():
            out[f.origin_block] = f.origin().pack()
            out.update({b: n.pack() for b, n in f.map.nodes.items()})
            out.update({b: f.ul.image(b) for b in f.ul.blocks})
        return out

    def recover(self, write: bool = True, strict: bool = True) -> list[str]:
        st = self.store
        self.journal.load_super(self.dev)
        txns = self.journal.replay(self.dev)
        homes: dict[int, bytearray] = {}
        for t in txns:
            for home, off, buf in t.records:
                if not 0 < home < st.sb.nblocks or st.sb.journal_start <= home < st.sb.objmap_start:
                    raise CorruptError(f"journal transaction {t.seq}: record for block {home} is out of range")
                img = homes.get(home)
                if img is None:
                    img = homes[home] = bytearray(BLOCK_SIZE if off == ZERO_FILL else self.dev.read(home))
                if off == ZERO_FILL:
                    img[:] = bytes(BLOCK_SIZE)
                else:
                    img[off:off + len(buf)] = buf
        self.replayed = len(txns)
        problems = st.load({b: bytes(v) for b, v in homes.items()})
        if problems and strict:
            raise CorruptError(problems[0])
        self._images = None  # built on the first commit: a read-only open never needs them
        self.unckpt = {b: bytes(v) for b, v in homes.items()}
        if write and txns:
            self.unflushed = False
            self.checkpoint()
        return problems

    def commit(self, op) -> None:
        st = self.store

        changed, new = self.own_and_release(op, remove=True)
        released = [b for blocks in op.released.values() for b in blocks]
        for b in released:
            st.freelist.hold(b)
        blocks: dict[int, bytes] = {}
        for b in changed | op.meta:
            blocks[b] = st.meta_image(b)
        for b in new | op.fresh:
            if b not in blocks:
                try:
                    blocks[b] = st.meta_image(b)
                except KeyError:
                    pass  # an origin slot: handled below
        for fid in op.origins:
            f = st.files.get(fid)
            if f is not None:
                blocks[f.origin_block] = f.origin().pack()
        for b in op.objmap:
            blocks[b] = st.objmap_image(b)
        for b in st.freelist.dirty:
            blocks[b] = st.freelist.image(b)
        st.freelist.dirty.clear()
        records = []
        for b in sorted(blocks):
            old = None if b in op.fresh else self.images.get(b)
            for off, buf in delta(old, blocks[b]):
                records.append((b, off, buf))
        data_crcs = [(b, op.crcs[b] if b in op.crcs else crc32c(d)) for b, d in sorted(op.data.items())]
        if op.data:
            self.write_blocks(op.data, op.roles, fua=self.fua and self.on("FUA data"), why=op.name)
        txn, commit = encode(self.journal.next_seq, self.journal.prev, data_crcs, records)
        pos = self.journal.place(len(txn))
        if pos is None:
            self.checkpoint()
            pos = self.journal.place(len(txn))
        self.dev.write(self.journal.area + pos, b"".join(txn), fua=self.fua and self.on("FUA transaction"),
                       role=f"journal txn {self.journal.next_seq} [{op.name}]")
        self.journal.advance(pos, len(txn), commit)
        self.unflushed = not self.fua
        for b in released:
            self.images.pop(b, None)
            self.unckpt.pop(b, None)
        self.images.update(blocks)
        self.unckpt.update(blocks)
        self.held.extend(released)

    def checkpoint(self) -> None:
        """Write committed metadata home, make it durable, then advance the journal tail."""
        if self.unflushed and self.on("checkpoint flush before homes"):
            self.dev.flush()
        roles = {b: f"checkpoint of {self.store.role_of(b)}" for b in self.unckpt}
        self.write_blocks(self.unckpt, roles, fua=self.fua and self.on("FUA checkpoint homes"))
        if not self.fua and self.on("checkpoint flush after homes"):
            self.dev.flush()
        self.journal.retire()
        self.dev.write(self.journal.jsb_block, self.journal.super_image(),
                       fua=self.fua and self.on("FUA journal superblock"), role="journal superblock (checkpoint)")
        # The new tail must be durable before the log space behind it is reused: a replay from the
        # old tail through transactions half overwritten by new ones would roll homes back.
        if not self.fua and self.on("checkpoint flush after journal superblock"):
            self.dev.flush()
        self.unflushed = False
        self.unckpt.clear()
        for b in self.held:
            self.store.freelist.held.discard(b)
        self.held.clear()

    def sync(self) -> None:
        if self.unflushed:
            if self.on("sync flush"):
                self.dev.flush()
            self.unflushed = False

    def close(self) -> None:
        """A clean shutdown: everything committed is durable (the log is replayed at open)."""
        self.sync()


# ====================================================================== ordered / none
class OrderedProtocol(Protocol):
    """Seed A's used lists with barriers (or, for "none", the same writes without them)."""

    cow = True
    origin_slots = 2
    trusts_bitmap = False
    SITES_FLUSH = ("A0 used-list chain flush", "B data and map flush", "sync flush")
    SITES_FUA = ("A0 used-list chain FUA", "A used-list entries FUA", "B data and map FUA", "C origin FUA")

    def __init__(self, store, barriers: bool = True) -> None:
        super().__init__(store)
        self.barriers = barriers
        self.elevator: dict[int, tuple[bytes, str]] = {}  # none: an op's writes, issued in block order
        self.epoch = 0  # barriers passed
        self.written = False  # a write since the last barrier (else a sync has nothing to flush)
        self.pending: list[tuple[int, int, int]] = []  # (fid, block, epoch its unreferencing write was issued in)
        self.unlisting: list[tuple[int, int]] = []  # (block, epoch its used-list removal was written in)

    def barrier(self, site: str = "") -> None:
        """Everything written so far is durable from here on (under "none": pretend so)."""
        if self.barriers and not self.fua and self.on(site):
            self.dev.flush()
        self.epoch += 1
        self.written = False

    def phase(self, blocks: dict[int, bytes], roles: dict, *, durable: bool, site: str, why: str = "") -> None:
        """Write a phase.  Under fua every write of a durable phase is a FUA write; under flush a
        durable phase ends in a flush.  `none` holds the writes back for `drain`."""
        if not blocks:
            return
        self.written = True
        if not self.barriers:
            # Nothing orders these writes, so like an I/O elevator we issue each op's writes in
            # block order at its end: the same writes, in an order a real queue may well use.
            self.elevator.update({b: (d, run_role(roles, b, b, why)) for b, d in blocks.items()})
        else:
            self.write_blocks(blocks, roles, fua=durable and self.fua and self.on(f"{site} FUA"), why=why)
        if durable and (self.fua or not self.barriers or site.startswith(("A0", "B"))):
            self.barrier(f"{site} flush")

    def drain(self) -> None:
        """Issue the writes the `none` protocol held back, in ascending block order."""
        if self.elevator:
            held, self.elevator = self.elevator, {}
            for b in sorted(held):  # one request per block: each object's write stays its own
                self.dev.write(b, held[b][0], role=held[b][1])

    def commit(self, op) -> None:
        st = self.store

        # Releases: a block leaves its used list once the origin that dropped it is durable, and
        # becomes allocatable once that removal is durable too.
        for b, tag in self.unlisting:
            if self.epoch > tag:
                st.freelist.mark_free(b)
        self.unlisting = [(b, tag) for b, tag in self.unlisting if self.epoch <= tag]
        ready = [(fid, b) for fid, b, tag in self.pending if self.epoch > tag]
        self.pending = [p for p in self.pending if self.epoch <= p[2]]
        changed_a = set()
        for fid, b in ready:
            f = st.files.get(fid)
            if f is not None and f.ul.where.get(b):
                changed_a |= f.ul.remove([b])
                self.unlisting.append((b, self.epoch))
            else:
                st.freelist.mark_free(b)  # its file's deletion is durable: no list holds it
        changed, new = self.own_and_release(op, remove=False)
        heads = {st.files[fid].ul.head for fid in op.created if fid in st.files}
        changed |= changed_a | heads
        for b in changed_a:
            op.roles.setdefault(b, f"used list block {b}")
        # Phase A0: used-list blocks newly linked into an existing chain, durable before the link.
        links = new - heads
        self.phase({b: self._ul_image(b) for b in links}, op.roles, durable=True, site="A0 used-list chain",
                   why=op.name)
        # Phase A: the used-list entries (and a new file's head).  Under flush no barrier of its
        # own: B's flush orders them before the origin, which is all that matters (docs/protocols.md).
        self.phase({b: self._ul_image(b) for b in changed - links}, op.roles, durable=True,
                   site="A used-list entries", why=op.name)
        # Phase B: data and the new map nodes it hangs from.
        blocks = dict(op.data)
        for b in op.fresh | op.meta:
            for f in st.files.values():
                if b in f.map.nodes:
                    blocks[b] = f.map.nodes[b].pack()
        origins = {}
        for fid in op.origins:
            f = st.files.get(fid)
            if f is not None:
                f.slot ^= 1
                f.gen += 1
                origins[f.origin_block] = f.origin().pack()
                op.roles[f.origin_block] = f"origin of file {fid} (slot {'ab'[f.slot]}, gen {f.gen})"
        for b in op.objmap:
            origins[b] = st.objmap_image(b)
            op.roles[b] = st.role_of(b)
        if origins and self.written and not self.fua and not blocks:
            blocks = {}  # nothing of B's own, but A's entries still need the barrier before C
            self.barrier("B data and map flush")
        self.phase(blocks, op.roles, durable=bool(origins), site="B data and map", why=op.name)
        # Phase C: the new origins (and object map entries) -- the operation's commit point.
        tag = self.epoch
        self.phase(origins, op.roles, durable=self.fua, site="C origin", why=op.name)
        self.drain()
        for fid, blocks in op.released.items():
            self.pending.extend((fid, b, tag) for b in blocks)

    def _ul_image(self, b: int) -> bytes:
        for f in self.store.files.values():
            if b in f.ul.blocks:
                return f.ul.image(b)
        raise KeyError(b)

    def sync(self) -> None:
        st = self.store
        bitmap = {b: st.freelist.image(b) for b in st.freelist.dirty}
        st.freelist.dirty.clear()
        if bitmap:
            self.write_blocks(bitmap, {b: st.role_of(b) for b in bitmap}, why="sync")
            self.written = True
        if self.written:  # a second sync with nothing new in between issues nothing
            self.barrier("sync flush")

    def close(self) -> None:
        """A clean shutdown leaves no used-list entry that reaches nothing (fsck: no leak).

        Released blocks leave the used lists only once the origin that dropped them is durable:
        sync (now every release is, and the bitmap is written), drop them (phase A of an empty
        operation), sync (the bitmap again).  Without this the next open's recovery does the same.
        """
        self.sync()
        if self.pending:
            from .store import Op

            self.commit(Op("close: drop released blocks from the used lists", cow=True))
            self.sync()

    # ---------------------------------------------------------------- recovery
    def choose_origin(self, fid: int, e: ObjEntry, read):
        """The newest valid origin slot that belongs to this file (birth matches), or None."""
        best = None
        for slot, b in enumerate((e.origin_a, e.origin_b)):
            if not b:
                continue
            try:
                o = Origin.unpack(read(b), b)
            except CorruptError:
                continue
            if o.file_id == fid and o.birth == e.birth and (best is None or o.gen > best[1].gen):
                best = (slot, o)
        return best

    def recover(self, write: bool = True, strict: bool = True) -> list[str]:
        """Newest origin per file; used-list entries it does not reach dropped; freelist rebuilt."""
        st = self.store
        problems = st.load(origin_choice=self.choose_origin)
        self.repairs: list[str] = []
        writes: dict[int, bytes] = {}
        roles: dict[int, str] = {}
        for fid, e in enumerate(st.entries):
            if e.in_use and fid not in st.files and any(p.endswith("no valid origin") and p.startswith(f"file {fid} ")
                                                        for p in problems):
                st.entries[fid] = ObjEntry(birth=e.birth)  # a create that never became durable
                writes[st.objmap_home(fid)] = None
                self.repairs.append(f"dropped object map entry {fid} ({e.name!r}): no durable origin")
        problems = [p for p in problems if not p.endswith("no valid origin")]
        if problems and strict:
            raise CorruptError(problems[0])
        for f in st.files.values():
            reach = {b for _, b, _ in f.map.data_entries()} | set(f.map.all_nodes())
            stray = f.ul.owned() - reach
            if stray:
                for b in f.ul.remove(sorted(stray)):
                    writes[b] = None
                self.repairs.append(f"file {f.fid}: dropped {len(stray)} used-list entries it does not reference")
            missing = reach - f.ul.owned()
            if missing:
                c, n = f.ul.add(sorted(missing), lambda: st.freelist.alloc(1)[0])
                for b in c | set(n):
                    writes[b] = None
                self.repairs.append(f"file {f.fid}: listed {len(missing)} referenced blocks missing from its used list")
        st.freelist.rebuild(st.owned_blocks())
        for b in st.freelist.homes():  # the on-disk bitmap is only a hint: rewrite it whole
            writes[b] = None
        st.freelist.dirty.clear()
        for b in writes:
            writes[b] = st.objmap_image(b) if st.sb.objmap_start <= b < st.sb.bitmap_start else (
                st.freelist.image(b) if st.sb.bitmap_start <= b < st.sb.data_start else self._ul_image(b))
            roles[b] = f"recovery: {st.role_of(b)}"
        if write and writes:
            self.write_blocks(writes, roles, fua=self.fua and self.barriers)
            self.barrier("recovery")
        return problems
