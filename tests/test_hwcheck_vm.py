"""hwcheck against real power cuts: nbdkit lying and honest disks under the qemu guest (REFERENCE.md §5).

One boot runs 22 trials one after the other (blkjournal.hwcheck.vmtrial): each trial is its own
nbdkit (`--filter=fua --filter=cache`, cache=writeback; fuamode=discard = lying, pass = honest)
attached as its own guest disk; the guest runs `hwcheck write` on it, the host kills that nbdkit
with SIGKILL about a second after the first ack, the writer gets EIO and the guest moves on to the
next disk.  Every image is verified here on the host.

    lying  x flush, lying x fua    5 + 5 trials: "lies", every acked block lost
    honest x flush, honest x fua   5 + 5 trials: "honest", every acked block intact
    honest x none (control)        2 trials: "lies": the cut on the honest disk does destroy what
                                   was never flushed, so its "honest" above is not vacuous

About 70 s under load (boot ~20 s, ~2.5 s per trial); the tests without the VM check the CLI.
"""

from __future__ import annotations

import json
import time

import pytest
from vmutil import need_vm as _need_vm
from typer.testing import CliRunner

from blkjournal.errors import BlkError
from blkjournal.hwcheck import vmtrial
from blkjournal.hwcheck.cli import hwcheck_app
from blkjournal.hwcheck.vmtrial import (MAX_TRIALS, TrialBatch, TrialOptions, TrialResult, TrialSpec, matrix,
                                        run_trials)

runner = CliRunner()
ROUNDS = 5


@pytest.mark.vm
def test_power_cuts_lying_lies_and_honest_is_honest(tmp_path):
    _need_vm()
    specs = matrix(["lying", "honest"], ["flush", "fua"], ROUNDS) + [TrialSpec("honest", "none")] * 2
    t0 = time.monotonic()
    batch = run_trials(specs, workdir=str(tmp_path), opts=TrialOptions(seed=7), say=print)
    print(f"{len(specs)} trials in one boot: boot {batch.boot_s:.1f} s, total {time.monotonic() - t0:.1f} s")
    table = "\n".join(t.line() for t in batch.trials)
    assert batch.guest_exit == 0, table

    for t in batch.trials:
        # A real cut: our kill -9 hit nbdkit while its writer ran, after acks, and the writer saw EIO.
        assert t.killed and t.killed_while_running, t.line()
        assert t.acks_at_cut > 0 and t.cut_delay_s is not None and t.cut_delay_s < 10, t.line()
        assert t.end_reason == "io-error" and t.writer_exit == 0, (t.line(), t.end_error)
        assert t.acks >= t.acks_at_cut and t.acked_blocks == t.acks, t.line()  # no block acked twice
        assert t.real_cut and t.ok, table

    by_kind: dict[tuple[str, str], list[TrialResult]] = {}
    for t in batch.trials:
        by_kind.setdefault((t.disk, t.barrier), []).append(t)
    for barrier in ("flush", "fua"):
        lying = by_kind[("lying", barrier)]
        assert len(lying) == ROUNDS
        assert [t.verdict for t in lying] == ["lies"] * ROUNDS, table
        # The lying disk's cache died with nbdkit: every acked record is gone, none survived.
        assert all(t.lost == t.acked_blocks > 0 and t.intact == 0 for t in lying), table

        honest = by_kind[("honest", barrier)]
        assert len(honest) == ROUNDS
        assert [t.verdict for t in honest] == ["honest"] * ROUNDS, table
        assert all(t.intact == t.acked_blocks > 0 and t.lost == 0 for t in honest), table
        assert all(sum(t.counts[k] for k in ("lost", "torn", "misplaced", "ordering")) == 0 for t in honest), table

    control = by_kind[("honest", "none")]
    assert [t.verdict for t in control] == ["lies"] * 2, table
    assert all(t.lost > 0 for t in control), table
    assert batch.ok


def test_matrix_interleaves_and_bounds():
    specs = matrix(["lying", "honest"], ["flush", "fua"], 2)
    assert [(s.disk, s.barrier) for s in specs[:4]] == [("lying", "flush"), ("lying", "fua"),
                                                        ("honest", "flush"), ("honest", "fua")]
    assert specs[4:] == specs[:4]
    with pytest.raises(BlkError):
        matrix(["lying"], ["flush"], 0)
    with pytest.raises(BlkError):
        matrix(["lying", "honest"], ["flush", "fua", "none"], MAX_TRIALS // 6 + 1)
    with pytest.raises(BlkError):
        TrialSpec("flaky", "flush")


def test_guest_plan_is_the_write_command():
    trials = [TrialResult(i, d, b, f"/dev/vd{'ab'[i]}", "/x.img", f"/r/t0{i + 1}/acks.log", "lies")
              for i, (d, b) in enumerate([("lying", "flush"), ("honest", "fua")])]
    plan = vmtrial._guest_plan(trials, TrialOptions(region="0:4M", duration=9, batch=2))
    a, b = (t["argv"] for t in plan["trials"])
    assert a == ["write", "/dev/vda", "--barrier", "flush", "--acks", "/r/t01/acks.log", "--duration", "9",
                 "--region", "0:4M", "--threads", "1", "--batch", "2"]
    assert "--batch" not in b and b[:4] == ["write", "/dev/vdb", "--barrier", "fua"]
    assert plan["trials"][1]["dir"] == "/r/t02"


@pytest.mark.parametrize("args, message", [
    (["--disk", "lying", "--barrier", "flush", "--trials", "0"], "--trials must be at least 1"),
    (["--disk", "lying", "--disk", "honest", "--barrier", "flush", "--barrier", "fua", "--trials", "7"],
     "at most 24"),
    (["--disk", "lying", "--barrier", "flush", "--region", "0:"], "give START:LEN"),
    (["--disk", "lying", "--barrier", "flush", "--cut-after", "5", "--duration", "3"], "longer than the cut"),
    (["--disk", "lying", "--barrier", "flush", "--region", "0:16", "--threads", "32"], "too small"),
])
def test_vmtrial_cli_refuses_bad_input_before_booting(args, message, monkeypatch):
    def boom(*_a, **_k):
        raise AssertionError("the guest must not boot on bad input")

    monkeypatch.setattr("blkjournal.vm.qemu.run_guest", boom)
    res = runner.invoke(hwcheck_app, ["vmtrial", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output


def _fake_batch(ok: bool) -> TrialBatch:
    t = TrialResult(0, "lying", "flush", "/dev/vda", "/x.img", "/r/t01/acks.log", "lies", killed=True,
                    killed_while_running=True, cut_delay_s=1.2, acks_at_cut=10, writer_exit=0,
                    end_reason="io-error", verdict="lies" if ok else "honest", acks=10, acked_blocks=10,
                    counts={"lost": 10 if ok else 0, "intact": 0 if ok else 10})
    return TrialBatch([t], 30.0, 31.0, "/w", 0)


@pytest.mark.parametrize("ok", [True, False])
def test_vmtrial_cli_exit_code_and_json(ok, monkeypatch):
    seen = {}

    def fake(specs, **kw):
        seen["specs"], seen["opts"] = specs, kw["opts"]
        return _fake_batch(ok)

    monkeypatch.setattr(vmtrial, "run_trials", fake)
    res = runner.invoke(hwcheck_app, ["vmtrial", "--disk", "lying", "--barrier", "flush", "--barrier", "fua",
                                      "--trials", "3", "--cut-after", "0.5", "--json"])
    assert res.exit_code == (0 if ok else 1), res.output
    assert [(s.disk, s.barrier) for s in seen["specs"]] == [("lying", "flush"), ("lying", "fua")] * 3
    assert seen["opts"].cut_after == 0.5
    out = json.loads(res.stdout)
    assert out["ok"] is ok
    assert out["trials"][0]["lost"] == (10 if ok else 0) and out["trials"][0]["real_cut"]
