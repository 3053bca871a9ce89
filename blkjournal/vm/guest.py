"""In-guest entry point: `python -m blkjournal.vm.guest SCENARIO [ARGS...]`.

qemu.run_guest / qemu.run_scenario boot the VM and run this module there. A scenario is a function
`(ctx: GuestContext, argv: list[str]) -> int` registered in SCENARIOS as "module:function"; the module
is imported only when its scenario runs, so scenarios may import anything the project has.

To add one (e.g. `record`), write `def record(ctx, argv)` in its own module, parse `argv` with
argparse, use `ctx.disks` (guest device nodes, in the host's order), write outputs under
`ctx.results` (shared with the host at the same path) and return an exit code; then add
`"record": "blkjournal.crash.vmrecord:record"` to SCENARIOS. Host side:
`run_scenario("record", [...], disks=[...], timeout=..., results_dir=...)`.

This module imports nothing heavy: the guest's first python start costs ~1 s under TCG.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import mmap
import os
import sys
import time
import traceback
from pathlib import Path

SCENARIOS: dict[str, str] = {
    "selftest": "blkjournal.vm.guest:selftest",
    "env": "blkjournal.vm.guest:show_env",
    "record": "blkjournal.vm.record:record",
    "flakey": "blkjournal.vm.flakey:flakey",
}


@dataclasses.dataclass
class GuestContext:
    disks: list[str]
    results: Path

    @classmethod
    def from_env(cls) -> "GuestContext":
        disks = os.environ.get("BLKJOURNAL_DISKS", "").split()
        results = Path(os.environ.get("BLKJOURNAL_RESULTS") or "/tmp/blkjournal-results")
        results.mkdir(parents=True, exist_ok=True)
        return cls(disks=disks, results=results)

    def write_json(self, name: str, obj) -> Path:
        """Write obj as JSON into the results share, atomically (the host reads it after power-off)."""
        path = self.results / name
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def disk(self, index: int) -> str:
        if index >= len(self.disks):
            raise SystemExit(f"scenario needs disk #{index + 1}, the VM has {len(self.disks)}")
        return self.disks[index]


def in_vm() -> bool:
    return os.environ.get("BLKJOURNAL_IN_VM") == "1"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SCENARIOS:
        print(f"usage: python -m blkjournal.vm.guest {{{','.join(SCENARIOS)}}} [ARGS...]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if not in_vm():
        print("blkjournal.vm.guest: refusing to run outside the VM (BLKJOURNAL_IN_VM is not 1)",
              file=sys.stderr)
        return 2
    module, func = SCENARIOS[argv[0]].split(":")
    fn = getattr(importlib.import_module(module), func)
    try:
        return int(fn(GuestContext.from_env(), argv[1:]) or 0)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        return 1


# --------------------------------------------------------------------------- scenarios


def show_env(ctx: GuestContext, argv: list[str]) -> int:
    """Print what the guest sees (debugging aid)."""
    print(json.dumps({"disks": ctx.disks, "results": str(ctx.results), "uname": os.uname()._asdict(),
                      "python": sys.executable}, indent=1))
    return 0


BLOCK = 4096


def _pattern(tag: str, n: int) -> bytes:
    head = f"blkjournal selftest {tag} block {n}\n".encode()
    return (head * (BLOCK // len(head) + 1))[:BLOCK]


def _direct(dev: str) -> int:
    return os.open(dev, os.O_RDWR | os.O_DIRECT)


def _write(fd: int, block: int, data: bytes, *, dsync: bool = False) -> None:
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT requires
    buf.write(data)
    n = os.pwritev(fd, [buf], block * BLOCK, os.RWF_DSYNC if dsync else 0)
    if n != BLOCK:
        raise OSError(f"short write {n}")


def _read(fd: int, block: int) -> bytes:
    buf = mmap.mmap(-1, BLOCK)
    n = os.preadv(fd, [buf], block * BLOCK)
    if n != BLOCK:
        raise OSError(f"short read {n}")
    return bytes(buf)


def _read_dev(dev: str, block: int) -> bytes:
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        return _read(fd, block)
    finally:
        os.close(fd)


def selftest(ctx: GuestContext, argv: list[str]) -> int:
    """dm-log-writes over disk 1 logging to disk 2, then dm-flakey dropping writes on disk 1.

    Writes selftest.json into the results share: {"ok": bool, "checks": {name: bool}, ...}.
    """
    import argparse

    from blkjournal.vm import dm

    p = argparse.ArgumentParser(prog="selftest")
    p.add_argument("--mark", default="blkjournal-selftest-mark")
    p.add_argument("--blocks", type=int, default=4)
    args = p.parse_args(argv)
    data_dev, log_dev = ctx.disk(0), ctx.disk(1)
    t0 = time.monotonic()
    checks: dict[str, bool] = {}
    out: dict = {"data_dev": data_dev, "log_dev": log_dev, "mark": args.mark, "checks": checks}
    with open(f"/sys/block/{os.path.basename(data_dev)}/queue/logical_block_size") as f:
        out["sector_size"] = int(f.read())

    # 1. dm-log-writes: writes + fdatasync (FLUSH), a mark, one RWF_DSYNC write (FUA), removal.
    lw = dm.create("blkj_lw", dm.log_writes_table(data_dev, log_dev))
    fd = _direct(lw)
    for n in range(args.blocks):
        _write(fd, n, _pattern("lw", n))
    os.fdatasync(fd)
    dm.message("blkj_lw", f"mark {args.mark}")
    _write(fd, args.blocks, _pattern("lw", args.blocks), dsync=True)
    os.close(fd)
    entries, highest, disabled = dm.log_writes_status("blkj_lw")
    out["log_status"] = {"entries": entries, "highest_sector": highest, "logging_disabled": disabled}
    checks["log_has_entries"] = entries > 0 and not disabled
    dm.remove("blkj_lw")
    checks["lw_data_on_disk"] = all(_read_dev(data_dev, n) == _pattern("lw", n)
                                    for n in range(args.blocks + 1))

    # 2. dm-flakey: a write while up persists; after the table switch to drop_writes, a write
    #    "succeeds" and vanishes, and reads still see the old data.
    victim = args.blocks + 8
    fl = dm.create("blkj_fl", dm.flakey_up_table(data_dev))
    fd = _direct(fl)
    _write(fd, victim, _pattern("flakey-up", victim))
    os.fdatasync(fd)
    checks["flakey_up_write_persists"] = _read_dev(data_dev, victim) == _pattern("flakey-up", victim)
    dm.swap_table("blkj_fl", dm.flakey_drop_writes_table(data_dev))
    out["flakey_status"] = dm.status("blkj_fl")
    _write(fd, victim, _pattern("flakey-dropped", victim))
    os.fdatasync(fd)
    checks["flakey_dropped_write_vanished"] = _read_dev(data_dev, victim) == _pattern("flakey-up", victim)
    checks["flakey_reads_pass"] = _read(fd, victim) == _pattern("flakey-up", victim)
    os.close(fd)
    dm.remove("blkj_fl")

    out["ok"] = all(checks.values())
    out["seconds"] = round(time.monotonic() - t0, 3)
    ctx.write_json("selftest.json", out)
    print(f"selftest: {'ok' if out['ok'] else 'FAILED'} {json.dumps(checks)}")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
