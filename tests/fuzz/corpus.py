"""Seed inputs for the fuzz targets, built once per process from the public APIs (so they follow
the on-disk format wherever it goes): store images of every protocol, a recorded crash-test log
with its sidecar and workload file, and an hwcheck acks file with the image it describes."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.format import block_type
from blkjournal.store import Store

_DIR = None


def workdir() -> str:
    """A disk-backed scratch directory (O_DIRECT needs one; tmpfs refuses it)."""
    global _DIR
    if _DIR is None:
        _DIR = tempfile.mkdtemp(prefix="blkjournal-fuzz-", dir=os.environ.get("BLKJOURNAL_TMP", "/var/tmp"))
        atexit.register(shutil.rmtree, _DIR, True)
    return _DIR


IMAGE_SIZE = 2 << 20
NAMES = ("small", "big", "huge", "gone")


def _fill(s: Store, *, live: bool) -> None:
    s.put("small", b"s" * 100)
    s.put("big", b"b" * 5000)
    s.write("big", 200 * BLOCK_SIZE, b"far")  # map height 1
    s.put("huge", b"h")
    s.write("huge", (128 * 256 + 5) * BLOCK_SIZE, b"very far")  # map height 2
    s.put("gone", b"g" * 9000)
    s.sync()
    if live:  # operations after the last checkpoint: recovery has work to do
        s.remove("gone")
        s.write("small", 50, b"S" * 100)
        s.truncate("big", 4096)
        s.sync()


@functools.lru_cache(maxsize=None)
def images() -> tuple[tuple[str, bytes], ...]:
    """(label, image bytes) for each seed store."""
    out = []
    for protocol in ("journal", "ordered", "none"):
        for live in (False, True):
            path = os.path.join(workdir(), f"seed-{protocol}-{live}.img")
            with Device(path, create_size=IMAGE_SIZE) as d:
                s = Store.mkfs(d, protocol, "flush")
                _fill(s, live=live)
                if not live:
                    s.close()
            if not live:
                with Device(path) as d:
                    Store.open(d).close()  # checkpointed: every block at home
            with open(path, "rb") as f:
                out.append((f"{protocol}{'-live' if live else ''}", f.read()))
            os.unlink(path)
    return tuple(out)


def metadata_blocks(image: bytes) -> list[int]:
    """Blocks of an image that hold a valid metadata block (what mutations aim at)."""
    n = len(image) // BLOCK_SIZE
    return [b for b in range(n) if block_type(image[b * BLOCK_SIZE:(b + 1) * BLOCK_SIZE]) is not None]


@functools.lru_cache(maxsize=None)
def image_meta() -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(metadata_blocks(img)) for _, img in images())


@functools.lru_cache(maxsize=None)
def image_owned() -> tuple[tuple[int, ...], ...]:
    """Blocks the files of each seed own (data blocks included): values a pointer may be set to,
    so the fuzzer builds sharing, cycles and misdirection, not only out-of-range numbers."""
    from blkjournal.crash.image import Overlay

    out = []
    for _, img in images():
        st = Store.open(Overlay(img), recover=False)
        out.append(tuple(sorted(b for b in st.owned_blocks() if b >= st.sb.data_start)))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def crash_log() -> dict[str, bytes]:
    """A recorded crash-test run: {"log", "roles", "workload"} file contents."""
    from blkjournal.crash.explore import record
    from blkjournal.crash.workfile import workload_path
    from blkjournal.crash.recorder import sidecar_path
    from blkjournal.crash.workload import random_workload

    d = workdir()
    log = os.path.join(d, "seed.log")
    record(os.path.join(d, "seed-rec.img"), log, "journal", "flush", random_workload(3, 6), size=512 << 10)
    out = {}
    for key, path in (("log", log), ("roles", sidecar_path(log)), ("workload", workload_path(log))):
        with open(path, "rb") as f:
            out[key] = f.read()
    return out


@functools.lru_cache(maxsize=None)
def acks() -> tuple[bytes, bytes]:
    """(acks file, device image) of a short honest hwcheck run on an image file."""
    from blkjournal.hwcheck.writer import WriteOptions, write

    d = workdir()
    img, log = os.path.join(d, "seed-hw.img"), os.path.join(d, "seed-acks.log")
    with open(img, "wb") as f:
        f.truncate(256 << 10)
    write(img, log, WriteOptions("flush", 1, "0:32", 1, None, 12), say=lambda m: None)
    with open(log, "rb") as f, open(img, "rb") as g:
        return f.read(), g.read()
