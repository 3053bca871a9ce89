"""`hwcheck vmtrial`: real power cuts of an nbdkit lying or honest disk under a qemu guest, verified here.

Per trial, on the host (REFERENCE.md §5): a sparse image, and an nbdkit serving it through
`--filter=fua --filter=cache` (fua nearest the client) with `cache=writeback` and
`fuamode=discard` (lying: FUA and flushes are acknowledged and dropped, the data stays in the
cache's unlinked temp file) or `fuamode=pass` (honest: a flush writes the cache back and
fdatasyncs the image).  Several trials share one boot: each trial's nbdkit is its own guest
disk (/dev/vda, /dev/vdb, ...; qemu's default reconnect-delay=0, never werror=stop), and the guest
runs the `hwcheck write` command (the one `python -m blkjournal.hwcheck write` runs, invoked in one
interpreter for all trials: a fresh Python start with its imports costs several seconds per trial
under TCG)

    write /dev/vdX --barrier B --acks RESULTS/tNN/acks.log --duration D --region R ...

for one disk after the other, with the acks file on the read-write results share (a host file that
outlives the cut).  A host thread watches the current trial's acks file; `cut_after` seconds (plus
up to `jitter`) after it first sees an ack it kills that trial's nbdkit with SIGKILL: the power cut.
The lying disk's cache dies with the process; the guest's writer gets EIO, logs its `end` line
(reason io-error) and exits, and the guest goes on to the next disk while qemu keeps running.
After the boot every trial is verified on the host against its image file (`verify_device`).

A trial counts only when it was a real cut: nbdkit died of our SIGKILL while its writer was still
running, at least one write was acked before it, and the writer then ended on an I/O error
(`TrialResult.real_cut`).  `expected` is "lies" for the lying disk and "honest" for the honest one
(`--barrier none`, the writer's control run, is expected to come out "lies" on either disk);
`TrialResult.ok` holds when a real cut gave the expected verdict with acked blocks behind it: for
"lies" at least one acked block lost, for "honest" none.

    batch = run_trials([TrialSpec("lying", "flush")] * 5, workdir="/tmp/vt")
    for t in batch.trials: print(t.line())
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

from ..errors import BlkError

DISKS = ("lying", "honest")
BARRIERS = ("flush", "fua", "none")  # none: the writer's control run, acks without barriers
MAX_TRIALS = 24  # guest disks /dev/vda.. (qemu_command allows 26)
POLL_S = 0.05
NBDKIT_START_S = 10.0


def expected_verdict(disk: str, barrier: str) -> str:
    """lies for the lying disk; honest for the honest one, except with --barrier none (a control:
    nothing ever asks the honest disk's cache to write back, so the cut must lose acked records)."""
    return "honest" if disk == "honest" and barrier != "none" else "lies"


@dataclass(frozen=True)
class TrialSpec:
    """One trial: which disk (lying/honest) under which barrier (flush/fua, or none as a control)."""

    disk: str
    barrier: str

    def __post_init__(self) -> None:
        if self.disk not in DISKS:
            raise BlkError(f"disk must be one of {', '.join(DISKS)}, not {self.disk!r}")
        if self.barrier not in BARRIERS:
            raise BlkError(f"barrier must be one of {', '.join(BARRIERS)}, not {self.barrier!r}")


def matrix(disks, barriers, trials: int) -> list[TrialSpec]:
    """`trials` of every (disk, barrier) pair, interleaved (round by round) so that no kind of trial
    always runs first or last in the boot."""
    if trials < 1:
        raise BlkError("--trials must be at least 1")
    pairs = list(dict.fromkeys((d, b) for d in disks for b in barriers))
    if not pairs:
        raise BlkError("give at least one --disk and one --barrier")
    specs = [TrialSpec(d, b) for _ in range(trials) for d, b in pairs]
    if len(specs) > MAX_TRIALS:
        raise BlkError(f"{len(specs)} trials, but one boot takes at most {MAX_TRIALS} (one guest disk each)")
    return specs


@dataclass(frozen=True)
class TrialOptions:
    """How every trial of a boot is run."""

    cut_after: float = 1.0  # seconds from the first ack seen on the host to the kill -9
    jitter: float = 0.5  # plus uniform(0, jitter) seconds
    region: str = "0:8M"  # --region of the writer; the image is exactly this large
    duration: float = 20.0  # --duration of the writer: its own stop when no cut comes
    threads: int = 1
    batch: int = 1  # records per flush (flush barrier only)
    seed: int | None = None  # for the jitter


@dataclass
class TrialResult:
    """One trial's cut and verdict.  `counts` are verify's per-block classes."""

    index: int
    disk: str
    barrier: str
    device: str  # in the guest
    image: str
    acks_path: str
    expected: str
    killed: bool = False  # nbdkit died of our SIGKILL
    killed_while_running: bool = False  # ... before its writer ended
    cut_delay_s: float | None = None  # first ack seen on the host -> kill
    acks_at_cut: int = 0  # acked writes in the log when nbdkit was killed
    writer_exit: int | None = None
    end_reason: str | None = None  # the writer's `end` line: io-error is the expected one
    end_error: str | None = None
    verdict: str = "error"  # honest | lies | inconclusive | error
    summary: str = ""
    acks: int = 0  # acked writes in the log (re-acks of a block counted)
    acked_blocks: int = 0
    counts: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def lost(self) -> int:
        """Acked blocks lost or torn."""
        return self.counts.get("lost", 0) + self.counts.get("torn", 0)

    @property
    def intact(self) -> int:
        return self.counts.get("intact", 0)

    @property
    def real_cut(self) -> bool:
        return (self.killed and self.killed_while_running and self.acks_at_cut > 0
                and self.end_reason == "io-error")

    @property
    def ok(self) -> bool:
        if not self.real_cut or self.verdict != self.expected:
            return False
        if self.expected == "honest":
            return self.acked_blocks > 0 and self.lost == 0
        return self.lost > 0

    def line(self) -> str:
        cut = (f"cut {self.cut_delay_s:.2f} s after the first ack" if self.cut_delay_s is not None
               else "no cut")
        head = (f"trial {self.index + 1:2d} {self.disk:6s} {self.barrier:5s} {self.device}: {cut}, "
                f"{self.acked_blocks} acked blocks, {self.lost} lost, {self.intact} intact, "
                f"writer end {self.end_reason or '-'}: {self.verdict}")
        mark = "ok" if self.ok else f"NOT OK (expected {self.expected}{'' if self.real_cut else ', not a real cut'})"
        return f"{head} [{mark}]" + (f"; {self.error}" if self.error else "")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(lost=self.lost, intact=self.intact, real_cut=self.real_cut, ok=self.ok)
        return d


@dataclass
class TrialBatch:
    """All trials of one boot."""

    trials: list[TrialResult]
    boot_s: float  # qemu start to power-off
    total_s: float  # nbdkit start to the last verify
    workdir: str
    guest_exit: int | None

    @property
    def ok(self) -> bool:
        return bool(self.trials) and all(t.ok for t in self.trials)

    def to_json(self) -> dict:
        return {"ok": self.ok, "boot_s": round(self.boot_s, 2), "total_s": round(self.total_s, 2),
                "workdir": self.workdir, "guest_exit": self.guest_exit,
                "trials": [t.to_json() for t in self.trials]}


class Nbdkit:
    """One nbdkit serving IMG over a unix socket: lying (fuamode=discard) or honest (pass)."""

    def __init__(self, image: str, sock: str, tmpdir: str, lying: bool, log: str) -> None:
        self.sock = sock
        exe = shutil.which("nbdkit")
        if exe is None:
            raise BlkError("nbdkit is not installed (python -m blkjournal.vm.deps installs it)")
        cmd = [exe, "-f", "-U", sock, "--filter=fua", "--filter=cache", "file", f"file={image}",
               f"fuamode={'discard' if lying else 'pass'}", "cache=writeback"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env={**os.environ, "TMPDIR": tmpdir}, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.killed = False

    def wait_ready(self, deadline: float) -> None:
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None:
                raise BlkError(f"nbdkit exited {self.proc.returncode} before serving {self.sock}")
            if time.monotonic() > deadline:
                raise BlkError(f"nbdkit did not create {self.sock} in {NBDKIT_START_S:.0f} s")
            time.sleep(0.02)

    def kill(self) -> bool:
        """SIGKILL (the power cut); True when this call killed a running nbdkit."""
        if self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.killed = True
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _first_acks(path: str) -> int:
    """Acked writes in the last run of an acks file so far (0 while it is absent or has none)."""
    from .acklog import read_runs

    try:
        return read_runs(path)[-1].acks
    except (BlkError, OSError):
        return 0


def _guest_plan(trials: list[TrialResult], opts: TrialOptions) -> dict:
    """What the guest runs: per disk, in order, the argv of `hwcheck write` and where its files go."""
    plan = []
    for t in trials:
        argv = ["write", t.device, "--barrier", t.barrier, "--acks", t.acks_path, "--duration", f"{opts.duration:g}",
                "--region", opts.region, "--threads", str(opts.threads)]
        if t.barrier != "fua":
            argv += ["--batch", str(opts.batch)]
        plan.append({"label": f"trial {t.index + 1} {t.disk} {t.barrier} on {t.device}",
                     "dir": os.path.dirname(t.acks_path), "argv": argv})
    return {"trials": plan}


class _Cutter(threading.Thread):
    """Watches the trials in order; kills each trial's nbdkit a bounded time after its first ack."""

    def __init__(self, trials: list[TrialResult], disks: list[Nbdkit], opts: TrialOptions, say) -> None:
        super().__init__(daemon=True, name="vmtrial-cutter")
        self.trials, self.disks, self.opts, self.say = trials, disks, opts, say
        self.done = threading.Event()  # set when the guest is gone
        self.rng = random.Random(opts.seed)

    def _writer_ended(self, t: TrialResult) -> bool:
        return os.path.exists(os.path.join(os.path.dirname(t.acks_path), "exit"))

    def run(self) -> None:
        for t, nbd in zip(self.trials, self.disks):
            while not self.done.is_set():
                if _first_acks(t.acks_path) > 0:
                    break
                if self._writer_ended(t):
                    break
                time.sleep(POLL_S)
            if self.done.is_set():
                return
            if self._writer_ended(t):
                continue  # ended before any ack was seen: no cut; the trial will say so
            seen = time.monotonic()
            delay = self.opts.cut_after + self.rng.uniform(0, self.opts.jitter)
            if self.done.wait(delay):
                return
            t.acks_at_cut = _first_acks(t.acks_path)
            running = not self._writer_ended(t)
            t.killed = nbd.kill()
            t.killed_while_running = t.killed and running
            t.cut_delay_s = time.monotonic() - seen
            self.say(f"vmtrial: trial {t.index + 1}: kill -9 nbdkit {t.cut_delay_s:.2f} s after the first ack "
                     f"({t.acks_at_cut} acks logged)")


def _finish(t: TrialResult) -> None:
    """Read the writer's exit and end line, verify the image, fill in the verdict."""
    from .acklog import read_run
    from .verify import verify_device

    exit_file = os.path.join(os.path.dirname(t.acks_path), "exit")
    if os.path.exists(exit_file):
        text = open(exit_file).read().strip()
        t.writer_exit = int(text) if text.lstrip("-").isdigit() else None
    try:
        log = read_run(t.acks_path)
        if log.end:
            t.end_reason, t.end_error = log.end.get("reason"), log.end.get("error")
        report = verify_device(t.image, log)
    except BlkError as e:
        t.verdict, t.error = "error", str(e)
        return
    t.verdict, t.summary = report.verdict, report.verdict_line()
    t.acks, t.acked_blocks, t.counts = log.acks, report.acked_blocks, dict(report.counts)


def run_trials(specs: list[TrialSpec], *, workdir: str | None = None, opts: TrialOptions = TrialOptions(),
               timeout: float | None = None, say=None, keep: bool = False) -> TrialBatch:
    """Run every trial in one boot of the guest, cut each, verify each.  BlkError on bad input or a
    guest that fails (hang, panic); a trial that goes wrong is reported in its TrialResult instead.

    workdir: where images, sockets, nbdkit caches and the results share live (a disk-backed
    directory: nbdkit's cache file and O_DIRECT verify need one); default a new directory under
    /tmp, removed afterwards unless `keep` (TrialBatch.workdir then names a directory that is gone).
    say: progress lines (default: none).
    """
    from ..vm.qemu import Disk, guest_device, run_guest
    from .schedule import parse_region, split

    say = say or (lambda _m: None)
    if not specs:
        raise BlkError("no trials")
    if len(specs) > MAX_TRIALS:
        raise BlkError(f"at most {MAX_TRIALS} trials per boot (one guest disk each), not {len(specs)}")
    if opts.cut_after <= 0 or opts.jitter < 0:
        raise BlkError("cut_after must be positive and jitter not negative")
    if opts.duration <= opts.cut_after + opts.jitter:
        raise BlkError("the writer's duration must be longer than the cut delay")
    if not opts.region.partition(":")[2].strip():
        raise BlkError(f"region {opts.region!r}: give START:LEN (the image is made that large)")
    start, length = parse_region(opts.region, 1 << 40)
    split(start, length, opts.threads, opts.batch)  # the writer's own checks, before anything boots
    size = (start + length) * 4096
    own = workdir is None
    workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="blkjournal-vmtrial-", dir="/tmp"))
    os.makedirs(workdir, exist_ok=True)
    results = os.path.join(workdir, "results")
    os.makedirs(results, exist_ok=True)
    t0 = time.monotonic()
    trials: list[TrialResult] = []
    disks: list[Nbdkit] = []
    socks = tempfile.mkdtemp(prefix="bjvt-", dir="/tmp")  # unix socket paths must stay under 108 bytes
    try:
        for i, spec in enumerate(specs):
            d = os.path.join(workdir, f"t{i + 1:02d}")
            os.makedirs(d, exist_ok=True)
            rd = os.path.join(results, f"t{i + 1:02d}")
            os.makedirs(rd, exist_ok=True)
            for stale in ("acks.log", "exit", "writer.out"):
                if os.path.exists(os.path.join(rd, stale)):
                    os.unlink(os.path.join(rd, stale))
            image = os.path.join(d, "disk.img")
            with open(image, "wb") as f:  # fresh zeros before nbdkit starts (the lying disk forgets
                f.truncate(size)          # everything written after)
            trials.append(TrialResult(i, spec.disk, spec.barrier, guest_device(i), image,
                                      os.path.join(rd, "acks.log"), expected_verdict(spec.disk, spec.barrier)))
            disks.append(Nbdkit(image, os.path.join(socks, f"t{i + 1:02d}.sock"), d, spec.disk == "lying",
                                os.path.join(d, "nbdkit.log")))
        deadline = time.monotonic() + NBDKIT_START_S
        for nbd in disks:
            nbd.wait_ready(deadline)
        plan = os.path.join(results, "plan.json")
        with open(plan, "w") as f:
            json.dump(_guest_plan(trials, opts), f, indent=1)
        if timeout is None:
            timeout = 90 + len(specs) * (opts.duration + 15)
        cutter = _Cutter(trials, disks, opts, say)
        cutter.start()
        where = "removed afterwards" if own and not keep else "kept"
        say(f"vmtrial: booting the guest with {len(specs)} nbdkit disks; results in {results} ({where})")
        try:
            res = run_guest(["-m", "blkjournal.hwcheck.guestrun", plan],
                            disks=[Disk(f"nbd:unix:{n.sock}") for n in disks],
                            timeout=timeout, results_dir=results)
        finally:
            cutter.done.set()
            cutter.join(timeout=10)
        boot_s = res.elapsed
        for nbd in disks:
            nbd.stop()
        for t in trials:
            _finish(t)
            say(t.line())
        return TrialBatch(trials, boot_s, time.monotonic() - t0, workdir, res.exit_code)
    finally:
        for nbd in disks:
            nbd.stop()
        shutil.rmtree(socks, ignore_errors=True)
        if own and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
