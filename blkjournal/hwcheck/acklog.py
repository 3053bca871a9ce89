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

VERSION = 1


def encode(obj: dict) -> bytes:
    """One log line: compact JSON, a space, its crc32c in hex, a newline."""
    body = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    return body + b" %08x\n" % _crc.crc32c(body)


def decode(line: bytes) -> dict:
    """The object in one log line (without or with its newline); ValueError when damaged."""
    line = line.rstrip(b"\n")
    body, sep, crc = line.rpartition(b" ")
    if not sep or len(crc) != 8:
        raise ValueError("no checksum")
    if int(crc, 16) != _crc.crc32c(body):
        raise ValueError("checksum mismatch")
    obj = json.loads(body)
    if not isinstance(obj, dict) or "k" not in obj:
        raise ValueError("not an acks-log event")
    return obj


def flat(pairs) -> list[int]:
    """[(block, gen), ...] -> [block, gen, block, gen, ...], the compact form used in lines."""
    return [x for pair in pairs for x in pair]


def unflat(values) -> list[tuple[int, int]]:
    it = iter(values)
    return list(zip(it, it))


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
            raise BlkError(f"acks log version {ev.get('v')}, expected {VERSION}")
        try:
            return cls(int(ev["run"], 16), ev["device"], int(ev["start"]), int(ev["length"]),
                       int(ev["threads"]), ev["barrier"], int(ev["batch"]), int(ev["atomic"]),
                       int(ev["time_ns"]), dict(ev.get("preflight") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise BlkError(f"acks log run header is incomplete ({e})") from None

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
        t = int(ev["t"])
        pairs = unflat(ev.get("a", ()))
        for block, gen in pairs:
            old = self.acked.get(block)
            if old is None or gen > old.gen:
                self.acked[block] = Ack(gen, 2 * line_no, t)
        if pairs:
            self.acks += len(pairs)
            self.first_ack_ns = t if self.first_ack_ns is None else min(self.first_ack_ns, t)
            self.last_ack_ns = t if self.last_ack_ns is None else max(self.last_ack_ns, t)
        for block, gen in unflat(ev.get("i", ())):
            self.intents.setdefault(block, {}).setdefault(gen, 2 * line_no + 1)


def read_runs(path: str) -> list[RunLog]:
    """Every run in an acks log, oldest first.  BlkError when the file is unusable."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        raise BlkError(f"{path}: no such acks file") from None
    except OSError as e:
        raise BlkError(f"{path}: {e.strerror}") from None
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline, as every complete line does
    runs: list[RunLog] = []
    for n, raw in enumerate(lines):
        try:
            ev = decode(raw)
            if ev["k"] == "run":
                runs.append(RunLog(RunHeader.from_event(ev)))
                continue
            if not runs:
                raise ValueError("event before any run header")
            if ev.get("run") != f"{runs[-1].header.run:016x}":
                raise ValueError("event of another run")
            runs[-1].add_event(ev, n)
        except (ValueError, KeyError, TypeError) as e:
            # A line torn by a crash of the acks side: tolerated only as the last line of a run.
            nxt = lines[n + 1] if n + 1 < len(lines) else None
            if nxt is None or _is_header(nxt):
                if runs:
                    runs[-1].torn_tail = True
                continue
            raise BlkError(f"{path}: line {n + 1} is damaged ({e})") from None
    if not runs:
        raise BlkError(f"{path}: no hwcheck run in this acks file")
    return runs


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
