"""The timed workloads.  Each returns one sample: a dict of metric -> number for one run.

This host is shared and its I/O latency swings several-fold within seconds, so a figure and its
baseline take turns at a fine grain wherever they can: the append configurations a few appends
at a time, 1 MiB writes and raw 1 MiB writes 8 MiB at a time, store and raw reads 100 at a time;
a single 256 MiB put is bracketed by raw writes of the same size just before and after it.

Store workloads go through the library (`Device`, `Store`) exactly as an application would; the
raw baselines use the same O_DIRECT + page-aligned mmap buffer technique as `Device`, with no
store logic, so the gap between the two is the store's cost (CPU and extra I/O).  Block-layer
counters (/sys/block/loopN/stat) are read around every timed loop: they count what the kernel
actually sent to the device, independently of the store's own counters.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import subprocess
import time

from blkjournal.device import BLOCK_SIZE, BlockDevice, Counters, Device
from blkjournal.store import Store

from .env import blockstat, runqueue_wait, stat_delta, syncfs

MiB = 1 << 20
SECTOR = 512
RAW_SEQ_OFF = 640 * MiB  # raw 1 MiB sequential writes: past the store's file (data from ~64 MiB to ~322 MiB)


def _aligned(size: int, fill: bytes | None = None) -> mmap.mmap:
    m = mmap.mmap(-1, size)
    if fill is not None:
        m.write(fill[:size])
        m.seek(0)
    return m


def aligned_copy(data: bytes) -> mmap.mmap:
    """`data` in page-aligned memory of its own."""
    return _aligned(len(data), data)


def _per_sync(blk: dict, n: int, user_bytes: int) -> dict:
    return {"blk_flushes_per_sync": blk["flushes"] / n, "blk_writes_per_sync": blk["write_reqs"] / n,
            "blk_wa": blk["sectors_written"] * SECTOR / user_bytes}


# ---------------------------------------------------------------- synced 4 KiB appends
class Slice(BlockDevice):
    """A region of a Device, as a partition would be: block b of the slice is block first+b.

    Every configuration of the append phase gets its own 1 GiB slice of one loop device, so all of
    them stay open at once and can take turns a few appends at a time.  The I/O is the Device's
    own (same fd, O_DIRECT, same buffer handling); these counters count this slice's share.
    """

    def __init__(self, dev: Device, first: int, nblocks: int) -> None:
        self.dev, self.first, self.nblocks = dev, first, nblocks
        self.logical_block_size = dev.logical_block_size
        self.counters = Counters()

    def _check(self, block: int, count: int) -> None:
        if block < 0 or count < 0 or block + count > self.nblocks:
            raise ValueError(f"blocks {block}..{block + count - 1} outside the slice ({self.nblocks} blocks)")

    def read(self, block: int, count: int = 1) -> bytes:
        self._check(block, count)
        self.counters.reads += 1
        self.counters.bytes_read += count * BLOCK_SIZE
        return self.dev.read(self.first + block, count)

    def write(self, block: int, data: bytes, *, fua: bool = False, role: str = "") -> None:
        self._check(block, len(data) // BLOCK_SIZE)
        self.dev.write(self.first + block, data, fua=fua, role=role)
        self.counters.writes += 1
        self.counters.bytes_written += len(data)
        self.counters.fua_writes += bool(fua)

    def flush(self) -> None:
        self.dev.flush()
        self.counters.flushes += 1

    def discard(self, block: int, count: int = 1, *, role: str = "") -> None:
        self._check(block, count)
        self.dev.discard(self.first + block, count, role=role)
        self.counters.discards += 1


class Appender:
    """One configuration of the append phase: `start()`, then `batch(k)` as often as its turn
    comes, then `finish()` -> the round's sample.  Only the appends themselves are timed."""

    blk_dev: str  # the block device whose /sys/block stat the appends move

    def __init__(self) -> None:
        self.n = 0
        self.secs = self.cpu = self.wait = 0.0
        self.blk = {"write_reqs": 0, "sectors_written": 0, "flushes": 0}

    def start(self) -> None:
        self.n = 0
        self.secs = self.cpu = self.wait = 0.0
        self.blk = dict.fromkeys(self.blk, 0)

    def op(self, i: int) -> None:
        raise NotImplementedError

    def batch(self, k: int) -> None:
        s0 = blockstat(self.blk_dev)
        w0 = runqueue_wait()
        c0 = time.process_time()
        t0 = time.perf_counter()
        for i in range(self.n, self.n + k):
            self.op(i)
        self.secs += time.perf_counter() - t0
        self.cpu += time.process_time() - c0
        self.wait += runqueue_wait() - w0
        for key, v in stat_delta(s0, blockstat(self.blk_dev)).items():
            self.blk[key] += v
        self.n += k

    def sample(self) -> dict:
        n = self.n
        # wall = on CPU + waiting for a CPU + blocked (in I/O, mostly)
        return {"ops_s": n / self.secs, "cpu_us_op": self.cpu / n * 1e6, "wall_us_op": self.secs / n * 1e6,
                "runwait_us_op": self.wait / n * 1e6,
                "blocked_us_op": (self.secs - self.cpu - self.wait) / n * 1e6,
                **_per_sync(self.blk, n, n * BLOCK_SIZE)}

    def finish(self) -> dict:
        return self.sample()


class StoreAppender(Appender):
    """write 4 KiB at EOF + sync, on a store freshly made in its slice; one file, appended to."""

    def __init__(self, dev: Device, dev_path: str, first: int, nblocks: int, protocol: str, barrier: str,
                 payload: bytes, *, inline_max: int | None = None) -> None:
        super().__init__()
        self.slice = Slice(dev, first, nblocks)
        self.blk_dev, self.protocol, self.barrier, self.payload = dev_path, protocol, barrier, payload
        self.inline_max = inline_max  # None: mkfs's default

    def start(self) -> None:
        super().start()
        self.st = Store.mkfs(self.slice, self.protocol, self.barrier, inline_max=self.inline_max)
        self.st.create("log")
        self.st.sync()
        self.slice.counters.reset()

    def op(self, i: int) -> None:
        self.st.write("log", i * BLOCK_SIZE, self.payload)
        self.st.sync()

    def finish(self) -> dict:
        c = self.slice.counters.snapshot()
        self.st.close()
        n = self.n
        return {**self.sample(), "dev_flushes_per_sync": c["flushes"] / n, "dev_fua_per_sync": c["fua_writes"] / n,
                "dev_writes_per_sync": c["writes"] / n, "dev_wa": c["bytes_written"] / (n * BLOCK_SIZE)}


def amortised_wa(inline_max: int | None = None, *, nblocks: int = 16384, n: int = 12000) -> dict:
    """Write amplification of n synced 4 KiB appends counted over a long run with every checkpoint
    it causes (64 MiB store, 1,024-block journal: tens of checkpoints), on an in-memory image:
    counts, not timings, so a memory device gives the device's exact figures."""
    from blkjournal.crash.image import Overlay

    dev = Overlay(nblocks=nblocks, unit=BLOCK_SIZE)
    st = Store.mkfs(dev, "journal", "flush", inline_max=inline_max)
    st.create("log")
    st.sync()
    dev.counters.reset()
    payload = bytes(range(256)) * (BLOCK_SIZE // 256)
    for i in range(n):
        st.write("log", i * BLOCK_SIZE, payload)
        st.sync()
    c = dev.counters.snapshot()
    return {"wa": c["bytes_written"] / (n * BLOCK_SIZE), "writes_per_sync": c["writes"] / n,
            "flushes_per_sync": c["flushes"] / n}


class RawAppender(Appender):
    """pwrite 4 KiB O_DIRECT + fdatasync: the physical limit of a synced append.

    journal_off: two 4 KiB writes at two places (a data block, a "journal" block) before each
    fdatasync -- the journal protocol's I/O with none of its CPU.  adjacent: the data block and
    the journal block side by side, one 8 KiB pwritev before each fdatasync -- the I/O of a journal
    that issues an append's data and its transaction as one request (issue 12), with none of its CPU.
    """

    def __init__(self, dev_path: str, data_off: int, journal_off: int | None, payload: bytes, *,
                 adjacent: bool = False) -> None:
        super().__init__()
        self.blk_dev, self.data_off, self.journal_off = dev_path, data_off, journal_off
        self.fd = os.open(dev_path, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
        self.span = 2 if adjacent else 1  # blocks per request
        self.buf = _aligned(self.span * BLOCK_SIZE, payload * self.span)

    def op(self, i: int) -> None:
        os.pwritev(self.fd, [self.buf], self.data_off + i * self.span * BLOCK_SIZE)
        if self.journal_off is not None:
            os.pwritev(self.fd, [self.buf], self.journal_off + i * BLOCK_SIZE)
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
        self.buf.close()


class Ext4Appender(Appender):
    """write 4 KiB appended + fsync, to a new file on ext4 (buffered, default data=ordered)."""

    def __init__(self, mnt: str, dev_path: str, payload: bytes) -> None:
        super().__init__()
        self.mnt, self.blk_dev, self.payload = mnt, dev_path, payload
        self.path = os.path.join(mnt, "append.log")

    def start(self) -> None:
        super().start()
        if os.path.exists(self.path):
            os.unlink(self.path)
        syncfs(self.mnt)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
        os.fsync(self.fd)

    def op(self, i: int) -> None:
        os.write(self.fd, self.payload)
        os.fsync(self.fd)

    def finish(self) -> dict:
        os.close(self.fd)
        os.unlink(self.path)
        syncfs(self.mnt)
        s = self.sample()
        for k in ("cpu_us_op", "blocked_us_op"):  # ext4's work is in the kernel, partly in other threads
            del s[k]
        return s


# ---------------------------------------------------------------- fio
def fio(fio_path: str, dev_path: str, **opts) -> dict:
    """One fio job on the device (psync engine, queue depth 1); its JSON summary plus block stats."""
    args = [fio_path, "--name=bench", f"--filename={dev_path}", "--ioengine=psync", "--iodepth=1",
            "--numjobs=1", "--direct=1", "--output-format=json", "--randrepeat=1", "--norandommap=1"]
    args += [f"--{k}={v}" for k, v in opts.items()]
    s0 = blockstat(dev_path)
    p = subprocess.run(args, capture_output=True, text=True)
    blk = stat_delta(s0, blockstat(dev_path))
    if p.returncode != 0:
        raise RuntimeError(f"fio failed: {p.stderr.strip()[-300:]}")
    out = p.stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    return {"write_iops": job["write"]["iops"], "write_bw": job["write"]["bw_bytes"],
            "read_iops": job["read"]["iops"], "read_bw": job["read"]["bw_bytes"],
            "write_ios": job["write"]["total_ios"], "read_ios": job["read"]["total_ios"], "blk": blk}


def fio_appends(fio_path: str, dev_path: str, n: int, offset: int) -> dict:
    r = fio(fio_path, dev_path, rw="write", bs="4k", fdatasync=1, offset=offset, size=n * BLOCK_SIZE)
    ios = max(r["write_ios"], 1)
    return {"ops_s": r["write_iops"], **_per_sync(r["blk"], ios, ios * BLOCK_SIZE)}


# ---------------------------------------------------------------- sequential write
class RawSeq:
    """1 MiB O_DIRECT writes from an aligned buffer into a region the store does not use."""

    def __init__(self, dev_path: str, payload: bytes, chunk: int = MiB) -> None:
        self.fd = os.open(dev_path, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
        self.buf = _aligned(chunk, payload)
        self.chunk = chunk

    def write(self, off: int, size: int) -> float:
        t0 = time.perf_counter()
        for o in range(off, off + size, self.chunk):
            os.pwritev(self.fd, [self.buf], RAW_SEQ_OFF + o)
        return time.perf_counter() - t0

    def sync(self) -> float:
        t0 = time.perf_counter()
        os.fdatasync(self.fd)
        return time.perf_counter() - t0

    def whole(self, size: int) -> float:
        return self.write(0, size) + self.sync()

    def close(self) -> None:
        os.close(self.fd)
        self.buf.close()


def store_put(dev_path: str, protocol: str, data: bytes, raw_payload: bytes, *, after=None) -> dict:
    """One put of the whole file + sync on a fresh store, with the same bytes written raw (1 MiB
    O_DIRECT writes + fdatasync) just before and just after it: the put's own baseline.
    `after(store)` runs on the result before the store is closed (the random reads)."""
    size = len(data)
    raw = RawSeq(dev_path, raw_payload)
    try:
        with Device(dev_path) as dev:
            st = Store.mkfs(dev, protocol, "flush")
            r1 = raw.whole(size)
            dev.counters.reset()
            s0 = blockstat(dev_path)
            w0 = runqueue_wait()
            c0 = time.process_time()
            t0 = time.perf_counter()
            st.put("big", data)
            st.sync()
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0
            wait = runqueue_wait() - w0
            blk = stat_delta(s0, blockstat(dev_path))
            c = dev.counters.snapshot()
            r2 = raw.whole(size)
            extra = after(st) if after else {}
            st.close()
    finally:
        raw.close()
    rawt = (r1 + r2) / 2
    return {"mb_s": size / dt / 1e6, "raw_mb_s": size / rawt / 1e6, "seconds": dt, "raw_seconds": rawt,
            "cpu_s": cpu, "runwait_s": wait, "dev_writes": c["writes"], "dev_flushes": c["flushes"], "dev_wa": c["bytes_written"] / size,
            "blk_wa": blk["sectors_written"] * SECTOR / size, "blk_flushes": blk["flushes"], **extra}


def store_writes_interleaved(dev_path: str, protocol: str, data: bytes, raw_payload: bytes, *, chunk: int = MiB,
                             batch: int = 8 * MiB) -> dict:
    """The file as writes of `chunk` + one sync, taking turns with raw 1 MiB O_DIRECT writes of the
    same bytes `batch` at a time (who goes first alternates); each side timed on its own turns."""
    size = len(data)
    raw = RawSeq(dev_path, raw_payload)
    mv = memoryview(data)
    ts = tr = cpu = 0.0
    try:
        with Device(dev_path) as dev:
            st = Store.mkfs(dev, protocol, "flush")
            st.create("big")
            st.sync()
            for k, off in enumerate(range(0, size, batch)):
                for side in ((0, 1) if k % 2 == 0 else (1, 0)):
                    if side:
                        tr += raw.write(off, batch)
                        continue
                    c0 = time.process_time()
                    t0 = time.perf_counter()
                    for o in range(off, off + batch, chunk):
                        st.write("big", o, mv[o:o + chunk])
                    ts += time.perf_counter() - t0
                    cpu += time.process_time() - c0
            c0 = time.process_time()
            t0 = time.perf_counter()
            st.sync()
            ts += time.perf_counter() - t0
            cpu += time.process_time() - c0
            tr += raw.sync()
            st.close()
    finally:
        raw.close()
    return {"mb_s": size / ts / 1e6, "raw_mb_s": size / tr / 1e6, "seconds": ts, "raw_seconds": tr, "cpu_s": cpu}


def fio_seq(fio_path: str, dev_path: str, size: int) -> dict:
    r = fio(fio_path, dev_path, rw="write", bs="1M", offset=RAW_SEQ_OFF, size=size, end_fsync=1)
    return {"mb_s": r["write_bw"] / 1e6}


# ---------------------------------------------------------------- random 4 KiB reads
def reads_interleaved(st: Store, name: str, dev_path: str, idxs: list[int], blocks: list[int],
                      batch: int = 100) -> dict:
    """Random 4 KiB reads of the file through the store (map lookup, O_DIRECT read, crc32c check:
    the store's read path), taking turns `batch` at a time with raw O_DIRECT 4 KiB reads of other
    blocks of the same file (so neither finds a block the other just fetched)."""
    fd = os.open(dev_path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    buf = _aligned(BLOCK_SIZE)
    ts = tr = cpu = 0.0
    try:
        for k in range(0, len(idxs), batch):
            for side in ((0, 1) if (k // batch) % 2 == 0 else (1, 0)):
                if side:
                    t0 = time.perf_counter()
                    for b in blocks[k:k + batch]:
                        os.preadv(fd, [buf], b * BLOCK_SIZE)
                    tr += time.perf_counter() - t0
                else:
                    c0 = time.process_time()
                    t0 = time.perf_counter()
                    for i in idxs[k:k + batch]:
                        st.read(name, i * BLOCK_SIZE, BLOCK_SIZE)
                    ts += time.perf_counter() - t0
                    cpu += time.process_time() - c0
    finally:
        os.close(fd)
        buf.close()
    return {"ops_s": len(idxs) / ts, "raw_ops_s": len(blocks) / tr, "cpu_us_op": cpu / len(idxs) * 1e6}


def fio_reads(fio_path: str, dev_path: str, first_block: int, nblocks: int, n: int, seed: int) -> dict:
    r = fio(fio_path, dev_path, rw="randread", bs="4k", offset=first_block * BLOCK_SIZE,
            size=nblocks * BLOCK_SIZE, number_ios=n, randseed=seed)
    return {"ops_s": r["read_iops"]}


def read_plan(st: Store, name: str, n: int, seed: int) -> tuple[list[int], list[int]]:
    """n random file block indices and the device blocks they live on (looked up before timing)."""
    f = st.lookup(name)
    nblk = f.size // BLOCK_SIZE
    rnd = random.Random(seed)
    idxs = [rnd.randrange(nblk) for _ in range(n)]
    return idxs, [f.map.lookup(i)[0] for i in idxs]


def file_extent(st: Store, name: str) -> tuple[int, int]:
    """First and last device block holding the file's data."""
    f = st.lookup(name)
    blocks = [f.map.lookup(i)[0] for i in range(-(-f.size // BLOCK_SIZE))]
    blocks = [b for b in blocks if b]
    return min(blocks), max(blocks)


def warm(dev_path: str, first_block: int, last_block: int, chunk: int = MiB) -> None:
    """Read an extent once, O_DIRECT, untimed: whatever caches sit below the loop device (the
    host's) then hold it equally for every reader that follows, whichever runs first."""
    fd = os.open(dev_path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    buf = _aligned(chunk)
    try:
        off, end = first_block * BLOCK_SIZE, (last_block + 1) * BLOCK_SIZE
        while off < end:
            n = min(chunk, end - off)
            os.preadv(fd, [memoryview(buf)[:n]], off)
            off += n
    finally:
        os.close(fd)
        buf.close()
