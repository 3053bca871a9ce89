"""`blkjournal vm flakey`: power cuts through the kernel's dm-flakey, inside an operation.

Host (`plan_cuts`): the workload runs once on a scratch image to count each op's device writes;
a seeded choice then picks N cuts (op K, write w): the power goes after the w-th of op K's writes,
1 <= w < writes of op K, so every cut lands *between* two writes of one operation (ops with a
single write are used, at w = 0, only when there are too few such points).

Guest (`flakey` scenario, one boot for every cut of every protocol): per cut, a fresh zeroed
slice of the data disk under dm-flakey (up: `0 S flakey DEV OFF 1 0`); `Store.mkfs`; the ops
through `CutDevice`, which after the chosen write switches the table to
`0 S flakey DEV OFF 0 1 1 drop_writes` (suspend --nolockfs, load, resume: REFERENCE §4); the
workload goes on for a few ops whose writes now "succeed" and vanish; then the up table again,
the in-memory store dropped, `Store.open` (recovery) on a fresh O_DIRECT `Device`, fsck, every
file read (`crash.check.recover_and_read`) and judged against the model window (`judge`): from the
model after the last sync completed before the cut to the model after the op in progress.

What a cut shows: every write completed before the switch reached the disk (qemu's cache=unsafe
file keeps it), none after -- one crash state per cut, the "everything acknowledged persisted"
one, at a point of our choosing inside an op.  The explorer covers the states a volatile cache
allows; this scenario is the same question asked of the real kernel block stack.
Table switches use the DM ioctls (`record.DmControl`), a few ms each instead of ~0.2 s per
`dmsetup` process under TCG; creating and removing the device uses dmsetup once per boot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import tempfile
import time

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.errors import BlkError

DEFAULT_SIZE = 4 << 20  # data device per cut (a fresh slice each)
AFTER_OPS = 3  # ops run after the cut, their writes dropped
SECTOR = 512
DM_NAME = "bjflakey"


class CutDevice(Device):
    """A Device that counts each op's writes and calls `cut()` after write `write` of op `op`.

    `begin(k)` names the op about to run (the runner calls it); with write == 0 the cut happens
    at begin(op), before the op's first write.  `writes[k]`: device writes op k issued.
    """

    def __init__(self, path: str, *, op: int | None = None, write: int = 0, cut=None, **kw) -> None:
        super().__init__(path, **kw)
        self.cut_op, self.cut_write, self._cut = op, write, cut
        self.current: int | None = None
        self.writes: dict[int, int] = {}
        self.is_cut = False
        self.dropped = 0  # writes issued after the cut (they vanish)

    def begin(self, k: int) -> None:
        self.current = k
        self.writes.setdefault(k, 0)
        if k == self.cut_op and self.cut_write == 0:
            self._power_cut()

    def _power_cut(self) -> None:
        if not self.is_cut:
            self.is_cut = True
            if self._cut is not None:
                self._cut()

    def write(self, block: int, data: bytes, *, fua: bool = False, role: str = "") -> None:
        super().write(block, data, fua=fua, role=role)
        if self.is_cut:
            self.dropped += 1
        if self.current is not None:
            self.writes[self.current] = self.writes.get(self.current, 0) + 1
            if self.current == self.cut_op and self.writes[self.current] == self.cut_write:
                self._power_cut()


def sync_done(ops) -> list[int]:
    """sync_done[d]: model index after the last sync among the first d ops (0: none)."""
    out, last = [0], 0
    for j, op in enumerate(ops):
        if op.kind == "sync":
            last = j + 1
        out.append(last)
    return out


# ============================================================== the guest scenario
def flakey(ctx, argv: list[str]) -> int:
    """Guest: `flakey --plan PLAN.json`; writes flakey.json into the results share."""
    from blkjournal.crash.check import judge, model_kind, recover_and_read
    from blkjournal.crash.workload import Operation, apply, model_states
    from blkjournal.store import Store
    from blkjournal.vm import dm
    from blkjournal.vm.record import DmControl

    p = argparse.ArgumentParser(prog="flakey")
    p.add_argument("--plan", required=True)
    args = p.parse_args(argv)
    plan = json.load(open(args.plan))
    disk = ctx.disk(0)
    size = plan["slice_sectors"]
    node = f"/dev/mapper/{DM_NAME}"
    rows: list[dict] = []
    slice_no = 0
    t_all = time.monotonic()

    def up(i: int) -> str:
        return f"0 {size} flakey {disk} {i * size} 1 0"

    def down(i: int) -> str:
        return f"0 {size} flakey {disk} {i * size} 0 1 1 drop_writes"

    dm.create(DM_NAME, up(0))
    ctl = DmControl()
    try:
        for cfg in plan["configs"]:
            ops = [Operation(**o) for o in cfg["ops"]]
            models, done, kind = model_states(ops), sync_done(ops), model_kind(cfg["protocol"])
            for cut in cfg["cuts"]:
                t0 = time.monotonic()
                i = slice_no
                slice_no += 1
                if i:
                    ctl.swap_table(DM_NAME, up(i))  # a fresh zeroed slice of the disk
                c, w = cut["op"], cut["write"]
                dev = CutDevice(node, op=c, write=w, cut=lambda i=i: ctl.swap_table(DM_NAME, down(i)))
                post_error, st = None, None
                try:
                    st = Store.mkfs(dev, cfg["protocol"], cfg["barrier"])
                    for k, op in enumerate(ops[:c + 1 + plan["after"]]):
                        dev.begin(k)
                        try:
                            apply(st, op)
                        except Exception as e:  # after the cut reads may see the old blocks
                            if not dev.is_cut:
                                raise
                            post_error = f"op {k}: {type(e).__name__}: {e}"
                            break
                finally:
                    st = None  # the in-memory store dies with the power
                    dev.close()
                ctl.swap_table(DM_NAME, up(i))  # power back on: the disk keeps what reached it
                row = {"protocol": cfg["protocol"], "barrier": cfg["barrier"], "slice": i, "op": c,
                       "op_desc": ops[c].describe(), "write": w, "op_writes": dev.writes.get(c, 0),
                       "planned_op_writes": cut["op_writes"], "cut": dev.is_cut, "dropped_writes": dev.dropped,
                       "post_cut_error": post_error}
                lo, hi = done[c], c + 1
                row["window"] = [lo, hi]
                if not dev.is_cut:
                    row.update(legal=False, reason=f"the cut never happened: op {c} issued "
                                                   f"{dev.writes.get(c, 0)} writes, the plan wanted {w}")
                else:
                    fresh = Device(node)
                    try:
                        contents, err, findings = recover_and_read(fresh)
                    finally:
                        fresh.close()
                    if contents is None:
                        row.update(legal=False, reason=err, findings=findings)
                    else:
                        v = judge(contents, models, range(lo, hi + 1), kind)
                        row.update(legal=v.legal, reason=v.reason, matched=v.matched, files=len(contents))
                row["seconds"] = round(time.monotonic() - t0, 3)
                rows.append(row)
                print(f"flakey: {row['protocol']}/{row['barrier']} op {c} write {w}/{row['op_writes']}: "
                      f"{'legal' if row['legal'] else 'ILLEGAL'} {row['reason']} ({row['seconds']} s)", flush=True)
    finally:
        ctl.close()
        dm.remove(DM_NAME)
    ctx.write_json("flakey.json", {"cuts": rows, "seconds": round(time.monotonic() - t_all, 3),
                                   "kernel": os.uname().release})
    return 0


# ============================================================== host side
@dataclasses.dataclass(frozen=True)
class Config:
    protocol: str
    barrier: str = "flush"


def count_writes(protocol: str, barrier: str, ops, *, size: int = DEFAULT_SIZE, workdir: str | None = None) -> list[int]:
    """Device writes each op issues (a dry run on a scratch image; the counts are deterministic)."""
    from blkjournal.crash.workload import apply
    from blkjournal.store import Store

    tmp = tempfile.mkdtemp(prefix="blkjournal-flakey-", dir=workdir or "/var/tmp")
    try:
        dev = CutDevice(os.path.join(tmp, "dry.img"), create_size=size)
        try:
            st = Store.mkfs(dev, protocol, barrier)
            for k, op in enumerate(ops):
                dev.begin(k)
                apply(st, op)
        finally:
            dev.close()
        return [dev.writes.get(k, 0) for k in range(len(ops))]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def plan_cuts(counts: list[int], n: int, seed: int) -> list[dict]:
    """n distinct (op, write) cut points, seeded; strictly inside an op wherever possible."""
    inside = [(k, w) for k, nw in enumerate(counts) for w in range(1, nw)]
    rnd = random.Random(f"flakey-cuts-{seed}")
    picked = rnd.sample(inside, min(n, len(inside)))
    if len(picked) < n:
        edge = [(k, 0) for k, nw in enumerate(counts) if nw >= 1]
        picked += rnd.sample(edge, min(n - len(picked), len(edge)))
    if not picked:
        raise BlkError("the workload issues no writes: nothing to cut")
    return [{"op": k, "write": w, "op_writes": counts[k]} for k, w in sorted(picked)]


def flakey_in_vm(configs: list[Config], *, cuts: int, seed: int, nops: int, size: int = DEFAULT_SIZE,
                 sector_size: int = 512, after: int = AFTER_OPS, timeout: float = 300, echo=None,
                 workdir: str | None = None) -> tuple[list[dict], float]:
    """Every cut of every config in one boot; (rows as the guest reported them, VM seconds)."""
    from blkjournal.crash.workload import random_workload
    from blkjournal.vm.qemu import Disk, run_scenario

    if cuts < 1:
        raise BlkError("--cuts must be at least 1")
    if size % BLOCK_SIZE or size < 64 * BLOCK_SIZE:
        raise BlkError(f"size must be a multiple of {BLOCK_SIZE} and at least 64 blocks")
    ops = random_workload(seed, nops)
    own = workdir is None
    work = workdir or tempfile.mkdtemp(prefix="blkjournal-vmflakey-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    try:
        plan = {"slice_sectors": size // SECTOR, "after": after, "seed": seed, "configs": []}
        total = 0
        for cfg in configs:
            counts = count_writes(cfg.protocol, cfg.barrier, ops, size=size, workdir=work)
            chosen = plan_cuts(counts, cuts, seed)
            total += len(chosen)
            plan["configs"].append({"protocol": cfg.protocol, "barrier": cfg.barrier,
                                    "ops": [o.to_json() for o in ops], "cuts": chosen})
        data = os.path.join(work, "data.img")
        with open(data, "wb") as f:
            f.truncate(total * size)
        results = os.path.join(work, "results")
        os.makedirs(results, exist_ok=True)
        plan_path = os.path.join(results, "plan.json")
        with open(plan_path, "w") as f:
            json.dump(plan, f)
        res = run_scenario("flakey", ["--plan", plan_path], disks=[Disk(data)], sector_size=sector_size,
                           timeout=timeout, results_dir=results, echo=echo)
        with open(os.path.join(results, "flakey.json")) as f:
            out = json.load(f)
        rows = out["cuts"]
        for r in rows:
            r["seed"] = seed
            r["kernel"] = out.get("kernel")
        return rows, res.elapsed
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def format_table(rows: list[dict]) -> str:
    """One line per cut.  Windows and matches count ops done: "3" is the model after ops 0..2."""
    lines = [f"{'protocol':<14} {'op':>4}  {'operation':<28} {'cut after':>9}  {'legal':>7}  verdict",
             f"{'':<14} {'':>4}  {'':<28} {'write':>9}  {'ops done':>7}"]
    for r in rows:
        win = f"{r['window'][0]}..{r['window'][1]}"
        if r["legal"]:
            verdict = "legal" + (f" ({r['matched']} ops done)" if r.get("matched") is not None else " (per file)")
        else:
            verdict = f"ILLEGAL: {r['reason']}"
        lines.append(f"{r['protocol'] + '/' + r['barrier']:<14} {r['op']:>4}  {r['op_desc'][:28]:<28} "
                     f"{str(r['write']) + '/' + str(r['op_writes']):>9}  {win:>7}  {verdict}")
    return "\n".join(lines)
