"""`blkjournal hwcheck write|verify|listen`: a thin shell over writer, verify and listener.

Exit codes: write 0 when stopped as asked (signal, --duration, --count) or by an I/O error after
at least one ack (the power cut is the experiment); verify 0 honest, 1 violations, 2 bad input
or nothing acked; every command 2 on bad input, with a one-line message and no traceback.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
from contextlib import contextmanager
from enum import Enum
from typing import Optional

import typer

from ..errors import BlkError, error_line, fail

hwcheck_app = typer.Typer(
    help="Does this disk honour FLUSH and FUA across a power cut? write, cut power, verify.",
    no_args_is_help=True,
)


class Barrier(str, Enum):
    flush = "flush"
    fua = "fua"
    none = "none"




@contextmanager
def _stop_on_signals():
    """An event set by SIGINT/SIGTERM, so a stop finishes the current barrier and logs its acks."""
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@hwcheck_app.command()
def write(
    dev: str = typer.Argument(..., help="Block device or image file; everything in the region is overwritten."),
    barrier: Barrier = typer.Option(..., "--barrier", help="flush: fdatasync per batch; fua: every record "
                                    "a FUA write; none: control run, acks without barriers."),
    acks: str = typer.Option(..., "--acks", help="tcp://HOST:PORT of `hwcheck listen`, or a file on another device."),
    threads: int = typer.Option(1, "--threads", help="Writer threads, each on its own part of the region."),
    region: Optional[str] = typer.Option(None, "--region", help="START:LEN in 4 KiB blocks or sizes (0:64M); "
                                         "default the first 64 MiB."),
    batch: int = typer.Option(1, "--batch", help="Records per flush (--barrier flush)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Seconds to run; default until stopped."),
    count: Optional[int] = typer.Option(None, "--count", help="Records per writer, then stop."),
    force: bool = typer.Option(False, "--force", help="Overwrite a device that carries a file system "
                               "or partition table signature (never a mounted or busy one)."),
) -> None:
    """Write generation-stamped records with a barrier each and report every ack off the device."""
    from .writer import WriteOptions
    from .writer import write as run_write

    opts = WriteOptions(barrier.value, threads, region, batch, duration, count)
    try:
        with _stop_on_signals() as stop:
            result = run_write(dev, acks, opts, stop=stop, say=lambda m: typer.echo(m), force=force)
    except BlkError as e:
        raise fail(e)
    typer.echo(result.summary())
    if result.reason == "sink-error" or (result.reason == "io-error" and result.acked == 0):
        raise typer.Exit(2)


@hwcheck_app.command()
def verify(
    dev: str = typer.Argument(..., help="The device (or image) after the power cut."),
    acks: str = typer.Option(..., "--acks", help="The acks file written by `write` or `listen`."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    run: Optional[str] = typer.Option(None, "--run", help="Run id (prefix) in the acks file; default the last run."),
    atomic: Optional[int] = typer.Option(None, "--atomic", help="Atomic write unit in bytes (512..4096); "
                                         "default the device's logical block size at write time."),
) -> None:
    """Classify every block of the run's region: intact, lost, torn, misplaced, ordering; exit 1 on lies."""
    from .acklog import read_run
    from .report import render
    from .verify import verify_device

    try:
        log = read_run(acks, run)
        if atomic is not None:
            if atomic not in (512, 1024, 2048, 4096):
                raise BlkError("--atomic must be 512, 1024, 2048 or 4096")
            log.header = dataclasses.replace(log.header, atomic=atomic)
        report = verify_device(dev, log)
    except BlkError as e:
        raise fail(e)
    typer.echo(json.dumps(report.to_json(), indent=1) if json_out else render(report))
    if report.verdict == "inconclusive":  # exit 2 is an error: it gets the one stderr line every error has
        typer.echo(error_line(report.verdict_line()), err=True)
    raise typer.Exit(report.exit_code)


@hwcheck_app.command()
def listen(
    port: int = typer.Option(..., "--port", help="TCP port; 0 picks a free one (printed)."),
    out: str = typer.Option(..., "--out", help="Acks file to append to (fsynced per line)."),
    bind: str = typer.Option("127.0.0.1", "--bind", help="Address to listen on; 0.0.0.0 for other machines."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Seconds to serve; default until a signal."),
) -> None:
    """Receive acks from writers on other machines and append them durably, as diskchecker's server."""
    from .listener import Listener

    try:
        listener = Listener(out, bind, port)
    except BlkError as e:
        raise fail(e)
    host, actual = listener.address
    typer.echo(f"listening on {host}:{actual}, appending acks to {out}")
    with _stop_on_signals() as stop:
        stats = listener.serve(duration=duration, stop=stop)
    typer.echo(f"stopped: {stats.connections} connections, {stats.lines} lines, {stats.refused} refused")


class VmDisk(str, Enum):
    lying = "lying"
    honest = "honest"


@hwcheck_app.command()
def vmtrial(
    disk: list[VmDisk] = typer.Option(..., "--disk", help="lying: nbdkit fuamode=discard (acks flushes, drops "
                                      "them); honest: fuamode=pass. Repeat for both."),
    barrier: list[Barrier] = typer.Option(..., "--barrier", help="The writer's barrier; repeat for several. "
                                          "none is a control (expected: lies, on either disk)."),
    trials: int = typer.Option(5, "--trials", help="Trials per (disk, barrier) pair; all trials share one boot "
                               "(at most 24 in all)."),
    cut_after: float = typer.Option(1.0, "--cut-after", help="Seconds from the first ack to kill -9 of nbdkit."),
    jitter: float = typer.Option(0.5, "--jitter", help="Plus a random 0..JITTER seconds per trial."),
    region: str = typer.Option("0:8M", "--region", help="The writer's --region; each image is this large."),
    duration: float = typer.Option(20.0, "--duration", help="The writer's --duration: its own stop if no cut comes."),
    threads: int = typer.Option(1, "--threads", help="Writer threads per trial."),
    batch: int = typer.Option(1, "--batch", help="Records per flush (--barrier flush)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the jitter."),
    workdir: Optional[str] = typer.Option(None, "--workdir", help="Keep images, acks logs, console and nbdkit "
                                          "logs here (a disk-backed directory); default a temporary one."),
    json_out: bool = typer.Option(False, "--json", help="Print the trials as JSON (progress goes to stderr)."),
) -> None:
    """Power-cut trials in a qemu guest: nbdkit lying/honest disks, `hwcheck write` in the guest,
    kill -9 of nbdkit after the first ack, verify here. Exit 0 when every trial was a real cut with
    the expected verdict (lying: lies; honest: honest, every acked write intact), 1 otherwise."""
    from .vmtrial import TrialOptions, matrix, run_trials

    try:
        specs = matrix([d.value for d in disk], [b.value for b in barrier], trials)
        opts = TrialOptions(cut_after=cut_after, jitter=jitter, region=region, duration=duration, threads=threads,
                            batch=batch, seed=seed)
        say = (lambda m: typer.echo(m, err=True)) if json_out else (lambda m: typer.echo(m))
        batch_result = run_trials(specs, workdir=workdir, opts=opts, say=say)
    except BlkError as e:
        raise fail(e)
    if json_out:
        typer.echo(json.dumps(batch_result.to_json(), indent=1))
    else:
        good = sum(t.ok for t in batch_result.trials)
        typer.echo(f"{good} of {len(batch_result.trials)} trials as expected; boot {batch_result.boot_s:.1f} s, "
                   f"total {batch_result.total_s:.1f} s")
    raise typer.Exit(0 if batch_result.ok else 1)
