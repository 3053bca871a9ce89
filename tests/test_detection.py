"""Format 2 detects what a block's own checksum cannot: misdirected and lost (stale) writes.

Each fault is built on a real image exactly as a device would leave it, and shown caught by name
-- on the store's read path and by fsck.  Each is then shown *not* caught with
BLKJOURNAL_WEAK_DETECTION=1 (format 1's checks: own crc and data crcs only), which proves that
the address, generation and pointer-crc checks are what catch it (and gives the fault explorer a
weakened store to catch).  Also: an old-format image is refused in one line, and the ordered
protocol survives torn used-list writes.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import replace
import struct

import pytest

from blkjournal.crash.explore import crashtest
from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.errors import CorruptError, FieldError, MisdirectedError, StaleBlockError
from blkjournal.format import SECTOR, VERSION, WEAK_ENV, ObjEntry, Origin, UsedListBlock, crc32c
from blkjournal.journal import blank as journal_blank
from blkjournal.fsck import MISDIRECTED, STALE, UNLISTED, fsck
from blkjournal.store import Store
from cliutil import cli


def one_line_error(r):
    """A refusal: exit 2, one line on stderr, no traceback."""
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and "Traceback" not in r.err, r
    return r


def _raw(img: str, b: int, data: bytes | None = None) -> bytes:
    with open(img, "r+b") as f:
        f.seek(b * BLOCK_SIZE)
        if data is None:
            return f.read(BLOCK_SIZE)
        f.write(data)
        return data


def _settle(img: str) -> None:
    """Open with recovery and close: under journal the homes are checkpointed, the log empty."""
    with Device(img) as d:
        Store.open(d).close()


def _numbered(nblocks: int) -> bytes:
    return b"".join(struct.pack("<I", i) * (BLOCK_SIZE // 4) for i in range(nblocks))


@pytest.fixture
def weak(monkeypatch):
    def on():
        monkeypatch.setenv(WEAK_ENV, "1")
    return on


@pytest.mark.parametrize("protocol", ["journal", "ordered"])
def test_a_misplaced_valid_block_is_a_misdirected_write(image, protocol, weak):
    """Map node 1's image written over map node 2 (a write that landed at the wrong address)."""
    data = _numbered(300)  # height 1: two map nodes
    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, protocol, "flush")
        s.put("f", data)
        s.close()
    _settle(image)
    with Device(image, readonly=True) as d:
        n1, n2 = Store.open(d, recover=False).lookup("f").map.root_blocks[:2]
    _raw(image, n2, _raw(image, n1))
    with Device(image, readonly=True) as d:
        with pytest.raises(MisdirectedError, match=rf"file 0 \('f'\): block {n2}: misdirected-write: "
                                                   rf"holds the block index map of block {n1}"):
            Store.open(d, recover=False)
        assert MISDIRECTED in fsck(d).codes()
    weak()
    with Device(image, readonly=True) as d:  # format 1's checks: no address check; the copy is caught
        with pytest.raises(FieldError, match="already uses"):  # only because it names the data blocks
            Store.open(d, recover=False)  # of node 1 a second time (a file names each block once)


def test_a_lost_origin_write_is_a_stale_block(image, weak):
    """journal: the checkpoint write of an origin never reached the medium; the home holds the
    previous origin, valid and at the right address.  The object map entry expects the new one."""
    old, new = b"old" * 2000, b"new" * 3000
    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, "journal", "flush")
        s.put("f", old)
        s.close()
    _settle(image)
    with Device(image, readonly=True) as d:
        home = Store.open(d, recover=False).lookup("f").origin_block
    before = _raw(image, home)
    with Device(image) as d:
        s = Store.open(d)
        s.put("f", new)
        s.close()
    _settle(image)
    _raw(image, home, before)  # the lost write
    with Device(image, readonly=True) as d:
        with pytest.raises(StaleBlockError, match=rf"file 0 \('f'\): block {home}: stale-block: origin of "
                                                  r"generation \d+, its pointer expects generation \d+"):
            Store.open(d, recover=False)
        assert STALE in fsck(d).codes()
    assert one_line_error(cli("get", image, "f")).code == 2
    weak()
    with Device(image, readonly=True) as d:  # format 1: the old file, silently
        assert Store.open(d, recover=False).read("f") == old


def test_a_lost_object_map_write_is_a_stale_block(image, weak):
    """journal: the checkpoint write of the object map block that records a new file was lost.
    Nothing points at a fixed-address block; the journal superblock keeps its crc instead."""
    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, "journal", "flush")
        s.put("a", b"a" * 100)
        s.close()
    _settle(image)
    with Device(image, readonly=True) as d:
        home = Store.open(d, recover=False).sb.objmap_start
    before = _raw(image, home)
    with Device(image) as d:
        s = Store.open(d)
        s.put("b", b"b" * 100)
        s.close()
    _settle(image)
    _raw(image, home, before)  # the lost write: "b" is not in the object map at home
    with Device(image, readonly=True) as d:
        with pytest.raises(StaleBlockError, match=rf"block {home}: stale-block: object map"):
            Store.open(d, recover=False)
        assert STALE in fsck(d).codes()
    weak()
    with Device(image, readonly=True) as d:  # format 1: a synced, checkpointed file silently gone
        s = Store.open(d, recover=False)
        assert s.exists("a") and not s.exists("b")


def _ordered_file_of_three_blocks(image: str):
    """An ordered store holding "f" (3 blocks), closed; its FileState as a reopen loads it."""
    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, "ordered", "flush")
        s.put("f", os.urandom(3 * BLOCK_SIZE))
        s.close()
        return Store.open(d).lookup("f")


def test_a_stale_used_list_block_is_a_stale_block(image, weak):
    """ordered: the file's used list block holds an older version of itself (its own address, a
    lower generation, one entry fewer): what a lost write of it leaves."""
    f = _ordered_file_of_three_blocks(image)
    y = f.ul.head
    cur = f.ul.blocks[y]
    slots = array("Q", cur.slots)
    slots[list(slots).index(f.map.lookup(2)[0])] = 0
    stale = UsedListBlock(0, slots, gen=cur.gen - 1).pack(y)
    _raw(image, y, stale)
    with Device(image, readonly=True) as d:
        with pytest.raises(StaleBlockError, match=rf"block {y}: stale-block: used list of generation"):
            Store.open(d, recover=False)
        assert STALE in fsck(d).codes()
    weak()
    with Device(image, readonly=True) as d:  # format 1: loads; only the accounting is off
        s = Store.open(d, recover=False)
        assert len(s.lookup("f").ul.owned()) == 2
        codes = fsck(d).codes()
        assert STALE not in codes and UNLISTED in codes


@pytest.mark.parametrize("old", [1, 2, VERSION - 1])
def test_an_older_format_image_is_refused(image, old):
    """Format 1 (no address/generation checks), 2 (origins without sector crcs) and the one before
    this (format 5: object map blocks without seen slots) are refused."""
    assert cli("mkfs", image, "--size", "4M").code == 0
    sb = bytearray(_raw(image, 0))
    sb[6:8] = struct.pack("<H", old)
    sb[8:12] = bytes(4)
    sb[8:12] = struct.pack("<I", crc32c(bytes(sb)))
    _raw(image, 0, bytes(sb))
    r = one_line_error(cli("ls", image))
    assert r.code == 2 and f"a format {old} store; this blkjournal reads format {VERSION} only" in r.err
    with Device(image, readonly=True) as d:
        with pytest.raises(CorruptError, match=f"format {old}"):
            fsck(d)


@pytest.mark.parametrize("barrier", ["flush", "fua"])
def test_ordered_survives_torn_used_list_writes(tmp_path, barrier):
    """issue 9: the `grow` workload's used list outgrows a block; every tear at 512 B is legal
    because no live used-list block is ever written in place."""
    res, _ = crashtest(str(tmp_path), protocol="ordered", barrier=barrier, workload="grow", torn=True,
                       image_size=8 << 20)
    assert res.illegal == 0, [(f.reason, f.explanation[:3]) for f in res.failures[:3]]
    assert res.coverage == 1.0 and res.states_checked > 50


def test_journal_superblock_records_the_fixed_blocks_at_every_checkpoint(image):
    """Checkpoints (the log wraps on a 2 MiB store) in the process that made the store and after a
    reopen: each time the journal superblock's crcs match the object map and bitmap at home."""
    from blkjournal.format import JournalSuper

    with Device(image, create_size=2 << 20) as d:
        s = Store.mkfs(d, "journal", "flush")
        for i in range(200):
            s.put(f"f{i % 9}", os.urandom(BLOCK_SIZE * (i % 4)))
        assert s.protocol.journal.tail_seq > 1  # checkpointed at least once
        s.close()
    for _ in range(2):
        _settle(image)
        with Device(image, readonly=True) as d:
            s = Store.open(d, recover=False)
            js = JournalSuper.unpack(d.read(s.sb.journal_start), s.sb.journal_start)
            fixed = range(s.sb.objmap_start, s.sb.data_start)
            assert js.crcs == tuple(crc32c(d.read(b)) for b in fixed)
            assert fsck(d).clean


@pytest.mark.parametrize("cut", [512, 1024, 1536, 3584])
def test_a_torn_object_map_write_loses_only_the_create_in_flight(tmp_path, cut):
    """ordered: a create's object map write torn at a sector boundary.  The block's own crc fails,
    but every sector carries its own and no entry straddles one, so each sector is whole (old or
    new): the other files survive, and the create is as if not done (its origin never landed)."""
    import shutil

    from devutil import WriteLogDevice

    work, before = str(tmp_path / "w.img"), str(tmp_path / "before.img")
    rec = WriteLogDevice(work, create_size=4 << 20)
    s = Store.mkfs(rec, "ordered", "flush")
    for n in "abcdefg":
        s.put(n, n.encode() * 100)
    s.sync()
    shutil.copyfile(work, before)
    rec.log.clear()
    s.put("h", b"h" * 100)  # entry 7: sector 2
    (b, new), = [(b, data) for b, data, role in rec.log if role.startswith("object map")]
    rec.close()
    old = _raw(before, b)
    _raw(before, b, new[:cut] + old[cut:])
    with Device(before) as d:
        s = Store.open(d)
        assert sorted(s.names) == list("abcdefg") and s.read("c") == b"c" * 100
    with Device(before, readonly=True) as d:
        assert fsck(d).clean


@pytest.mark.parametrize("stamped", [False, True])
def test_a_torn_remove_is_not_taken_for_a_lost_create(tmp_path, stamped):
    """ordered: a remove's object map write torn with only sector 1 new.  Entry 3 (sector 1) is
    free, but the header (sector 0) is still the block's older write, of a generation below the
    one file 0's newest origin claims of file 3 (durable before the remove was issued).  Judged
    by the header that is a lost create (stale-block), yet the state is an honest crash: the
    header's generation is sector 0's only (format.objmap_torn, claims.judge).  `stamped`: file 3
    also holds the newest commit, which a sync's bitmap stamp says was durable; the torn remove
    hides it (entry free) and its own generation is in the sector 0 that did not land, so the
    stamp is not judged (claims.hidden_by_tear).  Found by `crashtest --protocol ordered --torn`
    (seeds 0 and 4, 60 ops); the explorer runs are below."""
    import shutil

    from devutil import WriteLogDevice
    from blkjournal.format import header, objmap_torn

    work, before = str(tmp_path / "w.img"), str(tmp_path / "before.img")
    rec = WriteLogDevice(work, create_size=4 << 20)
    s = Store.mkfs(rec, "ordered", "flush")
    for n in "abcde":
        s.put(n, n.encode() * 100)
    s.put("d", b"D" * 100)  # file 3's origin newer than its object map block's last write
    s.sync()
    s.put("a", b"A" * 100)  # file 0's origin names file 3's generation, durable by then
    s.sync()
    if stamped:
        s.put("d", b"E" * 100)
        s.put("d", b"F" * 100)  # (its barrier makes the one before durable)
        s.sync()  # the bitmap stamped newer than any commit but file 3's
    shutil.copyfile(work, before)
    rec.log.clear()
    gen_d = s.lookup("d").gen
    s.remove("d")  # entry 3: sector 1
    (b, new), = [(b, data) for b, data, role in rec.log if role.startswith("object map")]
    rec.close()
    old = _raw(before, b)
    torn = old[:SECTOR] + new[SECTOR:2 * SECTOR] + old[2 * SECTOR:]
    _raw(before, b, torn)
    assert objmap_torn(torn) and header(torn)[5] < gen_d < header(new)[5]  # the header: older than the claim
    with Device(before, readonly=True) as d:
        r = fsck(d)
        assert r.clean, r.codes()
    with Device(before) as d:
        s = Store.open(d)
        assert sorted(s.names) == list("abce") and s.read("a") == b"A" * 100 and s.read("b") == b"b" * 100
    with Device(before, readonly=True) as d:
        assert objmap_torn(_raw(before, b))  # left torn until its next write; judged alike each time
        assert fsck(d).clean


@pytest.mark.parametrize("fid, birth, refused", [(1, 5, True), (3, 5, False), (23, 5, False), (3, 0, True)])
def test_a_torn_block_vouches_only_for_removes_outside_sector_0(fid, birth, refused):
    """claims.judge on a torn object map block (header generation 11, a claim of generation 20 on
    a free entry): the header is still the generation of the entries in sector 0 (0..2: the same
    sector, old or new together), so a free entry there is still a lost create; an entry of
    another sector may be a remove in flight -- but only if it once held a file (a remove keeps
    the birth, births start at 1): a never-used entry (birth 0) is still a lost create."""
    from blkjournal.claims import Claim, hidden_by_tear, judge

    claims = {fid: Claim(20, "file 0's origin", 23)}
    entries = [ObjEntry()] * 24
    entries[fid] = ObjEntry(birth=birth)
    got = judge(claims, file_gens={0: 23}, entries=entries, objmap_gens={1: 11}, objmap_start=1,
                refused=set(), torn={1})
    assert bool(got) == refused, got
    assert judge(claims, file_gens={0: 23}, entries=entries, objmap_gens={1: 11}, objmap_start=1,
                 refused=set())  # untorn: every free entry is judged by the header
    assert hidden_by_tear(entries, {1}, 1) == (not refused) and not hidden_by_tear(entries, set(), 1)


@pytest.mark.parametrize("seed", [0, 4])
def test_ordered_torn_explorer_seeds_are_legal(tmp_path, seed):
    """The explorer states the test above builds by hand (second phases, a remove torn at sector 1:
    seed 0 refused as a lost create, seed 4 as a lost commit the bitmap stamp names)."""
    res, _ = crashtest(str(tmp_path), protocol="ordered", barrier="flush", nops=60, seed=seed, torn=True)
    assert res.illegal == 0, [(f.reason, f.explanation[:3]) for f in res.failures[:3]]


def test_a_misdirected_write_over_an_origin_slot_refuses_the_file(image):
    """ordered: a valid block of another address over the newest origin slot.  The other slot is
    the file one operation back: taking it would be a silent rollback, so the file is refused by
    name (a slot failing its crc, what a torn write leaves, still falls back)."""
    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, "ordered", "flush")
        s.put("f", b"1" * 100)
        s.put("f", b"2" * 100)
        s.put("g", b"g" * 100)
        s.close()
    with Device(image, readonly=True) as d:
        s = Store.open(d, recover=False)
        slot, other = s.lookup("f").origin_block, s.lookup("g").origin_block
    _raw(image, slot, _raw(image, other))
    with Device(image, readonly=True) as d:
        assert MISDIRECTED in fsck(d).codes()
        s, problems = Store.inspect(d)
        assert s.read("g") == b"g" * 100  # unaffected files read back exactly
        with pytest.raises(MisdirectedError, match=rf"file 0 \('f'\): origin slot {slot}: block {slot}: "
                                                   "misdirected-write"):
            s.read("f")
        with pytest.raises(MisdirectedError):
            Store.open(d, recover=False)


def test_a_damaged_durable_transaction_is_not_taken_for_a_torn_tail(image, weak):
    """journal: b's transaction was synced, then c's was written (it says b's was durable); b's
    descriptor then fails every sector crc (a block no framed write leaves: not told from a block
    that never held a transaction).  Replay must not stop there silently as at a torn tail: c's
    descriptor proves b's was durable."""
    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, "journal", "flush")
        s.put("a", b"a" * 100)
        s.sync()
        b_txn = s.protocol.journal.area + s.protocol.journal.head_pos  # b's descriptor goes here
        s.put("b", b"b" * 100)
        s.sync()
        s.put("c", b"c" * 100)
        s.sync()
    raw = bytearray(_raw(image, b_txn))
    for sct in range(BLOCK_SIZE // SECTOR):
        raw[sct * SECTOR + SECTOR - 4:(sct + 1) * SECTOR] = bytes(4)
    _raw(image, b_txn, bytes(raw))
    with Device(image, readonly=True) as d:
        with pytest.raises(CorruptError, match=rf"journal transaction 2 at block {b_txn} fails its checks .*checksum"
                                               r".*transaction 3 .* written after it was durable"):
            Store.open(d, recover=False)
        assert fsck(d).codes() == {"journal"}  # named: the journal cannot be replayed past it
    weak()
    with Device(image, readonly=True) as d:  # format 1: b and c silently gone, though synced
        assert sorted(Store.open(d, recover=False).names) == ["a"]


def _synced_last(image, data: bytes) -> tuple[int, int]:
    """journal: a synced, then b (`data`) synced last: the last batch, no successor.
    Returns (first block, block count) of b's transaction."""
    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, "journal", "flush")
        s.put("a", b"a" * 100)
        s.sync()
        j = s.protocol.journal
        first = j.area + j.head_pos  # b's descriptor goes here
        s.put("b", data)
        s.sync()
        return first, j.area + j.head_pos - first


@pytest.mark.parametrize("which", ["descriptor", "later block"])
def test_rot_in_the_last_durable_transaction_is_refused_by_name(image, weak, which):
    """format 4: journal transaction blocks are framed per sector, so one rotted sector of the last
    synced transaction -- no later descriptor can say it was durable -- is damage, not a torn tail:
    replay refuses by name instead of silently rolling b back (format 1's detection: b gone)."""
    first, n = _synced_last(image, b"b" * 100 if which == "descriptor" else _numbered(600))
    assert n == 2 if which == "descriptor" else n > 2  # (b's data inline: format 7)
    b = first if which == "descriptor" else first + 1
    _flip(image, b, 3 * SECTOR + 7)  # sector 3: sector 0 (header, descriptor) intact
    with Device(image, readonly=True) as d:
        with pytest.raises(CorruptError, match=rf"journal transaction 2: block {b} \(its block {b - first}\): "
                                               r"sector 3 fails its own crc \(damage, not a torn write\)") as e:
            Store.open(d, recover=False)
        assert e.value.fault == "checksum"
        assert fsck(d).codes() == {"journal"}
    weak()
    with Device(image, readonly=True) as d:
        assert sorted(Store.open(d, recover=False).names) == ["a"]  # silently rolled back


def test_a_torn_last_transaction_is_still_a_torn_tail(image):
    """The other side of the classification: b's (unflushed) write torn at sector boundaries over
    a slot mkfs blanked -- every sector old or new, each passing its own crc -- is a torn tail:
    recovery drops b and the store opens."""
    first, _ = _synced_last(image, b"b" * 100)
    torn = bytearray(_raw(image, first))
    blank = bytearray(journal_blank(first))
    torn[SECTOR:] = blank[SECTOR:]  # sector 0 new, the rest as mkfs left them
    assert bytes(torn) != _raw(image, first)
    _raw(image, first, bytes(torn))
    with Device(image, readonly=True) as d:
        assert sorted(Store.open(d, recover=False).names) == ["a"]


def test_ordered_recovery_allocates_only_after_rebuilding_the_freelist(image, weak):
    """issue 9: recovery that must list referenced blocks missing from a used list allocates new
    used-list blocks; before the freelist is rebuilt every block looks free, block 0 first.  (The
    weak mode lets the short used list load at all: format 2 would refuse it as stale.)"""
    f = _ordered_file_of_three_blocks(image)
    y, cur = f.ul.head, f.ul.blocks[f.ul.head]
    crc = crc32c(f.ul.image(y))
    short = UsedListBlock(0, array("Q", bytes(8 * len(cur.slots))), gen=cur.gen).pack(y)
    _raw(image, y, short)
    sb = _raw(image, 0)
    weak()
    with Device(image) as d:
        s = Store.open(d)
        assert any("listed 3 referenced blocks" in r for r in s.protocol.repairs), s.protocol.repairs
        s.close()
    assert _raw(image, 0) == sb
    with Device(image, readonly=True) as d:
        assert fsck(d).clean
        assert crc32c(_raw(image, Store.open(d, recover=False).lookup("f").ul.head)) != crc


def _flip(img: str, b: int, byte: int) -> None:
    raw = bytearray(_raw(img, b))
    raw[byte] ^= 0x10
    _raw(img, b, bytes(raw))


def _two_versions(image):
    """ordered: f written three times (newest origin in one slot, the one before in the other),
    g untouched.  Returns (newest slot, older slot)."""
    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, "ordered", "flush")
        s.put("g", b"g" * 100)
        for v in b"123":
            s.put("f", bytes([v]) * 3000)
        s.close()
    with Device(image, readonly=True) as d:
        f = Store.open(d, recover=False).lookup("f")
        e = f.entry
        return f.origin_block, (e.origin_b if f.origin_block == e.origin_a else e.origin_a)


@pytest.mark.parametrize("barrier", ["flush", "fua"])
def test_a_lost_origin_named_only_by_an_object_map_block_is_a_stale_block(image, weak, barrier):
    """ordered, format 6: x's newest origin, synced, never reached the medium (a lost write); the
    only write since is the object map block of y's remove.  No origin written since names x, so
    only the object map block's `seen` can say that x's newest origin was durable."""
    with Device(image, create_size=8 << 20) as d:
        s = Store.mkfs(d, "ordered", barrier)
        s.put("x", b"1" * 3000)
        s.put("y", b"y" * 100)
        s.close()
    with Device(image, readonly=True) as d:
        s = Store.open(d, recover=False)
        f, home = s.lookup("x"), s.objmap_home(s.names["y"])
        e = f.entry
        nxt = e.origin_b if f.origin_block == e.origin_a else e.origin_a  # where x's next origin goes
    before = _raw(image, nxt)
    with Device(image) as d:
        s = Store.open(d)
        s.put("x", b"2" * 3000)
        s.sync()
        s.remove("y")
        s.close()
    _raw(image, nxt, before)  # the lost write
    with Device(image, readonly=True) as d:
        with pytest.raises(StaleBlockError, match=rf"file 0 \('x'\): stale-block: its newest valid origin is "
                                                  rf"generation \d+, but object map block {home} \(generation \d+\) "
                                                  r"was written after generation \d+ of file 0 was durable"):
            Store.open(d)
        assert STALE in fsck(d).codes()
    assert one_line_error(cli("get", image, "x")).code == 2
    weak()
    with Device(image, readonly=True) as d:  # without the generation checks: the older x, silently
        assert Store.open(d, recover=False).read("x") == b"1" * 3000


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_a_torn_origin_write_is_a_crash_a_rotted_origin_is_damage(image, weak, cut):
    """ordered, format 3: an origin write torn at sector `cut` (each sector old or new) is a crash's
    debris -- the other slot is the file and fsck is clean -- while bit rot in the newest slot,
    anywhere (its block crc field too), refuses the file by name instead of rolling it back.  With
    BLKJOURNAL_WEAK_DETECTION=1 the rot passes for a torn write: the file silently one version back."""
    new, old = _two_versions(image)
    newest = _raw(image, new)
    o = Origin.unpack(newest, new)  # the next write, into the older slot (sectors 0..3 all new), torn
    nxt = replace(o, gen=o.gen + 1, size=7, root_crcs=tuple(c ^ 1 for c in o.root_crcs)).pack(old)
    before = _raw(image, old)
    torn = nxt[:cut * 512] + before[cut * 512:]
    assert torn not in (nxt, before)  # the tear really mixes two versions
    _raw(image, old, torn)
    with Device(image, readonly=True) as d:
        assert fsck(d).clean, fsck(d).findings
        assert Store.open(d, recover=False).read("f") == b"3" * 3000
    for byte in (9, 100, 2000, 4095, 508):  # the block crc, sector 0, sector 3, sector 7's crc; sector 0's crc
        _raw(image, new, newest)
        _flip(image, new, byte)
        with Device(image, readonly=True) as d:
            if byte == 508:  # the block crc covers all but itself and this one: the origin is intact
                assert fsck(d).clean and Store.open(d, recover=False).read("f") == b"3" * 3000
                continue
            assert "checksum" in fsck(d).codes(), byte
            s, _ = Store.inspect(d)
            assert s.read("g") == b"g" * 100
            with pytest.raises(CorruptError, match=rf"origin slot {new}: sector {byte // 512} fails its own crc"):
                s.read("f")
    _raw(image, old, before)  # the other slot the file one version back; the newest rotted
    _raw(image, new, newest)
    _flip(image, new, 2000)
    with Device(image, readonly=True) as d:
        with pytest.raises(CorruptError, match="sector 3 fails its own crc"):
            Store.open(d, recover=False)
    weak()
    with Device(image, readonly=True) as d:
        assert fsck(d).clean and Store.open(d, recover=False).read("f") == b"2" * 3000  # silently rolled back


def test_rot_in_the_older_origin_slot_is_named_and_the_file_stands(image):
    """A sector of the older slot fails while its sector 0 shows the older generation: fsck names
    it (`checksum`), the file reads back as its newest origin says."""
    new, old = _two_versions(image)
    _flip(image, old, 2000)
    with Device(image, readonly=True) as d:
        r = fsck(d)
        assert [f.code for f in r.findings] == ["checksum"] and f"origin slot {old}: sector 3" in r.findings[0].message
        assert Store.open(d, recover=False).read("f") == b"3" * 3000
