"""hwcheck: the record format, the acks log, every verify class on hand-made images, write->verify
end to end on an image file (file sink and tcp listener), and a model-based property test.

Hand-made images: a `Case` writes an acks log line by line as the writer would (intents before
writes, acks after barriers) and an image holding exactly the blocks a test chooses, then runs
the real verify on it (O_DIRECT read of an image under tmp_path, which is ext4).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from blkjournal.device import BLOCK_SIZE
from blkjournal.errors import BlkError, CorruptError
from blkjournal.hwcheck import acklog, record
from blkjournal.hwcheck.acklog import RunHeader, read_run
from blkjournal.hwcheck.cli import hwcheck_app
from blkjournal.hwcheck.lane import Lane
from blkjournal.hwcheck.listener import Listener
from blkjournal.hwcheck.record import SECTOR, Record, read_sector
from blkjournal.hwcheck.schedule import Part, parse_region, split
from blkjournal.hwcheck.sink import TcpSink, placement_warning
from blkjournal.hwcheck.verify import (INTACT, LOST, MISPLACED, ORDERING, TORN, TORN_INFLIGHT, UNACKED,
                                       UNTOUCHED, verify_blocks, verify_device)
from blkjournal.hwcheck.writer import WriteOptions, write

RUN = 0x5EED_0000_0000_0001
OTHER_RUN = 0x0DD0_0000_0000_0002
runner = CliRunner()


class Case:
    """An acks log plus an image, built by hand."""

    def __init__(self, tmp_path, nblocks: int = 8, atomic: int = 512) -> None:
        self.acks = str(tmp_path / "acks.log")
        self.img = str(tmp_path / "disk.img")
        self.nblocks = nblocks
        self.header = RunHeader(RUN, self.img, 0, nblocks, 1, "flush", 1, atomic, 0)
        self.lines = [acklog.encode(self.header.to_event())]
        self.blocks = [bytes(BLOCK_SIZE)] * nblocks
        self.t = 1_000_000_000

    def ev(self, acks=(), intents=(), w: int = 0) -> None:
        """One writer event; time advances 10 ms per event."""
        self.t += 10_000_000
        ev = {"k": "ev", "run": f"{RUN:016x}", "w": w, "t": self.t}
        if acks:
            ev["a"] = acklog.flat(acks)
        if intents:
            ev["i"] = acklog.flat(intents)
        self.lines.append(acklog.encode(ev))

    def acked(self, block: int, gen: int) -> None:
        """Intent, then ack, of one write: the normal life of a durable write."""
        self.ev(intents=[(block, gen)])
        self.ev(acks=[(block, gen)])

    def put(self, block: int, gen: int, run: int = RUN, at: int | None = None) -> None:
        self.blocks[block if at is None else at] = Record(run, block, gen, 0, 0, 0).pack()

    def raw(self, block: int, data: bytes) -> None:
        assert len(data) == BLOCK_SIZE
        self.blocks[block] = data

    def verify(self):
        with open(self.acks, "wb") as f:
            f.writelines(self.lines)
        with open(self.img, "wb") as f:
            f.writelines(self.blocks)
        return verify_device(self.img, read_run(self.acks))


def kinds(report) -> dict[int, str]:
    return {f.block: f.kind for f in report.findings}


def mix(*parts: tuple[bytes, int]) -> bytes:
    """A block whose sectors come from several blocks: mix((a, 4), (b, 4)) = 4 sectors of a, then 4 of b."""
    out, at = b"", 0
    for data, n in parts:
        out += data[at * SECTOR:(at + n) * SECTOR]
        at += n
    return out


# ---- record format ----

def test_crc32c_is_the_castagnoli_check_value():
    import crc32c

    assert crc32c.crc32c(b"123456789") == 0xE3069283


def test_record_roundtrip_and_self_describing_sectors():
    rec = Record(RUN, 42, 7, 3, 99, 123456789)
    data = rec.pack()
    assert len(data) == BLOCK_SIZE
    assert Record.unpack(data) == rec
    for i in range(record.SECTORS):
        s = read_sector(data, i)
        assert (s.kind, s.run, s.block, s.gen, s.index) == (record.OURS, RUN, 42, 7, i)
    # two generations of one block share no sector content
    other = Record(RUN, 42, 8, 3, 100, 0).pack()
    assert all(data[i * SECTOR:(i + 1) * SECTOR] != other[i * SECTOR:(i + 1) * SECTOR] for i in range(8))


def test_record_damage_is_named_per_sector():
    data = bytearray(Record(RUN, 1, 1, 0, 0, 0).pack())
    data[SECTOR * 3 + 200] ^= 0xFF
    assert read_sector(data, 3).kind == record.CORRUPT
    assert read_sector(data, 2).kind == record.OURS
    with pytest.raises(CorruptError):
        Record.unpack(bytes(data))
    assert read_sector(bytes(BLOCK_SIZE), 0).kind == record.ZERO
    assert read_sector(os.urandom(BLOCK_SIZE), 0).kind == record.FOREIGN


# ---- acks log ----

def test_acklog_lines_are_checked(tmp_path):
    line = acklog.encode({"k": "ev", "run": "00", "w": 0, "t": 1, "a": [1, 2]})
    assert acklog.decode(line)["a"] == [1, 2]
    with pytest.raises(ValueError):
        acklog.decode(line.replace(b"[1,2]", b"[1,3]"))


def test_acklog_torn_tail_is_ignored_but_damage_inside_is_bad_input(tmp_path):
    case = Case(tmp_path)
    case.acked(0, 1)
    path = tmp_path / "a.log"
    path.write_bytes(b"".join(case.lines) + case.lines[-1][:20])  # a torn last append
    log = read_run(str(path))
    assert log.torn_tail and log.acked[0].gen == 1
    lines = list(case.lines)
    lines[1] = lines[1].replace(b'"w":0', b'"w":1')
    path.write_bytes(b"".join(lines))
    with pytest.raises(BlkError, match="line 2 is damaged"):
        read_run(str(path))


def test_acklog_picks_the_last_run_or_the_named_one(tmp_path):
    case = Case(tmp_path)
    case.acked(0, 1)
    second = RunHeader(OTHER_RUN, "x", 0, 4, 1, "fua", 1, 512, 0)
    path = tmp_path / "a.log"
    path.write_bytes(b"".join(case.lines) + acklog.encode(second.to_event()))
    assert read_run(str(path)).header.run == OTHER_RUN
    assert read_run(str(path), f"{RUN:016x}"[:6]).acked[0].gen == 1
    with pytest.raises(BlkError, match="matches 0 runs"):
        read_run(str(path), "ffff")
    with pytest.raises(BlkError, match="no such acks file"):
        read_run(str(tmp_path / "missing.log"))


# ---- verify, one test per class ----

def test_intact(tmp_path):
    case = Case(tmp_path)
    case.acked(0, 1)
    case.acked(1, 1)
    case.ev(intents=[(0, 2)])
    case.ev(acks=[(0, 2)])
    case.put(0, 2)
    case.put(1, 1)
    rep = case.verify()
    assert rep.counts[INTACT] == 2 and rep.counts[UNTOUCHED] == 6
    assert rep.verdict == "honest" and rep.exit_code == 0


def test_lost_older_generation(tmp_path):
    case = Case(tmp_path)
    case.acked(0, 1)
    case.acked(0, 2)
    case.put(0, 1)
    rep = case.verify()
    assert kinds(rep) == {0: LOST}
    assert "older generation 1 instead of acked 2" in rep.findings[0].detail
    assert rep.verdict == "lies" and rep.exit_code == 1


@pytest.mark.parametrize("content,word", [
    (bytes(BLOCK_SIZE), "zeros"),
    (b"\xa5" * BLOCK_SIZE, "garbage"),
    (Record(OTHER_RUN, 0, 9, 0, 0, 0).pack(), "stale"),
])
def test_lost_garbage_zeros_or_stale(tmp_path, content, word):
    case = Case(tmp_path)
    case.acked(0, 1)
    case.raw(0, content)
    rep = case.verify()
    assert kinds(rep) == {0: LOST}
    assert word in rep.findings[0].detail
    assert rep.histogram[0].acked == 1 and rep.histogram[0].lost == 1  # lost 0 s before the cut


def test_torn_acked_write_partly_lost(tmp_path):
    case = Case(tmp_path)
    case.acked(0, 1)
    case.acked(0, 2)
    case.raw(0, mix((Record(RUN, 0, 2, 0, 0, 0).pack(), 4), (Record(RUN, 0, 1, 0, 0, 0).pack(), 4)))
    rep = case.verify()
    assert kinds(rep) == {0: TORN}
    assert rep.findings[0].seen == ("gen 2",) * 4 + ("gen 1",) * 4


def test_torn_inside_an_atomic_unit(tmp_path):
    case = Case(tmp_path)
    case.acked(0, 1)
    data = bytearray(Record(RUN, 0, 1, 0, 0, 0).pack())
    data[SECTOR * 5 + 256:SECTOR * 6] = bytes(256)  # half a sector: the device tore inside its unit
    case.raw(0, bytes(data))
    rep = case.verify()
    assert kinds(rep) == {0: TORN}
    assert "inside an atomic unit" in rep.findings[0].detail


def test_torn_unacked_write_is_allowed_at_512_but_not_at_4096(tmp_path):
    for atomic, expect in ((512, TORN_INFLIGHT), (4096, TORN)):
        case = Case(tmp_path, atomic=atomic)
        case.acked(0, 1)
        case.ev(intents=[(0, 2)])  # submitted, power cut before its barrier
        case.raw(0, mix((Record(RUN, 0, 2, 0, 0, 0).pack(), 3), (Record(RUN, 0, 1, 0, 0, 0).pack(), 5)))
        rep = case.verify()
        assert kinds(rep) == {0: expect}, atomic
        assert rep.verdict == ("honest" if expect == TORN_INFLIGHT else "lies")


def test_old_content_is_never_a_tear(tmp_path):
    """Blocks the run never acked may hold anything from before it: an old file system's half-zero
    blocks, a previous run's records (even torn ones).  None of it is a violation at any unit size."""
    for atomic in (512, 4096):
        case = Case(tmp_path, atomic=atomic)
        case.acked(0, 1)
        case.put(0, 1)
        old = Record(OTHER_RUN, 1, 3, 0, 0, 0).pack()
        case.raw(1, mix((b"\x17" * BLOCK_SIZE, 2), (bytes(BLOCK_SIZE), 6)))
        case.raw(2, mix((old, 5), (bytes(BLOCK_SIZE), 3)))
        broken = bytearray(old)
        broken[SECTOR + 100] ^= 1
        case.raw(3, bytes(broken))
        case.ev(intents=[(4, 1)])
        case.raw(4, mix((old, 4), (bytes(BLOCK_SIZE), 4)))  # the in-flight write did not land
        rep = case.verify()
        assert rep.verdict == "honest", (atomic, rep.findings)
        assert rep.counts[UNTOUCHED] == 6 and rep.counts[UNACKED] == 1


def test_ordering_violation(tmp_path):
    """Block 1 was submitted after the flush that acked block 0; block 1 survived, block 0 did not."""
    case = Case(tmp_path)
    case.ev(intents=[(0, 1)])
    case.ev(acks=[(0, 1)], intents=[(1, 1)])  # the ack of batch k travels with the intent of k+1
    case.put(1, 1)
    rep = case.verify()
    assert kinds(rep) == {0: LOST, 1: ORDERING}
    assert "block 0 generation 1" in rep.findings[1].detail
    assert rep.verdict_line().startswith("lies: 1 acked writes lost")


def test_no_ordering_violation_for_concurrent_writes(tmp_path):
    """Writer 1's intent was logged before writer 0's ack: no order between them, only a loss."""
    case = Case(tmp_path)
    case.ev(intents=[(0, 1)], w=0)
    case.ev(intents=[(4, 1)], w=1)
    case.ev(acks=[(0, 1)], w=0)
    case.put(4, 1)
    rep = case.verify()
    assert kinds(rep) == {0: LOST}
    assert rep.counts[UNACKED] == 1


def test_unacked_writes_are_allowed_whether_they_landed_or_not(tmp_path):
    case = Case(tmp_path)
    case.acked(0, 1)
    case.put(0, 1)
    case.acked(1, 1)
    case.ev(intents=[(1, 2), (2, 1), (3, 1)])  # in flight at the cut
    case.put(1, 2)  # landed, newer than the ack
    case.put(2, 1)  # landed, never acked
    # block 3: did not land (zeros)
    rep = case.verify()
    assert rep.counts[UNACKED] == 3 and rep.counts[INTACT] == 1
    assert rep.verdict == "honest"


def test_misplaced_and_phantom_records(tmp_path):
    case = Case(tmp_path)
    case.acked(0, 1)
    case.acked(1, 1)
    case.put(0, 1)
    case.put(3, 1, at=1)  # block 3's record found at block 1
    case.put(2, 5)  # a generation that was never submitted
    rep = case.verify()
    assert kinds(rep) == {1: MISPLACED, 2: MISPLACED}


def test_nothing_acked_is_inconclusive(tmp_path):
    case = Case(tmp_path)
    case.ev(intents=[(0, 1)])
    rep = case.verify()
    assert rep.verdict == "inconclusive" and rep.exit_code == 2


def test_report_json_and_text(tmp_path):
    from blkjournal.hwcheck.report import render

    case = Case(tmp_path)
    case.acked(0, 1)
    rep = case.verify()
    doc = rep.to_json()
    json.dumps(doc)
    assert doc["verdict"] == "lies" and doc["findings"][0]["kind"] == LOST
    text = render(rep)
    assert text.splitlines()[-1].startswith("lies:") and "by age before the cut" in text


# ---- schedule, sink placement ----

def test_region_parsing():
    assert parse_region(None, 100) == (0, 100)
    assert parse_region("4:16", 100) == (4, 16)
    assert parse_region("1M:1M", 1000) == (256, 256)
    assert parse_region("10:", 100) == (10, 90)
    for bad in ("5", "0:200", "1000B:1", "x:y"):
        with pytest.raises(BlkError):
            parse_region(bad, 100)


def test_split_is_disjoint_and_each_lap_covers_the_part():
    parts = split(0, 103, 4, 5)
    seen = set()
    for p in parts:
        lap = {p.at(s) for s in range(p.length)}
        assert {b for b, _ in lap} == set(range(p.start, p.start + p.length)) and {g for _, g in lap} == {1}
        assert p.at(p.length) [1] == 2
        seen |= {b for b, _ in lap}
    assert seen == set(range(103))
    with pytest.raises(BlkError):
        split(0, 10, 4, 5)


def test_acks_on_same_file_system_as_image_warns(tmp_path):
    img = tmp_path / "x.img"
    img.write_bytes(b"")
    assert "shares a file system" in placement_warning(str(tmp_path / "acks"), str(img))
    assert placement_warning("tcp://127.0.0.1:1", str(img)) is None


# ---- end to end on an image file ----

def make_image(tmp_path, blocks: int = 256) -> str:
    path = str(tmp_path / "disk.img")
    with open(path, "wb") as f:
        f.truncate(blocks * BLOCK_SIZE)
    return path


@pytest.mark.parametrize("barrier,batch", [("flush", 3), ("fua", 1)])
def test_write_then_verify_is_honest(tmp_path, barrier, batch):
    img, acks = make_image(tmp_path), str(tmp_path / "acks.log")
    said = []
    res = write(img, acks, WriteOptions(barrier, threads=2, batch=batch, count=60), say=said.append)
    assert res.reason == "count" and res.acked == 120 and res.writes == 120
    assert (res.flushes, res.fua_writes) == ((40, 0) if barrier == "flush" else (0, 120))
    assert said[0].startswith("preflight:")
    log = read_run(acks)
    assert log.end["reason"] == "count" and log.acks == 120
    rep = verify_device(img, log)
    assert rep.verdict == "honest", rep.verdict_line()
    assert rep.counts[INTACT] == 120 and rep.counts[UNTOUCHED] == 136


def test_write_then_lost_cache_is_lies(tmp_path):
    """The lying disk in one line: everything since the start vanishes (nbdkit cache killed)."""
    img, acks = make_image(tmp_path, 64), str(tmp_path / "acks.log")
    write(img, acks, WriteOptions("flush", threads=1, batch=4, count=100), say=lambda m: None)
    with open(img, "r+b") as f:
        f.truncate(0)
        f.truncate(64 * BLOCK_SIZE)
    rep = verify_device(img, read_run(acks))
    assert rep.verdict == "lies" and rep.counts[LOST] == 64


def test_io_error_ends_the_run_and_keeps_earlier_acks(tmp_path, monkeypatch):
    """A power cut under the writer: EIO on the 25th write; acks up to the last barrier stand."""
    real_write, calls = Lane.write, [0]

    def failing(self, block, data, *, fua=False):
        calls[0] += 1
        if calls[0] == 25:
            raise OSError(5, "Input/output error")
        real_write(self, block, data, fua=fua)

    monkeypatch.setattr(Lane, "write", failing)
    img, acks = make_image(tmp_path, 64), str(tmp_path / "acks.log")
    res = write(img, acks, WriteOptions("flush", batch=4), say=lambda m: None)
    assert res.reason == "io-error" and res.acked == 24 and "Input/output error" in res.error
    rep = verify_device(img, read_run(acks))
    assert rep.verdict == "honest" and rep.counts[INTACT] == 24


def test_tcp_listener_path(tmp_path):
    img, out = make_image(tmp_path), str(tmp_path / "listened.log")
    listener = Listener(out, "127.0.0.1", 0)
    host, port = listener.address
    thread = listener.start()
    try:
        res = write(img, f"tcp://{host}:{port}", WriteOptions("flush", threads=2, batch=2, count=20),
                    say=lambda m: None)
        with pytest.raises(BlkError, match="refused a line"):
            sink = TcpSink(host, port)
            try:
                sink.append(b"not a log line\n")
            finally:
                sink.close()
    finally:
        listener.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert res.acked == 40 and listener.stats.refused == 1
    rep = verify_device(img, read_run(out))
    assert rep.verdict == "honest" and rep.counts[INTACT] == 40


# ---- CLI ----

def test_cli_write_stops_on_sigint_and_verify_exit_codes(tmp_path):
    img, acks = make_image(tmp_path), str(tmp_path / "acks.log")

    def interrupt():  # once acks flow (the handler is installed before the acks file exists)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.path.exists(acks) and open(acks, "rb").read().count(b"\n") > 20:
                break
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=interrupt)
    timer.start()
    r = runner.invoke(hwcheck_app, ["write", img, "--barrier", "flush", "--batch", "2", "--acks", acks])
    timer.join()
    assert r.exit_code == 0, r.output
    assert "stopped (signal)" in r.output and r.output.startswith("preflight:")
    r = runner.invoke(hwcheck_app, ["verify", img, "--acks", acks])
    assert r.exit_code == 0 and r.output.strip().splitlines()[-1].startswith("honest:"), r.output
    r = runner.invoke(hwcheck_app, ["verify", img, "--acks", acks, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["verdict"] == "honest"
    with open(img, "r+b") as f:  # lose everything
        f.truncate(0)
        f.truncate(256 * BLOCK_SIZE)
    r = runner.invoke(hwcheck_app, ["verify", img, "--acks", acks])
    assert r.exit_code == 1 and "lies:" in r.output


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    img = make_image(tmp_path)
    r = runner.invoke(hwcheck_app, ["verify", img, "--acks", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such acks file" in r.output and "Traceback" not in r.output
    r = runner.invoke(hwcheck_app, ["write", img, "--barrier", "fua", "--batch", "4", "--acks", str(tmp_path / "a")])
    assert r.exit_code == 2 and "--batch applies to --barrier flush" in r.output
    r = runner.invoke(hwcheck_app, ["verify", str(tmp_path / "missing.img"), "--acks", str(tmp_path / "a")])
    assert r.exit_code == 2


def test_write_refuses_a_file_system_without_force(tmp_path):
    import shutil
    import subprocess

    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 not installed")
    img, acks = make_image(tmp_path, 2048), str(tmp_path / "acks.log")
    subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True, capture_output=True)
    r = runner.invoke(hwcheck_app, ["write", img, "--barrier", "fua", "--count", "1", "--acks", acks])
    assert r.exit_code == 2 and "file system ext4" in r.output and not os.path.exists(acks)
    r = runner.invoke(hwcheck_app, ["write", img, "--barrier", "fua", "--count", "1", "--acks", acks, "--force"])
    assert r.exit_code == 0, r.output


def test_cli_listen_is_bounded(tmp_path):
    t0 = time.monotonic()
    r = runner.invoke(hwcheck_app, ["listen", "--port", "0", "--out", str(tmp_path / "l.log"), "--duration", "0.3"])
    assert r.exit_code == 0 and "listening on 127.0.0.1:" in r.output and "stopped:" in r.output
    assert time.monotonic() - t0 < 5


# ---- the block model, as a property ----

@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 12), batch=st.integers(1, 4), batches=st.integers(1, 12), data=st.data())
def test_any_legal_crash_state_is_honest_and_losing_a_forced_write_is_not(n, batch, batches, data):
    """Single writer, flush per batch, crash inside the last batch: durable = everything flushed;
    of the open batch any subset persisted, each possibly torn at 512 B.  Verify must call every
    such state honest, and must call it lies once one acked write is rolled back."""
    batch = min(batch, n)
    part = Part(0, 0, n, split(0, n, 1, batch)[0].stride)
    header = RunHeader(RUN, "mem", 0, n, 1, "flush", batch, 512, 0)
    lines = [acklog.encode(header.to_event())]
    durable: dict[int, int] = {}
    open_writes: list[tuple[int, int]] = []
    acked: list[tuple[int, int]] = []
    t = 0
    for k in range(batches):
        pairs = [part.at(k * batch + i) for i in range(batch)]
        t += 1
        ev = {"k": "ev", "run": f"{RUN:016x}", "w": 0, "t": t, "i": acklog.flat(pairs)}
        if acked:
            ev["a"] = acklog.flat(acked)
        lines.append(acklog.encode(ev))
        issued = pairs if k < batches - 1 else pairs[:data.draw(st.integers(0, batch), label="issued")]
        if k == batches - 1:
            open_writes = issued
            break
        durable.update(issued)  # flush completed
        acked = pairs
    log = acklog.RunLog(header)
    for no, line in enumerate(lines[1:], start=1):
        log.add_event(acklog.decode(line), no)

    def image(state: dict[int, int], torn: dict[int, tuple[int, int, int]]):
        out = []
        for b in range(n):
            blk = Record(RUN, b, state[b], 0, 0, 0).pack() if b in state else bytes(BLOCK_SIZE)
            if b in torn:
                old, new, cut = torn[b]
                old_blk = Record(RUN, b, old, 0, 0, 0).pack() if old else bytes(BLOCK_SIZE)
                blk = mix((Record(RUN, b, new, 0, 0, 0).pack(), cut), (old_blk, 8 - cut))
            out.append((b, blk))
        return out

    state, torn = dict(durable), {}
    for b, g in open_writes:
        fate = data.draw(st.sampled_from(["lost", "kept", "torn"]), label=f"fate {b}")
        if fate == "kept":
            state[b] = g
        elif fate == "torn":
            torn[b] = (durable.get(b, 0), g, data.draw(st.integers(1, 7), label="cut"))
    rep = verify_blocks(image(state, torn), log)
    assert rep.violations == 0, [f for f in rep.findings]
    assert rep.verdict == ("honest" if log.acked else "inconclusive")

    if log.acked:
        victim = data.draw(st.sampled_from(sorted(log.acked)), label="victim")
        rolled = dict(state)
        gen = log.acked[victim].gen
        if gen > 1:
            rolled[victim] = gen - 1
        else:
            rolled.pop(victim)
        torn.pop(victim, None)
        rep = verify_blocks(image(rolled, torn), log)
        assert rep.verdict == "lies"
        assert {f.block for f in rep.findings if f.kind == LOST} == {victim}


def test_random_sample_of_lost_acks_gives_an_age_histogram(tmp_path):
    case = Case(tmp_path, nblocks=32)
    rng = random.Random(1)
    for b in range(32):
        case.acked(b, 1)
        if rng.random() < 0.5 or b > 28:
            case.put(b, 1)
    rep = case.verify()
    total = sum(h.acked for h in rep.histogram)
    assert total == 32 and sum(h.lost for h in rep.histogram) == rep.counts[LOST] + rep.counts[TORN]


@pytest.mark.loop
@pytest.mark.parametrize("sector", [512, 4096])
def test_write_then_verify_on_a_loop_device(make_loop, tmp_path, sector):
    dev, acks = make_loop(4 << 20, sector), str(tmp_path / "acks.log")
    res = write(dev, acks, WriteOptions("flush", threads=2, batch=4, count=40), say=lambda m: None)
    assert res.acked == 80
    log = read_run(acks)
    assert log.header.atomic == sector and log.header.preflight.get("logical_block_size") == sector
    rep = verify_device(dev, log)
    assert rep.verdict == "honest" and rep.counts[INTACT] == 80


def test_cli_atomic_override_turns_an_allowed_tear_into_a_violation(tmp_path):
    case = Case(tmp_path)
    case.acked(0, 1)
    case.ev(intents=[(0, 2)])
    case.raw(0, mix((Record(RUN, 0, 2, 0, 0, 0).pack(), 3), (Record(RUN, 0, 1, 0, 0, 0).pack(), 5)))
    assert case.verify().verdict == "honest"
    r = runner.invoke(hwcheck_app, ["verify", case.img, "--acks", case.acks])
    assert r.exit_code == 0 and "torn-inflight 1" in r.output
    r = runner.invoke(hwcheck_app, ["verify", case.img, "--acks", case.acks, "--atomic", "4096"])
    assert r.exit_code == 1 and "holds torn unit (gen 2 x3, gen 1 x5)" in r.output, r.output
