"""The guest side of `hwcheck vmtrial`: run each planned trial's `hwcheck write` in one interpreter.

Kept apart from vmtrial.py (the host side) because it drives the hwcheck CLI itself, which in turn
imports vmtrial for its `vmtrial` command: one module each way keeps the import graph acyclic.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from .cli import hwcheck_app


def _run_cli(argv: list[str], out_path: str) -> int:
    """`python -m blkjournal.hwcheck ARGV` in this process (stdout and stderr into out_path): its exit code."""
    with open(out_path, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            hwcheck_app(argv, prog_name="blkjournal hwcheck")
        except SystemExit as e:
            code = e.code
            return code if isinstance(code, int) else (0 if code is None else 1)
        except Exception as e:  # noqa: BLE001 - reported as the trial's failure, the next trial still runs
            print(f"vmtrial: {type(e).__name__}: {e}", file=out)
            return 3
    return 0


def guest_main(plan_path: str) -> int:
    """In the guest: run every trial's `hwcheck write` one after the other, in one interpreter.

    One interpreter because a Python start with these imports costs several seconds per trial under
    TCG (9p lookups); the writer is the very CLI command `python -m blkjournal.hwcheck write` runs.
    Each trial's exit code goes to DIR/exit (the host's cutter watches for it), its output to
    DIR/writer.out, its last line to the console.
    """
    with open(plan_path) as f:
        plan = json.load(f)
    for trial in plan["trials"]:
        print(f"vmtrial: {trial['label']}", flush=True)
        out = os.path.join(trial["dir"], "writer.out")
        code = _run_cli(trial["argv"], out)
        with open(os.path.join(trial["dir"], "exit"), "w") as f:
            f.write(f"{code}\n")
        with open(out) as f:
            last = (f.read().strip().splitlines() or [""])[-1]
        print(f"vmtrial: exit {code}: {last}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage (in the guest): python -m blkjournal.hwcheck.guestrun PLAN.json", file=sys.stderr)
        sys.exit(2)
    sys.exit(guest_main(sys.argv[1]))
