"""Run one CLI command on untrusted input and hold it to the project's bad-input contract.

Each command runs in a forked child (the modules are already imported, so a fork costs a few
milliseconds) with an address-space limit and an alarm, so a command that would allocate without
bound or walk forever fails *here*, as a finding, instead of taking the machine down:

    exit code in {0, 1, 2}; when non-zero, stderr is exactly one line `blkjournal: ...`;
    no traceback; wall time under TIME_LIMIT; memory growth under MEM_LIMIT (RLIMIT_AS, and the
    child's peak RSS from wait4); files named read-only have the same sha256 before and after.

`Stats` keeps the figures a fuzz run reports (commands, failures, longest run, peak memory).
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field

from cliutil import sha  # noqa: F401 -- tests/ is on sys.path (pytest, and run.py puts it there)

TIME_LIMIT = float(os.environ.get("FUZZ_TIME_LIMIT", 20))  # seconds per command
MEM_LIMIT = 256 << 20  # bytes a command may grow by
_PAGE = os.sysconf("SC_PAGE_SIZE")
OUT_KEPT = 1 << 20  # bytes of a command's stdout/stderr kept for the checks
TRACEBACK_EXIT = 99  # the child's exit code when an exception escaped main()
_warmed: list = []


@dataclass
class Run:
    args: tuple
    code: int | None  # None: killed (timeout or signal)
    out: bytes
    err: str
    seconds: float
    peak_rss: int  # bytes, the child's peak resident set
    growth: int  # bytes, peak RSS minus the RSS at fork
    signal: int | None = None


@dataclass
class Stats:
    inputs: int = 0
    commands: int = 0
    failures: list = field(default_factory=list)
    longest: float = 0.0
    longest_args: tuple = ()
    peak_growth: int = 0
    peak_rss: int = 0
    exit_codes: dict = field(default_factory=dict)

    def note(self, run: Run) -> None:
        self.commands += 1
        self.exit_codes[str(run.code)] = self.exit_codes.get(str(run.code), 0) + 1
        if run.seconds > self.longest:
            self.longest, self.longest_args = run.seconds, run.args
        self.peak_growth = max(self.peak_growth, run.growth)
        self.peak_rss = max(self.peak_rss, run.peak_rss)

    def summary(self) -> dict:
        d = asdict(self)
        d["failures"] = len(self.failures)
        d["longest_args"] = [str(a) for a in self.longest_args]
        d["peak_growth_mib"] = round(self.peak_growth / (1 << 20), 1)
        d["peak_rss_mib"] = round(self.peak_rss / (1 << 20), 1)
        return d


STATS = Stats()


def warm() -> None:
    """Import what the commands import lazily and build the click command, once, in the parent:
    every forked child then starts warm (a cold child spends ~0.5 s importing)."""
    import importlib

    from blkjournal import cli

    for m in ("blkjournal.store", "blkjournal.fsck", "blkjournal.protocols", "blkjournal.properties",
              "blkjournal.safety", "blkjournal.crash.explore", "blkjournal.crash.states", "blkjournal.crash.report",
              "blkjournal.crash.check", "blkjournal.hwcheck.verify", "blkjournal.hwcheck.report",
              "blkjournal.hwcheck.acklog", "rich.progress", "rich.console"):
        importlib.import_module(m)
    getattr(cli, "_command", lambda: None)()  # (absent in builds without the cached command)
    saved = sys.argv, sys.stdout, sys.stderr
    try:  # parsing options imports more (typer's coercion): do it once here
        for args in (["ls", "/nonexistent"], ["fsck", "--json", "/nonexistent"], ["log", "show", "/nonexistent"],
                     ["replay", "/nonexistent", "--out", "/nonexistent", "--entry", "1"],
                     ["check-log", "/nonexistent", "--jobs", "1"], ["hwcheck", "verify", "x", "--acks", "/nonexistent"]):
            sys.argv, sys.stdout, sys.stderr = ["blkjournal", *args], io.StringIO(), io.StringIO()
            try:
                cli.main()
            except SystemExit:
                pass
    finally:
        sys.argv, sys.stdout, sys.stderr = saved
    gc.freeze()  # a child then touches (copies) only what it changes


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _hwm() -> int:
    """Peak resident set of this process so far (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _vsize() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * _PAGE


def run_cli(*args: str, stdin: bytes = b"", timeout: float = TIME_LIMIT, mem: int = MEM_LIMIT) -> Run:
    """`blkjournal ARGS` in a forked child under the limits; never raises for what the child does."""
    from blkjournal.cli import main

    if not _warmed:
        warm()
        _warmed.append(True)
    args = tuple(str(a) for a in args)
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f, tempfile.TemporaryFile() as in_f, \
            tempfile.TemporaryFile() as mem_f:
        in_f.write(stdin)
        in_f.seek(0)
        base_rss = _rss()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = TRACEBACK_EXIT
            start_rss = _rss()
            try:
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.setitimer(signal.ITIMER_REAL, timeout)
                lim = _vsize() + mem
                resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
                os.dup2(in_f.fileno(), 0)
                os.dup2(out_f.fileno(), 1)
                os.dup2(err_f.fileno(), 2)
                sys.stdin = io.TextIOWrapper(os.fdopen(0, "rb", closefd=False))
                sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
                sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), write_through=True)
                sys.argv = ["blkjournal", *args]
                try:
                    main()
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 -- exactly what the contract forbids: report it
                try:
                    sys.stderr.write("Traceback (escaped main):\n" + traceback.format_exc())
                    sys.stderr.flush()
                except BaseException:  # noqa: BLE001
                    pass
                code = TRACEBACK_EXIT
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os.write(mem_f.fileno(), b"%d" % max(0, _hwm() - start_rss))
                except BaseException:  # noqa: BLE001
                    pass
                os._exit(code if 0 <= code < 256 else TRACEBACK_EXIT)
        _, status, ru = os.wait4(pid, 0)
        seconds = time.monotonic() - t0
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(OUT_KEPT), err_f.read(OUT_KEPT).decode("utf-8", "replace")
        mem_f.seek(0)
        growth = mem_f.read()
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    peak = ru.ru_maxrss * 1024
    # growth: the child's own VmHWM minus its RSS at start; killed children report nothing, so
    # fall back on wait4's peak minus the parent's RSS at fork
    run = Run(args, code, out, err, seconds, peak, int(growth) if growth else max(0, peak - base_rss), sig)
    STATS.note(run)
    return run


def problems(run: Run) -> list[str]:
    """What is wrong with a finished command under the contract (empty: nothing)."""
    bad = []
    if run.code is None:
        why = "timed out" if run.signal == signal.SIGALRM else f"killed by signal {run.signal}"
        bad.append(f"{why} after {run.seconds:.1f} s")
    elif run.code not in (0, 1, 2):
        bad.append(f"exit code {run.code}")
    if "Traceback" in run.err:
        bad.append("traceback: " + run.err.strip().splitlines()[-1][:200])
    if run.code not in (0, None):
        lines = run.err.splitlines()
        if len(lines) != 1 or not lines[0].startswith("blkjournal: "):
            if run.code == 1 and not run.err:
                pass  # exit 1 = problems found, reported on stdout (fsck findings, illegal states)
            else:
                bad.append(f"stderr is not one 'blkjournal: ' line: {run.err[:200]!r}")
    if run.growth > MEM_LIMIT:
        bad.append(f"grew by {run.growth >> 20} MiB")
    if run.seconds > TIME_LIMIT:
        bad.append(f"took {run.seconds:.1f} s")
    return bad


class Checker:
    """Runs commands for one fuzz input and collects every contract violation (with the input)."""

    def __init__(self, target: str, data: bytes, save_dir: str | None = None) -> None:
        self.target, self.data, self.save_dir = target, data, save_dir
        self.found: list[str] = []

    def run(self, *args, readonly: tuple[str, ...] = (), stdin: bytes = b"", expect: tuple = ()) -> Run:
        before = {p: sha(p) for p in readonly if os.path.exists(p)}
        run = run_cli(*args, stdin=stdin)
        bad = problems(run)
        for p, h in before.items():
            if sha(p) != h:
                bad.append(f"wrote to {os.path.basename(p)} (read-only command)")
        if expect and run.code not in expect:
            bad.append(f"exit {run.code}, expected one of {expect}: {run.err.strip()[:200]}")
        for b in bad:
            self.found.append(f"{' '.join(os.path.basename(a) if os.sep in a else a for a in args)}: {b}")
        return run

    def done(self) -> list[str]:
        """Record (and save) this input's findings; returns them."""
        STATS.inputs += 1
        if self.found:
            STATS.failures.append({"target": self.target, "found": self.found})
            if self.save_dir:
                d = os.path.join(self.save_dir, self.target)
                os.makedirs(d, exist_ok=True)
                name = hashlib.sha256(self.data).hexdigest()[:16]
                with open(os.path.join(d, name), "wb") as f:
                    f.write(self.data)
                with open(os.path.join(d, name + ".txt"), "w") as f:
                    f.write("\n".join(self.found) + "\n")
        return self.found


def write_summary(path: str) -> None:
    with open(path, "w") as f:
        json.dump(STATS.summary(), f, indent=2)
