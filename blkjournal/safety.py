"""Refuse to write onto anything that might hold someone's data.

blkjournal writes raw blocks from block 0, so one wrong path destroys a file system.  Before any
write we look, read-only, for two kinds of trouble:

* in use -- the device, one of its partitions, its whole disk, or (for an image file) a loop device
  backed by that file is mounted, used as swap, held by another block device (dm, md, bcache:
  /sys/block/X/holders), or opened exclusively by some other program.  Writing would corrupt live
  data under a running kernel, so `force` never overrides this;
* a signature -- blkid finds a file system or partition table.  The data may be stale, so the user
  may say `--force`; a store blkjournal itself wrote (`is_own_store`) is not a foreign signature.

Nothing here opens anything for writing: the only opens are blkid's and one read-only O_EXCL open
of a block device, which the kernel refuses (EBUSY) while anybody else holds it exclusively
(mounts, swap, dm/md, `Device`).  So call `check_safe` *before* opening the target with `Device`.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from dataclasses import dataclass, field
from typing import Callable

import psutil

from .errors import BlkError, RefusedError
from .properties import _context, block_device, read_mounts, unescape

IsOwnStore = Callable[[str], bool]


@dataclass(frozen=True)
class Verdict:
    """What the checks found.  `blocking` reasons are final; `signatures` yield to force."""

    path: str
    blocking: tuple[str, ...] = ()
    signatures: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()  # where the device (or a partition, or its loop device) is mounted
    own_store: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def safe(self) -> bool:
        return not self.blocking and not self.signatures

    def allowed(self, force: bool = False) -> bool:
        return not self.blocking and (force or not self.signatures)

    def reason(self, force: bool = False) -> str:
        """One line: why it is refused, or '' when it is not."""
        if self.blocking:
            return "; ".join(self.blocking) + " (--force does not override this)"
        if self.signatures and not force:
            found = (s if s.startswith("cannot") else f"it carries a {s}" for s in self.signatures)
            return "; ".join(found) + " (use --force to overwrite it)"
        return ""


def check_safe(path: str, *, force: bool = False, is_own_store: IsOwnStore | None = None) -> Verdict:
    """Raise RefusedError unless `path` may be written; return the verdict otherwise.

    `force` overrides only the signature check, never mounted / in-use.
    """
    verdict = assess(path, is_own_store=is_own_store)
    if not verdict.allowed(force):
        raise RefusedError(f"refusing {path}: {verdict.reason(force)}")
    return verdict


def assess(path: str, *, is_own_store: IsOwnStore | None = None) -> Verdict:
    """Run every check and report all findings without raising for a refusal (for listings).

    Raises BlkError only when `path` is neither a block device nor a regular file.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.realpath(path).startswith("/dev/"):
            raise BlkError(f"{path}: no such device") from None
        return Verdict(path, notes=("does not exist yet: a new image file",))
    except OSError as e:
        raise BlkError(f"{path}: {e.strerror}") from None
    if stat.S_ISBLK(st.st_mode):
        targets = _block_targets(path, st.st_rdev)
        image = None
    elif stat.S_ISREG(st.st_mode):
        targets = _loops_backed_by(st)
        image = st
    else:
        raise BlkError(f"{path}: not a block device or regular file")

    blocking, mounts = _in_use(targets, image)
    notes = tuple(f"attached to {t.label}" for t in targets if t.via_loop and not t.partition)
    if blocking:
        # Do not read a device someone is using just to describe it; the refusal is already final.
        return Verdict(path, tuple(blocking), (), tuple(mounts), False, notes)

    found = signatures(path)
    if stat.S_ISBLK(st.st_mode):
        parts = [t.label for t in targets if t.partition and not t.via_loop]
        if parts and not any(s.startswith("partition table") for s in found):
            found += (f"partition table (the kernel lists {', '.join(parts)})",)
    own = is_blkjournal_store(path, is_own_store)
    if own and found:
        notes += tuple(f"ignored {s}: it is a blkjournal store" for s in found)
        found = ()
    return Verdict(path, (), found, tuple(mounts), own, notes)


def is_blkjournal_store(path: str, is_own_store: IsOwnStore | None = None) -> bool:
    """Whether `path` already holds a blkjournal store (so its superblock is no foreign signature).

    `is_own_store` is the format's magic check; by default `blkjournal.format.is_own_store` if the
    format module defines one.  Any error while reading counts as "no": a store we cannot read is
    not a reason to skip the signature check.
    """
    if is_own_store is None:
        try:
            from . import format as _format  # defined by the on-disk format; may not exist yet

            is_own_store = getattr(_format, "is_own_store", None)
        except Exception:
            is_own_store = None
    if is_own_store is None:
        return False
    try:
        return bool(is_own_store(path))
    except Exception:
        return False


def signatures(path: str) -> tuple[str, ...]:
    """File-system / partition-table signatures blkid finds, e.g. ('file system ext4',).

    `blkid -p` probes the bytes themselves (no udev cache) and never writes.  It exits 2 both for
    "nothing found" and for "could not open", so stderr tells the two apart; a probe that cannot
    be completed is reported as a finding, since then we cannot vouch the device is blank.
    """
    try:
        r = subprocess.run(["blkid", "-p", "-o", "export", path], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return ("cannot probe signatures: blkid (util-linux) is not installed",)
    except subprocess.TimeoutExpired:
        return ("cannot probe signatures: blkid timed out",)
    if r.returncode == 2 and not r.stderr.strip():
        return ()
    if r.returncode == 8:
        return ("mix of conflicting signatures (blkid: ambivalent result)",)
    if r.returncode != 0:
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
        return (f"cannot probe signatures: {msg}",)
    tags = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    found = []
    if "PTTYPE" in tags:
        found.append(f"partition table {tags['PTTYPE']}")
    if "TYPE" in tags:
        kind = {"filesystem": "file system", "raid": "RAID member", "crypto": "encrypted volume",
                "other": "signature"}.get(tags.get("USAGE", ""), "signature")
        label = f" labelled {tags['LABEL']!r}" if tags.get("LABEL") else ""
        found.append(f"{kind} {tags['TYPE']}{label}")
    if not found and tags.keys() - {"DEVNAME"}:
        found.append("signature " + ", ".join(f"{k}={v}" for k, v in tags.items() if k != "DEVNAME"))
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# in-use checks


@dataclass(frozen=True)
class _Target:
    """A block device whose use would make writing `path` unsafe."""

    devno: int
    name: str  # kernel name, e.g. loop3p1
    node: str  # device file
    label: str  # how to name it to the user
    partition: bool = False  # a partition of the device (not the device itself)
    whole_disk: bool = False  # the disk the given partition lies on
    via_loop: bool = False  # a loop device backed by the image file


def _block_targets(path: str, devno: int) -> list[_Target]:
    """The device, its partitions and, for a partition, its whole disk."""
    dev = block_device(devno, _context())
    if dev is None:
        return [_Target(devno, os.path.basename(path), path, path)]
    out = [_Target(devno, dev.sys_name, path, path)]
    out += [_Target(c.device_number, c.sys_name, _node(c), f"partition {_node(c)}", partition=True)
            for c in _partitions(dev)]
    if dev.device_type == "partition":
        disk = dev.find_parent("block", "disk")
        if disk is not None:
            out.append(_Target(disk.device_number, disk.sys_name, _node(disk), f"whole disk {_node(disk)}",
                               whole_disk=True))
    return out


def _node(dev) -> str:
    return dev.device_node or f"/dev/{dev.sys_name}"


def _partitions(dev) -> list:
    return [c for c in dev.children if c.subsystem == "block" and c.device_type == "partition"]


def _loops_backed_by(image: os.stat_result) -> list[_Target]:
    """Loop devices (and their partitions) whose backing file is this very inode."""
    out = []
    for dev in _context().list_devices(subsystem="block", DEVTYPE="disk"):
        backing = dev.attributes.get("loop/backing_file")
        if not backing:
            continue
        name = backing.decode(errors="replace").strip()
        if name.endswith(" (deleted)"):
            continue  # its inode is gone, so it is not ours
        try:
            bst = os.stat(name)
        except OSError:
            continue
        if (bst.st_dev, bst.st_ino) != (image.st_dev, image.st_ino):
            continue
        node = _node(dev)
        out.append(_Target(dev.device_number, dev.sys_name, node, f"loop device {node}", via_loop=True))
        out += [_Target(c.device_number, c.sys_name, _node(c), f"partition {_node(c)} of {node}",
                        partition=True, via_loop=True) for c in _partitions(dev)]
    return out


def _mount_table() -> dict[int, set[str]]:
    """devno -> mount points, from mountinfo (device numbers) plus psutil / /proc/mounts (names)."""
    table: dict[int, set[str]] = {}
    for m in read_mounts():
        table.setdefault(m.devno, set()).add(m.mountpoint)
    named: list[tuple[str, str]] = []
    try:
        named += [(p.device, p.mountpoint) for p in psutil.disk_partitions(all=True)]
    except Exception:
        pass
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2:
                    named.append((unescape(fields[0]), unescape(fields[1])))
    except OSError:
        pass
    for source, mountpoint in named:
        rdev = _rdev(source)
        if rdev is not None:
            table.setdefault(rdev, set()).add(mountpoint)
    return table


def _swaps() -> list[str]:
    try:
        with open("/proc/swaps") as f:
            return [unescape(line.split()[0]) for line in f.read().splitlines()[1:] if line.strip()]
    except OSError:
        return []


def _rdev(path: str) -> int | None:
    if not path.startswith("/"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISBLK(st.st_mode) else None


def _holders(name: str) -> list[str]:
    try:
        return sorted(os.listdir(f"/sys/class/block/{name}/holders"))
    except OSError:
        return []


def _exclusive_probe(path: str) -> str | None:
    """Open read-only with O_EXCL: EBUSY means someone holds it (mount, swap, dm, another writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return "is held open exclusively by another program"
        return f"cannot be opened: {e.strerror}"
    os.close(fd)
    return None


def _in_use(targets: list[_Target], image: os.stat_result | None) -> tuple[list[str], list[str]]:
    reasons: list[str] = []
    mounts: list[str] = []
    table = _mount_table()
    swaps = _swaps()
    swap_rdevs = {r for r in map(_rdev, swaps) if r is not None}
    for t in targets:
        where = sorted(table.get(t.devno, ()))
        if where:
            mounts += where
            reasons.append(f"{t.label} is mounted on {', '.join(where)}")
        if t.devno in swap_rdevs:
            mounts.append("[swap]")
            reasons.append(f"{t.label} is in use as swap")
        held = _holders(t.name)
        if held:
            reasons.append(f"{t.label} is held by {', '.join(held)}")
    if image is not None:
        for s in swaps:
            try:
                sst = os.stat(s)
            except OSError:
                continue
            if (sst.st_dev, sst.st_ino) == (image.st_dev, image.st_ino):
                mounts.append("[swap]")
                reasons.append("it is in use as a swap file")
    if not reasons:
        # Catches what the tables miss: other mount namespaces, md/dm without holders, a writer.
        # Only the device itself (or the image's loop devices): the kernel already refuses it while
        # its whole disk or one of its partitions is claimed, and probing the whole disk of a
        # partition would fail because of unrelated sibling partitions.
        for t in targets:
            if t.partition or t.whole_disk:
                continue
            why = _exclusive_probe(t.node)
            if why:
                reasons.append(f"{t.label} {why}")
    return reasons, mounts
