"""A streaming write returns with its writes in flight (issue 12): what that must not change.

A journal write of EARLY_MIN..STREAM_MAX bytes under flush returns before its data and its
transaction have reached the device, and the caller computes its next write meanwhile.  Held to:
(a) the caller's buffer is the caller's again at once -- a bytearray or an mmap reused right after
the call must not change what reaches the disk (it is copied first; only bytes stay in flight);
(b) what is in flight is bounded (STAGE_BYTES); (c) a write that fails after the call returned is
reported by the next call, on a real device that refuses writes (a loop device set read-only,
BLKROSET: its pwritev fails with EPERM in the kernel), and the store then refuses every later call
rather than go on as if the failed operation were on disk; (d) every later call that reads,
flushes or writes waits for what is in flight, and issues its requests after it.

`Gated` holds the worker's writes at a gate, so "in flight" is a state the test controls: a
write the worker takes up waits there, then is a real O_DIRECT write.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import random
import struct
import threading
import time

import pytest

from blkjournal.device import BLOCK_SIZE, STAGE_BYTES, Device
from blkjournal.errors import BlkError
from blkjournal.store import Store

MiB = 1 << 20
BLKROSET = 0x125D


class Gated(Device):
    """A Device whose background writes wait at `gate` in the worker thread before they are
    issued; `log` is every request in the order the device got it (write: block, blocks, sha)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.gate = threading.Event()
        self.gate.set()
        self.log: list = []

    def _pwrite(self, block, bufs, fua, *rest, **kw):
        if threading.current_thread() is not threading.main_thread():
            assert self.gate.wait(20), "gate never opened"
        self.log.append(("w", block, sum(len(b) for b in bufs) // BLOCK_SIZE,
                         hashlib.sha256(b"".join(bytes(b) for b in bufs)).hexdigest()[:12]))
        return super()._pwrite(block, bufs, fua, *rest, **kw)

    def flush(self) -> None:
        super().flush()
        self.log.append(("f",))


def _fresh(dev, **kw) -> Store:
    st = Store.mkfs(dev, "journal", "flush", **kw)
    st.create("f")
    st.sync()
    return st


def _until(cond, what: str, limit: float = 20) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, f"timed out waiting: {what}"
        time.sleep(0.005)


@pytest.mark.parametrize("kind", ["bytearray", "mmap"])
def test_a_buffer_reused_after_the_call_does_not_change_what_is_written(image, kind):
    """(a) The caller's buffer changes right after each write returns, while its data is still
    waiting to be written: the disk holds what the buffer held during the call."""
    rnd = random.Random(3)
    a, b, c = (rnd.randbytes(MiB) for _ in range(3))
    buf = bytearray(a) if kind == "bytearray" else mmap.mmap(-1, MiB)
    if kind == "mmap":
        buf.write(a)
    with Gated(image, create_size=64 << 20) as dev:
        st = _fresh(dev)
        dev.gate.clear()
        st.write("f", 0, memoryview(buf))
        assert dev._inflight, "the write did not return with its data in flight: the test proves nothing"
        buf[:] = b
        st.write("f", MiB, memoryview(buf))
        buf[:] = c
        dev.gate.set()
        st.sync()
        assert st.read("f") == a + b
        st.close()
    with Device(image) as dev:
        assert Store.open(dev).read("f") == a + b


@pytest.mark.parametrize("kind", ["bytes", "bytearray"])
def test_what_streaming_writes_hold_in_flight_is_bounded(image, kind):
    """(b) With the device holding every write, a caller writing 1 MiB after 1 MiB returns
    exactly STAGE_BYTES / 1 MiB times and then waits -- for copies (bytearray) and for bytes left
    in flight as they are alike -- until the device has completed the oldest."""
    rnd = random.Random(4)
    chunks = [rnd.randbytes(MiB) for _ in range(STAGE_BYTES // MiB + 4)]
    with Gated(image, create_size=96 << 20) as dev:
        st = _fresh(dev, journal_blocks=2048)
        dev.gate.clear()
        done = []

        def writer():
            for k, data in enumerate(chunks):
                st.write("f", k * MiB, data if kind == "bytes" else bytearray(data))
                done.append(k)

        t = threading.Thread(target=writer)
        t.start()
        try:
            _until(lambda: len(done) >= STAGE_BYTES // MiB, "the writes up to the bound")
            time.sleep(0.3)  # room to run on, were it not bounded
            assert t.is_alive() and len(done) == STAGE_BYTES // MiB
            assert sum(e - s for _, s, e in dev._staged) <= STAGE_BYTES
        finally:
            dev.gate.set()
            t.join(20)
        assert len(done) == len(chunks)
        st.sync()
        assert st.read("f") == b"".join(chunks)
        st.close()


def _set_ro(path: str, ro: bool) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKROSET, struct.pack("i", int(ro)))
    finally:
        os.close(fd)


NEXT_CALLS = {
    "write": lambda st: st.write("f", 2 * MiB, bytes(MiB)),
    "append": lambda st: st.write("f", 8 * BLOCK_SIZE, b"x" * BLOCK_SIZE),
    "sync": lambda st: st.sync(),
    "read": lambda st: st.read("f", 0, BLOCK_SIZE),
    "close": lambda st: st.close(),
}


@pytest.mark.loop
@pytest.mark.parametrize("kind", ["bytes", "bytearray"])  # left in flight as it is, or staged (a copy)
@pytest.mark.parametrize("then", sorted(NEXT_CALLS))
def test_a_write_failing_after_the_call_returned_is_reported_by_the_next_call(make_loop, then, kind):
    """(c) The data of a 1 MiB write fails on the device after the write returned (the loop
    device is made read-only while the write waits at the gate: the kernel refuses its pwritev).
    The next call raises that error; the transaction behind the data was never issued; every
    later call is refused (the store's memory holds the write, the disk never will); reopened,
    the store holds what was durable before it."""
    loop = make_loop(64 << 20)
    before = random.Random(5).randbytes(8 * BLOCK_SIZE)
    try:
        with Gated(loop) as dev:
            st = _fresh(dev)
            st.write("f", 0, before)
            st.sync()
            issued = len(dev.log)
            dev.gate.clear()
            payload = random.Random(6).randbytes(MiB)
            st.write("f", 0, payload if kind == "bytes" else bytearray(payload))
            assert dev._inflight, "the write did not return with its data in flight: the test proves nothing"
            _set_ro(loop, True)
            dev.gate.set()
            _until(lambda: dev.pending_error() is not None, "the failure")
            with pytest.raises(OSError) as e:
                NEXT_CALLS[then](st)
            assert e.value.errno == errno.EPERM
            assert len(dev.log) == issued + 1  # the failed data write only: not its transaction
            for name, call in NEXT_CALLS.items():
                with pytest.raises(BlkError, match="the store stopped"):
                    call(st)
            assert len(dev.log) == issued + 1
    finally:
        _set_ro(loop, False)
    with Device(loop) as dev:
        st = Store.open(dev)
        assert st.read("f") == before
        st.close()


WAITING_CALLS = {
    "read": lambda st: st.read("f", 0, MiB),
    "sync": lambda st: st.sync(),
    "append": lambda st: st.write("f", 4 * MiB, b"y" * BLOCK_SIZE),
    "truncate": lambda st: st.truncate("f", MiB + BLOCK_SIZE),
    "put": lambda st: st.put("g", b"z" * 100),
    "remove": lambda st: st.remove("f"),
    "close": lambda st: st.close(),
}


@pytest.mark.parametrize("then", sorted(WAITING_CALLS))
def test_every_later_call_waits_for_the_writes_in_flight(image, then):
    """(d) While a streaming write's data waits at the gate (its transaction running: the next
    call commits it, a read excepted), a read, a sync, a small write, a truncate, a put, a remove
    or a close issues nothing and does not return; once they complete it goes on, its requests
    after theirs (and a read sees the new bytes)."""
    payload = random.Random(7).randbytes(MiB)
    with Gated(image, create_size=64 << 20) as dev:
        st = _fresh(dev)
        st.write("f", 0, bytes(MiB))
        st.sync()
        dev.gate.clear()
        st.write("f", 0, payload)
        issued = len(dev.log)
        assert dev._inflight
        got = []
        t = threading.Thread(target=lambda: got.append(WAITING_CALLS[then](st)))
        t.start()
        t.join(0.3)
        assert t.is_alive() and len(dev.log) == issued  # waiting, nothing issued
        dev.gate.set()
        t.join(20)
        assert not t.is_alive() and len(got) == 1
        if then == "read":  # memory is current: the read commits nothing, the transaction is still running
            assert got[0] == payload and len(dev.log) == issued + 1
            st.close()
        data, txn = dev.log[issued:issued + 2]  # the write's two requests came first
        assert data[2] == MiB // BLOCK_SIZE and data[3] == hashlib.sha256(payload).hexdigest()[:12]
        area = st.protocol.journal.area
        assert area <= txn[1] < area + st.sb.journal_blocks
        if then not in ("close", "read"):
            st.close()
    with Device(image) as dev:
        st = Store.open(dev)
        if then != "remove":
            assert st.read("f", 0, MiB) == payload
