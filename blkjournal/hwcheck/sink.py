"""Where acks go: somewhere that survives the power cut of the device under test.

An ack is a promise ("this write is durable"), so it must be durable itself *before* the writer
acts on it, and it must not live on the disk being cut.  Two sinks, one contract:
`append(line)` returns only once the line is durable.

- FileSink: a file on another device (or a 9p share from a VM host): append + fsync.
- TcpSink: `tcp://HOST:PORT`, a `hwcheck listen` on another machine, which appends and fsyncs
  before it answers "ok" (diskchecker.pl's server, with checksummed lines).

Both serialise appends under one lock, so the log's line order is the order in which appends
completed: the property verify's ordering check rests on (acklog.py).
"""

from __future__ import annotations

import os
import socket
import stat
import threading

from ..errors import BlkError

REPLY_OK = b"ok"
TIMEOUT_S = 30.0


class FileSink:
    """Append + fsync to a file; the file and its directory entry are made durable at open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()  # order of lines
        self._sync_lock = threading.Lock()  # one fsync at a time
        self._written = self._synced = 0
        try:
            created = not os.path.exists(path)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise BlkError(f"acks file {path}: {e.strerror}") from None
        try:
            size = os.fstat(self._fd).st_size
            if size and _last_byte(path, size) != b"\n":
                self._write(b"\n")  # a torn line of an earlier run must not swallow our header
            os.fsync(self._fd)
            if created:
                _fsync_dir(os.path.dirname(os.path.abspath(path)))
        except OSError as e:
            os.close(self._fd)
            raise BlkError(f"acks file {path}: {e.strerror}") from None

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def append(self, line: bytes) -> None:
        """Write under the lock (that fixes the order), then group-commit: one fsync covers every
        line written before it, so N writer threads cost about one fsync per round, not N."""
        with self._lock:
            if self._fd is None:
                raise BlkError(f"acks file {self.path}: already closed")
            try:
                self._write(line)
            except OSError as e:
                raise BlkError(f"acks file {self.path}: {e.strerror}") from None
            self._written += 1
            mine = self._written
        with self._sync_lock:
            if self._synced >= mine:
                return
            with self._lock:
                target, fd = self._written, self._fd
            if fd is None:
                raise BlkError(f"acks file {self.path}: already closed")
            try:
                os.fsync(fd)
            except OSError as e:
                raise BlkError(f"acks file {self.path}: {e.strerror}") from None
            self._synced = target

    def close(self) -> None:
        with self._sync_lock, self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class TcpSink:
    """One connection to `hwcheck listen`; each line waits for the listener's durable "ok"."""

    def __init__(self, host: str, port: int, timeout: float = TIMEOUT_S) -> None:
        self.address = f"{host}:{port}"
        self._lock = threading.Lock()
        self._buf = b""
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise BlkError(f"acks listener tcp://{self.address}: {e.strerror or e}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def append(self, line: bytes) -> None:
        with self._lock:
            try:
                self._sock.sendall(line)
                reply = self._readline()
            except OSError as e:
                raise BlkError(f"acks listener tcp://{self.address}: {e.strerror or e}") from None
            if reply != REPLY_OK:
                raise BlkError(f"acks listener tcp://{self.address} refused a line: {reply.decode(errors='replace')}")

    def _readline(self) -> bytes:
        while b"\n" not in self._buf:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed by the listener")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def parse_tcp(spec: str) -> tuple[str, int]:
    """`tcp://HOST:PORT` (HOST may be [v6]) -> (host, port)."""
    rest = spec[len("tcp://"):]
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BlkError(f"acks sink {spec!r}: expected tcp://HOST:PORT")
    return host, int(port)


def open_sink(spec: str):
    """A sink for `tcp://HOST:PORT` or a file path."""
    if spec.startswith("tcp://"):
        return TcpSink(*parse_tcp(spec))
    return FileSink(spec)


def placement_warning(spec: str, device_path: str) -> str | None:
    """Refuse an acks file on the device under test; warn when it shares its disk or file system.

    A file sink on the very disk being power-cut would lose the acks with the data and prove
    nothing.  An image file's acks on the same file system is fine for tests and demos (nothing is
    cut) but not for a real power-cut experiment, so that only warns.
    """
    if spec.startswith("tcp://"):
        return None
    target = os.path.dirname(os.path.abspath(spec))
    try:
        acks_dev = os.stat(target).st_dev
        st = os.stat(device_path)
    except OSError:
        return None
    if stat.S_ISBLK(st.st_mode):
        if acks_dev == st.st_rdev:
            raise BlkError(f"acks file {spec} lives on {device_path}, the device under test: "
                           "put it on another device or use tcp://")
        if _disk_of(acks_dev) is not None and _disk_of(acks_dev) == _disk_of(st.st_rdev):
            return f"acks file {spec} is on the same disk as {device_path}: a power cut loses both"
        return None
    if acks_dev == st.st_dev:
        return (f"acks file {spec} shares a file system with image {device_path}: fine for a test, "
                "useless for a real power cut")
    return None


def _disk_of(devno: int) -> str | None:
    """The whole-disk sysfs name for a device number (sda for sda1), or None."""
    path = f"/sys/dev/block/{os.major(devno)}:{os.minor(devno)}"
    real = os.path.realpath(path)
    if not os.path.exists(real):
        return None
    if os.path.exists(os.path.join(real, "partition")):
        real = os.path.dirname(real)
    return os.path.basename(real)


def _last_byte(path: str, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, 1, size - 1)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (9p) refuse fsync on directories; the data fsync still holds
    finally:
        os.close(fd)
