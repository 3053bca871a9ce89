"""fsck tested against itself: every finding, built exactly, must be reported (issue 9).

Each test makes a small clean store, checks fsck calls it clean, then plants exactly one fault
with the store's own record types (so every block stays well formed except the one at fault)
and asserts the finding fsck must name.  The fsck mutants in tests/mutants/ each remove one
check; `make mutate` runs these tests under each and requires one to fail.
"""

from __future__ import annotations

import dataclasses

import pytest

from blkjournal import fsck as F
from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.errors import CorruptError
from blkjournal.format import JournalSuper, crc32c
from blkjournal.store import Store


def _store(tmp_path, protocol: str = "journal") -> tuple[Device, Store]:
    """Files a (3 blocks) and b (2 blocks), durable, with every journal transaction checkpointed
    home, so editing a home block is the whole truth fsck sees."""
    dev = Device(str(tmp_path / f"{protocol}.img"), create_size=2 << 20)
    st = Store.mkfs(dev, protocol, "flush")
    st.put("a", bytes([1]) * (3 * BLOCK_SIZE))
    st.put("b", bytes([2]) * (2 * BLOCK_SIZE))
    st.close()
    if protocol == "journal":
        st.protocol.checkpoint()
    assert fsck(dev).clean, fsck(dev).findings
    return dev, st


def fsck(dev):
    return F.fsck(dev)


def codes(dev) -> set[str]:
    return fsck(dev).codes()


def _reseal_fixed(dev, st) -> None:
    """Under journal the journal superblock records the crc of every object map and bitmap block
    as the last checkpoint left it (format 2): re-record them, so a home block planted by a test
    is what the checkpoint wrote, not a stale-block."""
    if st.sb.protocol != "journal":
        return
    j = st.protocol.journal
    js = JournalSuper.unpack(dev.read(j.jsb_block), j.jsb_block)
    crcs = tuple(crc32c(dev.read(b)) for b in j.fixed)
    dev.write(j.jsb_block, dataclasses.replace(js, crcs=crcs).pack(j.jsb_block))
    dev.flush()


def _write_objmap(dev, st, fid: int) -> None:
    home = st.objmap_home(fid)
    dev.write(home, st.objmap_image(home))
    _reseal_fixed(dev, st)


def _write_origin(dev, st, f) -> None:
    """f's origin as the store would write it: sealed with its generation, under ordered into the
    other slot (the slots alternate: one never written since the file's creation would read as
    damaged); under journal the object map entry then expects that origin (gen, crc), as a
    checkpoint leaves it."""
    if st.sb.protocol != "journal":
        f.slot ^= 1
    dev.write(f.origin_block, f.origin_image())
    if st.sb.protocol == "journal":
        f.expect_origin()
        st.entries[f.fid] = f.entry
        _write_objmap(dev, st, f.fid)
    dev.flush()


def _write_usedlist(dev, st, f, changed) -> None:
    """Re-seal f's used list after an in-memory edit of `changed` (a new generation, every link
    naming its successor's gen and crc), write it in place, then the origin that points at it."""
    f.gen += 1
    written, _ = f.ul.commit(f.gen, changed)
    for lb in written:
        dev.write(lb, f.ul.image(lb))
    _write_origin(dev, st, f)


def _write_bitmap(dev, st) -> None:
    for home in st.freelist.homes():
        dev.write(home, st.freelist.image(home))
    dev.flush()
    _reseal_fixed(dev, st)


def _free_block(st) -> int:
    return next(b for b in range(st.sb.data_start, st.sb.nblocks) if not st.freelist.used(b))


def test_clean_store_is_clean_under_both_protocols(tmp_path):
    for p in ("journal", "ordered"):
        dev, _ = _store(tmp_path, p)
        r = fsck(dev)
        assert r.clean and r.files == 2 and r.verdict() == "consistent"


def test_owned_twice(tmp_path):
    dev, st = _store(tmp_path)
    a, b = st.lookup("a"), st.lookup("b")
    blk, crc = a.map.lookup(0)
    b.map.root_blocks[0], b.map.root_crcs[0] = blk, crc  # b's block 0 is now a's block 0
    _write_origin(dev, st, b)
    assert F.OWNED_TWICE in codes(dev)
    assert "owned twice" in fsck(dev).verdict()


def test_data_checksum(tmp_path):
    dev, st = _store(tmp_path)
    dev.write(st.lookup("a").map.lookup(1)[0], bytes([9]) * BLOCK_SIZE)
    assert codes(dev) == {F.DATA_CHECKSUM}


def test_in_use_but_free(tmp_path):
    dev, st = _store(tmp_path)
    st.freelist.mark_free(st.lookup("b").map.lookup(0)[0])
    _write_bitmap(dev, st)
    assert codes(dev) == {F.IN_USE_BUT_FREE}


def test_bitmap_leak(tmp_path):
    dev, st = _store(tmp_path)
    st.freelist.mark_used(_free_block(st))
    _write_bitmap(dev, st)
    assert codes(dev) == {F.LEAK}


def test_unlisted(tmp_path):
    dev, st = _store(tmp_path, "ordered")
    a = st.lookup("a")
    _write_usedlist(dev, st, a, a.ul.remove([a.map.lookup(2)[0]]))
    assert codes(dev) == {F.UNLISTED}


def test_used_list_leak(tmp_path):
    dev, st = _store(tmp_path, "ordered")
    a = st.lookup("a")
    changed, _ = a.ul.add([_free_block(st)], lambda: pytest.fail("no chain block needed"))
    _write_usedlist(dev, st, a, changed)
    assert codes(dev) == {F.LEAK}


def test_checksum(tmp_path):
    dev, st = _store(tmp_path)
    raw = bytearray(dev.read(st.sb.objmap_start))
    raw[100] ^= 0xFF
    dev.write(st.sb.objmap_start, bytes(raw))
    assert F.CHECKSUM in codes(dev)


def test_bad_pointer(tmp_path):
    dev, st = _store(tmp_path)
    b = st.lookup("b")
    b.map.root_blocks[1] = st.sb.nblocks + 5
    _write_origin(dev, st, b)
    assert F.BAD_POINTER in codes(dev)


def test_no_origin(tmp_path):
    dev, st = _store(tmp_path, "ordered")
    e = st.lookup("b").entry
    for slot in (e.origin_a, e.origin_b):
        dev.write(slot, bytes(BLOCK_SIZE))
    assert F.NO_ORIGIN in codes(dev)


def test_duplicate_name(tmp_path):
    dev, st = _store(tmp_path)
    fid = st.names["b"]
    st.entries[fid] = dataclasses.replace(st.entries[fid], name="a")
    _write_objmap(dev, st, fid)
    assert codes(dev) == {F.DUP_NAME}


def test_journal(tmp_path):
    dev, st = _store(tmp_path)
    dev.write(st.sb.journal_start, bytes(BLOCK_SIZE))
    assert F.JOURNAL in codes(dev)


def test_superblock_is_an_error_not_a_finding(tmp_path):
    dev, _ = _store(tmp_path)
    dev.write(0, bytes(BLOCK_SIZE))
    with pytest.raises(CorruptError):
        fsck(dev)


def test_a_files_checks_from_the_memo_follow_the_bitmap(tmp_path):
    """fsck answers each file's checks from a former run of them that read the same contents
    (memo.replayed, as the explorer runs it).  Under journal a used-list block failing its crc is
    a bad pointer when the bitmap says the block is free, damage when it is marked: the same
    file blocks with another bitmap must not get the former verdict."""
    from blkjournal import memo

    dev, st = _store(tmp_path)
    ulb = st.lookup("a").ul.chain[0]
    raw = bytearray(dev.read(ulb))
    raw[200] ^= 0xFF
    dev.write(ulb, bytes(raw))
    memo.enable()
    try:
        assert F.CHECKSUM in codes(dev) and F.BAD_POINTER not in codes(dev)
        st.freelist.mark_free(ulb)
        _write_bitmap(dev, st)
        assert F.BAD_POINTER in codes(dev)
    finally:
        memo.enable(False)
