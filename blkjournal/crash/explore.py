"""The crash explorer: record a workload, enumerate every crash state, recover and check each.

record -> states -> recover + check -> report (DESIGN §4).  The run is recorded from an empty
device (mkfs included, then a mark "mkfs"), so a log is self-contained: it replays onto zeros,
wherever it was recorded.  A workload file `<log>.workload.json` beside the log carries the ops,
protocol and barrier kind, so `check-log` can judge a log recorded elsewhere (e.g. in the VM).

States with the same image are recovered and read once, then judged against the window of every
crash point that produced them.  Work is spread over processes (`jobs`) and shards.
"""

from __future__ import annotations

import gc
import itertools
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction

from .. import memo
from ..device import BLOCK_SIZE, AtLeast, BlockDevice, Device, _check_extent, _check_write_extent
from ..errors import BlkError
from ..format import _block_slices, crc32c
from ..store import Store
from .check import judge, model_kind, recover_and_read
from .checkmemo import DERIVED, DISCARD, FIND, READ, WRITE, CheckMemo
from .clusters import cluster_failures
from .jobs import reap, share_out
from .merge import run_identity
from .progress import progress_bar
from .minimize import explain
from .multicrash import DEFAULT_STATES, second_phases
from .logwrites import read_log
from .recorder import RecordingDevice, read_sidecar, sidecar_path
from .states import CrashSpace, default_bound, mask_code
from .workload import (IMAGE_SIZE, MKFS_MARK, MODEL_BUDGET, NAMED, RECOVERY_MARK, SEEDED, ModelStates, Operation,
                       mark_text, parse_mark, random_workload, run)
from .workfile import load_workload, save_workload

MAX_MIXES = 256  # sector mixes of one searched block judged per class (Tracer.find); more: read it
# A search of fewer crash points than this runs in this process alone, whatever --jobs says: a
# forked worker's start, its first touches of the inherited pages (copy-on-write) and its join
# cost more than the half it would take over -- a second phase (about 60 points) took 0.08 s on 2
# jobs against 0.05 s on one.
MIN_SHARED_POINTS = 150
GC_YOUNG = 20_000  # the collector's first threshold while the checks run (explore_log)
MAX_VERDICTS = 1 << 16  # a search's answers on shared blocks kept across segments (Tracer._judged_range)


def make_ops(workload: str, seed: int, nops: int) -> list[Operation]:
    if workload == "random":
        return random_workload(seed, nops)
    if workload not in NAMED:
        raise BlkError(f"unknown workload {workload!r} (random, {', '.join(NAMED)})")
    if workload in ("pressure", "wrap"):
        return NAMED[workload](seed, nops)
    if workload in SEEDED:
        return NAMED[workload](seed)
    return NAMED[workload]()


def record(img: str, log_path: str, protocol: str, barrier: str, ops: list[Operation], *,
           size: int, sector_size: int = 512, ablate: str | None = None) -> dict:
    """mkfs + workload on a fresh image through the recorder; returns the store's I/O counters."""
    if os.path.exists(img):
        os.unlink(img)
    dev = Device(img, create_size=size, logical_block_size=sector_size)
    rec = RecordingDevice(dev, log_path)
    try:
        st = Store.mkfs(rec, protocol, barrier)
        rec.mark(MKFS_MARK)
        if ablate:
            st.protocol.disabled.add(ablate)
        run(st, ops)
        counters = dict(dev.counters.snapshot())
    finally:
        rec.close()
    save_workload(log_path, protocol, barrier, ops, ablated=ablate, nblocks=size // BLOCK_SIZE,
                  sector_size=sector_size)
    return counters


@dataclass
class Failure:
    state: str
    point: int
    label: str
    reason: str
    findings: list = field(default_factory=list)
    explanation: list = field(default_factory=list)
    kept: str | None = None

    def to_json(self) -> dict:
        return self.__dict__.copy()


@dataclass
class Result:
    protocol: str
    barrier: str
    seed: int | None
    ops: int
    states_enumerated: int = 0
    states_checked: int = 0
    illegal: int = 0
    illegal_states: int = 0
    coverage: float = 1.0
    crash_points: int = 0
    seconds: float = 0.0
    failures: list = field(default_factory=list)
    failing_points: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    points: list = field(default_factory=list)  # (index, label, legal) for the JUnit report and picture
    clusters: list = field(default_factory=list)  # illegal classes grouped by cause (clusters.py)
    states_covered: int = 0  # legal crash states the checked classes stand for (coverage's numerator)
    run: dict = field(default_factory=dict)  # what makes shards of one run (merge.py)
    kernel: str | None = None  # the kernel that recorded the log (the VM's), when not this machine's
    faults: dict | None = None  # the fault explorer's tally (faults.py), when --faults was given
    spans: list = field(default_factory=list)  # (start, end) of each exploration merged here (merge_phase)

    @property
    def ok(self) -> bool:
        fx = self.faults or {}
        return self.illegal == 0 and not fx.get("silent_corruptions") and not fx.get("crashed")

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("failures", "points", "space", "spans")}
        d["failures"] = [f.to_json() for f in self.failures]
        d["states_per_second"] = round(self.states_checked / self.seconds, 1) if self.seconds else None
        return d


# ---------------------------------------------------------------- tracing reads
class Tracer(BlockDevice):
    """Wraps a crash state's overlay: caches blocks and records which were read before written.

    The check (recovery, fsck, reading every file) is deterministic, so its outcome depends only
    on the initial contents of the blocks it reads before writing them.  Free writes touching
    none of those blocks cannot change the outcome -- the basis of the equivalence classes below.

    Every read of a block not yet written is recorded in `first_read` before any cache answers
    it.  The caches only save assembling the block from its sectors: `shared` holds blocks no
    free write touches (the same in every state of the segment), `vcache` the others keyed by
    the choices of the free writes that touch them (`block_choice(b)`), which with the crash
    point determine the content.  So states see one bytes object per content, which also lets
    memoised decoders (blkjournal/memo.py) find it fast.

    Two questions are answered for the whole class rather than from this state's bytes: a search
    (`find`) and a derived read (`read_derived`, e.g. a home as replay's records patch it); a
    block counts as read for them only where some content it takes in the class could change
    the answer.
    """

    def __init__(self, inner, shared: dict | None = None, varying: set | None = None, vcache: dict | None = None,
                 block_choice=None, versions=None, probes: dict | None = None, forced=None,
                 verdicts: dict | None = None, over=None) -> None:
        self.inner = inner
        # (b, its forced content) -> b in this state as inner reads it, when some free write over
        # b persisted (StateWrites.block_over); None: inner.read(b)
        self.over = over
        self.forced = forced  # b -> block b as no free write changes it (CrashSpace.forced_block at the point)
        self.shared = shared if shared is not None else {}  # blocks no free write touches: same in every state
        self.varying = varying if varying is not None else set()
        self.vcache = vcache if vcache is not None else {}
        self.block_choice = block_choice
        self.nblocks = inner.nblocks
        self.logical_block_size = inner.logical_block_size
        self.counters = inner.counters
        self.cache: dict[int, bytes] = {}
        self.written: set[int] = set()
        self.first_read: set[int] = set()
        self.versions = versions  # (b, this state's content) -> the others b takes in the class, or None
        self.probes = probes if probes is not None else {}  # (key, b) -> pred's answer for a shared block
        # (key, b) -> (content, pred's answer), across segments: a search's key names its predicate
        self.verdicts = verdicts if verdicts is not None else {}
        self.events: list | None = None  # what the check asked and was answered, while checkmemo records it

    def read(self, block: int, count: int = 1) -> bytes:
        if count == 1:
            v = self.cache.get(block)
            if v is not None:
                return v
            if self.events is None:
                return self._load(block)
            try:  # _noted_load, inline (a recorded check's every first read)
                v = self._load(block)
            except BaseException:
                self.events = None
                raise
            self.events.append((READ, block, v))
            return v
        cache = self.cache
        if self.events is not None:
            return b"".join([cache.get(b) or self._noted_load(b) for b in range(block, block + count)])
        return b"".join([cache.get(b) or self._load(b) for b in range(block, block + count)])

    def _noted(self, kind: int, question, answer, *args):
        """answer(*args), noted in `events` as (kind, question, what it returned) (checkmemo.py);
        a question that raised makes the check unkept."""
        try:
            got = answer(*args)
        except BaseException:
            self.events = None
            raise
        self.events.append((kind, question, got))
        return got

    def _noted_load(self, b: int) -> bytes:
        return self._noted(READ, b, self._load, b)

    def find(self, block: int, count: int, pred, key=None) -> tuple[int, bytes] | None:
        if self.events is None:
            return self._find(block, count, pred, key)
        return self._noted(FIND, (block, count, pred, key), self._find, block, count, pred, key)

    def read_derived(self, block: int, fn):
        if self.events is None:
            return self._derived(block, fn)
        return self._noted(DERIVED, (block, fn), self._derived, block, fn)

    def _derived(self, block: int, fn):
        """BlockDevice.read_derived, answered for the whole class: fn of the block's content.
        When every content the block takes in the class (this state's and those `versions`
        lists) gives one value, that value is the answer in every state of the class: the writes
        touching the block cannot change the outcome, so the block is not recorded as read (no
        split).  Otherwise -- the values differ, or the contents cannot be listed -- it is read as
        by read().  (A block read or written by this check already, or that no free write
        touches, has one content: its read splits nothing.)  fn refusing some content (raising)
        is a value that differs too."""
        v = self.cache.get(block)
        if v is None and block in self.varying and self.versions is not None:
            rep = self._peek(block)
            vs = self.versions(block, rep)
            if vs is not None:
                try:
                    got = fn(rep)
                    if all(fn(x) == got for x in vs):
                        return got
                except Exception:  # noqa: BLE001 -- some content fn refuses: this state's read meets it (or not)
                    pass
        if v is None:
            v = self._load(block)  # (noted as this derived read, not as a read of its own: checkmemo.py)
        return fn(v)

    def _find(self, block: int, count: int, pred, key=None) -> tuple[int, bytes] | None:
        """BlockDevice.find, answered for the whole class: a searched block counts as read (and
        splits the class on the writes touching it) only if `pred` holds for some content it
        takes in the class -- this state's or that of any undecided free write covering it.
        Where no content satisfies `pred` the answer is "no" in every state of the class, so
        the writes touching the block cannot change the outcome and stay undecided.  Blocks whose
        contents cannot be listed (a partial write, too many sector mixes) are read as by read().
        A block no free write touches is the same in every state of the segment: its answer is
        kept per `key`."""
        # Per segment and search: the blocks no free write touches where `pred` holds (judged on
        # their shared content, once) and the varying ones; a check then judges only the varying
        # blocks and those it wrote itself, in block order, up to the first shared hit.
        end, varying = block + count, self.varying
        if count == 1 and key is not None:  # one block: the loop below, unrolled
            if block in varying or block in self.written:
                return self._probe(block, pred, key)
            info = self.probes.get((key, block, 1))
            if info is None:
                try:
                    info = (self._judged_range(block, end, pred, key), [])
                except Exception:  # noqa: BLE001 -- as below: judged as a block of its own, where it raises
                    info = False
                self.probes[(key, block, 1)] = info
            if info is False:
                return self._probe(block, pred, key)
            if not info[0]:
                return None
            v = self.cache.get(block)
            return block, (v if v is not None else self._load(block))
        info = self.probes.get((key, block, count)) if key is not None else False
        if info is None:
            try:
                hits = self._judged_range(block, end, pred, key)
                # (the varying blocks of the range, ascending: walked over the shorter of the two)
                vary = [b for b in range(block, end) if b in varying] if count <= len(varying) else \
                    sorted(b for b in varying if block <= b < end)
                info = (hits, vary)
            except Exception:  # noqa: BLE001 -- a block that cannot be read or judged: block by block
                info = False  # below, where the error (if any) comes at the block that raises it
            self.probes[(key, block, count)] = info
        if info is False:
            for b in range(block, end):
                got = self._probe(b, pred, key)
                if got is not None:
                    return got
            return None
        hits, vary = info
        written = self.written
        first = next((b for b in hits if b not in written), None) if hits else None
        if not written:
            mine = ()
        elif count <= len(written):  # (this check's own writes in the range that no free write touches)
            mine = [b for b in range(block, end) if b in written and b not in varying]
        else:
            mine = [b for b in written if block <= b < end and b not in varying]
        for b in sorted(vary + mine) if mine else vary:
            if first is not None and b > first:
                break
            got = self._probe(b, pred, key)
            if got is not None:
                return got
        if first is None:
            return None
        v = self.cache.get(first)
        return first, (v if v is not None else self._load(first))

    def _probe(self, b: int, pred, key) -> tuple[int, bytes] | None:
        """find() at block b: (b, content) if `pred` holds for some content b takes in the class."""
        v = self.cache.get(b)
        if v is not None:  # read or written by this check already
            hit = pred(v, b)
        elif b not in self.varying:
            hit = self.probes.get((key, b)) if key is not None else None
            if hit is None or hit:
                v = self._load(b)
            if hit is None:
                hit = bool(pred(v, b))
                if key is not None:
                    self.probes[(key, b)] = hit
        else:
            v = self._peek(b)
            vs = self.versions(b, v) if self.versions is not None else None
            hit = pred(v, b)
            if vs is None or hit or any(pred(x, b) for x in vs):
                v = self._load(b)  # the same bytes, now recorded as read
        return (b, v) if hit else None

    def _judged_range(self, block: int, end: int, pred, key) -> list[int]:
        """The blocks of block..end-1 that no free write touches and where `pred` holds on their
        shared content, each judgement kept with the content it judged: a later segment whose
        block b is the very same object (CrashSpace.forced_block: b's forced content did not
        change) is answered without judging it again.  An `AtLeast` search (the journal's scan of
        its slots for evidence of a loss, asked again at each new replay end with a new threshold)
        keeps each content's rank instead, and the range's ranks for the segment: a new threshold
        is one comparison per block."""
        if type(pred) is AtLeast:  # a threshold: the ranks of the range are kept for the segment
            rank = pred.rank
            got = self.probes.get((rank, block, end))
            if got is None:
                ranked = [(b, self._rank(rank, v, b, self.verdicts), v) for b, v in self._shared_in(block, end)]
                # (the highest rank: a threshold above it, the usual case -- no slot proves a loss --
                # has no hit, without a comparison per block)
                got = self.probes[(rank, block, end)] = (ranked, max((r for _, r, _ in ranked), default=None))
            ranked, top = got
            at, valid = pred.at, pred.valid
            if top is None or not top >= at:
                return []
            return [b for b, r, v in ranked if r >= at and (valid is None or self._rank(valid, v, b, self.verdicts))]
        verdicts, hits = self.verdicts, []
        for b, v in self._shared_in(block, end):
            got = verdicts.get((key, b))
            if got is not None and got[0] is v:  # the entry keeps v alive: its identity is its own
                hit = got[1]
            else:
                hit = bool(pred(v, b))
                if len(verdicts) >= MAX_VERDICTS:
                    verdicts.clear()
                verdicts[(key, b)] = (v, hit)
            if hit:
                hits.append(b)
        return hits

    def _shared_in(self, block: int, end: int) -> list[tuple[int, bytes]]:
        """(b, its shared content) for the blocks of block..end-1 that no free write touches."""
        varying, shared, out = self.varying, self.shared, []
        for b in range(block, end):
            if b not in varying:
                v = shared.get(b)
                out.append((b, v if v is not None else self._shared(b)))
        return out

    def _rank(self, rank, v: bytes, b: int, kept: dict):
        """rank(v, b) (or valid's) of an `AtLeast` search on a shared content, kept in `kept`
        (`verdicts`: across segments) with the content it ranked, so its id is its own: one
        judgement per content, whatever the thresholds.  (A varying block is judged by `pred`
        itself, in `_probe`: its contents are the segment's, and a rank costs less than its keeping.)"""
        got = kept.get((rank, b, id(v)))
        if got is not None and got[0] is v:
            return got[1]
        r = rank(v, b)
        if len(kept) >= MAX_VERDICTS:
            kept.clear()
        kept[(rank, b, id(v))] = (v, r)
        return r

    def _shared(self, b: int) -> bytes:
        """Block b, touched by no free write: its content in every state of the segment, not
        recorded as read by this check (find's per-segment judgement)."""
        v = self.shared.get(b)
        if v is None:
            v = self.shared[b] = self.forced(b) if self.forced is not None and 0 <= b < self.nblocks \
                else self.inner.read(b)
        return v

    def _peek(self, b: int) -> bytes:
        """Block b's content in this state, not recorded as read (find)."""
        if self.block_choice is None:
            return self.inner.read(b)
        key = (b, self.block_choice(b))
        v = self.vcache.get(key)
        if v is None:
            v = self.vcache[key] = self._assemble(b, key[1])
        return v

    def _assemble(self, b: int, choice: tuple) -> bytes:
        """Varying block b in this state, given the choices of the free writes touching it: with
        none of them persisted, its forced content (CrashSpace.forced_block: kept across crash
        points, so later segments and the memo meet the very same object), else assembled by
        the overlay from its sectors."""
        if self.forced is not None and 0 <= b < self.nblocks:
            if not any(choice):
                return self.forced(b)
            if self.over is not None:
                return self.over(b, self.forced(b))
        return self.inner.read(b)

    def _load(self, b: int) -> bytes:
        """Block b, not in this state's cache yet: its first read (a written block is cached)."""
        self.first_read.add(b)
        if b not in self.varying:  # forced or base content: read it once per segment
            v = self.shared.get(b)
            if v is None:  # (_shared, inline)
                v = self.shared[b] = self.forced(b) if self.forced is not None and 0 <= b < self.nblocks \
                    else self.inner.read(b)
        elif self.block_choice is not None:
            key = (b, self.block_choice(b))
            v = self.vcache.get(key)
            if v is None:
                v = self.vcache[key] = self._assemble(b, key[1])
        else:
            v = self.inner.read(b)
        self.cache[b] = v
        return v

    def write(self, block: int, data: bytes, *, fua: bool = False, role: str = "") -> None:
        """Kept here, block by block (the overlay below is never read for a block once written)."""
        n = len(data)
        data = bytes(data)
        if self.events is None:
            _check_write_extent(self, block, n)
        else:
            self._noted(WRITE, (block, data, bool(fua)), _check_write_extent, self, block, n)
        k = n // BLOCK_SIZE
        if k == 1:
            self.cache[block] = data if n == BLOCK_SIZE else data[:BLOCK_SIZE]
            self.written.add(block)
        else:  # block by block, the slices taken in C
            self.cache.update(zip(range(block, block + k), map(data.__getitem__, _block_slices(k))))
            self.written.update(range(block, block + k))
        c = self.counters
        c.writes += 1
        c.bytes_written += n
        c.fua_writes += bool(fua)

    def flush(self) -> None:
        self.inner.flush()

    def discard(self, block: int, count: int = 1, *, role: str = "") -> None:
        """Discarded blocks read back as zeros, as on the overlay (an image file's punched hole)."""
        if self.events is None:
            _check_extent(self, block, count)
        else:
            self._noted(DISCARD, (block, count), _check_extent, self, block, count)
        for b in range(block, block + count):
            self.cache[b] = _ZERO
            self.written.add(b)
        self.counters.discards += 1


_ZERO = bytes(BLOCK_SIZE)


# ---------------------------------------------------------------- the per-process context
_CTX: dict = {}


def _window(point, nops: int) -> range:
    """Model indices legal at a crash point: from the last completed sync to the op in progress."""
    if point.last_mark == RECOVERY_MARK:  # a second phase, crashing during recovery: the state it recovers
        return range(0, 1)
    k = parse_mark(point.last_mark) if point.last_mark else None
    done = 0 if k is None else k + 1  # ops completed
    lo = _CTX["sync_done"][done]
    return range(lo, min(done + 1, nops) + 1)


def _init_ctx(space, segments, ops, protocol, bound, initial=None) -> None:
    _CTX.clear()
    memo.enable()  # decoders marked pure answer from their arguments (blkjournal/memo.py)
    _CTX.update(space=space, segments=segments, nops=len(ops) if ops is not None else 0,
                kind=model_kind(protocol), bound=bound, verdicts={}, checks=CheckMemo(recover_and_read))
    if ops is None:
        _CTX["models"] = None
        return
    _CTX["models"] = ModelStates(ops, initial)  # (made by each job as it judges: workload.ModelStates)
    sd, last = [0], 0  # sync_done[d] = model index of the last sync among the first d ops
    for j, op in enumerate(ops):
        if op.kind == "sync":
            last = j + 1
        sd.append(last)
    _CTX["sync_done"] = sd


def segments_of(space, points: list[int]) -> list[list[int]]:
    """Runs of crash points whose state sets only grow (no flush or FUA completion inside).

    The last point of a run has every image of the earlier ones (with the later writes absent),
    so one search at the last point, judged against each point's window, covers the run.
    """
    segs: list[list[int]] = []
    for pi in points:
        op = space.points[pi].op
        breaks = op is not None and (op.kind == "flush" or (op.kind == "fua" and not space.points[pi].inflight))
        if not segs or breaks or segs[-1][-1] != pi - 1:
            segs.append([pi])
        else:
            segs[-1].append(pi)
    return segs


def _nfree(space, pi: int) -> int:
    return len(space.free_writes(pi))


def _units(space, pi: int, free: list, rel: list[int]) -> tuple[list[tuple], dict[int, int], dict]:
    """The search's units at crash point pi, per write the sectors that cannot matter, and the
    changed sectors of each data-block unit.

    Untorn: one unit per relevant free write, (pos, None).  Torn: one per *sector* of it, (pos,
    i) -- the atomic unit is the sector (DESIGN §2), so searching sectors keeps coverage exact --
    except sectors that cannot change the image: ones no other free write touches whose content
    equals what lies beneath (an in-place update rewrites a 4 KiB block to change a few bytes),
    or that a newer forced write hides.  Those count as covered either way.

    A *data* block (its new content is no valid metadata block) that no other free write touches
    is one three-way unit (pos, "b", block): none of its changed sectors, all, or mixed.  The store
    looks at a data block only through its crc32c (the map's, or a transaction's: read, fsck,
    journal replay), and metadata readers reject any block whose seal fails, so every mixed
    pattern -- whose crc, checked here for each pattern, matches neither the old nor the new
    content -- behaves alike: one representative stands for all 2^c - 2 of them.
    """
    if not space.torn:
        return [(pos, None) for pos in rel], {}, {}
    count: dict[int, int] = {}
    for w in free:
        for k in range(w.s0, w.s0 + w.n):
            count[k] = count.get(k, 0) + 1
    fv, ss = space.forced_view(pi), space.sectorsize
    spb = BLOCK_SIZE // ss
    units, idle, changed_of = [], {}, {}
    for pos in rel:
        w, n_idle = free[pos], 0
        changed: dict[int, list[int]] = {}  # block -> changed sector indices within the write
        below_of: dict[int, bytes] = {}
        for i in range(w.n):
            sec = w.s0 + i
            if count[sec] == 1:
                h = fv.holder(sec)
                if h is not None and h[0] > w.seq:
                    n_idle += 1
                    continue
                below = fv.get(sec)
                if below is None:
                    below = space.base.read(sec * ss, ss)
                below_of[i] = bytes(below)
                if bytes(w.chunks[i]) == below_of[i]:
                    n_idle += 1
                    continue
            changed.setdefault(sec // spb, []).append(i)
        for blk, idx in changed.items():
            lo = blk * spb - w.s0
            whole = 0 <= lo and lo + spb <= w.n and all(count[w.s0 + lo + k] == 1 for k in range(spb))
            if whole and len(idx) > 1 and _tear_alike(w, lo, spb, idx, below_of):
                units.append((pos, "b", blk))
                changed_of[(pos, "b", blk)] = (idx, lo in idx)
            else:
                units.extend((pos, i) for i in idx)
        idle[pos] = n_idle
    return units, idle, changed_of


def _tear_alike(w, lo: int, spb: int, idx: list[int], below_of: dict) -> bool:
    """Do all mixed tears of the block at write sectors lo..lo+spb fail every check alike?

    True when no mixed pattern is a valid metadata block (its seal fails) and none has the crc of
    the old or the new content -- verified here pattern by pattern.  Readers then see a mixed
    block only as "fails its seal / its crc", apart from a peek at the first sector's header
    before the seal (journal replay reads the descriptor's sequence number there), which is why
    the search keeps "first sector new" and "first sector old" apart (`_combo`).
    """
    from ..format import block_type

    part = BLOCK_SIZE // spb
    new = b"".join(bytes(w.chunks[lo + k]) for k in range(spb))
    old = b"".join(below_of.get(lo + k, b"") for k in range(spb))
    if len(old) != BLOCK_SIZE:
        return False
    crcs = {crc32c(new), crc32c(old)}
    rel = [i - lo for i in idx]
    for m in range(1, (1 << len(rel)) - 1):
        on = {rel[j] for j in range(len(rel)) if m >> j & 1}
        mixed = b"".join(new[k * part:(k + 1) * part] if k in on else old[k * part:(k + 1) * part] for k in range(spb))
        if crc32c(mixed) in crcs or block_type(mixed) is not None:
            return False
    return True


def _combo(free, decided: dict, idle: dict, changed_of: dict) -> tuple:
    """The state choice of a node's representative: decided-present units persisted, the rest not."""
    masks: dict[int, int] = {}
    counted: dict[int, int] = {}  # sectors persisted, for "every sector that matters"
    for u, c in decided.items():
        if not c:
            continue
        pos = u[0]
        if u[1] is None:
            masks[pos] = -1
        elif u[1] == "b":
            idx, first = changed_of[u]
            # 1 whole; 2 mixed (with the block's first sector if it changed); 3 mixed, first sector old
            idx = idx if c == 1 else idx[:1] if c == 2 else idx[1:]
            for i in idx:
                masks[pos] = masks.get(pos, 0) | 1 << i
            counted[pos] = counted.get(pos, 0) + (len(changed_of[u][0]) if c == 1 else -10 ** 6)
        else:
            masks[pos] = masks.get(pos, 0) | 1 << u[1]
            counted[pos] = counted.get(pos, 0) + 1
    out = []
    for pos, m in masks.items():
        w = free[pos]
        if m == -1:
            out.append((pos, 1))
            continue
        if counted.get(pos, 0) + idle.get(pos, 0) == w.n:
            m = (1 << w.n) - 1  # every sector that matters persisted: the whole write (the idle ones change nothing)
        out.append((pos, mask_code(w.n, m)))
    return tuple(sorted(out))


def _search_segment(si: int) -> dict:
    """Check every crash state of one segment by equivalence classes of what recovery reads.

    Node = a partial choice (unit -> 0 absent / 1 present) over the last point's free writes'
    units (whole writes, or with --torn their sectors: `_units`).  Its representative (undecided
    units absent) is checked; the units touching a block the check read before writing split
    the node: T[0] present, or T[0] absent and T[1] present, ... and the node itself then stands
    for "all of T absent, anything for the rest".
    """
    space, seg = _CTX["space"], _CTX["segments"][si]
    models, kind, nops, bound = _CTX["models"], _CTX["kind"], _CTX["nops"], _CTX["bound"]
    pi = seg[-1]
    free = space.free_writes(pi)
    rel = [pos for pos, w in enumerate(free) if w.dead > pi]
    relset = set(rel)
    spb = BLOCK_SIZE // space.sectorsize
    units, idle, changed_of = _units(space, pi, free, rel)
    blocks_of = {}
    for u in units:
        w = free[u[0]]
        if u[1] is None:
            blocks_of[u] = set(range(w.s0 // spb, (w.s0 + w.n - 1) // spb + 1))
        elif u[1] == "b":
            blocks_of[u] = {u[2]}
        else:
            blocks_of[u] = {(w.s0 + u[1]) // spb}
    sector_of = {u: free[u[0]].s0 + u[1] for u in units if u[1] is not None and u[1] != "b"}
    limits = [(p, _nfree(space, p)) for p in seg]
    windows = {p: _window(space.points[p], nops) for p in seg} if models is not None else {}
    out = {"segment": si, "points": seg, "checks": 0, "covered": 0, "failures": [],
           "legal_space": sum(_space_size(space, p) for p in seg)}
    shared: dict[int, bytes] = {}
    vcache: dict[tuple, bytes] = {}
    probes: dict[tuple, bool] = {}
    forced = lambda b: space.forced_block(b, pi)  # noqa: E731
    varying = set().union(*blocks_of.values()) if units else set()
    legal_below = [1]  # legal_below[nf]: the states of the irrelevant writes among free[:nf] (each stands alone)
    for q, w in enumerate(free):
        legal_below.append(legal_below[-1] * (w.legal if q not in relset else 1))
    units_of: dict[int, list] = {}
    for u in units:
        for blk in blocks_of[u]:
            units_of.setdefault(blk, []).append(u)
    whole: dict[tuple, bytes | None] = {}  # (pos, block) -> the free write's content of the block

    def versions(b: int, decided: dict, rep: bytes) -> list[bytes] | None:
        """The contents block b takes across the node's class besides `rep`, the representative's:
        one per undecided free write covering it whole (the newest present one wins) or, with
        --torn, every mix of its sectors' candidates (`rep`'s, or an undecided unit's: a sector,
        or a changed sector of a block-wide unit) up to MAX_MIXES; None if a partial write or
        too many mixes touch it."""
        whole_v, per_sector = [], {}
        for u in units_of.get(b, ()):
            if u in decided and not (u[1] == "b" and decided[u] >= 2):  # a mixed tear stands for all mixes
                continue
            w = free[u[0]]
            if u[1] == "b":  # a block-wide unit: its changed sectors, each old or new
                for i in changed_of[u][0]:
                    per_sector.setdefault((w.s0 + i) % spb, []).append(bytes(w.chunks[i]))
                continue
            if u[1] is not None:
                k = (w.s0 + u[1]) % spb
                per_sector.setdefault(k, []).append(bytes(w.chunks[u[1]]))
                continue
            v = whole.get((u[0], b), b"")
            if v == b"":
                s0 = b * spb
                v = None if w.s0 > s0 or w.s0 + w.n < s0 + spb else \
                    b"".join(bytes(w.chunks[k - w.s0]) for k in range(s0, s0 + spb))
                whole[(u[0], b)] = v
            if v is None:
                return None
            whole_v.append(v)
        if not per_sector:
            return whole_v
        if whole_v:
            return None
        ss = space.sectorsize
        cands = [[rep[k * ss:(k + 1) * ss]] + [c for c in per_sector.get(k, ()) if c != rep[k * ss:(k + 1) * ss]]
                 for k in range(spb)]
        n = 1
        for c in cands:
            n *= len(c)
        if n > MAX_MIXES:
            return None
        return [b"".join(m) for m in itertools.product(*cands)]

    stack: list[dict] = [{}]
    checks = _CTX["checks"]
    ss = space.sectorsize
    while stack and out["checks"] < bound:
        decided = stack.pop()
        st = space.state_from_combo(pi, _combo(free, decided, idle, changed_of), keyed=False)
        ov = st.overlay()
        tr = Tracer(ov, shared, varying, vcache, lambda b, w=ov.writes: w.block_choice(b, spb),
                    versions=lambda b, rep, d=decided: versions(b, d, rep), probes=probes, forced=forced,
                    verdicts=_CTX["verdicts"], over=lambda b, raw, w=ov.writes: w.block_over(b, spb, ss, raw))
        # A segment's first check may meet the previous segment's last one whole (checkmemo.py);
        # a later check differs from the one that split it in a block that check read.  A check
        # with no node left behind it may be the segment's last: it is recorded.
        contents, err, findings = checks.check(tr, si - 1 if not decided else None, si if not stack else None)
        out["checks"] += 1
        present_later = [u for u, c in decided.items() if c == 1]
        touched = [u for u in reversed(units) if u not in decided and blocks_of[u] & tr.first_read
                   and not any(_hides(free, q, u, sector_of) for q in present_later)]
        for i, u in enumerate(touched):
            d = dict(decided)
            for q in touched[:i]:
                d[q] = 0
            for code in (((3, 2, 1) if changed_of[u][1] else (2, 1)) if u[1] == "b" else (1,)):
                stack.append(d | {u: code})
        fixed = set(decided) | set(touched)
        free_units: dict[int, int] = {}  # per write: log2 of the patterns its undecided units leave open
        mixed = 1  # patterns the node's mixed data-block choices stand for
        for u in units:
            if u not in fixed:
                free_units[u[0]] = free_units.get(u[0], 0) + (len(changed_of[u][0]) if u[1] == "b" else 1)
            elif u[1] == "b" and decided.get(u, 0) >= 2:
                c, first = len(changed_of[u][0]), changed_of[u][1]
                mixed *= (1 << (c - 1)) - 1 if first else (1 << c) - 2
        present = sorted({u[0] for u, c in decided.items() if c})
        maxpos = max(present, default=-1)
        open_bits = [0]  # open_bits[nf]: log2 of the patterns the relevant writes among free[:nf] leave open
        for q in range(len(free)):
            open_bits.append(open_bits[-1] + (free_units.get(q, 0) + idle.get(q, 0) if q in relset else 0))
        for p, nf in limits:
            if maxpos >= nf:
                continue
            k = min(nf, len(free))  # (as free[:nf])
            size = (mixed * legal_below[k]) << open_bits[k]
            out["covered"] += size
            if contents is None:
                ok, reason = False, err
            elif models is None:
                ok, reason = True, ""
            else:
                v = judge(contents, models, windows[p], kind)
                ok, reason = v.legal, v.reason
            if not ok:
                gone = {u[0] for u in list(decided) + touched if not decided.get(u)} - set(present)
                out["failures"].append({"point": p, "at": pi, "state": st.id, "reason": reason, "findings": findings,
                                        "present": present,
                                        "absent": sorted(q for q in gone if q < nf),  # not yet submitted at p: not lost
                                        "torn": {pos: c for pos, c in st.combo if c != 1},
                                        "size": size})
    out["uncovered_nodes"] = len(stack)
    checks.end(si)
    # What outlives the segment (the memo's tries, the forced blocks) is frozen too, once the
    # segment's cyclic garbage is collected: later collections walk only what later checks made.
    gc.collect(1)
    gc.freeze()
    return out


def _hides(free, q: tuple, u: tuple, sector_of: dict) -> bool:
    """Does present unit q (a later write) hide unit u entirely?  (A data-block unit shares its
    sectors with no other free write: it neither hides nor is hidden.)"""
    if q[0] <= u[0] or u[1] == "b" or q[1] == "b":
        return False
    if u[1] is None:
        return q[1] is None and _covers(free[q[0]], free[u[0]])
    return (sector_of[q] if q[1] is not None else None) == sector_of[u] or (
        q[1] is None and free[q[0]].s0 <= sector_of[u] < free[q[0]].s0 + free[q[0]].n)


def recheck(failure: dict, combo: tuple) -> str | None:
    """Check one candidate state for a failing class (at its segment end, judged at its point): the
    reason it is illegal, or None when it is legal.  The cluster minimiser builds candidates."""
    space, models = _CTX["space"], _CTX["models"]
    contents, err, _ = recover_and_read(space.state_from_combo(failure["at"], combo).overlay())
    if contents is None:
        return err
    if models is None:
        return None
    v = judge(contents, models, _window(space.points[failure["point"]], _CTX["nops"]), _CTX["kind"])
    return None if v.legal else v.reason


def _covers(later, earlier) -> bool:
    """A later write that persisted whole hides every sector of an earlier one."""
    return later.s0 <= earlier.s0 and earlier.s0 + earlier.n <= later.s0 + later.n


def _space_size(space, p: int) -> int:
    n = 1
    for w in space.free_writes(p):
        n *= w.legal
    return n


def explore_log(log_path: str, *, protocol: str | None = None, ops: list[Operation] | None = None,
                bound: int | None = None, torn: bool = False, seed: int = 0, jobs: int = 1,
                shard: tuple[int, int] = (0, 1), keep_failing: str | None = None,
                progress: bool = False, barrier: str | None = None, max_failures: int = 50,
                first_failure: bool = False, faults: tuple[str, ...] = (), fault_samples: int | None = None,
                fault_at: tuple | None = None, base: str | None = None,
                initial: dict[str, bytes] | None = None) -> Result:
    """Enumerate, check and judge every crash state of a recorded run.

    `base`: the image the run started from (default zeros); `initial`: the model's contents
    before the first op (a second phase starts from what recovery read back, multicrash.py).
    `bound`: checks per segment (default `states.default_bound(torn)`).
    """
    t0 = time.monotonic()
    # The collector runs every GC_YOUNG allocations from here (see below): the set-up's own
    # allocations (the crash space's lists and tuples) live to the end, and 18-36 collections
    # walking them took 2-5 ms of its 30-55 (200 ops), which no job shares; now none runs.
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, *thresholds[1:])
    try:
        if bound is None:
            bound = default_bound(torn)
        log = read_log(log_path)
        sc = read_sidecar(sidecar_path(log_path)) if os.path.exists(sidecar_path(log_path)) else None
        w = load_workload(log_path, model_budget=MODEL_BUDGET if ops is None else None)
        if ops is None and w is not None:
            ops = w["ops"]
        protocol = protocol or (w or {}).get("protocol")
        if protocol is None:
            raise BlkError(f"{log_path}: no workload file beside the log: give --protocol")
        barrier = barrier or (w or {}).get("barrier", "?")
        space = CrashSpace(log, sc, torn=torn, bound=bound, seed=seed, base=base,
                           nblocks=None if sc is not None or base is not None else (w or {}).get("nblocks"))
        start = next((p.index for p in space.points if p.last_mark in (MKFS_MARK, RECOVERY_MARK)), None)
        if start is None:
            raise BlkError(f"{log_path}: no '{MKFS_MARK}' mark: not a blkjournal crash-test log")
        points = [p.index for p in space.points if p.index >= start and not _after_end(p)]
        if ops is not None:
            _check_marks(space, ops, log_path)
        i, n = shard
        if not 0 <= i < n:
            raise BlkError(f"shard {i}/{n}: want 0 <= i < n")
        every = segments_of(space, points)
        segments = every[i::n]
        res = Result(protocol, barrier, seed, len(ops) if ops else 0, notes=list(space.notes),
                     kernel=(w or {}).get("kernel"))  # a log recorded in the VM names the guest's kernel
        if ops is None:
            res.notes.append("no workload file: states checked for recovery and fsck only, not against a model")
        _init_ctx(space, segments, ops, protocol, bound, initial)
    except BaseException:
        gc.set_threshold(*thresholds)
        raise
    # The crash space and the models are large and live until the end: frozen, the cyclic garbage
    # collector no longer walks them after every few thousand allocations of the checks (a quarter
    # of their time otherwise); forked jobs inherit them frozen, so their pages also stay shared.
    # The checks allocate in bursts (a store, its files, a replay's states) that mostly die by
    # reference counting: collected every GC_YOUNG allocations instead of every 700, far fewer of
    # them are walked while still alive, and the tries the memo grows are walked less often.
    gc.freeze()
    try:
        outs = _run_checks(len(segments), jobs, progress, first_failure)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    legal = covered = 0
    bad_points: dict[int, str] = {}
    fails = []
    for o in outs:
        res.states_checked += o["checks"]
        legal += o["legal_space"]
        covered += min(o["covered"], o["legal_space"])
        for f in o["failures"]:
            bad_points.setdefault(f["point"], f["reason"])
            fails.append(f)
    res.crash_points = sum(len(s) for s in segments)
    res.run = run_identity(log, ops, bound=bound, torn=torn, shard=shard, nsegments=len(every), npoints=len(points))
    res.states_enumerated = legal
    res.states_covered = covered
    res.coverage = covered / legal if legal else 1.0
    res.illegal = len({(f["at"], f["state"]) for f in fails})  # failing checks (each an equivalence class)
    res.illegal_states = sum(f["size"] for f in fails)  # the crash states those classes stand for
    res.failing_points = sorted(bad_points)
    checked = {p for s in segments for p in s}
    res.points = [(p, space.points[p].label, p not in bad_points) for p in sorted(checked)]
    fails.sort(key=lambda f: (f["point"], f["state"]))
    seen = set()
    firsts = [f for f in fails if (f["at"], f["state"]) not in seen and not seen.add((f["at"], f["state"]))]
    # causes are minimised, except for --ablate's "is anything illegal?" runs
    res.clusters = cluster_failures(space, fails, explain, None if first_failure else recheck)
    for f in firsts[:max_failures]:
        pt = space.points[f["point"]]
        fl = Failure(f["state"], f["point"], pt.label + (f" [{pt.last_mark}]" if pt.last_mark else ""), f["reason"],
                     f["findings"])
        fl.explanation = explain(space, f)
        if keep_failing:
            os.makedirs(keep_failing, exist_ok=True)
            fl.kept = os.path.join(keep_failing, f"{fl.state}.img")
            space.state(fl.state).overlay().materialize(fl.kept)
        res.failures.append(fl)
    res.space = space
    if faults:  # storage faults layered on the crash states (faults.py)
        from .faults import DEFAULT_SAMPLES, explore_faults

        res.faults = explore_faults(space, ops, protocol, kinds=faults, samples=fault_samples or DEFAULT_SAMPLES,
                                    seed=seed, jobs=jobs, fault_at=fault_at, start=start, points=points[i::n])
    t1 = time.monotonic()
    res.seconds, res.spans = t1 - t0, [(t0, t1)]
    reap()  # the workers' exits ran beside the report's making
    memo.enable(False)  # its tables go with the run (an exception leaves them, bounded, to the next)
    return res


def _check_marks(space, ops: list[Operation], log_path: str) -> None:
    """The workload must be the one the log recorded: every "op K: ..." mark names an op it has,
    and says what that op is (the kernel may have cut the text short)."""
    for p in space.points:
        if p.op is None or p.op.kind != "mark" or p.op.text is None:
            continue
        k = parse_mark(p.op.text)
        if k is None:
            continue
        if not 0 <= k < len(ops) or not mark_text(k, ops[k]).startswith(p.op.text.rstrip("\ufffd")):
            raise BlkError(f"{log_path}: the log's mark {p.op.text[:60]!r} does not match the workload file "
                           f"({len(ops)} ops)")


def _after_end(p) -> bool:
    return p.last_mark == "dm-log-writes-end"


def _run_checks(n: int, jobs: int, progress: bool, first_failure: bool = False) -> list[dict]:
    if first_failure:  # "is anything illegal?": stop at the first segment that says yes
        out = []
        for i in range(n):
            out.append(_search_segment(i))
            if out[-1]["failures"]:
                break
        return out
    if jobs <= 1 or n < 4 or sum(len(s) for s in _CTX["segments"]) < MIN_SHARED_POINTS:
        # a generator, not map(): an exception escaping a check must never end the loop silently
        it = (_search_segment(i) for i in range(n))
    else:
        space = _CTX["space"]
        it = share_out(_search_segment, [segment_cost(space, s) for s in _CTX["segments"]], jobs)
    out = []
    with progress_bar(sum(len(s) for s in _CTX["segments"]), progress) as tick:
        for r in it:
            out.append(r)
            tick(r)
    return out


def segment_cost(space, seg: list[int]) -> int:
    """A segment's search, estimated: it grows with the free writes at its last point and its
    number of points.  Only the first split of the segments over jobs uses it (crash/jobs.py:
    a process that runs out takes work from the others)."""
    return len(space.free_writes(seg[-1])) + len(seg)


def crashtest(workdir: str, *, protocol: str, barrier: str = "flush", nops: int = 200, seed: int = 0,
              workload: str = "random", image_size: int | None = None, sector_size: int = 512,
              save_log: str | None = None, ablate: str | None = None, image: str | None = None,
              multi_crash: int = DEFAULT_STATES, **kw) -> tuple[Result, dict]:
    """Record a workload on a fresh image in `workdir` and explore it.

    `multi_crash` first-phase crash states are each continued by a second phase (recovery and
    more operations, recorded and explored: multicrash.py); its failures join the result.
    """
    ops = make_ops(workload, seed, nops)
    if image_size is None:
        image_size = IMAGE_SIZE.get(workload, 4 << 20)
    log = save_log or os.path.join(workdir, f"run-{protocol}-{barrier}-{seed}.log")
    counters = record(image or os.path.join(workdir, "crashtest.img"), log, protocol, barrier, ops,
                      size=image_size, sector_size=sector_size, ablate=ablate)
    res = explore_log(log, protocol=protocol, ops=ops, seed=seed, barrier=barrier, **kw)
    res.seed = seed
    if multi_crash and not res.ok:
        res.notes.append("second phases skipped: the first phase already has illegal states")
    elif multi_crash:
        phase_kw = {k: v for k, v in kw.items() if k in ("bound", "torn", "jobs", "first_failure", "max_failures",
                                                          "shard")}  # a shard explores its share of each phase
        # With several jobs the phases run side by side, each in one process: a phase is too short
        # to split (MIN_SHARED_POINTS), and one after the other they leave the other jobs idle.
        parallel = kw.get("jobs", 1) > 1 and not kw.get("first_failure")
        if parallel:
            phase_kw["jobs"] = 1
        for r in second_phases(workdir, res, ops, explore_log, save_workload, protocol=protocol, barrier=barrier,
                               seed=seed, n=multi_crash, parallel=parallel, **phase_kw):
            merge_phase(res, r)
    return res, counters


def merge_phase(res: Result, r: Result) -> None:
    """Fold a second phase's Result into the first's: counts add up, failures say where they came from."""
    res.states_enumerated += r.states_enumerated
    res.states_covered += r.states_covered
    # counts may exceed any float: divide exactly
    res.coverage = float(Fraction(res.states_covered, res.states_enumerated)) if res.states_enumerated else 1.0
    res.states_checked += r.states_checked
    res.crash_points += r.crash_points
    res.illegal += r.illegal
    res.illegal_states += r.illegal_states
    for f in r.failures:
        f.label = f"second phase from {r.phase2_of}: {f.label}"
        res.failures.append(f)
    res.notes += r.notes
    res.spans += r.spans
    res.seconds = _covered(res.spans)  # phases that ran side by side count once


def _covered(spans: list) -> float:
    """Seconds during which some exploration ran: the length of the union of the (start, end)
    spans (time.monotonic, one clock for every process of the machine)."""
    total, end = 0.0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def ablation(workdir: str, *, protocol: str, barrier: str = "flush", seeds: int = 4, **kw) -> list[dict]:
    """Remove each barrier site in turn; is the removal caught (some state illegal) on some seed?

    A site whose removal is never caught is either unnecessary or a gap in the workloads; the
    docs argue each such site (docs/protocols.md).
    """
    from ..store import Store

    kw.pop("seed", None)
    kw.pop("progress", None)
    kw.pop("workload", None)
    sites = Store.site_names(protocol, barrier)
    runs = [("random", seed) for seed in range(seeds)] + [(name, 0) for name in NAMED]
    rows = []
    for site in sites:
        row = {"site": site, "caught": False, "workload": None, "seed": None, "illegal": 0, "example": None}
        for workload, seed in runs:
            args = dict(kw)
            if workload in IMAGE_SIZE:  # e.g. grow's file of 520 blocks needs room beside its copy-on-write
                args["image_size"] = IMAGE_SIZE[workload]
            res, _ = crashtest(workdir, protocol=protocol, barrier=barrier, seed=seed, ablate=site,
                               workload=workload, first_failure=True, **args)
            if not res.ok:
                f = res.failures[0]
                row.update(caught=True, workload=workload, seed=seed, illegal=res.illegal,
                           example=[f.reason] + f.explanation)
                break
        rows.append(row)
    return rows


def demo(workdir: str) -> int:
    """`make demo`'s second half: explore the default protocol, show the report, then `none`."""
    from .report import print_summary

    rc = 0
    for protocol, nops in (("journal", 60), ("none", 30)):
        if protocol == "none":
            print("\nThe same kind of workload without barriers (`none`), which the explorer must catch:")
        res, _ = crashtest(workdir, protocol=protocol, nops=nops, seed=1, jobs=2, progress=True)
        print_summary(res, limit=2)
        rc |= 0 if (res.ok or protocol == "none") else 1
    from .report import keep_demo_report

    keep_demo_report(res)
    return rc
