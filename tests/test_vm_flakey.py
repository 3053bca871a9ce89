"""Power cuts through the kernel's dm-flakey, inside operations: one boot, 50 cuts.

blkjournal.vm.flakey counts each op's device writes in a dry run here, picks 10 seeded cut points
per protocol strictly between two writes of one op, and the guest runs them all in one boot: mkfs
on a fresh zeroed slice under dm-flakey, the ops up to the cut, the table switched to
drop_writes after the chosen write, a few more ops whose writes vanish, the up table back,
recovery on a fresh device, fsck, every file read and judged against the model window.
journal and ordered (both barrier kinds) must survive every cut; none (an op's writes issued in
block order, no barriers) must be caught at least once.

A single VM test function on purpose: under `pytest -n 2` a module fixture would boot once per
worker.  The host-only test at the end checks the cut planner without a VM.
"""

from __future__ import annotations

import time

import pytest
from vmutil import need_vm as _need_vm

SEED, NOPS, CUTS = 1, 40, 10
CONFIGS = (("journal", "flush"), ("journal", "fua"), ("ordered", "flush"), ("ordered", "fua"), ("none", "flush"))


@pytest.mark.vm
def test_flakey_cuts_inside_ops(tmp_path):
    _need_vm()
    from blkjournal.vm.flakey import Config, flakey_in_vm, format_table

    t0 = time.monotonic()
    rows, vm_seconds = flakey_in_vm([Config(p, b) for p, b in CONFIGS], cuts=CUTS, seed=SEED, nops=NOPS,
                                    workdir=str(tmp_path), timeout=240)
    print(f"\none boot: {vm_seconds:.1f} s for {len(rows)} cuts (host side {time.monotonic() - t0:.1f} s)")
    print(format_table(rows))
    assert len(rows) == CUTS * len(CONFIGS)
    for r in rows:
        assert r["cut"], r  # the power went where the plan said
        assert r["op_writes"] == r["planned_op_writes"], r  # the dry run's counts held in the guest
        assert 0 <= r["write"] < r["op_writes"], r  # before one of the op's writes
    from blkjournal.crash.workload import random_workload
    from blkjournal.vm.flakey import count_writes

    for p, b in CONFIGS:
        mine = [r for r in rows if (r["protocol"], r["barrier"]) == (p, b)]
        assert len(mine) == CUTS
        # strictly between two writes of an op wherever the workload has such points (a journal
        # op that logs its data inline is one write: only a cut before it splits nothing)
        counts = count_writes(p, b, random_workload(SEED, NOPS), workdir=str(tmp_path))
        assert sum(r["write"] >= 1 for r in mine) == min(CUTS, sum(max(0, n - 1) for n in counts))
        assert len({(r["op"], r["write"]) for r in mine}) == CUTS  # distinct cut points
        assert sum(r["dropped_writes"] for r in mine) > 0  # writes after the cut did vanish
        survived = sum(r["legal"] for r in mine)
        print(f"{p}/{b}: {survived}/{CUTS} cuts survived")
        if p == "none":
            assert survived < CUTS, "none survived every cut: the cuts never split an op's writes?"
        else:
            assert survived == CUTS, [(r["op"], r["write"], r["reason"]) for r in mine if not r["legal"]]


def test_cut_plan_is_seeded_and_inside_ops(tmp_path):
    from blkjournal.crash.workload import random_workload
    from blkjournal.vm.flakey import count_writes, plan_cuts

    ops = random_workload(SEED, NOPS)
    counts = count_writes("none", "flush", ops, workdir=str(tmp_path))
    assert counts == count_writes("none", "flush", ops, workdir=str(tmp_path))
    plan = plan_cuts(counts, CUTS, SEED)
    assert plan == plan_cuts(counts, CUTS, SEED) != plan_cuts(counts, CUTS, SEED + 1)
    assert len({(c["op"], c["write"]) for c in plan}) == CUTS
    assert all(1 <= c["write"] < c["op_writes"] == counts[c["op"]] for c in plan)
    # Too few points strictly inside an op: the cut falls before an op's first write instead.
    few = {(c["op"], c["write"]) for c in plan_cuts([0, 1, 2, 1], 3, SEED)}
    assert len(few) == 3 and (2, 1) in few and all(w == 0 for k, w in few - {(2, 1)})
