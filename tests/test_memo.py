"""The explorer's content-keyed memo of pure decoders (blkjournal/memo.py) and its block cache.

A memo that answered from anything but the whole content -- a crc alone, the block's address,
a result computed under another detection mode -- would let a crash state borrow another
state's verdict; a cache that answered a read before the tracer saw it would merge classes.
Each test here builds exactly such a case.
"""

from __future__ import annotations

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


def test_same_crc_other_content_is_decoded_afresh(on):
    """Two blocks with one crc32c (append the crc's own bytes: crc of the result is a constant)."""
    decode, calls = _counted()
    a = b"\x01\x02\x03" + bytes(4089)
    b = b"\x01\x07\x08" + bytes(4089)
    a += crc32c(a).to_bytes(4, "little")
    b += crc32c(b).to_bytes(4, "little")
    assert crc32c(a) == crc32c(b) and a != b
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


@pytest.mark.parametrize("protocol,torn", [("journal", False), ("ordered", True), ("none", False)])
def test_explorer_results_do_not_depend_on_the_caches(tmp_path, monkeypatch, protocol, torn):
    """Classes, coverage and illegal states are the same with the memo and the tracer's block
    cache switched off."""
    def run():
        res, _ = crashtest(str(tmp_path), protocol=protocol, nops=40, seed=2, torn=torn, jobs=1, bound=256)
        return (res.states_checked, res.states_covered, res.states_enumerated, res.illegal, res.illegal_states,
                [c["key"] for c in res.clusters], [f.state for f in res.failures])

    cached = run()
    monkeypatch.setattr(memo, "enable", lambda on=True: memo.clear())
    monkeypatch.setitem(memo._state, "on", False)
    from blkjournal.crash import states

    monkeypatch.setattr(states.StateWrites, "block_choice", lambda self, b, per: object())  # never hits
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
    a = b"\x01\x02\x03" + bytes(4089)
    b = b"\x01\x07\x08" + bytes(4089)
    a += crc32c(a).to_bytes(4, "little")
    b += crc32c(b).to_bytes(4, "little")
    assert crc32c(a) == crc32c(b) and a != b
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
