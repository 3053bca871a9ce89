"""Inline data (format 7): a journal write of at most `inline_max` blocks carries its data in its
transaction (docs/protocols.md, "Inline data").  What it costs and what reads see before the
checkpoint writes the data home; the per-sync counts are in test_barriers.py.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from blkjournal.crash.image import Overlay
from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.format import MAX_INLINE, Superblock
from blkjournal.fsck import fsck
from blkjournal.store import Store

sys.path.insert(0, os.path.dirname(__file__))
from cliutil import cli, sha  # noqa: E402


def _appends(inline_max: int, n: int) -> tuple[Store, dict]:
    """n synced 4 KiB appends on a 16 MiB store (a 256-block journal: ~24 checkpoints with inline
    data); the device's counters over the appends."""
    dev = Overlay(nblocks=4096, unit=BLOCK_SIZE)
    st = Store.mkfs(dev, "journal", "flush", inline_max=inline_max)
    st.create("log")
    st.sync()
    dev.counters.reset()
    for i in range(n):
        st.write("log", i * BLOCK_SIZE, i.to_bytes(4, "little") * (BLOCK_SIZE // 4))
        st.sync()
    return st, dev.counters.snapshot()


@pytest.mark.parametrize("inline_max,writes,flushes,nbytes,wa", [(8, 3131, 3046, 37167104, 3.025),
                                                                   (0, 6068, 3022, 24907776, 2.027)])
def test_amortised_write_amplification_of_synced_appends(inline_max, writes, flushes, nbytes, wa):
    """Counted over 3,000 synced appends with every checkpoint they cause (15 with inline data, 7
    without, 3 flushes each): inline data writes 1 request per sync + the checkpoints' and about
    3.0x the user bytes (the 2-block transaction, then the data's home at checkpoint); without it
    2 requests per sync and about 2.0x.  Exact counts, so any change to what a commit or a
    checkpoint writes shows here."""
    st, c = _appends(inline_max, 3000)
    assert (c["writes"], c["flushes"], c["fua_writes"]) == (writes, flushes, 0), c
    assert c["bytes_written"] == nbytes, c
    assert round(nbytes / (3000 * BLOCK_SIZE), 3) == wa
    assert st.read("log", 2999 * BLOCK_SIZE, 4) == (2999).to_bytes(4, "little")


def test_reads_before_the_checkpoint_come_from_the_log(image):
    """Until a checkpoint writes inline data home, its home block holds whatever it held: reads
    (one block, a run, a partial-block rewrite's merge) take the logged bytes, and so does a
    read-only open of the image after a crash (recovery not written back) and fsck, whose data
    checksums then hold.  Reading the home instead fails every crc."""
    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, "journal", "flush")
        s.put("f", b"A" * (3 * BLOCK_SIZE))
        s.write("f", 100, b"B" * 10)  # merges the logged first block
        s.sync()
        assert s.logged and s.protocol.journal.used
        want = b"A" * 100 + b"B" * 10 + b"A" * (3 * BLOCK_SIZE - 110)
        assert s.read("f") == want and s.read("f", 0, 200) == want[:200]
        logged = dict(s.logged)
        assert all(d.read(b) != v for b, v in logged.items())  # not home yet
    before = sha(image)
    with Device(image, readonly=True) as d:
        ro = Store.open(d, recover=False)
        assert ro.read("f") == want
        r = fsck(d)
        assert r.clean, r.findings
    assert sha(image) == before
    with Device(image) as d:
        s = Store.open(d)  # recovery replays the inline records and checkpoints them home
        assert not s.logged and all(d.read(b) == v for b, v in logged.items())
        assert s.read("f") == want
    with Device(image, readonly=True) as d:
        r = fsck(d)
        assert r.clean and r.replayed == 0, r.findings


def test_a_block_freed_before_the_checkpoint_is_never_written_home():
    """An inline block overwritten (copy-on-write: a fresh block, the old one released) before any
    checkpoint is dropped from what the checkpoint writes: the checkpoint writes only the
    surviving data."""
    dev = Overlay(nblocks=4096, unit=BLOCK_SIZE)
    st = Store.mkfs(dev, "journal", "flush")
    st.create("f")
    for k in range(5):
        st.write("f", 0, bytes([k]) * BLOCK_SIZE)
    st.sync()
    assert len(st.logged) == 1
    (live,) = st.logged
    roles = []
    orig = dev.writev
    dev.writev = lambda b, bufs, **kw: (roles.append((b, kw.get("role", ""))), orig(b, bufs, **kw))[1]
    st.protocol.checkpoint()
    assert [(b, r) for b, r in roles if "inline data" in r] == [(live, f"checkpoint of inline data block {live}")]
    assert st.read("f") == bytes([4]) * BLOCK_SIZE and dev.read(live) == bytes([4]) * BLOCK_SIZE


def test_mkfs_inline_max_is_chosen_and_checked(tmp_path):
    img = str(tmp_path / "s.img")
    assert cli("mkfs", img, "--size", "8M", "--inline-max", "0").code == 0
    assert json.loads(cli("info", img, "--json").out)["superblock"]["inline_max"] == 0
    assert cli("mkfs", img, "--force", "--inline-max", "3").code == 0
    assert json.loads(cli("info", img, "--json").out)["superblock"]["inline_max"] == 3
    for args, words in ((("--inline-max", str(MAX_INLINE + 1)), f"0..{MAX_INLINE}"),
                        (("--inline-max", "-1"), f"0..{MAX_INLINE}"),
                        (("--protocol", "ordered", "--inline-max", "2"), "only the journal")):
        before = sha(img)
        r = cli("mkfs", img, "--force", *args)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and words in r.err, r
        assert sha(img) == before


@pytest.mark.parametrize("value", [MAX_INLINE + 1, 255])
def test_a_superblock_naming_too_large_an_inline_max_is_refused(tmp_path, value):
    """inline_max is read from the device: a value past MAX_INLINE (a transaction that would
    not fit a small journal) is refused in one line, nothing written."""
    img = str(tmp_path / "s.img")
    assert cli("mkfs", img, "--size", "8M").code == 0
    with Device(img) as d:
        sb = Superblock.unpack(d.read(0))
        forged = Superblock(**{**sb.__dict__, "inline_max": value})
        d.write(0, forged.pack())
    before = sha(img)
    r = cli("ls", img)
    assert r.code == 2 and "inline_max" in r.err and "Traceback" not in r.err, r
    assert sha(img) == before
