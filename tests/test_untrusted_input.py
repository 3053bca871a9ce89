"""Regression tests for the nine defects of issue 11: nothing read is trusted.

Each input is a store image, a dm-log-writes log with its sidecar and workload file, or an hwcheck
acks file, damaged the way a new user found: a field changed and its block re-sealed, so the
checksum no longer catches it.  Every command runs through tests/fuzz/harness.py: a forked child
under an address-space limit and an alarm, so the old failure modes (a traceback, a hang, a
MemoryError) fail the test instead of hanging it, and read-only commands must leave every byte.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.format import FANOUT, Origin
from blkjournal.store import Store

from imgedit import sample_store, set_field
from fuzz.harness import Checker

ORIGIN_SIZE = 24  # offsets in an origin's payload (Origin.FMT: id, birth, gen, size, mtime, used list, height)
ORIGIN_HEIGHT = 48
ORIGIN_ROOTS = Origin.FMT.size
READERS = (("info",), ("ls",), ("ls", "--json"), ("fsck",), ("fsck", "--json"))


def contract(*args, readonly=(), expect=(), stdin=b""):
    """Run one command; assert the bad-input contract and (optionally) the exit code."""
    c = Checker("regression", b"")
    run = c.run(*args, readonly=readonly, expect=expect, stdin=stdin)
    assert not c.found, c.found
    return run


def readers_hold(img: str, names=("small", "big", "huge")) -> dict:
    """Every read-only command on `img` keeps the contract; returns {command: run}."""
    runs = {}
    for cmd in READERS:
        runs[cmd] = contract(cmd[0], img, *cmd[1:], readonly=(img,))
    for n in names:
        runs[("get", n)] = contract("get", img, n, "--to", os.devnull, readonly=(img,))
    return runs


def writers_hold(img: str, tmp_path) -> dict:
    runs = {}
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
