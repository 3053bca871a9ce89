"""Seed B's six crash cases, built by hand, and fsck's verdict on each.

Seed B's example: write a new block to a file.  It updates the DATA BLOCK, the data BITMAP and the
INODE.  Here, under protocol `none` (no barriers, so any subset can reach the disk), "append one
block to a file" + sync writes exactly:
    the file's used-list block  -- the allocation record: seed B's "bitmap"
    the data block              -- a fresh block; its crc32c goes into the map entry
    the new origin              -- in the other origin slot: seed B's "inode"
    the global bitmap block     -- at sync; under ordered/none only a hint that recovery rebuilds
                                   from the used lists, so fsck notes it but never judges by it
We record those writes, then lay only some of them over a copy of the image as it was before the
append, and ask fsck.  Each case maps to a verdict (DESIGN §3): case 6 is visible only because
data blocks are checksummed in the map.  Every case is checked with and without the global
bitmap's write: the verdict must not depend on the hint.

Format 2 writes the used list copy-on-write (a fresh block, linked only by the new origin, with
its crc and generation), so the seed's "bitmap" write can no longer leak: cases 2 and 4 leave a
fresh block no durable origin reaches -- free space, consistent.  And an origin durable without
its used list (cases 3 and 5) points at a block that does not hold what the origin expects: fsck
names the used list's checksum and the unlisted blocks, and recovery refuses the file by name.
"""

from __future__ import annotations

import shutil

import pytest

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.format import T_BITMAP, T_ORIGIN, T_USEDLIST, block_type
from blkjournal.errors import CorruptError
from blkjournal.fsck import CHECKSUM, DATA_CHECKSUM, UNLISTED, fsck
from blkjournal.store import Store
from devutil import WriteLogDevice




OLD = bytes([0x11]) * BLOCK_SIZE
NEW = bytes([0x5A]) * BLOCK_SIZE


@pytest.fixture(scope="module")
def append(tmp_path_factory):
    """(image before the append, {kind: (block, bytes)} the append + sync wrote)."""
    d = tmp_path_factory.mktemp("seedb")
    work = str(d / "work.img")
    rec = WriteLogDevice(work, create_size=4 << 20)
    s = Store.mkfs(rec, "none", "flush")
    s.put("f", OLD)
    s.sync()
    base = str(d / "before.img")
    shutil.copyfile(work, base)  # the image just before the append (every write so far is in it)
    rec.log.clear()
    s.write("f", BLOCK_SIZE, NEW)  # append one block
    s.sync()
    f = s.lookup("f")
    data_block, _ = f.map.lookup(1)
    rec.close()
    writes = {}
    for block, data, role in rec.log:
        kind = {T_USEDLIST: "usedlist", T_ORIGIN: "inode", T_BITMAP: "bitmap"}.get(block_type(data))
        if kind is None and block == data_block and data == NEW:
            kind = "data"
        assert kind is not None and kind not in writes, f"unexpected write to block {block} ({role})"
        writes[kind] = (block, data)
    assert sorted(writes) == ["bitmap", "data", "inode", "usedlist"]
    return base, writes


def crash(tmp_path, append, *kinds: str) -> Device:
    """The pre-append image with only the writes of `kinds` applied, opened read-only."""
    base, writes = append
    img = str(tmp_path / "crash.img")
    shutil.copyfile(base, img)
    with open(img, "r+b") as f:
        for k in kinds:
            block, data = writes[k]
            f.seek(block * BLOCK_SIZE)
            f.write(data)
    return Device(img, readonly=True)


def verdict(tmp_path, append, *kinds):
    with crash(tmp_path, append, *kinds) as dev:
        r = fsck(dev)
    return r.codes(), r


def after_recovery(tmp_path):
    """Run the protocol's recovery on the crash image, then fsck again."""
    img = str(tmp_path / "crash.img")
    with Device(img) as dev:
        Store.open(dev)
    with Device(img, readonly=True) as dev:
        r = fsck(dev)
        content = Store.open(dev, recover=False).read("f", verify=False)
    return r.codes(), content


HINT = [(), ("bitmap",)]  # the global bitmap's write left out or included: no difference
hint_ids = ["", "+bitmap hint"]


def test_case0_nothing_written_is_the_old_file(tmp_path, append):
    codes, r = verdict(tmp_path, append)
    assert codes == set() and r.verdict() == "consistent"


@pytest.mark.parametrize("hint", HINT, ids=hint_ids)
def test_case1_data_block_only_is_consistent_data_lost(tmp_path, append, hint):
    codes, r = verdict(tmp_path, append, "data", *hint)
    assert codes == set(), r.to_json()
    assert r.verdict() == "consistent"
    codes, content = after_recovery(tmp_path)
    assert codes == set() and content == OLD  # as if the write never happened


def _refused_by_name(tmp_path) -> None:
    """Recovery refuses a file whose origin points at a used list that is not there, naming both."""
    with Device(str(tmp_path / "crash.img")) as dev:
        with pytest.raises(CorruptError, match=r"file 0 \('f'\): block \d+: .*used list"):
            Store.open(dev)


@pytest.mark.parametrize("hint", HINT, ids=hint_ids)
def test_case2_bitmap_only_cannot_leak(tmp_path, append, hint):
    codes, r = verdict(tmp_path, append, "usedlist", *hint)
    assert codes == set(), r.to_json()  # the copy-on-write used list is reached by no durable origin
    assert r.verdict() == "consistent"
    codes, content = after_recovery(tmp_path)
    assert codes == set() and content == OLD


def test_case2_the_global_bitmap_alone_is_only_a_stale_hint(tmp_path, append):
    codes, r = verdict(tmp_path, append, "bitmap")
    assert codes == set(), r.to_json()


@pytest.mark.parametrize("hint", HINT, ids=hint_ids)
def test_case3_inode_only_is_in_use_but_free_and_garbage(tmp_path, append, hint):
    codes, r = verdict(tmp_path, append, "inode", *hint)
    assert codes == {CHECKSUM, UNLISTED, DATA_CHECKSUM}, r.to_json()
    assert "double-allocation risk" in r.verdict() and "garbage data" in r.verdict()
    _refused_by_name(tmp_path)  # `none` loses here, and says so


@pytest.mark.parametrize("hint", HINT, ids=hint_ids)
def test_case4_data_and_bitmap_cannot_leak(tmp_path, append, hint):
    codes, r = verdict(tmp_path, append, "data", "usedlist", *hint)
    assert codes == set(), r.to_json()
    assert r.verdict() == "consistent"
    codes, content = after_recovery(tmp_path)
    assert codes == set() and content == OLD


@pytest.mark.parametrize("hint", HINT, ids=hint_ids)
def test_case5_data_and_inode_is_in_use_but_free(tmp_path, append, hint):
    codes, r = verdict(tmp_path, append, "data", "inode", *hint)
    assert codes == {CHECKSUM, UNLISTED}, r.to_json()
    assert r.verdict() == "inconsistent: block in use but free (double-allocation risk); corrupt metadata"
    _refused_by_name(tmp_path)


@pytest.mark.parametrize("hint", HINT, ids=hint_ids)
def test_case6_bitmap_and_inode_is_garbage_data(tmp_path, append, hint):
    codes, r = verdict(tmp_path, append, "usedlist", "inode", *hint)
    assert codes == {DATA_CHECKSUM}, r.to_json()  # the metadata agrees; only the checksum tells
    assert r.verdict().startswith("garbage data")
    codes, content = after_recovery(tmp_path)
    assert codes == {DATA_CHECKSUM} and content[BLOCK_SIZE:] != NEW


def test_all_four_writes_is_the_new_file(tmp_path, append):
    codes, r = verdict(tmp_path, append, "usedlist", "data", "inode", "bitmap")
    assert codes == set() and r.notes == [], r.to_json()
    with crash(tmp_path, append, "usedlist", "data", "inode", "bitmap") as dev:
        assert Store.open(dev, recover=False).read("f") == OLD + NEW


def test_a_stale_bitmap_hint_is_noted(tmp_path, append):
    codes, r = verdict(tmp_path, append, "usedlist", "data", "inode")
    assert codes == set() and any("stale" in n for n in r.notes), r.to_json()


def test_reads_refuse_garbage(tmp_path, append):
    """Case 6 through the read path: a checksum error, never the wrong bytes."""
    from blkjournal.errors import CorruptError

    with crash(tmp_path, append, "usedlist", "inode") as dev:
        s = Store.open(dev, recover=False)
        assert s.read("f", 0, BLOCK_SIZE) == OLD
        with pytest.raises(CorruptError, match="fails its checksum"):
            s.read("f")
