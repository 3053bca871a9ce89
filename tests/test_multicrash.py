"""Crash -> recover (crash during it) -> more operations -> crash, and checks that never abort."""

from __future__ import annotations

from blkjournal.crash.check import recover_and_read
from blkjournal.crash.explore import crashtest
from blkjournal.crash.workload import RECOVERY_MARK, big_workload, pressure_workload, wrap_workload
from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.errors import CorruptError
from blkjournal.store import Store


def test_second_phase_explores_crashes_during_recovery_and_after(tmp_path):
    one, _ = crashtest(str(tmp_path), protocol="journal", nops=60, seed=1, multi_crash=0)
    two, _ = crashtest(str(tmp_path), protocol="journal", nops=60, seed=1, multi_crash=2)
    assert one.ok and two.ok and two.coverage == 1.0
    assert two.crash_points > one.crash_points and two.states_checked > one.states_checked
    assert sum("second phase from" in n for n in two.notes) == 2
    # the second phase's log starts with recovery: its crash points are explored
    from blkjournal.crash import multicrash

    assert multicrash.RECOVERY_MARK == RECOVERY_MARK


def test_recovery_writes_are_crashed(tmp_path):
    """A second phase from a state with committed, un-checkpointed transactions: recovery's
    checkpoint writes are in the log and crash points fall inside recovery."""
    import os

    from blkjournal.crash.states import load

    crashtest(str(tmp_path), protocol="journal", nops=60, seed=1, multi_crash=2)
    logs = sorted(p for p in os.listdir(tmp_path) if p.startswith("phase2-") and p.endswith(".log"))
    assert logs
    during = 0
    for name in logs:
        space = load(str(tmp_path / name), base=str(tmp_path / name.replace(".log", ".base.img")))
        during += sum(1 for p in space.points if p.last_mark == RECOVERY_MARK and p.op is not None
                      and p.op.is_write)
    assert during > 0


class _Breaks(Device):
    """A real image whose block 0 reads as garbage after `after` reads (recovery leaving a bad
    superblock), or whose reads raise `exc` (a decoder tripping) -- to test the checker's handling."""

    def __init__(self, path, nblocks, after, exc=None):
        super().__init__(path, create_size=nblocks * BLOCK_SIZE)
        self.after, self.reads, self.exc = after, 0, exc

    def read(self, block, count=1):
        self.reads += 1
        if self.exc is not None and self.reads > self.after:
            raise self.exc
        if block == 0 and self.reads > self.after:
            return bytes(BLOCK_SIZE)
        return super().read(block, count)


def test_an_exception_in_fsck_or_a_read_is_an_illegal_state_not_an_abort(tmp_path):
    dev = _Breaks(str(tmp_path / "b.img"), 256, after=10**9)
    st = Store.mkfs(dev, "journal", "flush")
    st.put("a", b"x" * 5000)
    st.close()
    dev.after = dev.reads + 1  # recovery reads the superblock; fsck then finds it corrupt
    contents, err, _ = recover_and_read(dev)
    assert contents is None and err.startswith("fsck after recovery") and "superblock" in err
    dev.after, dev.exc = dev.reads + 3, ValueError("a decoder tripped")
    contents, err, _ = recover_and_read(dev)
    assert contents is None and "raised ValueError: a decoder tripped" in err
    dev.exc = CorruptError("bad block")
    contents, err, _ = recover_and_read(dev)
    assert contents is None and "bad block" in err


def test_workloads_reach_the_code(tmp_path):
    """pressure wraps the allocator; wrap checkpoints many times; big builds height 2 and long used lists."""
    from blkjournal.crash.workload import run

    def run_on(ops, size, protocol="journal"):
        img = tmp_path / "w.img"
        if img.exists():
            img.unlink()
        dev = Device(str(img), create_size=size)
        st = Store.mkfs(dev, protocol, "flush")
        seen, reused, ckpts = set(), 0, [0]
        orig = st.protocol.checkpoint if protocol == "journal" else None
        if orig:
            def counting():
                ckpts[0] += 1
                orig()
            st.protocol.checkpoint = counting
            st.freelist.reclaim = counting
        alloc, alloc_runs = st.freelist.alloc, st.freelist.alloc_runs

        def seen_now(out):
            nonlocal reused
            reused += sum(b in seen for b in out)
            seen.update(out)

        def watch(n):
            out = alloc(n)
            seen_now(out)
            return out

        def watch_runs(n):  # data blocks come in runs (Store._write)
            runs = alloc_runs(n)
            seen_now([b for first, count in runs for b in range(first, first + count)])
            return runs
        st.freelist.alloc, st.freelist.alloc_runs = watch, watch_runs
        run(st, ops)
        return st, reused, ckpts[0]

    for p in ("journal", "ordered"):
        _, reused, _ = run_on(pressure_workload(0, 60), 1 << 20, p)
        assert reused > 50, (p, reused)
    _, _, ckpts = run_on(wrap_workload(0, 300), 2 << 20)
    assert ckpts >= 5
    st, _, _ = run_on(big_workload(0), 4 << 20, "ordered")
    assert st.lookup("s").map.height == 2
    assert len(st.lookup("b").ul.owned()) > 62  # entries past the first 512-byte sector
