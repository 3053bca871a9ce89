"""The crash explorer end to end: record, enumerate, recover, check, report (the crash issue's proof).

The 20-seed runs are the claim "journal and ordered: 0 illegal states over 20 seeds x 200 ops,
exhaustive" (coverage 1.0 means every legal crash state was covered by a checked equivalence
class); `none` must be caught and explained; seed B's six cases must appear for `none` only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from blkjournal.crash.check import recover_and_read
from blkjournal.crash.explore import crashtest, explore_log, record
from blkjournal.crash.seedb import append_states
from blkjournal.crash.states import CrashSpace
from blkjournal.crash.logwrites import read_log
from blkjournal.crash.recorder import read_sidecar, sidecar_path
from blkjournal.crash.workload import model_states, random_workload
from blkjournal.crash.check import judge, model_kind
from blkjournal.crash import explore as ex
from blkjournal.errors import BlkError

BLK = [sys.executable, "-m", "blkjournal"]


@pytest.mark.slow
@pytest.mark.parametrize("protocol,barrier", [("journal", "flush"), ("journal", "fua"),
                                              ("ordered", "flush"), ("ordered", "fua")])
def test_twenty_seeds_no_illegal_state(tmp_path, protocol, barrier):
    checked = 0
    for seed in range(20):
        res, _ = crashtest(str(tmp_path), protocol=protocol, barrier=barrier, nops=200, seed=seed)
        assert res.illegal == 0, (seed, [(f.reason, f.explanation) for f in res.failures[:3]])
        assert res.coverage == 1.0, (seed, res.coverage)
        assert res.states_checked > 0 and res.crash_points > 200
        checked += res.states_checked
    print(f"{protocol}/{barrier}: {checked} equivalence classes checked over 20 seeds x 200 ops")


def test_none_is_caught_and_explained(tmp_path):
    caught = 0
    for seed in range(8):
        res, _ = crashtest(str(tmp_path), protocol="none", nops=60, seed=seed, bound=256)
        if res.illegal:
            caught += 1
            f = res.failures[0]
            assert f.explanation and f.explanation[0].startswith("crash ")
            # in the writer's terms: roles the store gave its writes
            named = [ln for ln in f.explanation if ln.startswith(("durable:", "lost:"))]
            assert named and any(k in " ".join(named) for k in ("origin", "data block", "used list", "object map"))
    assert caught >= 6, f"none caught on only {caught} of 8 seeds"


def test_seed_b_cases_appear_for_none_only(tmp_path):
    rows = append_states(str(tmp_path), "none")
    cases = {r["case"]: r for r in rows if r["case"]}
    assert sorted(cases) == [1, 2, 3, 4, 5, 6]
    codes = {n: set(r["fsck_codes"]) for n, r in cases.items()}
    assert codes[1] == set()  # consistent, data lost
    assert codes[2] == codes[4] == set()  # format 2: a copy-on-write used list cannot leak
    assert codes[3] == {"checksum", "unlisted", "data-checksum"}  # the origin's used list is not there
    assert codes[5] == {"checksum", "unlisted"}
    assert codes[6] == {"data-checksum"}  # consistent metadata, garbage data
    journal = append_states(str(tmp_path), "journal")
    assert not [r for r in journal if r["case"]]
    assert {r["seed_verdict"] for r in journal} == {"append committed", "append lost: consistent"}


def test_equivalence_classes_agree_with_brute_force(tmp_path):
    """Soundness of the search: every crash state, checked one by one, gives the same verdicts."""
    for protocol in ("none", "journal"):
        ops = random_workload(5, 14)
        log = str(tmp_path / f"{protocol}.log")
        record(str(tmp_path / "img"), log, protocol, "flush", ops, size=2 << 20)
        res = explore_log(log)
        space = CrashSpace(read_log(log), read_sidecar(sidecar_path(log)))
        small = {p[0] for p in res.points if len(space.free_writes(p[0])) <= 9}
        bad = _brute_force_illegal(space, small, ops, protocol)
        assert bad == set(res.failing_points) & small, protocol
        if protocol == "none":
            assert bad


def test_searched_blocks_split_classes_exactly_where_a_state_can_answer(tmp_path, monkeypatch):
    """Soundness of BlockDevice.find in the search: recovery's scan for a transaction proving a
    loss reads every journal slot, but a slot splits a class only if some content it takes there
    satisfies the search.  With the evidence rule planted one generation early (a mutant whose
    false proofs lie in slots only the scan reads), the classes find exactly the crash points
    brute force does -- and a tracer that judged each class by its representative alone would not."""
    from tests.mutants import applied, by_name

    ops = random_workload(3, 16)
    log = str(tmp_path / "j.log")
    record(str(tmp_path / "img"), log, "journal", "flush", ops, size=2 << 20)
    space = CrashSpace(read_log(log), read_sidecar(sidecar_path(log)))
    with applied(by_name("journal-evidence-one-early")):
        res = explore_log(log, jobs=1)
        small = {p[0] for p in res.points if len(space.free_writes(p[0])) <= 9}
        bad = _brute_force_illegal(space, small, ops, "journal")
        assert bad and bad == set(res.failing_points) & small
        monkeypatch.setattr(ex.Tracer, "find", _representative_only)
        blind = explore_log(log, jobs=1)
    assert bad - set(blind.failing_points), "the planted search bug is reachable without answering per class"
    assert explore_log(log, jobs=1).ok  # unmutated: clean


def _representative_only(self, block, count, pred, key=None):
    """A wrong Tracer.find: the representative's contents only, nothing recorded as read."""
    for b in range(block, block + count):
        v = self.cache.get(b) or (self._peek(b) if b in self.varying else self.inner.read(b))
        if pred(v, b):
            return b, v
    return None


def test_cli_reports_and_replay(tmp_path):
    j, x, h, kf = (str(tmp_path / n) for n in ("r.json", "r.xml", "r.html", "kept"))
    log = str(tmp_path / "none.log")
    r = subprocess.run(BLK + ["crashtest", "--protocol", "none", "--ops", "30", "--seed", "1", "--jobs", "2",
                              "--bound", "64", "--json", j, "--junit", x, "--html", h, "--keep-failing", kf,
                              "--save-log", log], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    rep = json.load(open(j))
    for key in ("protocol", "barrier", "seed", "ops", "states_enumerated", "states_checked", "illegal",
                "coverage", "failures"):
        assert key in rep
    assert rep["illegal"] > 0 and rep["failures"][0]["explanation"]
    suite = ET.parse(x).getroot().find("testsuite")
    assert int(suite.get("failures")) > 0
    assert "<svg" in open(h).read()
    kept = os.listdir(kf)
    assert kept
    sid = rep["failures"][0]["state"]
    out = str(tmp_path / "state.img")
    r = subprocess.run(BLK + ["replay", log, "--out", out, "--state", sid], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert open(out, "rb").read() == open(os.path.join(kf, f"{sid}.img"), "rb").read()
    r = subprocess.run(BLK + ["check-log", log, "--jobs", "1", "--bound", "64"], capture_output=True, text=True)
    assert r.returncode == 1
    r = subprocess.run(BLK + ["crashtest", "--ops", "30", "--seed", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(BLK + ["check-log", str(tmp_path / "missing.log")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("protocol,barrier", [("journal", "flush"), ("journal", "fua"),
                                              ("ordered", "flush"), ("ordered", "fua")])
def test_every_barrier_site_is_caught_by_ablation(tmp_path, protocol, barrier):
    from blkjournal.crash.explore import ablation

    rows = ablation(str(tmp_path), protocol=protocol, barrier=barrier, seeds=4, nops=200, image_size=2 << 20)
    missed = [r["site"] for r in rows if not r["caught"]]
    assert not missed, missed


def test_torn_sector_classes_agree_with_brute_force(tmp_path):
    """Soundness of the sector-unit search: with 2 KiB sectors every tear of every small crash point,
    checked one by one, gives the verdicts the equivalence classes gave -- and coverage is exact."""
    for protocol in ("journal", "ordered"):
        ops = random_workload(5, 10)
        log = str(tmp_path / f"{protocol}-torn.log")
        record(str(tmp_path / "img"), log, protocol, "flush", ops, size=2 << 20, sector_size=2048)
        res = explore_log(log, torn=True)
        assert res.coverage == 1.0
        space = CrashSpace(read_log(log), read_sidecar(sidecar_path(log)), torn=True, bound=1 << 12)
        small = {p[0] for p in res.points if sum(w.n for w in space.free_writes(p[0])) <= 8}
        assert small and _brute_force_illegal(space, small, ops, protocol) == set(res.failing_points) & small, protocol
    # and the sector search does find torn-only failures: the in-place origin mutant
    from tests.mutants import applied, by_name

    with applied(by_name("ordered-origin-in-place")):
        res, _ = crashtest(str(tmp_path), protocol="ordered", nops=40, seed=0, torn=True, first_failure=True,
                           multi_crash=0)
        untorn, _ = crashtest(str(tmp_path), protocol="ordered", nops=40, seed=0, multi_crash=0)
    assert not res.ok and untorn.ok


def test_big_workload_explores_past_the_workload_file_budget(tmp_path):
    """The `big` workload's model (a 128 MiB sparse file, rewritten by several ops: ~270 MB) is over
    the budget an untrusted workload file may claim; crashtest passes its own ops, so the file beside
    its log is read for protocol and size only and the run is explored, not refused."""
    from blkjournal.crash.workload import MODEL_BUDGET, NAMED, model_cost

    assert model_cost(NAMED["big"](0)) > MODEL_BUDGET  # else this test shows nothing
    res, _ = crashtest(str(tmp_path), protocol="ordered", barrier="flush", workload="big", jobs=1,
                       multi_crash=0)
    assert res.ok and res.states_checked > 0 and res.coverage == 1


def _record_checkpoints(tmp_path, ops, at) -> str:
    """A journal run (512-byte sectors) that checkpoints after each op in `at`: the second
    checkpoint writes home blocks whose transactions replay patches (deltas since the first),
    so a crash while they are written leaves torn homes replay reads."""
    from blkjournal.crash.recorder import RecordingDevice
    from blkjournal.crash.workfile import save_workload
    from blkjournal.crash.workload import MKFS_MARK, apply, mark_text
    from blkjournal.device import BLOCK_SIZE, Device
    from blkjournal.store import Store

    log, size = str(tmp_path / "ckpt.log"), 2 << 20
    rec = RecordingDevice(Device(str(tmp_path / "ckpt.img"), create_size=size, logical_block_size=512), log)
    st = Store.mkfs(rec, "journal", "flush")
    rec.mark(MKFS_MARK)
    for k, op in enumerate(ops):
        apply(st, op)
        rec.mark(mark_text(k, op))
        if k in at:
            st.protocol.checkpoint()
    rec.close()
    save_workload(log, "journal", "flush", ops, nblocks=size // BLOCK_SIZE, sector_size=512)
    return log


def _plain_derived_reads(monkeypatch):
    """The tracer before derived reads: a derived read is a plain read (it splits the class)."""
    from blkjournal.device import BlockDevice

    monkeypatch.setattr(ex.Tracer, "read_derived", BlockDevice.read_derived)


def _exactness(res) -> tuple:
    return res.states_enumerated, res.states_covered, res.coverage, res.illegal_states, res.failing_points


def test_a_torn_checkpoint_home_splits_no_class_its_replay_patches_alike(tmp_path, monkeypatch):
    """A home a checkpoint tore is read by replay through read_derived (the records patch it):
    every mix of its old and new sectors patches to one image, so the classes no longer split
    on it -- fewer checks, the same states covered and judged."""
    log = _record_checkpoints(tmp_path, random_workload(0, 8), at=(4, 7))
    derived = explore_log(log, torn=True, jobs=1)
    _plain_derived_reads(monkeypatch)
    plain = explore_log(log, torn=True, jobs=1)
    assert derived.ok and derived.coverage == 1.0
    assert _exactness(derived) == _exactness(plain)
    assert derived.states_checked < plain.states_checked, (derived.states_checked, plain.states_checked)


def test_a_derived_read_still_splits_where_the_torn_mix_changes_the_outcome(tmp_path, monkeypatch):
    """Soundness of Tracer.read_derived: with a recovery planted to refuse a home whose seal
    fails before it patches it (a torn checkpoint home is then an illegal state), the derived
    reads find the very illegal states plain reads find -- and a tracer that answered a derived
    read from the representative alone, never splitting, would miss them."""
    from blkjournal import protocols
    from blkjournal.errors import CorruptError
    from blkjournal.format import block_type

    log = _record_checkpoints(tmp_path, random_workload(0, 8), at=(4, 7))
    patch = protocols.Patch.__call__

    def refuses_torn(self, raw):
        if block_type(raw) is None:
            raise CorruptError("a replayed home fails its seal")
        return patch(self, raw)

    monkeypatch.setattr(protocols.Patch, "__call__", refuses_torn)
    derived = explore_log(log, torn=True, jobs=1)

    def representative_only(self, block, fn):
        if block not in self.cache and block in self.varying:
            return fn(self._peek(block))
        return fn(self.read(block))

    monkeypatch.setattr(ex.Tracer, "read_derived", representative_only)
    blind = explore_log(log, torn=True, jobs=1)
    _plain_derived_reads(monkeypatch)
    plain = explore_log(log, torn=True, jobs=1)
    assert plain.illegal_states > 0 and _exactness(derived) == _exactness(plain)
    assert blind.illegal_states < plain.illegal_states, "the planted bug is reachable without splitting"


def _brute_force_illegal(space, points, ops, protocol) -> set:
    """The crash points among `points` with an illegal state, checking every state one by one."""
    models = model_states(ops)
    bad = set()
    for pi in points:
        for st in space.iter_states([pi]):
            contents, _, _ = recover_and_read(st.overlay())
            if contents is None or not judge(contents, models, ex._window(space.points[pi], len(ops)),
                                             model_kind(protocol)).legal:
                bad.add(pi)
    return bad


def _outcome(res) -> tuple:
    return (res.states_checked, res.states_covered, res.states_enumerated, res.illegal, res.illegal_states,
            res.failing_points, [c["key"] for c in res.clusters], [(f.state, f.reason) for f in res.failures])


@pytest.mark.parametrize("protocol,ablate", [("journal", None), ("ordered", "B data and map flush")])
def test_two_jobs_find_what_one_finds(tmp_path, monkeypatch, protocol, ablate):
    """The segments shared out over two processes (crash/jobs.py): the same classes, coverage and
    illegal states as one process searching them in order (a barrier removed: illegal states in
    several segments)."""
    monkeypatch.setattr(ex, "MIN_SHARED_POINTS", 0)  # every phase shared out, however short
    one, _ = crashtest(str(tmp_path), protocol=protocol, nops=40, seed=3, jobs=1, ablate=ablate)
    two, _ = crashtest(str(tmp_path), protocol=protocol, nops=40, seed=3, jobs=2, ablate=ablate)
    assert _outcome(two) == _outcome(one)
    assert ablate is None or one.illegal > 0


def test_a_failing_worker_is_raised_not_lost(tmp_path, monkeypatch):
    parent = os.getpid()
    search = ex._search_segment

    def failing(i):
        if os.getpid() != parent:
            raise ValueError("planted failure in a worker")
        time.sleep(0.05)  # the worker, started meanwhile, takes a segment
        return search(i)

    monkeypatch.setattr(ex, "_search_segment", failing)
    monkeypatch.setattr(ex, "MIN_SHARED_POINTS", 0)
    with pytest.raises(RuntimeError, match="planted failure in a worker"):
        crashtest(str(tmp_path), protocol="journal", nops=40, seed=3, jobs=2, multi_crash=0)


def test_second_phases_side_by_side_find_what_one_after_the_other_finds(tmp_path):
    """With two jobs the second phases run at once, one in a forked process (jobs.fork_map): the
    same classes, coverage, failures and notes, phase by phase in order."""
    one, _ = crashtest(str(tmp_path), protocol="journal", nops=40, seed=3, jobs=1)
    two, _ = crashtest(str(tmp_path), protocol="journal", nops=40, seed=3, jobs=2)
    assert sum("second phase from" in n for n in one.notes) == 2
    assert _outcome(two) == _outcome(one) and two.notes == one.notes


def test_a_failing_side_by_side_phase_is_raised_not_lost(tmp_path, monkeypatch):
    from blkjournal.crash import multicrash

    parent, record = os.getpid(), multicrash.record_phase2

    def failing(*a, **kw):
        if os.getpid() != parent:
            raise BlkError("planted failure in a forked phase")
        return record(*a, **kw)

    monkeypatch.setattr(multicrash, "record_phase2", failing)
    with pytest.raises(BlkError, match="planted failure in a forked phase"):
        crashtest(str(tmp_path), protocol="journal", nops=40, seed=3, jobs=2)


def test_phases_that_overlap_count_once_in_the_seconds():
    """Result.seconds after merging phases: the union of their spans, not the sum."""
    res = ex.Result("journal", "flush", 0, 1, spans=[(10.0, 14.0)], seconds=4.0)
    ex.merge_phase(res, ex.Result("journal", "flush", 0, 1, spans=[(14.5, 16.0)], seconds=1.5))
    assert res.seconds == 5.5  # one after the other: the sum
    ex.merge_phase(res, ex.Result("journal", "flush", 0, 1, spans=[(14.7, 15.5)], seconds=0.8))
    ex.merge_phase(res, ex.Result("journal", "flush", 0, 1, spans=[(15.8, 17.0)], seconds=1.2))
    assert res.seconds == pytest.approx(6.5)  # side by side: 14.5..17.0 once


def test_an_operation_to_json_is_its_asdict():
    """Operation.to_json spells out its fields (a run's identity hashes every op, merge.py): the same
    dict as dataclasses.asdict, for every kind -- a field added to Operation must be added there."""
    from dataclasses import asdict

    from blkjournal.crash.workload import NAMED, Operation

    ops = random_workload(5, 200) + NAMED["grow"]() + [Operation("sync")]
    assert {o.kind for o in ops} >= {"create", "put", "write", "truncate", "delete", "sync"}
    for o in ops:
        assert o.to_json() == asdict(o) and list(o.to_json()) == list(asdict(o))


def test_the_allocator_check_finds_each_owned_block_free_and_not_held():
    """check._allocatable_but_owned (picked at C speed from the bitmap's flags) is the owned blocks
    below nblocks that the recovered allocator would hand out -- clear in the bitmap, not held --
    block by block: with owned blocks cleared, some of them held, and none."""
    import random

    from blkjournal.crash.check import _allocatable_but_owned
    from blkjournal.crash.image import Overlay
    from blkjournal.store import Store

    dev = Overlay(None, nblocks=1024)
    s = Store.mkfs(dev, "ordered", "flush")
    for i in range(6):
        s.put(f"f{i}", bytes([i + 1]) * (3000 + 7000 * i))
    s.sync()
    st = Store.open(dev, recover=True)
    fl, owned = st.freelist, sorted(st.owned_blocks())
    assert _allocatable_but_owned(st) == set()
    rng = random.Random(5)
    for _ in range(20):
        for b in rng.sample(owned, 12):
            fl.bits[b >> 3] &= ~(1 << (b & 7)) & 0xFF
        fl.held.clear()
        fl.held.update(rng.sample(owned, 8))
        want = {b for b in owned if b < fl.nblocks and not fl.used(b) and b not in fl.held}
        assert want and _allocatable_but_owned(st) == want
