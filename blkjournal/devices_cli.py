"""`blkjournal devices`: which disks exist, what durability they offer, and which we may use.

The listing runs the same read-only checks as `check_safe`, so "safe: yes" here means a later
`format` on that device is not refused (and "with --force" means only a signature stands in the way).
"""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import BlkError
from .properties import DeviceProperties, list_block_devices
from .safety import Verdict, assess


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _verdict(props: DeviceProperties) -> Verdict:
    try:
        return assess(props.path)
    except BlkError as e:
        return Verdict(props.path, blocking=(str(e),))


def _safety_text(v: Verdict) -> str:
    if v.blocking:
        return "no: " + "; ".join(v.blocking)
    if v.signatures:
        return "with --force: " + "; ".join(v.signatures)
    return "yes (blkjournal store)" if v.own_store else "yes"


def _yn(b: bool | None) -> str:
    return "?" if b is None else ("yes" if b else "no")


def devices(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List block devices with their write cache, FUA support and whether blkjournal may use them."""
    rows = [(p, _verdict(p)) for p in list_block_devices()]
    if json_out:
        out = [
            {**asdict(p), "fua_mode": p.fua_mode, "mounted": list(v.mounts), "safe": v.safe,
             "safe_with_force": v.allowed(force=True), "blkjournal_store": v.own_store,
             "refused_because": list(v.blocking + v.signatures), "notes": list(v.notes)}
            for p, v in rows
        ]
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title="Block devices")
    for col in ("Device", "Size", "Mounted", "Write cache", "FUA", "Rot."):
        table.add_column(col, no_wrap=True)
    table.add_column("Model", overflow="fold")
    table.add_column("Safe to use", overflow="fold", ratio=1)
    for p, v in rows:
        fua = "n/a" if p.write_cache == "write through" else _yn(p.fua)
        style = "green" if v.safe else ("yellow" if v.allowed(force=True) else "red")
        cells = [
            p.path + (" (ro)" if p.read_only else ""),
            _size(p.size),
            ", ".join(v.mounts) or "-",
            p.write_cache or "?",
            fua,
            _yn(p.rotational),
            p.model or (f"loop: {p.backing_file}" if p.backing_file else "-"),
        ]
        # Text, not markup: "[swap]" or a path with brackets must print as-is.
        table.add_row(*map(Text, cells), Text(_safety_text(v), style=style))
    if not rows:
        typer.echo("no block devices found")
        return
    Console().print(table)


if __name__ == "__main__":
    typer.run(devices)
