"""Every store command through the CLI, with its exit codes (0 ok, 1 problems found, 2 bad input).

Most runs call `blkjournal.cli.main` in-process exactly as the console script does (argv, stdin,
stdout, stderr swapped in), which exercises main()'s error path without a process start each; a
few run the installed `blkjournal` script in a real subprocess to prove the same holds there.
"""

from __future__ import annotations

import json
import os

import pytest

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.fsck import LEAK, fsck
from blkjournal.store import Store

from cliutil import Result, cli, sh, sha  # noqa: E402


def one_line_error(r: Result, code: int = 2) -> None:
    assert r.code == code, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("blkjournal: "), r
    assert "Traceback" not in r.err


@pytest.mark.parametrize("protocol", ["journal", "ordered", "none"])
def test_every_command(tmp_path, image, protocol):
    r = cli("mkfs", image, "--size", "16M", "--protocol", protocol, "--barrier", "flush")
    assert r.code == 0, r
    assert "4096 blocks" in r.text and f"protocol {protocol}" in r.text

    r = cli("info", image, "--json")
    assert r.code == 0, r
    info = json.loads(r.out)
    assert info["superblock"]["protocol"] == protocol and info["superblock"]["nblocks"] == 4096
    assert info["files"] == 0
    r = cli("info", image)
    assert r.code == 0 and "protocol" in r.text

    src = tmp_path / "src.bin"
    payload = os.urandom(3 * BLOCK_SIZE + 11)
    src.write_bytes(payload)
    assert cli("put", image, "from-file", "--from", str(src)).code == 0
    assert cli("put", image, "from-stdin", "--from", "-", stdin=b"hello stdin").code == 0
    assert cli("put", image, "default-stdin", stdin=b"").code == 0  # no --from: stdin, empty file

    r = cli("get", image, "from-file")
    assert r.code == 0 and r.out == payload
    r = cli("get", image, "from-stdin", "--to", "-")
    assert r.code == 0 and r.out == b"hello stdin"
    dst = tmp_path / "dst.bin"
    r = cli("get", image, "from-file", "--to", str(dst))
    assert r.code == 0 and r.out == b"" and dst.read_bytes() == payload

    r = cli("ls", image, "--json")
    assert r.code == 0
    rows = json.loads(r.out)
    assert [(x["name"], x["size"]) for x in rows] == [("default-stdin", 0), ("from-file", len(payload)),
                                                      ("from-stdin", 11)]
    r = cli("ls", image)
    assert r.code == 0 and r.text.split() == ["0", "default-stdin", str(len(payload)), "from-file", "11", "from-stdin"]

    assert cli("write", image, "from-stdin", "--offset", "6", "--from", "-", stdin=b"world!").code == 0
    assert cli("get", image, "from-stdin").out == b"hello world!"
    assert cli("write", image, "from-stdin", "--offset", "8k", stdin=b"far").code == 0  # size suffix
    assert cli("get", image, "from-stdin").out == b"hello world!" + bytes(8192 - 12) + b"far"

    assert cli("truncate", image, "from-stdin", "5").code == 0
    assert cli("get", image, "from-stdin").out == b"hello"
    assert cli("truncate", image, "from-stdin", "1k").code == 0
    assert cli("get", image, "from-stdin").out == b"hello" + bytes(1019)

    assert cli("rm", image, "default-stdin").code == 0
    assert [x["name"] for x in json.loads(cli("ls", image, "--json").out)] == ["from-file", "from-stdin"]
    # every command above ended cleanly: the store is consistent as it lies, before any recovery
    assert cli("put", image, "from-file", "--from", str(src)).code == 0  # an overwrite releases blocks
    r = cli("fsck", image)
    assert r.code == 0, r

    assert cli("sync", image).code == 0
    r = cli("recover", image)
    assert r.code == 0 and "recovered, 2 files" in r.text

    r = cli("fsck", image, "--json")
    assert r.code == 0, r
    rep = json.loads(r.out)
    assert rep["clean"] and rep["files"] == 2 and rep["findings"] == [] and rep["verdict"] == "consistent"
    r = cli("fsck", image)
    assert r.code == 0 and "consistent" in r.text


def test_errors_are_one_line_with_exit_2(image, tmp_path):
    assert cli("mkfs", image, "--size", "8M").code == 0
    before = sha(image)
    one_line_error(cli("get", image, "missing"))
    one_line_error(cli("rm", image, "missing"))
    one_line_error(cli("truncate", image, "missing", "10"))
    one_line_error(cli("write", image, "missing", "--offset", "0", stdin=b"x"))
    one_line_error(cli("truncate", image, "x", "ten"))  # bad size
    one_line_error(cli("put", image, "a/b", stdin=b"x"))  # bad name
    one_line_error(cli("put", image, "x", "--from", str(tmp_path / "nope")))
    one_line_error(cli("mkfs", image, "--size", "8M"))  # already a store
    one_line_error(cli("mkfs", str(tmp_path / "new.img"), "--protocol", "bogus", "--size", "8M"))
    one_line_error(cli("mkfs", str(tmp_path / "new.img"), "--barrier", "bogus", "--size", "8M"))
    one_line_error(cli("mkfs", str(tmp_path / "never.img")))  # no --size for a new image
    one_line_error(cli("mkfs", str(tmp_path / "tiny.img"), "--size", "64k"))  # too small
    one_line_error(cli("ls", str(tmp_path / "nope.img")))
    one_line_error(cli("ls", str(tmp_path)))  # a directory
    assert sha(image) == before
    assert not os.path.exists(tmp_path / "new.img") or os.path.getsize(tmp_path / "new.img") == 8 << 20
    r = cli("get", image)  # usage error from click: exit 2, no traceback
    assert r.code == 2 and "Traceback" not in r.err
    r = cli("frobnicate")
    assert r.code == 2 and "Traceback" not in r.err


def test_out_of_space_is_exit_2_and_changes_nothing(image):
    assert cli("mkfs", image, "--size", "1M").code == 0  # 256 blocks
    assert cli("put", image, "small", stdin=b"x" * 100).code == 0
    assert cli("recover", image).code == 0  # checkpoint the journal: opening now writes nothing
    before = sha(image)
    one_line_error(cli("put", image, "huge", stdin=os.urandom(300 * BLOCK_SIZE)))
    assert sha(image) == before
    assert cli("get", image, "small").out == b"x" * 100
    assert cli("fsck", image).code == 0


def _leaky_ordered(image: str) -> None:
    """An ordered image whose used list names two blocks nothing reaches.  Copy-on-write used lists
    never leave that in normal operation or after a crash (docs/protocols.md), so we plant it: an
    operation that records two allocations and never uses them (a bug's footprint, or damage)."""
    from blkjournal.op import Op

    dev = Device(image, create_size=8 << 20)
    s = Store.mkfs(dev, "ordered", "flush")
    s.put("f", os.urandom(2 * BLOCK_SIZE))
    op = Op("plant a leak", cow=True)
    op.owned[s.lookup("f").fid] = s.freelist.alloc(2)
    s.protocol.commit(op)
    s.sync()
    dev.close()
    with Device(image, readonly=True) as d:
        assert LEAK in fsck(d).codes()


def test_fsck_repair_on_a_leaky_ordered_image(image):
    _leaky_ordered(image)
    with Device(image, readonly=True) as d:
        want = Store.open(d, recover=False).read("f")
    before = sha(image)
    r = cli("fsck", image)
    assert r.code == 1 and "leak" in r.text and "space leak" in r.text
    r = cli("fsck", image, "--json")
    assert r.code == 1
    rep = json.loads(r.out)
    assert not rep["clean"] and {f["code"] for f in rep["findings"]} == {LEAK}
    assert sha(image) == before  # plain fsck is read-only
    r = cli("fsck", image, "--repair", "--json")
    assert r.code == 1  # problems were found (and fixed), like e2fsck's "errors corrected"
    rep = json.loads(r.out)
    assert rep["repairs"] and rep["after_repair"]["clean"]
    r = cli("fsck", image)
    assert r.code == 0, r
    assert cli("get", image, "f").out == want


def test_recover_reports_what_it_did(image):
    _leaky_ordered(image)
    r = cli("recover", image)
    assert r.code == 0 and "dropped 2 used-list entries" in r.text and "recovered, 1 files" in r.text
    assert cli("fsck", image).code == 0


def test_journal_recover_replays(image):
    dev = Device(image, create_size=8 << 20)
    s = Store.mkfs(dev, "journal", "flush")
    s.put("a", b"1")
    s.put("b", b"2")
    s.sync()
    dev.close()
    r = cli("fsck", image, "--json")
    assert r.code == 0 and json.loads(r.out)["journal_transactions_replayed"] == 2
    r = cli("recover", image)
    assert r.code == 0 and "replayed 2 committed journal transactions" in r.text
    r = cli("fsck", image, "--json")
    assert r.code == 0 and json.loads(r.out)["journal_transactions_replayed"] == 0


def test_real_process(image, tmp_path):
    """The console script itself: binary stdin/stdout, exit codes, one-line errors."""
    assert cli("mkfs", image, "--size", "8M", "--protocol", "ordered").code == 0
    payload = bytes(range(256)) * 40
    assert sh("put", image, "bin", "--from", "-", stdin=payload).code == 0
    r = sh("get", image, "bin")
    assert r.code == 0 and r.out == payload
    one_line_error(sh("get", image, "nope"))
    with open(image, "r+b") as f:  # break the superblock
        f.seek(100)
        f.write(b"\xff")
    before = sha(image)
    for cmd in (["ls", image], ["fsck", image]):
        r = sh(*cmd, stdin=b"x")
        one_line_error(r)
        assert "superblock" in r.err
    assert sha(image) == before


@pytest.mark.parametrize("protocol", ["journal", "ordered"])
def test_fsck_repair_rebuilds_a_wrong_bitmap(image, protocol):
    """A bitmap (checksum intact) that marks a free block used and a used block free: under
    journal fsck names both and --repair rebuilds it from what the files own, through the
    protocol's own commit (a journal transaction); under ordered it is a stale hint."""
    from blkjournal.format import PAYLOAD, T_BITMAP, check, seal

    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, protocol, "flush")
        s.put("f", b"keep me" * 1000)
        s.close()
    with Device(image) as d:
        s = Store.open(d)  # (journal: checkpointed, the bitmap is at home)
        used, _ = s.lookup("f").map.lookup(0)
        spare = s.sb.nblocks - 1
        home = s.sb.bitmap_start
        assert used < PAYLOAD * 8 and spare < PAYLOAD * 8
        bits = bytearray(check(d.read(home), T_BITMAP, home))
        bits[used >> 3] &= ~(1 << (used & 7))
        bits[spare >> 3] |= 1 << (spare & 7)
        d.write(home, seal(T_BITMAP, bytes(bits), home))
    r = cli("fsck", image, "--json")
    if protocol == "ordered":  # the bitmap is only a hint there: noted, and rewritten by recovery
        assert r.code == 0 and any("stale" in n for n in json.loads(r.out)["notes"]), r
        assert cli("recover", image).code == 0
        r = cli("fsck", image, "--json")
        assert r.code == 0 and json.loads(r.out)["notes"] == [], r
        assert cli("get", image, "f").out == b"keep me" * 1000
        return
    assert r.code == 1
    found = {f["code"]: f["blocks"] for f in json.loads(r.out)["findings"]}
    assert found["in-use-but-free"] == [used] and found["leak"] == [spare]
    r = cli("fsck", image, "--repair", "--json")
    assert r.code == 1 and json.loads(r.out)["after_repair"]["clean"], r
    assert cli("fsck", image).code == 0
    assert cli("get", image, "f").out == b"keep me" * 1000


def test_put_reads_a_regular_file_into_page_aligned_memory(tmp_path):
    """`put --from FILE` holds the input in page-aligned memory, which the store writes with
    O_DIRECT as it is, without a copy; an empty file is empty bytes."""
    from blkjournal.cli import _read_input
    from blkjournal.device import _aligned

    src = tmp_path / "in.bin"
    payload = os.urandom(1 << 20)
    src.write_bytes(payload)
    buf = _read_input(str(src))
    assert _aligned(buf) and bytes(buf) == payload
    (tmp_path / "empty").write_bytes(b"")
    assert _read_input(str(tmp_path / "empty")) == b""
