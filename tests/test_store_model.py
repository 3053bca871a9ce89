"""The store against a model: the same random operations on Store and on a plain sparse-file dict.

One hypothesis state machine per protocol x barrier kind.  Operations: put (create or replace),
write at offsets that include partial blocks, holes, a block past the root's 128 slots (map height
1) and one at >= 1 GiB (height 2), truncate up and down (also mid-block and far out), rm, sync,
a read-only peek (what `get`/`ls` see: replay / recovery without writing), and reopen (close the
device, open a new Device and Store.open, which recovers).  After every step the contents and the
listing equal the model; after every reopen fsck is clean.

What a second opener sees is what the log holds: every operation that returned, except the
streaming writes of a running transaction (journal/flush group commit, docs/protocols.md), which
reach the log only when it is committed.  So the machine keeps the model as it was before the
running group began (`group_base`): a peek must show exactly that while a group runs, and a store
dropped without close or sync loses exactly the group.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.fsck import fsck
from blkjournal.store import Store

BS = BLOCK_SIZE
IMAGE_SIZE = 16 << 20  # 4096 blocks: small, so the far offsets are sparse for real
NAMES = ("a", "b", "c", "long-name-" + "x" * 90)
WHOLE_READ_LIMIT = 256 * BS  # files up to this size are also compared with one whole read


def content(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


class MFile:
    """A sparse file: size plus the non-hole blocks; bytes past size are always zero."""

    def __init__(self) -> None:
        self.size = 0
        self.blocks: dict[int, bytearray] = {}

    def write(self, off: int, data: bytes) -> None:
        if not data:  # like pwrite: writing nothing never extends the file
            return
        end = off + len(data)
        pos = off
        while pos < end:
            idx, lo = divmod(pos, BS)
            n = min(BS - lo, end - pos)
            blk = self.blocks.setdefault(idx, bytearray(BS))
            blk[lo:lo + n] = data[pos - off:pos - off + n]
            pos += n
        self.size = max(self.size, end)

    def truncate(self, size: int) -> None:
        if size < self.size:
            keep = -(-size // BS)
            for idx in [i for i in self.blocks if i >= keep]:
                del self.blocks[idx]
            if size % BS and size // BS in self.blocks:
                self.blocks[size // BS][size % BS:] = bytes(BS - size % BS)
        self.size = size

    def block(self, idx: int) -> bytes:
        """File block idx as a read returns it (cut at EOF)."""
        n = max(0, min(BS, self.size - idx * BS))
        return bytes(self.blocks.get(idx, bytes(BS))[:n])

    def whole(self) -> bytes:
        return b"".join(self.block(i) for i in range(-(-self.size // BS)))


def assert_matches(store: Store, model: dict[str, MFile]) -> None:
    rows = store.listing()
    assert [(r["name"], r["size"]) for r in rows] == sorted((n, f.size) for n, f in model.items())
    for name, mf in model.items():
        f = store.lookup(name)
        mapped = {idx for idx, _, _ in f.map.data_entries()}
        assert all(idx * BS < mf.size for idx in mapped), f"{name}: blocks mapped past EOF"
        if mf.size <= WHOLE_READ_LIMIT:
            assert store.read(name) == mf.whole(), name
        else:  # sparse and far out: every block either side has, one read each
            for idx in sorted(mapped | set(mf.blocks)):
                if idx * BS < mf.size:
                    assert store.read(name, idx * BS, BS) == mf.block(idx), f"{name}: file block {idx}"
        if mf.size:  # a read that straddles EOF stops at EOF
            lo = max(0, mf.size - 100)
            want = b"".join(mf.block(i) for i in range(lo // BS, -(-mf.size // BS)))[lo % BS:]
            assert store.read(name, lo, 1000) == want
            assert store.read(name, mf.size, 10) == b""


# offsets: partial blocks near the start, just past the 128 root slots (height 1), inside the
# height-1 range, and at >= 1 GiB (height 2)
offsets = st.one_of(
    st.integers(0, 6 * BS),
    st.integers(128 * BS - 3, 131 * BS),
    st.integers(1000 * BS, 1001 * BS),
    st.integers(1 << 30, (1 << 30) + 2 * BS),
)
lengths = st.one_of(st.integers(0, 3 * BS + 17), st.sampled_from([1, BS - 1, BS, BS + 1, 2 * BS]))
sizes = st.one_of(st.integers(0, 6 * BS), st.sampled_from([BS - 1, BS, BS + 1, 129 * BS + 5, (1 << 30) + 3]))


class StoreMachine(RuleBasedStateMachine):
    protocol = "journal"
    barrier = "flush"

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="bj-model-", dir="/var/tmp")
        self.path = f"{self.dir}/store.img"
        self.dev = Device(self.path, create_size=IMAGE_SIZE)
        self.store = Store.mkfs(self.dev, self.protocol, self.barrier)
        self.model: dict[str, MFile] = {}
        self.group_base: dict[str, MFile] | None = None  # the model before the running group's first write
        self.reopens = 0

    def running(self) -> bool:
        return getattr(self.store.protocol, "running", None) is not None

    @contextlib.contextmanager
    def op(self):
        """Around one operation on the store and the model: note where a running transaction
        began (the model before it) and that a committed one ended it."""
        before = None if self.running() else copy.deepcopy(self.model)
        yield
        if not self.running():
            self.group_base = None
        elif before is not None:
            self.group_base = before

    def teardown(self) -> None:
        try:
            self.dev.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(name=st.sampled_from(NAMES), n=lengths, seed=st.integers(0, 1 << 30))
    def put(self, name, n, seed):
        data = content(seed, n)
        with self.op():
            self.store.put(name, data)
            self.model[name] = MFile()
            self.model[name].write(0, data)

    @rule(name=st.sampled_from(NAMES[:2]), nblocks=st.sampled_from([129, 300]), seed=st.integers(0, 99))
    def put_large(self, name, nblocks, seed):
        """A file that needs map height 1 (more than the origin's 128 root slots)."""
        data = content(seed, nblocks * BS - 7)
        with self.op():
            self.store.put(name, data)
            self.model[name] = MFile()
            self.model[name].write(0, data)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), off=offsets, n=lengths, seed=st.integers(0, 1 << 30))
    def write(self, data, off, n, seed):
        name = data.draw(st.sampled_from(sorted(self.model)))
        buf = content(seed, n)
        with self.op():
            self.store.write(name, off, buf)
            self.model[name].write(off, buf)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), size=sizes)
    def truncate(self, data, size):
        name = data.draw(st.sampled_from(sorted(self.model)))
        with self.op():
            self.store.truncate(name, size)
            self.model[name].truncate(size)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), delta=st.integers(-BS - 1, BS + 1))
    def truncate_near_eof(self, data, delta):
        name = data.draw(st.sampled_from(sorted(self.model)))
        size = max(0, self.model[name].size + delta)
        with self.op():
            self.store.truncate(name, size)
            self.model[name].truncate(size)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data):
        name = data.draw(st.sampled_from(sorted(self.model)))
        with self.op():
            self.store.remove(name)
            del self.model[name]

    @rule()
    def sync(self):
        with self.op():
            self.store.sync()
        assert not self.running(), "a sync left a running transaction"

    @rule()
    def peek_readonly(self):
        """What get/ls see: a second, read-only open that recovers in memory and writes nothing --
        every operation the log holds: all but a running group's."""
        with Device(self.path, readonly=True) as ro:
            assert_matches(Store.open(ro, recover=False), self.group_base if self.running() else self.model)

    @rule(clean=st.booleans(), sync_first=st.booleans())
    def reopen(self, clean, sync_first):
        """clean: Store.close() (an unmount) first, after which the image must be consistent as
        it lies; otherwise just drop the device (a process that exits without closing: no crash,
        every write but a running group's reached the image -- a running transaction lives in the
        process -- and the recovery at open has leftovers to clean)."""
        if sync_first:
            self.store.sync()
        if clean:
            self.store.close()
        assert not (self.running() and (clean or sync_first)), "a close or sync left a running transaction"
        if self.running():  # dropped with a running transaction: its group never reached the log
            self.model = self.group_base
        self.group_base = None
        self.dev.close()
        if clean:
            with Device(self.path, readonly=True) as ro:
                report = fsck(ro)
                assert report.clean, report.to_json()
        self.dev = Device(self.path)
        self.store = Store.open(self.dev)
        self.reopens += 1
        report = fsck(self.dev)
        assert report.clean, report.to_json()
        assert report.files == len(self.model)

    @invariant()
    def contents_match(self):
        assert_matches(self.store, self.model)

    @invariant()
    def freelist_counts(self):
        fl = self.store.freelist
        assert fl.nfree == fl.nblocks - sum(bin(b).count("1") for b in fl.bits[: (fl.nblocks + 7) // 8])
        owned = self.store.owned_blocks()
        assert all(fl.used(b) for b in owned), "a block files own is free in memory"


# BJ_MODEL_EXAMPLES scales a longer exploration run by hand; the default keeps `make test` quick
MODEL_SETTINGS = settings(max_examples=int(os.environ.get("BJ_MODEL_EXAMPLES", 8)),
                          stateful_step_count=int(os.environ.get("BJ_MODEL_STEPS", 25)), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

COMBOS = [(p, b) for p in ("journal", "ordered", "none") for b in ("flush", "fua")]


def _machine(protocol: str, barrier: str):
    cls = type(f"StoreMachine_{protocol}_{barrier}", (StoreMachine,), {"protocol": protocol, "barrier": barrier})
    return cls


@pytest.mark.parametrize("protocol,barrier", COMBOS)
def test_store_matches_model(protocol, barrier):
    cls = _machine(protocol, barrier)
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(cls, settings=MODEL_SETTINGS)


# ---------------------------------------------------------------------------- fixed scenarios
@pytest.mark.parametrize("protocol", ["journal", "ordered", "none"])
def test_big_file_used_list_chain_and_map_height(image, protocol):
    """600 blocks: the used list chains (505 slots per block) and the map is height 1; a sparse
    block at 1 GiB makes it height 2; truncating down mid-block and reopening keeps it all."""
    dev = Device(image, create_size=IMAGE_SIZE)
    s = Store.mkfs(dev, protocol, "flush")
    m = MFile()
    data = content(1, 600 * BS + 123)
    s.put("big", data)
    m.write(0, data)
    f = s.lookup("big")
    assert f.map.height == 1 and len(f.ul.chain) >= 2
    s.write("big", (1 << 30) + 5, b"far away")
    m.write((1 << 30) + 5, b"far away")
    assert s.lookup("big").map.height == 2
    s.sync()
    dev.close()
    dev = Device(image)
    s = Store.open(dev)
    assert_matches(s, {"big": m})
    assert fsck(dev).clean
    s.truncate("big", 300 * BS + 11)
    m.truncate(300 * BS + 11)
    s.truncate("big", 400 * BS)
    m.truncate(400 * BS)
    assert_matches(s, {"big": m})
    s.sync()
    dev.close()
    dev = Device(image)
    s = Store.open(dev)
    assert_matches(s, {"big": m})
    r = fsck(dev)
    assert r.clean, r.to_json()
    s.remove("big")
    s.sync()
    dev.close()
    dev = Device(image)
    s = Store.open(dev)
    assert s.listing() == []
    assert fsck(dev).clean
    # everything the file had is free again
    assert s.freelist.nfree == s.sb.nblocks - s.sb.data_start
    dev.close()


@pytest.mark.parametrize("protocol", ["journal", "ordered", "none"])
def test_space_is_reused_not_leaked(image, protocol):
    """Rewriting the same file many times must not eat the device (freed blocks come back)."""
    dev = Device(image, create_size=4 << 20)  # 1024 blocks
    s = Store.mkfs(dev, protocol, "flush")
    for i in range(400):
        s.put("f", content(i, 3 * BS))
        if i % 50 == 0:
            s.sync()
    s.sync()
    assert s.read("f") == content(399, 3 * BS)
    dev.close()
    dev = Device(image)
    s = Store.open(dev)
    assert s.read("f") == content(399, 3 * BS)
    assert fsck(dev).clean
    dev.close()


@pytest.mark.parametrize("protocol", ["journal", "ordered", "none"])
def test_bad_arguments_change_nothing(image, protocol):
    from blkjournal.errors import BlkError

    dev = Device(image, create_size=IMAGE_SIZE)
    s = Store.mkfs(dev, protocol, "flush")
    s.put("a", b"hello")
    for bad in ("", "a/b", "x" * 111, "nul\0"):
        with pytest.raises(BlkError):
            s.put(bad, b"x")
    with pytest.raises(BlkError):
        s.create("a")
    with pytest.raises(BlkError):
        s.write("missing", 0, b"x")
    with pytest.raises(BlkError):
        s.write("a", -1, b"x")
    with pytest.raises(BlkError):
        s.truncate("a", -1)
    with pytest.raises(BlkError):
        s.remove("missing")
    assert s.read("a") == b"hello" and [r["name"] for r in s.listing()] == ["a"]
    s.sync()
    dev.close()
    dev = Device(image)
    s = Store.open(dev)
    assert s.read("a") == b"hello" and [r["name"] for r in s.listing()] == ["a"]
    assert fsck(dev).clean
    dev.close()


@pytest.mark.parametrize("protocol", ["journal", "ordered", "none"])
def test_out_of_space_is_atomic(image, protocol):
    """On a nearly full 1 MiB store, an operation either happens whole or fails with NoSpaceError
    having changed nothing -- in memory too, so later operations do not commit a half-done one."""
    from blkjournal.errors import NoSpaceError

    dev = Device(image, create_size=1 << 20)
    s = Store.mkfs(dev, protocol, "flush")
    model: dict[str, MFile] = {}
    rng = random.Random(protocol)
    refused = 0
    for i in range(150):
        name = rng.choice("abcd")
        kind = rng.random()
        try:
            if kind < 0.4 or name not in model:
                data = content(i, rng.choice([0, 10, BS, 20 * BS, 60 * BS, 90 * BS]))
                s.put(name, data)
                model[name] = MFile()
                model[name].write(0, data)
            elif kind < 0.75:
                off = rng.choice([0, 3 * BS + 1, 127 * BS, 300 * BS, 40000 * BS])
                data = content(i, rng.choice([1, BS, 30 * BS]))
                s.write(name, off, data)
                model[name].write(off, data)
            elif kind < 0.9:
                size = rng.randrange(model[name].size + 1)
                if rng.random() < 0.5:
                    size -= size % BS  # a cut on a block boundary: no data block, only map nodes
                s.truncate(name, size)
                model[name].truncate(size)
            else:
                s.remove(name)
                del model[name]
        except NoSpaceError:
            refused += 1
        assert_matches(s, model)
        if i % 37 == 0:
            s.sync()
            dev.close()
            dev = Device(image)
            s = Store.open(dev)
            assert_matches(s, model)
            r = fsck(dev)
            assert r.clean, r.to_json()
    assert refused >= 5  # the store really was full, often
    dev.close()
    dev = Device(image)
    assert_matches(Store.open(dev), model)
    assert fsck(dev).clean
    dev.close()


@pytest.mark.parametrize("protocol", ["journal", "ordered"])
@pytest.mark.parametrize("op", ["truncate on a block boundary", "truncate mid-block", "write", "put"])
def test_no_space_left_half_way(image, protocol, op):
    """One free block left, and an operation that needs more of them part-way through (a
    copy-on-write of a second map level, say): refused before it changes anything."""
    from blkjournal.errors import NoSpaceError

    dev = Device(image, create_size=IMAGE_SIZE)
    s = Store.mkfs(dev, protocol, "flush")
    m = MFile()
    for off in (0, 300 * BS, 40000 * BS):  # map height 2
        s.write("f", off, content(off, 2 * BS)) if s.exists("f") else s.put("f", content(off, 2 * BS))
        m.write(off, content(off, 2 * BS))
    s.sync()
    fl = s.freelist
    fake = fl.alloc(fl.nfree - len(fl.held) - 1)  # the device is full but for one block (in memory only)
    if (op, protocol) == ("truncate on a block boundary", "journal"):
        s.truncate("f", 300 * BS + BS)  # allocates nothing (no copy-on-write): a full store can shrink
        m.truncate(300 * BS + BS)
    else:
        with pytest.raises(NoSpaceError):
            if op == "truncate on a block boundary":
                s.truncate("f", 300 * BS + BS)
            elif op == "truncate mid-block":
                s.truncate("f", 300 * BS + 100)
            elif op == "write":
                s.write("f", 300 * BS + 7, b"x" * 3 * BS)
            else:
                s.put("f", b"y" * 2 * BS)
    assert_matches(s, {"f": m})
    for b in fake:
        fl.mark_free(b)
    s.truncate("f", m.size)  # an operation that commits the bitmap again, without the pretence
    s.close()
    dev.close()
    dev = Device(image)
    assert_matches(Store.open(dev), {"f": m})
    assert fsck(dev).clean
    dev.close()
