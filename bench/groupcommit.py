"""Group commit A/B in one process: the running transaction on (GROUP_MAX as shipped) and off
(0: every streaming write commits a transaction of its own, the write order before), taking turns.

    python -m bench.groupcommit cpu [DEVICE] [--rounds N]      # main-thread CPU per MiB
    python -m bench.groupcommit ratio DEVICE [--rounds N]      # store_writes_interleaved vs raw

`cpu`: 64 writes of 1 MiB + sync (after 8 warm-up writes) on a fresh store, main-thread CPU
(`time.thread_time`) per MiB -- in memory (an overlay that drops data writes) without DEVICE.
`ratio`: bench.measure.store_writes_interleaved (256 writes of 1 MiB from page-aligned memory +
sync, taking turns with raw 1 MiB O_DIRECT writes 8 MiB at a time) -- the bench's own figure.
DEVICE is overwritten (mkfs).  Both sides run in this process, so host load hits them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import blkjournal.protocols as P
from blkjournal.crash.image import Overlay
from blkjournal.device import Device
from blkjournal.store import Store

from . import measure

MiB = 1 << 20
SIDES = ("group", "per-op")


class _DropData(Overlay):
    """An in-memory device that keeps metadata and drops data writes (the commit path's CPU alone)."""

    def writev(self, block, bufs, *, fua=False, role=""):
        if "data" not in role:
            super().writev(block, bufs, fua=fua, role=role)


def cpu_per_mib(dev_path: str | None, buf: bytes, n: int = 64) -> float:
    dev = _DropData(unit=4096, nblocks=262144) if dev_path is None else Device(dev_path)
    st = Store.mkfs(dev, "journal", "flush")
    st.create("f")
    for k in range(8):
        st.write("f", k * MiB, buf)
    st.sync()
    c0 = time.thread_time()
    for k in range(n):
        st.write("f", (8 + k) * MiB, buf)
    st.sync()
    c = (time.thread_time() - c0) / n * 1e3
    st.close()
    if dev_path is not None:
        dev.close()
    return c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.groupcommit", description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("cpu", "ratio"))
    ap.add_argument("device", nargs="?")
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args(argv)
    if a.what == "ratio" and not a.device:
        ap.error("ratio needs a DEVICE")
    shipped = P.GROUP_MAX
    if a.what == "cpu":
        buf = os.urandom(MiB)
        run = lambda: (cpu_per_mib(a.device, buf),)  # noqa: E731
        unit = "main-thread CPU ms/MiB"
    else:
        data = measure.aligned_copy(os.urandom(256 * MiB))

        def run():
            m = measure.store_writes_interleaved(a.device, "journal", data, data[:MiB])
            return m["mb_s"] / m["raw_mb_s"], m["mb_s"]
        unit = "x raw (MB/s)"
    got: dict[str, list] = {s: [] for s in SIDES}
    try:
        for r in range(a.rounds):
            for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                P.GROUP_MAX = shipped if side == "group" else 0
                got[side].append(run())
                print(r, side, " ".join(f"{x:.3f}" for x in got[side][-1]), flush=True)
    finally:
        P.GROUP_MAX = shipped
    for side, v in got.items():
        print(f"{side}: median {statistics.median(x[0] for x in v):.3f} {unit}")
    pairs = [g[0] / p[0] for g, p in zip(got["group"], got["per-op"])]
    print(f"paired median group/per-op {statistics.median(pairs):.3f} over {len(pairs)} rounds "
          f"(load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
