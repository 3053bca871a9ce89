"""The kernel's dm-log-writes against the userspace recorder: one boot, four protocols.

One guest boot records the same 40-op workload under journal/flush, journal/fua, ordered/flush and
none (each on its own zeroed slice of the guest disks, blkjournal.vm.record).  On the host:
- each kernel log holds exactly the entries the recorder's model of the target predicts from the
  guest's submissions (record_in_vm raises otherwise) and gets a sidecar from them;
- the same ops recorded here by `explore.record` (the userspace recorder) lead to the same verdicts:
  0 illegal states for journal and ordered, illegal states found for none;
- the kernel log shows the barriers each protocol claims, counted per op between the marks.

A single VM test function on purpose: under `pytest -n 2` a module fixture would boot once per
worker.  The host-only tests at the end check the prediction code without a VM.
"""

from __future__ import annotations

import os
import time

import pytest
from vmutil import need_vm as _need_vm

SEED, NOPS = 1, 40
SIZE = 4 << 20
RUNS = (("journal", "flush"), ("journal", "fua"), ("ordered", "flush"), ("none", "flush"))


def _bound(protocol: str) -> int:
    return 256 if protocol == "none" else 4096  # none fails everywhere: a small bound finds it fast


@pytest.mark.vm
def test_kernel_log_same_verdicts_and_barriers(tmp_path):
    _need_vm()
    from blkjournal.crash.explore import MKFS_MARK, explore_log, record
    from blkjournal.crash.logwrites import END_MARK, read_log
    from blkjournal.crash.recorder import read_sidecar, sidecar_path
    from blkjournal.crash.workload import random_workload
    from blkjournal.vm.record import KERNEL_FLUSH_ROLE, Run, barriers_per_op, record_in_vm

    ops = random_workload(SEED, NOPS)
    runs = [Run(p, b, ops, str(tmp_path / f"kernel-{p}-{b}.log"), seed=SEED, size=SIZE) for p, b in RUNS]
    t0 = time.monotonic()
    recorded, vm_seconds = record_in_vm(runs, workdir=str(tmp_path / "vm"), timeout=240)
    print(f"\none boot: {vm_seconds:.1f} s for {len(runs)} recordings "
          f"(host side {time.monotonic() - t0:.1f} s)")

    from blkjournal.vm.build import build_guest

    guest_kernel = build_guest().kernel_release
    for rec in recorded:
        p, b = rec.run.protocol, rec.run.barrier
        assert rec.kernel == guest_kernel != os.uname().release
        assert explore_log(rec.log, bound=16).kernel == guest_kernel  # check-log's report names it too
        klog = read_log(rec.log)
        marks = [e.mark for e in klog.entries if e.is_mark]
        assert marks[0] == MKFS_MARK and marks[-1] == END_MARK, marks[:2] + marks[-2:]
        assert len(marks) == NOPS + 2
        assert os.path.exists(sidecar_path(rec.log))

        # The same ops through the userspace recorder, here on the host.
        host_log = str(tmp_path / f"host-{p}-{b}.log")
        record(str(tmp_path / "host.img"), host_log, p, b, ops, size=SIZE)
        rk = explore_log(rec.log, bound=_bound(p))
        rh = explore_log(host_log, bound=_bound(p))
        print(f"{p}/{b}: kernel log {len(klog.entries)} entries, {rk.crash_points} crash points, "
              f"{rk.states_checked} states checked, {rk.illegal} illegal; userspace recorder "
              f"{rh.crash_points} points, {rh.states_checked} states, {rh.illegal} illegal")
        assert rk.coverage == 1.0 or p == "none"
        if p == "none":
            assert rk.illegal > 0 and rh.illegal > 0, "none must be caught from either log"
        else:
            assert rk.illegal == 0, [f.reason for f in rk.failures[:3]]
            assert rh.illegal == 0, [f.reason for f in rh.failures[:3]]
        if b == "flush":
            # No FUA: the kernel's log is the recorder's byte for byte but for mkfs's random uuid,
            # so the two explorations walk the same space.
            assert (rk.crash_points, rk.states_checked) == (rh.crash_points, rh.states_checked)

        # Barriers per op: the kernel log between marks, and the host recorder's submissions.
        kb = barriers_per_op(klog)
        hb = barriers_per_op(read_log(host_log), read_sidecar(sidecar_path(host_log)))
        ks = barriers_per_op(klog, read_sidecar(sidecar_path(rec.log)))  # the guest's submissions
        assert len(kb) == len(hb) == len(ks) == NOPS
        if (p, b) == ("journal", "flush"):
            wrote = False  # a write submitted since the last flush
            for k, op in enumerate(ops):
                assert kb[k]["fua"] == 0, (k, kb[k])
                assert kb[k]["flush"] == hb[k]["flush"], (k, op.describe(), kb[k], hb[k])
                if op.kind == "sync":
                    # One FLUSH per sync that has something to flush, none for an idle sync.
                    assert kb[k]["flush"] == (1 if wrote else 0), (k, kb[k])
                for kind, _role in ks[k]["roles"]:  # this op's submissions, in order
                    wrote = kind != "flush"
            assert sum(1 for op in ops if op.kind == "sync") > 0
            assert any(kb[k]["flush"] == 1 for k, op in enumerate(ops) if op.kind == "sync")
        if (p, b) == ("journal", "fua"):
            # Every committing op writes its data blocks and then its transaction with FUA, and
            # a sync issues nothing (each commit is already durable).  On this VM an O_DIRECT
            # RWF_DSYNC write reaches the log as a FUA write *and* an empty FLUSH: the block layer
            # submits the write with REQ_FUA, then generic_write_sync -> blkdev_fsync issues a
            # PREFLUSH (REFERENCE §3).  So FLUSH entries = FUA entries, each FLUSH right after its
            # FUA write, and no plain write is ever held for a flush.
            for k, op in enumerate(ops):
                assert kb[k]["fua"] == hb[k]["fua"], (k, op.describe(), kb[k], hb[k])
                assert kb[k]["flush"] == kb[k]["fua"], (k, kb[k])
                assert kb[k]["write"] == 0 and hb[k]["write"] == 0 and hb[k]["flush"] == 0, (k, kb[k], hb[k])
                txns = [r for kind, r in hb[k]["roles"] if kind == "fua" and r.startswith("journal txn")]
                if op.kind == "sync":
                    assert kb[k]["fua"] == kb[k]["flush"] == 0, (k, kb[k])
                else:
                    assert len(txns) == 1, (k, op.describe(), hb[k]["roles"])
                    data = [r for kind, r in hb[k]["roles"] if kind == "fua" and r.startswith("data block")]
                    assert kb[k]["fua"] == len(data) + 1 + sum(1 for kind, r in hb[k]["roles"]
                                                               if r.startswith(("checkpoint", "journal superblock")))
            start = next(i for i, e in enumerate(klog.entries) if e.is_mark and e.mark == MKFS_MARK)
            after = klog.entries[start:]
            for i, e in enumerate(after):
                if e.has_data and e.is_fua:
                    assert after[i + 1].is_flush and not after[i + 1].has_data, (e.index, after[i + 1])
            roles = [op.role for op in read_sidecar(sidecar_path(rec.log)).ops]
            assert roles.count(KERNEL_FLUSH_ROLE) == sum(r["fua"] for r in kb)
            assert sum(r["fua"] for r in kb) > 0
        if p == "none":
            # No barriers at all after mkfs: no FLUSH, no FUA, in either log.
            assert all(r["flush"] == r["fua"] == 0 for r in kb), kb
            assert all(r["flush"] == r["fua"] == 0 for r in hb), hb


# ---------------------------------------------------------------- host only (no VM)
def _events_from_recorder(log_path: str) -> list[list]:
    """The guest's event list, rebuilt from a userspace recording's sidecar and log."""
    import zlib

    from blkjournal.crash.logwrites import END_MARK, read_log
    from blkjournal.crash.recorder import read_sidecar, sidecar_path

    log = read_log(log_path)
    events = []
    for op in read_sidecar(sidecar_path(log_path)).ops:
        if op.kind in ("write", "fua"):
            events.append([op.kind, op.block, op.nblocks, op.role, zlib.crc32(log.entries[op.entry].data)])
        elif op.kind == "flush":
            events.append(["flush"])
        elif op.kind == "mark" and op.text != END_MARK:
            events.append(["mark", op.text])
    return events


@pytest.mark.parametrize("protocol,barrier", [("journal", "fua"), ("ordered", "flush")])
def test_prediction_reproduces_the_recorders_log(tmp_path, protocol, barrier):
    """Without the kernel's RWF_DSYNC flush the predicted log is the userspace recorder's own."""
    from blkjournal.crash.explore import record
    from blkjournal.crash.logwrites import read_log
    from blkjournal.crash.recorder import read_sidecar, sidecar_path
    from blkjournal.crash.workload import random_workload
    from blkjournal.vm.record import compare_with_log, predict_kernel_log

    log_path = str(tmp_path / "host.log")
    record(str(tmp_path / "host.img"), log_path, protocol, barrier, random_workload(SEED, 20), size=SIZE)
    log = read_log(log_path)
    events = _events_from_recorder(log_path)
    predicted, recs = predict_kernel_log(events, log.sectorsize, dsync_flush=False)
    assert compare_with_log(log, predicted) is None
    assert [bio.entry for _, _, bio in recs] == [op.entry for op in read_sidecar(sidecar_path(log_path)).ops]
    # With the kernel's flush after each FUA write the prediction differs exactly where FUA is used.
    with_flush, _ = predict_kernel_log(events, log.sectorsize)
    assert (compare_with_log(log, with_flush) is None) == (barrier == "flush")
    # A payload the guest did not write is caught and named.
    i = next(k for k, ev in enumerate(events) if ev[0] in ("write", "fua") and k > 10)
    bad = [list(ev) for ev in events]
    bad[i][4] ^= 1
    why = compare_with_log(log, predict_kernel_log(bad, log.sectorsize, dsync_flush=False)[0])
    assert why and "payload differs" in why


def test_dm_ioctl_structs():
    from blkjournal.vm.record import DmControl

    assert DmControl.HEADER.size == 312  # sizeof(struct dm_ioctl)
    assert DmControl.SPEC.size == 40  # sizeof(struct dm_target_spec)
