"""What a device promises about durability, read from sysfs before we trust it with a store.

The crash model cares about three facts the kernel already knows: whether the device has a
volatile write cache (`queue/write_cache`), whether it honours FUA natively (`queue/fua`; if not,
the block layer turns each FUA write into write + flush, which costs two flushes here), and the
logical block size (every O_DIRECT I/O must be a multiple of it).  We read them through pyudev
because it enumerates and reads sysfs without a udev daemon; udev *properties* (ID_MODEL, ...)
are empty on hosts without one, so nothing here depends on them.

Nothing in this module opens the device: probing must work on a disk we are about to refuse.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

import pyudev

from .errors import BlkError

SECTOR = 512  # sysfs `size` always counts 512-byte sectors, whatever the logical block size

# File systems on which fallocate(PUNCH_HOLE) works, so Device.discard on an image reads back zeros.
_PUNCH_HOLE_FS = frozenset({"ext4", "xfs", "btrfs", "f2fs", "tmpfs", "ocfs2", "gfs2", "zfs", "bcachefs"})


@dataclass(frozen=True)
class DeviceProperties:
    """Durability-relevant facts about a block device or an image file.

    For an image file, write_cache / fua / rotational / model / firmware describe `host_device`,
    the block device under the file system that holds the image (None when it cannot be found,
    e.g. on tmpfs or overlayfs): that cache is the one a crash can lose.
    """

    path: str
    name: str
    is_block: bool
    size: int
    logical_block_size: int
    physical_block_size: int
    write_cache: str | None  # "write back", "write through" or None (unknown)
    fua: bool | None
    rotational: bool | None
    model: str | None
    firmware: str | None
    discard: bool | None
    read_only: bool = False
    parent: str | None = None  # whole-disk name when this is a partition
    backing_file: str | None = None  # loop devices: the file behind them
    host_device: str | None = None  # image files: the block device under their file system
    host_fs: str | None = None  # image files: that file system's type

    @property
    def fua_mode(self) -> str:
        """How a FUA write reaches the medium: native, emulated with flushes, or moot."""
        if self.write_cache == "write through":
            return "not needed (no volatile write cache)"
        if self.write_cache is None or self.fua is None:
            return "unknown"
        return "native" if self.fua else "emulated (2 flushes per FUA write)"

    def preflight(self) -> str:
        """One line for the user before we write: what durability this device actually offers."""
        def yn(v: bool | None) -> str:
            return "unknown" if v is None else ("yes" if v else "no")

        parts = []
        if not self.is_block:
            where = self.host_device or "unknown device"
            parts.append(f"image file on {where}" + (f" ({self.host_fs})" if self.host_fs else ""))
        parts += [
            f"write cache: {self.write_cache or 'unknown'}",
            f"FUA: {self.fua_mode}",
            f"rotational: {yn(self.rotational)}",
            f"model: {self.model or 'unknown'}",
            f"firmware: {self.firmware or 'unknown'}",
            f"sectors: {self.logical_block_size}/{self.physical_block_size}",
        ]
        if self.backing_file:
            parts.append(f"loop device backed by {self.backing_file}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo."""

    devno: int  # st_dev of files on it (anonymous for btrfs, tmpfs, overlay ...)
    mountpoint: str
    fstype: str
    source: str


def read_mounts() -> list[Mount]:
    """Mount table of our mount namespace, with device numbers (which /proc/mounts lacks).

    The number survives `/dev/root` and `/dev/disk/by-*` aliases that defeat name comparison.
    """
    mounts = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return mounts
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        major, _, minor = fields[2].partition(":")
        try:
            devno = os.makedev(int(major), int(minor))
        except ValueError:
            continue
        mounts.append(Mount(devno, unescape(fields[4]), unescape(tail[0]), unescape(tail[1])))
    return mounts


def unescape(s: str) -> str:
    r"""Undo the octal escapes (\040 for space ...) the kernel uses in mount and swap tables."""
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _attr(dev: pyudev.Device | None, key: str) -> str | None:
    if dev is None:
        return None
    value = dev.attributes.get(key)
    if value is None:
        return None
    text = value.decode(errors="replace").strip()
    return text or None


def _int_attr(dev: pyudev.Device | None, key: str) -> int | None:
    text = _attr(dev, key)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _bool_attr(dev: pyudev.Device | None, key: str) -> bool | None:
    n = _int_attr(dev, key)
    return None if n is None else n != 0


def _whole_disk(dev: pyudev.Device) -> pyudev.Device:
    """The disk a partition belongs to (queue/ and device/ live there), or the device itself."""
    if dev.device_type == "partition":
        parent = dev.find_parent("block", "disk")
        if parent is not None:
            return parent
    return dev


def _first(dev: pyudev.Device, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = _attr(dev, key)
        if value:
            return value
    return None


def _from_udev(dev: pyudev.Device, path: str | None = None) -> DeviceProperties:
    disk = _whole_disk(dev)
    lbs = _int_attr(disk, "queue/logical_block_size") or SECTOR
    discard_max = _int_attr(disk, "queue/discard_max_bytes")
    return DeviceProperties(
        path=path or dev.device_node or f"/dev/{dev.sys_name}",
        name=dev.sys_name,
        is_block=True,
        size=(_int_attr(dev, "size") or 0) * SECTOR,
        logical_block_size=lbs,
        physical_block_size=_int_attr(disk, "queue/physical_block_size") or lbs,
        write_cache=_attr(disk, "queue/write_cache"),
        fua=_bool_attr(disk, "queue/fua"),
        rotational=_bool_attr(disk, "queue/rotational"),
        # SCSI/ATA and NVMe put model in device/model; MMC/SD uses device/name.
        model=_first(disk, ("device/model", "device/name")),
        firmware=_first(disk, ("device/rev", "device/firmware_rev", "device/fwrev")),
        discard=None if discard_max is None else discard_max > 0,
        read_only=bool(_bool_attr(dev, "ro")),
        parent=disk.sys_name if disk is not dev else None,
        backing_file=_attr(disk, "loop/backing_file"),
    )


def _context() -> pyudev.Context:
    try:
        return pyudev.Context()
    except Exception as e:  # libudev missing: a one-line message, not a traceback
        raise BlkError(f"cannot read device information (libudev): {e}") from None


def block_device(devno: int, ctx: pyudev.Context | None = None) -> pyudev.Device | None:
    """The sysfs device for a device number, or None (anonymous devices, vanished devices)."""
    try:
        return pyudev.Devices.from_device_number(ctx or _context(), "block", devno)
    except (pyudev.DeviceNotFoundError, ValueError, OSError):
        return None


def _mount_of(real: str, devno: int, mounts: list[Mount]) -> Mount | None:
    """The mount holding `real`: the longest mount point above it, preferring one with its st_dev."""
    def above(m: Mount) -> bool:
        mp = m.mountpoint.rstrip("/") + "/"
        return real.startswith(mp) or m.mountpoint == "/"

    for candidates in ([m for m in mounts if m.devno == devno], mounts):
        best = max((m for m in candidates if above(m)), key=lambda m: len(m.mountpoint), default=None)
        if best is not None:
            return best
    return None


def _host_device(st_dev: int, real: str, ctx: pyudev.Context) -> tuple[pyudev.Device | None, str | None]:
    """The block device under the file system holding a file, and that file system's type."""
    mount = _mount_of(real, st_dev, read_mounts())
    fstype = mount.fstype if mount else None
    dev = block_device(st_dev, ctx)
    if dev is None and mount is not None and mount.source.startswith("/dev/"):
        # btrfs and friends report an anonymous st_dev; the mount source still names the disk.
        try:
            src = os.stat(mount.source)
            if stat.S_ISBLK(src.st_mode):
                dev = block_device(src.st_rdev, ctx)
        except OSError:
            pass
    return dev, fstype


def _from_file(path: str, st: os.stat_result, logical_block_size: int | None) -> DeviceProperties:
    ctx = _context()
    real = os.path.realpath(path)
    host, fstype = _host_device(st.st_dev, real, ctx)
    hp = _from_udev(host) if host is not None else None
    lbs = logical_block_size or SECTOR
    discard = True if fstype in _PUNCH_HOLE_FS else None
    return DeviceProperties(
        path=path,
        name=os.path.basename(real),
        is_block=False,
        size=st.st_size,
        logical_block_size=lbs,
        physical_block_size=max(lbs, hp.physical_block_size if hp else lbs),
        write_cache=hp.write_cache if hp else None,
        fua=hp.fua if hp else None,
        rotational=hp.rotational if hp else None,
        model=hp.model if hp else None,
        firmware=hp.firmware if hp else None,
        discard=discard,
        read_only=not os.access(path, os.W_OK),
        host_device=hp.path if hp else None,
        host_fs=fstype,
    )


def probe(path: str, *, logical_block_size: int | None = None) -> DeviceProperties:
    """Properties of a block device or image file, read from sysfs without opening it.

    `logical_block_size` applies to image files only (default 512): a file has no sector size of
    its own, so the caller says which device the image stands in for.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BlkError(f"{path}: no such file or device") from None
    except OSError as e:
        raise BlkError(f"{path}: {e.strerror}") from None
    if stat.S_ISBLK(st.st_mode):
        dev = block_device(st.st_rdev, _context())
        if dev is None:
            raise BlkError(f"{path}: block device not found in sysfs")
        return _from_udev(dev, path)
    if stat.S_ISREG(st.st_mode):
        return _from_file(path, st, logical_block_size)
    raise BlkError(f"{path}: not a block device or regular file")


def list_block_devices(*, include_empty: bool = False, include_partitions: bool = True) -> list[DeviceProperties]:
    """Every disk (and partition) the kernel knows, skipping empty ones such as unattached loops."""
    out = []
    for dev in _context().list_devices(subsystem="block"):
        if dev.device_type not in ("disk", "partition"):
            continue
        if dev.device_type == "partition" and not include_partitions:
            continue
        props = _from_udev(dev)
        if props.size == 0 and not include_empty:
            continue
        out.append(props)
    return sorted(out, key=lambda p: (_natural(p.parent or p.name), p.parent is not None, _natural(p.name)))


def _natural(name: str) -> tuple:
    """loop2 before loop10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))
