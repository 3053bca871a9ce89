"""Shared fixtures: image files on a disk-backed directory and real loop devices.

Images live under pytest's tmp_path, which is on /tmp (ext4 here): tmpfs refuses O_DIRECT.
Loop devices are real kernel loop devices with direct I/O on, 512 B or 4 KiB logical sectors.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# A delta hint that leaves out a changed chunk raises instead of quietly falling back to the
# whole-block delta (journal.delta_in): every commit the suite makes checks the hints it takes.
os.environ.setdefault("BLKJOURNAL_STRICT_HINTS", "1")


def _need_root_loop() -> None:
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    if shutil.which("losetup") is None:
        pytest.skip("losetup (util-linux) is not installed")


@pytest.fixture
def image(tmp_path):
    """Path of a not-yet-existing image file on a disk-backed directory."""
    return str(tmp_path / "store.img")


@pytest.fixture
def make_loop(tmp_path):
    """Factory: make_loop(size_bytes, sector_size=512) -> /dev/loopN backed by a fresh file."""
    _need_root_loop()
    made: list[str] = []

    def make(size: int = 64 << 20, sector_size: int = 512) -> str:
        backing = tmp_path / f"loop{len(made)}.img"
        with open(backing, "wb") as f:
            f.truncate(size)
        out = subprocess.run(
            ["losetup", "-f", "--show", "--direct-io=on", f"--sector-size={sector_size}", str(backing)],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        made.append(out)
        return out

    yield make
    for dev in made:
        subprocess.run(["umount", "-l", dev], capture_output=True)
        subprocess.run(["losetup", "-d", dev], capture_output=True)
