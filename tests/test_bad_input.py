"""Bad input never gets a traceback, never gets trusted, and never gets written to.

Random bytes, an image shorter than its superblock says, one flipped byte in each kind of
metadata block, a mounted device and an ext4 device.  Through the CLI entry point (in-process
main(), plus a real process for the console script): one line on stderr, exit 2 for what cannot
be opened, exit 1 from fsck for what it can name, and the device's sha256 unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.format import T_TXN, block_type
from blkjournal.fsck import CHECKSUM, JOURNAL, fsck
from blkjournal.store import Store

BIN = os.path.join(os.path.dirname(sys.executable), "blkjournal")


from cliutil import cli, sha  # noqa: E402


def refused(result, *words: str) -> str:
    code, out, err = result
    assert code == 2, result
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("blkjournal: "), result
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


READERS = [("ls",), ("get", "small"), ("info",), ("fsck",)]
WRITERS = [("put", "new"), ("rm", "small"), ("sync",), ("recover",), ("truncate", "small", "1"),
           ("write", "small", "--offset", "1")]


def every_command_refuses(path: str, *words: str) -> None:
    before = sha(path)
    for cmd in READERS + WRITERS:
        refused(cli(cmd[0], path, *cmd[1:], stdin=b"data"), *words)
    assert sha(path) == before


# --------------------------------------------------------------------------- garbage images
def test_random_image(tmp_path):
    img = str(tmp_path / "random.img")
    with open(img, "wb") as f:
        f.write(os.urandom(4 << 20))
    every_command_refuses(img, "superblock")


def test_zero_image(tmp_path):
    img = str(tmp_path / "zero.img")
    with open(img, "wb") as f:
        f.truncate(4 << 20)
    every_command_refuses(img, "bad magic")


@pytest.mark.parametrize("keep", [3 << 20, (3 << 20) + 1000, 100])
def test_truncated_image(tmp_path, keep):
    """Shorter than its superblock says (also not a whole number of blocks, or not even one)."""
    img = str(tmp_path / "short.img")
    with Device(img, create_size=4 << 20) as d:
        s = Store.mkfs(d, "journal", "flush")
        s.put("small", b"x")
        s.sync()
    os.truncate(img, keep)
    every_command_refuses(img, "superblock")


def test_real_process_on_garbage(tmp_path):
    img = str(tmp_path / "random.img")
    with open(img, "wb") as f:
        f.write(os.urandom(1 << 20))
    before = sha(img)
    for cmd in (["ls", img], ["fsck", "--json", img]):
        p = subprocess.run([BIN, *cmd], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and p.stdout == ""
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert sha(img) == before


# --------------------------------------------------------------------------- one flipped byte
def _store(tmp_path, protocol: str) -> tuple[str, dict[str, int]]:
    """A checkpointed store with a 1-block file and a sparse file whose map has height 1; returns
    the image and the block of each metadata kind."""
    img = str(tmp_path / f"{protocol}.img")
    with Device(img, create_size=8 << 20) as d:
        s = Store.mkfs(d, protocol, "flush")
        s.put("small", b"s" * 100)
        s.put("big", b"b" * 100)
        s.write("big", 200 * BLOCK_SIZE, b"far")  # map height 1: one map node
        s.sync()
    with Device(img) as d:  # reopening checkpoints the journal: every block is at home
        s = Store.open(d)
        small, big = s.lookup("small"), s.lookup("big")
        assert big.map.height == 1
        where = {"superblock": 0, "object map": s.sb.objmap_start, "bitmap": s.sb.bitmap_start,
                 "origin": small.origin_block, "used list": small.ul.head,
                 "map node": next(iter(big.map.nodes))}
        if protocol == "journal":
            where["journal superblock"] = s.sb.journal_start
    with Device(img, readonly=True) as d:
        assert fsck(d).clean
    return img, where


def flip(path: str, block: int, offset: int = 200) -> None:
    with open(path, "r+b") as f:
        f.seek(block * BLOCK_SIZE + offset)
        b = f.read(1)
        f.seek(block * BLOCK_SIZE + offset)
        f.write(bytes([b[0] ^ 0x40]))


def fsck_finds(path: str, *codes: str) -> dict:
    code, out, err = cli("fsck", path, "--json")
    assert code == 1 and err == "", (code, err)
    rep = json.loads(out)
    found = {f["code"] for f in rep["findings"]}
    assert found & set(codes), rep
    assert not rep["clean"]
    return rep


KINDS = ["object map", "bitmap", "origin", "used list", "map node"]


@pytest.mark.parametrize("protocol", ["journal", "ordered"])
def test_flipped_superblock_byte(tmp_path, protocol):
    img, where = _store(tmp_path, protocol)
    flip(img, 0)
    every_command_refuses(img, "superblock", "checksum")


@pytest.mark.parametrize("kind", KINDS + ["journal superblock"])
def test_flipped_metadata_byte_journal(tmp_path, kind):
    img, where = _store(tmp_path, "journal")
    flip(img, where[kind])
    before = sha(img)
    rep = fsck_finds(img, CHECKSUM, JOURNAL)
    assert any(where[kind] in f["blocks"] for f in rep["findings"]), rep
    # the reads the file needs refuse it with one clear line; nothing is written
    name = "big" if kind == "map node" else "small"
    line = refused(cli("get", img, name), "checksum" if kind != "journal superblock" else "journal")
    assert f"block {where[kind]}" in line
    refused(cli("ls", img))
    refused(cli("put", img, "x", stdin=b"x"))
    assert sha(img) == before


@pytest.mark.parametrize("kind", KINDS)
def test_flipped_metadata_byte_ordered(tmp_path, kind):
    """Under `ordered` a file has two origin slots.  Format 3 frames every origin sector with its
    own crc, so a flipped byte (damage) is told from a torn origin write (every sector valid, old
    or new) and refused by name rather than taken for a crash.  The bitmap is a hint.  Every other
    metadata block has one copy and a bad one is refused."""
    img, where = _store(tmp_path, "ordered")
    flip(img, where[kind])
    before = sha(img)
    if kind == "origin":
        # "small" was written once: its other slot never held an origin, and the one that did
        # fails a sector's own crc -- damage, not a torn write: fsck says so, and the commands
        # refuse by name rather than pretend the file never existed
        rep = fsck_finds(img, "no-origin")
        assert rep["files"] == 1
        refused(cli("ls", img, "--json"), "'small'", f"origin slot {where[kind]}", "damage, not a torn write")
        refused(cli("get", img, "small"), "'small'", "fails its own crc")
    elif kind == "bitmap":
        # under ordered the bitmap is a hint the store never reads (recovery rebuilds it from the
        # used lists): fsck reports the bad block, reads go on, and recovery rewrites it
        rep = fsck_finds(img, CHECKSUM)
        assert any(where[kind] in f["blocks"] for f in rep["findings"]), rep
        code, out, _ = cli("get", img, "small")
        assert code == 0 and out == b"s" * 100
        assert sha(img) == before
        assert cli("recover", img)[0] == 0
        assert cli("fsck", img)[0] == 0
        return
    else:
        rep = fsck_finds(img, CHECKSUM)
        assert any(where[kind] in f["blocks"] for f in rep["findings"]), rep
        name = "big" if kind == "map node" else "small"
        refused(cli("get", img, name), "checksum", f"block {where[kind]}")
        refused(cli("put", img, "x", stdin=b"x"), "checksum")
    assert sha(img) == before


def test_flipped_newest_origin_is_refused_not_rolled_back(tmp_path):
    """Ordered, a file written twice: a flipped byte in the newest origin is damage (a torn write
    leaves every sector valid), so the file is refused by name; format 2 silently served the
    previous version, a rollback of a durable write (tests/test_detection.py: a torn newest
    origin still falls back to the older one)."""
    img = str(tmp_path / "o.img")
    with Device(img, create_size=8 << 20) as d:
        s = Store.mkfs(d, "ordered", "flush")
        s.put("f", b"one")
        s.sync()
        s.write("f", 3, b"two")
        s.sync()
        newest = s.lookup("f").origin_block
    flip(img, newest)
    before = sha(img)
    refused(cli("get", img, "f"), "'f'", f"origin slot {newest}", "damage, not a torn write")
    assert sha(img) == before


def _journal_with_live_txn(tmp_path) -> tuple[str, int]:
    img = str(tmp_path / "live.img")
    with Device(img, create_size=8 << 20) as d:
        s = Store.mkfs(d, "journal", "flush")
        s.put("small", b"s" * 100)
        s.sync()
        j = s.protocol.journal
        assert j.used == 2  # one transaction: its descriptor and the block its inline data spills into
        return img, j.area + j.tail_pos


def test_flipped_journal_transaction_byte(tmp_path):
    """A committed transaction with a flipped byte is damage, not the torn tail a crash leaves
    (format 4: each sector of a transaction block carries its own crc, and a torn write leaves
    each sector old or new): recovery refuses by name rather than silently dropping it, fsck
    names it (`journal`), and nothing is written."""
    img, txn_block = _journal_with_live_txn(tmp_path)
    with Device(img, readonly=True) as d:
        assert block_type(d.read(txn_block)) == T_TXN
        r = fsck(d)
        assert r.clean and r.replayed == 1
    flip(img, txn_block)
    before = sha(img)
    code, out, err = cli("fsck", img, "--json")
    assert code == 1 and err == "", (code, err)
    rep = json.loads(out)
    assert "journal" in json.dumps(rep) and f"block {txn_block}" in json.dumps(rep), rep
    code, out, err = cli("ls", img, "--json")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"journal transaction 1: block {txn_block}" in err and "damage, not a torn write" in err, err
    assert sha(img) == before


def test_journal_record_outside_the_store_is_refused(tmp_path):
    """A well-formed, checksummed transaction whose record points outside the metadata area is
    not replayed over the superblock or past the end."""
    from blkjournal.journal import encode

    img, txn_block = _journal_with_live_txn(tmp_path)
    with Device(img, readonly=True) as d:
        s = Store.open(d, recover=False)
        j = s.protocol.journal
    blocks, _ = encode(j.tail_seq, j.tail_prev, [], [(0, 0, b"evil")], at=txn_block)
    with open(img, "r+b") as f:
        f.seek(txn_block * BLOCK_SIZE)
        f.write(blocks[0])
    before = sha(img)
    rep = fsck_finds(img, JOURNAL)
    assert "block 0" in json.dumps(rep)
    refused(cli("ls", img), "journal transaction", "out of range")
    refused(cli("recover", img), "out of range")
    assert sha(img) == before


def test_inline_data_record_outside_the_data_area_is_refused(tmp_path):
    """A well-formed, checksummed transaction whose inline data record (format 7: a data block
    carried whole) names a metadata block is refused by name, not replayed over the object map."""
    from blkjournal.journal import WHOLE_DATA, encode

    img, txn_block = _journal_with_live_txn(tmp_path)
    with Device(img, readonly=True) as d:
        s = Store.open(d, recover=False)
        j = s.protocol.journal
        objmap = s.sb.objmap_start
    blocks, _ = encode(j.tail_seq, j.tail_prev, [], [(objmap, WHOLE_DATA, bytes(BLOCK_SIZE))], at=txn_block)
    with open(img, "r+b") as f:
        f.seek(txn_block * BLOCK_SIZE)
        f.write(b"".join(blocks))
    before = sha(img)
    rep = fsck_finds(img, "bad-field")
    assert f"data block {objmap}, outside the data area" in json.dumps(rep), rep
    refused(cli("ls", img), "journal transaction 1", f"data block {objmap}, outside the data area")
    refused(cli("recover", img), "outside the data area")
    assert sha(img) == before


# --------------------------------------------------------------------------- devices in use
def _ext4(dev: str) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev],
                   check=True, capture_output=True)


@pytest.mark.loop
def test_mkfs_refuses_a_mounted_device(make_loop, tmp_path):
    loop = make_loop(32 << 20)
    _ext4(loop)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "ro", loop, str(mnt)], check=True, capture_output=True)
    try:
        before = sha(loop)
        refused(cli("mkfs", loop), "mounted")
        refused(cli("mkfs", loop, "--force"), "mounted", "does not override")
        refused(cli("ls", loop))
        assert sha(loop) == before
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.loop
def test_mkfs_refuses_an_ext4_device_without_force(make_loop):
    loop = make_loop(32 << 20)
    _ext4(loop)
    before = sha(loop)
    refused(cli("mkfs", loop), "ext4", "--force")
    refused(cli("mkfs", loop, "--protocol", "ordered"), "ext4")
    refused(cli("ls", loop), "superblock")
    assert sha(loop) == before
    code, out, err = cli("mkfs", loop, "--force", "--protocol", "ordered")
    assert code == 0, (code, err)
    assert cli("put", loop, "f", stdin=b"on the loop device")[0] == 0
    assert cli("get", loop, "f")[1] == b"on the loop device"
