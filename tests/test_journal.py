"""The journal: wrap-around and checkpoints, torn tails, and replay idempotence.

Crash images are built by hand: record the blocks an operation (or a recovery) writes, then lay
only some of them over a copy of the image from before it.  Recovery must then show exactly the
operations whose transactions are whole, and fsck must be clean.
"""

from __future__ import annotations

import random
import shutil

import pytest

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.errors import CorruptError, StaleBlockError
from blkjournal.format import T_JSUPER, T_TXN, Superblock, block_type
from blkjournal.fsck import fsck
from blkjournal.journal import Journal
from blkjournal.store import Store
from devutil import WriteLogDevice

BS = BLOCK_SIZE




def rnd(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def check_store(path: str, model: dict[str, bytes]) -> Store:
    """Open (recovering), compare with the model, fsck; returns nothing open."""
    with Device(path) as dev:
        s = Store.open(dev)
        assert {r["name"]: r["size"] for r in s.listing()} == {k: len(v) for k, v in model.items()}
        for name, data in model.items():
            assert s.read(name) == data, name
        r = fsck(dev)
        assert r.clean, r.to_json()
        assert r.replayed == 0  # recovery checkpointed everything it replayed
    return s


def overlay(base: str, out: str, writes) -> None:
    shutil.copyfile(base, out)
    with open(out, "r+b") as f:
        for block, data in writes:
            f.seek(block * BS)
            f.write(data)


# --------------------------------------------------------------------------- deltas
def _chunk_delta(old: bytes, new: bytes, chunk: int = 64) -> list:
    """delta()'s definition, chunk by chunk: the maximal runs of chunks where new differs."""
    out, lo, hi = [], -1, -1
    for off in range(0, BS, chunk):
        if old[off:off + chunk] != new[off:off + chunk]:
            if off != hi:
                if hi > 0:
                    out.append((lo, new[lo:hi]))
                lo = off
            hi = off + chunk
    if hi > 0:
        out.append((lo, new[lo:hi]))
    return out


def test_delta_of_a_fresh_block_is_its_non_zero_chunks():
    """A block a transaction allocates is logged as a zero-fill and its non-zero 64-byte chunks,
    found at C speed (journal._delta_fresh): the same records as testing chunk after chunk, on
    blocks whose zeros fall on, across and just short of chunk boundaries."""
    from blkjournal.journal import ZERO_FILL, delta

    r = random.Random(1212)
    for _ in range(3000):
        new = bytearray(r.randbytes(BS) if r.random() < 0.5 else bytes(BS))
        for _ in range(r.randrange(0, 8)):
            a = r.randrange(BS)
            n = r.choice([1, 63, 64, 65, 127, 128, 129, 700, 3000])
            new[a:a + n] = bytes(len(new[a:a + n])) if r.random() < 0.6 else r.randbytes(len(new[a:a + n]))
        new = bytes(new)
        assert delta(None, new) == [(ZERO_FILL, b"")] + _chunk_delta(bytes(BS), new)


# --------------------------------------------------------------------------- wrap + checkpoint
def jsb_writes(dev: WriteLogDevice) -> int:
    return sum(1 for _, data, _ in dev.log if block_type(data) == T_JSUPER)


@pytest.mark.parametrize("barrier", ["flush", "fua"])
def test_journal_wraps_and_checkpoints(image, barrier):
    """A 64-block journal and a few hundred operations: the log fills, checkpoints and wraps many
    times; reopening with a live log that itself wraps around the end replays it correctly."""
    dev = WriteLogDevice(image, create_size=16 << 20)
    s = Store.mkfs(dev, "journal", barrier, journal_blocks=64)
    j = s.protocol.journal
    assert j.size == 63
    model: dict[str, bytes] = {}
    rng = random.Random(7)
    reopened_wrapped = checkpoints = 0
    for i in range(400):
        name = f"f{rng.randrange(12)}"
        kind = rng.random()
        if kind < 0.5 or name not in model:
            sizes = [0, 100, BS, 3 * BS + 5, 40 * BS] + ([150 * BS, 300 * BS] if name < "f3" else [])
            data = rnd(i, rng.choice(sizes))  # big puts make transactions of 2-3 blocks
            s.put(name, data)
            model[name] = data
        elif kind < 0.8:
            off = rng.randrange(len(model[name]) + BS)
            data = rnd(i, rng.randrange(1, 2 * BS))
            s.write(name, off, data)
            old = model[name]
            model[name] = (old + bytes(max(0, off - len(old))))[:off] + data + old[off + len(data):]
        elif kind < 0.9:
            size = rng.randrange(len(model[name]) + 2 * BS)
            s.truncate(name, size)
            model[name] = (model[name] + bytes(size))[:size]
        else:
            s.remove(name)
            del model[name]
        if rng.random() < 0.2:
            s.sync()
        if i % 61 == 30:  # a reopen checkpoints wherever the head is: the tail leaves block 0
            checkpoints += jsb_writes(dev)
            dev.close()
            dev = WriteLogDevice(image)
            s = Store.open(dev)
            j = s.protocol.journal
        # reopen (no sync, no checkpoint first) whenever the live log runs across the end
        if j.used and j.head_pos < j.tail_pos and reopened_wrapped < 3:
            with Device(image, readonly=True) as ro:
                jj = Journal(s.sb)
                jj.load_super(ro)
                txns = jj.replay(ro)
                if not (len(txns) >= 2 and txns[0].pos > txns[-1].pos):
                    continue  # only one transaction, placed at the start after a checkpoint
                peek = Store.open(ro, recover=False)
                assert peek.protocol.replayed == len(txns)
                assert {n: peek.read(n) for n in model} == model
            reopened_wrapped += 1
            checkpoints += jsb_writes(dev)
            dev.close()
            dev = WriteLogDevice(image)
            s = Store.open(dev)
            assert s.protocol.replayed == len(txns)
            j = s.protocol.journal
            assert {n: s.read(n) for n in model} == model
    checkpoints += jsb_writes(dev)
    dev.close()
    assert reopened_wrapped == 3, "the workload never left a live log wrapped around the end"
    assert checkpoints >= 3
    check_store(image, model)


# --------------------------------------------------------------------------- torn tail
@pytest.fixture(scope="module", params=["flush", "fua"])
def torn(request, tmp_path_factory):
    """Image with two committed (unsynced, not checkpointed) puts, then the writes of a third, big
    put (data run + a multi-block transaction) and of a fourth, small one (its data inline)."""
    d = tmp_path_factory.mktemp(f"torn-{request.param}")
    work = str(d / "work.img")
    dev = Device(work, create_size=8 << 20)
    Store.mkfs(dev, "journal", request.param)
    dev.close()
    dev = WriteLogDevice(work)
    s = Store.open(dev)
    s.put("a", rnd(1, 5000))
    s.put("b", rnd(2, 3 * BS))
    s.sync()
    assert s.protocol.journal.used  # a and b live only in the log
    base = str(d / "base.img")
    shutil.copyfile(work, base)  # the image as a crash right now would leave it
    dev.log.clear()
    s.put("c", rnd(3, 300 * BS))
    s.protocol.commit_running()  # (a streaming put: its transaction is running, the next op would commit it first)
    c_writes = list(dev.log)
    dev.log.clear()
    s.put("d", rnd(4, 10))
    d_writes = list(dev.log)
    dev.close()
    return base, c_writes, d_writes


AB = {"a": rnd(1, 5000), "b": rnd(2, 3 * BS)}
C = rnd(3, 300 * BS)
D = rnd(4, 10)


def split(writes):
    txn = [(b, d) for b, d, _ in writes if block_type(d) == T_TXN]
    data = [(b, d) for b, d, _ in writes if block_type(d) != T_TXN]
    return data, txn


def test_torn_tail_fixture_shape(torn):
    _, c, d = torn
    cdata, ctxn = split(c)
    ddata, dtxn = split(d)
    assert len(cdata) == 300 and len(ctxn) >= 2  # the big put's transaction spans blocks
    assert len(ddata) == 0 and len(dtxn) == 2  # the small put's data rides in its transaction (format 7)


@pytest.mark.parametrize("drop", ["last txn block", "descriptor", "one data block", "middle txn block"])
def test_torn_tail_is_ignored(torn, tmp_path, drop):
    base, c, _ = torn
    data, txn = split(c)
    if drop == "last txn block":
        txn = txn[:-1]
    elif drop == "descriptor":
        txn = txn[1:]
    elif drop == "middle txn block":
        txn = txn[:1] + txn[2:]
    else:
        data = data[:150] + data[151:]
    img = str(tmp_path / "crash.img")
    overlay(base, img, data + txn)
    with Device(base) as dev:
        barrier = Superblock.unpack(dev.read(0)).barrier
    if drop == "one data block" and barrier == "fua":
        # under fua a transaction is written only after its data's FUA writes completed: no crash
        # keeps the transaction without its data, so the missing block is a lost durable write
        with Device(img) as dev, pytest.raises(StaleBlockError, match="data block .* fails the crc32c its commit"):
            Store.open(dev)
        return
    check_store(img, AB)  # the earlier transactions are intact, c never happened


def test_torn_sector_inside_a_transaction_block(torn, tmp_path):
    base, c, _ = torn
    data, txn = split(c)
    blk, content = txn[-1]
    with open(base, "rb") as f:
        f.seek(blk * BS)
        old = f.read(BS)
    torn_block = content[:512] + old[512:]  # only the first sector reached the disk
    img = str(tmp_path / "crash.img")
    overlay(base, img, data + txn[:-1] + [(blk, torn_block)])
    check_store(img, AB)


def test_whole_transaction_is_replayed(torn, tmp_path):
    base, c, d = torn
    img = str(tmp_path / "crash.img")
    overlay(base, img, [(b, x) for b, x, _ in c])
    check_store(img, AB | {"c": C})
    overlay(base, img, [(b, x) for b, x, _ in c + d])
    check_store(img, AB | {"c": C, "d": D})


def test_a_later_transaction_never_outlives_a_torn_one(torn, tmp_path):
    """d's transaction is whole but c's is not: replay stops at c, so d is not applied either
    (d's metadata could depend on c's), and the store goes on working over d's leftovers.

    Under fua that state is no crash: c's transaction completed FUA before d was written, and d
    says so (its descriptor names the newest durable transaction).  There c must have been lost
    or damaged afterwards, and replay refuses by name rather than silently dropping c and d."""
    base, c, d = torn
    data, txn = split(c)
    img = str(tmp_path / "crash.img")
    overlay(base, img, data + txn[1:] + [(b, x) for b, x, _ in d])
    if "fua" in base:
        with Device(img) as dev:
            with pytest.raises(CorruptError, match="journal transaction 3 .* written after it was durable"):
                Store.open(dev)
        return
    check_store(img, AB)
    with Device(img) as dev:
        s = Store.open(dev)
        s.put("e", b"after the crash")
        s.sync()
    check_store(img, AB | {"e": b"after the crash"})


# --------------------------------------------------------------------------- replay idempotence
@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """An image whose log holds committed transactions, and the writes recovery makes for them."""
    d = tmp_path_factory.mktemp("replay")
    base = str(d / "base.img")
    dev = Device(base, create_size=8 << 20)
    s = Store.mkfs(dev, "journal", "flush")
    model = {}
    for i in range(6):
        model[f"f{i}"] = rnd(10 + i, (i + 1) * 1500)
        s.put(f"f{i}", model[f"f{i}"])
    s.write("f0", 100, b"overwritten")
    model["f0"] = model["f0"][:100] + b"overwritten" + model["f0"][111:]
    s.truncate("f1", 10)
    model["f1"] = model["f1"][:10]
    s.remove("f2")
    del model["f2"]
    s.sync()
    dev.close()
    work = str(d / "work.img")
    shutil.copyfile(base, work)
    dev = WriteLogDevice(work)
    s = Store.open(dev)
    assert s.protocol.replayed == 9
    writes = [(b, x) for b, x, _ in dev.log]
    dev.close()
    return base, writes, model


def test_recovery_writes_homes_then_the_journal_superblock(replay):
    _, writes, _ = replay
    assert block_type(writes[-1][1]) == T_JSUPER
    assert all(block_type(x) != T_JSUPER for _, x in writes[:-1])
    assert len(writes) >= 5


@pytest.mark.parametrize("keep", ["none", "half the homes", "all homes", "all homes reversed half",
                                  "everything"])
def test_crash_during_checkpoint_replays_again(replay, tmp_path, keep):
    """Recovery crashed after writing some of the replayed metadata home but before the journal
    superblock moved the tail: the next open replays the same transactions over the half-updated
    homes and must reach the same state (replay is idempotent)."""
    base, writes, model = replay
    homes = writes[:-1]
    chosen = {"none": [], "half the homes": homes[::2], "all homes": homes,
              "all homes reversed half": homes[1::2][::-1], "everything": writes}[keep]
    img = str(tmp_path / "crash.img")
    overlay(base, img, chosen)
    with Device(img, readonly=True) as ro:
        s = Store.open(ro, recover=False)
        assert s.protocol.replayed == (0 if keep == "everything" else 9)
        assert {r["name"] for r in s.listing()} == set(model)
    check_store(img, model)
    # and a second recovery over the result changes nothing
    with open(img, "rb") as f:
        before = f.read()
    with Device(img) as dev:
        Store.open(dev)
    with open(img, "rb") as f:
        assert f.read() == before


def test_replay_twice_in_memory_is_the_same(replay, tmp_path):
    base, _, model = replay
    img = str(tmp_path / "x.img")
    shutil.copyfile(base, img)
    with Device(img, readonly=True) as ro:
        a = Store.open(ro, recover=False)
        b = Store.open(ro, recover=False)
        assert a.listing() == b.listing()
        assert {n: a.read(n) for n in model} == {n: b.read(n) for n in model} == model
