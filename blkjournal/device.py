"""The block model: a device of 4 KiB blocks with write, FUA write, flush, discard and mark.

Everything the store and the harness do to a disk goes through `Device`, so the counters here are
exact: every write request, every byte, every flush and every FUA write is counted once.  I/O is
O_DIRECT from page-aligned buffers (an anonymous mmap is always page aligned), so nothing sits in
the host page cache between us and the device's own volatile cache -- the cache we reason about.

A flush is `fdatasync` on the device; a FUA write is `pwritev(..., RWF_DSYNC)` on the O_DIRECT fd.
On Linux an RWF_DSYNC write to a block device is submitted with REQ_FUA and followed by a cache
flush, but the crash model only relies on what FUA promises (this one write is durable when it
returns), which is weaker, so a protocol proven under the model is correct on either kernel path.
"""

from __future__ import annotations

import _thread
import atexit
import ctypes
import errno
import fcntl
import mmap
import os
import stat
import struct
import sys
import threading
import weakref
from collections import deque
from dataclasses import dataclass, asdict

from .errors import BlkError, DeviceReadError

BLOCK_SIZE = 4096
BLKSSZGET = 0x1268  # logical sector size
BLKPBSZGET = 0x127B  # physical sector size
BLKGETSIZE64 = 0x80081272
BLKDISCARD = 0x1277
SWITCH_INTERVAL = 0.0001  # seconds: the interpreter's switch interval while background writes are in flight
ZERO_COPY_MIN = 16 * BLOCK_SIZE  # from this size a write from page-aligned memory is not copied first
STAGE_BYTES = 8 << 20  # the staging ring: what staged background writes hold in flight at most (writev_background)


@dataclass
class Counters:
    """Exact I/O counts since open (or since `reset`)."""

    writes: int = 0
    bytes_written: int = 0
    flushes: int = 0
    fua_writes: int = 0
    reads: int = 0
    bytes_read: int = 0
    discards: int = 0

    def reset(self) -> None:
        for k in asdict(self):
            setattr(self, k, 0)

    def snapshot(self) -> dict:
        return asdict(self)


class AlignedBuffer:
    """A reusable page-aligned scratch buffer for O_DIRECT, grown on demand."""

    def __init__(self, size: int = BLOCK_SIZE) -> None:
        self._map = mmap.mmap(-1, max(size, BLOCK_SIZE))

    def view(self, size: int) -> memoryview:
        if size > len(self._map):
            self._map.close()
            self._map = mmap.mmap(-1, (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)
        return memoryview(self._map)[:size]

    def close(self) -> None:
        self._map.close()


class AtLeast:
    """A search predicate (BlockDevice.find): `rank(raw, block) >= at`, and, when `valid` is
    given, `valid(raw, block)` (asked only of a block whose rank passes).

    A search asked with many thresholds over the same blocks -- the journal's scan for evidence
    of a loss, once for every place a replay may stop -- judges each block once per content: the
    crash explorer keeps `rank`'s value (and `valid`'s, once asked) per block and content across
    searches and segments (explore.Tracer) and compares it with each `at`.  `rank` and `valid`
    must depend on their arguments only (module-level functions: they name the kept values);
    `rank` may return any value comparable with `at` (e.g. +-inf for "always" and "never").  A
    costly part of the judgement (a seal check) belongs in `valid`: most blocks' ranks fail
    every threshold asked, and then it is never computed."""

    __slots__ = ("rank", "at", "valid")

    def __init__(self, rank, at, valid=None) -> None:
        self.rank, self.at, self.valid = rank, at, valid

    def __call__(self, raw, block: int) -> bool:
        return self.rank(raw, block) >= self.at and (self.valid is None or self.valid(raw, block))


class BlockDevice:
    """Interface every device offers (plain, recording, overlay).  Blocks are BLOCK_SIZE bytes."""

    nblocks: int
    logical_block_size: int
    counters: Counters

    def read(self, block: int, count: int = 1) -> bytes:
        raise NotImplementedError

    def write(self, block: int, data: bytes, *, fua: bool = False, role: str = "") -> None:
        raise NotImplementedError

    def writev(self, block: int, bufs: list, *, fua: bool = False, role: str = "") -> None:
        """One device write of the concatenation of `bufs` (whole blocks in all) at `block`.
        This default joins them and calls write(); Device writes them without joining."""
        data = bytes(bufs[0]) if len(bufs) == 1 else b"".join(bufs)
        self.write(block, data, fua=fua, role=role)

    def writev_background(self, block: int, bufs: list, *, fua: bool = False, role: str = "",
                          start: bool = False, stage: bool = False):
        """writev(), but it may return before the write completes: requests still go to the
        device one at a time, in the order they were issued, each after the one before has
        completed -- exactly the request stream synchronous calls make -- and every other call
        on the device waits first for what is in flight.  The caller keeps `bufs` unchanged
        until wait() says the write is done -- unless `stage`: then the caller may change or
        reuse `bufs` as soon as this returns.  Pieces that are `bytes` (or views of bytes) cannot
        change and stay in flight as they are; any other memory is copied first into memory the
        device owns.  Staged writes hold at most STAGE_BYTES in flight: one waits first for the
        oldest while there is no room.  Returns a handle for wait(), or None when the write is
        done already (this default: synchronous).  `start`: return only once this write has
        been issued (the ones before it completed), not merely queued."""
        self.writev(block, bufs, fua=fua, role=role)
        return None

    def pending_error(self) -> BaseException | None:
        """The error of a background write that has failed and that no wait() has raised yet,
        without waiting for anything (this default: none).  A caller that lets writes run on
        after it returns asks this at its next call, so the failure is reported there."""
        return None

    def wait(self, handle=None) -> None:
        """Until the background write `handle` (None: every one) and those before it have
        completed; raises the first one's error."""

    def queued(self) -> int:
        """How many background writes wait behind the one being issued (this default: none).
        While some do, the thread issuing them needs the interpreter when the current one
        completes: a caller computing meanwhile should let go of it now and then."""
        return 0

    def flush(self) -> None:
        raise NotImplementedError

    def discard(self, block: int, count: int = 1, *, role: str = "") -> None:
        raise NotImplementedError

    def find(self, block: int, count: int, pred, key=None) -> tuple[int, bytes] | None:
        """The first block of the range whose bytes satisfy `pred(raw, block)`, with them; None if
        no block does.  A search for evidence (recovery's scan for a transaction that proves a
        loss), not a read of data: its answer is only whether such a block exists.  So the
        crash explorer can answer it for a whole class of crash states at once (explore.Tracer)
        instead of telling apart every state by the contents of every block searched.  `pred`
        must depend on its arguments only; `key` names it (with its arguments) for caching."""
        step = 64
        for b0 in range(block, block + count, step):
            n = min(step, block + count - b0)
            raw = self.read(b0, n)
            for i in range(n):
                blk = raw[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]
                if pred(blk, b0 + i):
                    return b0 + i, blk
        return None

    def read_derived(self, block: int, fn):
        """fn(the block's bytes): a read of what the caller makes of the block, not of the block.
        Recovery patches a journalled home's content with the records replay found; only the
        patched image matters to it.  So the crash explorer can answer it for a whole class of
        crash states at once when fn gives one value for every content the block takes there
        (explore.Tracer) -- a home a checkpoint tore is old and new sectors whose mixes all patch
        to the same image.  `fn` must depend on its argument only (and be kept unchanged)."""
        return fn(self.read(block))

    def mark(self, text: str) -> None:
        """A named point in the write stream; only recording devices keep it."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_extent(dev: BlockDevice, block: int, count: int) -> None:
    if block < 0 or count < 0 or block + count > dev.nblocks:
        raise BlkError(f"blocks {block}..{block + count - 1} lie outside the device ({dev.nblocks} blocks)")


def _check_write_extent(dev: BlockDevice, block: int, n: int) -> None:
    """A write of n bytes at `block`: whole blocks, inside the device."""
    if n == 0 or n % BLOCK_SIZE:
        raise ValueError(f"write of {n} bytes is not a whole number of blocks")
    _check_extent(dev, block, n // BLOCK_SIZE)


class Device(BlockDevice):
    """A block device or image file opened with O_DIRECT.

    Block devices are opened O_EXCL (the kernel then refuses a second exclusive opener and any
    mount); image files take an advisory flock so two writers never share one image.
    """

    def __init__(self, path: str, *, readonly: bool = False, create_size: int | None = None,
                 logical_block_size: int | None = None) -> None:
        self.path = path
        self.counters = Counters()
        self.readonly = readonly
        if create_size is not None and not os.path.exists(path):
            if create_size <= 0 or create_size % BLOCK_SIZE:
                raise BlkError(f"image size must be a positive multiple of {BLOCK_SIZE} bytes")
            with open(path, "wb") as f:
                f.truncate(create_size)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise BlkError(f"{path}: no such file or device") from None
        self.is_block = stat.S_ISBLK(st.st_mode)
        if not (self.is_block or stat.S_ISREG(st.st_mode)):
            raise BlkError(f"{path}: not a block device or regular file")
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_DIRECT | os.O_CLOEXEC
        if self.is_block and not readonly:
            flags |= os.O_EXCL
        try:
            self.fd = os.open(path, flags)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise BlkError(f"{path}: device is busy (mounted or opened exclusively elsewhere)") from None
            if e.errno == errno.EINVAL:
                raise BlkError(f"{path}: O_DIRECT is not supported here (tmpfs?); use a disk-backed image") from None
            raise BlkError(f"{path}: {e.strerror}") from None
        try:
            if self.is_block:
                size = struct.unpack("Q", fcntl.ioctl(self.fd, BLKGETSIZE64, b"\0" * 8))[0]
                lbs = struct.unpack("i", fcntl.ioctl(self.fd, BLKSSZGET, b"\0" * 4))[0]
            else:
                if not readonly:
                    try:
                        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise BlkError(f"{path}: image is in use by another writer") from None
                size = st.st_size
                lbs = logical_block_size or 512
            if BLOCK_SIZE % lbs:
                raise BlkError(f"{path}: block size {BLOCK_SIZE} is not a multiple of the logical block size {lbs}")
        except BaseException:
            os.close(self.fd)
            raise
        self.size = size
        self.logical_block_size = lbs
        self.nblocks = size // BLOCK_SIZE
        self._buf = AlignedBuffer()
        self._one = AlignedBuffer()  # a random 4 KiB read's buffer, its view made once
        self._one_view = [self._one.view(BLOCK_SIZE)]
        self._worker: _Writer | None = None  # background writes (writev_background)
        self._worker_pid = 0
        self._worker_buf: AlignedBuffer | None = None  # the worker's own, for writes it must copy
        self._inflight: deque = deque()  # futures of background writes, oldest first
        self._switch = 0.0  # the interpreter's switch interval before the first write in flight
        self._failed: BaseException | None = None  # the background write that failed, until wait() raises it
        self._ring: AlignedBuffer | None = None  # staged writes' copies (writev_background(stage=True))
        self._ring_view: memoryview | None = None
        self._ring_head = 0  # where the newest staged copy ends
        self._staged: deque = deque()  # (request, start, end) of staged writes in flight, oldest first

    def read(self, block: int, count: int = 1) -> bytes:
        if self._inflight:
            self.wait()
        if count == 1 and 0 <= block < self.nblocks:
            vec, n = self._one_view, BLOCK_SIZE
        else:
            _check_extent(self, block, count)
            n = count * BLOCK_SIZE
            vec = [self._buf.view(n)]
        try:
            got = os.preadv(self.fd, vec, block * BLOCK_SIZE)
        except OSError as e:
            if e.errno != errno.EIO:
                raise BlkError(f"{self.path}: reading block {block}: {e.strerror}") from None
            where = f"block {block}" if count == 1 else f"blocks {block}..{block + count - 1}"
            raise DeviceReadError(f"{self.path}: {where}: read-error: the device returned EIO") from None
        if got != n:
            raise BlkError(f"{self.path}: short read at block {block} ({got} of {n} bytes)")
        c = self.counters
        c.reads += 1
        c.bytes_read += n
        return bytes(vec[0])

    def write(self, block: int, data: bytes, *, fua: bool = False, role: str = "") -> None:
        if self._inflight:
            self.wait()
        self._pwrite(block, (data,), fua)

    def writev(self, block: int, bufs: list, *, fua: bool = False, role: str = "") -> None:
        """Each piece is copied once, straight into the aligned buffer, and written in one
        pwritev; pieces that are all page-aligned writable memory (a view of the caller's mmap)
        are written from where they are, without the copy.  A subclass that overrides write() (to watch or change writes) gets writev as
        joined write() calls, so it still sees every write."""
        if type(self).write is not Device.write:
            return super().writev(block, bufs, fua=fua, role=role)
        if self._inflight:
            self.wait()
        self._pwrite(block, bufs, fua)

    def writev_background(self, block: int, bufs: list, *, fua: bool = False, role: str = "",
                          start: bool = False, stage: bool = False):
        """One worker thread issues the writes, in the order given (pwritev lets go of the GIL, so
        the caller computes meanwhile); the request stream is the synchronous one (see
        BlockDevice.writev_background).  A subclass that overrides write() gets them
        synchronously, through write().  An error is raised by the wait() (or the next call on
        the device) that meets it, before any later request is issued.

        `start` is for a caller about to compute while the write runs: the worker needs a CPU for
        a moment to issue each write, and on a machine whose other CPU is busy the scheduler let
        the caller run out its time slice first (about 0.7 ms here, most of a 1 MiB write).  A
        caller that blocks until the write is issued leaves the worker its CPU at once.

        `stage`: each staged write takes a span of the staging ring, whose size bounds what they
        hold in flight.  Memory that may change (a bytearray, an mmap, a view of one) is copied
        here, by the caller, into that span -- page-aligned memory of the device's own, which the
        worker writes from as it is.  Immutable bytes are not copied here: the worker copies them
        into its aligned buffer as for any write, and the caller computes on meanwhile."""
        if type(self).write is not Device.write:
            return super().writev_background(block, bufs, fua=fua, role=role, start=start, stage=stage)
        n = self._check_write(block, bufs)
        if self._worker is None or self._worker_pid != os.getpid():  # none yet, or forked
            self._worker, self._worker_pid = _Writer(self), os.getpid()
            self._worker_buf = AlignedBuffer()
            self._inflight.clear()
            self._staged.clear()
        if stage:
            at = self._stage_room(n)
            copy = not all(type(getattr(b, "obj", b)) is bytes for b in bufs)  # (a memoryview's obj: what it views)
            if copy:
                bufs = (_gather(self._ring_view[at:at + n], bufs),)
        if not self._inflight:
            # The worker needs the interpreter for a moment to start each write: at the default
            # 5 ms switch interval it would wait for it while this thread computes, and start
            # only when the caller waits.  So the interval is short while writes are in flight.
            self._switch = sys.getswitchinterval()
            sys.setswitchinterval(min(self._switch, SWITCH_INTERVAL))
        req = _Request(block, list(bufs), fua, n, start)
        self._inflight.append(req)
        if stage:
            req.direct = copy
            self._staged.append((req, at, at + n))
            self._ring_head = at + n
        self._worker.put(req)
        self._count(n, fua)  # counted as issued, here: the counters are exact whenever the caller looks
        if start:
            req.started.acquire()
        # No time.sleep(0) to hand the worker the interpreter here: a sleep enters the scheduler,
        # and on a busy machine the caller waited a time slice for it (a fifth of a streaming
        # MiB's wall time); the worker takes the interpreter when the caller next lets go of it
        # (the crcs that follow a streaming write's data release it per block) or at the switch
        # interval.
        return req

    def _stage_room(self, n: int) -> int:
        """Where in the staging ring n bytes go: after the newest staged copy, or at the ring's
        start when they do not fit before its end; waits for the oldest staged writes (raising a
        failure) while the space they hold is needed.  Spans are taken and given back in the
        order the writes were queued, which is the order they complete in."""
        if n > STAGE_BYTES:
            raise ValueError(f"a staged write of {n} bytes exceeds the staging ring ({STAGE_BYTES} bytes)")
        if self._ring is None:
            self._ring = AlignedBuffer(STAGE_BYTES)
            self._ring_view = self._ring.view(STAGE_BYTES)
        staged = self._staged
        while True:
            while staged and not staged[0][0].done.locked():  # completed: its span is free again
                staged.popleft()
            if not staged:
                return 0
            tail, head = staged[0][1], self._ring_head
            if head > tail:  # in use: [tail, head); free: [head, end) and [0, tail)
                if STAGE_BYTES - head >= n:
                    return head
                if tail >= n:
                    return 0
            elif tail - head >= n:  # wrapped: in use from tail to the end and from 0 to head
                return head
            self.wait(staged[0][0])

    def pending_error(self) -> BaseException | None:
        return self._failed if self._worker_pid == os.getpid() else None

    def queued(self) -> int:
        return len(self._worker.pending) if self._worker is not None and self._worker_pid == os.getpid() else 0

    def _background(self, req: "_Request") -> None:
        """In the worker: one write, unless one before it failed (then nothing is issued)."""
        if self._failed is not None:
            req.refused = True
            req.error = BlkError(f"{self.path}: write at block {req.block} not issued: an earlier write failed")
            return
        try:
            self._pwrite(req.block, req.bufs, req.fua, self._worker_buf, req.n, count=False, direct=req.direct)
        except BaseException as e:
            e.__traceback__ = None  # (its frames hold the buffers: a staged copy's span, the worker's buffer)
            self._failed = req.error = e

    def wait(self, handle=None) -> None:
        if self._inflight and self._worker_pid != os.getpid():
            # A forked child: the writes in flight are the parent's, issued by a thread the
            # child does not have; waiting for them would hang, and they are not the child's.
            self._inflight.clear()
            self._staged.clear()
            self._worker = None
        try:
            while self._inflight:
                req = self._inflight[0]
                req.result()
                self._inflight.popleft()
                if req is handle:
                    break
        except BaseException:
            c = self.counters
            for req in self._inflight:  # the rest fail at once, issuing nothing
                req.done.acquire()
                if req.refused:  # counted when queued, never issued: the counters stay exact
                    c.writes -= 1
                    c.bytes_written -= req.n
                    c.fua_writes -= req.fua
            self._inflight.clear()
            self._staged.clear()
            self._failed = None
            raise
        finally:
            if not self._inflight and self._switch:
                sys.setswitchinterval(self._switch)
                self._switch = 0.0

    def _check_write(self, block: int, bufs) -> int:
        if self.readonly:
            raise BlkError(f"{self.path}: opened read-only")
        n = sum(len(b) for b in bufs)
        _check_write_extent(self, block, n)
        return n

    def _pwrite(self, block: int, bufs, fua: bool, buf: AlignedBuffer | None = None, n: int | None = None, *,
                count: bool = True, direct: bool = False) -> None:
        """`direct`: bufs are page-aligned memory of the device's own (a staged copy), written as they are."""
        if n is None:
            n = self._check_write(block, bufs)
        if direct:
            iov = bufs
        elif n >= ZERO_COPY_MIN and all(map(_aligned, bufs)):
            iov = bufs  # the caller's own page-aligned memory (an mmap, say): O_DIRECT from it, no copy
        else:
            iov = [_gather((buf or self._buf).view(n), bufs)]
        try:
            done = os.pwritev(self.fd, iov, block * BLOCK_SIZE, os.RWF_DSYNC if fua else 0)
        finally:  # (a failed write's error, kept until raised, must not keep the buffer exported)
            if iov is not bufs:
                iov[0].release()
        if done != n:
            raise BlkError(f"{self.path}: short write at block {block} ({done} of {n} bytes)")
        if count:
            self._count(n, fua)

    def _count(self, n: int, fua: bool) -> None:
        self.counters.writes += 1
        self.counters.bytes_written += n
        if fua:
            self.counters.fua_writes += 1

    def flush(self) -> None:
        if self._inflight:
            self.wait()
        os.fdatasync(self.fd)
        self.counters.flushes += 1

    def discard(self, block: int, count: int = 1, *, role: str = "") -> None:
        if self._inflight:
            self.wait()
        _check_extent(self, block, count)
        if self.is_block:
            fcntl.ioctl(self.fd, BLKDISCARD, struct.pack("QQ", block * BLOCK_SIZE, count * BLOCK_SIZE))
        else:
            _punch_hole(self.fd, block * BLOCK_SIZE, count * BLOCK_SIZE)
        self.counters.discards += 1

    def close(self) -> None:
        if getattr(self, "fd", None) is not None:
            try:
                self.wait()
            finally:
                if self._worker is not None:
                    if self._worker_pid == os.getpid():
                        self._worker.stop()
                    self._worker = None
                    self._worker_buf.close()
                if self._ring is not None:
                    self._staged.clear()
                    self._ring_view.release()
                    self._ring.close()
                    self._ring = self._ring_view = None
                os.close(self.fd)
                self.fd = None
                self._buf.close()
                self._one_view[0].release()
                self._one.close()


class _Request:
    """One background write: what to write, and `done`, a lock held until the worker has
    issued it (or refused to); its error, if any.  A plain lock, not a Future: a streaming write
    issues two of these per MiB, and a Future (its condition, the executor's locks) cost the
    caller as much Python as the rest of the submission."""

    __slots__ = ("block", "bufs", "fua", "n", "done", "started", "error", "refused", "direct")

    def __init__(self, block: int, bufs: list, fua: bool, n: int, start: bool = False) -> None:
        self.block, self.bufs, self.fua, self.n, self.error, self.refused = block, bufs, fua, n, None, False
        self.direct = False  # bufs are a staged copy (Device._pwrite's `direct`)
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.started = None  # with `start`: a lock held until the worker takes the request up
        if start:
            self.started = _thread.allocate_lock()
            self.started.acquire()

    def result(self) -> None:
        """Until the write is issued and has returned; raises its error."""
        self.done.acquire()
        self.done.release()  # (done stays done: a second wait returns at once)
        if self.error is not None:
            raise self.error


class _Writer:
    """The thread that issues a Device's background writes, one at a time, in order.

    Requests wait in a deque; the thread sleeps in an eventfd read only when the deque is empty,
    and says so (`idle`), so a request queued while it writes costs the caller no system call,
    and one queued while it sleeps wakes it by an eventfd write -- a call that lets go of the
    interpreter.  (A queue's put wakes the thread while holding it: on a busy machine the
    scheduler often ran the woken thread right there, and the caller sat out its time slice
    holding the interpreter the thread needed.)  Every step is taken holding the interpreter,
    so no wake-up is lost: the thread says it is idle before it looks at the deque a last time,
    and the caller looks at `idle` after it has queued."""

    def __init__(self, dev: "Device") -> None:
        self.pending: deque = deque()
        self.idle = False
        self.efd = os.eventfd(0, os.EFD_CLOEXEC)
        self.thread = threading.Thread(target=self._run, args=(dev._background,), name="blkjournal-write",
                                       daemon=True)
        self.thread.start()
        _WRITERS.add(self)

    def put(self, req) -> None:
        self.pending.append(req)
        if self.idle:
            os.eventfd_write(self.efd, 1)

    def _run(self, issue) -> None:
        pending, efd = self.pending, self.efd
        while True:
            if not pending:
                self.idle = True
                if not pending:
                    os.eventfd_read(efd)
                self.idle = False
                continue
            req = pending.popleft()
            if req is None:
                return
            if req.started is not None:
                req.started.release()
            try:
                issue(req)
            finally:
                req.bufs = None  # written: the caller's memory (or the staged copy) is not held a moment longer
                req.done.release()

    def stop(self) -> None:
        """After the writes queued so far; the thread ends."""
        if self.thread.is_alive():
            self.put(None)
            self.thread.join()
        _WRITERS.discard(self)
        os.close(self.efd)


_WRITERS: "weakref.WeakSet[_Writer]" = weakref.WeakSet()


@atexit.register
def _drain() -> None:
    """At exit, the writes still queued on a device never closed are issued, not dropped (the
    thread is a daemon, so that an unclosed device cannot keep the interpreter from exiting)."""
    for w in list(_WRITERS):
        if w.thread.is_alive():
            w.put(None)
            w.thread.join()


def _gather(view: memoryview, bufs) -> memoryview:
    """`bufs` copied one after the other into `view` (exactly their total size); returns it."""
    o = 0
    for b in bufs:
        view[o:o + len(b)] = b
        o += len(b)
    return view


def _aligned(buf) -> bool:
    """Is `buf` writable memory starting on a page boundary, a whole number of blocks long
    (what O_DIRECT can write from as it is)?  A bytes object never is (its data follows the
    object's header), and read-only memory is not asked about."""
    mv = memoryview(buf)
    if mv.readonly or mv.nbytes % BLOCK_SIZE or not mv.c_contiguous:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(mv)) % mmap.PAGESIZE == 0


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """fallocate(PUNCH_HOLE|KEEP_SIZE): a discard on an image file reads back as zeros."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(fd, 0x02 | 0x01, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
