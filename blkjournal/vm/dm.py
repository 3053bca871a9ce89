"""device-mapper from inside the guest: thin wrappers over `dmsetup` (REFERENCE.md §3, §4).

The host kernel has no device-mapper; these run in the VM, where /init exported DM_DISABLE_UDEV=1
so that dmsetup creates /dev/mapper/NAME itself. Tables count 512-byte sectors whatever the
device's logical block size.
"""

from __future__ import annotations

import os
import subprocess

from blkjournal.errors import BlkError


def dmsetup(*args: str) -> str:
    env = {**os.environ, "DM_DISABLE_UDEV": "1"}
    proc = subprocess.run(["dmsetup", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BlkError(f"dmsetup {' '.join(args)} failed (exit {proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def sectors(dev: str) -> int:
    """Size of a block device in 512-byte sectors (the unit of device-mapper tables)."""
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END) // 512
    finally:
        os.close(fd)


def create(name: str, table: str) -> str:
    """Create NAME with one table line; return its device node /dev/mapper/NAME."""
    dmsetup("create", name, "--table", table)
    node = f"/dev/mapper/{name}"
    if not os.path.exists(node):
        raise BlkError(f"dmsetup created {name} but {node} is missing (DM_DISABLE_UDEV unset?)")
    return node


def remove(name: str) -> None:
    dmsetup("remove", name)


def message(name: str, text: str, sector: int = 0) -> None:
    dmsetup("message", name, str(sector), text)


def status(name: str) -> str:
    return dmsetup("status", name).strip()


def swap_table(name: str, table: str) -> None:
    """Replace NAME's table without flushing or freezing anything first: a power cut's view.

    `suspend --nolockfs` does not freeze a file system; in-flight I/O completes, then the new
    table takes all later I/O.
    """
    dmsetup("suspend", "--nolockfs", name)
    try:
        dmsetup("load", name, "--table", table)
    finally:
        dmsetup("resume", name)


# ---------------------------------------------------------------- tables

def log_writes_table(data_dev: str, log_dev: str) -> str:
    return f"0 {sectors(data_dev)} log-writes {data_dev} {log_dev}"


def flakey_up_table(dev: str) -> str:
    """Always up: every I/O passes."""
    return f"0 {sectors(dev)} flakey {dev} 0 1 0"


def flakey_drop_writes_table(dev: str) -> str:
    """Always down, dropping writes: they report success and vanish; reads still pass."""
    return f"0 {sectors(dev)} flakey {dev} 0 0 1 1 drop_writes"


def log_writes_status(name: str) -> tuple[int, int, bool]:
    """(entries logged, highest sector, logging disabled because the log device filled up)."""
    fields = status(name).split()
    # "<start> <len> log-writes <#entries> <highest sector> [logging_disabled]"
    return int(fields[3]), int(fields[4]), "logging_disabled" in fields[5:]
