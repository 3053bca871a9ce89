"""Crash states: exactly the legal ones (DESIGN §4), reproducible ids, dedup, coverage, overlays, CLI."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from blkjournal.crash.cli import log_app, replay_app
from blkjournal.crash.image import BaseImage, Overlay
from blkjournal.crash.logwrites import read_log
from blkjournal.crash.recorder import RecordingDevice, read_sidecar, sidecar_path
from blkjournal.crash.states import CrashSpace, load, mask_code, pattern, prefix_overlay, replay_prefix
from blkjournal.device import BLOCK_SIZE as B
from blkjournal.errors import BlkError, CorruptError

NBLOCKS = 8


def record(tmp_path, ops, *, ss=4096, name="run.log", base: bytes | None = None):
    """Run ops through a RecordingDevice over an in-memory device; returns the log path.

    ops: ("w", block, nblocks, fill, role) | ("fua", ...) | ("d", block, nblocks, role) | ("flush",) | ("mark", text)
    """
    inner = Overlay(base if base is not None else None, nblocks=NBLOCKS, unit=ss)
    log = tmp_path / name
    with RecordingDevice(inner, log) as dev:
        for op in ops:
            if op[0] in ("w", "fua"):
                _, blk, n, fill, role = op
                dev.write(blk, bytes([fill]) * (n * B), fua=op[0] == "fua", role=role)
            elif op[0] == "d":
                dev.discard(op[1], op[2], role=op[3])
            elif op[0] == "flush":
                dev.flush()
            else:
                dev.mark(op[1])
    return log


def image(st_) -> bytes:
    return st_.overlay().read(0, NBLOCKS)


# -- DESIGN §4 worked example ----------------------------------------------------------------------

WORKED = [("w", 1, 1, 1, "W1"), ("w", 2, 1, 2, "W2"), ("flush",), ("w", 3, 1, 3, "W3"),
          ("fua", 4, 1, 4, "W4"), ("w", 5, 1, 5, "W5"), ("flush",)]


def _roles(ops) -> set[str]:
    return {op.role for op in ops}


def test_worked_example_gives_exactly_four_states_after_w5(tmp_path):
    space = load(record(tmp_path, WORKED))
    (pt,) = [p for p in space.points if p.op is not None and p.op.role == "W5"]
    states = list(space.iter_states([pt.index]))
    assert len(states) == 4 and len({s.key for s in states}) == 4
    for s in states:
        assert {"W1", "W2", "W4"} <= _roles(s.included)
        assert _roles(s.included) | _roles(s.dropped) == {"W1", "W2", "W3", "W4", "W5"}
    assert sorted(tuple(sorted(_roles(s.dropped))) for s in states) == [(), ("W3",), ("W3", "W5"), ("W5",)]
    assert not space.under_approximate


def test_w3_without_w4_needs_the_sidecar(tmp_path):
    """The log reads W1 W2 FLUSH W4 W3 W5 FLUSH: its prefix walk never shows W3 persisted without W4."""
    log = record(tmp_path, WORKED)

    def has_w3_not_w4(space) -> bool:  # by content: without a sidecar there are no roles
        return any(s.overlay().read(3, 2)[::B] == b"\x03\x00" for s in space.iter_states())

    with_sc = load(log)
    without = load(log, sidecar=False)
    assert has_w3_not_w4(with_sc)
    assert not has_w3_not_w4(without)
    assert without.under_approximate and "under-approximates" in without.coverage(_tally(without)).notes[0]


def _tally(space):
    from blkjournal.crash.states import Tally
    t = Tally()
    for _ in space.iter_states(tally=t):
        pass
    return t


def _blk(img: bytes, b: int) -> int:
    return img[b * B]


def test_log_order_can_invert_overlapping_writes_and_says_so(tmp_path):
    """Plain W then FUA W' to one block: the log holds W' before W, so only the sidecar gets it right."""
    log = record(tmp_path, [("w", 1, 1, 3, "old"), ("fua", 1, 1, 4, "new"), ("flush",)])
    for sidecar, final in ((True, 4), (False, 3)):
        space = load(log, sidecar=sidecar)
        last = len(space.points) - 1
        assert {s.overlay().read(1)[0] for s in space.iter_states([last])} == {final}
    assert any("entries 0 (FUA) and 1" in n for n in load(log, sidecar=False).notes)
    assert load(log).notes == []


# -- the definition, brute force -------------------------------------------------------------------

def brute_force(ops, *, ss: int, torn: bool) -> list[set[bytes]]:
    """Legal images at each crash point, straight from DESIGN §4's definition."""
    writes = []  # (op index, kind, first sector, payload sectors)
    for i, op in enumerate(ops):
        if op[0] in ("w", "fua"):
            data = bytes([op[3]]) * (op[2] * B)
            writes.append((i, op[0], op[1] * B // ss, [data[k:k + ss] for k in range(0, len(data), ss)]))
        elif op[0] == "d":
            writes.append((i, "d", op[1] * B // ss, [bytes(ss)] * (op[2] * B // ss)))
    flushes = [i for i, op in enumerate(ops) if op[0] == "flush"]

    def states(done: int, inflight: int | None) -> set[bytes]:
        """done: ops[0:done] completed; inflight: index of a FUA write in flight (submitted, not done)."""
        sub = [w for w in writes if w[0] < done or w[0] == inflight]
        forced = [w for w in sub if w[0] != inflight and (w[1] == "fua" or any(w[0] < f < done for f in flushes))]
        free = [w for w in sub if w not in forced]
        choices = []
        for w in free:
            n = len(w[3])
            if torn:
                choices.append([frozenset(c) for r in range(n + 1) for c in itertools.combinations(range(n), r)])
            else:
                choices.append([frozenset(), frozenset(range(n))])
        out = set()
        for pick in itertools.product(*choices):
            chosen = {w[0]: p for w, p in zip(free, pick)}
            img = bytearray(NBLOCKS * B)
            for w in sub:
                keep = range(len(w[3])) if w in forced else chosen[w[0]]
                for k in keep:
                    s = w[2] + k
                    img[s * ss:(s + 1) * ss] = w[3][k]
            out.add(bytes(img))
        return out

    points = [states(0, None)]
    for i, op in enumerate(ops):
        if op[0] == "fua":
            points.append(states(i, i))
        points.append(states(i + 1, None))
    points.append(states(len(ops), None))  # the recorder's close mark
    return points


op_strategy = st.one_of(
    st.tuples(st.sampled_from(["w", "fua"]), st.integers(0, 3), st.integers(1, 2), st.integers(1, 255), st.just("")),
    st.tuples(st.just("d"), st.integers(0, 3), st.integers(1, 2), st.just("")),
    st.tuples(st.just("flush")),
    st.tuples(st.just("mark"), st.sampled_from(["a", "b"])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op_strategy, min_size=1, max_size=7), ss=st.sampled_from([512, 4096]))
def test_states_are_exactly_the_legal_ones(tmp_path_factory, ops, ss):
    log = record(tmp_path_factory.mktemp("bf"), ops, ss=ss)
    space = load(log, bound=1 << 20, base=bytes(NBLOCKS * B))  # a known base: dedup is exact
    expect = brute_force(ops, ss=ss, torn=False)
    assert len(space.points) == len(expect)
    got = [set() for _ in space.points]
    for s in space.iter_states():
        got[s.point.index].add(image(s))
    assert got == expect
    ex = space.explore()
    assert ex.coverage.coverage == 1.0 and ex.coverage.unique == len(set().union(*expect))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op_strategy, min_size=1, max_size=5))
def test_torn_states_are_exactly_the_legal_ones_when_small(tmp_path_factory, ops):
    """4 KiB sectors, writes of at most 2 blocks: every sector subset is enumerated."""
    log = record(tmp_path_factory.mktemp("bft"), ops, ss=4096)
    space = load(log, torn=True, bound=1 << 20)
    got = [set() for _ in space.points]
    for s in space.iter_states():
        got[s.point.index].add(image(s))
    assert got == brute_force(ops, ss=4096, torn=True)


def test_torn_patterns_are_legal_tears(tmp_path):
    """1 KiB sectors: a 4 KiB write tears in every sector subset, each a legal state."""
    ops = [("w", 0, 1, 7, "a"), ("fua", 1, 1, 9, "commit")]
    space = load(record(tmp_path, ops, ss=1024), torn=True, bound=1 << 20)
    states = list(space.iter_states())
    for s in states:  # legal: any sector subset of each free write, forced ones whole
        img = image(s)
        sectors = [img[k:k + 1024] for k in range(0, 2 * B, 1024)]
        assert all(x in (bytes(1024), bytes([7]) * 1024) for x in sectors[:4])
        commit_forced = s.point.op is not None and s.point.op.role == "commit" and not s.point.inflight
        assert all(x in ((bytes([9]) * 1024,) if commit_forced else (bytes(1024), bytes([9]) * 1024)) for x in sectors[4:])
        assert img[2 * B:] == bytes(len(img) - 2 * B)
    during = [p for p in space.points if p.inflight][0]
    torn_commit = [s for s in states if s.point is during and [op.role for op, _ in s.torn] == ["commit"]]
    assert len(torn_commit) == 2 * 14  # "a" whole or absent, times the commit's 14 proper tears
    assert len([s for s in states if s.point is during]) == 16 * 16  # each: absent, whole, 14 tears
    cov = space.explore().coverage
    assert cov.coverage == 1 and cov.exhaustive_points == len(space.points)


def test_pattern_codes():
    assert pattern(8, 0) == () and pattern(8, 1) == tuple(range(8))
    assert pattern(8, 2) == (0,) and pattern(8, 1 + 0b10100101) == (0, 2, 5, 7)  # code - 1: the sector mask
    assert pattern(3, 2) == (0,) and pattern(3, 7) == (1, 2)
    assert [mask_code(8, m) for m in (0, 0xFF, 0b101)] == [0, 1, 6]
    assert all(pattern(8, mask_code(8, m)) == tuple(i for i in range(8) if m >> i & 1) for m in range(256))


# -- superseding, pruning, ids, sampling, dedup ----------------------------------------------------

def test_later_writes_supersede_and_dead_writes_are_pruned(tmp_path):
    ops = [("w", 1, 1, 0xA, "old"), ("fua", 1, 1, 0xB, "new"), ("w", 2, 1, 0xC, "other")]
    space = load(record(tmp_path, ops))
    after_new = [p for p in space.points if p.op is not None and p.op.role == "new" and not p.inflight][0]
    states = list(space.iter_states([after_new.index]))
    assert len(states) == 1  # "old" is free but entirely overwritten by the forced "new"
    assert {_blk(image(s), 1) for s in states} == {0xB}
    t = _tally(space)
    assert t.covered == t.legal  # the pruned choice still counts as covered


def test_ids_are_stable_and_reproducible(tmp_path):
    log = record(tmp_path, WORKED + [("w", 6, 2, 6, "W6"), ("w", 1, 1, 7, "W7")])
    a = {s.id: (s.key, image(s)) for s in load(log).iter_states()}
    space = load(log)
    for sid, (key, img) in a.items():
        st_ = space.state(sid)
        assert st_.id == sid and st_.key == key and image(st_) == img
    for bad in ("P1", "X3-0", "P999-0", "P0-ff", "P3-T0"):
        with pytest.raises(BlkError):
            space.state(bad)


def test_torn_ids_round_trip(tmp_path):
    log = record(tmp_path, [("w", 0, 2, 1, "a"), ("fua", 2, 2, 2, "b"), ("w", 4, 1, 3, "c")], ss=4096)
    space = load(log, torn=True)
    for s in space.iter_states():
        assert s.id.split("-")[1].startswith("T")
        again = space.state(s.id)
        assert again.key == s.key and again.combo == s.combo


def test_sampling_beyond_the_bound_is_seeded(tmp_path):
    ops = [("w", b % NBLOCKS, 1, b + 1, f"w{b}") for b in range(8)]  # 8 free writes: 256 states at the end
    log = record(tmp_path, ops)
    last = len(load(log).points) - 1

    def ids(seed):
        return [s.id for s in load(log, bound=32, seed=seed).iter_states([last])]

    assert len(ids(0)) == 32 and ids(0) == ids(0)
    assert ids(0) != ids(1)
    space = load(log, bound=32)
    sampled = list(space.iter_states([last]))
    assert sampled[0].id == f"P{last}-0" and sampled[1].id == f"P{last}-ff"  # none, then all
    t = _tally(space)
    assert t.exhaustive_points < t.points and 0 < t.covered < t.legal


def test_explore_groups_identical_images_across_points(tmp_path):
    log = record(tmp_path, [("w", 1, 1, 1, "a"), ("mark", "op 0"), ("flush",), ("mark", "op 1")])
    ex = load(log).explore()
    assert ex.coverage.enumerated == sum(g.count for g in ex.groups)
    assert ex.coverage.unique == len(ex.groups) == 2  # zeros, and block 1 = 1
    with_a = [g for g in ex.groups if _blk(image(g.state), 1) == 1][0]
    assert [p.index for p in with_a.points] == [1, 2, 3, 4, 5]
    assert with_a.points[-1].last_mark == "dm-log-writes-end"
    assert ex.shard(0, 2) + ex.shard(1, 2) != [] and len(ex.shard(1, 2)) == 1
    with pytest.raises(BlkError):
        ex.shard(2, 2)


def test_dedup_sees_the_base_image(tmp_path):
    """A write of the base's own bytes gives the same image: with the base known, one state."""
    base = bytes([5]) * (NBLOCKS * B)
    log = record(tmp_path, [("w", 1, 1, 5, "same as base")], base=base)
    assert load(log, base=base).explore().coverage.unique == 1
    assert load(log).explore().coverage.unique == 2  # without it: never merged wrongly, just less
    s = list(load(log, base=base).iter_states())[-1]
    assert s.overlay().read(0) == bytes([5]) * B


def test_crash_points_know_the_last_mark(tmp_path):
    log = record(tmp_path, [("mark", "op 0"), ("w", 1, 1, 1, ""), ("mark", "op 1"), ("fua", 2, 1, 2, "")])
    space = load(log)
    assert [(p.last_mark, p.inflight) for p in space.points] == [
        (None, False), ("op 0", False), ("op 0", False), ("op 1", False), ("op 1", True), ("op 1", False),
        ("dm-log-writes-end", False)]
    assert space.points_at_marks() == [1, 3, 6]
    assert "during seq 3 fua" in space.points[4].label


def test_state_descriptions(tmp_path):
    space = load(record(tmp_path, WORKED))
    s = space.state("P7-1")
    d = s.to_dict()
    assert d["point"]["label"].startswith("after seq 5 write") and [p["role"] for p in d["persisted"]] == ["W3"]
    assert [p["role"] for p in d["dropped"]] == ["W5"]
    assert [op.role for op in s.included] == ["W1", "W2", "W3", "W4"]
    json.dumps(d)


def test_sidecar_that_does_not_match_the_log(tmp_path):
    log = record(tmp_path, WORKED)
    sc = read_sidecar(sidecar_path(log))
    lines = (tmp_path / "run.log.roles").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["sector"] += 8
    lines[1] = json.dumps(rec)
    (tmp_path / "run.log.roles").write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptError, match="sidecar seq 0 .* does not match log entry 0"):
        load(log)
    assert sc.ops[0].entry == 0


def test_sidecar_longer_than_the_log_is_noted(tmp_path):
    log = record(tmp_path, WORKED)
    lg = read_log(log)
    sc = read_sidecar(sidecar_path(log))
    short = type(lg)(lg.path, lg.sectorsize, lg.entries[:4], lg.file_size, lg.end_offset, lg.buffer)
    space = CrashSpace(short, sc)
    assert any("no log entry" in n for n in space.notes)


# -- overlays --------------------------------------------------------------------------------------

def test_overlay_reads_writes_and_materializes(tmp_path):
    base_path = tmp_path / "base.img"
    base_path.write_bytes(bytes([9]) * (4 * B))
    ov = Overlay(str(base_path), {1: b"\1" * 512, 9: b"\2" * 512}, unit=512)
    assert ov.nblocks == 4
    blk0 = ov.read(0)
    assert blk0[:512] == b"\x09" * 512 and blk0[512:1024] == b"\1" * 512
    assert ov.read(1)[512:1024] == b"\2" * 512
    ov.write(2, b"\3" * B, fua=True)
    ov.flush()
    ov.discard(3)
    assert ov.read(2, 2) == b"\3" * B + bytes(B)
    assert (ov.counters.writes, ov.counters.fua_writes, ov.counters.flushes) == (1, 1, 1)
    out = tmp_path / "out.img"
    ov.materialize(out)
    assert out.read_bytes() == ov.read(0, 4)
    assert base_path.read_bytes() == bytes([9]) * (4 * B)  # the base is never touched
    with pytest.raises(BlkError, match="base image"):
        ov.materialize(base_path)
    with pytest.raises(BlkError):
        ov.read(3, 2)


def test_state_overlays_are_independent(tmp_path):
    space = load(record(tmp_path, WORKED))
    s = space.state("P7-3")
    a, b = s.overlay(), s.overlay()
    a.write(3, bytes([0xEE]) * B)
    assert _blk(a.read(3), 3 - 3) == 0xEE and b.read(3) == bytes([3]) * B
    assert image(s) == image(space.state("P7-3"))
    assert dict(s.writes()).keys() >= {1, 2, 3, 4, 5}


def test_base_image_from_bytes_and_device(tmp_path):
    raw = bytes(range(256)) * 64
    assert BaseImage(raw).read(100, 10) == raw[100:110]
    ov = Overlay(raw, {}, unit=4096)
    assert BaseImage(ov).block(3) == raw[3 * B:4 * B]


# -- prefixes and the CLI --------------------------------------------------------------------------

def test_replay_prefix(tmp_path):
    log = record(tmp_path, WORKED)
    lg = read_log(log)
    # log: W1 W2 FLUSH W4 W3 W5 FLUSH END
    assert sorted({s // 1 for s in replay_prefix(lg, 1)}) == [1, 2]
    ov = prefix_overlay(lg, 3)
    assert [_blk(ov.read(0, 5), b) for b in range(5)] == [0, 1, 2, 0, 4]
    with pytest.raises(BlkError, match="no entry 99"):
        replay_prefix(lg, 99)


def test_cli_log_show(tmp_path):
    log = record(tmp_path, WORKED)
    r = CliRunner().invoke(log_app, ["show", str(log)])
    assert r.exit_code == 0, r.output
    assert "FUA" in r.output and "seq 4 W4" in r.output and "dm-log-writes-end" in r.output
    r = CliRunner().invoke(log_app, ["show", str(log), "--json"])
    d = json.loads(r.output)
    assert d["nr_entries"] == 8 and d["entries"][3]["ops"][0]["role"] == "W4"


def test_cli_replay(tmp_path):
    log = record(tmp_path, WORKED + [("mark", "done")])
    out = tmp_path / "out.img"
    app = replay_app()
    r = CliRunner().invoke(app, [str(log), "--out", str(out), "--entry", "3"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[4 * B] == 4 and out.read_bytes()[3 * B] == 0
    assert len(out.read_bytes()) == NBLOCKS * B  # the device size, from the sidecar
    base = tmp_path / "base.img"
    base.write_bytes(bytes([0xFF]) * (NBLOCKS * B))
    r = CliRunner().invoke(app, [str(log), "--out", str(out), "--mark", "done", "--base", str(base)])
    assert r.exit_code == 0, r.output
    img = out.read_bytes()
    assert len(img) == NBLOCKS * B and [img[b * B] for b in range(7)] == [0xFF, 1, 2, 3, 4, 5, 0xFF]


@pytest.mark.parametrize("args, msg", [
    (["--entry", "99"], "no entry 99"),
    (["--mark", "nope"], "no mark 'nope'"),
    (["--entry", "1", "--mark", "x"], "give one of"),
])
def test_cli_replay_bad_input(tmp_path, args, msg):
    log = record(tmp_path, WORKED)
    r = CliRunner().invoke(replay_app(), [str(log), "--out", str(tmp_path / "o.img"), *args])
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cli_bad_logs(tmp_path):
    bad = tmp_path / "bad.log"
    bad.write_bytes(b"garbage" * 100)
    for argv, app in ((["show", str(bad)], log_app), ([str(bad), "--out", str(tmp_path / "o")], replay_app())):
        r = CliRunner().invoke(app, argv)
        assert r.exit_code == 2 and "bad magic" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(log_app, ["show", str(tmp_path / "missing.log")])
    assert r.exit_code == 2 and "missing.log" in r.output


def test_unkeyed_state_is_the_same_state(tmp_path):
    """state_from_combo(keyed=False) -- the explorer's search representatives -- skips only the
    content key: the id, the choice and every block of the overlay are the keyed state's; and
    the per-segment block key (`block_choice`) tells apart states whose block differs."""
    ops = [("w", 0, 2, 7, "a"), ("w", 1, 1, 8, "b"), ("mark", "m"), ("w", 3, 1, 9, "c")]
    space = load(record(tmp_path, ops, ss=2048), torn=True, bound=1 << 20)
    seen = 0
    for s in space.iter_states():
        u = space.state_from_combo(s.point.index, s.combo, keyed=False)
        assert (u.id, u.combo, u.key) == (s.id, s.combo, "")
        a, b = u.overlay(), s.overlay()
        assert a.read(0, 4) == b.read(0, 4)
        seen += 1
    assert seen > 10
    by_key: dict = {}
    per = B // 2048
    for s in space.iter_states():
        w = s.writes()
        ov = s.overlay()
        for blk in range(4):
            got = by_key.setdefault((s.point.index, blk, w.block_choice(blk, per)), ov.read(blk))
            assert got == ov.read(blk), (s.id, blk)


def _assert_blocks_over_forced_are_the_overlays(space) -> None:
    per = B // space.sectorsize
    for s in space.iter_states():
        ov = s.overlay()
        for b in range(NBLOCKS):
            assert ov.writes.block_over(b, per, space.sectorsize, space.forced_block(b, s.point.index)) == ov.read(b), \
                (s.id, b)


def test_a_block_over_its_forced_content_is_what_the_overlay_reads(tmp_path):
    """StateWrites.block_over (the explorer's assembly of a block some persisted free write
    touches, from the block's forced content) reads what the overlay reads, sector by sector:
    a plain write then a FUA write over the same block -- the FUA one forced and newer, the plain
    one free and older, which must lose to it -- whole and torn, and 512-byte sectors."""
    ops = [("w", 1, 2, 3, "old"), ("fua", 2, 1, 4, "new"), ("w", 0, 2, 5, "later"), ("flush",), ("w", 1, 1, 6, "x")]
    for ss, torn in ((4096, False), (512, False), (4096, True)):
        _assert_blocks_over_forced_are_the_overlays(load(record(tmp_path, ops, ss=ss, name=f"o{ss}{torn}.log"),
                                                         torn=torn, bound=1 << 20))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op_strategy, min_size=1, max_size=6), ss=st.sampled_from([512, 4096]))
def test_blocks_over_forced_contents_are_the_overlays_reads(tmp_path_factory, ops, ss):
    _assert_blocks_over_forced_are_the_overlays(load(record(tmp_path_factory.mktemp("bo"), ops, ss=ss),
                                                     torn=ss == 4096, bound=1 << 20))
