"""Boot the qemu guest once: dm-log-writes and dm-flakey through the real kernel targets.

One boot (about 8 s under TCG; the first run also builds the guest, about 10 s, cached afterwards)
runs the guest's `selftest` scenario on a 4 KiB-sector data disk with a log disk, then the test
reads the log disk here on the host and checks the dm-log-writes v1 format (REFERENCE.md §3).
"""

from __future__ import annotations

import json
import struct

import pytest
from vmutil import need_vm as _need_vm

pytestmark = pytest.mark.vm

LOG_MAGIC = 0x6A736677736872
SUPER = struct.Struct("<QQQI")    # magic, version, nr_entries, sectorsize
ENTRY = struct.Struct("<QQQQ")    # sector, nr_sectors, flags, data_len
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8


def read_log_minimal(path: str) -> tuple[int, int, list[tuple[int, int, int, bytes]]]:
    """(version, sectorsize, [(sector, nr_sectors, flags, mark text)]): just enough to check the VM."""
    with open(path, "rb") as f:
        data = f.read()
    magic, version, nr_entries, sectorsize = SUPER.unpack_from(data, 0)
    assert magic == LOG_MAGIC, f"bad dm-log-writes magic {magic:#x}"
    entries = []
    pos = sectorsize
    for _ in range(nr_entries):
        sector, nr_sectors, flags, data_len = ENTRY.unpack_from(data, pos)
        text = data[pos + ENTRY.size:pos + ENTRY.size + data_len] if flags & MARK else b""
        entries.append((sector, nr_sectors, flags, text))
        pos += sectorsize
        if not flags & (DISCARD | MARK):
            pos += nr_sectors * sectorsize
    return version, sectorsize, entries


def test_selftest_scenario_logs_and_drops(tmp_path):
    _need_vm()
    from blkjournal.vm.qemu import Disk, run_scenario

    data, log, results = tmp_path / "data.img", tmp_path / "log.img", tmp_path / "results"
    for img in (data, log):
        with open(img, "wb") as f:
            f.truncate(64 << 20)
    mark = "vm-boot-test-mark"
    result = run_scenario("selftest", ["--mark", mark, "--blocks", "4"],
                          disks=[Disk(str(data)), Disk(str(log))], sector_size=4096,
                          timeout=120, results_dir=str(results))
    assert result.exit_code == 0
    assert result.devices == ["/dev/vda", "/dev/vdb"]
    out = json.loads((results / "selftest.json").read_text())
    assert out["ok"], out
    assert out["sector_size"] == 4096
    assert all(out["checks"].values()), out["checks"]
    assert out["log_status"]["entries"] > 0
    assert (results / "console.log").exists()

    version, sectorsize, entries = read_log_minimal(str(log))
    assert version == 1
    assert sectorsize == 4096
    assert len(entries) > 0
    flags = [e[2] for e in entries]
    assert any(f & FLUSH for f in flags), entries
    assert any(f & FUA for f in flags), entries  # the RWF_DSYNC write
    marks = [e[3].decode() for e in entries if e[2] & MARK]
    assert mark in marks
    assert marks[-1] == "dm-log-writes-end"  # logged by `dmsetup remove`
    writes = [e for e in entries if not e[2] & (MARK | DISCARD) and e[1] > 0]
    # 5 blocks of 4 KiB at blocks 0..4, in 4096-byte sector units
    assert sorted({e[0] for e in writes} & set(range(5))) == [0, 1, 2, 3, 4]

    # The project's full parser must read the kernel's real bytes the same way (its strict checks
    # included): the VM is where the format's ground truth comes from.
    try:
        from blkjournal.crash.logwrites import read_log
    except ImportError:
        return
    parsed = read_log(str(log))
    assert parsed.sectorsize == sectorsize
    assert [(e.sector, e.nr_sectors, e.flags, (e.mark or "").encode()) for e in parsed.entries] == entries
