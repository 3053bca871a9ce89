"""`blkjournal vm ...`: build the guest, open a shell in it, run its self-test.

A thin shell over blkjournal.vm.build and blkjournal.vm.qemu; the lead mounts `vm_app` on the main CLI.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import List, Optional

import typer

from blkjournal.errors import BlkError, fail

vm_app = typer.Typer(help="The qemu guest: a Debian kernel with dm-log-writes and dm-flakey.",
                     no_args_is_help=True)




def _recipe():
    from blkjournal.vm.recipe import current
    return current()


def _disks(paths: List[str]):
    from blkjournal.vm.qemu import Disk
    return [Disk(p) for p in paths]


@vm_app.command()
def build(refresh: bool = typer.Option(False, help="Ask apt for the newest kernel and build it if new."),
          as_json: bool = typer.Option(False, "--json", help="Print the paths as JSON.")) -> None:
    """Build (or find in the cache) the guest kernel and initramfs; print their paths."""
    from blkjournal.vm.build import build_guest, cache_root
    try:
        img = build_guest(refresh=refresh, log=lambda m: typer.echo(m, err=True))
    except BlkError as e:
        raise fail(e)
    info = {"kernel": img.kernel, "initrd": img.initrd, "vmlinuz": img.vmlinuz,
            "kernel_release": img.kernel_release, "package": f"{img.package} {img.package_version}",
            "modules": list(img.modules), "cache": str(cache_root())}
    if as_json:
        typer.echo(json.dumps(info, indent=1))
    else:
        for k, v in info.items():
            typer.echo(f"{k:15} {' '.join(v) if isinstance(v, list) else v}")


@vm_app.command()
def shell(disk: List[str] = typer.Option([], "--disk", help="Image file or nbd:unix:SOCK; repeatable: "
                                                            "/dev/vda, /dev/vdb, ... in order."),
          sector_size: int = typer.Option(512, help="Logical and physical block size of the disks."),
          results: Optional[str] = typer.Option(None, help="Host directory shared read-write at the same path."),
          memory: Optional[str] = typer.Option(None, help="Guest memory (default: vm/guest.toml's).")) -> None:
    """An interactive shell in the guest (chrooted in the host's read-only root; DM_DISABLE_UDEV=1)."""
    from blkjournal.vm.qemu import shell_guest
    try:
        code = shell_guest(disks=_disks(disk), sector_size=sector_size, results_dir=results, memory=memory)
    except BlkError as e:
        raise fail(e)
    raise typer.Exit(code)


@vm_app.command()
def selftest(sector_size: int = typer.Option(512, help="Logical block size of the two scratch disks."),
             timeout: float = typer.Option(120, help="Seconds before the guest counts as hung."),
             verbose: bool = typer.Option(False, "-v", help="Copy the guest console to stderr.")) -> None:
    """Boot once: dm-log-writes and dm-flakey on two scratch images; print the result JSON."""
    from blkjournal.vm.qemu import Disk, run_scenario
    with tempfile.TemporaryDirectory(prefix="blkjournal-selftest-", dir="/var/tmp") as tmp:
        disks = []
        for name in ("data.img", "log.img"):
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.truncate(64 << 20)
            disks.append(Disk(path))
        try:
            result = run_scenario("selftest", disks=disks, timeout=timeout, sector_size=sector_size,
                                  results_dir=os.path.join(tmp, "results"), check=False,
                                  echo=sys.stderr if verbose else None)
        except BlkError as e:
            raise fail(e)
        out_path = os.path.join(tmp, "results", "selftest.json")
        if os.path.exists(out_path):
            typer.echo(open(out_path).read().rstrip())
        typer.echo(f"guest exit {result.exit_code} after {result.elapsed:.1f} s", err=True)
        if result.exit_code != 0:
            typer.echo(result.console_tail(), err=True)
        raise typer.Exit(0 if result.exit_code == 0 else 1)


PROTOCOLS = ("journal", "ordered", "none")
BARRIERS = ("flush", "fua")


def _check_choice(what: str, value: str, choices) -> None:
    if value not in choices:
        raise fail(BlkError(f"unknown {what} {value!r} (one of: {', '.join(map(str, choices))})"))


@vm_app.command()
def record(protocol: str = typer.Option(..., "--protocol", help="journal | ordered | none"),
           barrier: str = typer.Option("flush", "--barrier", help="flush | fua"),
           ops: int = typer.Option(40, "--ops", help="Number of random workload ops."),
           seed: int = typer.Option(0, "--seed", help="Workload seed (the same ops the host explorer would run)."),
           sector_size: int = typer.Option(512, "--sector-size", help="Logical block size of the guest disks."),
           out: str = typer.Option(..., "--out", help="Where the kernel's log goes; LOG.workload.json and "
                                                        "LOG.roles (the sidecar) are written beside it."),
           size: Optional[int] = typer.Option(None, "--size", help="Data device size in bytes (default: "
                                              "vm/guest.toml's disks.data)."),
           check: bool = typer.Option(True, "--check/--no-check", help="Explore the log afterwards "
                                                                          "(what `blkjournal check-log LOG` does)."),
           bound: int = typer.Option(4096, help="Crash states checked per segment at most."),
           jobs: int = typer.Option(os.cpu_count() or 1, help="Processes for the exploration."),
           timeout: float = typer.Option(300, help="Seconds before the guest counts as hung."),
           verbose: bool = typer.Option(False, "-v", help="Copy the guest console to stderr.")) -> None:
    """Record a workload through the kernel's dm-log-writes in the guest, then check every crash state."""
    from blkjournal.vm.qemu import SECTOR_SIZES
    from blkjournal.vm.record import record_command

    _check_choice("protocol", protocol, PROTOCOLS)
    _check_choice("barrier", barrier, BARRIERS)
    _check_choice("sector size", sector_size, SECTOR_SIZES)
    if ops < 1:
        raise fail(BlkError("--ops must be at least 1"))
    try:
        size = size or _recipe().data_size
        rec, res, vm_seconds = record_command(protocol, barrier, ops, seed, sector_size, out, size=size,
                                              timeout=timeout, bound=bound, jobs=jobs, explore=check,
                                              echo=sys.stderr if verbose else None)
    except BlkError as e:
        raise fail(e)
    typer.echo(f"{out}: {rec.entries} entries logged by the kernel's dm-log-writes ({protocol}/{barrier}, "
               f"seed {seed}, {ops} ops, sector size {sector_size}); VM {vm_seconds:.1f} s, workload in the "
               f"guest {rec.guest_seconds:.1f} s; sidecar {out}.roles checked entry by entry against the log",
               err=True)
    if res is None:
        return
    from blkjournal.crash.report import print_summary

    print_summary(res)
    if not res.ok:
        raise typer.Exit(1)


@vm_app.command()
def flakey(protocol: List[str] = typer.Option(..., "--protocol", help="journal | ordered | none; repeat to "
                                                                      "run several in the same boot."),
           barrier: str = typer.Option("flush", "--barrier", help="flush | fua"),
           cuts: int = typer.Option(10, "--cuts", help="Power cuts per protocol (all in one boot)."),
           seed: int = typer.Option(0, "--seed", help="Seed of the workload and of the cut points."),
           ops: int = typer.Option(40, "--ops", help="Number of random workload ops."),
           after: int = typer.Option(3, "--after", help="Ops the workload runs on after the cut (dropped)."),
           sector_size: int = typer.Option(512, "--sector-size", help="Logical block size of the guest disk."),
           size: Optional[int] = typer.Option(None, "--size", help="Data device size per cut in bytes (default: "
                                              "vm/guest.toml's disks.data)."),
           json_out: Optional[str] = typer.Option(None, "--json", help="Write every cut's result here."),
           timeout: float = typer.Option(300, help="Seconds before the guest counts as hung."),
           verbose: bool = typer.Option(False, "-v", help="Copy the guest console to stderr.")) -> None:
    """Power cuts inside operations through dm-flakey in the guest; recover, fsck and judge each.

    Exit 1 if any cut leaves an illegal state.
    """
    from blkjournal.vm.flakey import Config, flakey_in_vm, format_table
    from blkjournal.vm.qemu import SECTOR_SIZES

    for p in protocol:
        _check_choice("protocol", p, PROTOCOLS)
    _check_choice("barrier", barrier, BARRIERS)
    _check_choice("sector size", sector_size, SECTOR_SIZES)
    if ops < 1 or cuts < 1 or after < 0:
        raise fail(BlkError("--ops and --cuts must be at least 1, --after at least 0"))
    try:
        size = size or _recipe().data_size
        rows, vm_seconds = flakey_in_vm([Config(p, barrier) for p in dict.fromkeys(protocol)], cuts=cuts,
                                        seed=seed, nops=ops, size=size, sector_size=sector_size, after=after,
                                        timeout=timeout, echo=sys.stderr if verbose else None)
    except BlkError as e:
        raise fail(e)
    typer.echo(format_table(rows))
    for p in dict.fromkeys(protocol):
        mine = [r for r in rows if r["protocol"] == p]
        ok = sum(r["legal"] for r in mine)
        typer.echo(f"{p}/{barrier}: {ok}/{len(mine)} cuts survived (seed {seed}, {ops} ops)")
    typer.echo(f"one boot, {vm_seconds:.1f} s", err=True)
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"seed": seed, "ops": ops, "barrier": barrier, "kernel": rows[0].get("kernel") if rows else None,
                       "cuts": rows}, f, indent=1)
    if not all(r["legal"] for r in rows):
        raise typer.Exit(1)


if __name__ == "__main__":
    vm_app()
