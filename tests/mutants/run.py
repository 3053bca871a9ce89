"""Running one mutant: the crash-only check, then the explorer over the mix (or the fault explorer,
or fsck's own tests)."""

from __future__ import annotations

import os
import tempfile
import time
import traceback

from blkjournal.crash.explore import crashtest, make_ops
from blkjournal.crash.workload import IMAGE_SIZE, MIX, model_states, run as run_ops
from blkjournal.device import Device
from blkjournal.fsck import fsck
from blkjournal.store import Store

from . import applied, by_name

CRASH_ONLY_WORKLOADS = (("random", 0, 200), ("pressure", 0, 60), ("big", 0, 0), ("grow", 0, 0))
TMP = os.environ.get("BLKJOURNAL_TMP", "/var/tmp")


def crash_only(protocol: str, barrier: str, work: str) -> tuple[list[str], list[str]]:
    """(problems, notes) of crash-free runs with the mutant applied.

    Problems (the mutant is not crash-only): the running store reads back other bytes than the
    model, an operation fails, or fsck of the cleanly closed image finds something outside the
    journal.  Notes: a clean close followed by a reopen (which runs recovery), or fsck's own
    in-memory journal replay, shows the bug -- recovery is where a crash-only bug may surface
    without a crash, e.g. a journal replay re-verifying ordered data, or format 2's replay seeing
    a durable transaction spoiled by a later one (the reuse-before-checkpoint mutant).
    """
    problems, notes = [], []
    for workload, seed, nops in CRASH_ONLY_WORKLOADS:
        ops = make_ops(workload, seed, nops)
        img = os.path.join(work, "plain.img")
        if os.path.exists(img):
            os.unlink(img)
        want = model_states(ops)[-1]
        where = f"{workload}/{protocol}"
        try:
            dev = Device(img, create_size=IMAGE_SIZE.get(workload, 4 << 20))
            st = Store.mkfs(dev, protocol, barrier)
            run_ops(st, ops)
            if {f.name: st.read_file(f) for f in st.files.values()} != want:
                problems.append(f"{where}: the running store reads back other contents than the model")
            st.close()
            r = fsck(dev)
            if r.clean:
                pass
            elif all(f.message.startswith("journal transaction") for f in r.findings):
                # fsck replays the journal in memory: a finding of the replay is recovery's, as on a reopen
                notes.append(f"{where}: fsck's journal replay after a clean close sees it (recovery): "
                             f"{r.findings[0].message[:120]}")
            else:
                problems.append(f"{where}: fsck after a clean close: {r.verdict()}")
        except Exception as e:  # noqa: BLE001 -- any failure means the mutant changes normal behaviour
            problems.append(f"{where}: {type(e).__name__}: {e}")
            continue
        try:
            st = Store.open(dev)
            if {f.name: st.read_file(f) for f in st.files.values()} != want or not fsck(dev).clean:
                notes.append(f"{where}: also visible after a clean close and reopen (recovery)")
        except Exception as e:  # noqa: BLE001
            notes.append(f"{where}: reopen after a clean close fails ({type(e).__name__}: {e})")
        dev.close()
    return problems, notes


def explorer_catch(m, work: str) -> tuple[str | None, str]:
    """(who caught it, first failure reason) over the mix, or (None, "")."""
    for protocol in m.protocols:
        for barrier in m.barriers:
            for entry in MIX:
                workload, seed, nops, extra = entry
                extra = dict(extra)
                if protocol not in extra.pop("protocols", (protocol,)):
                    continue
                res, _ = crashtest(work, protocol=protocol, barrier=barrier, workload=workload, seed=seed,
                                   nops=nops or 200, first_failure=True, jobs=1, **extra)
                if not res.ok:
                    tag = "+".join(k for k, v in extra.items() if v is True)
                    return (f"{protocol}/{barrier} {workload} seed {seed}" + (f" {tag}" if tag else ""),
                            res.failures[0].reason if res.failures else "")
    return None, ""


def faults_catch(m, work: str) -> tuple[str | None, str]:
    """(who caught it, the first silent corruption) of the fault explorer over the mutant's
    fault_seeds seeds x 200 ops of each of its fault_workloads, its fault_kinds (default: every
    kind), fault_samples faults per kind, or (None, "").  A fault mutant removes one detection:
    some fault must then come back as wrong data returned as good."""
    from blkjournal.crash.faults import KINDS

    for protocol in m.protocols:
        for barrier in m.barriers:
            for workload in m.fault_workloads:
                for seed in range(m.fault_seeds):
                    res, _ = crashtest(work, protocol=protocol, barrier=barrier, workload=workload, nops=200,
                                       seed=seed, jobs=1, faults=m.fault_kinds or KINDS,
                                       fault_samples=m.fault_samples)
                    silent = [e for e in res.faults["examples"] if e["outcome"] == "silent_corruptions"]
                    if res.faults["silent_corruptions"]:
                        e = silent[0] if silent else {"kind": "?", "fault": "", "reason": ""}
                        return (f"{protocol}/{barrier} {workload} seed {seed} faults ({e['kind']})",
                                f"silent: {e['fault']}: {e['reason']}")
    return None, ""


def fsck_catch(work: str) -> tuple[str | None, str]:
    """The first of fsck's own tests that fails with the mutant applied."""
    import pathlib

    from tests import test_fsck

    for name in sorted(n for n in dir(test_fsck) if n.startswith("test_")):
        d = tempfile.mkdtemp(dir=work)
        try:
            getattr(test_fsck, name)(pathlib.Path(d))
        except AssertionError as e:
            return f"tests/test_fsck.py::{name}", str(e).splitlines()[0] if str(e) else "assertion failed"
    return None, ""


def run_one(name: str) -> dict:
    m = by_name(name)
    t0 = time.monotonic()
    row = {"mutant": m.name, "area": m.area, "kind": m.kind, "models": m.models, "by": "-", "reason": "",
           "notes": [], "ok": True}
    not_crash_only: list[str] = []
    by = None
    with tempfile.TemporaryDirectory(dir=TMP) as work, applied(m):
        try:
            for p in (m.protocols if m.kind in ("explorer", "faults") else ("journal", "ordered")):
                problems, notes = crash_only(p, m.barriers[0], work)
                not_crash_only += problems
                row["notes"] += notes
            catch = {"explorer": explorer_catch, "faults": faults_catch}.get(m.kind)
            by, row["reason"] = catch(m, work) if catch else fsck_catch(work)
        except Exception as e:  # noqa: BLE001 -- a crashing run is a finding about the suite, not a pass
            row["ok"] = False
            row["notes"].append(f"runner error: {type(e).__name__}: {e}")
            row["notes"] += traceback.format_exc().splitlines()[-4:]
    row["by"] = by or "-"
    if m.equivalent:
        row["verdict"] = "equivalent"
        if by:
            row["ok"] = False
            row["notes"].append(f"marked equivalent ({m.equivalent}) but caught: {row['reason']}")
    else:
        row["verdict"] = "caught" if by else "MISSED"
        row["ok"] = row["ok"] and bool(by)
        if by:
            row["notes"].insert(0, row["reason"][:160])
    if not_crash_only:
        row["ok"] = False
        row["notes"] += ["NOT crash-only: " + n for n in not_crash_only]
    row["seconds"] = time.monotonic() - t0
    return row
