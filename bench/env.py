"""The bench's environment: fio, loop devices with direct I/O, block-layer counters, ext4.

Everything set up here is torn down by the caller's ExitStack, also on Ctrl-C: loop devices are
detached by the name losetup gave us, never by a pattern.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time

FIO_PACKAGE = {"fio": "fio"}  # Debian package -> command it installs


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def ensure_fio() -> str | None:
    """Install fio with apt-get when it is missing (idempotent, as blkjournal.vm.deps does for qemu).

    Returns fio's path, or None (the fio baselines are then left out and the reason noted).
    """
    from blkjournal.errors import BlkError
    from blkjournal.vm.deps import ensure_host_packages

    try:
        done = ensure_host_packages(FIO_PACKAGE, quiet=True)
        if done:
            log(f"installed {' '.join(done)}")
    except BlkError as e:
        log(f"fio unavailable, its baselines are skipped: {e}")
        return None
    return shutil.which("fio")


def need_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (loop devices, mount)")
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not installed")


def workdir(stack: contextlib.ExitStack, parent: str = "/var/tmp") -> str:
    """A private directory on a disk-backed file system (tmpfs refuses O_DIRECT)."""
    d = tempfile.mkdtemp(prefix="blkjournal-bench-", dir=parent)
    stack.callback(shutil.rmtree, d, True)
    return d


def zero_file(path: str, size: int) -> None:
    """A backing file whose every block is allocated and written, so no measurement pays for the
    host file system allocating (or converting unwritten extents) under the loop device."""
    sparse_file(path, size, [(0, size)])


def sparse_file(path: str, size: int, regions: list[tuple[int, int]]) -> None:
    """A sparse file of `size` bytes with only `regions` (offset, length) written through."""
    chunk = bytes(8 << 20)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in regions:
            f.seek(off)
            left = length
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n
        f.flush()
        os.fsync(f.fileno())


def attach_loop(stack: contextlib.ExitStack, backing: str) -> str:
    """losetup --direct-io=on over `backing`; detached when the stack unwinds."""
    last = ""
    for attempt in range(5):  # -f races with other users of loop devices: retry
        p = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", "--sector-size=512", backing],
                           capture_output=True, text=True)
        if p.returncode == 0 and p.stdout.strip():
            dev = p.stdout.strip()
            stack.callback(_detach, dev)
            with open(f"/sys/block/{os.path.basename(dev)}/loop/dio") as f:
                if f.read().strip() != "1":
                    raise SystemExit(f"bench: {dev}: direct I/O did not turn on")
            return dev
        last = p.stderr.strip()
        time.sleep(0.2 * (attempt + 1))
    raise SystemExit(f"bench: losetup failed: {last}")


def _detach(dev: str) -> None:
    for _ in range(10):
        if subprocess.run(["losetup", "-d", dev], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    log(f"could not detach {dev}")


def mount_ext4(stack: contextlib.ExitStack, dev: str, mnt: str) -> str:
    """mkfs.ext4 with the inode tables and journal initialised now (no lazy-init thread writing
    in the background during the measurements), mounted with default options (data=ordered)."""
    subprocess.run(["mkfs.ext4", "-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev],
                   check=True, capture_output=True)
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-t", "ext4", dev, mnt], check=True, capture_output=True)
    stack.callback(_umount, mnt)
    return mnt


def _umount(mnt: str) -> None:
    for _ in range(10):
        if subprocess.run(["umount", mnt], capture_output=True).returncode == 0:
            return
        time.sleep(0.3)
    subprocess.run(["umount", "-l", mnt], capture_output=True)


_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _libc.syncfs(fd)
    finally:
        os.close(fd)


def runqueue_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (/proc/thread-self/schedstat,
    2nd field): on an oversubscribed host this is where a CPU-heavy loop loses time."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def blockstat(dev: str) -> dict[str, int]:
    """/sys/block/NAME/stat: 5th field write requests, 7th sectors written, 16th flushes completed."""
    with open(f"/sys/block/{os.path.basename(dev)}/stat") as f:
        v = [int(x) for x in f.read().split()]
    return {"write_reqs": v[4], "sectors_written": v[6], "flushes": v[15] if len(v) > 15 else 0}


def stat_delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in a}


def queue_facts(dev: str) -> dict:
    q = f"/sys/block/{os.path.basename(dev)}/queue"
    out = {}
    for name in ("write_cache", "fua", "logical_block_size"):
        try:
            with open(f"{q}/{name}") as f:
                out[name] = f.read().strip()
        except OSError:
            pass
    return out


def host_facts() -> dict:
    u = os.uname()
    return {"kernel": u.release, "machine": u.machine, "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}
