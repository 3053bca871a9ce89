"""`hwcheck verify`: after the power cut, hold every block of the region against the acks log.

Per block b, with A = its newest acked generation (0 if none) and S = the generations submitted
for it (intents), each atomic unit (the device's logical block: 512 B or 4 KiB) of the block
read back is one *source*: a generation of this run, zeros, a previous run's record (stale),
foreign bytes (garbage), or -- when the sectors of one unit disagree -- torn.  A source is
*allowed* when it is A, or a submitted generation newer than A (written but unacked), or, for a
never-acked block, whatever was there before the run.

    intact        the whole block is generation A
    unacked       a submitted-but-unacked generation, or an unacked write that did not land
    untouched     never submitted, still holds what it held before the run
    torn-inflight units from different allowed sources: an unacked write torn at a unit
                  boundary, which the block model allows
  violations:
    lost          acked, but the block is an older generation, zeros, stale or garbage
    torn          sectors of one atomic unit disagree, or an acked write is only partly there
    misplaced     a record of another block or position, or a generation never submitted
    ordering      a write submitted after a barrier completed is on disk while a write that
                  barrier acked is lost: the disk reordered across a flush

The ordering check leans on the acks log's line order (acklog.py): an intent logged after an
ack was submitted after that ack's barrier completed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..device import BLOCK_SIZE, Device
from ..errors import BlkError
from .acklog import RunLog
from .record import CORRUPT, FOREIGN, SECTOR, SECTORS, ZERO, read_sector

INTACT, UNACKED, UNTOUCHED, TORN_INFLIGHT = "intact", "unacked", "untouched", "torn-inflight"
LOST, TORN, MISPLACED, ORDERING = "lost", "torn", "misplaced", "ordering"
ALLOWED = (INTACT, UNACKED, UNTOUCHED, TORN_INFLIGHT)
VIOLATIONS = (LOST, TORN, MISPLACED, ORDERING)
CHUNK = 256  # blocks per read

# Loss histogram: age of the lost ack, seconds before the cut (the last ack in the log).
AGE_EDGES = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class Finding:
    """The verdict on one block."""

    block: int
    kind: str
    detail: str
    acked_gen: int  # 0 = never acked
    seen: tuple[str, ...]  # what each atomic unit holds
    ack_age_s: float | None = None  # seconds between its ack and the cut
    gens: tuple[int, ...] = ()  # generations of this run present in the block

    def to_json(self) -> dict:
        d = asdict(self)
        d["seen"] = list(self.seen)
        d["gens"] = list(self.gens)
        return d


@dataclass(frozen=True)
class Bucket:
    label: str
    acked: int  # blocks whose newest ack falls in this age range
    lost: int  # of those, lost or torn


@dataclass
class Report:
    log: RunLog
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in ALLOWED + VIOLATIONS})
    findings: list[Finding] = field(default_factory=list)  # violations and torn-inflight, by block
    histogram: list[Bucket] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return sum(self.counts[k] for k in VIOLATIONS)

    @property
    def acked_blocks(self) -> int:
        return sum(1 for b in self.log.acked if b in self.log.header.blocks)

    @property
    def verdict(self) -> str:
        if self.violations:
            return "lies"
        return "honest" if self.acked_blocks else "inconclusive"

    @property
    def exit_code(self) -> int:
        return {"honest": 0, "lies": 1, "inconclusive": 2}[self.verdict]

    def verdict_line(self) -> str:
        c = self.counts
        if self.verdict == "lies":
            return (f"lies: {c[LOST] + c[TORN]} acked writes lost ({c[LOST]} whole, {c[TORN]} torn), "
                    f"{c[ORDERING]} ordering violations, {c[MISPLACED]} misplaced "
                    f"(of {self.acked_blocks} acked blocks)")
        if self.verdict == "inconclusive":
            return "inconclusive: no write was acked before the cut, so there is nothing to hold the disk to"
        return (f"honest: {c[INTACT]} acked writes intact, {c[UNACKED]} written but unacked (allowed), "
                f"{c[TORN_INFLIGHT]} torn in flight (allowed)")

    def to_json(self) -> dict:
        h = self.log.header
        return {
            "verdict": self.verdict,
            "summary": self.verdict_line(),
            "run": f"{h.run:016x}",
            "device": h.device,
            "region": [h.start, h.length],
            "barrier": h.barrier,
            "threads": h.threads,
            "batch": h.batch,
            "atomic": h.atomic,
            "preflight": h.preflight,
            "acked_blocks": self.acked_blocks,
            "acks": self.log.acks,
            "cut_time_ns": self.log.last_ack_ns,
            "ended": self.log.end,
            "log_torn_tail": self.log.torn_tail,
            "counts": dict(self.counts),
            "histogram": [asdict(b) for b in self.histogram],
            "findings": [f.to_json() for f in self.findings],
        }


PRE_RUN = ("zero", "garbage", "stale")  # what a block may hold from before the run


def _sector_source(data: bytes, i: int, block: int, run: int) -> tuple:
    s = read_sector(data, i)
    if s.kind == ZERO:
        return ("zero",)
    if s.kind == FOREIGN or (s.kind == CORRUPT and s.run != run):
        return ("garbage",)  # not ours, or a damaged sector of an earlier run: old content
    if s.kind == CORRUPT:
        return ("corrupt",)  # this run's sector, torn inside itself
    if s.run != run:
        return ("stale", s.run)
    if s.block != block or s.index != i:
        return ("misplaced", s.block, s.gen, s.index)
    return ("gen", s.gen)


def _sources(data: bytes, block: int, run: int, atomic: int) -> list[tuple]:
    """What each atomic unit of a block holds, as a hashable source tuple.

    A unit is one source when all its sectors agree.  Sectors that disagree but all predate the run
    (zeros next to an old file system's bytes) are just old content, "garbage"; any other
    disagreement is ("torn-unit", sector sources): the device tore inside its atomic unit.
    """
    per_unit = max(1, min(SECTORS, atomic // SECTOR))
    out = []
    for u in range(0, SECTORS, per_unit):
        srcs = [_sector_source(data, i, block, run) for i in range(u, u + per_unit)]
        distinct = set(srcs)
        if len(distinct) == 1 and ("corrupt",) not in distinct:
            out.append(srcs[0])
        elif all(s[0] in PRE_RUN for s in distinct):
            out.append(("garbage",))
        else:
            out.append(("torn-unit", tuple(srcs)))
    return out


def runs_text(labels) -> str:
    """'zeros' for a uniform list, 'gen 2 x3, gen 1 x5' otherwise."""
    runs: list[list] = []
    for s in labels:
        if runs and runs[-1][0] == s:
            runs[-1][1] += 1
        else:
            runs.append([s, 1])
    return ", ".join(s if n == 1 else f"{s} x{n}" for s, n in runs)


def _label(src: tuple) -> str:
    kind = src[0]
    if kind == "gen":
        return f"gen {src[1]}"
    if kind == "stale":
        return f"stale (run {src[1]:016x})"
    if kind == "misplaced":
        return f"block {src[1]} gen {src[2]} sector {src[3]}"
    if kind == "torn-unit":
        return f"torn unit ({runs_text(_label(s) for s in src[1])})"
    return {"zero": "zeros", "corrupt": "corrupt sector"}.get(kind, kind)


def classify(data: bytes | None, block: int, log: RunLog) -> Finding:
    """The verdict on one block read back (None = the read failed), before the ordering pass."""
    h = log.header
    ack = log.acked.get(block)
    a = ack.gen if ack else 0
    submitted = log.submitted(block)
    age = None if ack is None or log.last_ack_ns is None else (log.last_ack_ns - ack.time_ns) / 1e9
    units = [("unreadable",)] if data is None else _sources(data, block, h.run, h.atomic)
    seen = tuple(_label(s) for s in units)
    gens = tuple(sorted({s[1] for s in units if s[0] == "gen"}))

    def allowed(src: tuple) -> bool:
        if src[0] == "gen":
            return src[1] == a or (src[1] > a and src[1] in submitted)
        return a == 0 and (src[0] in PRE_RUN or src[0] == "unreadable")  # before the run / in flight

    def finding(kind: str, detail: str) -> Finding:
        return Finding(block, kind, detail, a, seen, age, gens)

    for src in units:
        if src[0] == "torn-unit":
            return finding(TORN, f"sectors disagree inside an atomic unit of {h.atomic} bytes")
    for src in units:
        if src[0] == "misplaced":
            return finding(MISPLACED, f"holds {_label(src)}")
        if src[0] == "gen" and src[1] != a and src[1] not in submitted:
            return finding(MISPLACED, f"holds generation {src[1]}, which was never submitted")
    distinct = set(units)
    if len(distinct) > 1:
        ok = [s for s in distinct if allowed(s)]
        if len(ok) == len(distinct):
            if gens:
                return finding(TORN_INFLIGHT, f"unacked write torn at {h.atomic}-byte units")
            return finding(UNACKED if submitted else UNTOUCHED, "")  # old content, nothing landed
        if a and any(s[0] == "gen" for s in ok):
            return finding(TORN, f"acked generation {a} only partly on disk")
        return finding(LOST, f"{runs_text(seen)} instead of acked generation {a}")
    src = units[0]
    if a and src == ("gen", a):
        return finding(INTACT, "")
    if allowed(src):
        return finding(UNACKED if src[0] == "gen" or submitted else UNTOUCHED, "")
    if src[0] == "gen":
        return finding(LOST, f"older generation {src[1]} instead of acked {a}")
    return finding(LOST, f"{_label(src)} instead of acked generation {a}")


def _ordering_pass(findings: list[Finding], log: RunLog) -> list[Finding]:
    """Relabel surviving writes submitted after a barrier whose acked write is lost."""
    damaged = [f for f in findings if f.kind in (LOST, TORN) and f.acked_gen]
    if not damaged:
        return findings
    first = min(damaged, key=lambda f: log.acked[f.block].ordinal)
    cutoff = log.acked[first.block].ordinal
    out = []
    for f in findings:
        if f.kind in (INTACT, UNACKED, TORN_INFLIGHT):
            late = [g for g in f.gens if (log.intent(f.block, g) or -1) > cutoff]
            if late:
                f = Finding(f.block, ORDERING,
                            f"generation {max(late)} was submitted after the barrier that acked block "
                            f"{first.block} generation {first.acked_gen}, which is lost",
                            f.acked_gen, f.seen, f.ack_age_s, f.gens)
        out.append(f)
    return out


def _histogram(findings: list[Finding]) -> list[Bucket]:
    edges = (0.0,) + AGE_EDGES + (float("inf"),)
    rows = []
    for lo, hi in zip(edges, edges[1:]):
        inside = [f for f in findings if f.acked_gen and f.ack_age_s is not None and lo <= f.ack_age_s < hi]
        label = f">= {lo:g} s" if hi == float("inf") else f"{lo:g}-{hi:g} s"
        rows.append(Bucket(label, len(inside), sum(1 for f in inside if f.kind in (LOST, TORN))))
    return rows


def _read_region(dev: Device, start: int, length: int):
    """Yield (block, data or None) over the region; a failed chunk is retried block by block."""
    for base in range(start, start + length, CHUNK):
        n = min(CHUNK, start + length - base)
        try:
            data = dev.read(base, n)
        except OSError:
            for b in range(base, base + n):
                try:
                    yield b, dev.read(b)
                except OSError:
                    yield b, None
            continue
        for k in range(n):
            yield base + k, data[k * BLOCK_SIZE:(k + 1) * BLOCK_SIZE]


def verify_blocks(blocks, log: RunLog) -> Report:
    """Judge an iterable of (block, data) against a run's log: the whole verdict, without a device."""
    findings = [classify(data, b, log) for b, data in blocks]
    findings = _ordering_pass(findings, log)
    report = Report(log)
    for f in findings:
        report.counts[f.kind] += 1
    report.findings = [f for f in findings if f.kind not in (INTACT, UNACKED, UNTOUCHED)]
    report.histogram = _histogram(findings)
    return report


def verify_device(device: str, log: RunLog) -> Report:
    """Read the run's region from the device and judge it.  BlkError when it cannot be read."""
    h = log.header
    with Device(device, readonly=True) as dev:
        if h.start + h.length > dev.nblocks:
            raise BlkError(f"{device}: {dev.nblocks} blocks, but the run wrote blocks {h.start}..{h.start + h.length - 1}")
        return verify_blocks(_read_region(dev, h.start, h.length), log)
