"""Merge the shard reports of one exploration (`blkjournal report merge`): the CI matrix's reduce step.

`crashtest --shard i/N` explores every N-th crash-point segment, so shards share nothing but the
run they explore.  Each shard records its own log (the store's uuid and times differ, the I/O does
not), so a run is identified by what the explorer depends on: the log's shape (every entry's flags,
sectors and mark; not its payloads), the workload's ops, protocol, barrier, seed, bound and tears.
Shards of different runs, a missing shard or one given twice are refused (exit 2) rather than
merged into totals that mean nothing.  Counts add exactly (huge ints stay ints); coverage is the
ratio of the summed numerators and denominators, never an average of ratios.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

from ..errors import BlkError
from .clusters import merge_clusters

IDENTITY = ("protocol", "barrier", "seed", "ops")  # top-level keys every shard must share
RUN_IDENTITY = ("log_shape", "workload", "bound", "torn", "segments", "points")
SUMS = ("crash_points", "states_checked", "illegal", "illegal_states", "states_enumerated", "states_covered")
REPORT_FORMAT = "blkjournal-crashtest"
# The exact count of legal crash states may be thousands of digits long (a `grow` run: 1,212), past
# Python's default of 4,300 for int <-> str; parsing is quadratic in the digits, so the limit stays
# finite: 100,000 digits parse in about 0.2 s, and no exploration this tool can run comes near.
MAX_COUNT_DIGITS = 100_000
MAX_REPORT_BYTES = 64 << 20  # a 200-op shard report is well under 1 MiB; bounds what json.load holds


def log_shape(log) -> str:
    """A digest of the log's structure: what decides the crash points, segments and state ids."""
    h = hashlib.sha256(f"{log.sectorsize}\n".encode())
    for e in log.entries:
        h.update(f"{e.flags} {e.sector} {e.nr_sectors} {e.mark if e.is_mark else ''}\n".encode())
    return h.hexdigest()[:16]


def run_identity(log, ops, *, bound: int, torn: bool, shard: tuple[int, int], nsegments: int,
                 npoints: int) -> dict:
    """What a shard report carries so `merge` can tell shards of the same run."""
    wl = None
    if ops is not None:
        wl = hashlib.sha256(json.dumps([o.to_json() for o in ops], sort_keys=True).encode()).hexdigest()[:16]
    return {"log_shape": log_shape(log), "workload": wl, "bound": bound, "torn": torn,
            "shard": [shard[0], shard[1]], "segments": nsegments, "points": npoints}


def load_report(path: str) -> dict:
    """A shard report, checked before it is trusted: bounded in size, digits and nesting."""
    sys.set_int_max_str_digits(MAX_COUNT_DIGITS)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_REPORT_BYTES:
                raise BlkError(f"{path}: larger than {MAX_REPORT_BYTES >> 20} MiB, not a shard report")
            doc = json.load(f)
    except OSError as e:
        raise BlkError(f"{path}: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise BlkError(f"{path}: not a JSON report ({str(e)[:80]})") from None
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT or not isinstance(doc.get("run"), dict):
        raise BlkError(f"{path}: not a crashtest shard report (write one with crashtest --json)")
    try:
        i, n = doc["run"]["shard"]
        if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
            raise ValueError
        for k in SUMS:
            if not isinstance(doc[k], int) or doc[k] < 0:
                raise ValueError
    except (KeyError, TypeError, ValueError):
        raise BlkError(f"{path}: a report without valid shard and totals") from None
    return doc


def merge_reports(docs: list[dict], paths: list[str]) -> dict:
    """One report from the shards of one run; BlkError (exit 2) unless they are exactly its shards."""
    if not docs:
        raise BlkError("no shard reports given")
    first, p0 = docs[0], paths[0]
    for doc, path in zip(docs[1:], paths[1:]):
        for k in IDENTITY:
            if doc.get(k) != first.get(k):
                raise BlkError(f"{path} is from another run than {p0}: {k} {doc.get(k)!r} != {first.get(k)!r}")
        for k in RUN_IDENTITY:
            if doc["run"].get(k) != first["run"].get(k):
                raise BlkError(f"{path} is from another run than {p0}: {k} {doc['run'].get(k)!r} != "
                               f"{first['run'].get(k)!r}")
    n = first["run"]["shard"][1]
    seen: dict[int, str] = {}
    for doc, path in zip(docs, paths):
        i, m = doc["run"]["shard"]
        if m != n:
            raise BlkError(f"{path} is shard {i}/{m}, {p0} is one of {n}")
        if i in seen:
            raise BlkError(f"shard {i}/{n} given twice: {seen[i]} and {path}")
        seen[i] = path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise BlkError(f"missing shard{'s' if len(missing) > 1 else ''} {', '.join(f'{i}/{n}' for i in missing)}")
    out = {k: v for k, v in first.items() if k in IDENTITY or k in ("format", "kernel", "notes")}
    out["run"] = {**first["run"], "shard": [0, 1], "merged_from": n}
    for k in SUMS:
        out[k] = sum(d[k] for d in docs)
    legal, covered = out["states_enumerated"], out["states_covered"]
    out["coverage"] = covered / legal if legal else 1.0
    out["seconds"] = round(sum(d.get("seconds", 0) for d in docs), 3)
    out["failing_points"] = sorted({p for d in docs for p in d.get("failing_points", [])})
    out["failures"] = sorted((f for d in docs for f in d.get("failures", [])), key=lambda f: (f["point"], f["state"]))
    out["clusters"] = merge_clusters([d.get("clusters", []) for d in docs])
    out["notes"] = list(dict.fromkeys(x for d in docs for x in d.get("notes", [])))
    out["shards"] = [{"shard": d["run"]["shard"][0], "path": p, "crash_points": d["crash_points"],
                      "states_checked": d["states_checked"], "illegal": d["illegal"], "seconds": d.get("seconds")}
                     for d, p in sorted(zip(docs, paths), key=lambda dp: dp[0]["run"]["shard"][0])]
    timeline = first.get("timeline")
    if timeline:
        bad = set(out["failing_points"])
        cuts = {c[1]: c for d in docs for c in (d.get("timeline") or {}).get("cuts", [])}
        out["timeline"] = {**timeline, "cuts": [[c[0], pi, pi not in bad] for pi, c in sorted(cuts.items())]}
    out["states_per_second"] = round(out["states_checked"] / out["seconds"], 1) if out["seconds"] else None
    fx = [d.get("faults") for d in docs]
    if any(f is not None for f in fx):
        if any(f is None or _fault_run(f) != _fault_run(fx[0]) for f in fx):
            raise BlkError("the shards were not all run with the same --faults, --fault-samples and --fault-at")
        out["faults"] = merge_faults(fx)
    return out


def _fault_run(fx: dict) -> tuple:
    return fx.get("kinds"), fx.get("samples_per_kind"), fx.get("seed"), fx.get("fault_at")


def _add_counts(into: dict, more: dict) -> None:
    for k, v in more.items():
        if isinstance(v, int) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v


def merge_faults(fxs: list[dict]) -> dict:
    """The fault tallies of the shards (faults.py) as one: counts add, coverage from the sums."""
    out = {k: v for k, v in fxs[0].items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
    out.update(by_kind={}, detected_by={}, findings={}, examples=[], notes=[])
    for k in ("kinds", "samples_per_kind", "seed", "fault_at"):
        out[k] = fxs[0].get(k)
    for fx in fxs:
        _add_counts(out, {k: v for k, v in fx.items() if k not in ("samples_per_kind", "seed")})
        for kind, k in fx.get("by_kind", {}).items():
            _add_counts(out["by_kind"].setdefault(kind, {}), k)
        _add_counts(out["detected_by"], fx.get("detected_by", {}))
        _add_counts(out["findings"], fx.get("findings", {}))
        out["examples"] += fx.get("examples", [])
        out["notes"] += [n for n in fx.get("notes", []) if n not in out["notes"]]
    for k in [out, *out["by_kind"].values()]:
        k["coverage"] = round(k.get("injected", 0) / k["candidates"], 6) if k.get("candidates") else 1.0
    out["seconds"] = round(sum(fx.get("seconds", 0) for fx in fxs), 2)
    return out
