"""The device request stream of a seeded workload, to compare two trees (python -m bench.requests).

A change that is meant to leave every write order as it was -- faster code, the same requests --
is held to it here: every request the store issues (first block, length, FUA flag, the bytes) and
every flush, in the order they reach the device, on a seeded mix of creates, appends, large and
partial writes, puts, truncates, removes and syncs on a store with a small journal (so checkpoints
happen, and large writes both fit and do not fit in the log), under journal/flush, journal/fua,
ordered/flush and none/fua.  The requests are taken where the Device issues them (its pwritev and
fdatasync), so writes issued from its worker thread count in the order the device gets them.

    python -m bench.requests OUT.json            # run in the tree to record (cwd = the tree)
    python -m bench.requests --compare A.json B.json

Random content comes from the seed, so two trees that issue the same requests record the same
digests.  Timestamps (mtime) are fixed, so origins pack the same bytes in both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.store import Store

CONFIGS = (("journal", "flush"), ("journal", "fua"), ("ordered", "flush"), ("none", "fua"))
IMAGE = 96 << 20


class RequestLog(Device):
    """A Device that records each request as it is issued (write() itself is not overridden, so
    the store takes the same paths -- zero copy, the worker thread -- as on a plain Device)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.log: list = []

    def _pwrite(self, block, bufs, fua, *rest, **kw):
        self.log.append(["w", block, sum(len(b) for b in bufs) // BLOCK_SIZE, bool(fua),
                         hashlib.sha256(b"".join(bytes(b) for b in bufs)).hexdigest()[:16]])
        return super()._pwrite(block, bufs, fua, *rest, **kw)

    def flush(self) -> None:
        super().flush()
        self.log.append(["f"])


def workload(st: Store, rnd: random.Random, nops: int) -> None:
    sizes = (1, 100, BLOCK_SIZE, 3 * BLOCK_SIZE + 7, 64 * BLOCK_SIZE, 256 * BLOCK_SIZE, 300 * BLOCK_SIZE + 123,
             1 << 20, 2 << 20)
    names = [f"f{i}" for i in range(6)]
    have: dict[str, int] = {}
    for _ in range(nops):
        name = rnd.choice(names)
        r = rnd.random()
        if name not in have:
            st.create(name)
            have[name] = 0
        elif r < 0.35:  # an append
            n = rnd.choice(sizes)
            st.write(name, have[name], rnd.randbytes(n))
            have[name] += n
        elif r < 0.55:  # an overwrite somewhere, partial blocks likely
            n = rnd.choice(sizes)
            off = rnd.randrange(0, have[name] + 1)
            st.write(name, off, rnd.randbytes(n))
            have[name] = max(have[name], off + n)
        elif r < 0.65:
            n = rnd.choice(sizes[4:])
            st.put(name, rnd.randbytes(n))
            have[name] = n
        elif r < 0.72:
            n = rnd.randrange(0, have[name] + 1)
            st.truncate(name, n)
            have[name] = n
        elif r < 0.77:
            st.remove(name)
            del have[name]
        else:
            st.sync()
    st.sync()


def request_log(path: str, protocol: str, barrier: str, seed: int, nops: int, *, journal_blocks: int = 96) -> list:
    """The requests of the seeded workload on a fresh image at `path` (removed after)."""
    import blkjournal.store as store_mod

    saved = store_mod.time.time_ns, store_mod.os.urandom
    # origins hold mtime and the superblock a random uuid: fixed, so two runs pack the same bytes
    store_mod.time.time_ns, store_mod.os.urandom = (lambda: 1_700_000_000_000_000_000), random.Random(seed).randbytes
    try:
        dev = RequestLog(path, create_size=IMAGE)
        try:
            st = Store.mkfs(dev, protocol, barrier, **({"journal_blocks": journal_blocks} if protocol == "journal" else {}))
            workload(st, random.Random(seed), nops)
            st.close()
        finally:
            dev.close()
            os.unlink(path)
    finally:
        store_mod.time.time_ns, store_mod.os.urandom = saved
    return dev.log


def record(seed: int, nops: int) -> dict:
    out = {}
    for protocol, barrier in CONFIGS:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
            out[f"{protocol}/{barrier}"] = request_log(os.path.join(d, "img"), protocol, barrier, seed, nops)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.requests", description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ops", type=int, default=400)
    ap.add_argument("--compare", nargs=2, metavar="JSON")
    a = ap.parse_args(argv)
    if a.compare:
        x, y = (json.load(open(p)) for p in a.compare)
        same = True
        for cfg in CONFIGS:
            k = "/".join(cfg)
            i = next((i for i, (p, q) in enumerate(zip(x[k], y[k])) if p != q), None)
            n = sum(r[0] == "w" for r in x[k])
            if i is None and len(x[k]) == len(y[k]):
                print(f"{k}: identical: {n} writes ({sum(r[2] for r in x[k] if r[0] == 'w')} blocks), "
                      f"{sum(r[0] == 'f' for r in x[k])} flushes")
            else:
                same = False
                print(f"{k}: DIFFER at request {i if i is not None else min(len(x[k]), len(y[k]))}")
        return 0 if same else 1
    if not a.out:
        ap.error("OUT or --compare")
    res = record(a.seed, a.ops)
    with open(a.out, "w") as fh:
        json.dump(res, fh)
    for k, log in res.items():
        print(k, len(log), "requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
