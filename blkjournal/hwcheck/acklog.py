"""The acks log: what the writer promised, kept off the device under test.

Verification is only as good as this log, so every line is self-checking (`JSON crc32c`) and
written durably before the writer moves on (see sink.py).  Three kinds of line:

    run   the header: run id, device, region, threads, barrier, batch, atomic unit, preflight
    ev    one writer's event: `a` = (block, gen) pairs whose barrier has completed (acked) at
          time `t`, then `i` = pairs it is about to submit (intents).  The ack of batch k and the
          intent of batch k+1 travel in one line, so one durable append per barrier suffices.
    end   a clean stop (duration, signal, count, or an I/O error) with the run's counters

Line order is real-time order: writers append under one lock and wait for durability, so an
intent logged after an ack was submitted after that ack's barrier completed.  Verify derives
flush-ordering violations from exactly that, using `ordinal` = 2*line + (0 ack | 1 intent).

Several runs may share one file (a new `run` line starts each); verify picks the last by
default.  A torn final line (the acks disk lost power too) is ignored; a bad line anywhere else
is bad input.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import crc32c as _crc

from ..errors import BlkError
from ..untrusted import integer, json_value, lines

VERSION = 1


def encode(obj: dict) -> bytes:
    """One log line: compact JSON, a space, its crc32c in hex, a newline."""
    body = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    return body + b" %08x\n" % _crc.crc32c(body)


def decode(line: bytes | None) -> dict:
    """The object in one log line (without or with its newline); ValueError when damaged
    (None: a line too long to be one)."""
    if line is None:
        raise ValueError("line too long")
    line = line.rstrip(b"\n")
    body, sep, crc = line.rpartition(b" ")
    if not sep or len(crc) != 8:
        raise ValueError("no checksum")
    if int(crc, 16) != _crc.crc32c(body):
        raise ValueError("checksum mismatch")
    obj = json_value(body)
    if not isinstance(obj, dict) or "k" not in obj:
        raise ValueError("not an acks-log event")
    return obj


def flat(pairs) -> list[int]:
    """[(block, gen), ...] -> [block, gen, block, gen, ...], the compact form used in lines."""
    return [x for pair in pairs for x in pair]


def unflat(values) -> list[tuple[int, int]]:
    it = iter(values)
    return list(zip(it, it))


ATOMIC_UNITS = (512, 1024, 2048, 4096)


def pairs_of(ev: dict, key: str) -> list[tuple[int, int]]:
    """The (block, generation) pairs of an event field, each checked (ValueError when bad)."""
    values = ev.get(key, [])
    if not isinstance(values, list) or len(values) % 2:
        raise ValueError(f"field {key!r} is not a list of (block, generation) pairs")
    return [(integer(b, "block"), integer(g, "generation", 1)) for b, g in unflat(values)]


@dataclass(frozen=True)
class RunHeader:
    """The first line of a run: everything verify needs to know about how it was written."""

    run: int
    device: str
    start: int  # first block of the region
    length: int  # blocks in the region
    threads: int
    barrier: str
    batch: int
    atomic: int  # bytes a write is assumed atomic in (the device's logical block size)
    time_ns: int
    preflight: dict = field(default_factory=dict)

    def to_event(self) -> dict:
        d = asdict(self)
        d["run"] = f"{self.run:016x}"
        return {"k": "run", "v": VERSION, **d}

    @classmethod
    def from_event(cls, ev: dict) -> "RunHeader":
        if ev.get("v") != VERSION:
            raise BlkError(f"acks log version {ev.get('v')!r}, expected {VERSION}")
        try:
            run = ev["run"]
            if not isinstance(run, str) or len(run) != 16:
                raise ValueError(f"run id {run!r} is not 16 hex digits")
            device, barrier, preflight = ev["device"], ev["barrier"], ev.get("preflight") or {}
            if not isinstance(device, str) or not isinstance(barrier, str) or not isinstance(preflight, dict):
                raise ValueError("device and barrier must be strings, preflight an object")
            atomic = integer(ev["atomic"], "atomic", 512, 4097)
            if atomic not in ATOMIC_UNITS:
                raise ValueError(f"atomic unit {atomic} is not one of {ATOMIC_UNITS}")
            return cls(int(run, 16), device, integer(ev["start"], "start", 0, 1 << 52),
                       integer(ev["length"], "length", 0, 1 << 52), integer(ev["threads"], "threads", 1, 1 << 16),
                       barrier, integer(ev["batch"], "batch", 1, 1 << 32), atomic,
                       integer(ev["time_ns"], "time_ns", 0, 1 << 63), dict(preflight))
        except (KeyError, TypeError, ValueError) as e:
            raise BlkError(f"acks log run header is incomplete or damaged ({e})") from None

    @property
    def blocks(self) -> range:
        return range(self.start, self.start + self.length)


@dataclass(frozen=True)
class Ack:
    """The newest acked generation of one block, and when its barrier completed."""

    gen: int
    ordinal: int
    time_ns: int


@dataclass
class RunLog:
    """One run of an acks log, folded per block."""

    header: RunHeader
    acked: dict[int, Ack] = field(default_factory=dict)  # block -> newest acked generation
    intents: dict[int, dict[int, int]] = field(default_factory=dict)  # block -> {gen: ordinal}
    first_ack_ns: int | None = None
    last_ack_ns: int | None = None
    acks: int = 0  # acked writes (pairs), counting re-acks of one block
    end: dict | None = None
    torn_tail: bool = False

    def intent(self, block: int, gen: int) -> int | None:
        """Ordinal of the intent to write generation `gen` of `block`, or None if never submitted."""
        return self.intents.get(block, {}).get(gen)

    def submitted(self, block: int) -> dict[int, int]:
        """Every generation of `block` submitted in this run -> its intent ordinal."""
        return self.intents.get(block, {})

    def add_event(self, ev: dict, line_no: int) -> None:
        if ev["k"] == "end":
            self.end = ev
            return
        if ev["k"] != "ev":
            raise ValueError(f"unknown event kind {ev['k']!r}")
        t = integer(ev.get("t"), "time", 0, 1 << 63)
        pairs = pairs_of(ev, "a")
        intents = pairs_of(ev, "i")
        for block, gen in pairs:
            old = self.acked.get(block)
            if old is None or gen > old.gen:
                self.acked[block] = Ack(gen, 2 * line_no, t)
        if pairs:
            self.acks += len(pairs)
            self.first_ack_ns = t if self.first_ack_ns is None else min(self.first_ack_ns, t)
            self.last_ack_ns = t if self.last_ack_ns is None else max(self.last_ack_ns, t)
        for block, gen in intents:
            self.intents.setdefault(block, {}).setdefault(gen, 2 * line_no + 1)


def read_runs(path: str) -> list[RunLog]:
    """Every run in an acks log, oldest first.  BlkError when the file is unusable."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise BlkError(f"{path}: no such acks file") from None
    except OSError as e:
        raise BlkError(f"{path}: {e.strerror}") from None
    runs: list[RunLog] = []
    with f:
        try:
            it = lines(f)
            nxt = next(it, None)
            n = 0
            while nxt is not None:
                raw, nxt = nxt, next(it, None)
                _read_line(runs, raw, n, nxt, path)
                n += 1
        except OSError as e:
            raise BlkError(f"{path}: {e.strerror}") from None
    if not runs:
        raise BlkError(f"{path}: no hwcheck run in this acks file")
    return runs


def _read_line(runs: list[RunLog], raw: bytes, n: int, nxt: bytes | None, path: str) -> None:
    try:
        ev = decode(raw)
        if ev["k"] == "run":
            runs.append(RunLog(RunHeader.from_event(ev)))
            return
        if not runs:
            raise ValueError("event before any run header")
        if ev.get("run") != f"{runs[-1].header.run:016x}":
            raise ValueError("event of another run")
        runs[-1].add_event(ev, n)
    except (ValueError, KeyError, TypeError) as e:
        # A line torn by a crash of the acks side: tolerated only as the last line of a run.
        if nxt is None or _is_header(nxt):
            if runs:
                runs[-1].torn_tail = True
            return
        raise BlkError(f"{path}: line {n + 1} is damaged ({e})") from None


def _is_header(raw: bytes) -> bool:
    try:
        return decode(raw)["k"] == "run"
    except (ValueError, KeyError, TypeError):
        return False


def read_run(path: str, run: str | None = None) -> RunLog:
    """One run of an acks log: the last one, or the one whose id starts with `run`."""
    runs = read_runs(path)
    if run is None:
        return runs[-1]
    found = [r for r in runs if f"{r.header.run:016x}".startswith(run.lower())]
    if len(found) != 1:
        ids = ", ".join(f"{r.header.run:016x}" for r in runs)
        raise BlkError(f"{path}: run {run!r} matches {len(found)} runs (have: {ids})")
    return found[0]
