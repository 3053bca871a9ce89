"""Commit protocols: how an operation's changes reach the disk, and how a crash is undone.

journal   seed B: data to fresh blocks, then one checksummed transaction of metadata deltas; a
          sync is one flush.  Metadata reaches its home blocks only at checkpoint.
ordered   seed A: the used list, the map and the data written copy-on-write to fresh blocks;
          the new origin (in the other origin slot) written only after everything it points at
          is durable; recovery trusts the newest valid origin and rebuilds the freelist from the
          used lists.
none      the ordered protocol's writes with every barrier removed: the counter-example.

A barrier is a flush (`--barrier flush`: plain writes then fdatasync) or FUA writes (`--barrier
fua`: every write that must be durable is issued with RWF_DSYNC).  docs/protocols.md gives each
operation's exact write and barrier order and the crash argument for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import memo
from .device import BLOCK_SIZE, STAGE_BYTES, AtLeast
from .errors import BlkError, CorruptError, StaleBlockError
from .claims import gather, hidden_by_tear, judge, stale_stamp
from .format import (MAGIC, MAX_OBJMAP_SEEN, MAX_SEEN, OBJMAP_ID, T_BITMAP, ObjEntry, block_type, check, crc32c, header,
                     origin_chunks, weak_detection)
from .journal import WHOLE_DATA, ZERO_FILL, DataCrcs, Journal, delta, delta_in, encode, patched, stream_blocks, stream_bound, txn_stream
from .op import Op
from .originslots import blanks, choose

MAX_RUN = 1024  # blocks per device write (4 MiB)
EARLY_MIN = 64  # data blocks from which a journal write issues its data before its crcs (issue_data_early)
STREAM_MAX = STAGE_BYTES // 2  # bytes of data up to which such a write returns with its writes in flight
GROUP_MAX = 16384  # data blocks (64 MiB) a running transaction orders at most (JournalProtocol.join)


@dataclass
class _Early:
    """Data writes a journal operation issued before its commit: what, the bound its transaction
    was held to, the freelist's reclaim to restore, and the last write's handle (None: done)."""

    op: object
    blocks: dict
    bound: int
    reclaim: object
    last: object = None
    staged: bool = False  # its data was staged (writev_background's stage): the op may return with it in flight


@dataclass
class _Running:
    """The running transaction (jbd2's): what the streaming writes that joined it changed, not
    yet in the log -- each metadata block's image as the last of them left it, the blocks first
    allocated in it (logged whole), the delta hints of those images, the blocks its operations
    freed (held), the crc runs of every data block they wrote (all of it in flight already), and
    the bound on its size that every join was held to (issue_data_early)."""

    names: list
    blocks: dict
    fresh: set
    hints: dict
    released: list
    data: list  # (first block, crcs) runs: journal.DataCrcs
    ndata: int
    bound: int


def _no_reclaim() -> None:
    raise BlkError("internal: a checkpoint was needed while data issued early was in flight")


def make_protocol(store):
    p = store.sb.protocol
    if p == "journal":
        return JournalProtocol(store)
    return OrderedProtocol(store, barriers=(p == "ordered"))


def SITES(protocol: str, barrier: str) -> tuple[str, ...]:
    """The named barrier sites of a protocol (what --ablate removes one at a time)."""
    if protocol == "none":
        return ()
    cls = JournalProtocol if protocol == "journal" else OrderedProtocol
    return cls.SITES_FUA if barrier == "fua" else cls.SITES_FLUSH


class _Roles:
    """The role of each of `blocks`, named only when asked (`get`, as run_role asks): a checkpoint
    writes its homes in a few runs, and each run's text names its first and last block only."""

    __slots__ = ("blocks", "name")

    def __init__(self, blocks, name) -> None:
        self.blocks, self.name = blocks, name

    def get(self, b: int, default=None):
        return self.name(b) if b in self.blocks else default


def run_role(roles: dict, first: int, last: int, why: str = "") -> str:
    a, b = roles.get(first, f"block {first}"), roles.get(last, f"block {last}")
    text = a if first == last else f"{a} .. {b}"
    return f"{text} [{why}]" if why else text


class Protocol:
    cow = False
    origin_slots = 1
    trusts_bitmap = True  # False: recovery rebuilds the freelist and never reads the bitmap
    tears_objmap = False  # True: object map blocks are written in place unjournaled (sector-checked)

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

    def write_blocks(self, blocks: dict[int, bytes], roles: dict, *, fua: bool = False, why: str = "",
                     background: bool = False, stage: bool = False):
        """Write blocks in ascending order, one device write per contiguous run of at most MAX_RUN
        blocks; `why` names the op.  A value may hold several consecutive blocks (an operation's
        data: a view into the caller's buffer); the pieces of a run go to the device as a list
        (`writev`), so the only copy is the device's own into its aligned buffer (none from
        page-aligned memory).  `background`: the same requests through writev_background;
        returns the last one's handle (None: all done); `stage`: as copies the device owns
        (writev_background's stage), and the first is not waited for to start."""
        if background:
            def write(b, bufs, *, fua, role):  # the first is issued before this returns (writev_background's start)
                return self.dev.writev_background(b, bufs, fua=fua, role=role, start=last is None and not stage,
                                                  stage=stage)
        else:
            write = self.dev.writev
        last = None
        if len(blocks) == 1:  # one piece (an append's data block): the loop below's one write
            ((b, v),) = blocks.items()
            nb = len(v) // BLOCK_SIZE
            if nb <= MAX_RUN:
                return write(b, [v], fua=fua, role=run_role(roles, b, b + nb - 1, why))
        run: list = []  # pieces of the run being gathered
        first = count = 0

        def issue() -> None:
            nonlocal last
            last = write(first, run, fua=fua, role=run_role(roles, first, first + count - 1, why))

        for b in sorted(blocks):
            v = blocks[b]
            nb = len(v) // BLOCK_SIZE
            if run and b != first + count:
                issue()
                run = []
            off = 0
            while off < nb:
                if not run:
                    first, count = b + off, 0
                take = min(nb - off, MAX_RUN - count)
                run.append(v if take == nb else memoryview(v)[off * BLOCK_SIZE:(off + take) * BLOCK_SIZE])
                count += take
                off += take
                if count == MAX_RUN:
                    issue()
                    run = []
        if run:
            issue()
        return last

    def issue_data_early(self, op, f, need: int) -> bool:
        """Called by a write once its data pieces are laid out (op.data final), before their
        crcs and map entries: issue the data writes now if they are exactly the requests, in
        exactly the place in the request stream, that commit would issue.  Returns True when a
        device write is then in flight in another thread and the operation will wait for it (the
        crcs should let go of the GIL, so the thread issues the next write at once).  This
        protocol never does (ordered writes its used lists first)."""
        return False

    def settle_early(self) -> None:
        """Wait for data writes issued early (raising the first error): a failed operation
        leaves no request running."""

    def commit_running(self) -> None:
        """Write what operations left to be committed together (journal: the running transaction
        of streaming writes); this protocol commits each operation in full."""

    def mkfs_blocks(self) -> dict[int, bytes]:
        return {}

    def mkfs_extent(self) -> tuple[int, bytes] | None:
        """(first block, bytes) mkfs writes in one large write before its first flush, or None."""
        return None

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
            if n:
                new.update(n)
                role = f"used list of file {fid}"
                for b in n:
                    op.roles[b] = role
        if remove:
            for fid, blocks in op.released.items():
                f = st.files.get(fid)
                if f is not None:
                    changed |= f.ul.remove([b for b in blocks if b in f.ul])
        if changed:
            for fid in op.owned:
                f = st.files.get(fid)
                if f:
                    role, mine = f"used list of file {fid}", f.ul.blocks
                    for b in changed:
                        if b in mine:
                            op.roles[b] = role
            if op.fresh:
                new |= {b for b in changed if b in op.fresh}
        return changed - new, new

    def seal(self, op, changed_ul: set, gen: int) -> set:
        """Seal what the operation edited with generation `gen`: each touched file's used list
        (copy-on-write when the protocol is) and map, so every pointer names the crc and gen of
        what it points at; the files whose origin thereby changes join op.origins.  Returns the
        used-list blocks to write."""
        st = self.store
        written: set = set()

        def alloc() -> int:
            b = st.freelist.alloc(1)[0]
            op.fresh.add(b)
            return b

        roles, images, hints, fresh = op.roles, op.images, op.hints, op.fresh
        for fid in sorted(op.origins.union(op.owned, op.released, op.created)):
            f = st.files.get(fid)
            if f is None:
                continue
            ul = f.ul
            mine = {b for b in changed_ul if b in ul.blocks} if changed_ul else set()
            if fid in op.created:
                mine.add(ul.head)
            w, given_up = ul.commit(gen, mine, keep=fresh, alloc=alloc if self.cow else None)
            if w:
                role = f"used list of file {fid}"
                for b in w:
                    roles[b] = role
                    images[b] = ul.image(b)
                _take_hints(hints, ul.hints, w)
                written |= w
            if given_up:
                op.released.setdefault(fid, []).extend(given_up)
            m = f.map
            dirty = [b for b in (fresh | op.meta if fresh else op.meta) if b in m.nodes]
            nodes = m.seal(dirty, gen) if dirty else {}
            if nodes:
                images.update(nodes)
                _take_hints(hints, m.hints, nodes)
                role = f"map node of file {fid}"
                for b in nodes:
                    if b not in roles:
                        roles[b] = role
                    if b not in fresh:
                        op.meta.add(b)
            if w or nodes:
                op.origins.add(fid)
            if fid in op.origins:
                f.gen = gen
        return written


def _take_hints(hints: dict, source: dict, blocks) -> None:
    """Move the delta hints that the structure which packed `blocks` left in `source` to the
    operation's `hints` (journal.delta_in proves each when the commit takes the block's records).
    One call per structure, not per block: every commit passes here."""
    if source:
        for b in blocks:
            h = source.pop(b, None)
            if h is not None:
                hints[b] = h


# ====================================================================== journal
def _home_gen(raw, b: int):
    """The generation a valid metadata block was written by; -inf for any other content (a
    search for homes checkpointed past a replay's stop: JournalProtocol.refuse_checkpointed_past)."""
    return header(raw)[5] if raw[:4] == MAGIC and block_type(raw) is not None else float("-inf")


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
        store.freelist.hinting = True  # its commits take bitmap deltas from hints (journal.delta_in)
        self._early: _Early | None = None  # data writes issued before the commit (issue_data_early)
        self.running: _Running | None = None  # streaming writes committed together (join, commit_running)

    def issue_data_early(self, op, f, need: int) -> bool:
        """A large write's data goes to the device while its crcs, map entries and transaction
        are computed: commit issues data writes (write_blocks of op.data) then the transaction,
        with a checkpoint first only when the transaction does not fit in the log.  When even a
        bound on its size fits (stream_bound: every metadata block it can record, logged whole),
        no checkpoint can come, so the data writes issued now are the very requests commit
        would issue, in the same place: after everything before this operation, before its
        transaction (which commit writes only once they have completed).  Nothing else reaches
        the device in between: allocation cannot checkpoint (the operation reserved its blocks;
        reclaim is off until commit), and nothing in between reads or writes.  On a real Device
        the writes run in a worker thread (pwritev lets go of the GIL); on any other device they
        are issued here, synchronously, in the same order.

        A write of at most STREAM_MAX bytes under flush goes further: its data is staged (bytes
        left in flight as they are, any other memory copied into memory the device owns, so the
        caller may reuse its buffer as soon as the write returns: Device.writev_background's
        `stage`) and the write returns with its data and transaction still in flight -- the
        caller computes its next write while the device writes this one (commit).  The device's
        staging ring bounds what is in flight; whatever reads, flushes or writes next on the
        device waits for it first, and its failure is reported by the next call (store.py)."""
        nbytes = sum(map(len, op.data.values()))
        nd = nbytes // BLOCK_SIZE
        if nd < EARLY_MIN or self._early is not None:
            return False
        st = self.store
        # what the transaction can record: the file's map nodes and used-list blocks, what the
        # operation allocated or changed so far, the metadata the write may still allocate (its
        # bound less the data blocks), the origin slots, every object map and bitmap block
        nmeta = (len(f.map.nodes) + len(f.ul.blocks) + len(op.fresh) + len(op.meta) + max(0, need - nd) + 2
                 + st.sb.objmap_blocks + len(st.freelist.homes()))
        bound = stream_bound(nd, nmeta)
        stage = not self.fua and nbytes <= STREAM_MAX
        r = self.running
        if r is not None:  # a staged write joins it when the two still fit in the log together (join)
            group = stream_bound(r.ndata + nd, len(r.blocks) + nmeta)
            if stage and r.ndata + nd <= GROUP_MAX and self.journal.fits(group):
                bound = group
            else:  # committed before this write's data: no checkpoint can then fall between its data and descriptor
                self.commit_running()
        if not self.journal.fits(bound):
            return False
        blocks = dict(op.data)
        fl = self.store.freelist
        self._early = early = _Early(op, blocks, bound, fl.reclaim, staged=stage)
        fl.reclaim = _no_reclaim
        early.last = self.write_blocks(blocks, op.roles, fua=self.fua and self.on("FUA data"), why=op.name,
                                       background=True, stage=stage)
        # (staged: nothing waits for this data; the worker's next write, when it is the next
        # operation's, is a moment late rather than every crc paying for letting go of the GIL)
        return early.last is not None and not stage

    def settle_early(self, wait: bool = True) -> None:
        """The data issued early is the commit's (or the op failed): reclaim is on again, and
        unless the data was staged and `wait` is False, it has completed."""
        early, self._early = self._early, None
        if early is not None:
            self.store.freelist.reclaim = early.reclaim
            if early.last is not None and (wait or not early.staged):
                self.dev.wait(early.last)

    def mkfs_blocks(self) -> dict[int, bytes]:
        st = self.store
        images = {b: st.objmap_image(b) if b < st.sb.bitmap_start else st.freelist.image(b) for b in self.journal.fixed}
        return {self.journal.jsb_block: self.journal.super_image(self.fixed_crcs(images))}

    def mkfs_extent(self) -> tuple[int, bytes] | None:
        return self.journal.area, self.journal.blanks()  # every slot framed (journal.blank)

    def fixed_crcs(self, images: dict[int, bytes]) -> tuple:
        """The crc of each fixed block as committed; one no transaction of a store made in this
        process has touched (not in `images`) is as mkfs wrote it."""
        old = dict(zip(self.journal.fixed, self.journal.fixed_crcs))
        return tuple(crc32c(images[b]) if b in images else old[b] for b in self.journal.fixed)

    def begin(self) -> None:
        self.images  # the lazy committed images must be taken before the op edits the state

    @property
    def images(self) -> dict[int, bytes]:
        if self._images is None:
            self._images = self.metadata_images()
        return self._images

    def fixed_images(self) -> dict[int, bytes]:
        """The committed images of the fixed blocks (the journal superblock keeps their crcs).

        With the committed images not built yet (an open's recovery: the in-memory state is the
        committed one), only the fixed blocks are packed, not every file's metadata: the
        explorer's checks each end in such a checkpoint.  The same images either way."""
        if self._images is not None:
            return self._images
        st, bitmap = self.store, self.store.freelist.homes()
        return {b: st.objmap_image(b) if b < st.sb.bitmap_start else st.freelist.image(b) for b in self.journal.fixed
                if b < st.sb.bitmap_start or b in bitmap}

    def metadata_images(self) -> dict[int, bytes]:
        st = self.store
        out = {b: st.objmap_image(b) for b in range(st.sb.objmap_start, st.sb.bitmap_start)}
        out.update({b: st.freelist.image(b) for b in st.freelist.homes()})
        for f in st.files.values():
            out[f.origin_block] = f.origin_image()
            out.update({b: n.pack(b) for b, n in f.map.nodes.items()})
            out.update({b: f.ul.image(b) for b in f.ul.blocks})
        return out

    def recover(self, write: bool = True, strict: bool = True) -> list[str]:
        st = self.store
        self.journal.load_super(self.dev)
        txns = self.journal.replay(self.dev)
        homes = self.replayed_homes(txns)
        self.replayed = len(txns)
        logged = {b for t in txns for b in t.inline}  # data, not metadata: no header to judge
        self.refuse_checkpointed_past([b for b in homes if b not in logged])
        self.repairs: list[str] = []
        stale_bitmap, problems = [], []
        for b, err in self.journal.check_fixed(self.dev.read, homes):
            if b >= st.sb.bitmap_start and err.fault != "checksum":  # rebuilt below from what files own
                stale_bitmap.append(b)
                self.repairs.append(f"rebuilt the freelist: {err}")
            elif strict:
                raise err
            else:
                problems.append(str(err))
        problems += st.load(homes)
        if problems and strict:
            raise st.problem(problems[0])
        self._images = None  # built on the first commit: a read-only open never needs them
        self.unckpt = dict(homes)
        st.logged = {b: homes[b] for b in logged if b in homes}  # reads find them here until home
        if write and txns:
            self.unflushed = False
            self.checkpoint()
        if stale_bitmap:
            if write and txns:  # the committed images as of the checkpoint above, before the rebuild
                self.images
            st.freelist.rebuild(st.owned_blocks())
            if write:
                op = Op("recovery: rebuild a stale bitmap", cow=False)
                op.fresh.update(stale_bitmap)  # logged whole: the home's content is not the base
                st.freelist.dirty.update(stale_bitmap)
                self.commit(op)
                self.checkpoint()
        return problems

    def replayed_homes(self, txns: list) -> dict[int, bytes]:
        """The image of every home block the replayed transactions write: its content on the
        device (none for a block whose first record sets it whole) with their records applied in
        order.

        A home is read through `read_derived`, as the records patch it: only the patched image
        matters, and the explorer answers that for a whole class of crash states -- a home a
        checkpoint tore (some sectors old, some new) patches to one image whichever sectors
        persisted, since the new content is the old with these very records applied.  The fold
        over the transactions (one at a time: the explorer's checks replay the same ones state
        after state and differ in the last one or two, memo.folded) reads nothing: per home it
        gathers the records to apply; the homes are read after it, in the order the records
        first touch them, so the reads -- and a read's error before a bad record's -- are the
        ones a replay applying each record as it comes makes."""
        sb = self.store.sb

        def gather(state: tuple, t) -> tuple:
            """(homes, error) after transaction t: per home (read it?, its records), the first bad
            record's complaint (then nothing more is gathered).  New objects: the memo keeps the
            former ones."""
            homes, bad = state
            if bad is not None:
                return state
            out = dict(homes)
            for home, off, buf in t.records:
                if not 0 < home < sb.nblocks or sb.journal_start <= home < sb.objmap_start:
                    return out, f"journal transaction {t.seq}: record for block {home} is out of range"
                was = out.get(home)
                if off == WHOLE_DATA or off == ZERO_FILL:  # sets the block whole: what came before is gone
                    out[home] = (was is not None and was[0], ((off, buf),))
                else:
                    out[home] = (True, ((off, buf),)) if was is None else (was[0], was[1] + ((off, buf),))
            return out, None

        homes, bad = memo.folded("journal.homes", (sb.nblocks, sb.journal_start, sb.objmap_start), txns,
                                 gather, ({}, None))
        dev, out = self.dev, {}
        for b, (read, records) in homes.items():
            out[b] = dev.read_derived(b, Patch(records)) if read else patched(_ZERO, records)
        if bad is not None:
            raise CorruptError(bad)
        return out

    def refuse_checkpointed_past(self, homes: dict) -> None:
        """Refuse, by name, a replay that stopped before a transaction whose effects a checkpoint
        already wrote home.  A checkpoint writes homes only after the flush that made every
        transaction up to the head durable, stamping each with the sequence number of the
        transaction that last changed it; so in an honest crash state every valid home block --
        the fixed ones, and every home replay read to patch -- is older than where replay stops.
        One that is not proves that the transaction replay stopped at was durable and has since
        been lost, misdirected over or damaged (a data block it orders, say): stopping there
        would silently drop it.  A search (BlockDevice.find): the explorer splits no class on it."""
        if weak_detection():
            return
        stop = self.journal.next_seq
        fixed = self.journal.fixed
        later = AtLeast(_home_gen, stop)  # a valid home block written by `stop` or later
        key = ("checkpointed-past", stop)
        ranges = [(fixed[0], len(fixed))] if fixed else []
        ranges += [(b, 1) for b in homes if not fixed or not fixed[0] <= b <= fixed[-1]]
        for first, n in ranges:
            hit = self.dev.find(first, n, later, key=key)
            if hit is not None:
                b, gen = hit[0], header(hit[1])[5]
                raise StaleBlockError(
                    f"journal transaction {stop} fails its checks, but block {b} was checkpointed home with the "
                    f"effect of transaction {gen}, which is only done once it is durable: a durable transaction "
                    f"was lost or damaged")

    def commit(self, op) -> None:
        """Log the operation: its metadata images (sealed with the generation of the next
        transaction), then, for a streaming write, the running transaction (join) -- its data is
        in flight already -- else one transaction of its own, after the running one."""
        st = self.store
        early = self._early
        streaming = early is not None and early.staged
        if not streaming:
            self.commit_running()
        gen = self.journal.next_seq  # the generation of everything this transaction writes
        changed, new = self.own_and_release(op, remove=True)
        ul = self.seal(op, changed | new, gen)
        origins = {}
        for fid in op.origins:  # the object map entry is the origin's pointer: gen + crc
            f = st.files.get(fid)
            if f is not None:
                origins[f.origin_block] = f.expect_origin()
                if f.hint is not None:
                    op.hints[f.origin_block] = (f.hint[0], origin_chunks(f.hint[1]))
                    f.hint = None
                st.entries[fid] = f.entry
                op.objmap.add(st.objmap_home(fid))
        released = [b for blocks in op.released.values() for b in blocks] if op.released else []
        for b in released:
            st.freelist.hold(b)
        blocks: dict[int, bytes] = {}
        sealed = op.images  # what seal() just packed (and took the crcs of): the same bytes
        for b in ul | op.meta:
            blocks[b] = sealed.get(b) or st.meta_image(b)
        for b in op.fresh:
            if b not in blocks:
                try:
                    blocks[b] = sealed.get(b) or st.meta_image(b)
                except KeyError:
                    pass  # an origin slot: handled below
        blocks.update(origins)
        hints, fl = op.hints, st.freelist
        for b in op.objmap:
            st.objmap_gens[b] = gen
            blocks[b] = st.objmap_image(b)
        _take_hints(hints, st.objmap_hints, op.objmap)
        if fl.dirty:
            fl.stamp(gen)
            for b in fl.dirty:
                blocks[b] = fl.image(b)
            _take_hints(hints, fl.hints, fl.dirty)
            fl.dirty.clear()
        if streaming:
            self.join(op, blocks, released)
            self.settle_early(wait=False)
            return
        records = self.records(blocks, op.fresh, hints)
        inline = self.inline_data(op)
        if inline:  # the data rides in the transaction: no data write, no crc to order
            records += [(b, WHOLE_DATA, v) for b, v in inline.items()]
            data_crcs = DataCrcs([])
        else:
            data_crcs = op.data_crcs()
        stream = txn_stream(data_crcs, records)
        n = stream_blocks(stream)
        pos = self.journal.place(n)
        early = self._early
        if early is not None and (early.op is not op or pos is None or n > early.bound
                                  or early.blocks.keys() != op.data.keys()):
            self.settle_early()
            raise BlkError(f"internal: data issued early for {early.op.name!r} is not what the commit writes")
        if early is None and pos is None:  # before the data: a checkpoint's flushes between data and transaction would make the
            self.checkpoint()  # data durable alone, and its later loss could not be told from a torn tail
            pos = self.journal.place(n)
        if op.data and not inline and early is None:
            self.write_blocks(op.data, op.roles, fua=self.fua and self.on("FUA data"), why=op.name)
        txn, commit = encode(self.journal.next_seq, self.journal.prev, data_crcs, records, at=self.journal.area + pos,
                             durable=self.journal.durable, stream=stream)
        at, role = self.journal.area + pos, f"journal txn {self.journal.next_seq} [{op.name}]"
        if early is not None and not self.fua:
            # A streaming write's transaction is queued behind its data, encoded while they were
            # being written: the worker, woken by the data's completion, issues it itself, with
            # no hop through this thread in between.  Staged data (the caller's buffer is free
            # already) is not waited for: the write returns with both in flight and the caller
            # computes its next write meanwhile; the device issues whatever comes next only
            # after them (writev_background).  Data that is the caller's own memory (a write
            # larger than STREAM_MAX) is waited for: the caller waits until the worker takes the
            # transaction up -- the moment the data completes.  (Waiting for the data and
            # queueing the transaction after cost three thread wake-ups in a row between the two
            # requests: the worker's, this thread's, then the worker's again.)  A FUA
            # transaction (durable when it returns: journal.durable) stays synchronous, after
            # its data.
            self.dev.writev_background(at, [b"".join(txn)], role=role, start=not early.staged)
            self.settle_early(wait=False)
        else:  # (its blocks as one request: a Device copies them straight into its aligned buffer)
            self.settle_early()
            self.dev.writev(at, txn, fua=self.fua and self.on("FUA transaction"), role=role)
        if self.fua and self.on("FUA transaction") and (self.on("FUA data") or not op.data or inline):
            self.journal.durable = self.journal.next_seq  # completed FUA: durable now
        self.committed(pos, len(txn), commit, blocks, released, inline)

    def records(self, blocks: dict, fresh: set, hints: dict) -> list:
        """The transaction's records of metadata `blocks` (block -> new image): per block, from
        the chunks its packer knows it changed (journal.delta_in, which proves them), else by
        comparing the whole block; a block in `fresh` is logged whole (its home holds anything)."""
        records = []
        images = self.images
        for b in sorted(blocks):
            new, old, h = blocks[b], None if b in fresh else images.get(b), hints.get(b)
            recs = delta_in(old, new, sorted(h[1])) if h is not None and h[0] is new and old is not None else None
            records += [(b, off, buf) for off, buf in (delta(old, new) if recs is None else recs)]
        return records

    def committed(self, pos: int, nblocks: int, commit: int, blocks: dict, released: list, inline: dict) -> None:
        """A transaction of `nblocks` at `pos` was written: the log moves on, its images are the
        committed ones (the next deltas' bases, the checkpoint's homes), what it freed is held."""
        st, images = self.store, self.images
        self.journal.advance(pos, nblocks, commit)
        self.unflushed = not self.fua
        for b in released:
            images.pop(b, None)
            self.unckpt.pop(b, None)
            st.logged.pop(b, None)  # a freed inline block is never written home
        images.update(blocks)
        self.unckpt.update(blocks)
        self.unckpt.update(inline)
        st.logged.update(inline)
        self.held.extend(released)

    def join(self, op, blocks: dict, released: list) -> None:
        """A streaming write joins the running transaction (jbd2's handle joining the running
        transaction), its data in flight already: the images it leaves replace the ones before,
        its fresh blocks, hints, frees and data crcs are added.  A block a later write of the group
        frees is not recorded (it is held until the checkpoint; the final state names it nowhere).
        A block packed again keeps a hint only when both packs left one: the chunks changed since
        the committed image are those changed since the pack before, and since.  The transaction
        is written by commit_running, before anything else reaches the log or the device waits
        for durability; a crash before it is durable loses the whole group, a prefix of the ops."""
        early, crcs = self._early, op.data_crcs()
        r = self.running
        if r is None:
            self.running = _Running([op.name], blocks, set(op.fresh), dict(op.hints), list(released), list(crcs.runs),
                                    len(crcs), early.bound)
            return
        for b in released:
            r.blocks.pop(b, None)
            r.fresh.discard(b)
            r.hints.pop(b, None)
        for b in blocks:
            h, before = op.hints.get(b), r.hints.pop(b, None)
            if h is not None and (before is not None or b not in r.blocks):
                r.hints[b] = (h[0], set(h[1]).union(before[1])) if before is not None else h
        r.blocks.update(blocks)
        r.fresh |= op.fresh
        r.names.append(op.name)
        r.released += released
        r.data += crcs.runs
        r.ndata += len(crcs)
        r.bound = early.bound

    def commit_running(self) -> None:
        """Write the running transaction to the log (xv6's commit): one transaction ordering the
        data of every write that joined it, queued behind that data (which is in flight); placed
        without a checkpoint, since each join was held to a bound that fits (issue_data_early)."""
        r, self.running = self.running, None
        if r is None:
            return
        data_crcs = DataCrcs(r.data)
        records = self.records(r.blocks, r.fresh, r.hints)
        stream = txn_stream(data_crcs, records)
        n = stream_blocks(stream)
        pos = self.journal.place(n)
        if pos is None or n > r.bound:
            raise BlkError(f"internal: the running transaction of {r.names[0]!r} .. does not fit its bound")
        at = self.journal.area + pos
        txn, commit = encode(self.journal.next_seq, self.journal.prev, data_crcs, records, at=at,
                             durable=self.journal.durable, stream=stream)
        names = r.names[0] if len(r.names) == 1 else f"{len(r.names)} ops: {r.names[0]} .. {r.names[-1]}"
        self.dev.writev_background(at, [b"".join(txn)], role=f"journal txn {self.journal.next_seq} [{names}]")
        self.committed(pos, len(txn), commit, r.blocks, r.released, {})

    def inline_data(self, op) -> dict[int, bytes]:
        """The data blocks `op` logs whole in its transaction (block -> bytes, in block order):
        all of them when it wrote at most the superblock's inline_max, else none.  A synced small
        write is then one device request and one flush (the data and its commit share the
        transaction's crc and sector frames); the checkpoint writes the data home later, after the
        flush that made the transaction durable (docs/protocols.md, "Inline data")."""
        if not op.data or self._early is not None:  # (a streaming write's data is on its way already)
            return {}
        if len(op.data) == 1 and self.store.sb.inline_max:  # one piece (an append's one block: a copy of it)
            ((first, v),) = op.data.items()
            if len(v) == BLOCK_SIZE:
                return {first: bytes(v) if type(v) is not bytes else v}
        n = sum(len(v) for v in op.data.values()) // BLOCK_SIZE
        if n > self.store.sb.inline_max:
            return {}
        out = {}
        for first in sorted(op.data):
            v = memoryview(op.data[first])
            for k in range(len(v) // BLOCK_SIZE):
                out[first + k] = bytes(v[k * BLOCK_SIZE:(k + 1) * BLOCK_SIZE])
        return out

    def checkpoint(self) -> None:
        """Write committed metadata home, make it durable, then advance the journal tail (the
        running transaction first: its data is in flight, and the checkpoint's flushes must not
        fall between that data and its descriptor)."""
        self.commit_running()
        if self.unflushed and self.on("checkpoint flush before homes"):
            self.flush()
        roles = _Roles(self.unckpt, lambda b: f"checkpoint of {self.store.role_of(b)}")
        self.write_blocks(self.unckpt, roles, fua=self.fua and self.on("FUA checkpoint homes"))
        if not self.fua and self.on("checkpoint flush after homes"):
            self.flush()
        self.journal.retire()
        self.dev.write(self.journal.jsb_block, self.journal.super_image(self.fixed_crcs(self.fixed_images())),
                       fua=self.fua and self.on("FUA journal superblock"), role="journal superblock (checkpoint)")
        # The new tail must be durable before the log space behind it is reused: a replay from the
        # old tail through transactions half overwritten by new ones would roll homes back.
        if not self.fua and self.on("checkpoint flush after journal superblock"):
            self.dev.flush()
        self.unflushed = False
        self.unckpt.clear()
        self.store.logged.clear()  # written home: reads go to the device again
        self.store.freelist.unhold(self.held)
        self.held.clear()

    def flush(self) -> None:
        """A device flush: every transaction written so far is durable (later ones say so)."""
        self.dev.flush()
        self.journal.durable = self.journal.next_seq - 1

    def sync(self) -> None:
        self.commit_running()
        if self.unflushed:
            if self.on("sync flush"):
                self.flush()
            self.unflushed = False

    def close(self) -> None:
        """A clean shutdown: everything committed is durable (the log is replayed at open)."""
        self.settle_early()
        self.sync()


# ====================================================================== ordered / none
class OrderedProtocol(Protocol):
    """Seed A's used lists with barriers (or, for "none", the same writes without them)."""

    cow = True
    origin_slots = 2
    trusts_bitmap = False
    tears_objmap = True
    SITES_FLUSH = ("B data and map flush", "sync flush")
    SITES_FUA = ("A used-list entries FUA", "B data and map FUA", "C origin FUA")

    def __init__(self, store, barriers: bool = True) -> None:
        super().__init__(store)
        self.barriers = barriers
        self.elevator: dict[int, tuple[bytes, str]] = {}  # none: an op's writes, issued in block order
        self.epoch = 0  # barriers passed
        self.written = False  # a write since the last barrier (else a sync has nothing to flush)
        self.pending: list[tuple[int, int]] = []  # (block, epoch the origin that dropped it was issued in)
        # fid -> generation of its newest durable origin; OBJMAP_ID | i -> of object map block i
        self.durable_gens: dict[int, int] | None = None
        self.valid: dict[int, list] = {}  # fid -> its valid origins, as recovery found them
        self.issued_gen = 0  # the newest operation whose commit point (phase C) was issued
        self.durable_gen = 0  # the newest one a barrier (or its FUA) has made durable: the bitmap's stamp

    def barrier(self, site: str = "") -> None:
        """Everything written so far is durable from here on (under "none": pretend so)."""
        if self.barriers and not self.fua and self.on(site):
            self.dev.flush()
            self.durable_gen = self.issued_gen
        self.epoch += 1
        self.written = False

    def phase(self, blocks: dict[int, bytes], roles: dict, *, durable: bool, site: str, why: str = "") -> None:
        """Write a phase.  Under fua every write of a durable phase is a FUA write; under flush a
        durable phase B ends in a flush.  `none` holds the writes back for `drain`."""
        if not blocks:
            return
        self.written = True
        if not self.barriers:
            # Nothing orders these writes, so like an I/O elevator we issue each op's writes in
            # block order at its end: the same writes, in an order a real queue may well use.
            for b, d in blocks.items():  # one entry per block, a run of data split into its blocks
                for k in range(len(d) // BLOCK_SIZE):
                    piece = d if len(d) == BLOCK_SIZE else memoryview(d)[k * BLOCK_SIZE:(k + 1) * BLOCK_SIZE]
                    self.elevator[b + k] = (piece, run_role(roles, b + k, b + k, why))
        else:
            self.write_blocks(blocks, roles, fua=durable and self.fua and self.on(f"{site} FUA"), why=why)
        if durable and (self.fua or not self.barriers or site.startswith("B")):
            self.barrier(f"{site} flush")

    def drain(self) -> None:
        """Issue the writes the `none` protocol held back, in ascending block order."""
        if self.elevator:
            held, self.elevator = self.elevator, {}
            for b in sorted(held):  # one request per block: each object's write stays its own
                self.dev.write(b, held[b][0], role=held[b][1])

    def free_released(self) -> None:
        """A block an origin dropped becomes allocatable once that origin is behind a barrier:
        from then on recovery can only choose it or a newer one, none of which points at it."""
        fl = self.store.freelist
        for b, tag in self.pending:
            if self.epoch > tag:
                fl.mark_free(b)
        self.pending = [(b, tag) for b, tag in self.pending if self.epoch <= tag]

    def commit(self, op) -> None:
        st = self.store
        self.free_released()
        gen = st.txid
        st.txid += 1
        changed, new = self.own_and_release(op, remove=True)
        # Phase A: the used lists, copy-on-write (fresh blocks only).  Under flush no barrier of
        # its own: B's flush orders them before the origin, which is all that matters.
        ul = self.seal(op, changed | new, gen)
        first = {b: self._ul_image(b) for b in ul}
        for fid in op.created:  # framed blanks in both origin slots: a torn origin write is then told from rot
            f = st.files.get(fid)
            if f is not None:
                for b, img in blanks(fid, f.entry, gen).items():
                    first[b] = img
                    op.roles.setdefault(b, f"origin slot of file {fid} (blank)")
        self.phase(first, op.roles, durable=True, site="A used-list entries", why=op.name)
        # Phase B: data and the new map nodes it hangs from.
        blocks = dict(op.data)
        for b in op.fresh | op.meta:
            for f in st.files.values():
                if b in f.map.nodes:
                    blocks[b] = f.map.nodes[b].pack(b)
        origins = {}
        seen = self.seen(op)
        for fid in op.origins:
            f = st.files.get(fid)
            if f is not None:
                f.seen = seen
                f.slot ^= 1
                origins[f.origin_block] = f.origin_image()
                op.roles[f.origin_block] = f"origin of file {fid} (slot {'ab'[f.slot]}, gen {f.gen})"
        if op.objmap:  # what the object map blocks name: not themselves, nor this op's origins
            named = self.seen(op, limit=MAX_OBJMAP_SEEN, skip={OBJMAP_ID | (b - st.sb.objmap_start) for b in op.objmap})
        for b in op.objmap:
            st.objmap_gens[b] = gen
            st.objmap_seen[b] = named
            st.objmap_torn.discard(b)  # written whole again
            origins[b] = st.objmap_image(b)
            op.roles[b] = st.role_of(b)
        if origins and self.written and not self.fua and not blocks:
            blocks = {}  # nothing of B's own, but A's used lists still need the barrier before C
            self.barrier("B data and map flush")
        self.phase(blocks, op.roles, durable=bool(origins), site="B data and map", why=op.name)
        # Phase C: the new origins (and object map entries) -- the operation's commit point.
        tag = self.epoch
        self.phase(origins, op.roles, durable=self.fua, site="C origin", why=op.name)
        self.drain()
        if origins:
            self.issued_gen = gen
            if self.barriers and self.fua and self.on("C origin FUA"):
                self.durable_gen = gen  # a completed FUA write
        for fid in op.origins | {f.fid for f in op.deleted}:  # durable once the next op's barrier passes
            f = st.files.get(fid)
            if f is None:
                self.durable_gens.pop(fid, None)
            else:
                self.durable_gens[fid] = f.gen
        for b in op.objmap:
            self.durable_gens[OBJMAP_ID | (b - st.sb.objmap_start)] = gen
        for blocks in op.released.values():
            self.pending.extend((b, tag) for b in blocks)

    def _durable_now(self) -> dict[int, int]:
        """durable_gens as the medium holds it (after recovery or mkfs: everything is durable)."""
        st = self.store
        gens = {fid: f.gen for fid, f in st.files.items()}
        gens.update({OBJMAP_ID | (b - st.sb.objmap_start): g for b, g in st.objmap_gens.items() if g})
        return gens

    def seen(self, op, limit: int = MAX_SEEN, skip=()) -> tuple:
        """What this op's origins (and object map blocks) name: every other file's newest origin
        and every object map block, as of the op's start, the `limit` newest if there are more.
        Each was issued by an earlier op, and a barrier (B's flush, or the FUA completing) has
        passed since, so each is durable when these are issued; a recovery that finds one of
        these and an older origin of the named file (an older object map block) has found a lost
        write.  An object map block names what it is not itself (`skip`), in 38 slots: the later
        writes of a create, remove or rename are often only object map blocks.  Under "none"
        nothing is known durable: nothing is named."""
        if self.durable_gens is None:
            self.durable_gens = self._durable_now()
        if not self.barriers:
            return ()
        named = [(fid, g) for fid, g in self.durable_gens.items() if fid not in op.origins and fid not in skip]
        if len(named) > limit:
            named = sorted(named, key=lambda x: x[1])[-limit:]
        return tuple(sorted(named))

    def _ul_image(self, b: int) -> bytes:
        for f in self.store.files.values():
            if b in f.ul.blocks:
                return f.ul.image(b)
        raise KeyError(b)

    def sync(self) -> None:
        st = self.store
        st.freelist.stamp(self.durable_gen)
        bitmap = {b: st.freelist.image(b) for b in st.freelist.dirty}
        st.freelist.dirty.clear()
        if bitmap:
            self.write_blocks(bitmap, {b: st.role_of(b) for b in bitmap}, why="sync")
            self.written = True
        if self.written:  # a second sync with nothing new in between issues nothing
            self.barrier("sync flush")

    def close(self) -> None:
        """A clean shutdown: sync, then free what that sync made releasable and write the bitmap
        hint again (recovery would rebuild it anyway)."""
        self.sync()
        if self.pending:
            self.free_released()
            self.sync()

    # ---------------------------------------------------------------- recovery

    def lost_commit(self) -> list[str]:
        """A problem if a bitmap block says a newer commit was durable than any origin or object
        map block shows.  The sync stamps the bitmap with the newest generation a barrier (or its
        FUA) has made durable (`durable_gen`), so in any honest crash state some commit of that
        generation or later is on the medium; if none is, the newest commit was lost or
        misdirected over -- when no later origin of another file names it (`lost_origins`), the
        sync's bitmap is the only evidence.  The bitmap is otherwise a hint: a block of it that
        fails its checks (torn, rotted, misplaced) proves nothing and is passed over.  Nor is anything
        judged when a torn object map block may be a remove in flight (claims.hidden_by_tear): the
        removed file's origins, unreachable now, may be the newest commit."""
        st = self.store
        if weak_detection() or not self.barriers:
            return []
        if hidden_by_tear(st.entries, st.objmap_torn, st.sb.objmap_start):
            return []
        newest, homes = st.txid - 1, st.freelist.homes()
        hit = self.dev.find(homes.start, len(homes), lambda raw, b: _stamp(raw, b) > newest,
                            key=("bitmap-stamp", newest))
        if hit is not None:
            b, stamp = hit[0], _stamp(hit[1], hit[0])
            return [st.note_problem(stale_stamp(b, stamp, newest), StaleBlockError)]
        return []

    def lost_origins(self) -> tuple[list[str], set[int]]:
        """Problems naming each file whose newest origin is older than a valid origin of another
        file or an object map block says it was durable (`seen`, claims.py): its newest origin,
        or the create's object map entry, was lost or misdirected over.  Returns the problems
        and the files they name."""
        st, claims = self.store, {}
        if weak_detection():
            return [], set()
        for fid, valid in self.valid.items():
            for o in valid:
                gather(claims, o.seen, f"file {fid}'s origin", o.gen)
        for b, seen in st.objmap_seen.items():
            gather(claims, seen, f"object map block {b}", st.objmap_gens.get(b, 0))
        found = judge(claims, file_gens={fid: f.gen for fid, f in st.files.items()}, entries=st.entries,
                      objmap_gens=st.objmap_gens, objmap_start=st.sb.objmap_start,
                      refused=st.damaged, torn=st.objmap_torn)
        return ([st.note_problem(text, StaleBlockError) for _, text in found],
                {x for x, _ in found if not x & OBJMAP_ID})

    def recover(self, write: bool = True, strict: bool = True) -> list[str]:
        """Newest origin per file; freelist rebuilt from what the files own, before anything is
        allocated; a used list that does not match its map repaired like any operation."""
        st = self.store
        self.valid: dict[int, list] = {}
        problems = st.load(origin_choice=choose_origin, on_choice=self.valid.__setitem__)
        lost, named = self.lost_origins()
        problems += lost + self.lost_commit()
        self.durable_gens = self._durable_now()
        self.issued_gen = self.durable_gen = st.txid - 1  # every commit found is on the medium
        self.repairs: list[str] = []
        writes: dict[int, bytes] = {}
        for fid, e in enumerate(st.entries):
            if e.in_use and fid not in st.files and fid not in named and any(p.endswith("no valid origin") and p.startswith(f"file {fid} ")
                                                        for p in problems):
                home = st.objmap_home(fid)
                if e.origin_gen and st.objmap_gens.get(home, 0) > e.origin_gen and not weak_detection():
                    # The entry's block was written again by a later operation, after a barrier
                    # that made this file's first origin durable: the origin was lost or damaged.
                    problems.append(st.note_problem(
                        f"file {fid} ({e.name!r}): stale-block: no valid origin, though object map block {home} "
                        f"(generation {st.objmap_gens[home]}) was written after the file's creation (generation "
                        f"{e.origin_gen}) was durable", StaleBlockError))
                    continue
                st.entries[fid] = ObjEntry(birth=e.birth)  # a create that never became durable
                writes[home] = None
                self.repairs.append(f"dropped object map entry {fid} ({e.name!r}): no durable origin")
        problems = [p for p in problems if not p.endswith("no valid origin")]
        if problems and strict:
            raise st.problem(problems[0])
        # The freelist first: until it is rebuilt it may call any block free, the superblock too.
        st.freelist.rebuild(st.owned_blocks())
        repair = Op("recovery: used lists made to match their maps", cow=True)
        for f in st.files.values():
            reach = set(f.map.data_blocks()).union(f.map.all_nodes())  # (data_entries' blocks, at list speed)
            stray, missing = f.ul.owned() - reach, reach - f.ul.owned()
            if stray:
                repair.released[f.fid] = sorted(stray)
                self.repairs.append(f"file {f.fid}: dropped {len(stray)} used-list entries it does not reference")
            if missing:
                repair.owned[f.fid] = sorted(missing)
                self.repairs.append(f"file {f.fid}: listed {len(missing)} referenced blocks missing from its used list")
            if stray or missing:
                repair.origins.add(f.fid)
        if write and repair.origins:
            self.commit(repair)
        for b in st.freelist.homes():  # the on-disk bitmap is only a hint: rewrite it whole
            writes[b] = None
        st.freelist.stamp(self.durable_gen)
        st.freelist.dirty.clear()
        for b in writes:
            writes[b] = st.objmap_image(b) if st.sb.objmap_start <= b < st.sb.bitmap_start else st.freelist.image(b)
        if write and writes:
            self.write_blocks(writes, {b: f"recovery: {st.role_of(b)}" for b in writes},
                              fua=self.fua and self.barriers)
            self.barrier("recovery")
        return problems


def choose_origin(fid: int, e: ObjEntry, read) -> tuple:
    """(the newest valid origin slot that belongs to this file (birth matches) or None, every
    valid origin of the file): what recovery loads, and the evidence it keeps (`valid`).

    A slot failing its crc with every sector passing its own is what a torn origin write
    leaves: the other slot is the file.  A slot that cannot be read, holds another block's
    write, or is damaged (a sector failing its own crc) while it may have held the newest
    origin would roll the file back unnoticed, so the file is refused (originslots.py).
    A function of its arguments and what it reads alone: the store's memoised file loads
    name it in their key (Store._load_file_replayed)."""
    best, _, valid = choose(fid, e, read)
    return best, tuple(valid)


@dataclass(frozen=True)
class Patch:
    """A home's replayed records, as a function of the home's content (BlockDevice.read_derived)."""

    records: tuple  # (offset, bytes) in order; ZERO_FILL / WHOLE_DATA set the block whole

    def __call__(self, raw: bytes) -> bytes:
        return patched(raw, self.records)


_ZERO = bytes(BLOCK_SIZE)


def _stamp(raw, b: int) -> int:
    """The generation a valid bitmap block at b was stamped with; -1 if it fails its checks."""
    try:
        check(raw, T_BITMAP, b)
    except CorruptError:
        return -1
    return header(raw)[5]
