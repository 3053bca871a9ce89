"""`blkjournal log show` and `blkjournal replay`: a thin shell over logwrites/states/image.

Bad input (a missing or corrupt log, an unknown mark, an entry out of range) is one line on
stderr and exit code 2, never a traceback, because these commands are pointed at logs that came
back from VMs and other machines and are often truncated.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import typer

from ..errors import BlkError, fail
from .logwrites import read_log
from .recorder import read_sidecar, sidecar_path
from .states import prefix_overlay

log_app = typer.Typer(help="Inspect dm-log-writes logs (from the recorder or the kernel target).",
                      no_args_is_help=True, add_completion=False)


@log_app.callback()
def _log_group() -> None:
    """Inspect dm-log-writes logs (from the recorder or the kernel target)."""




@log_app.command("show")
def show(log: str = typer.Argument(..., help="dm-log-writes log file."),
         json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List every entry: flags, sectors, mark text, and the roles of the writes (from the sidecar)."""
    try:
        lg = read_log(log)
        sc_path = sidecar_path(log)
        sc = read_sidecar(sc_path) if os.path.exists(sc_path) else None
    except BlkError as e:
        raise fail(e) from None
    by_entry = sc.by_entry() if sc else {}
    rows = []
    for e in lg.entries:
        row = {"index": e.index, "offset": e.offset, "flags": e.flags, "flag_names": e.flag_names,
               "sector": e.sector, "nr_sectors": e.nr_sectors, "data_len": e.data_len}
        if e.is_mark:
            row["mark"] = e.mark
        row["ops"] = [{"seq": op.seq, "kind": op.kind, "role": op.role} for op in by_entry.get(e.index, [])]
        rows.append(row)
    if json_out:
        typer.echo(json.dumps({"log": log, "sectorsize": lg.sectorsize, "nr_entries": lg.nr_entries,
                               "trailing_bytes": lg.trailing_bytes, "sidecar": sc_path if sc else None,
                               "entries": rows}, indent=2))
        return
    typer.echo(f"{log}: {lg.nr_entries} entries, sectorsize {lg.sectorsize}, "
               + (f"sidecar {sc_path}" if sc else "no sidecar (submission order unknown)"))
    typer.echo(f"{'#':>6} {'offset':>10} {'flags':<14} {'sector':>10} {'sectors':>7}  detail")
    for r in rows:
        detail = repr(r["mark"]) if "mark" in r else ""
        roles = "; ".join(f"seq {op['seq']}" + (f" {op['role']}" if op["role"] else "") for op in r["ops"])
        detail = "  ".join(x for x in (detail, roles) if x)
        typer.echo(f"{r['index']:>6} {r['offset']:>10} {r['flag_names']:<14} {r['sector']:>10} "
                   f"{r['nr_sectors']:>7}  {detail}".rstrip())


def replay_cmd(log: str = typer.Argument(..., help="dm-log-writes log file."),
               out: str = typer.Option(..., "--out", help="Image file to write."),
               entry: Optional[int] = typer.Option(None, "--entry", help="Replay entries 0..K (inclusive)."),
               mark: Optional[str] = typer.Option(None, "--mark", help="Replay up to and including this mark."),
               base: Optional[str] = typer.Option(None, "--base", help="Image the run started from "
                                                  "(default: zeros, sized to the highest sector written)."),
               state: Optional[str] = typer.Option(None, "--state", help="A crash state id from a crashtest "
                                                   "report (e.g. P12-1a): write that crash state instead."),
               torn: bool = typer.Option(False, "--torn", help="The state id is from a --torn exploration.")
               ) -> None:
    """Write the image a prefix of the log leaves on the device (log order, like fstests replay-log).

    Plain writes are logged at the next flush, so --mark M shows what had been flushed or
    FUA-written when M was set; the crash states in between are the crash explorer's job.
    """
    try:
        if sum(x is not None for x in (entry, mark, state)) > 1:
            raise BlkError("give one of --entry, --mark, --state")
        if state is not None:
            from .states import load

            ov = load(log, base=base, torn=torn).state(state).overlay()
            ov.materialize(out)
            typer.echo(f"{out}: crash state {state} of {log} ({ov.nblocks} blocks)")
            return
        lg = read_log(log)
        if not lg.entries:
            raise BlkError(f"{log}: the log has no entries")
        k = lg.find_mark(mark) if mark is not None else len(lg.entries) - 1 if entry is None else entry
        sc_path = sidecar_path(log)
        nblocks = read_sidecar(sc_path).nblocks if base is None and os.path.exists(sc_path) else None
        ov = prefix_overlay(lg, k, base, nblocks=nblocks)
        ov.materialize(out)
    except BlkError as e:
        raise fail(e) from None
    typer.echo(f"{out}: entries 0..{k} of {log} replayed onto {base or 'zeros'} ({ov.nblocks} blocks)")


def replay_app() -> typer.Typer:
    """A standalone app with just `replay` (for running this module on its own)."""
    app = typer.Typer(add_completion=False)
    app.command("replay")(replay_cmd)
    return app
