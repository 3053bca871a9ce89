"""The command line: a thin shell over the library.  Every error is one line and an exit code.

Exit codes: 0 ok / clean, 1 problems found (fsck findings, illegal crash states, a lying disk),
2 bad input or a refused operation (nothing written).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

import typer

from . import __version__
from .device import Device
from .errors import BlkError
from .format import BARRIERS, PROTOCOLS, is_own_store

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="A crash-consistent file store on a raw block device, and the harness that proves it.")


def parse_size(text: str) -> int:
    """'64M', '1G', '4096', '4k' -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise BlkError(f"bad size {text!r} (e.g. 4096, 64M, 1G)") from None


def _open_store(dev_path: str, *, readonly: bool = False):
    from .store import Store

    dev = Device(dev_path, readonly=readonly)
    try:
        return Store.open(dev, recover=not readonly)
    except BaseException:
        dev.close()
        raise


def _read_input(src: Optional[str]) -> bytes:
    if src is None or src == "-":
        return sys.stdin.buffer.read()
    try:
        with open(src, "rb") as f:
            return f.read()
    except OSError as e:
        raise BlkError(f"{src}: {e.strerror}") from None


@app.command()
def mkfs(dev: str = typer.Argument(..., help="block device or image file"),
         size: Optional[str] = typer.Option(None, help="create a new image file of this size (e.g. 64M)"),
         protocol: str = typer.Option("journal", help="|".join(PROTOCOLS)),
         barrier: str = typer.Option("flush", help="|".join(BARRIERS)),
         force: bool = typer.Option(False, "--force", help="overwrite a file-system or partition signature")):
    """Format DEV as a blkjournal store."""
    from .safety import check_safe
    from .store import Store

    if protocol not in PROTOCOLS:
        raise BlkError(f"unknown protocol {protocol!r} (choose {', '.join(PROTOCOLS)})")
    if barrier not in BARRIERS:
        raise BlkError(f"unknown barrier kind {barrier!r} (choose {', '.join(BARRIERS)})")
    create = parse_size(size) if size else None
    if not os.path.exists(dev) and create is None:
        raise BlkError(f"{dev} does not exist (give --size to create an image file)")
    if os.path.exists(dev):
        check_safe(dev, force=force, is_own_store=lambda p: False)
        if is_own_store(dev) and not force:
            raise BlkError(f"refusing {dev}: it already holds a blkjournal store (use --force to reformat)")
    with Device(dev, create_size=create) as d:
        s = Store.mkfs(d, protocol, barrier)
        typer.echo(f"{dev}: {s.sb.nblocks} blocks, protocol {protocol}, barrier {barrier}, "
                   f"journal {s.sb.journal_blocks} blocks, up to {s.sb.max_files} files")


@app.command()
def info(dev: str, json_out: bool = typer.Option(False, "--json")):
    """Show the superblock, geometry and usage."""
    from dataclasses import asdict

    from .properties import probe

    s = _open_store(dev, readonly=True)
    with s.dev:
        sb = asdict(s.sb)
        sb["uuid"] = s.sb.uuid.hex()
        out = {"superblock": sb, "files": len(s.files), "free_blocks": s.freelist.nfree,
               "device": asdict(probe(dev))}
    if json_out:
        typer.echo(json.dumps(out, indent=2, default=str))
    else:
        for k, v in out["superblock"].items():
            typer.echo(f"{k:16} {v}")
        typer.echo(f"{'files':16} {out['files']}")
        typer.echo(f"{'free blocks':16} {out['free_blocks']}")


@app.command()
def put(dev: str, name: str, from_: Optional[str] = typer.Option(None, "--from", help="FILE or - (stdin)")):
    """Store a whole file under NAME (replacing it), durably."""
    data = _read_input(from_)
    s = _open_store(dev)
    with s.dev:
        s.put(name, data)
        s.sync()
        s.close()  # a clean shutdown: no used-list leftovers for fsck to call a leak


@app.command()
def get(dev: str, name: str, to: Optional[str] = typer.Option(None, "--to", help="FILE or - (stdout)")):
    """Read file NAME."""
    s = _open_store(dev, readonly=True)
    with s.dev:
        data = s.read(name)
    if to is None or to == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        with open(to, "wb") as f:
            f.write(data)


@app.command("ls")
def ls_(dev: str, json_out: bool = typer.Option(False, "--json")):
    """List files."""
    s = _open_store(dev, readonly=True)
    with s.dev:
        rows = s.listing()
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['size']:>12}  {r['name']}")


@app.command()
def rm(dev: str, name: str):
    """Delete file NAME, durably."""
    s = _open_store(dev)
    with s.dev:
        s.remove(name)
        s.sync()
        s.close()  # a clean shutdown: no used-list leftovers for fsck to call a leak


@app.command()
def truncate(dev: str, name: str, size: str):
    """Set the size of NAME (shrinking frees blocks; growing reads zeros), durably."""
    s = _open_store(dev)
    with s.dev:
        s.truncate(name, parse_size(size))
        s.sync()
        s.close()  # a clean shutdown: no used-list leftovers for fsck to call a leak


@app.command()
def write(dev: str, name: str, offset: str = typer.Option(..., help="byte offset"),
          from_: Optional[str] = typer.Option(None, "--from", help="FILE or - (stdin)")):
    """pwrite into an existing file at OFFSET, durably."""
    data = _read_input(from_)
    s = _open_store(dev)
    with s.dev:
        s.write(name, parse_size(offset), data)
        s.sync()
        s.close()  # a clean shutdown: no used-list leftovers for fsck to call a leak


@app.command()
def sync(dev: str):
    """Open (running recovery) and flush."""
    s = _open_store(dev)
    with s.dev:
        s.sync()


@app.command()
def recover(dev: str):
    """Run the protocol's crash recovery and make it durable."""
    from .store import Store

    with Device(dev) as d:
        s = Store.open(d, recover=True)
        for line in getattr(s.protocol, "repairs", []):
            typer.echo(line)
        if getattr(s.protocol, "replayed", 0):
            typer.echo(f"replayed {s.protocol.replayed} committed journal transactions")
        s.sync()
        typer.echo(f"{dev}: recovered, {len(s.files)} files")


@app.command("fsck")
def fsck_(dev: str, repair: bool = typer.Option(False, "--repair", help="fix what is safe to fix"),
          json_out: bool = typer.Option(False, "--json")):
    """Check every invariant; exit 1 when anything is wrong."""
    from .fsck import fsck, repair as do_repair

    with Device(dev, readonly=not repair) as d:
        report = fsck(d)
        done = []
        if repair and not report.clean:
            done = do_repair(d)
            after = fsck(d)
        else:
            after = report
    if json_out:
        out = report.to_json()
        if repair:
            out["repairs"] = done
            out["after_repair"] = after.to_json()
        typer.echo(json.dumps(out, indent=2))
    else:
        for f in report.findings:
            typer.echo(f"{f.code}: {f.message}" + (f" [blocks {', '.join(map(str, f.blocks))}]" if f.blocks else ""))
        typer.echo(f"{dev}: {report.files} files; {report.verdict()}")
        for line in done:
            typer.echo(f"repaired: {line}")
        if repair and not report.clean:
            typer.echo(f"after repair: {after.verdict()}")
    if not report.clean:
        raise typer.Exit(1)


def _mount_subapps() -> None:
    from .devices_cli import devices

    app.command("devices")(devices)


_mount_subapps()


def main() -> None:
    """Run the CLI; click handles usage errors (exit 2), BlkError becomes one line and its exit code."""
    try:
        app()
    except BlkError as e:
        print(f"blkjournal: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as e:
        print(f"blkjournal: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
