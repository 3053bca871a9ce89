"""The safety checks on real loop devices: refuse mounted, held and signed devices, write nothing.

Every refusal is followed by a hash of the device (or image) bytes: a check that "refuses" after
touching the disk would already have done the damage it exists to prevent.  Mounts are read-only
so the mounted file system itself cannot change the bytes under the hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import subprocess

import pytest

from blkjournal.device import Device
from blkjournal.errors import BlkError, RefusedError
from blkjournal.safety import assess, check_safe, is_blkjournal_store, signatures
import blkjournal.safety as safety

SIZE = 8 << 20


def digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def mkfs_ext4(dev: str) -> None:
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 (e2fsprogs) is not installed")
    run("mkfs.ext4", "-q", "-F", dev)


@contextlib.contextmanager
def mounted(dev: str, where) -> str:
    os.makedirs(where, exist_ok=True)
    run("mount", "-o", "ro", dev, str(where))
    try:
        yield str(where)
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


def write_partition_table(dev: str) -> None:
    """One Linux partition from sector 2048: sfdisk when installed, else the 512-byte MBR by hand."""
    if shutil.which("sfdisk"):
        subprocess.run(["sfdisk", "-q", dev], input="2048,4096,L\n", text=True, capture_output=True)
    else:
        mbr = bytearray(512)
        mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", 2048, 4096)
        mbr[510:512] = b"\x55\xaa"
        with open(dev, "r+b", buffering=0) as f:
            f.write(mbr)
            os.fsync(f.fileno())


def refused(path: str, *, force: bool = False, **kw) -> str:
    """Assert the check refuses without changing a byte; return the message."""
    before = digest(path)
    with pytest.raises(RefusedError) as exc:
        check_safe(path, force=force, **kw)
    assert digest(path) == before
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def backing_file(dev: str) -> str:
    with open(f"/sys/block/{os.path.basename(dev)}/loop/backing_file") as f:
        return f.read().strip()


# --- loop devices -------------------------------------------------------------------------------


def test_blank_loop_device_is_safe(make_loop):
    dev = make_loop(SIZE)
    before = digest(dev)
    verdict = check_safe(dev)
    assert verdict.safe and not verdict.blocking and not verdict.signatures and not verdict.mounts
    assert digest(dev) == before


def test_ext4_refused_without_force_allowed_with_force(make_loop):
    dev = make_loop(SIZE)
    mkfs_ext4(dev)
    assert signatures(dev) == ("file system ext4",)
    msg = refused(dev)
    assert "ext4" in msg and "--force" in msg
    before = digest(dev)
    verdict = check_safe(dev, force=True)
    assert verdict.signatures == ("file system ext4",) and not verdict.safe and verdict.allowed(force=True)
    assert digest(dev) == before


def test_mounted_loop_refused_even_with_force(make_loop, tmp_path):
    dev = make_loop(SIZE)
    mkfs_ext4(dev)
    with mounted(dev, tmp_path / "mnt") as where:
        for force in (False, True):
            msg = refused(dev, force=force)
            assert f"mounted on {where}" in msg and "--force does not override" in msg
        assert assess(dev).mounts == (where,)


def test_partition_table_refused(make_loop):
    dev = make_loop(SIZE)
    write_partition_table(dev)
    msg = refused(dev)
    assert "partition table dos" in msg
    assert check_safe(dev, force=True).allowed(force=True)


def test_image_backing_a_mounted_loop_device_refused(make_loop, tmp_path):
    dev = make_loop(SIZE)
    mkfs_ext4(dev)
    image = backing_file(dev)
    with mounted(dev, tmp_path / "mnt") as where:
        msg = refused(image, force=True)
        assert f"loop device {dev} is mounted on {where}" in msg


def test_image_attached_to_idle_loop_device_is_only_noted(make_loop):
    dev = make_loop(SIZE)
    verdict = check_safe(backing_file(dev))
    assert verdict.safe and verdict.notes == (f"attached to loop device {dev}",)


def test_mounted_partition_refuses_the_whole_disk(tmp_path):
    if os.geteuid() != 0 or shutil.which("partx") is None:
        pytest.skip("needs root and partx")
    img = tmp_path / "parted.img"
    with open(img, "wb") as f:
        f.truncate(SIZE)
    write_partition_table(str(img))
    dev = subprocess.run(["losetup", "-f", "--show", "-P", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    part = dev + "p1"
    try:
        subprocess.run(["partx", "-a", dev], capture_output=True)  # -P alone does not always scan here
        if not os.path.exists(part):
            pytest.skip("kernel did not expose the loop partition")
        mkfs_ext4(part)
        with mounted(part, tmp_path / "mnt") as where:
            msg = refused(dev, force=True)
            assert f"partition {part} is mounted on {where}" in msg
            msg = refused(part, force=True)
            assert f"{part} is mounted on {where}" in msg
            msg = refused(str(img), force=True)
            assert f"partition {part} of {dev} is mounted on {where}" in msg
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def test_held_device_refused_even_with_force(make_loop, monkeypatch):
    dev = make_loop(SIZE)
    name = os.path.basename(dev)
    real = safety._holders
    monkeypatch.setattr(safety, "_holders", lambda n: ["dm-0"] if n == name else real(n))
    msg = refused(dev, force=True)
    assert f"{dev} is held by dm-0" in msg


def test_device_open_exclusively_elsewhere_refused(make_loop):
    dev = make_loop(SIZE)
    with Device(dev) as d:  # Device opens block devices O_EXCL, as any other writer would
        msg = refused(dev, force=True)
        assert "held open exclusively" in msg
        assert d.counters.writes == 0


def test_swap_device_refused_even_with_force(make_loop):
    dev = make_loop(SIZE)
    run("mkswap", dev)
    if subprocess.run(["swapon", dev], capture_output=True).returncode != 0:
        pytest.skip("swapon is not permitted here")
    try:
        msg = refused(dev, force=True)
        assert "in use as swap" in msg
        assert "[swap]" in assess(dev).mounts
    finally:
        subprocess.run(["swapoff", dev], capture_output=True)


def test_own_store_is_not_a_foreign_signature(make_loop):
    dev = make_loop(SIZE)
    mkfs_ext4(dev)  # pretend a leftover signature survived formatting
    verdict = check_safe(dev, is_own_store=lambda p: p == dev)
    assert verdict.own_store and verdict.safe
    assert verdict.notes == ("ignored file system ext4: it is a blkjournal store",)


# --- image files --------------------------------------------------------------------------------


def test_blank_image_is_safe_and_new_image_is_safe(image, tmp_path):
    with open(image, "wb") as f:
        f.truncate(SIZE)
    assert check_safe(image).safe
    new = check_safe(str(tmp_path / "new.img"))
    assert new.safe and "does not exist yet" in new.notes[0]


def test_ext4_image_refused_without_force(image):
    with open(image, "wb") as f:
        f.truncate(SIZE)
    mkfs_ext4(image)
    assert "file system ext4" in refused(image)
    assert check_safe(image, force=True).signatures == ("file system ext4",)


def test_own_store_helper_swallows_errors(image):
    with open(image, "wb") as f:
        f.truncate(SIZE)

    def broken(path):
        raise OSError("unreadable")

    assert is_blkjournal_store(image, lambda p: True)
    assert not is_blkjournal_store(image, broken)
    assert not check_safe(image, is_own_store=broken).own_store


def test_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(BlkError, match="no such device"):
        check_safe("/dev/blkjournal-does-not-exist")
    with pytest.raises(BlkError, match="not a block device or regular file"):
        check_safe(str(tmp_path))
