"""`make faults` (python -m bench.faults): the fault explorer over seeds and configurations.

For journal and ordered under flush and fua, `--seeds` seeds x `--ops` ops: record, explore the
crash states, inject every fault kind (`--samples` per kind, seeded), and total silent
corruptions, detected, harmless, undetectable and crashed per configuration, with coverage and
time.  `--weak` sets BLKJOURNAL_WEAK_DETECTION=1 (the store without address and generation
checks), which must show silent corruptions.  Writes a Markdown table to stdout and, with
`--json`, every run's tally.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from blkjournal.crash.explore import crashtest
from blkjournal.crash.faults import KINDS, OUTCOMES

CONFIGS = [("journal", "flush"), ("journal", "fua"), ("ordered", "flush"), ("ordered", "fua")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--ops", type=int, default=200)
    ap.add_argument("--samples", type=int, default=100, help="faults per kind and run")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--weak", action="store_true", help="BLKJOURNAL_WEAK_DETECTION=1")
    ap.add_argument("--json", help="write every run's fault tally here")
    ap.add_argument("--config", action="append", help="protocol/barrier (default: all four)")
    a = ap.parse_args()
    if a.weak:
        os.environ["BLKJOURNAL_WEAK_DETECTION"] = "1"
    configs = [tuple(c.split("/")) for c in a.config] if a.config else CONFIGS
    runs = []
    print("| config | runs | injected | silent | detected | harmless | undetectable | crashed | coverage | "
          "illegal (no fault) | seconds |\n|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for protocol, barrier in configs:
        tot = {o: 0 for o in OUTCOMES} | {"injected": 0, "candidates": 0, "illegal": 0}
        by_kind = {k: {o: 0 for o in OUTCOMES} for k in KINDS}
        t0 = time.monotonic()
        for seed in range(a.seeds):
            with tempfile.TemporaryDirectory(dir=os.environ.get("BLKJOURNAL_TMP", "/var/tmp")) as work:
                res, _ = crashtest(work, protocol=protocol, barrier=barrier, nops=a.ops, seed=seed, jobs=a.jobs,
                                   faults=KINDS, fault_samples=a.samples)
            fx = res.faults
            runs.append({"protocol": protocol, "barrier": barrier, "seed": seed, "illegal": res.illegal,
                         "seconds": round(res.seconds, 2), "faults": fx})
            for k in tot:
                tot[k] += res.illegal if k == "illegal" else fx[k]
            for kind, row in fx["by_kind"].items():
                for o in OUTCOMES:
                    by_kind[kind][o] += row[o]
        cov = tot["injected"] / tot["candidates"] if tot["candidates"] else 1.0
        print(f"| {protocol}/{barrier} | {a.seeds} x {a.ops} ops | {tot['injected']} | {tot['silent_corruptions']} | "
              f"{tot['detected']} | {tot['harmless']} | {tot['undetectable']} | {tot['crashed']} | {cov:.4f} | "
              f"{tot['illegal']} | {time.monotonic() - t0:.0f} |", flush=True)
        for kind, row in by_kind.items():
            print(f"|   {kind} | | | {row['silent_corruptions']} | {row['detected']} | {row['harmless']} | "
                  f"{row['undetectable']} | {row['crashed']} | | | |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
