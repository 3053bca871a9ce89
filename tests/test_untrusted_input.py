"""Regression tests for the nine defects of issue 11: nothing read is trusted.

Each input is a store image, a dm-log-writes log with its sidecar and workload file, or an hwcheck
acks file, damaged the way a new user found: a field changed and its block re-sealed, so the
checksum no longer catches it.  Every command runs through tests/fuzz/harness.py: a forked child
under an address-space limit and an alarm, so the old failure modes (a traceback, a hang, a
MemoryError) fail the test instead of hanging it, and read-only commands must leave every byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct

import pytest

from blkjournal.device import Device
from blkjournal.format import FANOUT, HDR, WEAK_ENV, Origin
from blkjournal.store import Store

from imgedit import sample_store, set_field
from fuzz.harness import Checker

# offsets in an origin's payload, from Origin.FMT (id, birth, gen, size, ..., height u8, pad)
ORIGIN_SIZE = struct.calcsize("<QQQ")
ORIGIN_HEIGHT = struct.calcsize(Origin.FMT.format[:Origin.FMT.format.index("B")])
ORIGIN_ROOTS = Origin.FMT.size
READERS = (("info",), ("ls",), ("ls", "--json"), ("fsck",), ("fsck", "--json"))


def contract(*args, readonly=(), expect=(), stdin=b""):
    """Run one command; assert the bad-input contract and (optionally) the exit code."""
    c = Checker("regression", b"")
    run = c.run(*args, readonly=readonly, expect=expect, stdin=stdin)
    assert not c.found, c.found
    return run


@contextlib.contextmanager
def detection(weak: bool):
    """Format 2's pointer crcs and generations catch an edited block at the pointer (stale-block);
    with BLKJOURNAL_WEAK_DETECTION=1 (format 1's detection) the edit reaches the field checks,
    as it does when a hostile image forges the pointers too.  The children inherit the setting."""
    saved = os.environ.get(WEAK_ENV)
    if weak:
        os.environ[WEAK_ENV] = "1"
    else:
        os.environ.pop(WEAK_ENV, None)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(WEAK_ENV, None)
        else:
            os.environ[WEAK_ENV] = saved


def readers_hold(img: str, names=("small", "big", "huge")) -> dict:
    """Every read-only command on `img` keeps the contract, with full detection and with the
    field checks alone; returns {command: run} of the latter (what the asserts look at)."""
    runs = {}
    for weak in (False, True):
        with detection(weak):
            for cmd in READERS:
                runs[cmd] = contract(cmd[0], img, *cmd[1:], readonly=(img,))
            for n in names:
                runs[("get", n)] = contract("get", img, n, "--to", os.devnull, readonly=(img,))
    return runs


def writers_hold(img: str, tmp_path) -> dict:
    runs = {}
    for weak in (False, True):
        with detection(weak):
            for cmd in (("recover",), ("fsck", "--repair"), ("put", "new"), ("rm", "small")):
                copy = str(tmp_path / "w.img")
                shutil.copyfile(img, copy)
                runs[cmd] = contract(cmd[0], copy, *cmd[1:], stdin=b"data")
    return runs


@pytest.fixture(params=["journal", "ordered"])
def store(request, tmp_path):
    img = str(tmp_path / f"{request.param}.img")
    return img, sample_store(img, request.param)


def _newest_origin(img):
    with Device(img, readonly=True) as d:
        s = Store.open(d, recover=False)
        return {f.name: f.origin_block for f in s.files.values()}


# 1 ----------------------------------------------------------------------------------------------
def test_data_pointer_far_outside_the_device(store, tmp_path):
    """Was: IndexError in the freelist rebuild in info, ls, recover and fsck --repair."""
    img, where = store
    origin = _newest_origin(img)["small"]
    set_field(img, origin, ORIGIN_ROOTS, "Q", 1 << 40)  # root slot 0 of a height-0 map: a data pointer
    runs = readers_hold(img)
    assert runs[("ls",)].code == 2 and "outside the data area" in runs[("ls",)].err
    rep = json.loads(runs[("fsck", "--json")].out)
    assert runs[("fsck", "--json")].code == 1 and "bad-pointer" in {f["code"] for f in rep["findings"]}
    w = writers_hold(img, tmp_path)
    assert w[("recover",)].code == 2 and "outside the data area" in w[("recover",)].err
    assert w[("fsck", "--repair")].code == 1
    assert "not repaired" in w[("fsck", "--repair")].out.decode()


# 2 ----------------------------------------------------------------------------------------------
def test_journal_descriptor_with_absurd_record_counts(tmp_path):
    """Was: struct.error in every command that opens the image (and in check-log)."""
    img = str(tmp_path / "j.img")
    sample_store(img, "journal", checkpoint=False)
    with Device(img, readonly=True) as d:
        s = Store.open(d, recover=False)
        j = s.protocol.journal
        desc = j.area + j.tail_pos
        assert s.protocol.replayed >= 1  # a live transaction the commands would replay
    for ndata, nrec in ((0xFFFFFFFF, 0), (0, 0xFFFFFFFF), (1 << 20, 1 << 20)):
        set_field(img, desc, 12, "II", (ndata, nrec))  # DESC: seq u64, nblocks u32, ndata u32, nrecords u32
        runs = readers_hold(img, names=("small",))
        assert runs[("ls",)].code == 0  # the transaction is not committed any more: the log ends there
        writers_hold(img, tmp_path)


# 3 ----------------------------------------------------------------------------------------------
def test_origin_size_of_2_63(store, tmp_path):
    """Was: `get` built the file in memory (MemoryError) and fsck called the image consistent."""
    img, where = store
    origin = _newest_origin(img)["small"]
    set_field(img, origin, ORIGIN_SIZE, "Q", 1 << 63)
    runs = readers_hold(img)
    rep = json.loads(runs[("fsck", "--json")].out)
    assert not rep["clean"] and runs[("fsck", "--json")].code == 1, rep
    assert {"bad-field", "no-origin"} & {f["code"] for f in rep["findings"]}
    writers_hold(img, tmp_path)


def test_get_streams_a_large_sparse_file(store):
    """A legal 128 MiB sparse file ("huge" reaches file block 32,773) is read with little memory."""
    img, where = store
    run = contract("get", img, "huge", "--to", os.devnull, readonly=(img,), expect=(0,))
    assert run.growth < 64 << 20, run.growth


# 4 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("height", [2, 4])
def test_map_node_pointing_at_itself_under_a_raised_height(store, tmp_path, height):
    """Was: 256^height steps walking the map (info, ls, fsck hang; fsck printed 65,536 findings)."""
    img, where = store
    node = where["big"]["nodes"][0]
    origin = _newest_origin(img)["big"]
    set_field(img, node, 0, f"{FANOUT}Q", [node] * FANOUT)  # every entry: the node itself
    set_field(img, origin, ORIGIN_HEIGHT, "B", height)
    runs = readers_hold(img)
    assert runs[("ls",)].code == 2 and "reached twice" in runs[("ls",)].err
    rep = json.loads(runs[("fsck", "--json")].out)
    assert runs[("fsck", "--json")].code == 1 and len(rep["findings"]) < 10, rep["findings"][:3]
    assert "bad-field" in {f["code"] for f in rep["findings"]}
    writers_hold(img, tmp_path)


# 5 ----------------------------------------------------------------------------------------------
@pytest.fixture
def recorded(tmp_path):
    """A recorded crash-test run: the log, its role sidecar and its workload file."""
    from fuzz import corpus

    files = corpus.crash_log()
    log = str(tmp_path / "run.log")
    for suffix, key in (("", "log"), (".roles", "roles"), (".workload.json", "workload")):
        with open(log + suffix, "wb") as f:
            f.write(files[key])
    return log


def _log_commands_refuse(log, tmp_path, *words, explore=True):
    ro = tuple(p for p in (log, log + ".roles", log + ".workload.json") if os.path.exists(p))
    out = str(tmp_path / "state.img")
    runs = [contract("log", "show", log, readonly=ro), contract("replay", log, "--out", out, readonly=ro)]
    if explore:
        runs.append(contract("check-log", log, "--jobs", "1", "--bound", "8", readonly=ro))
    for r in runs:
        assert r.code == 2 and all(w in r.err for w in words), (r.args, r.err)


def _edit_line(path, n, edit):
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    lines[n] = edit(lines[n])
    with open(path, "wb") as f:
        f.write(b"\n".join(lines))


def _edit_json_line(path, n, **fields):
    def edit(raw):
        d = json.loads(raw)
        d.update(fields)
        return json.dumps(d).encode()
    _edit_line(path, n, edit)


@pytest.mark.parametrize("damage", [
    lambda p: _edit_line(p, 2, lambda raw: raw[:5] + b"\xff\xfe" + raw[5:]),  # bad UTF-8
    lambda p: _edit_json_line(p, 2, seq="one"),  # wrong types
    lambda p: _edit_json_line(p, 2, entry="3"),
    lambda p: _edit_json_line(p, 2, sector=[1]),
    lambda p: _edit_line(p, 2, lambda raw: raw.replace(b'"seq":1', b'"seq":1e400')),  # Infinity
    lambda p: _edit_json_line(p, 0, nblocks=1 << 70),  # huge sizes
    lambda p: _edit_json_line(p, 0, sectorsize="512"),
    lambda p: _edit_json_line(p, 2, kind="bogus"),  # unknown names
    lambda p: _edit_json_line(p, 0, format="other"),
    lambda p: _edit_line(p, 2, lambda raw: b"[" * 100000),  # JSON nested without end
    lambda p: _edit_line(p, 2, lambda raw: b"[1, 2]"),
], ids=["utf8", "seq-str", "entry-str", "sector-list", "seq-inf", "nblocks-huge", "sectorsize-str", "kind",
        "format", "deep", "not-object"])
def test_damaged_sidecar(recorded, tmp_path, damage):
    """Was: UnicodeDecodeError, TypeError, OverflowError, KeyError, MemoryError in log show,
    check-log and replay."""
    damage(recorded + ".roles")
    _log_commands_refuse(recorded, tmp_path, "roles")


@pytest.mark.parametrize("damage", [
    lambda w: b"\xff" + w,
    lambda w: json.dumps(dict(json.loads(w), ops={"kind": "put"})).encode(),
    lambda w: json.dumps(dict(json.loads(w), ops=[{"kind": "put", "name": "f", "size": 1 << 62}])).encode(),
    lambda w: json.dumps(dict(json.loads(w), ops=[{"kind": "write", "name": "nobody", "size": 1}])).encode(),
    lambda w: json.dumps(dict(json.loads(w), ops=[{"kind": "format-disk"}])).encode(),
    lambda w: json.dumps(dict(json.loads(w), ops=[{"kind": "put", "name": 7}])).encode(),
    lambda w: json.dumps(dict(json.loads(w), ops=json.loads(w)["ops"][:2])).encode(),  # fewer ops than marks
    lambda w: json.dumps(dict(json.loads(w), protocol="bogus")).encode(),
    lambda w: json.dumps(dict(json.loads(w), nblocks=1 << 62)).encode(),
    lambda w: json.dumps([1, 2]).encode(),
    lambda w: json.dumps(dict(json.loads(w), kernel=[[1]] * 1000)).encode(),
], ids=["utf8", "ops-object", "size-huge", "no-such-file", "kind", "name-int", "short", "protocol",
        "nblocks", "not-object", "kernel"])
def test_damaged_workload_file(recorded, tmp_path, damage):
    with open(recorded + ".workload.json", "rb") as f:
        w = f.read()
    with open(recorded + ".workload.json", "wb") as f:
        f.write(damage(w))
    r = contract("check-log", recorded, "--jobs", "1", "--bound", "8", readonly=(recorded,))
    assert r.code == 2 and ("workload" in r.err or "mark" in r.err), r.err


# 6 ----------------------------------------------------------------------------------------------
def test_discard_of_2_62_sectors(tmp_path):
    """Was: replay allocated without bound (and so did the crash-state builder)."""
    from blkjournal.crash.logwrites import LogWriter

    log = str(tmp_path / "d.log")
    with LogWriter(log, 512) as w:
        w.write(0, bytes(4096))
        w.discard(8, 1 << 62)
        w.flush()
        w.mark("mkfs")
    out = str(tmp_path / "out.img")
    for args in (("replay", log, "--out", out), ("replay", log, "--out", out, "--state", "P1-0"),
                 ("check-log", log, "--protocol", "journal", "--jobs", "1")):
        r = contract(*args, readonly=(log,))
        assert r.code == 2 and "discards cover" in r.err, r.err
    assert contract("log", "show", log, readonly=(log,)).code == 0  # showing it is fine


# 7 ----------------------------------------------------------------------------------------------
def _acks_case(tmp_path, edit):
    from blkjournal.hwcheck import acklog
    from fuzz import corpus

    text, dev = corpus.acks()
    lines = text.rstrip(b"\n").split(b"\n")
    objs = [acklog.decode(x) for x in lines]
    edit(objs)
    acks = tmp_path / "acks.log"
    acks.write_bytes(b"".join(acklog.encode(o) for o in objs))
    img = tmp_path / "dev.img"
    img.write_bytes(dev)
    return contract("hwcheck", "verify", str(img), "--acks", str(acks), readonly=(str(acks), str(img)))


@pytest.mark.parametrize("field,value", [("start", float("inf")), ("length", float("inf")), ("length", -5),
                                         ("atomic", 3), ("threads", "two"), ("run", 12), ("preflight", "x"),
                                         ("time_ns", float("nan")), ("batch", 1.5)])
def test_acks_header_with_odd_fields(tmp_path, field, value):
    """Was: OverflowError on `Infinity` in hwcheck verify."""
    r = _acks_case(tmp_path, lambda objs: objs[0].update({field: value}))
    assert r.code == 2 and "run header" in r.err, r.err


@pytest.mark.parametrize("pairs", [[0, "x"], [0, 1.5], [0, [1]], [0, None], ["b", 1], [0, 1, 2], [0, float("inf")]])
def test_acks_event_with_a_non_integer_generation(tmp_path, pairs):
    """Was: TypeError in hwcheck verify."""
    def edit(objs):
        ev = next(o for o in objs[1:-1] if o.get("a"))  # an ack line that is not the last line
        ev["a"] = pairs
    r = _acks_case(tmp_path, edit)
    assert r.code == 2 and "damaged" in r.err, r.err


# 8 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ("ls", "/nonexistent.img"), ("log", "show", "/nonexistent.log"), ("replay", "/nonexistent.log", "--out", "/x"),
    ("check-log", "/nonexistent.log"), ("hwcheck", "verify", "/nonexistent", "--acks", "/nonexistent"),
    ("ls",), ("fsck", "--bogus", "x"), ("log", "show"), ("replay", "x"), ("hwcheck", "verify", "x"),
    ("mkfs", "/nonexistent.img", "--protocol", "zfs"),
])
def test_every_error_is_one_line_in_one_format(args):
    """Was: some errors began `blkjournal:`, some `error:`, usage errors took several lines."""
    r = contract(*args)
    assert r.code == 2 and r.err.startswith("blkjournal: ") and r.err.count("\n") == 1, r.err


def test_error_lines_escape_line_breaks_in_untrusted_text():
    from blkjournal.errors import error_line

    assert error_line("name 'a\nb\u2028c'") == "blkjournal: name 'a\\nb\\u2028c'"


# sharing inside one file (found while hardening: truncate released the block twice, KeyError)
def test_two_map_entries_naming_one_data_block(store, tmp_path):
    img, where = store
    origin = _newest_origin(img)["small"]
    with open(img, "rb") as f:
        f.seek(origin * 4096 + HDR + ORIGIN_ROOTS)
        first = struct.unpack("<Q", f.read(8))[0]
    set_field(img, origin, ORIGIN_ROOTS + 8, "Q", first)  # root slot 1 = root slot 0's block
    set_field(img, origin, ORIGIN_SIZE, "Q", 2 * 4096)
    runs = readers_hold(img)
    assert runs[("ls",)].code == 2 and "already uses" in runs[("ls",)].err
    rep = json.loads(runs[("fsck", "--json")].out)
    assert "owned-twice" in {f["code"] for f in rep["findings"]}, rep
    writers_hold(img, tmp_path)  # every writer keeps the contract (asserted inside)
    copy = str(tmp_path / "t.img")
    shutil.copyfile(img, copy)
    with detection(True):
        assert contract("truncate", copy, "small", "0").code == 2


def test_get_leaves_no_partial_copy_when_a_later_block_fails(tmp_path):
    """`get --to FILE` streams; a data block failing its checksum after the first chunk removes
    the partial copy (and never a device given as --to, such as /dev/null)."""
    img = str(tmp_path / "g.img")
    with Device(img, create_size=8 << 20) as d:
        s = Store.mkfs(d, "journal", "flush")
        s.put("f", bytes(range(256)) * 16 * 300)  # 300 blocks: two chunks
        s.close()
    with Device(img) as d:
        s = Store.open(d)
        last, _ = s.lookup("f").map.lookup(299)
    with open(img, "r+b") as f:
        f.seek(last * 4096)
        f.write(b"rot")
    to = str(tmp_path / "copy")
    r = contract("get", img, "f", "--to", to, readonly=(img,))
    assert r.code == 2 and "checksum" in r.err and not os.path.exists(to)
    r = contract("get", img, "f", "--to", os.devnull, readonly=(img,))
    assert r.code == 2 and os.path.exists(os.devnull)
