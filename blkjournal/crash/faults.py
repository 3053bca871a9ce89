"""Storage faults beyond lost and torn writes, layered on the crash states, and the oracle under them.

A volatile cache loses unflushed writes and tears multi-sector ones; the crash explorer covers
that exhaustively.  Real devices do worse (DESIGN §2; TigerBeetle's and FoundationDB's simulators,
the IRON file systems study): this module injects, one at a time, on top of a crash state S at
crash point p (S = the forced writes + a sampled choice of the free ones):

  misdirect   one 4 KiB block of a write W persisted in S lands at another block D of the device:
              the block it was meant for keeps what it held without W, D takes W's bytes (unless a
              later persisted write covers them).
  lost-write  one block of a write W that was acknowledged *and forced* at p (a flush completed
              after it, or it was FUA) never reached the medium: the block reads back as without W.
  bitrot      1-3 bits flipped in a block at rest (a block some write submitted before p wrote).
  read-error  a block returns EIO on every read until it is rewritten (a latent sector error).
  garbage     sectors of a block a *free* (unflushed) write was programming read back as random
              bytes rather than old or new data.

The oracle (DESIGN §2: nothing read from a device is trusted): the store may lose data it cannot
protect, but must never return wrong bytes as good, never crash, and must name the damage.  Each
injected fault is classified:

  harmless            nothing named, and every file reads back as the model after some op of p's window.
  detected            recovery, fsck or a file read named the damage (a BlkError or an fsck finding),
                      and every file that did read back without error is a legal version of itself.
  undetectable        a lost or misdirected write (or a rotted block, taken as the loss of the write
                      that put it there) whose faulted image equals a legal fault-free
                      crash image at the last crash point p' before W became durable on every block
                      the format gives meaning to there (below the data area, and every block a file
                      references or lists), the others being free in it, and what the store returns
                      is legal at p' -- a rollback no design can tell from an honest crash before W
                      without framing every data block or scanning free space (e.g. the lost last
                      commit record, with later uncommitted data written).  Nothing else counts.
  silent_corruptions  anything else returned as good: a file whose bytes match no legal version, a
                      file missing or resurrected with nothing named, a rollback past the window.
  crashed             the store raised something other than a named error (a traceback), or hung.

A read error that does not name the file and a block number is counted apart (`vague_errors`).

Base states that are illegal without any fault (possible under "none") are skipped and counted
(`base_illegal`): a fault's effect is only judged against a state the protocol gets right.

Sampling is seeded and bounded (`samples` per kind), so a 200-op run stays seconds; `coverage`
is the fraction of candidate (target, crash point) pairs injected: targets are visible writes
(misdirect: persisted in S; lost-write: forced; garbage: free) or blocks written before p (bitrot,
read-error).  `fault_at` pins the crash point (and optionally the block and the destination).
"""

from __future__ import annotations

import multiprocessing
import random
import re
import signal
import time
from dataclasses import asdict, dataclass, replace

from ..device import BLOCK_SIZE, BlockDevice, _check_extent
from ..errors import BlkError, DeviceReadError
from ..format import block_type
from ..fsck import fsck
from ..store import Store
from .check import model_kind, GLOBAL
from .workfile import load_workload
from .workload import MKFS_MARK, model_states, parse_mark

KINDS = ("misdirect", "lost-write", "bitrot", "read-error", "garbage")
WRITE_FAULTS = ("misdirect", "lost-write", "garbage")
DEFAULT_SAMPLES = 100  # per kind and run
CHECK_TIMEOUT = 60  # seconds: a check that takes longer is a hang, counted as crashed
MAX_EXAMPLES = 8  # per kind
OUTCOMES = ("silent_corruptions", "detected", "harmless", "undetectable", "crashed", "base_illegal")


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise BlkError(f"unknown fault kind {', '.join(bad) or repr(text)} (want some of {', '.join(KINDS)})")
    return tuple(dict.fromkeys(kinds))


def parse_fault_at(text: str | None) -> tuple[int, int | None, int | None] | None:
    """'P[:B[:D]]': crash point P, the block B the fault hits, and (misdirect) its destination D."""
    if text is None:
        return None
    try:
        parts = [int(x) for x in text.split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or any(x < 0 for x in parts):
        raise BlkError(f"bad --fault-at {text!r} (want POINT[:BLOCK[:DEST]], e.g. 120:37:52)")
    return parts[0], (parts[1] if len(parts) > 1 else None), (parts[2] if len(parts) > 2 else None)


@dataclass(frozen=True)
class Fault:
    """One injected fault: its kind, the crash state it sits on, and where it hits."""

    kind: str
    point: int
    combo: tuple  # the base crash state's choice over the point's free writes ((pos, 1), ...)
    block: int  # the block hit (misdirect: the block W was meant for)
    seq: int | None = None  # the write (by submission seq) for misdirect / lost-write / garbage
    dest: int | None = None  # misdirect: where W's block landed
    bits: tuple = ()  # bitrot: bit offsets flipped within the block
    sectors: tuple = ()  # garbage: sector indices within the block that read back as random bytes
    salt: int = 0  # garbage: seed of the random bytes

    def describe(self) -> str:
        at = f"at crash point {self.point}"
        if self.kind == "misdirect":
            return f"write seq {self.seq} for block {self.block} landed at block {self.dest} {at}"
        if self.kind == "lost-write":
            return f"write seq {self.seq} of block {self.block} lost after it was durable {at}"
        if self.kind == "bitrot":
            return f"{len(self.bits)} bit(s) flipped in block {self.block} {at}"
        if self.kind == "read-error":
            return f"block {self.block} returns EIO {at}"
        return f"sectors {list(self.sectors)} of block {self.block} (write seq {self.seq}) read back as garbage {at}"

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v not in (None, (), 0) or k in ("point", "block")}
        d["combo"] = [list(c) for c in self.combo]
        return d


class FaultyDevice(BlockDevice):
    """A device whose medium holds `patch` (block -> bytes) over `inner` and fails reads of `eio`.

    A block written (by recovery) reads back what was written, as a remapped sector would.
    """

    def __init__(self, inner: BlockDevice, patch: dict[int, bytes] | None = None, eio=()) -> None:
        self.inner = inner
        self.patch = dict(patch or {})
        self.eio = set(eio)
        self.nblocks = inner.nblocks
        self.logical_block_size = inner.logical_block_size
        self.counters = inner.counters

    def read(self, block: int, count: int = 1) -> bytes:
        _check_extent(self, block, count)
        for b in range(block, block + count):
            if b in self.eio:
                # what Device.read makes of the kernel's EIO (the store names it: read-error)
                raise DeviceReadError(f"block {b}: read-error: the device returned EIO")
        raw = self.inner.read(block, count)
        hit = [b for b in range(block, block + count) if b in self.patch]
        if not hit:
            return raw
        out = bytearray(raw)
        for b in hit:
            o = (b - block) * BLOCK_SIZE
            out[o:o + BLOCK_SIZE] = self.patch[b]
        return bytes(out)

    def write(self, block: int, data: bytes, *, fua: bool = False, role: str = "") -> None:
        self.inner.write(block, data, fua=fua, role=role)
        self._forget(block, len(data) // BLOCK_SIZE)

    def flush(self) -> None:
        self.inner.flush()

    def discard(self, block: int, count: int = 1, *, role: str = "") -> None:
        self.inner.discard(block, count, role=role)
        self._forget(block, count)

    def _forget(self, block: int, count: int) -> None:
        for b in range(block, block + count):
            self.patch.pop(b, None)
            self.eio.discard(b)


# ---------------------------------------------------------------- what the store shows
@dataclass
class Observation:
    """Recovery, fsck and a read of every file, none of them stopping at the first problem."""

    recovery_error: str | None = None
    findings: tuple = ()  # fsck findings "code: message"
    contents: dict | None = None  # files that read back without error
    read_errors: dict | None = None  # name -> the named error
    block_reads: dict | None = None  # name -> bytes read block by block, where not what `contents` says
    crashed: str | None = None

    @property
    def named(self) -> bool:
        return bool(self.recovery_error or self.findings or self.read_errors)

    @property
    def where(self) -> str:
        return "recovery" if self.recovery_error else "fsck" if self.findings else "read"


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout()


def observe(dev: BlockDevice) -> Observation:
    """What a user sees on `dev`: recover, fsck, read each file; anything but BlkError is a crash."""
    ob = Observation()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CHECK_TIMEOUT)
    try:
        try:
            st = Store.open(dev, recover=True)
        except BlkError as e:
            ob.recovery_error = str(e)
            return ob
        try:
            rep = fsck(dev)
            ob.findings = tuple(f"{f.code}: {f.message}" for f in rep.findings)
        except BlkError as e:
            ob.findings = (f"fsck: {e}",)
        ob.contents, ob.read_errors, ob.block_reads = {}, {}, {}
        for f in list(st.files.values()):
            try:
                ob.contents[f.name] = st.read_file(f)
            except BlkError as e:
                ob.read_errors[f.name] = str(e)
            got = _read_by_block(st, f)
            if got is not None and got != ob.contents.get(f.name):
                ob.block_reads[f.name] = got
    except _Timeout:
        ob.crashed = f"hung: no answer after {CHECK_TIMEOUT} s"
    except Exception as e:  # noqa: BLE001 -- the point: anything but a named error is a crash
        ob.crashed = f"{type(e).__name__}: {e}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return ob


def _read_by_block(st: Store, f) -> bytes | None:
    """File f read block by block -- a read within one block takes a path of its own -- or None
    if a read names an error.  What it returns as good is judged too (`acceptable`), so a path
    that skips a check cannot hide behind the whole read's error."""
    pieces = []
    for i in range(-(-f.size // BLOCK_SIZE)):
        try:
            pieces.append(st.read_file(f, i * BLOCK_SIZE, BLOCK_SIZE))
        except BlkError:
            return None
    return b"".join(pieces)


def acceptable(ob: Observation, models: list[dict], ks: range, kind: str) -> tuple[bool, str]:
    """Does every file that read back as good equal a legal version (per `kind`) in window ks?

    Files named as damaged are excused; files missing altogether are excused only if the damage
    was named somewhere (recovery, fsck or a read).
    """
    if ob.contents is None:
        return True, ""  # recovery refused with a named error: nothing returned as good
    if ob.block_reads:  # both what the whole reads and what the block reads returned must be legal
        ok, why = acceptable(replace(ob, block_reads=None), models, ks, kind)
        if not ok:
            return ok, why
        # (the whole read's errors stay named: they name the damage, whichever path returned bytes)
        return acceptable(replace(ob, contents={**ob.contents, **ob.block_reads}, block_reads=None), models, ks, kind)
    good, lost, named = ob.contents, set(ob.read_errors or ()), ob.named
    if not len(ks):
        return False, "no legal model at this crash point"
    if kind == GLOBAL:
        for k in reversed(ks):
            m = models[k]
            if all(m.get(n) == v for n, v in good.items()) and (named or set(m) <= set(good) | lost):
                return True, ""
        return False, _first_bad(good, lost, named, models, ks)
    for n, v in sorted(good.items()):
        if not any(models[k].get(n) == v for k in ks):
            return False, _file_reason(n, v, models, ks)
    if not named:
        for n in sorted({n for k in ks for n in models[k]} - set(good) - lost):
            if all(n in models[k] for k in ks):
                return False, f"file {n!r} missing, with nothing named, though it exists after every op {ks.start}..{ks.stop - 1}"
    return True, ""


def _file_reason(n, v, models, ks) -> str:
    if all(n not in models[k] for k in ks):
        return f"file {n!r} read back ({len(v)} bytes) but absent after every op {ks.start}..{ks.stop - 1}"
    older = [k for k in range(ks.start) if models[k].get(n) == v]
    if older:
        return f"file {n!r} read back as it was after op {older[-1] - 1} (rolled back past the window {ks.start}..{ks.stop - 1})"
    return f"file {n!r} read back as good with bytes that match no version of it in ops {ks.start}..{ks.stop - 1}"


def _first_bad(good, lost, named, models, ks) -> str:
    m = models[ks.stop - 1]
    for n in sorted(set(good) | set(m)):
        if n in good and all(models[k].get(n) != good[n] for k in ks):
            return _file_reason(n, good[n], models, ks)
    for n in sorted(set(m) - set(good) - lost):
        if not named:
            return f"file {n!r} missing, with nothing named"
    return f"the files read back as good match no single op {ks.start}..{ks.stop - 1} together"


# ---------------------------------------------------------------- the plan
class FaultSpace:
    """Per-run indexes over a CrashSpace the fault sampler and the injector need."""

    @classmethod
    def from_log(cls, log_path: str, ops=None) -> "FaultSpace":
        """The crash points after mkfs of a recorded run (as explore_log takes them)."""
        from .states import load

        space = load(log_path)
        ops = ops if ops is not None else (load_workload(log_path) or {}).get("ops")
        if ops is None:
            raise BlkError(f"{log_path}: no workload file beside the log")
        start = next(p.index for p in space.points if p.last_mark == MKFS_MARK)
        return cls(space, ops, start, [p.index for p in space.points
                                       if p.index >= start and p.last_mark != "dm-log-writes-end"])

    def __init__(self, space, ops, start: int, points: list[int]) -> None:
        self.space, self.start, self.points = space, start, points
        self.ss = space.sectorsize
        self.spb = BLOCK_SIZE // self.ss
        self.models = model_states(ops)
        self.nops = len(ops)
        sd, last = [0], 0
        for j, op in enumerate(ops):
            if op.kind == "sync":
                last = j + 1
            sd.append(last)
        self.sync_done = sd
        self.by_seq = {w.seq: w for w in space.writes}
        self.by_sector: dict[int, list] = {}  # sector -> writes touching it, submission order
        for w in space.writes:
            for s in range(w.s0, w.s0 + w.n):
                self.by_sector.setdefault(s, []).append(w)
        self.sub_point: dict[int, int] = {}  # seq -> first crash point at which it is submitted
        for p in space.points:
            if p.op is not None and p.op.is_write:
                self.sub_point.setdefault(p.op.seq, p.index)
        self.types: dict[int, dict[int, int]] = {}  # metadata type -> {block: first point it held one}
        for w in space.writes:
            if w.op.kind == "discard":
                continue
            for b in self.blocks_of(w):
                raw = self.write_block(w, b)
                t = block_type(raw) if raw is not None else None
                if t is not None:
                    self.types.setdefault(t, {}).setdefault(b, self.sub_point.get(w.seq, 0))

    def role_at(self, b: int, pi: int) -> str:
        """Who last wrote block b by crash point pi (the sidecar's role), for reports."""
        ws = [w for s in range(b * self.spb, (b + 1) * self.spb) for w in self.by_sector.get(s, ())
              if self.sub_point.get(w.seq, 1 << 60) <= pi]
        return max(ws, key=lambda w: w.seq).op.role if ws else "never written"

    def blocks_of(self, w) -> range:
        return range(w.s0 // self.spb, (w.s0 + w.n - 1) // self.spb + 1)

    def write_block(self, w, b: int) -> bytes | None:
        """W's bytes for block b when it covers the whole block."""
        s0 = b * self.spb
        if w.s0 > s0 or w.s0 + w.n < s0 + self.spb:
            return None
        return b"".join(bytes(w.chunks[s - w.s0]) for s in range(s0, s0 + self.spb))

    def window(self, pi: int) -> range:
        if pi < self.start:
            return range(0)
        lm = self.space.points[pi].last_mark
        k = parse_mark(lm) if lm else None
        done = 0 if k is None else k + 1
        return range(self.sync_done[done], min(done + 1, self.nops) + 1)

    # candidates at a crash point
    def visible(self, w, pi: int) -> bool:
        return w.dead > pi

    def forced(self, pi: int) -> list:
        return [w for w in self.space.writes if w.forced <= pi and w.dead > pi and w.op.kind != "discard"]

    def free(self, pi: int) -> list:
        return [w for w in self.space.free_writes(pi) if w.dead > pi and w.op.kind != "discard"]

    def written_blocks(self, pi: int) -> list[int]:
        out = set()
        for w in self.space.writes:
            if self.sub_point.get(w.seq, 1 << 60) <= pi:
                out.update(self.blocks_of(w))
        return sorted(out)

    def candidates_total(self, kind: str) -> int:
        """Sum over crash points of the candidate targets (see the module docstring)."""
        n = 0
        pts = set(self.points)
        diff: dict[int, int] = {}
        if kind in ("lost-write", "misdirect"):
            for w in self.space.writes:
                if w.forced < (1 << 62) and w.op.kind != "discard":
                    diff[w.forced] = diff.get(w.forced, 0) + 1
                    diff[w.dead] = diff.get(w.dead, 0) - 1
            run = 0
            for pi in range(len(self.space.points)):
                run += diff.get(pi, 0)
                if pi in pts:
                    n += run
        if kind in ("garbage", "misdirect"):
            n += sum(len(self.free(pi)) for pi in self.points)
        if kind in ("bitrot", "read-error"):
            first: dict[int, int] = {}
            for w in self.space.writes:
                sp = self.sub_point.get(w.seq)
                if sp is not None:
                    for b in self.blocks_of(w):
                        first[b] = min(first.get(b, sp), sp)
            starts = sorted(first.values())
            import bisect

            n = sum(bisect.bisect_right(starts, pi) for pi in self.points)
        return n

    # the images
    def persisted(self, pi: int, combo) -> set[int]:
        free = self.space.free_writes(pi)
        return {free[pos].seq for pos, c in combo if c}

    def sector_in(self, s: int, pi: int, chosen: set[int], skip: int | None = None, extra=None) -> bytes:
        """Sector s of the state (point pi, free writes `chosen`), without write `skip`, with
        `extra` = (seq, payload) taking part as if written at that seq."""
        best, best_seq = None, -1
        for w in reversed(self.by_sector.get(s, ())):
            if w.seq == skip:
                continue
            if w.forced <= pi or w.seq in chosen:
                best, best_seq = w.chunks[s - w.s0], w.seq
                break
        if extra is not None and extra[0] > best_seq:
            return bytes(extra[1])
        if best is None:
            return self.space.base.read(s * self.ss, self.ss)
        return bytes(best)

    def block_in(self, b: int, pi: int, chosen: set[int], skip: int | None = None, src=None) -> bytes:
        """Block b of the state, without write `skip`; `src` = (write, source block) lands here."""
        out = []
        for i in range(self.spb):
            extra = None
            if src is not None:
                w, sb_ = src
                ss = sb_ * self.spb + i
                if w.s0 <= ss < w.s0 + w.n:
                    extra = (w.seq, w.chunks[ss - w.s0])
            out.append(self.sector_in(b * self.spb + i, pi, chosen, skip, extra))
        return b"".join(out)


def _sample_combo(rng: random.Random, free: list) -> tuple:
    r = rng.random()
    if r < 0.4:
        return tuple((pos, 1) for pos in range(len(free)))  # an in-order disk: nothing lost
    if r < 0.6:
        return ()  # only what was forced
    return tuple((pos, 1) for pos in range(len(free)) if rng.random() < 0.5)


def plan(fs: FaultSpace, kind: str, samples: int, seed: int, fault_at=None) -> list[Fault]:
    """Up to `samples` distinct faults of one kind, seeded; `fault_at` pins point/block/dest."""
    rng = random.Random(f"faults:{seed}:{kind}")
    points = fs.points
    if fault_at is not None:
        if fault_at[0] not in set(points):
            raise BlkError(f"--fault-at: no crash point {fault_at[0]} after mkfs "
                           f"(points {points[0]}..{points[-1]})" if points else "--fault-at: no crash points")
        points = [fault_at[0]]
    want_block = fault_at[1] if fault_at else None
    want_dest = fault_at[2] if fault_at else None
    if want_block is not None and not 0 <= want_block < fs.space.nblocks:
        raise BlkError(f"--fault-at: block {want_block} outside the device ({fs.space.nblocks} blocks)")
    if want_dest is not None and not 0 <= want_dest < fs.space.nblocks:
        raise BlkError(f"--fault-at: destination {want_dest} outside the device ({fs.space.nblocks} blocks)")
    out, seen = [], set()
    for _ in range(samples * 8):
        if len(out) >= samples or not points:
            break
        pi = rng.choice(points)
        free_all = fs.space.free_writes(pi)
        combo = _sample_combo(rng, free_all)
        chosen = {free_all[pos].seq for pos, _ in combo}
        f = _one(fs, kind, rng, pi, combo, chosen, want_block, want_dest)
        if f is None:
            continue
        key = (f.kind, f.point, f.block, f.seq, f.dest, f.bits, f.sectors, f.combo)
        if key in seen:
            continue
        seen.add(key)
        out.append(f)
    return out


def _one(fs: FaultSpace, kind, rng, pi, combo, chosen, want_block, want_dest) -> Fault | None:
    nb = fs.space.nblocks
    if kind in WRITE_FAULTS:
        if kind == "lost-write":
            cands = fs.forced(pi)
        elif kind == "garbage":
            cands = fs.free(pi)
        else:
            cands = [w for w in fs.forced(pi) + fs.free(pi) if w.forced <= pi or w.seq in chosen]
        pairs = [(w, b) for w in cands for b in fs.blocks_of(w)
                 if (want_block is None or b == want_block) and fs.write_block(w, b) is not None]
        if want_block is not None and pairs:
            pairs = [max(pairs, key=lambda x: x[0].seq)]  # the newest such write to that block
        if not pairs:
            return None
        w, b = rng.choice(pairs)
        if kind == "lost-write":
            return Fault(kind, pi, combo, b, w.seq)
        if kind == "garbage":
            i = rng.randrange(fs.spb)
            j = rng.randrange(i, fs.spb)
            return Fault(kind, pi, combo, b, w.seq, sectors=tuple(range(i, j + 1)), salt=rng.getrandbits(32))
        dest = want_dest
        if dest is None:
            r = rng.random()
            t = block_type(fs.write_block(w, b))
            same = [d for d, fp in fs.types.get(t, {}).items() if fp <= pi and d != b] if t else []
            if same and r < 0.5:
                dest = rng.choice(sorted(same))
            elif r < 0.75:
                dest = b + rng.choice((-1, 1))
            else:
                dest = rng.randrange(nb)
        if not 0 <= dest < nb or dest in fs.blocks_of(w):  # within W itself: not a misdirection
            return None
        return Fault(kind, pi, combo, b, w.seq, dest=dest)
    blocks = [want_block] if want_block is not None else fs.written_blocks(pi)
    if not blocks:
        return None
    b = rng.choice(blocks)
    if kind == "bitrot":
        bits = tuple(sorted(rng.sample(range(BLOCK_SIZE * 8), rng.randint(1, 3))))
        return Fault(kind, pi, combo, b, bits=bits)
    return Fault(kind, pi, combo, b)


def inject(fs: FaultSpace, f: Fault) -> FaultyDevice:
    """The crash state with the fault applied, as a fresh device."""
    st = fs.space.state_from_combo(f.point, f.combo)
    ov = st.overlay()
    chosen = fs.persisted(f.point, f.combo)
    if f.kind == "read-error":
        return FaultyDevice(ov, eio=[f.block])
    if f.kind == "bitrot":
        raw = bytearray(ov.read(f.block))
        for bit in f.bits:
            raw[bit >> 3] ^= 1 << (bit & 7)
        return FaultyDevice(ov, {f.block: bytes(raw)})
    w = fs.by_seq[f.seq]
    if f.kind == "lost-write":
        return FaultyDevice(ov, {f.block: fs.block_in(f.block, f.point, chosen, skip=f.seq)})
    if f.kind == "misdirect":
        return FaultyDevice(ov, {f.block: fs.block_in(f.block, f.point, chosen, skip=f.seq),
                                 f.dest: fs.block_in(f.dest, f.point, chosen, skip=f.seq, src=(w, f.block))})
    # garbage: the chosen sectors read as random bytes unless a later persisted write covers them
    junk = random.Random(f.salt)
    raw = bytearray(ov.read(f.block))
    for i in f.sectors:
        s = f.block * fs.spb + i
        if not any(x.seq > f.seq and (x.forced <= f.point or x.seq in chosen) for x in fs.by_sector.get(s, ())):
            raw[i * fs.ss:(i + 1) * fs.ss] = junk.randbytes(fs.ss)
    return FaultyDevice(ov, {f.block: bytes(raw)})


def _writer(fs: FaultSpace, f: Fault, block: int) -> int | None:
    """The write persisted in f's base state that put `block` there whole (its newest write on
    every sector), or None if its sectors came from several writes or from none."""
    chosen = fs.persisted(f.point, f.combo)
    newest = set()
    for i in range(fs.spb):
        ws = [w for w in fs.by_sector.get(block * fs.spb + i, ()) if w.forced <= f.point or w.seq in chosen]
        if not ws:
            return None
        newest.add(ws[-1].seq)
    return newest.pop() if len(newest) == 1 else None


def lost_sets(fs: FaultSpace, f: Fault) -> list[frozenset]:
    """The writes whose loss alone would leave, to any reader, what the fault leaves: a lost
    write W is W; a write misdirected from B to D is W, or W and the write D held (D now holds
    bytes meant for B, which for raw user data nothing can tell from junk in a block whose write
    never arrived); a rotted block is the write that put it there (raw data failing the crc its
    pointer holds is exactly what that loss leaves).  Read errors and garbage have none: the
    store sees them as what they are."""
    if f.kind == "lost-write":
        return [frozenset({f.seq})]
    if f.kind == "misdirect":
        d = _writer(fs, f, f.dest)
        return [frozenset({f.seq})] + ([frozenset({f.seq, d})] if d is not None and d != f.seq else [])
    if f.kind == "bitrot":
        w = _writer(fs, f, f.block)
        return [frozenset({w})] if w is not None else []
    return []


def rollback_point(fs: FaultSpace, f: Fault, lost: frozenset) -> tuple[int, tuple] | None:
    """The last crash point p' before every write in `lost` was durable, and the choice there
    that keeps what f's base state persisted except them.  None when there is no such point."""
    p2 = min(f.point if fs.by_seq[s].forced > f.point else fs.by_seq[s].forced - 1 for s in lost)
    if p2 < fs.start:
        return None
    chosen = fs.persisted(f.point, f.combo)
    free = fs.space.free_writes(p2)
    combo = tuple((pos, 1) for pos, x in enumerate(free)
                  if x.seq not in lost and (x.forced <= f.point or x.seq in chosen))
    return p2, combo


def differing_blocks(a: BlockDevice, b: BlockDevice) -> list[int]:
    """The blocks where two images differ."""
    step, out = 64, []
    for blk in range(0, a.nblocks, step):
        n = min(step, a.nblocks - blk)
        ra, rb = a.read(blk, n), b.read(blk, n)
        if ra != rb:
            out += [blk + i for i in range(n) if ra[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE] != rb[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]]
    return out


def meaningful_blocks(dev: BlockDevice) -> set[int] | None:
    """The blocks the store's format gives meaning to in the (legal, fault-free) image `dev`: every
    block below the data area (superblock, journal, object map, bitmap) and every block a file
    references or lists (origin slots, used-list chain and entries, map nodes, data), as recovery
    (not written back) leaves them.  None if the image does not open."""
    try:
        return Store.open(dev, recover=False).owned_blocks()
    except BlkError:
        return None


def rollback_equivalent(fs: FaultSpace, f: Fault, faulted: BlockDevice, honest: BlockDevice,
                        lost: frozenset = frozenset()) -> str | None:
    """Why the faulted image is, to any design, the legal crash image `honest` (or None): equal on
    every block the format gives meaning to there; the blocks that differ are free in it (user
    data is stored raw and free space is never read at recovery), docs/faults.md.

    A block where the faulted image holds exactly what one of the `lost` writes wrote there is no
    difference either: a multi-block write lost in part (one block of a transaction) leaves what
    an honest crash leaves when it tears that write, keeping its other blocks -- a volatile cache
    makes no request atomic (the explorer's --torn states)."""
    diff = [b for b in differing_blocks(faulted, honest) if not _as_lost_wrote(fs, lost, b, faulted.read(b))]
    if not diff:
        return "the image is byte for byte"
    meant = meaningful_blocks(honest)
    if meant is None or meant.intersection(diff):
        return None
    return f"the image differs only in blocks free there ({len(diff)}: {', '.join(map(str, diff[:6]))}" \
           f"{' ...' if len(diff) > 6 else ''}), else it is"


def _as_lost_wrote(fs: FaultSpace, lost: frozenset, b: int, raw: bytes) -> bool:
    """Is `raw` block b exactly as one of the writes `lost` wrote it (covering the whole block)?"""
    first = b * fs.spb
    for seq in lost:
        w = fs.by_seq[seq]
        if w.s0 <= first and first + fs.spb <= w.s0 + w.n and w.chunks:
            if b"".join(w.chunks[first - w.s0:first - w.s0 + fs.spb]) == raw:
                return True
    return False


# ---------------------------------------------------------------- checking
_FCTX: dict = {}


def _check(i: int) -> dict:
    return {"i": i, **judge_fault(_FCTX["fs"], _FCTX["plan"][i], _FCTX["kind"], _FCTX["base"])}


def judge_fault(fs: FaultSpace, f: Fault, kind: str, cache: dict | None = None) -> dict:
    """Inject f, observe the store, classify: {"outcome", "reason", "where", "codes"}.

    `kind` is the protocol's model kind (check.model_kind); `cache` remembers which base states
    are legal without the fault."""
    row: dict = {}
    cache = {} if cache is None else cache
    base_key = (f.point, f.combo)
    if base_key not in cache:
        ob = observe(fs.space.state_from_combo(f.point, f.combo).overlay())
        cache[base_key] = not ob.crashed and not ob.named and acceptable(ob, fs.models, fs.window(f.point), kind)[0]
    if not cache[base_key]:
        row["outcome"] = "base_illegal"
        return row
    ob = observe(inject(fs, f))
    row["where"] = ob.where if ob.named else None
    row["vague"] = any(n not in m or not re.search(r"block \d+", m) for n, m in (ob.read_errors or {}).items())
    row["codes"] = sorted({x.split(":")[0] for x in ob.findings})
    if ob.crashed:
        row.update(outcome="crashed", reason=ob.crashed)
        return row
    ok, reason = acceptable(ob, fs.models, fs.window(f.point), kind)
    if ok:
        row["outcome"] = "detected" if ob.named else "harmless"
        if ob.named:
            row["reason"] = (ob.recovery_error or (ob.findings[0] if ob.findings else
                             next(iter(ob.read_errors.values()))))
        return row
    for lost in lost_sets(fs, f):
        rb = rollback_point(fs, f, lost)
        if rb is None:
            continue
        p2, combo2 = rb
        honest = fs.space.state_from_combo(p2, combo2).overlay()
        how = rollback_equivalent(fs, f, inject(fs, f), honest, lost)
        if how and acceptable(ob, fs.models, fs.window(p2), kind)[0]:
            seqs = " and ".join(map(str, sorted(lost)))
            row.update(outcome="undetectable",
                       reason=f"{how} a legal fault-free crash state at point {p2} "
                              f"(before write seq {seqs} was durable)")
            return row
    row.update(outcome="silent_corruptions", reason=reason)
    return row


def explore_faults(space, ops, protocol: str, *, kinds, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                   jobs: int = 1, fault_at=None, start: int, points: list[int]) -> dict:
    """Inject each kind of fault `samples` times (seeded), check each, and tally the outcomes."""
    if ops is None:
        raise BlkError("--faults needs the workload (the model) to judge what the store returns")
    if samples < 1:
        raise BlkError("--fault-samples must be at least 1")
    t0 = time.monotonic()
    fs = FaultSpace(space, ops, start, points)
    out = {"kinds": list(kinds), "samples_per_kind": samples, "seed": seed, "fault_at": fault_at,
           "injected": 0, "candidates": 0, **{k: 0 for k in OUTCOMES}, "vague_errors": 0, "by_kind": {}, "detected_by": {},
           "findings": {}, "examples": [], "notes": []}
    for kind in kinds:
        faults = plan(fs, kind, samples, seed, fault_at)
        if not faults:
            at = ":".join(str(x) for x in fault_at if x is not None) if fault_at else None
            out["notes"].append(f"{kind}: no candidate target" + (f" at --fault-at {at}" if at else ""))
        rows = _run(fs, faults, model_kind(protocol), jobs)
        shown = 0
        cands = fs.candidates_total(kind)
        pairs = {(f.point, f.block, f.seq) for f in faults}
        k = {"injected": len(faults), "candidates": cands,
             "coverage": round(len(pairs) / cands, 6) if cands else 1.0, **{o: 0 for o in OUTCOMES}}
        k["vague_errors"] = 0
        for r in rows:
            k[r["outcome"]] += 1
            k["vague_errors"] += bool(r.get("vague"))
            if r.get("where"):
                out["detected_by"][r["where"]] = out["detected_by"].get(r["where"], 0) + 1
            for c in r.get("codes", ()):
                out["findings"][c] = out["findings"].get(c, 0) + 1
            if r["outcome"] in ("silent_corruptions", "crashed", "undetectable") and shown < MAX_EXAMPLES:
                shown += 1
                f = faults[r["i"]]
                role = fs.by_seq[f.seq].op.role if f.seq is not None else fs.role_at(f.block, f.point)
                out["examples"].append({"outcome": r["outcome"], "fault": f.describe(), "role": role,
                                        "reason": r.get("reason", ""), **f.to_json()})
        out["by_kind"][kind] = k
        out["injected"] += k["injected"]
        out["candidates"] += cands
        for o in OUTCOMES + ("vague_errors",):
            out[o] += k[o]
    out["coverage"] = round(sum(v["injected"] for v in out["by_kind"].values()) / out["candidates"], 6) \
        if out["candidates"] else 1.0
    out["seconds"] = round(time.monotonic() - t0, 2)
    return out


def _run(fs: FaultSpace, faults: list[Fault], kind: str, jobs: int) -> list[dict]:
    _FCTX.clear()
    _FCTX.update(fs=fs, plan=faults, kind=kind, base={})
    if jobs <= 1 or len(faults) < 8:
        return [_check(i) for i in range(len(faults))]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return list(pool.imap(_check, range(len(faults)), chunksize=4))


def print_summary(fx: dict, out=None) -> None:
    """The fault half of a crashtest report, one line per kind."""
    from rich.console import Console
    from rich.markup import escape

    con = Console(file=out, highlight=False)
    sc = fx["silent_corruptions"]
    con.print(f"faults: {fx['injected']} injected of {fx['candidates']} candidate (target, crash point) pairs "
              f"(coverage {fx['coverage']:.4f}), {fx['seconds']} s: "
              + (f"[red]{sc} silent corruptions[/]" if sc else "[green]0 silent corruptions[/]")
              + f", {fx['detected']} detected, {fx['harmless']} harmless, {fx['undetectable']} undetectable"
              + (f", [red]{fx['crashed']} crashed[/]" if fx["crashed"] else "")
              + (f", {fx['base_illegal']} on illegal base states (skipped)" if fx["base_illegal"] else "")
              + (f", {fx['vague_errors']} read errors not naming the file and block" if fx["vague_errors"] else ""))
    for kind, k in fx["by_kind"].items():
        con.print(f"  {kind:11} {k['injected']:5} injected  silent {k['silent_corruptions']:4}  detected "
                  f"{k['detected']:4}  harmless {k['harmless']:4}  undetectable {k['undetectable']:4}  "
                  f"crashed {k['crashed']:4}  coverage {k['coverage']:.4f}")
    for note in fx.get("notes", ()):
        con.print(f"  note: {escape(note)}")
    for ex in fx["examples"][:5]:
        con.print(f"  [red]{ex['outcome']}[/]: {escape(ex['fault'])} ({escape(ex['role'])}): {escape(ex['reason'])}")
