"""`python -m tests.mutants [NAME...] [--jobs N]` (`make mutate`): apply each mutant, run the explorer, print the table.

For each mutant: check it is crash-only (a workload without a crash, closed and reopened, still
reads back the model and fscks clean); then look for an illegal state with the explorer's
default settings over the fixed, seeded mix of workloads (blkjournal.crash.workload.MIX), the
first catch ending the search -- or, for an fsck mutant, run fsck's own tests.  Exit 0 when every
non-equivalent mutant is caught, every equivalent one is not, and every one is crash-only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

from .run import run_one
from . import all_mutants


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mutants")
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    ms = [m for m in all_mutants() if not a.names or m.name in a.names]
    if a.names and len(ms) != len(a.names):
        print(f"unknown mutant among {a.names}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    print(f"{'mutant':38} {'area':9} {'verdict':10} {'caught by':44} {'time':>6}")
    rows = []
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(a.jobs, maxtasksperchild=1) as pool:
        for row in pool.imap(run_one, [m.name for m in ms]):
            rows.append(row)
            print(f"{row['mutant']:38} {row['area']:9} {row['verdict']:10} {row['by'][:44]:44} {row['seconds']:5.1f}s",
                  flush=True)
            for n in row["notes"]:
                print(f"    {n}")
    bad = [r for r in rows if not r["ok"]]
    real = [r for r in rows if r["verdict"] != "equivalent"]
    caught = sum(r["verdict"] == "caught" for r in rows)
    print(f"\n{caught}/{len(real)} non-equivalent mutants caught, {len(rows) - len(real)} equivalent, "
          f"{len(bad)} problems; {time.monotonic() - t0:.0f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
