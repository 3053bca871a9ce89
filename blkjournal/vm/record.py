"""`blkjournal vm record`: a workload recorded by the kernel's own dm-log-writes target.

Host (`record_in_vm`): a sparse data image and a sparse log image; each run gets its own zeroed
slice of both (several runs share one boot).  Guest (`record` scenario): per run, dm-linear over
the two slices, dm-log-writes over those, `Store.mkfs` on it through `MarkedDevice` (O_DIRECT),
the mark "mkfs", the workload with the mark "op K: ..." after each op, `dmsetup remove` (the
target then logs what it still holds and the mark `dm-log-writes-end`).  Back on the host the log
slice IS the log file: it is cut to its last entry and written to `--out`, with the workload file
beside it, and `explore_log` (what `blkjournal check-log` runs) judges every crash state.

Marks go through the DM_TARGET_MSG ioctl (`DmControl`), not a `dmsetup` process per mark:
measured under TCG, `dmsetup message` costs ~185 ms a mark, the ioctl ~0.6 ms.  The kernel splits
a message into words, so the mark text is sent with its blanks backslash-escaped (dm_split_args).

The sidecar.  A log without a sidecar cannot be explored as it is: the crash-state space needs
the device size (the sidecar header's `nblocks`; the log alone only bounds it by the highest sector
written, and the store's superblock then claims more blocks than the "device" has), and a log
read in log order under-approximates the states (DESIGN §4).  The guest knows both: it writes
the run's submissions in order (`MarkedDevice.events`, each with its role and a CRC of its data).
The host replays those through the recorder's own model of the target (`LogWritesTarget`) to
predict the kernel's log entry by entry, compares the prediction with the kernel's real log (kind,
sector, length, payload CRC, mark text: any difference is an error naming the entry), and only
then writes `<log>.roles` with each submission's entry index.  So the kernel's log is explored with
the submission order the guest really used, and every run is also a check of the recorder's
emulation of dm-log-writes against the real target.

What the kernel adds: an `O_DIRECT` write with `RWF_DSYNC` is submitted with REQ_FUA and then,
because the file is O_DSYNC for that write, `generic_write_sync` -> `blkdev_fsync` issues an
empty PREFLUSH: the log shows a FUA entry followed by a FLUSH entry (REFERENCE §3).  The
prediction models that flush and the sidecar lists it (role "kernel: flush after an RWF_DSYNC
write"), so the explorer counts the flushes the disk really received.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import zlib

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.errors import BlkError, CorruptError
from blkjournal.vm.recipe import current as current_recipe

# the log device per run (sparse on the host) is at least vm/guest.toml's disks.log_min
DEFAULT_SIZE = 4 << 20  # data device per run: the host crashtest's default image size
KERNEL_FLUSH_ROLE = "kernel: flush after an RWF_DSYNC write"
END_ROLE = "dmsetup remove"
SECTOR = 512  # device-mapper tables count 512-byte sectors whatever the logical block size


# ============================================================== device-mapper ioctls (guest)
class DmControl:
    """The device-mapper ioctls `dmsetup message/suspend/load/resume` make, without a process each.

    struct dm_ioctl (include/uapi/linux/dm-ioctl.h) is 312 bytes; the payload follows it.  Only
    what the scenarios need: a target message, suspend (with --nolockfs), table load, resume.
    """

    HEADER = struct.Struct("=3IIIIiIIIQ128s129s7s")  # 312 bytes
    SPEC = struct.Struct("=QQiI16s")  # struct dm_target_spec: 40 bytes, then the params string
    VERSION = (4, 0, 0)
    DEV_SUSPEND, TABLE_LOAD, TARGET_MSG = 6, 9, 14
    SUSPEND_FLAG, SKIP_LOCKFS_FLAG = 1 << 1, 1 << 10

    def __init__(self, path: str = "/dev/mapper/control") -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _ioctl(self, cmd: int, name: str, payload: bytes = b"", *, flags: int = 0, targets: int = 0) -> None:
        size = self.HEADER.size + len(payload)
        size += -size % 8
        head = self.HEADER.pack(*self.VERSION, size, self.HEADER.size, targets, 0, flags, 0, 0, 0,
                                name.encode(), b"", b"")
        buf = bytearray(head + payload + bytes(size - self.HEADER.size - len(payload)))
        req = (3 << 30) | (self.HEADER.size << 16) | (0xFD << 8) | cmd  # _IOWR(0xfd, cmd, struct dm_ioctl)
        try:
            fcntl.ioctl(self.fd, req, buf)
        except OSError as e:
            raise BlkError(f"device-mapper ioctl {cmd} on {name}: {e.strerror}") from None

    def message(self, name: str, text: str, sector: int = 0) -> None:
        self._ioctl(self.TARGET_MSG, name, struct.pack("=Q", sector) + text.encode() + b"\0")

    def mark(self, name: str, text: str) -> None:
        """dm-log-writes `mark TEXT`; blanks escaped so the kernel keeps the text one argument."""
        escaped = "".join("\\" + c if c.isspace() or c == "\\" else c for c in text)
        self.message(name, "mark " + escaped)

    def suspend(self, name: str, *, lockfs: bool = False) -> None:
        self._ioctl(self.DEV_SUSPEND, name, flags=self.SUSPEND_FLAG | (0 if lockfs else self.SKIP_LOCKFS_FLAG))

    def resume(self, name: str) -> None:
        self._ioctl(self.DEV_SUSPEND, name)

    def load(self, name: str, table: str) -> None:
        """Load one table line `start length type params...` as NAME's inactive table."""
        start, length, ttype, *params = table.split(None, 3)
        text = (params[0] if params else "").encode() + b"\0"
        spec_size = self.SPEC.size + len(text)
        spec_size += -spec_size % 8
        spec = self.SPEC.pack(int(start), int(length), 0, spec_size, ttype.encode())
        self._ioctl(self.TABLE_LOAD, name, spec + text + bytes(spec_size - self.SPEC.size - len(text)), targets=1)

    def swap_table(self, name: str, table: str) -> None:
        """suspend --nolockfs; load; resume -- the power-cut switch of REFERENCE §4."""
        self.suspend(name)
        try:
            self.load(name, table)
        finally:
            self.resume(name)


# ============================================================== the guest's device
class MarkedDevice(Device):
    """A Device on a dm-log-writes node whose marks go to the target, with its submissions listed.

    `events`: every write, flush, discard and mark in submission order, as lists
    ["write"|"fua", block, nblocks, role, crc32] / ["flush"] / ["discard", block, count, role] /
    ["mark", text] -- what the host turns into the kernel log's sidecar.
    """

    def __init__(self, path: str, dm_name: str, ctl: DmControl, **kw) -> None:
        super().__init__(path, **kw)
        self.dm_name = dm_name
        self.ctl = ctl
        self.events: list[list] = []
        self.mark_seconds = 0.0

    def write(self, block: int, data: bytes, *, fua: bool = False, role: str = "") -> None:
        super().write(block, data, fua=fua, role=role)
        self.events.append(["fua" if fua else "write", block, len(data) // BLOCK_SIZE, role, zlib.crc32(data)])

    def flush(self) -> None:
        super().flush()
        self.events.append(["flush"])

    def discard(self, block: int, count: int = 1, *, role: str = "") -> None:
        super().discard(block, count, role=role)
        self.events.append(["discard", block, count, role])

    def mark(self, text: str) -> None:
        t = time.monotonic()
        self.ctl.mark(self.dm_name, text)
        self.mark_seconds += time.monotonic() - t
        self.events.append(["mark", text])


# ============================================================== the guest scenario
def record(ctx, argv: list[str]) -> int:
    """Guest: `record --plan PLAN.json`; each run of the plan on its own data and log slices."""
    from blkjournal.crash.explore import MKFS_MARK
    from blkjournal.crash.workload import Operation, apply, mark_text
    from blkjournal.store import Store
    from blkjournal.vm import dm

    p = argparse.ArgumentParser(prog="record")
    p.add_argument("--plan", required=True)
    args = p.parse_args(argv)
    plan = json.load(open(args.plan))
    data_dev, log_dev = ctx.disk(0), ctx.disk(1)
    ctl = DmControl()
    summary = {"runs": []}
    try:
        for i, run in enumerate(plan["runs"]):
            t0 = time.monotonic()
            ops = [Operation(**o) for o in run["ops"]]
            names = (f"bjd{i}", f"bjl{i}", f"bjlw{i}")
            data = dm.create(names[0], f"0 {run['data_sectors']} linear {data_dev} {run['data_offset']}")
            log = dm.create(names[1], f"0 {run['log_sectors']} linear {log_dev} {run['log_offset']}")
            lw = dm.create(names[2], dm.log_writes_table(data, log))
            dev = MarkedDevice(lw, names[2], ctl)
            try:
                st = Store.mkfs(dev, run["protocol"], run["barrier"])
                dev.mark(MKFS_MARK)
                for k, op in enumerate(ops):
                    apply(st, op)
                    dev.mark(mark_text(k, op))
                counters = dev.counters.snapshot()
            finally:
                dev.close()
            entries, highest, disabled = dm.log_writes_status(names[2])
            dm.remove(names[2])
            dm.remove(names[1])
            dm.remove(names[0])
            out = {"name": run["name"], "events": dev.events, "counters": counters,
                   "status": {"entries": entries, "highest_sector": highest, "logging_disabled": disabled},
                   "mark_seconds": round(dev.mark_seconds, 3), "marks": len(ops) + 1,
                   "seconds": round(time.monotonic() - t0, 3), "kernel": os.uname().release}
            ctx.write_json(f"{run['name']}.events.json", out)
            summary["runs"].append({k: v for k, v in out.items() if k != "events"})
            print(f"record: {run['name']}: {len(ops)} ops, {entries} log entries, {out['seconds']} s "
                  f"(marks {out['mark_seconds']} s)", flush=True)
            if disabled:
                print(f"record: {run['name']}: the log device filled up (logging_disabled)", flush=True)
                return 1
    finally:
        ctl.close()
    ctx.write_json("record.json", summary)
    return 0


# ============================================================== host side
@dataclasses.dataclass
class Run:
    """One recording: a protocol and barrier kind, the ops, and where the log goes."""

    protocol: str
    barrier: str
    ops: list
    out: str
    seed: int | None = None
    size: int = DEFAULT_SIZE

    @property
    def name(self) -> str:
        return os.path.basename(self.out).replace(".", "_")


@dataclasses.dataclass
class Recorded:
    run: Run
    log: str
    entries: int
    guest_seconds: float
    mark_seconds: float
    counters: dict
    sidecar: bool
    kernel: str | None = None  # the guest kernel whose dm-log-writes wrote the log


def record_in_vm(runs: list[Run], *, sector_size: int = 512, timeout: float = 300, workdir: str | None = None,
                 echo=None, log_slice: int | None = None) -> tuple[list[Recorded], float]:
    """Record every run in one boot; returns (per run results, seconds the VM took)."""
    from blkjournal.crash.workfile import save_workload
    from blkjournal.vm.qemu import Disk, run_scenario

    if not runs:
        raise BlkError("nothing to record")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise BlkError("two runs write the same log file name")
    for r in runs:
        if r.size % BLOCK_SIZE or r.size < 64 * BLOCK_SIZE:
            raise BlkError(f"data size {r.size} must be a multiple of {BLOCK_SIZE} and at least 64 blocks")
    own = workdir is None
    work = workdir or tempfile.mkdtemp(prefix="blkjournal-vmrecord-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    try:
        plan, doff, loff = [], 0, 0
        for r in runs:
            lsize = log_slice or max(current_recipe().log_min, 4 * r.size)
            plan.append({"name": r.name, "protocol": r.protocol, "barrier": r.barrier,
                         "ops": [o.to_json() for o in r.ops],
                         "data_offset": doff // SECTOR, "data_sectors": r.size // SECTOR,
                         "log_offset": loff // SECTOR, "log_sectors": lsize // SECTOR})
            doff += r.size
            loff += lsize
        data_img, log_img = os.path.join(work, "data.img"), os.path.join(work, "log.img")
        for path, size in ((data_img, doff), (log_img, loff)):
            with open(path, "wb") as f:
                f.truncate(size)
        results = os.path.join(work, "results")
        os.makedirs(results, exist_ok=True)
        plan_path = os.path.join(results, "plan.json")
        with open(plan_path, "w") as f:
            json.dump({"runs": plan}, f)
        res = run_scenario("record", ["--plan", plan_path], disks=[Disk(data_img), Disk(log_img)],
                           sector_size=sector_size, timeout=timeout, results_dir=results, echo=echo)
        out = []
        for r, pl in zip(runs, plan):
            with open(os.path.join(results, f"{r.name}.events.json")) as f:
                ev = json.load(f)
            extract_log(log_img, pl["log_offset"] * SECTOR, pl["log_sectors"] * SECTOR, r.out)
            write_kernel_sidecar(r.out, ev["events"], nblocks=r.size // BLOCK_SIZE)
            save_workload(r.out, r.protocol, r.barrier, r.ops, seed=r.seed, source="vm dm-log-writes",
                          nblocks=r.size // BLOCK_SIZE, sector_size=sector_size, kernel=ev.get("kernel"))
            out.append(Recorded(r, r.out, ev["status"]["entries"], ev["seconds"], ev["mark_seconds"],
                                ev["counters"], True, ev.get("kernel")))
        return out, res.elapsed
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def extract_log(image: str, offset: int, length: int, out: str) -> int:
    """Copy the log at `offset` of `image` up to its last counted entry into `out`; its size."""
    from blkjournal.crash.logwrites import DISCARD, ENTRY, MAGIC, MARK, SUPER

    with open(image, "rb") as f:
        f.seek(offset)
        head = f.read(SUPER.size)
        magic, version, nr, ss = SUPER.unpack(head)
        if magic != MAGIC:
            raise CorruptError(f"{image}@{offset}: no dm-log-writes superblock (magic {magic:#x})")
        pos = ss
        for _ in range(nr):
            if pos + ss > length:
                raise CorruptError(f"{image}@{offset}: entry at byte {pos} past the log slice")
            f.seek(offset + pos)
            _sector, nsec, flags, _dlen = ENTRY.unpack(f.read(ENTRY.size))
            pos += ss + (nsec * ss if nsec and not flags & (DISCARD | MARK) else 0)
        f.seek(offset)
        with open(out, "wb") as o:
            left = pos
            while left:
                chunk = f.read(min(left, 4 << 20))
                if not chunk:
                    raise CorruptError(f"{image}: log ends early")
                o.write(chunk)
                left -= len(chunk)
    return pos


class _Predicted:
    """A LogWriter stand-in that keeps what each entry would hold."""

    def __init__(self) -> None:
        self.entries: list[tuple] = []

    def append(self, flags: int, sector: int = 0, nr_sectors: int = 0, data=b"") -> int:
        self.entries.append((flags, sector, nr_sectors, data))
        return len(self.entries) - 1

    def mark(self, text: str) -> int:
        from blkjournal.crash.logwrites import MARK

        self.entries.append((MARK, 0, 0, text))
        return len(self.entries) - 1

    def close(self) -> None:
        pass


def predict_kernel_log(events: list[list], sectorsize: int, *, dsync_flush: bool = True):
    """(predicted entries, sidecar records) for the guest's submissions, by the recorder's target model.

    A predicted write entry carries the CRC of its payload (the guest computed it); each sidecar
    record is (kind, fields, Bio) -- the Bio learns its entry index when it is logged.
    """
    from blkjournal.crash.logwrites import END_MARK, FLUSH, FUA
    from blkjournal.crash.recorder import Bio, LogWritesTarget

    spb = BLOCK_SIZE // sectorsize
    writer = _Predicted()
    target = LogWritesTarget(writer)
    recs: list[tuple[str, dict, object]] = []

    def io(kind: str, bio, **fields):
        recs.append((kind, fields, bio))
        target.complete(target.submit(bio))

    for ev in events:
        kind = ev[0]
        if kind in ("write", "fua"):
            _, block, nb, role, crc = ev
            rng = {"block": block, "nblocks": nb, "sector": block * spb, "nr_sectors": nb * spb}
            io(kind, Bio(FUA if kind == "fua" else 0, block * spb, nb * spb, crc), role=role, **rng)
            if kind == "fua" and dsync_flush:
                io("flush", Bio(FLUSH), role=KERNEL_FLUSH_ROLE)
        elif kind == "flush":
            io("flush", Bio(FLUSH))
        elif kind == "discard":
            from blkjournal.crash.logwrites import DISCARD

            _, block, nb, role = ev
            rng = {"block": block, "nblocks": nb, "sector": block * spb, "nr_sectors": nb * spb}
            io("discard", Bio(DISCARD, block * spb, nb * spb), role=role, **rng)
        elif kind == "mark":
            recs.append(("mark", {"text": ev[1]}, target.mark(ev[1])))
        else:
            raise CorruptError(f"unknown guest event {ev!r}")
    end = [None]
    target.close(on_logged=lambda bio: end.__setitem__(0, bio))
    recs.append(("mark", {"text": END_MARK, "role": END_ROLE}, end[0]))
    return writer.entries, recs


def compare_with_log(log, predicted: list[tuple]) -> str | None:
    """None when the kernel's log holds exactly the predicted entries, else the first difference."""
    from blkjournal.crash.logwrites import DISCARD, FLUSH, FUA, MARK, flag_names

    keep = FLUSH | FUA | MARK | DISCARD  # METADATA is a hint, not ordering
    if len(log.entries) != len(predicted):
        first = next((i for i, (e, p) in enumerate(zip(log.entries, predicted)) if _differs(e, p, keep, log.sectorsize)),
                     min(len(log.entries), len(predicted)))
        return (f"the kernel logged {len(log.entries)} entries, the model of the target predicts {len(predicted)}; "
                f"first difference at entry {first}")
    for e, p in zip(log.entries, predicted):
        why = _differs(e, p, keep, log.sectorsize)
        if why:
            return f"entry {e.index} ({flag_names(e.flags)} sector {e.sector}+{e.nr_sectors}): {why}"
    return None


def _differs(e, p, keep: int, ss: int) -> str:
    from blkjournal.crash.logwrites import MARK, flag_names, max_mark_len

    flags, sector, nr, payload = p
    if e.flags & keep != flags & keep:
        return f"flags {flag_names(e.flags)}, predicted {flag_names(flags)}"
    if flags & MARK:
        want = payload.encode()[:max_mark_len(ss)].decode("utf-8", "replace")
        return "" if e.mark == want else f"mark {e.mark!r}, predicted {want!r}"
    if not nr:
        return ""
    if (e.sector, e.nr_sectors) != (sector, nr):
        return f"predicted sector {sector}+{nr}"
    if zlib.crc32(e.data) != payload:
        return "payload differs from what the guest wrote"
    return ""


def write_kernel_sidecar(log_path: str, events: list[list], *, nblocks: int) -> None:
    """Check the kernel's log against the guest's submissions; write `<log>.roles` for it."""
    from blkjournal.crash.logwrites import read_log
    from blkjournal.crash.recorder import SIDECAR_FORMAT, SIDECAR_VERSION, SidecarOp, sidecar_path

    log = read_log(log_path)
    predicted, recs = predict_kernel_log(events, log.sectorsize)
    why = compare_with_log(log, predicted)
    if why:
        raise CorruptError(f"{log_path}: the kernel's log is not what the guest's submissions predict: {why}")
    with open(sidecar_path(log_path), "w", encoding="utf-8") as f:
        f.write(json.dumps({"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "sectorsize": log.sectorsize,
                            "nblocks": nblocks, "source": "vm guest submissions, checked against the kernel log"})
                + "\n")
        for seq, (kind, fields, bio) in enumerate(recs):
            f.write(SidecarOp(seq=seq, kind=kind, entry=bio.entry, **fields).pack() + "\n")


# ============================================================== barrier accounting
def barriers_per_op(log, sidecar=None) -> list[dict]:
    """Per op K: the FLUSH entries, FUA writes and plain writes logged between mark "op K-1"
    (or "mkfs") and mark "op K" -- in log order, which is completion order for flushes and FUA
    writes (plain writes are logged at the next flush, so their count is where they were
    logged, not submitted).  With a sidecar, the submissions between the marks instead (its roles too).
    """
    from blkjournal.crash.explore import MKFS_MARK
    from blkjournal.crash.workload import parse_mark

    rows: list[dict] = []
    cur = None
    if sidecar is None:
        for e in log.entries:
            if e.is_mark:
                if e.mark == MKFS_MARK or parse_mark(e.mark or "") is not None:
                    if cur is not None:
                        rows.append(cur)
                    cur = {"mark": e.mark, "flush": 0, "fua": 0, "write": 0, "roles": []}
                continue
            if cur is None:
                continue
            if e.is_flush and not e.has_data:
                cur["flush"] += 1
            elif e.has_data:
                cur["fua" if e.is_fua else "write"] += 1
    else:
        for op in sidecar.ops:
            if op.kind == "mark":
                if op.text == MKFS_MARK or parse_mark(op.text or "") is not None:
                    if cur is not None:
                        rows.append(cur)
                    cur = {"mark": op.text, "flush": 0, "fua": 0, "write": 0, "roles": []}
                continue
            if cur is None or op.kind not in ("flush", "fua", "write"):
                continue
            cur[op.kind] += 1
            cur["roles"].append((op.kind, op.role))
    if cur is not None:
        rows.append(cur)
    # rows[0] opens at "mkfs" and ends at "op 0": name each row by the op it covers
    return [{**r, "op": i} for i, r in enumerate(rows[:-1])] if rows else []


# ============================================================== host entry for the CLI
def record_command(protocol: str, barrier: str, nops: int, seed: int, sector_size: int, out: str, *,
                   size: int = DEFAULT_SIZE, timeout: float = 300, bound: int = 4096, jobs: int = 1,
                   explore: bool = True, echo=None):
    """Record one run in the VM and (optionally) explore it; returns (Recorded, Result | None, vm seconds)."""
    from blkjournal.crash.explore import explore_log
    from blkjournal.crash.workload import random_workload

    ops = random_workload(seed, nops)
    [rec], vm_seconds = record_in_vm([Run(protocol, barrier, ops, out, seed=seed, size=size)],
                                     sector_size=sector_size, timeout=timeout, echo=echo)
    res = explore_log(out, bound=bound, jobs=jobs, seed=seed) if explore else None
    if res is not None:
        res.seed = seed
    return rec, res, vm_seconds


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run through `blkjournal vm record` or blkjournal.vm.guest")
