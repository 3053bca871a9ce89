"""`make demo`: the main job on an embedded default -- an image file, no VM, no real disk.

Formats an image with the journal protocol, stores files, syncs, runs fsck, and then runs the
crash explorer on the default workload and prints its report.
"""

from __future__ import annotations

import os
import sys
import tempfile

from .device import Device
from .fsck import fsck
from .store import Store


def store_demo(workdir: str) -> None:
    img = os.path.join(workdir, "demo.img")
    with Device(img, create_size=64 << 20) as dev:
        st = Store.mkfs(dev, "journal", "flush")
        dev.counters.reset()
        st.put("hello.txt", b"hello, block device\n")
        st.put("random.bin", os.urandom(300_000))
        st.write("random.bin", 4096 * 10 + 7, b"patched in place (copy-on-write)")
        st.truncate("hello.txt", 5)
        st.sync()
        c = dev.counters
        print(f"store: {img}: {len(st.files)} files, {c.writes} writes, {c.bytes_written} bytes, "
              f"{c.flushes} flush(es) for 4 ops + sync")
        for row in st.listing():
            print(f"  {row['size']:>8}  {row['name']}")
    with Device(img, readonly=True) as dev:
        r = fsck(dev)
        print(f"fsck: {r.verdict()} ({r.files} files)")
        if not r.clean:
            sys.exit(1)


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BLKJOURNAL_TMP", "/var/tmp")) as d:
        store_demo(d)
        try:
            from .crash.explore import demo as crash_demo
        except ImportError:
            return
        sys.exit(crash_demo(d))


if __name__ == "__main__":
    main()
