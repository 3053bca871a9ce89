"""`hwcheck write`: stamp records onto the disk, barrier them, and report every ack off the device.

N writer threads (hwflush-check's design) each own a disjoint part of the region and cycle over
it with increasing generations.  One batch of one writer goes:

    1. log "ack previous batch (time t) + intent for this batch" -> sink, durable
    2. write each record, O_DIRECT (with RWF_DSYNC when --barrier fua)
    3. fdatasync when --barrier flush: every write of the batch is now promised durable
    4. t = now; loop (the ack travels with the next batch's intent)

So the log always knows what may be on disk (intents) before it can be there, and what must be
on disk (acks) only after the disk promised it: diskchecker.pl's "about to write" / "wrote"
pair, with one durable append per barrier instead of two.  `--barrier none` acks without any
barrier: a control run that a cut on a volatile cache must turn into a "lies" verdict.

The run stops on the stop event (SIGINT/SIGTERM in the CLI), at --duration, after --count
records per writer, or at the first I/O error (the expected end when power is cut under us).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass, field

from ..device import Device
from ..errors import BlkError
from ..safety import check_safe
from . import acklog
from .acklog import RunHeader
from .lane import Lane
from .preflight import describe
from .record import Record
from .schedule import Part, parse_region, split
from .sink import open_sink, placement_warning

BARRIERS = ("flush", "fua", "none")
POLL_S = 0.05


@dataclass(frozen=True)
class WriteOptions:
    """How to write; the CLI's options one to one."""

    barrier: str = "flush"
    threads: int = 1
    region: str | None = None  # "START:LEN", see schedule.parse_region
    batch: int = 1  # records per flush (--barrier flush/none); must be 1 with fua
    duration: float | None = None  # seconds; None = until stopped
    count: int | None = None  # records per writer, then stop


@dataclass
class WriteResult:
    """What a run did and why it stopped."""

    run: int
    reason: str  # "duration", "count", "signal", "io-error", "sink-error"
    error: str | None
    writes: int = 0
    acked: int = 0
    flushes: int = 0
    fua_writes: int = 0
    seconds: float = 0.0
    region: tuple[int, int] = (0, 0)

    @property
    def run_id(self) -> str:
        return f"{self.run:016x}"

    def summary(self) -> str:
        rate = self.acked / self.seconds if self.seconds > 0 else 0.0
        line = (f"stopped ({self.reason}): {self.writes} writes, {self.acked} acked, {self.flushes} flushes, "
                f"{self.fua_writes} FUA writes in {self.seconds:.1f} s ({rate:.0f} acked/s); run {self.run_id}")
        return line + (f"; {self.error}" if self.error else "")


@dataclass
class _Shared:
    """State the writer threads share: the sink, the stop flag and the first failure."""

    sink: object
    run: int
    barrier: str
    batch: int
    count: int | None
    stop: threading.Event
    reason: str | None = None
    error: str | None = None
    acked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def finish(self, reason: str, error: str | None = None) -> None:
        with self.lock:
            if self.reason is None:
                self.reason, self.error = reason, error
        self.stop.set()

    def log(self, writer: int, acks: list, intents: list, t: int) -> None:
        ev = {"k": "ev", "run": f"{self.run:016x}", "w": writer, "t": t}
        if acks:
            ev["a"] = acklog.flat(acks)
        if intents:
            ev["i"] = acklog.flat(intents)
        self.sink.append(acklog.encode(ev))
        if acks:
            with self.lock:
                self.acked += len(acks)


def _writer(shared: _Shared, part: Part, lane: Lane) -> None:
    fua = shared.barrier == "fua"
    flush = shared.barrier == "flush"
    seq, acked, ack_t = 0, [], 0
    sink_ok = True
    try:
        while not shared.stop.is_set():
            n = shared.batch if shared.count is None else min(shared.batch, shared.count - seq)
            if n <= 0:
                break
            batch = [part.at(seq + k) for k in range(n)]
            try:
                shared.log(part.writer, acked, batch, ack_t or time.time_ns())
            except BlkError as e:
                sink_ok = False
                shared.finish("sink-error", str(e))
                return
            acked = []
            what = "write"
            try:
                for k, (block, gen) in enumerate(batch):
                    what = f"write of block {block}"
                    rec = Record(shared.run, block, gen, part.writer, seq + k, time.time_ns())
                    lane.write(block, rec.pack(), fua=fua)
                if flush:
                    what = "flush"
                    lane.flush()
            except (OSError, BlkError) as e:
                msg = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
                shared.finish("io-error", f"{lane.dev.path}: {msg} ({what}, writer {part.writer})")
                return
            ack_t = time.time_ns()
            acked = batch
            seq += n
    finally:
        if acked and sink_ok:
            try:
                shared.log(part.writer, acked, [], ack_t)
            except BlkError as e:
                shared.finish("sink-error", str(e))


def write(device: str, acks: str, opts: WriteOptions, *, stop: threading.Event | None = None,
          say=print, force: bool = False) -> WriteResult:
    """Run one hwcheck write session; returns when stopped.  BlkError for bad input.

    The region is overwritten, so the device goes through the same safety check as a store
    (safety.check_safe: never a mounted or busy device; a file system signature only with `force`).
    """
    if opts.barrier not in BARRIERS:
        raise BlkError(f"--barrier must be one of {', '.join(BARRIERS)}")
    if opts.barrier == "fua" and opts.batch != 1:
        raise BlkError("--batch applies to --barrier flush: with fua every record is its own barrier")
    if opts.duration is not None and opts.duration <= 0:
        raise BlkError("--duration must be positive")
    if opts.count is not None and opts.count < 1:
        raise BlkError("--count must be at least 1")
    stop = stop or threading.Event()
    check_safe(device, force=force)
    dev = Device(device)
    sink = None
    lanes: list[Lane] = []
    try:
        start, length = parse_region(opts.region, dev.nblocks)
        parts = split(start, length, opts.threads, opts.batch)
        warning = placement_warning(acks, device)
        line, facts = describe(device, opts.barrier, dev.logical_block_size)
        say(line)
        if warning:
            say(f"warning: {warning}")
        sink = open_sink(acks)
        run = secrets.randbits(64) | 1
        header = RunHeader(run, os.path.abspath(device), start, length, opts.threads, opts.barrier,
                           opts.batch, dev.logical_block_size, time.time_ns(), facts)
        sink.append(acklog.encode(header.to_event()))
        say(f"run {run:016x}: blocks {start}..{start + length - 1}, {opts.threads} writer(s), "
            f"barrier {opts.barrier}, batch {opts.batch}, acks -> {acks}")
        shared = _Shared(sink, run, opts.barrier, opts.batch, opts.count, stop)
        lanes = [Lane(dev) for _ in parts]
        threads = [threading.Thread(target=_writer, args=(shared, p, lane), name=f"hwcheck-w{p.writer}")
                   for p, lane in zip(parts, lanes)]
        t0 = time.monotonic()
        deadline = None if opts.duration is None else t0 + opts.duration
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            if stop.wait(POLL_S):
                shared.finish("signal")  # keeps an earlier reason if a thread set one
            elif deadline is not None and time.monotonic() >= deadline:
                shared.finish("duration")
        for t in threads:
            t.join()
        seconds = time.monotonic() - t0
        result = WriteResult(run, shared.reason or "count", shared.error, region=(start, length),
                             acked=shared.acked, seconds=seconds)
        for lane in lanes:
            result.writes += lane.counters.writes
            result.flushes += lane.counters.flushes
            result.fua_writes += lane.counters.fua_writes
        if result.reason != "sink-error":
            end = {"k": "end", "run": f"{run:016x}", "t": time.time_ns(), "reason": result.reason,
                   "error": result.error, "writes": result.writes, "acked": result.acked,
                   "flushes": result.flushes, "fua": result.fua_writes}
            try:
                sink.append(acklog.encode(end))
            except BlkError as e:
                result.reason, result.error = "sink-error", str(e)
        return result
    finally:
        for lane in lanes:
            lane.close()
        if sink is not None:
            sink.close()
        dev.close()
