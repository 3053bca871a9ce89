"""The explorer's content-keyed memo of pure decoders (blkjournal/memo.py) and its block cache.

A memo that answered from anything but the whole content -- a crc alone, the block's address,
a result computed under another detection mode -- would let a crash state borrow another
state's verdict; a cache that answered a read before the tracer saw it would merge classes.
Each test here builds exactly such a case.
"""

from __future__ import annotations

import dataclasses

import pytest

from blkjournal import memo
from blkjournal.crash.explore import crashtest
from blkjournal.errors import CorruptError, MisdirectedError
from blkjournal.format import WEAK_ENV, Origin, crc32c


@pytest.fixture
def on():
    memo.enable()
    yield
    memo.enable(False)


def _counted():
    calls = []

    @memo.pure
    def decode(raw: bytes, where: int):
        calls.append(where)
        if raw[:1] == b"X":
            raise CorruptError(f"block {where}: bad")
        return raw[1:3]

    return decode, calls


def test_off_by_default_calls_through():
    decode, calls = _counted()
    assert not memo.enabled()
    decode(bytes(4096), 1)
    decode(bytes(4096), 1)
    assert len(calls) == 2


def test_keyed_by_the_whole_content(on):
    decode, calls = _counted()
    a = b"\x01\x02\x03" + bytes(4093)
    assert decode(bytes(a), 7) == b"\x02\x03"
    assert decode(bytes(bytearray(a)), 7) == b"\x02\x03" and len(calls) == 1  # equal content, other object
    assert decode(a, 8) and len(calls) == 2  # another address
    b = bytearray(a)
    b[4000] = 9  # one byte far from what the result shows
    assert decode(bytes(b), 7) == b"\x02\x03" and len(calls) == 3
    assert decode(bytearray(a), 7) and len(calls) == 4  # a mutable buffer is never a key


def _crc_twins() -> tuple[bytes, bytes]:
    """Two different blocks with one crc32c (each ends in its own crc: the crc of the result is a
    constant): a cache keyed by crc alone would confuse them."""
    a = b"\x01\x02\x03" + bytes(4089)
    b = b"\x01\x07\x08" + bytes(4089)
    a += crc32c(a).to_bytes(4, "little")
    b += crc32c(b).to_bytes(4, "little")
    assert crc32c(a) == crc32c(b) and a != b
    return a, b


def test_same_crc_other_content_is_decoded_afresh(on):
    """Two blocks with one crc32c (_crc_twins) are decoded apart."""
    decode, calls = _counted()
    a, b = _crc_twins()
    assert decode(a, 1) == b"\x02\x03"
    assert decode(b, 1) == b"\x07\x08" and len(calls) == 2


def test_a_refusal_is_repeated_as_a_fresh_error(on):
    decode, calls = _counted()
    raw = b"X" + bytes(4095)
    for _ in range(2):
        with pytest.raises(CorruptError, match="block 3: bad"):
            decode(raw, 3)
    assert len(calls) == 1


def test_detection_mode_is_part_of_the_key(on, monkeypatch):
    """An origin sealed for block 5 found at block 6: misdirected, unless format 1's weak detection
    is on -- a refusal memoised in one mode must not answer in the other."""
    raw = Origin(1, 1, 3, 0, 0, 9, 0).pack(5)
    with pytest.raises(MisdirectedError):
        Origin.unpack(raw, 6)
    monkeypatch.setenv(WEAK_ENV, "1")
    assert Origin.unpack(raw, 6).file_id == 1
    monkeypatch.delenv(WEAK_ENV)
    with pytest.raises(MisdirectedError):
        Origin.unpack(raw, 6)


def test_mutable_results_are_not_kept(on):
    calls = []

    @memo.pure
    def grow(raw: bytes):
        calls.append(1)
        return bytearray(raw)

    x = grow(b"ab")
    x += b"c"
    assert grow(b"ab") == b"ab" and len(calls) == 2


@dataclasses.dataclass(frozen=True)
class _Pair:
    a: object
    b: object = 0


def test_a_frozen_records_fields_are_judged_in_every_result(on):
    """Whether a result is kept is judged on its values, in every call: a frozen record (its
    fields' names remembered per class) holding bytes and numbers is kept, the same class
    holding a list -- or a tuple holding one -- is not; a tuple of plain values and records is."""
    calls = []

    @memo.pure
    def rec(raw: bytes, how: int):
        calls.append(1)
        return (_Pair(raw, 1), _Pair(raw, [1]), (_Pair(raw, (1, b"x")), 2), (_Pair(raw, ([1],)),))[how]

    seen = set()
    for how, kept in ((0, True), (1, False), (2, True), (3, False), (0, True), (1, False)):
        n = len(calls)
        rec(b"ab", how)
        rec(b"ab", how)
        assert len(calls) - n == ((0 if how in seen else 1) if kept else 2), (how, kept, len(calls) - n)
        if kept:
            seen.add(how)
    x = rec(b"ab", 1)
    x.b.append(2)
    assert rec(b"ab", 1).b == [1]


@pytest.mark.parametrize("protocol,torn", [("journal", False), ("ordered", True), ("none", False)])
def test_explorer_results_do_not_depend_on_the_caches(tmp_path, monkeypatch, protocol, torn):
    """Classes, coverage and illegal states are the same with the memo, the tracer's block
    caches (the varying blocks', the forced blocks' across crash points), its per-segment
    search answers and the segments' first checks taken from the one before (checkmemo.py)
    switched off."""
    def run():
        res, _ = crashtest(str(tmp_path), protocol=protocol, nops=40, seed=2, torn=torn, jobs=1, bound=256)
        return (res.states_checked, res.states_covered, res.states_enumerated, res.illegal, res.illegal_states,
                [c["key"] for c in res.clusters], [f.state for f in res.failures])

    cached = run()
    monkeypatch.setattr(memo, "enable", lambda on=True: memo.clear())
    monkeypatch.setitem(memo._state, "on", False)
    from blkjournal.crash import states

    monkeypatch.setattr(states.StateWrites, "block_choice", lambda self, b, per: (object(),))  # never hits
    # (a choice naming a persisted write: every varying block is assembled from its sectors)
    monkeypatch.setattr(states.CrashSpace, "forced_block",  # assembled afresh from the state's sectors
                        lambda self, b, point: self.state_from_combo(point, (), keyed=False).overlay().read(b))
    from blkjournal.crash.explore import Tracer

    def find(self, block, count, pred, key=None):  # block by block, no answers kept per segment
        return next((got for b in range(block, block + count) if (got := self._probe(b, pred, None))), None)
    monkeypatch.setattr(Tracer, "find", find)
    from blkjournal.crash.checkmemo import CheckMemo

    monkeypatch.setattr(CheckMemo, "check", lambda self, tr, after=None, keep=None: self.run(tr))  # every check run
    assert run() == cached
    assert protocol != "none" or cached[3] > 0


def _reader(blocks: dict):
    seen = []

    def read(b):
        seen.append(b)
        return blocks[b]
    return read, seen


def _sum_until_zero(calls):
    """A computation that reads blocks 0, 1, ... until one starts with a zero byte: which blocks
    it reads depends on what it read."""
    def compute(read):
        calls.append(1)
        total, b = 0, 0
        while True:
            v = read(b)
            if v[0] == 0:
                return total, total
            total += v[0]
            b += 1
    return compute


def test_a_replayed_computation_answers_only_when_every_read_matches(on):
    calls = []
    compute = _sum_until_zero(calls)
    blocks = {0: b"\x05" + bytes(4095), 1: b"\x07" + bytes(4095), 2: bytes(4096), 3: b"\x09" + bytes(4095)}
    read, seen = _reader(blocks)
    assert memo.replayed("t", (), read, compute, lambda s: s) == 12 and len(calls) == 1
    seen.clear()
    assert memo.replayed("t", (), read, compute, lambda s: s) == 12 and len(calls) == 1
    assert seen == [0, 1, 2]  # a hit makes the same reads, in order, and no other
    other = {**blocks, 2: b"\x01" + bytes(4095), 4: bytes(4096)}  # block 2 differs: it reads on
    read2, seen2 = _reader(other)
    assert memo.replayed("t", (), read2, compute, lambda s: s) == 22 and len(calls) == 2
    assert seen2[:3] == [0, 1, 2] and seen2[3:] == [0, 1, 2, 3, 4]  # the walk's reads are a prefix of the run's
    assert memo.replayed("t", (), read, compute, lambda s: s) == 12 and len(calls) == 2  # both kept
    assert memo.replayed("t", ("other key",), read, compute, lambda s: s) == 12 and len(calls) == 3


def test_a_replayed_computation_compares_whole_contents_and_keeps_no_failed_run(on):
    calls = []
    compute = _sum_until_zero(calls)
    a, b = _crc_twins()
    memo.replayed("t", (), _reader({0: a, 1: bytes(4096)})[0], compute, lambda s: s)
    memo.replayed("t", (), _reader({0: b, 1: bytes(4096)})[0], compute, lambda s: s)
    assert len(calls) == 2  # one crc, two contents: not confused

    def failing(read):
        read(9)
    for _ in range(2):
        with pytest.raises(KeyError):
            memo.replayed("f", (), _reader({})[0], failing, lambda s: s)
    refused = _reader({})[0]
    with pytest.raises(KeyError):  # a read that raised is met again by the real run
        memo.replayed("t", (), refused, compute, lambda s: s)


def test_replayed_is_a_plain_call_when_off():
    calls = []
    compute = _sum_until_zero(calls)
    read = _reader({0: bytes(4096)})[0]
    assert not memo.enabled()
    memo.replayed("t", (), read, compute, lambda s: s)
    memo.replayed("t", (), read, compute, lambda s: s)
    assert len(calls) == 2


def test_an_immutable_list_element_is_keyed_by_the_object(on):
    calls = []

    @memo.pure
    def names(entries: list, block: int):
        calls.append(1)
        return tuple(e.name for e in entries)

    from blkjournal.format import ObjEntry
    e1, e2 = ObjEntry(name="a"), ObjEntry(name="b")
    assert names([e1, e2], 1) == ("a", "b") and names([e1, e2], 1) == ("a", "b") and len(calls) == 1
    assert names([e1, ObjEntry(name="c")], 1) == ("a", "c") and len(calls) == 2


# ---------------------------------------------------------------- memo.stepped (journal replay)
def _stepper(calls):
    """A log walk: state (position, total); a step reads the block at the position and adds its
    first byte, stopping at a zero -- which blocks a step reads depends on the state."""
    def step(state, read):
        calls.append(state)
        pos, total = state
        v = read(pos)
        if v[0] == 0:
            return state, True
        return (pos + 1, total + v[0]), False
    return step


def test_a_stepped_computation_resumes_after_the_last_matching_step(on):
    calls = []
    step = _stepper(calls)
    blocks = {0: b"\x05" + bytes(4095), 1: b"\x07" + bytes(4095), 2: b"\x02" + bytes(4095), 3: bytes(4096)}
    read, seen = _reader(blocks)
    assert memo.stepped("s", (), read, (0, 0), step) == (3, 14) and len(calls) == 4
    calls.clear()
    seen.clear()
    assert memo.stepped("s", (), read, (0, 0), step) == (3, 14) and calls == []  # every step's reads match
    assert seen == [0, 1, 2, 3]  # a hit makes the same reads, in order, and no other
    other = {**blocks, 2: b"\x09" + bytes(4095), 4: bytes(4096)}  # the log's third block differs
    read2, seen2 = _reader(other)
    calls.clear()
    assert memo.stepped("s", (), read2, (0, 0), step) == (3, 21)  # not the former run's answer
    assert calls == [(2, 12), (3, 21)]  # resumed from the state after the two matching steps
    assert seen2 == [0, 1, 2, 2, 3]  # the walk's reads, then the resumed steps'
    calls.clear()
    assert memo.stepped("s", (), read, (0, 0), step) == (3, 14) and calls == []  # both kept


def test_a_stepped_computation_is_keyed_by_its_first_state(on):
    """The same reads from another first state (a journal replayed from another tail) mean
    another computation: its result must not be a former run's."""
    calls = []
    step = _stepper(calls)
    blocks = {0: b"\x05" + bytes(4095), 1: bytes(4096)}
    assert memo.stepped("s", (), _reader(blocks)[0], (0, 0), step) == (1, 5)
    assert memo.stepped("s", (), _reader(blocks)[0], (0, 100), step) == (1, 105)
    assert memo.stepped("s", ("k",), _reader(blocks)[0], (0, 100), step) == (1, 105) and len(calls) == 6


def test_a_stepped_computation_compares_whole_contents_and_keeps_no_failed_step(on):
    calls = []
    step = _stepper(calls)
    a, b = _crc_twins()

    def bump(state, read):  # adds the second byte: a and b give different totals
        calls.append(state)
        v = read(state[0])
        return ((state[0] + 1, state[1] + v[1]), state[0] == 0) if v[0] else (state, True)
    assert memo.stepped("c", (), _reader({0: a})[0], (0, 0), bump) == (1, 2)
    assert memo.stepped("c", (), _reader({0: b})[0], (0, 0), bump) == (1, 7)  # one crc, two contents
    calls.clear()
    with pytest.raises(KeyError):  # block 1 is missing: the second step's read raises
        memo.stepped("s", (), _reader({0: b"\x05" + bytes(4095)})[0], (0, 0), step)
    with pytest.raises(KeyError):  # not kept: met again by the real step, the first step answered
        memo.stepped("s", (), _reader({0: b"\x05" + bytes(4095)})[0], (0, 0), step)
    assert calls == [(0, 0), (1, 5), (1, 5)]


def test_stepped_is_a_plain_loop_when_off():
    calls = []
    read = _reader({0: b"\x05" + bytes(4095), 1: bytes(4096)})[0]
    assert not memo.enabled()
    for _ in range(2):
        assert memo.stepped("s", (), read, (0, 0), _stepper(calls)) == (1, 5)
    assert len(calls) == 4


# ---------------------------------------------------------------- the explorer's other caches
def test_forced_blocks_are_each_crash_points_own(tmp_path):
    """CrashSpace.forced_block, kept across crash points, is at every point exactly the block the
    state without free writes shows: a key that missed a forced write to one of its sectors
    would hand a later point an earlier content."""
    from blkjournal.crash.explore import record
    from blkjournal.crash.logwrites import read_log
    from blkjournal.crash.recorder import read_sidecar, sidecar_path
    from blkjournal.crash.states import CrashSpace
    from blkjournal.crash.workload import random_workload

    log = str(tmp_path / "j.log")
    record(str(tmp_path / "img"), log, "journal", "flush", random_workload(1, 30), size=2 << 20)
    space = CrashSpace(read_log(log), read_sidecar(sidecar_path(log)))
    blocks = sorted({s // 8 for w in space.writes for s in range(w.s0, w.s0 + w.n)})
    changed = 0
    for pi in range(0, len(space.points), 3):
        ov = space.state_from_combo(pi, (), keyed=False).overlay()
        for b in blocks:
            assert space.forced_block(b, pi) == ov.read(b), (pi, b)
        changed += pi > 0
    assert changed and len(space._forced_blocks) > len(blocks)  # blocks did change content between points


def test_a_varying_block_is_its_forced_content_only_while_no_write_over_it_persisted(tmp_path):
    """The tracer takes a varying block whose free writes all stayed unpersisted from
    CrashSpace.forced_block (the object later segments share): a state in which one of them
    persisted must read that write's content, as the overlay assembles it."""
    from blkjournal.crash.explore import Tracer, record
    from blkjournal.crash.logwrites import read_log
    from blkjournal.crash.recorder import read_sidecar, sidecar_path
    from blkjournal.crash.states import CrashSpace
    from blkjournal.crash.workload import random_workload

    log = str(tmp_path / "j.log")
    record(str(tmp_path / "img"), log, "journal", "flush", random_workload(1, 30), size=2 << 20)
    space = CrashSpace(read_log(log), read_sidecar(sidecar_path(log)))
    per, seen = 8, {"forced": 0, "persisted": 0}
    for pi in range(len(space.points)):
        free = space.free_writes(pi)
        varying = {s // per for w in free for s in range(w.s0, w.s0 + w.n)}
        vcache: dict = {}
        for combo in [()] + [((pos, 1),) for pos in range(len(free))]:
            ov = space.state_from_combo(pi, combo, keyed=False).overlay()
            tr = Tracer(ov, {}, varying, vcache, lambda b, w=ov.writes: w.block_choice(b, per),
                        forced=lambda b, pi=pi: space.forced_block(b, pi))
            for b in sorted(varying):
                got = tr.read(b)
                assert got == ov.read(b), (pi, combo, b)
                if not any(ov.writes.block_choice(b, per)):
                    assert got is space.forced_block(b, pi)
                    seen["forced"] += 1
                else:
                    seen["persisted"] += 1
    assert seen["forced"] and seen["persisted"]


def test_a_files_load_from_the_memo_is_a_fresh_copy(tmp_path):
    """Store.load answers each file from a former load of it (memo.replayed per file) when only
    another file changed: what it hands out must be the store's own copy, not one shared with
    the former load or with the next."""
    from blkjournal.crash.image import Overlay
    from blkjournal.store import Store

    dev = Overlay(None, nblocks=1024)
    st = Store.mkfs(dev, "journal", "flush")
    st.put("a", b"A" * 9000)
    st.put("b", b"B" * 100)
    st.sync()
    memo.enable()
    try:
        fid = st.names["a"]
        first = Store.open(dev, recover=False)
        loaded = []
        for n in range(3):
            w = Store.open(dev)  # another file changes: the whole-store load misses, file a's hits
            w.put("b", bytes([n]) * (200 + n))
            w.sync()
            s = Store.open(dev, recover=False)
            assert s.files[fid].size == 9000 and s.read("a") == b"A" * 9000
            assert s.read("b") == bytes([n]) * (200 + n)
            s.files[fid].size = 1  # what one state's check does to its store is its own
            s.files[fid].map.root_blocks[0] = 0
            loaded.append(s)
        first.files[fid].size = 2
    finally:
        memo.enable(False)
    assert len({id(s.files[fid]) for s in loaded}) == 3


def test_a_search_sees_the_checks_own_writes_over_the_segments_answers():
    """Tracer.find keeps, per segment and search, where the blocks no free write touches answer
    yes; a check that wrote one of them must be judged on what it wrote, before and after the
    first shared hit."""
    from blkjournal.crash.explore import Tracer
    from blkjournal.crash.image import Overlay

    inner = Overlay(None, nblocks=16)
    one = b"\x01" + bytes(4095)
    inner.write(5, one)
    inner.write(9, one)
    shared, probes = {}, {}
    found = lambda raw, b: raw[0] == 1  # noqa: E731

    def check():
        return Tracer(inner, shared, set(), {}, None, probes=probes)

    assert check().find(0, 16, found, key="k")[0] == 5
    t = check()
    t.write(3, one)  # this check's own write, before the shared hit
    assert t.find(0, 16, found, key="k")[0] == 3
    t = check()
    t.write(5, bytes(4096))  # the shared hit, overwritten by this check
    assert t.find(0, 16, found, key="k")[0] == 9
    t.write(9, bytes(4096))
    assert t.find(0, 16, found, key="k") is None
    assert check().find(0, 16, found, key="k") == (5, one)  # the next check: the segment's answer


def test_a_searchs_answers_kept_across_segments_follow_the_blocks_content():
    """Tracer.find's answers on shared blocks are kept across segments with the content they
    judged (the forced blocks are the same objects while they do not change): a segment whose
    block holds another content is judged afresh."""
    from blkjournal.crash.explore import Tracer
    from blkjournal.crash.image import Overlay

    one = b"\x01" + bytes(4095)
    found = lambda raw, b: raw[0] == 1  # noqa: E731
    verdicts = {}
    first, second = Overlay(None, nblocks=16), Overlay(None, nblocks=16)
    first.write(5, one)
    second.write(9, one)  # the next segment: block 5 no longer answers, block 9 does
    assert Tracer(first, {}, set(), {}, None, verdicts=verdicts).find(0, 16, found, key="k")[0] == 5
    assert Tracer(second, {}, set(), {}, None, verdicts=verdicts).find(0, 16, found, key="k")[0] == 9


def _first_byte(raw, b):
    return raw[0]


def _second_byte(raw, b):
    return raw[1]


def _odd_second(raw, b):
    return raw[1] % 2 == 1


def test_a_ranked_searchs_kept_ranks_follow_the_content_the_rank_and_the_threshold():
    """An `AtLeast` search keeps each block's rank per content (across segments: the forced
    blocks are the same objects while they do not change) and the ranks of a searched range per
    segment, whatever the threshold: every answer must be the one a block-by-block search gives,
    for thresholds asked in any order, two rank functions over one range, a segment whose block
    holds another content, and a block a free write touches (judged on each of its contents)."""
    from blkjournal.crash.explore import Tracer
    from blkjournal.crash.image import Overlay
    from blkjournal.device import AtLeast

    def blk(a, c=0):
        return bytes([a, c]) + bytes(4094)

    def plain(dev, pred):  # the truth: BlockDevice.find, block by block
        return next(((b, dev.read(b)) for b in range(16) if pred(dev.read(b), b)), None)

    verdicts = {}
    for contents in ({3: blk(2, 9), 7: blk(5, 1), 12: blk(9, 4)},  # segment 1
                     {3: blk(2, 9), 7: blk(1, 1), 12: blk(9, 7)},  # segment 2: block 7 holds another content
                     {3: blk(8, 0), 12: blk(9, 7)}):  # segment 3: block 3 too, block 7 back to zeros
        dev = Overlay(None, nblocks=16)
        for b, v in contents.items():
            dev.write(b, v)
        shared, probes = {}, {}
        for rank, valid in ((_first_byte, None), (_second_byte, None), (_first_byte, _odd_second)):
            for at in (4, 1, 9, 10, 0, 2, 6):
                t = Tracer(dev, shared, set(), {}, None, probes=probes, verdicts=verdicts)
                pred = AtLeast(rank, at, valid)
                assert t.find(0, 16, pred, key=(rank.__name__, valid and valid.__name__, at)) == plain(dev, pred), \
                    (contents, rank.__name__, valid, at)
    # A block a free write touches (with no free write persisted it holds 9): judged on every
    # content it takes in the class, never on the forced content alone; the state's content
    # (1 or 6, checks of one segment) judged as each check sees it.
    forced = lambda b: blk(9) if b == 7 else bytes(4096)  # noqa: E731
    probes = {}
    cases = ((1, 3, 5), (6, 3, 2), (1, 3, 2), (6, 1, 0), (1, 1, 0), (6, 7, 5), (1, 5, 5), (6, 6, 2), (1, 3, 6))
    for valid in (None, _odd_second):
        for mine, at, other in cases:
            dev = Overlay(None, nblocks=16)
            dev.write(7, blk(mine, mine))  # (second byte: odd for 1, even for 6 and 9)
            t = Tracer(dev, {}, {7}, {}, lambda b, m=mine: (m,), versions=lambda b, rep, o=other: [blk(o, o)],
                       verdicts=verdicts, forced=forced, probes=probes)
            pred = AtLeast(_first_byte, at, valid)
            got = t.find(0, 16, pred, key=("first", valid and valid.__name__, at))
            assert (got and got[0]) == (7 if pred(blk(mine, mine), 7) else None), (valid, mine, at, other)
            # read: some content of the class answers
            assert (7 in t.first_read) == any(pred(blk(x, x), 7) for x in (mine, other)), (valid, mine, at, other)


def _check_run(calls):
    """A check as checkmemo.py sees one: what it reads, searches and writes depends on what it read."""
    def run(dev):
        calls.append(1)
        a = dev.read(0)
        d = dev.read(3)  # read, then written below: a walk that left its writes behind would show them here
        b = dev.read(1) if a[0] == 1 else None
        dev.write(3, bytes([a[0] + 5]) + bytes(4095))
        hit = dev.find(0, 8, lambda raw, blk: raw[0] == 6, key="six")  # sees the check's own write
        return {"a": a[:1], "b": b and b[:1], "d": d[:1], "hit": hit and hit[0]}, "", ["f"]
    return run


def _tracer(blocks: dict):
    from blkjournal.crash.explore import Tracer
    from blkjournal.crash.image import Overlay

    inner = Overlay(None, nblocks=16)
    for b, v in blocks.items():
        inner.write(b, bytes([v]) + bytes(4095))
    return Tracer(inner)


def test_a_segments_first_check_takes_the_former_outcome_only_when_every_answer_is_the_same():
    """checkmemo: the first check of segment 1 walks segment 0's last check; the same answers give
    its outcome and the same first reads (and its write, which a search then finds); a block
    that differs runs the check for real on a fresh tracer; another segment's check is not used."""
    from blkjournal.crash.checkmemo import CheckMemo

    calls = []
    run = _check_run(calls)
    cm = CheckMemo(run)
    t = _tracer({0: 1, 1: 4})
    first = cm.check(t, None, 0)
    cm.end(0)
    assert first[0] == {"a": b"\x01", "b": b"\x04", "d": b"\x00", "hit": 3} and len(calls) == 1
    t = _tracer({0: 1, 1: 4})
    assert cm.check(t, 0, 1) == first and len(calls) == 1  # met alike: answered
    assert t.first_read == {0, 1, 3} and t.written == {3}
    cm.end(1)
    t = _tracer({0: 1, 1: 9})  # block 1 differs: the walk stops there and the check runs afresh
    got = cm.check(t, 1, 2)
    assert got == run(_tracer({0: 1, 1: 9})) and got[0]["b"] == b"\x09" and got[0]["d"] == b"\x00"
    assert t.first_read == {0, 1, 3} and len(calls) == 3
    cm.end(2)
    t = _tracer({0: 1, 1: 9})
    cm.check(t, 5, 6)  # segment 5 kept nothing: no walk of segment 2's check
    assert len(calls) == 4


def test_a_segments_first_check_meets_the_former_one_on_a_derived_reads_value():
    """checkmemo: a derived read (BlockDevice.read_derived) is walked by its value: another
    content giving the same value is met alike; one giving another value runs the check."""
    from blkjournal.crash.checkmemo import CheckMemo

    calls = []
    parity = lambda raw: raw[0] % 2  # noqa: E731

    def run(dev):
        calls.append(1)
        return {"odd": dev.read_derived(2, parity)}, "", []
    cm = CheckMemo(run)
    assert cm.check(_tracer({2: 1}), None, 0)[0] == {"odd": 1}
    cm.end(0)
    t = _tracer({2: 3})  # another content, the same value: answered, and read as the check reads it
    assert cm.check(t, 0, 1)[0] == {"odd": 1} and len(calls) == 1 and t.first_read == {2}
    cm.end(1)
    assert cm.check(_tracer({2: 2}), 1, 2)[0] == {"odd": 0} and len(calls) == 2  # another value: run


def test_a_check_whose_read_raised_is_not_kept():
    from blkjournal.crash.checkmemo import CheckMemo

    calls = []

    def run(dev):
        calls.append(1)
        dev.read(0)
        try:
            dev.read(99)  # past the device: refused
        except Exception:
            pass
        return {}, "", []
    cm = CheckMemo(run)
    t = _tracer({})
    cm.check(t, None, 0)
    cm.end(0)
    t = _tracer({})
    cm.check(t, 0, 1)
    assert len(calls) == 2 and t.first_read == {0, 99}


class _Item:
    """A fold's item: an immutable record (the explorer's are journal transactions)."""

    def __init__(self, add: int) -> None:
        self.add = add


def _fold_step(calls):
    def step(state, item):
        calls.append(item)
        if item.add < 0:
            raise ValueError("a bad item")
        return state + (item.add + len(state),)
    return step


def test_a_folded_computation_resumes_after_the_last_matching_item(on):
    calls = []
    step = _fold_step(calls)
    a, b, c, x = _Item(10), _Item(20), _Item(30), _Item(40)
    assert memo.folded("t", 1, [a, b], step, ()) == (10, 21) and calls == [a, b]
    assert memo.folded("t", 1, [a, b, c], step, ()) == (10, 21, 32) and calls == [a, b, c]  # resumed after b
    assert memo.folded("t", 1, [a, x], step, ()) == (10, 41) and calls[-1] is x and len(calls) == 4  # another item
    assert memo.folded("t", 2, [a], step, ()) == (10,) and len(calls) == 5  # another key
    assert memo.folded("t", 1, [a, b, c], step, ()) == (10, 21, 32) and len(calls) == 5  # all kept
    b2 = _Item(20)  # an equal item, another object: items are matched by identity
    assert memo.folded("t", 1, [a, b2, c], step, ()) == (10, 21, 32) and calls[-2:] == [b2, c]
    assert memo.folded("t", 1, [a], step, (7,)) == (7, 11) and calls[-1] is a  # another first state: run


def test_a_folded_step_that_raised_is_not_kept(on):
    calls = []
    a, bad = _Item(1), _Item(-1)
    with pytest.raises(ValueError):
        memo.folded("t", 1, [a, bad], _fold_step(calls), ())
    with pytest.raises(ValueError):
        memo.folded("t", 1, [a, bad], _fold_step(calls), ())
    assert calls == [a, bad, bad]  # a was kept, the step that raised was not


def test_folded_is_a_plain_loop_when_off():
    calls = []
    a = _Item(1)
    memo.folded("t", 1, [a], _fold_step(calls), ())
    memo.folded("t", 1, [a], _fold_step(calls), ())
    assert len(calls) == 2


def test_a_walk_notes_an_equal_content_met_as_another_object(on, monkeypatch):
    """memo._alias: a content met again as another object is found by that object's identity on
    the next walk (no crc), and still answers by its content: an equal object of the other
    branch's content follows that branch."""
    calls = []
    compute = _sum_until_zero(calls)
    x, y, z = b"\x05" + bytes(4095), b"\x06" + bytes(4095), bytes(4096)
    for v in (x, y):
        memo.replayed("t", (), _reader({0: v, 1: z})[0], compute, lambda s: s)
    x2, y2 = bytes(bytearray(x)), bytes(bytearray(y))  # equal contents, other objects
    fingerprints = []
    content = memo._content
    monkeypatch.setattr(memo, "_content", lambda v: fingerprints.append(v) or content(v))
    assert memo.replayed("t", (), _reader({0: y2, 1: z})[0], compute, lambda s: s) == 6
    assert len(fingerprints) == 1  # y2 by content once (z: by identity)
    assert memo.replayed("t", (), _reader({0: y2, 1: z})[0], compute, lambda s: s) == 6
    assert len(fingerprints) == 1  # then by its identity
    assert memo.replayed("t", (), _reader({0: x2, 1: z})[0], compute, lambda s: s) == 5
    assert memo.replayed("t", (), _reader({0: y2, 1: z})[0], compute, lambda s: s) == 6
    assert len(calls) == 2


def test_a_derived_read_splits_a_class_unless_every_content_gives_one_value():
    """Tracer.read_derived: a block free writes touch counts as read (the class splits on it)
    unless fn gives one value for this state's content and every other it takes in the class --
    a torn home whose old and new sectors patch to one image.  A value that differs, a content
    fn refuses, or contents that cannot be listed: read, as by read()."""
    from blkjournal.crash.explore import Tracer
    from blkjournal.crash.image import Overlay

    old, new = b"\x01" * 2048 + b"\x02" * 2048, b"\x01" * 2048 + b"\x03" * 2048
    mixed = b"\x01" * 2048 + b"\x03" * 2048
    inner = Overlay(None, nblocks=16)
    inner.write(5, old)

    def tracer(vs):
        return Tracer(inner, {}, {5}, {}, None, versions=lambda b, rep: vs if b == 5 else [])

    head = lambda raw: raw[:2048]  # noqa: E731 -- the sector every content shares
    t = tracer([new, mixed])
    assert t.read_derived(5, head) == b"\x01" * 2048 and 5 not in t.first_read  # one value: no split
    assert t.read(5) == old and 5 in t.first_read  # a plain read still splits
    t = tracer([new])
    assert t.read_derived(5, lambda raw: raw[2048:]) == b"\x02" * 2048 and 5 in t.first_read  # values differ

    def refuses(raw):
        if raw[2048] == 3:
            raise ValueError("torn")
        return raw[:1]
    t = tracer([new])
    assert t.read_derived(5, refuses) == b"\x01" and 5 in t.first_read  # refused elsewhere in the class
    t = tracer(None)
    assert t.read_derived(5, head) == b"\x01" * 2048 and 5 in t.first_read  # contents not listed
    t = Tracer(inner, {}, set(), {}, None)
    assert t.read_derived(5, head) == b"\x01" * 2048  # untouched by free writes: one content


def _older_origin(fid, e, read):
    """An origin choice other than recovery's: the older of two valid slots."""
    from blkjournal.originslots import choose

    _, _, valid = choose(fid, e, read)
    if len(valid) < 2:
        return None, ()
    o = min(valid, key=lambda o: o.gen)
    return ((0 if o is valid[0] else 1), o), tuple(valid)


def test_an_ordered_files_load_is_keyed_by_its_origin_choice_and_hands_back_its_note(tmp_path, monkeypatch):
    """Under ordered a file's load picks between its origin slots (`origin_choice`) and notes
    the valid origins it saw (the evidence recovery judges lost commits by).  Answered from the
    memo, the note must reach the protocol again, and a load under another choice must not be
    answered from one under recovery's."""
    from blkjournal.crash.image import Overlay
    from blkjournal.format import Superblock
    from blkjournal.protocols import choose_origin
    from blkjournal.store import Store

    dev = Overlay(None, nblocks=1024)
    st = Store.mkfs(dev, "ordered", "flush")
    st.put("a", b"A" * 9000)
    st.sync()
    st.put("a", b"a" * 5000)  # the other origin slot: both hold a valid origin now
    st.sync()
    fid = st.names["a"]
    runs = []
    real = Store.load_file
    monkeypatch.setattr(Store, "load_file", lambda self, *a: runs.append(1) or real(self, *a))
    memo.enable()
    try:
        first = Store.open(dev, recover=False)
        again = Store.open(dev, recover=False)  # every read the same: the file's load is answered
        assert len(runs) == 1
        assert again.protocol.valid == first.protocol.valid and len(first.protocol.valid[fid]) == 2
        assert again.read("a") == b"a" * 5000
        other = Store(dev, Superblock.unpack(dev.read(0)))
        notes = {}
        other.load(origin_choice=_older_origin, on_choice=notes.__setitem__)
        assert len(runs) == 2 and other.read("a") == b"A" * 9000 and notes == first.protocol.valid
        assert choose_origin(fid, first.entries[fid], dev.read)[0][1].gen == first.files[fid].gen
    finally:
        memo.enable(False)


def test_a_checks_writes_are_kept_block_by_block():
    """Tracer.write keeps a check's write block by block (its slices taken at C speed): each
    written block reads back its own 4 KiB, is never a first read, and a search sees it."""
    from blkjournal.crash.explore import Tracer
    from blkjournal.crash.image import Overlay

    t = Tracer(Overlay(None, nblocks=16), {}, set(), {}, None)
    data = b"".join(bytes([k + 1]) * 4096 for k in range(5))
    t.write(3, data)
    t.write(9, bytes([7]) * 4096)
    assert t.written == {3, 4, 5, 6, 7, 9} and t.counters.writes == 2
    assert [t.read(b)[0] for b in range(3, 8)] == [1, 2, 3, 4, 5] and t.read(4, 2) == data[4096:3 * 4096]
    assert t.read(9) == bytes([7]) * 4096 and not t.first_read
    assert t.find(0, 16, lambda raw, b: raw[0] == 4, key="four") == (6, bytes([4]) * 4096)
