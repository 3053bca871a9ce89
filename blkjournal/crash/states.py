"""Every crash state a volatile write cache allows, at every point of a recorded run (DESIGN §4).

Writes are taken in submission order: from the sidecar when there is one, else from the log (which
under-approximates: plain writes are logged at the next flush, after FUA writes and marks that were
submitted later).  At a crash point, a submitted write is *forced* if a flush completed after it, or
if it is a FUA write that completed; every other submitted write (*free*) persisted or not,
independently, and with `torn=True` possibly only some of its sectors.  A state = forced writes +
a choice for each free write, applied in submission order so a later write to a sector supersedes
an earlier one where both persisted.

Crash points: before anything; after each operation; and for a FUA write also *during* it (in
flight: not yet forced, and tearable) -- the only way a crash can leave a FUA write partial.

Discarded sectors read back as zeros (what a hole-punched image file gives; a real disk may
differ, which this model does not explore).

Speed: payloads stay in the (mmapped) log.  A state's key is a 128-bit XOR of per-sector content
fingerprints, kept incrementally: the forced contents of a crash point are hashed once as the
enumeration walks forward, and each state XORs in only its chosen writes (one XOR per write that
overlaps no other free write).  An overlay resolves sectors on lookup -- newest persisted free
write at that point, else a `ForcedView` that finds the forced holder of a sector at point t by
bisection -- so nothing is copied per state or per crash point.  Free writes whose every sector a
later forced write overwrites cannot change the image; they are left out of the enumeration
(their id bits stay 0) and counted as covered.

State ids are `P<point>-<hex>`: the hex number is the bitmask over the point's free writes in
submission order (bit i = i-th free write persisted), or with `T` (`P12-T1a`) a mixed-radix number
whose digit per free write selects absent / whole / one tear pattern.  An id depends only on the
log (+ sidecar) and `torn`, never on the bound or seed, so `state(id)` rebuilds it anywhere.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import product, repeat

from ..device import BLOCK_SIZE
from ..errors import BlkError, CorruptError
from .image import BaseImage, Overlay, as_base
from .logwrites import Log, read_log
from .recorder import Sidecar, read_sidecar, sidecar_path

DEFAULT_BOUND = 4096
# --torn splits writes into sectors, so a segment's search needs more checks to finish: journal/random
# at 60 ops reaches coverage 1.0 only past 4096 (docs/explorer.md).  Untorn runs keep 4096: `none`
# runs meet the bound on purpose (their illegal states multiply without it).
TORN_BOUND = 65536


def default_bound(torn: bool) -> int:
    """Checks per segment when the caller names no bound: more for torn runs (TORN_BOUND)."""
    return TORN_BOUND if torn else DEFAULT_BOUND
WRITE_KINDS = ("write", "fua", "discard")
FORCED_BLOCKS = 8192  # forced block contents kept (32 MiB): CrashSpace.forced_block
NEVER = 1 << 62  # "forced at no crash point"
UNDER_APPROX_NOTE = ("no sidecar: submission order taken from the log, which under-approximates the crash "
                     "states (a plain write logged after a later FUA write or mark is never seen persisted "
                     "without it)")
OVERLAP_NOTE = ("log entries {a} (FUA) and {b} (plain, logged at the next flush) overlap: without a sidecar "
                "their submission order is unknown and entry {b} is taken as the newer")
MAX_DISCARD_SECTORS = 1 << 20  # sectors discards may cover in all: each becomes a per-sector entry
MAX_NBLOCKS = 1 << 40  # a device of more blocks than this is no recorded run's (4 PiB)
_ID = re.compile(r"^P(\d+)-(T?)([0-9a-f]+)$")


@dataclass(frozen=True)
class Op:
    """One operation in submission order.  Sectors are in the log's sectorsize units."""

    seq: int
    kind: str  # write | fua | flush | discard | mark
    sector: int = 0
    nr_sectors: int = 0
    role: str = ""
    entry: int | None = None  # log entry holding it
    text: str | None = None  # marks

    @property
    def is_write(self) -> bool:
        return self.kind in WRITE_KINDS

    def describe(self) -> str:
        what = f"seq {self.seq} {self.kind}"
        if self.is_write:
            what += f" sectors {self.sector}+{self.nr_sectors}"
        if self.text is not None:
            what += f" {self.text!r}"
        return what + (f" ({self.role})" if self.role else "")

    def to_dict(self) -> dict:
        d = {"seq": self.seq, "kind": self.kind}
        if self.is_write:
            d.update(sector=self.sector, nr_sectors=self.nr_sectors)
        if self.role:
            d["role"] = self.role
        if self.text is not None:
            d["text"] = self.text
        return d


@dataclass(frozen=True)
class CrashPoint:
    """Where the power went: after `op` completed (or, `inflight`, while a FUA write was in flight)."""

    index: int
    op: Op | None  # the last operation submitted; None = before anything
    inflight: bool
    last_mark: str | None  # text of the last mark before the crash (the workload marks each op)
    mark_seq: int | None

    @property
    def seq(self) -> int:
        return -1 if self.op is None else self.op.seq

    @property
    def label(self) -> str:
        if self.op is None:
            return "before the first operation"
        return ("during " if self.inflight else "after ") + self.op.describe()

    def to_dict(self) -> dict:
        return {"index": self.index, "seq": self.seq, "inflight": self.inflight, "label": self.label,
                "last_mark": self.last_mark}


class Write:
    """A write (or discard) with its per-sector payloads and content tokens, ready for enumeration.

    Public fields: `op`, `seq`, `s0`/`n` (first sector, sector count), `chunks` (per-sector
    payloads), `forced` (first crash point at which it is forced, NEVER if none), `dead` (first
    crash point from which later forced writes hide it entirely), `radix` (choices when free).
    """

    __slots__ = ("op", "seq", "s0", "n", "chunks", "_tokens", "radix", "legal", "forced", "dead")

    def __init__(self, op: Op, chunks: list, torn: bool) -> None:
        self.op, self.seq, self.s0, self.n = op, op.seq, op.sector, op.nr_sectors
        self.chunks = chunks
        self._tokens = None
        self.radix = _radix(self.n, torn)
        self.legal = 2 ** self.n if torn else 2
        self.forced = NEVER  # first crash point at which it is forced
        self.dead = NEVER  # first crash point at which later forced writes cover all its sectors

    @property
    def tokens(self) -> list[int]:
        """Each sector's content token (`_token`), made when first asked: only content keys need
        them, and the explorer's checks build their states unkeyed."""
        if self._tokens is None:
            self._tokens = [_token(self.s0 + i, c) for i, c in enumerate(self.chunks)]
        return self._tokens


def _token(sector: int, content) -> int:
    """A 128-bit fingerprint of `content` at `sector`; a state's key is the XOR over its sectors."""
    h = hashlib.blake2b(sector.to_bytes(8, "little"), digest_size=16)
    h.update(content)
    return int.from_bytes(h.digest(), "little")


def _radix(n: int, torn: bool) -> int:
    """How many choices a free write of n sectors has: absent, whole, and every tear pattern."""
    if not torn or n <= 1:
        return 2
    return 2 ** n


_PATTERNS: dict[tuple[int, int], tuple[int, ...]] = {}


def pattern(n: int, code: int) -> tuple[int, ...]:
    """Sector indices (within the write) that persist for choice `code` of an n-sector write.

    0 absent, 1 whole; otherwise code - 1 is the bitmask of the sectors that persisted (every
    proper nonempty subset: the atomic unit is the sector, DESIGN §2).
    """
    key = (n, code)
    got = _PATTERNS.get(key)
    if got is None:
        if code == 0:
            got = ()
        elif code == 1:
            got = tuple(range(n))
        else:
            got = tuple(i for i in range(n) if (code - 1) >> i & 1)
        if len(_PATTERNS) < 1 << 16:
            _PATTERNS[key] = got
    return got


def mask_code(n: int, mask: int) -> int:
    """The choice code of an n-sector write whose persisted sectors are the bits of `mask`."""
    if not mask:
        return 0
    return 1 if mask == (1 << n) - 1 else mask + 1


def tear_examples(n: int) -> list[int]:
    """Codes of the telling tears of an n-sector write (for sampling): prefixes and suffixes."""
    full = (1 << n) - 1
    masks = [(1 << k) - 1 for k in range(1, n)] + [full ^ ((1 << k) - 1) for k in range(1, n)]
    return [mask_code(n, m) for m in dict.fromkeys(masks)]


# -- building the operation list -------------------------------------------------------------------

def ops_from_log(log: Log) -> list[Op]:
    """Submission order as the log shows it (an under-approximation, see UNDER_APPROX_NOTE)."""
    ops: list[Op] = []
    for e in log.entries:
        if e.is_mark:
            ops.append(Op(len(ops), "mark", entry=e.index, text=e.mark))
            continue
        if e.is_flush:  # a PREFLUSH write: the flush comes first, then the write itself
            ops.append(Op(len(ops), "flush", entry=e.index))
        if e.is_discard:
            ops.append(Op(len(ops), "discard", e.sector, e.nr_sectors, entry=e.index))
        elif e.has_data:
            ops.append(Op(len(ops), "fua" if e.is_fua else "write", e.sector, e.nr_sectors, entry=e.index))
    return ops


def overlap_notes(log: Log) -> list[str]:
    """Where log order may invert submission order for the same sectors (see OVERLAP_NOTE)."""
    notes, fua = [], {}  # sector -> FUA entry index, since the last flush
    for e in log.entries:
        if e.is_flush and not e.has_data:
            fua.clear()
        elif e.has_data and e.is_fua:
            fua.update((s, e.index) for s in range(e.sector, e.sector + e.nr_sectors))
        elif e.has_data or e.is_discard:
            hit = next((fua[s] for s in range(e.sector, e.sector + e.nr_sectors) if s in fua), None)
            if hit is not None:
                notes.append(OVERLAP_NOTE.format(a=hit, b=e.index))
    return notes


# Does a log entry fit a sidecar operation of this kind?  (Only the kind's own test is made.)
_ENTRY_FITS = {"write": lambda e: e.has_data and not e.is_fua, "fua": lambda e: e.has_data and e.is_fua,
               "flush": lambda e: e.is_flush and not e.has_data, "discard": lambda e: e.is_discard,
               "mark": lambda e: e.is_mark}


def ops_from_sidecar(log: Log, sidecar: Sidecar, notes: list[str]) -> list[Op]:
    """Submission order from the sidecar, each operation checked against the log entry it names."""
    if sidecar.sectorsize != log.sectorsize:
        raise CorruptError(f"sidecar sectorsize {sidecar.sectorsize} does not match the log's {log.sectorsize}")
    ops: list[Op] = []
    seen: set[int] = set()
    for sop in sidecar.ops:
        if sop.entry is None or not 0 <= sop.entry < len(log.entries):
            notes.append(f"sidecar operations from seq {sop.seq} on have no log entry (the log was not "
                         f"closed?): {len(sidecar.ops) - sop.seq} ignored")
            break
        e = log.entries[sop.entry]
        ok = _ENTRY_FITS[sop.kind](e)
        if sop.kind in WRITE_KINDS:
            ok = ok and (sop.sector, sop.nr_sectors) == (e.sector, e.nr_sectors)
        elif sop.kind == "mark":
            ok = ok and (sop.text or "").startswith((e.mark or "").rstrip("\ufffd"))  # the log may truncate
        if not ok or sop.entry in seen:
            raise CorruptError(f"sidecar seq {sop.seq} ({sop.kind}) does not match log entry {sop.entry} "
                               f"({e.flag_names} sector {e.sector}+{e.nr_sectors})")
        seen.add(sop.entry)
        text = sop.text if sop.kind == "mark" else None
        ops.append(Op(sop.seq, sop.kind, e.sector if sop.kind in WRITE_KINDS else 0,
                      e.nr_sectors if sop.kind in WRITE_KINDS else 0, sop.role, sop.entry, text))
    missing = len(log.entries) - len(seen)
    if missing:
        notes.append(f"{missing} log entries are not in the sidecar (recording stopped early?): ignored")
    return ops


# -- the space --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CrashState:
    """One legal image at one crash point.  `key` fingerprints the image's contents."""

    id: str
    point: CrashPoint
    key: str
    combo: tuple[tuple[int, int], ...]  # (position among the point's free writes, choice code), code > 0
    space: CrashSpace = field(repr=False)

    @property
    def chosen(self) -> list[tuple[Op, tuple[int, ...] | None]]:
        """Free writes that persisted, with the persisted sector indices (None = the whole write)."""
        free = self.space.free_writes(self.point.index)
        out = []
        for pos, code in self.combo:
            w = free[pos]
            out.append((w.op, None if code == 1 else pattern(w.n, code)))
        return out

    @property
    def torn(self) -> list[tuple[Op, tuple[int, ...]]]:
        return [(op, sec) for op, sec in self.chosen if sec is not None]

    @property
    def dropped(self) -> list[Op]:
        """Free writes that did not persist at all."""
        picked = {pos for pos, _ in self.combo}
        return [w.op for pos, w in enumerate(self.space.free_writes(self.point.index)) if pos not in picked]

    @property
    def forced(self) -> list[Op]:
        return [w.op for w in self.space.writes if w.forced <= self.point.index]

    @property
    def included(self) -> list[Op]:
        """Forced writes and persisted free writes, in submission order."""
        return sorted(self.forced + [op for op, _ in self.chosen], key=lambda op: op.seq)

    def writes(self) -> StateWrites:
        return self.space.state_writes(self)

    def overlay(self) -> Overlay:
        """A fresh BlockDevice showing this state; recovery may write to it freely."""
        return self.space.overlay(self)

    def to_dict(self) -> dict:
        return {"id": self.id, "key": self.key, "point": self.point.to_dict(),
                "persisted": [dict(op.to_dict(), **({"torn_sectors": list(sec)} if sec is not None else {}))
                              for op, sec in self.chosen],
                "dropped": [op.to_dict() for op in self.dropped]}


class ForcedView(Mapping):
    """sector -> payload of the forced write that holds it at one crash point (read-only)."""

    def __init__(self, space: CrashSpace, point: int) -> None:
        self._space, self._point = space, point

    def holder(self, s: int) -> tuple[int, int, int] | None:
        """(seq, write index, sector index within it) of the winning forced write, or None."""
        fps = self._space._hist_fp.get(s)
        if fps is None:
            return None
        j = bisect_right(fps, self._point) - 1
        return None if j < 0 else self._space._hist_win[s][j]

    def get(self, s, default=None):
        h = self.holder(s)
        return default if h is None else self._space.writes[h[1]].chunks[h[2]]

    def __getitem__(self, s):
        h = self.holder(s)
        if h is None:
            raise KeyError(s)
        return self._space.writes[h[1]].chunks[h[2]]

    def __iter__(self):
        p = self._point
        return (s for s, fps in self._space._hist_fp.items() if fps[0] <= p)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _PointWriters:
    """Per crash point: which free writes touch each sector (newest first), shared by its states."""

    def __init__(self, space: CrashSpace, point: int) -> None:
        self.free = space.free_writes(point)
        self.by_sector: dict[int, list[tuple[int, int, int]]] = {}  # s -> [(pos, seq, index in write)]
        for pos, w in enumerate(self.free):
            for i in range(w.n):
                self.by_sector.setdefault(w.s0 + i, []).append((pos, w.seq, i))
        for lst in self.by_sector.values():
            lst.reverse()
        self._of_block: dict[int, tuple[int, ...]] = {}

    def of_block(self, b: int, per: int) -> tuple[int, ...]:
        """Positions of the free writes touching any sector of block b (`per` sectors a block)."""
        got = self._of_block.get(b)
        if got is None:
            by = self.by_sector
            got = self._of_block[b] = tuple(sorted({c[0] for s in range(b * per, (b + 1) * per) for c in by.get(s, ())}))
        return got


class StateWrites(Mapping):
    """A state's sectors, resolved on lookup: the newest persisted free write over the forced view.

    Nothing is built per state but the {position: choice} dict, so making an overlay costs the
    same for a state with five free writes as for one with a thousand.
    """

    def __init__(self, space: CrashSpace, writers: _PointWriters, choice: dict[int, int], forced: ForcedView) -> None:
        self._space, self._writers, self.choice, self.forced = space, writers, choice, forced

    def get(self, s, default=None):
        cands = self._writers.by_sector.get(s)
        if cands:
            choice = self.choice
            for pos, seq, i in cands:
                code = choice.get(pos)
                if code and (code == 1 or (code - 1) >> i & 1):
                    h = self.forced.holder(s)
                    if h is None or h[0] < seq:
                        return self._writers.free[pos].chunks[i]
                    break  # a newer forced write holds s; older free writes lose to it too
        return self.forced.get(s, default)

    def __getitem__(self, s):
        v = self.get(s)
        if v is None:
            raise KeyError(s)
        return v

    def block_over(self, b: int, per: int, unit: int, forced: bytes) -> bytes:
        """Block b in this state (as the overlay reads it), given `forced`, its content with no
        free write persisted (CrashSpace.forced_block at this point): the sectors a persisted free
        write wins (get()'s rule) replace forced's, the others are forced's own -- no sector is
        looked up in the forced view unless a persisted free write over it may win."""
        by, choice, out = self._writers.by_sector, self.choice, None
        s0 = b * per
        for k in range(per):
            cands = by.get(s0 + k)
            if not cands:
                continue
            for pos, seq, i in cands:
                code = choice.get(pos)
                if code and (code == 1 or (code - 1) >> i & 1):
                    h = self.forced.holder(s0 + k)
                    if h is None or h[0] < seq:
                        if out is None:
                            out = [forced[j * unit:(j + 1) * unit] for j in range(per)]
                        out[k] = self._writers.free[pos].chunks[i]
                    break  # (as get(): a newer forced write holds the sector, or this write wins it)
        return forced if out is None else b"".join(out)

    def block_choice(self, b: int, per: int) -> tuple[int, ...]:
        """The choices of the free writes touching block b: with the crash point, they determine
        its content (a cache of state blocks keys on them, explore.Tracer)."""
        of = self._writers.of_block(b, per)
        return tuple(map(self.choice.get, of, repeat(0, len(of))))  # (choice.get(pos, 0) of each, in C)

    def __iter__(self):
        seen = set()
        for s in self._writers.by_sector:
            if self.get(s) is not None:
                seen.add(s)
                yield s
        yield from (s for s in self.forced if s not in seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class Tally:
    """Counts accumulated while states are enumerated."""

    points: int = 0
    exhaustive_points: int = 0
    enumerated: int = 0
    legal: int = 0
    covered: int = 0
    keys: set = field(default_factory=set)


@dataclass(frozen=True)
class Coverage:
    points: int
    exhaustive_points: int
    enumerated: int
    unique: int
    legal: int  # legal (point, choice) combinations; may be astronomically large
    covered: int
    coverage: float  # covered / legal; 1.0 when every point was exhaustive (and tears complete)
    under_approximate: bool
    notes: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"points": self.points, "exhaustive_points": self.exhaustive_points,
                "enumerated": self.enumerated, "unique": self.unique, "legal": str(self.legal),
                "covered": str(self.covered), "coverage": self.coverage,
                "under_approximate": self.under_approximate, "notes": list(self.notes)}


@dataclass
class StateGroup:
    """All enumerated states with one image: recover once, check against every crash point."""

    key: str
    state: CrashState  # the first one enumerated (earliest crash point)
    points: list[CrashPoint]
    count: int = 1


@dataclass
class Exploration:
    groups: list[StateGroup]
    coverage: Coverage

    def shard(self, i: int, n: int) -> list[StateGroup]:
        """Groups for shard i of n (deterministic: the enumeration order is)."""
        if not 0 <= i < n:
            raise BlkError(f"shard {i}/{n}: want 0 <= i < n")
        return self.groups[i::n]


class CrashSpace:
    """The crash states of one recorded run.

    `base`: the image the run started from (path, bytes, BlockDevice or BaseImage); without one,
    states read unwritten sectors as zeros and content keys cannot see a write that rewrites the
    base's own bytes (so dedup is slightly less thorough, never wrong).
    """

    def __init__(self, log: Log, sidecar: Sidecar | None = None, *, base=None, torn: bool = False,
                 bound: int = DEFAULT_BOUND, seed: int = 0, nblocks: int | None = None) -> None:
        if bound < 1:
            raise BlkError(f"bound must be at least 1, not {bound}")
        check_discards(e.nr_sectors for e in log.entries if e.is_discard)  # before anything walks them
        self.log = log
        self.sectorsize = ss = log.sectorsize
        self.torn, self.bound, self.seed = torn, bound, seed
        self.notes: list[str] = []
        if sidecar is not None:
            self.ops = ops_from_sidecar(log, sidecar, self.notes)
            self.under_approximate = False
        else:
            self.ops = ops_from_log(log)
            self.under_approximate = True
            self.notes.append(UNDER_APPROX_NOTE)
            self.notes.extend(overlap_notes(log))
        self.base = as_base(base) if base is not None else None
        per = BLOCK_SIZE // ss
        hi = max((op.sector + op.nr_sectors for op in self.ops if op.is_write), default=0)
        if nblocks is None:
            nblocks = (self.base.nblocks if self.base is not None
                       else sidecar.nblocks if sidecar is not None and sidecar.nblocks else -(-hi // per))
        if hi > nblocks * per:
            raise BlkError(f"the log writes sector {hi - 1}, past the end of a {nblocks}-block device")
        check_nblocks(nblocks)
        self.nblocks = nblocks
        if self.base is None:
            self.base = BaseImage(size=nblocks * BLOCK_SIZE)
            self._base_known = False
        else:
            self._base_known = True
        self._base_tokens: dict[int, int] = {}
        self._writers_cache: dict[int, _PointWriters] = {}  # a few recent crash points
        self._cursor: _Cursor | None = None  # for state() / state_from_combo()
        self._block_changes: dict[int, list[int]] = {}  # block -> crash points at which its forced content changes
        self._forced_blocks: dict[tuple[int, int], bytes] = {}  # (block, changes up to a point) -> content
        self._build_writes()
        self._build_points()
        self._build_history()

    # construction
    def _build_writes(self) -> None:
        ss, zero = self.sectorsize, bytes(self.sectorsize)
        self.writes: list[Write] = []
        self._widx: dict[int, int] = {}  # seq -> index in writes
        for op in self.ops:
            if not op.is_write:
                continue
            if op.kind == "discard":
                chunks = [zero] * op.nr_sectors
            else:
                data = self.log.entries[op.entry].data
                chunks = [data[i * ss:(i + 1) * ss] for i in range(op.nr_sectors)]
            self._widx[op.seq] = len(self.writes)
            self.writes.append(Write(op, chunks, self.torn))

    def _build_points(self) -> None:
        """Crash points, each with its free writes as (lo, hi, inflight): plain[lo:hi] (+ a FUA)."""
        self.points: list[CrashPoint] = []
        self._pinfo: list[tuple[int, int, int | None]] = []
        self._plain: list[int] = []  # indices of non-FUA writes, submission order
        lo, mark, mark_seq = 0, None, None

        def add(op, inflight=False, fua=None):
            self.points.append(CrashPoint(len(self.points), op, inflight, mark, mark_seq))
            self._pinfo.append((lo, len(self._plain), fua))
            return len(self.points) - 1

        add(None)
        for op in self.ops:
            if op.kind == "fua":
                w = self._widx[op.seq]
                add(op, True, w)
                self.writes[w].forced = add(op)
            elif op.is_write:
                self._plain.append(self._widx[op.seq])
                add(op)
            elif op.kind == "flush":
                pi = add(op)
                for j in range(lo, len(self._plain)):
                    self.writes[self._plain[j]].forced = pi
                lo = len(self._plain)
                self._pinfo[pi] = (lo, lo, None)
            else:
                mark, mark_seq = op.text, op.seq
                add(op)
        self._forced_at: dict[int, list[int]] = {}
        for i, w in enumerate(self.writes):
            if w.forced != NEVER:
                self._forced_at.setdefault(w.forced, []).append(i)

    def _build_history(self) -> None:
        """Per sector: forced holders by crash point (for ForcedView) and each write's dead point.

        Most sectors were only ever touched by one write, whose result is taken directly; and
        neighbouring sectors nearly always have the same writers (a block's sectors are written
        together), so a sector whose list of writers equals the previous one's takes its judgement
        from it: only the sector offsets of its winners are its own."""
        writes = self.writes
        touch: dict[int, list[tuple[int, int]]] = {}  # sector -> [(forced point, write index)] by seq
        for i, w in enumerate(writes):
            fi = (w.forced, i)
            for s in range(w.s0, w.s0 + w.n):
                lst = touch.get(s)
                if lst is None:
                    touch[s] = [fi]
                else:
                    lst.append(fi)
        self._hist_fp: dict[int, list[int]] = {}
        self._hist_win: dict[int, list[tuple[int, int, int]]] = {}
        for w in writes:
            w.dead = -1  # becomes the max over its sectors of "first point a later write there is forced"
        hist_fp, hist_win = self._hist_fp, self._hist_win
        prev, fps, bests = None, [], []
        for s, lst in touch.items():
            if len(lst) == 1:  # one write ever touched s (most sectors): the loops below, for one
                fp, i = lst[0]
                w = writes[i]
                w.dead = max(w.dead, NEVER)
                if fp != NEVER:
                    hist_fp[s], hist_win[s] = [fp], [(w.seq, i, s - w.s0)]
                continue
            if lst != prev:
                prev, later = lst, NEVER  # later: suffix minimum of forced points over later writes to s
                for fp, i in reversed(lst):
                    w = writes[i]
                    if later > w.dead:
                        w.dead = later
                    if fp < later:
                        later = fp
                fps, bests, best = [], [], None  # bests: (seq, write index, its first sector)
                for fp, seq, i in sorted((fp, writes[i].seq, i) for fp, i in lst if fp != NEVER):
                    if best is None or seq > best[0]:
                        best = (seq, i, writes[i].s0)
                    fps.append(fp)
                    bests.append(best)
            if fps:  # (shared by the sectors of one run of equal writers: read only)
                hist_fp[s] = fps
                hist_win[s] = [(seq, i, s - s0) for seq, i, s0 in bests]

    # queries
    def free_writes(self, point: int) -> list[Write]:
        lo, hi, fua = self._pinfo[point]
        out = [self.writes[i] for i in self._plain[lo:hi]]
        if fua is not None:
            out.append(self.writes[fua])
        return out

    def forced_view(self, point: int) -> ForcedView:
        return ForcedView(self, point)

    def forced_block(self, b: int, point: int) -> bytes:
        """Block b at crash point `point` with no free write persisted: the forced writes over the
        base -- what every state of the point reads there unless a free write touches b.

        Kept across crash points: b's content changes only at the points where a write to one of
        its sectors is forced, so (b, how many of those points are <= `point`) names it.  The
        explorer's checks read the same forced blocks segment after segment (explore.Tracer),
        each of which would otherwise assemble them again, sector by sector."""
        changes = self._block_changes.get(b)
        per = BLOCK_SIZE // self.sectorsize
        if changes is None:
            fp = self._hist_fp
            changes = self._block_changes[b] = sorted({p for s in range(b * per, (b + 1) * per) for p in fp.get(s, ())})
        key = (b, bisect_right(changes, point))
        got = self._forced_blocks.get(key)
        if got is None:
            ss, fps, wins, writes, pieces = self.sectorsize, self._hist_fp, self._hist_win, self.writes, []
            for s in range(b * per, (b + 1) * per):  # (ForcedView.get of each sector, inline)
                f = fps.get(s)
                j = -1 if f is None else bisect_right(f, point) - 1
                if j < 0:
                    pieces.append(None)
                else:
                    h = wins[s][j]
                    pieces.append(writes[h[1]].chunks[h[2]])
            if all(p is None for p in pieces):
                got = self.base.block(b)
            else:
                raw = self.base.block(b) if None in pieces else b""
                got = b"".join(raw[i * ss:(i + 1) * ss] if p is None else p for i, p in enumerate(pieces))
            if len(self._forced_blocks) >= FORCED_BLOCKS:
                self._forced_blocks.clear()
            self._forced_blocks[key] = got
        return got

    def points_at_marks(self) -> list[int]:
        """Crash points right after each mark: one per workload op when the workload marks each op."""
        return [p.index for p in self.points if p.op is not None and p.op.kind == "mark"]

    def _base_token(self, s: int) -> int:
        if not self._base_known:
            return 0
        t = self._base_tokens.get(s)
        if t is None:
            ss = self.sectorsize
            t = self._base_tokens[s] = _token(s, self.base.read(s * ss, ss))
        return t

    # enumeration
    def iter_states(self, points: Iterable[int] | None = None, *, tally: Tally | None = None) -> Iterator[CrashState]:
        """Every enumerated state, crash point by crash point, in a deterministic order."""
        wanted = range(len(self.points)) if points is None else sorted(set(points))
        cur = _Cursor(self)
        for pi in wanted:
            if not 0 <= pi < len(self.points):
                raise BlkError(f"no crash point {pi} (the run has {len(self.points)})")
            cur.advance(pi)
            yield from self._point_states(pi, cur, tally)

    def explore(self, points: Iterable[int] | None = None) -> Exploration:
        """Enumerate, group states by image content, and report coverage."""
        tally = Tally()
        groups: dict[str, StateGroup] = {}
        for st in self.iter_states(points, tally=tally):
            g = groups.get(st.key)
            if g is None:
                groups[st.key] = StateGroup(st.key, st, [st.point])
            else:
                g.count += 1
                if g.points[-1] is not st.point:
                    g.points.append(st.point)
        return Exploration(list(groups.values()), self.coverage(tally))

    def coverage(self, tally: Tally) -> Coverage:
        frac = Fraction(tally.covered, tally.legal) if tally.legal else Fraction(1)
        return Coverage(tally.points, tally.exhaustive_points, tally.enumerated, len(tally.keys), tally.legal,
                        tally.covered, float(frac), self.under_approximate, tuple(self.notes))

    def _point_states(self, pi: int, cur: _Cursor, tally: Tally | None) -> Iterator[CrashState]:
        free = self.free_writes(pi)
        rel = [pos for pos, w in enumerate(free) if w.dead > pi]
        deltas = self._deltas(cur, free, rel)
        radices = [free[pos].radix for pos in rel]
        size = 1
        for m in radices:
            size *= m
            if size > self.bound:
                break
        exhaustive = size <= self.bound
        combos = _exhaustive(rel, radices) if exhaustive else self._sample(pi, rel, radices)
        n = 0
        for combo in combos:
            n += 1
            key = f"{self._hash(cur, free, combo, deltas):032x}"
            if tally is not None:
                tally.keys.add(key)
            yield CrashState(self._make_id(pi, free, combo), self.points[pi], key, combo, self)
        if tally is not None:
            legal = dead_legal = 1
            relset = set(rel)
            for pos, w in enumerate(free):
                legal *= w.legal
                if pos not in relset:
                    dead_legal *= w.legal
            tally.points += 1
            tally.exhaustive_points += exhaustive
            tally.enumerated += n
            tally.legal += legal
            tally.covered += n * dead_legal

    def _sample(self, pi: int, rel: list[int], radices: list[int]) -> Iterator[tuple]:
        """Up to `bound` distinct choices: the telling ones first, then seeded random ones."""
        rng = random.Random(f"{self.seed}:{pi}")
        seen: set[tuple] = set()
        budget = self.bound

        def structured():
            r = len(rel)
            yield ()
            yield tuple((p, 1) for p in rel)
            for j in range(1, r):  # an in-order disk: a prefix of the free writes persisted
                yield tuple((p, 1) for p in rel[:j])
            for j in range(r):  # all but one
                yield tuple((p, 1) for k, p in enumerate(rel) if k != j)
            for p in rel:  # only one
                yield ((p, 1),)
            for j, (p, m) in enumerate(zip(rel, radices)):  # in-order disk, torn at write j
                if m > 2:
                    for c in tear_examples(m.bit_length() - 1):
                        yield tuple((q, 1) for q in rel[:j]) + ((p, c),)

        def randoms():
            binary = all(m == 2 for m in radices)
            for _ in range(20 * self.bound):
                if binary:
                    bits = format(rng.getrandbits(len(rel)), f"0{len(rel)}b")[::-1]
                    yield tuple((p, 1) for p, b in zip(rel, bits) if b == "1")
                else:
                    yield tuple((p, c) for p, m in zip(rel, radices) if (c := rng.randrange(m)))

        for gen in (structured(), randoms()):
            for combo in gen:
                if combo not in seen:
                    seen.add(combo)
                    yield combo
                    budget -= 1
                    if not budget:
                        return

    def _deltas(self, cur: _Cursor, free: list[Write], rel: list[int]) -> dict[int, int]:
        """Hash change of persisting each free write that shares no sector with another free write.

        Such a write's effect on the key does not depend on the other choices, so a state pays
        one XOR for it instead of one per sector.
        """
        count: dict[int, int] = {}
        for w in free:
            for s in range(w.s0, w.s0 + w.n):
                count[s] = count.get(s, 0) + 1
        out = {}
        forced = cur.forced
        for pos in rel:
            w = free[pos]
            if any(count[s] > 1 for s in range(w.s0, w.s0 + w.n)):
                continue
            d = 0
            for i, tok in enumerate(w.tokens):
                s = w.s0 + i
                f = forced.get(s)
                if f is None:
                    d ^= tok ^ self._base_token(s)
                elif f[0] < w.seq:
                    d ^= tok ^ f[1]
            out[pos] = d
        return out

    def _hash(self, cur: _Cursor, free: list[Write], combo, deltas: dict[int, int] | None = None) -> int:
        """Content key: the point's forced hash with the chosen sectors' changes XORed in."""
        forced, h = cur.forced, cur.hash
        local: dict[int, tuple[int, int]] = {}  # sector -> (new token, token it replaces)
        for pos, code in combo:
            if code == 1 and deltas:
                d = deltas.get(pos)
                if d is not None:
                    h ^= d
                    continue
            w = free[pos]
            seq, s0, tokens = w.seq, w.s0, w.tokens
            for i in (range(w.n) if code == 1 else pattern(w.n, code)):
                s = s0 + i
                prev = local.get(s)
                if prev is not None:  # chosen in submission order: a later one wins
                    local[s] = (tokens[i], prev[1])
                    continue
                f = forced.get(s)
                if f is None:
                    local[s] = (tokens[i], self._base_token(s))
                elif f[0] < seq:
                    local[s] = (tokens[i], f[1])
        for new, old in local.values():
            h ^= new ^ old
        return h

    def _make_id(self, pi: int, free: list[Write], combo) -> str:
        if not self.torn:
            mask = 0
            for pos, _ in combo:
                mask |= 1 << pos
            return f"P{pi}-{mask:x}"
        digits = dict(combo)
        num, weight = 0, 1
        for pos, w in enumerate(free):
            num += digits.get(pos, 0) * weight
            weight *= w.radix
        return f"P{pi}-T{num:x}"

    def state(self, state_id: str) -> CrashState:
        """Rebuild a state from its id (as printed in reports); BlkError if it is not one."""
        m = _ID.match(state_id.strip())
        if not m:
            raise BlkError(f"{state_id!r} is not a crash state id (want P<point>-<hex>)")
        pi, torn, num = int(m[1]), bool(m[2]), int(m[3], 16)
        if torn != self.torn:
            raise BlkError(f"state {state_id} is from a {'torn' if torn else 'untorn'} enumeration; "
                           f"this one is {'torn' if self.torn else 'untorn'}")
        if not 0 <= pi < len(self.points):
            raise BlkError(f"state {state_id}: no crash point {pi} (the run has {len(self.points)})")
        free = self.free_writes(pi)
        combo = []
        for pos, w in enumerate(free):
            m_ = 2 if not torn else w.radix
            num, code = divmod(num, m_)
            if code:
                combo.append((pos, code))
        if num:
            raise BlkError(f"state {state_id}: names more free writes than crash point {pi} has ({len(free)})")
        return self.state_from_combo(pi, tuple(combo))

    def state_from_combo(self, point: int, combo: tuple[tuple[int, int], ...], *, keyed: bool = True) -> CrashState:
        """A state from an explicit choice (the minimiser builds candidates this way).

        `keyed=False` leaves the content key empty instead of hashing the state's sectors: the
        explorer's search checks each representative once and never groups them by key."""
        free = self.free_writes(point)
        for pos, code in combo:
            if not (0 <= pos < len(free) and 0 < code < free[pos].radix):
                raise BlkError(f"crash point {point}: invalid choice ({pos}, {code})")
        combo = tuple(sorted(combo))
        if not keyed:
            return CrashState(self._make_id(point, free, combo), self.points[point], "", combo, self)
        cur = self._cursor
        if cur is None or cur.point > point:  # random access: reuse one cursor while it moves forward
            cur = self._cursor = _Cursor(self)
        cur.advance(point)
        key = f"{self._hash(cur, free, combo):032x}"
        return CrashState(self._make_id(point, free, combo), self.points[point], key, combo, self)

    def state_writes(self, st: CrashState) -> StateWrites:
        pi = st.point.index
        writers = self._writers_cache.get(pi)
        if writers is None:
            if len(self._writers_cache) >= 8:
                self._writers_cache.pop(next(iter(self._writers_cache)))
            writers = self._writers_cache[pi] = _PointWriters(self, pi)
        return StateWrites(self, writers, dict(st.combo), ForcedView(self, pi))

    def overlay(self, st: CrashState) -> Overlay:
        return Overlay(self.base, self.state_writes(st), unit=self.sectorsize, nblocks=self.nblocks)


class _Cursor:
    """The forced contents at one crash point, advanced point by point: sector -> (seq, token)."""

    def __init__(self, space: CrashSpace) -> None:
        self.space = space
        self.point = -1
        self.forced: dict[int, tuple[int, int]] = {}
        self.hash = 0

    def advance(self, to: int) -> None:
        if to < self.point:
            raise ValueError("a cursor only moves forward")
        sp, forced = self.space, self.forced
        for pi in range(self.point + 1, to + 1):
            for i in sp._forced_at.get(pi, ()):
                w = sp.writes[i]
                for k in range(w.n):
                    s = w.s0 + k
                    f = forced.get(s)
                    if f is None:
                        old = sp._base_token(s)
                    elif f[0] > w.seq:
                        continue
                    else:
                        old = f[1]
                    forced[s] = (w.seq, w.tokens[k])
                    self.hash ^= old ^ w.tokens[k]
        self.point = to


def _exhaustive(rel: list[int], radices: list[int]) -> Iterator[tuple]:
    """Every choice over the relevant free writes, in a fixed order (all absent first)."""
    for digits in product(*(range(m) for m in reversed(radices))):
        digits = digits[::-1]
        yield tuple((p, c) for p, c in zip(rel, digits) if c)


# -- loading and prefixes ---------------------------------------------------------------------------

def load(log_path: str | os.PathLike, *, sidecar: bool | str = True, base=None, torn: bool = False,
         bound: int = DEFAULT_BOUND, seed: int = 0) -> CrashSpace:
    """Read a log and (unless sidecar=False) its `<log>.roles` sidecar when present, or the given path."""
    log = read_log(log_path)
    sc = None
    if sidecar:
        path = sidecar if isinstance(sidecar, str) else sidecar_path(log_path)
        if isinstance(sidecar, str) or os.path.exists(path):
            sc = read_sidecar(path)
    return CrashSpace(log, sc, base=base, torn=torn, bound=bound, seed=seed)


def check_discards(counts) -> None:
    """Discards are kept per sector (they read back as zeros): refuse a log whose discards cover
    more sectors than that can hold, before anything is allocated for them."""
    total = 0
    for n in counts:
        total += n
        if total > MAX_DISCARD_SECTORS:
            raise BlkError(f"the log's discards cover more than {MAX_DISCARD_SECTORS} sectors: too large to replay")


def check_nblocks(nblocks: int) -> None:
    if nblocks > MAX_NBLOCKS:
        raise BlkError(f"the log implies a device of {nblocks} blocks (at most {MAX_NBLOCKS}): too large to replay")


def replay_prefix(log: Log, entry_k: int) -> dict[int, object]:
    """Sectors written by entries 0..entry_k inclusive, in log order (what replay-log --limit K+1
    puts on the device); discards read back as zeros.  Keys are log sectors."""
    if not 0 <= entry_k < len(log.entries):
        raise BlkError(f"no entry {entry_k}: the log has {len(log.entries)} entries (0..{len(log.entries) - 1})")
    ss = log.sectorsize
    zero = bytes(ss)
    out: dict[int, object] = {}
    check_discards(e.nr_sectors for e in log.entries[:entry_k + 1] if e.is_discard)
    for e in log.entries[:entry_k + 1]:
        if e.has_data:
            for i in range(e.nr_sectors):
                out[e.sector + i] = e.data[i * ss:(i + 1) * ss]
        elif e.is_discard:
            for i in range(e.nr_sectors):
                out[e.sector + i] = zero
    return out


def prefix_overlay(log: Log, entry_k: int, base=None, *, nblocks: int | None = None) -> Overlay:
    """An Overlay of `base` after entries 0..entry_k.  Without a base: zeros, `nblocks` long (the
    sidecar records it) or else just long enough for the highest sector the log writes."""
    writes = replay_prefix(log, entry_k)
    per = BLOCK_SIZE // log.sectorsize
    hi = max((e.sector + e.nr_sectors for e in log.entries if e.has_data or e.is_discard), default=0)
    check_nblocks(nblocks or -(-hi // per))
    ov = Overlay(base, writes, unit=log.sectorsize, nblocks=None if base is not None else nblocks or -(-hi // per))
    written = max(writes, default=-1) + 1
    if written > ov.nblocks * per:
        raise BlkError(f"the log writes sector {written - 1}, past the end of the {ov.nblocks}-block "
                       + ("base image" if base is not None else "device"))
    return ov
