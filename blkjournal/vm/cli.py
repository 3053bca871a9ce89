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

from blkjournal.errors import BlkError

vm_app = typer.Typer(help="The qemu guest: a Debian kernel with dm-log-writes and dm-flakey.",
                     no_args_is_help=True)


def _fail(e: BlkError) -> None:
    typer.echo(f"blkjournal: {e}", err=True)
    raise typer.Exit(e.exit_code)


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
        _fail(e)
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
          memory: str = typer.Option("512M", help="Guest memory.")) -> None:
    """An interactive shell in the guest (chrooted in the host's read-only root; DM_DISABLE_UDEV=1)."""
    from blkjournal.vm.qemu import shell_guest
    try:
        code = shell_guest(disks=_disks(disk), sector_size=sector_size, results_dir=results, memory=memory)
    except BlkError as e:
        _fail(e)
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
            _fail(e)
        out_path = os.path.join(tmp, "results", "selftest.json")
        if os.path.exists(out_path):
            typer.echo(open(out_path).read().rstrip())
        typer.echo(f"guest exit {result.exit_code} after {result.elapsed:.1f} s", err=True)
        if result.exit_code != 0:
            typer.echo(result.console_tail(), err=True)
        raise typer.Exit(0 if result.exit_code == 0 else 1)


if __name__ == "__main__":
    vm_app()
