"""`hwcheck listen`: the acks server for a writer on another machine (diskchecker.pl's server).

A machine whose power is cut cannot keep its own acks, so it streams them here.  Each line is
checked (its crc32c), appended to the output file and fsynced *before* the "ok" goes back: the
writer treats "ok" as "the ack is safe" and only then submits its next writes.  Several writers
may connect; their lines interleave in completion order under one FileSink lock.

The server is bounded: it stops when its stop event is set (SIGINT/SIGTERM in the CLI) or after
`duration` seconds, so a forgotten listener never outlives its experiment.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from ..errors import BlkError
from . import acklog
from .sink import REPLY_OK, FileSink

POLL_S = 0.2
MAX_LINE = 1 << 20


@dataclass
class ListenStats:
    connections: int = 0
    lines: int = 0
    refused: int = 0


class Listener:
    """Bind at construction (so `address` is known, port 0 = ephemeral); serve until stopped."""

    def __init__(self, out: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sink = FileSink(out)
        try:
            self._server = socket.create_server((host, port), family=_family(host), reuse_port=False)
        except OSError as e:
            self.sink.close()
            raise BlkError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self._server.settimeout(POLL_S)
        self.address: tuple[str, int] = self._server.getsockname()[:2]
        self.stats = ListenStats()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def stop(self) -> None:
        self._stop.set()

    def serve(self, duration: float | None = None, stop: threading.Event | None = None) -> ListenStats:
        """Accept writers until `stop`/`self.stop()` or `duration`; then close everything."""
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self._stop.is_set() and not (stop is not None and stop.is_set()):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                try:
                    conn, _ = self._server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stop.is_set():
                        break
                    raise
                with self._lock:
                    self.stats.connections += 1
                t = threading.Thread(target=self._handle, args=(conn,), daemon=True, name="hwcheck-listen")
                t.start()
                self._threads.append(t)
        finally:
            self._stop.set()
            self._server.close()
            for t in self._threads:
                t.join(timeout=2 * POLL_S + 1)
            self.sink.close()
        return self.stats

    def start(self) -> threading.Thread:
        """Serve in a background thread (tests, or a runner that embeds the listener)."""
        t = threading.Thread(target=self.serve, daemon=True, name="hwcheck-listener")
        t.start()
        return t

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(POLL_S)
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    if not self._accept_line(conn, line + b"\n"):
                        return
                if len(buf) > MAX_LINE:
                    conn.sendall(b"err line too long\n")
                    return

    def _accept_line(self, conn: socket.socket, line: bytes) -> bool:
        try:
            acklog.decode(line)
        except ValueError as e:
            with self._lock:
                self.stats.refused += 1
            reply = b"err " + str(e).encode() + b"\n"
        else:
            try:
                self.sink.append(line)
            except BlkError as e:
                reply = b"err " + str(e).encode() + b"\n"
            else:
                with self._lock:
                    self.stats.lines += 1
                reply = REPLY_OK + b"\n"
        try:
            conn.sendall(reply)
        except OSError:
            return False
        return True


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
