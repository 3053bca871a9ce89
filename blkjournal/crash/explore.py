"""The crash explorer: record a workload, enumerate every crash state, recover and check each.

record -> states -> recover + check -> report (DESIGN §4).  The run is recorded from an empty
device (mkfs included, then a mark "mkfs"), so a log is self-contained: it replays onto zeros,
wherever it was recorded.  A workload file `<log>.workload.json` beside the log carries the ops,
protocol and barrier kind, so `check-log` can judge a log recorded elsewhere (e.g. in the VM).

States with the same image are recovered and read once, then judged against the window of every
crash point that produced them.  Work is spread over processes (`jobs`) and shards.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from dataclasses import dataclass, field

from ..device import BLOCK_SIZE, BlockDevice, Device
from ..errors import BlkError
from ..format import BARRIERS, PROTOCOLS
from ..untrusted import json_object, optional_integer, text
from ..store import Store
from .check import judge, model_kind, recover_and_read
from .clusters import cluster_failures
from .merge import run_identity
from .progress import progress_bar
from .minimize import explain
from .logwrites import read_log
from .recorder import MAX_NBLOCKS, RecordingDevice, read_sidecar, sidecar_path
from .states import DEFAULT_BOUND, CrashSpace
from .workload import (MODEL_BUDGET, NAMED, Operation, mark_text, model_cost, model_states, parse_mark,
                       random_workload, run)

MKFS_MARK = "mkfs"
MAX_WORKLOAD_FILE = 64 << 20  # bytes
MAX_OPS = 1 << 20


def workload_path(log_path: str) -> str:
    return log_path + ".workload.json"


def save_workload(log_path: str, protocol: str, barrier: str, ops: list[Operation], **extra) -> None:
    with open(workload_path(log_path), "w") as f:
        json.dump({"protocol": protocol, "barrier": barrier, "ops": [o.to_json() for o in ops], **extra}, f)


def load_workload(log_path: str) -> dict | None:
    """The workload file beside a log, every field checked (BlkError names the file and the fault);
    None when there is none."""
    path = workload_path(log_path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_WORKLOAD_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BlkError(f"{path}: {e.strerror}") from None
    try:
        if len(raw) > MAX_WORKLOAD_FILE:
            raise ValueError(f"larger than {MAX_WORKLOAD_FILE} bytes")
        w = json_object(raw)
        if not isinstance(w.get("ops"), list) or len(w["ops"]) > MAX_OPS:
            raise ValueError(f"'ops' must be a list of at most {MAX_OPS} operations")
        w["ops"] = [Operation.from_json(o) for o in w["ops"]]
        if w.get("protocol") not in PROTOCOLS or w.get("barrier", "flush") not in BARRIERS:
            raise ValueError("unknown protocol or barrier")
        w["nblocks"] = optional_integer(w.get("nblocks"), "nblocks", 0, MAX_NBLOCKS)
        if w.get("kernel") is not None:
            text(w["kernel"], "kernel", 256)
        cost = model_cost(w["ops"])
        if cost > MODEL_BUDGET:
            raise ValueError(f"its model would need {cost} bytes (at most {MODEL_BUDGET})")
    except (ValueError, TypeError, KeyError) as e:
        raise BlkError(f"{path}: not a workload file ({e})") from None
    return w


def make_ops(workload: str, seed: int, nops: int) -> list[Operation]:
    if workload == "random":
        return random_workload(seed, nops)
    if workload not in NAMED:
        raise BlkError(f"unknown workload {workload!r} (random, {', '.join(NAMED)})")
    return NAMED[workload]()


def record(img: str, log_path: str, protocol: str, barrier: str, ops: list[Operation], *,
           size: int, sector_size: int = 512, ablate: str | None = None) -> dict:
    """mkfs + workload on a fresh image through the recorder; returns the store's I/O counters."""
    if os.path.exists(img):
        os.unlink(img)
    dev = Device(img, create_size=size, logical_block_size=sector_size)
    rec = RecordingDevice(dev, log_path)
    try:
        st = Store.mkfs(rec, protocol, barrier)
        rec.mark(MKFS_MARK)
        if ablate:
            st.protocol.disabled.add(ablate)
        run(st, ops)
        counters = dict(dev.counters.snapshot())
    finally:
        rec.close()
    save_workload(log_path, protocol, barrier, ops, ablated=ablate, nblocks=size // BLOCK_SIZE,
                  sector_size=sector_size)
    return counters


@dataclass
class Failure:
    state: str
    point: int
    label: str
    reason: str
    findings: list = field(default_factory=list)
    explanation: list = field(default_factory=list)
    kept: str | None = None

    def to_json(self) -> dict:
        return self.__dict__.copy()


@dataclass
class Result:
    protocol: str
    barrier: str
    seed: int | None
    ops: int
    states_enumerated: int = 0
    states_checked: int = 0
    illegal: int = 0
    illegal_states: int = 0
    coverage: float = 1.0
    crash_points: int = 0
    seconds: float = 0.0
    failures: list = field(default_factory=list)
    failing_points: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    points: list = field(default_factory=list)  # (index, label, legal) for the JUnit report and picture
    clusters: list = field(default_factory=list)  # illegal classes grouped by cause (clusters.py)
    states_covered: int = 0  # legal crash states the checked classes stand for (coverage's numerator)
    run: dict = field(default_factory=dict)  # what makes shards of one run (merge.py)
    kernel: str | None = None  # the kernel that recorded the log (the VM's), when not this machine's
    faults: dict | None = None  # the fault explorer's tally (faults.py), when --faults was given

    @property
    def ok(self) -> bool:
        fx = self.faults or {}
        return self.illegal == 0 and not fx.get("silent_corruptions") and not fx.get("crashed")

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("failures", "points", "space")}
        d["failures"] = [f.to_json() for f in self.failures]
        d["states_per_second"] = round(self.states_checked / self.seconds, 1) if self.seconds else None
        return d


# ---------------------------------------------------------------- tracing reads
class Tracer(BlockDevice):
    """Wraps a crash state's overlay: caches blocks and records which were read before written.

    The check (recovery, fsck, reading every file) is deterministic, so its outcome depends only
    on the initial contents of the blocks it reads before writing them.  Free writes touching
    none of those blocks cannot change the outcome -- the basis of the equivalence classes below.
    """

    def __init__(self, inner, shared: dict | None = None, varying: set | None = None) -> None:
        self.inner = inner
        self.shared = shared if shared is not None else {}  # blocks no free write touches: same in every state
        self.varying = varying if varying is not None else set()
        self.nblocks = inner.nblocks
        self.logical_block_size = inner.logical_block_size
        self.counters = inner.counters
        self.cache: dict[int, bytes] = {}
        self.written: set[int] = set()
        self.first_read: set[int] = set()

    def read(self, block: int, count: int = 1) -> bytes:
        out = []
        for b in range(block, block + count):
            v = self.cache.get(b)
            if v is None:
                if b not in self.written:
                    self.first_read.add(b)
                    if b not in self.varying:  # forced or base content: read it once per segment
                        v = self.shared.get(b)
                        if v is None:
                            v = self.shared[b] = self.inner.read(b)
                        self.cache[b] = v
                        out.append(v)
                        continue
                v = self.cache[b] = self.inner.read(b)
            out.append(v)
        return out[0] if count == 1 else b"".join(out)

    def write(self, block: int, data: bytes, *, fua: bool = False, role: str = "") -> None:
        self.inner.write(block, data, fua=fua, role=role)
        for i in range(len(data) // BLOCK_SIZE):
            self.cache[block + i] = bytes(data[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE])
            self.written.add(block + i)

    def flush(self) -> None:
        self.inner.flush()

    def discard(self, block: int, count: int = 1, *, role: str = "") -> None:
        self.inner.discard(block, count, role=role)
        for b in range(block, block + count):
            self.cache.pop(b, None)
            self.written.add(b)


# ---------------------------------------------------------------- the per-process context
_CTX: dict = {}


def _window(point, nops: int) -> range:
    """Model indices legal at a crash point: from the last completed sync to the op in progress."""
    k = parse_mark(point.last_mark) if point.last_mark else None
    done = 0 if k is None else k + 1  # ops completed
    lo = _CTX["sync_done"][done]
    return range(lo, min(done + 1, nops) + 1)


def _init_ctx(space, segments, ops, protocol, bound) -> None:
    _CTX.clear()
    _CTX.update(space=space, segments=segments, nops=len(ops) if ops is not None else 0,
                kind=model_kind(protocol), bound=bound)
    if ops is None:
        _CTX["models"] = None
        return
    _CTX["models"] = model_states(ops)
    sd, last = [0], 0  # sync_done[d] = model index of the last sync among the first d ops
    for j, op in enumerate(ops):
        if op.kind == "sync":
            last = j + 1
        sd.append(last)
    _CTX["sync_done"] = sd


def segments_of(space, points: list[int]) -> list[list[int]]:
    """Runs of crash points whose state sets only grow (no flush or FUA completion inside).

    The last point of a run has every image of the earlier ones (with the later writes absent),
    so one search at the last point, judged against each point's window, covers the run.
    """
    segs: list[list[int]] = []
    for pi in points:
        op = space.points[pi].op
        breaks = op is not None and (op.kind == "flush" or (op.kind == "fua" and not space.points[pi].inflight))
        if not segs or breaks or segs[-1][-1] != pi - 1:
            segs.append([pi])
        else:
            segs[-1].append(pi)
    return segs


def _nfree(space, pi: int) -> int:
    return len(space.free_writes(pi))


def _search_segment(si: int) -> dict:
    """Check every crash state of one segment by equivalence classes of what recovery reads.

    Node = a partial choice (position -> code, 0 = absent) over the last point's free writes.
    Its representative (undecided writes absent) is checked; the free writes touching a block the
    check read before writing split the node: T[0] present, or T[0] absent and T[1] present, ...
    and the node itself then stands for "all of T absent, anything for the rest".
    """
    space, seg = _CTX["space"], _CTX["segments"][si]
    models, kind, nops, bound = _CTX["models"], _CTX["kind"], _CTX["nops"], _CTX["bound"]
    pi = seg[-1]
    free = space.free_writes(pi)
    rel = [pos for pos, w in enumerate(free) if w.dead > pi]
    spb = BLOCK_SIZE // space.sectorsize
    blocks_of = {pos: set(range(free[pos].s0 // spb, (free[pos].s0 + free[pos].n - 1) // spb + 1)) for pos in rel}
    limits = [(p, _nfree(space, p)) for p in seg]
    windows = {p: _window(space.points[p], nops) for p in seg} if models is not None else {}
    out = {"segment": si, "points": seg, "checks": 0, "covered": 0, "failures": [],
           "legal_space": sum(_space_size(space, p) for p in seg)}
    shared: dict[int, bytes] = {}
    varying = set().union(*(blocks_of[pos] for pos in rel)) if rel else set()
    stack: list[dict] = [{}]
    while stack and out["checks"] < bound:
        decided = stack.pop()
        combo = tuple(sorted((pos, c) for pos, c in decided.items() if c))
        st = space.state_from_combo(pi, combo)
        tr = Tracer(st.overlay(), shared, varying)
        contents, err, findings = recover_and_read(tr)
        out["checks"] += 1
        present_later = [q for q, c in decided.items() if c == 1]
        touched = [pos for pos in reversed(rel) if pos not in decided and blocks_of[pos] & tr.first_read
                   and not any(q > pos and _covers(free[q], free[pos]) for q in present_later)]
        for i, pos in enumerate(touched):
            d = dict(decided)
            for q in touched[:i]:
                d[q] = 0
            for code in range(free[pos].radix - 1, 0, -1):
                stack.append(d | {pos: code})
        fixed = set(decided) | set(touched)
        present = [pos for pos, c in decided.items() if c]
        maxpos = max(present, default=-1)
        for p, nf in limits:
            if maxpos >= nf:
                continue
            size = 1
            for q, w in enumerate(free[:nf]):
                if q not in fixed:
                    size *= w.legal
            out["covered"] += size
            if contents is None:
                ok, reason = False, err
            elif models is None:
                ok, reason = True, ""
            else:
                v = judge(contents, models, windows[p], kind)
                ok, reason = v.legal, v.reason
            if not ok:
                out["failures"].append({"point": p, "at": pi, "state": st.id, "reason": reason, "findings": findings,
                                        "present": sorted(present),
                                        "absent": sorted(q for q in [q for q, c in decided.items() if not c] + touched
                                                         if q < nf),  # writes not yet submitted at p: not lost
                                        "size": size})
    out["uncovered_nodes"] = len(stack)
    return out


def recheck(failure: dict, combo: tuple) -> str | None:
    """Check one candidate state for a failing class (at its segment end, judged at its point): the
    reason it is illegal, or None when it is legal.  The cluster minimiser builds candidates."""
    space, models = _CTX["space"], _CTX["models"]
    contents, err, _ = recover_and_read(space.state_from_combo(failure["at"], combo).overlay())
    if contents is None:
        return err
    if models is None:
        return None
    v = judge(contents, models, _window(space.points[failure["point"]], _CTX["nops"]), _CTX["kind"])
    return None if v.legal else v.reason


def _covers(later, earlier) -> bool:
    """A later write that persisted whole hides every sector of an earlier one."""
    return later.s0 <= earlier.s0 and earlier.s0 + earlier.n <= later.s0 + later.n


def _space_size(space, p: int) -> int:
    n = 1
    for w in space.free_writes(p):
        n *= w.legal
    return n


def explore_log(log_path: str, *, protocol: str | None = None, ops: list[Operation] | None = None,
                bound: int = DEFAULT_BOUND, torn: bool = False, seed: int = 0, jobs: int = 1,
                shard: tuple[int, int] = (0, 1), keep_failing: str | None = None,
                progress: bool = False, barrier: str | None = None, max_failures: int = 50,
                first_failure: bool = False, faults: tuple[str, ...] = (), fault_samples: int | None = None,
                fault_at: tuple | None = None) -> Result:
    """Enumerate, check and judge every crash state of a recorded run."""
    t0 = time.monotonic()
    log = read_log(log_path)
    sc = read_sidecar(sidecar_path(log_path)) if os.path.exists(sidecar_path(log_path)) else None
    w = load_workload(log_path)
    if ops is None and w is not None:
        ops = w["ops"]
    protocol = protocol or (w or {}).get("protocol")
    if protocol is None:
        raise BlkError(f"{log_path}: no workload file beside the log: give --protocol")
    barrier = barrier or (w or {}).get("barrier", "?")
    space = CrashSpace(log, sc, torn=torn, bound=bound, seed=seed,
                       nblocks=None if sc is not None else (w or {}).get("nblocks"))
    start = next((p.index for p in space.points if p.last_mark == MKFS_MARK), None)
    if start is None:
        raise BlkError(f"{log_path}: no '{MKFS_MARK}' mark: not a blkjournal crash-test log")
    points = [p.index for p in space.points if p.index >= start and not _after_end(p)]
    if ops is not None:
        _check_marks(space, ops, log_path)
    i, n = shard
    if not 0 <= i < n:
        raise BlkError(f"shard {i}/{n}: want 0 <= i < n")
    every = segments_of(space, points)
    segments = every[i::n]
    res = Result(protocol, barrier, seed, len(ops) if ops else 0, notes=list(space.notes),
                 kernel=(w or {}).get("kernel"))  # a log recorded in the VM names the guest's kernel
    if ops is None:
        res.notes.append("no workload file: states checked for recovery and fsck only, not against a model")
    _init_ctx(space, segments, ops, protocol, bound)
    outs = _run_checks(len(segments), jobs, progress, first_failure)
    legal = covered = 0
    bad_points: dict[int, str] = {}
    fails = []
    for o in outs:
        res.states_checked += o["checks"]
        legal += o["legal_space"]
        covered += min(o["covered"], o["legal_space"])
        for f in o["failures"]:
            bad_points.setdefault(f["point"], f["reason"])
            fails.append(f)
    res.crash_points = sum(len(s) for s in segments)
    res.run = run_identity(log, ops, bound=bound, torn=torn, shard=shard, nsegments=len(every), npoints=len(points))
    res.states_enumerated = legal
    res.states_covered = covered
    res.coverage = covered / legal if legal else 1.0
    res.illegal = len({(f["at"], f["state"]) for f in fails})  # failing checks (each an equivalence class)
    res.illegal_states = sum(f["size"] for f in fails)  # the crash states those classes stand for
    res.failing_points = sorted(bad_points)
    checked = {p for s in segments for p in s}
    res.points = [(p, space.points[p].label, p not in bad_points) for p in sorted(checked)]
    fails.sort(key=lambda f: (f["point"], f["state"]))
    seen = set()
    firsts = [f for f in fails if (f["at"], f["state"]) not in seen and not seen.add((f["at"], f["state"]))]
    # causes are minimised, except for --ablate's "is anything illegal?" runs
    res.clusters = cluster_failures(space, fails, explain, None if first_failure else recheck)
    for f in firsts[:max_failures]:
        pt = space.points[f["point"]]
        fl = Failure(f["state"], f["point"], pt.label + (f" [{pt.last_mark}]" if pt.last_mark else ""), f["reason"],
                     f["findings"])
        fl.explanation = explain(space, f)
        if keep_failing:
            os.makedirs(keep_failing, exist_ok=True)
            fl.kept = os.path.join(keep_failing, f"{fl.state}.img")
            space.state(fl.state).overlay().materialize(fl.kept)
        res.failures.append(fl)
    res.space = space
    if faults:  # storage faults layered on the crash states (faults.py)
        from .faults import DEFAULT_SAMPLES, explore_faults

        res.faults = explore_faults(space, ops, protocol, kinds=faults, samples=fault_samples or DEFAULT_SAMPLES,
                                    seed=seed, jobs=jobs, fault_at=fault_at, start=start, points=points[i::n])
    res.seconds = time.monotonic() - t0
    return res


def _check_marks(space, ops: list[Operation], log_path: str) -> None:
    """The workload must be the one the log recorded: every "op K: ..." mark names an op it has,
    and says what that op is (the kernel may have cut the text short)."""
    for p in space.points:
        if p.op is None or p.op.kind != "mark" or p.op.text is None:
            continue
        k = parse_mark(p.op.text)
        if k is None:
            continue
        if not 0 <= k < len(ops) or not mark_text(k, ops[k]).startswith(p.op.text.rstrip("\ufffd")):
            raise BlkError(f"{log_path}: the log's mark {p.op.text[:60]!r} does not match the workload file "
                           f"({len(ops)} ops)")


def _after_end(p) -> bool:
    return p.last_mark == "dm-log-writes-end"


def _run_checks(n: int, jobs: int, progress: bool, first_failure: bool = False) -> list[dict]:
    if first_failure:  # "is anything illegal?": stop at the first segment that says yes
        out = []
        for i in range(n):
            out.append(_search_segment(i))
            if out[-1]["failures"]:
                break
        return out
    if jobs <= 1 or n < 4:
        # a generator, not map(): an exception escaping a check must never end the loop silently
        it = (_search_segment(i) for i in range(n))
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(jobs)
        it = pool.imap_unordered(_search_segment, range(n), chunksize=1)
    try:
        out = []
        with progress_bar(sum(len(s) for s in _CTX["segments"]), progress) as tick:
            for r in it:
                out.append(r)
                tick(r)
        return out
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def crashtest(workdir: str, *, protocol: str, barrier: str = "flush", nops: int = 200, seed: int = 0,
              workload: str = "random", image_size: int = 4 << 20, sector_size: int = 512,
              save_log: str | None = None, ablate: str | None = None, image: str | None = None,
              **kw) -> tuple[Result, dict]:
    """Record a workload on a fresh image in `workdir` and explore it."""
    ops = make_ops(workload, seed, nops)
    log = save_log or os.path.join(workdir, f"run-{protocol}-{barrier}-{seed}.log")
    counters = record(image or os.path.join(workdir, "crashtest.img"), log, protocol, barrier, ops,
                      size=image_size, sector_size=sector_size, ablate=ablate)
    res = explore_log(log, protocol=protocol, ops=ops, seed=seed, barrier=barrier, **kw)
    res.seed = seed
    return res, counters


def ablation(workdir: str, *, protocol: str, barrier: str = "flush", seeds: int = 4, **kw) -> list[dict]:
    """Remove each barrier site in turn; is the removal caught (some state illegal) on some seed?

    A site whose removal is never caught is either unnecessary or a gap in the workloads; the
    docs argue each such site (docs/protocols.md).
    """
    from ..store import Store

    kw.pop("seed", None)
    kw.pop("progress", None)
    kw.pop("workload", None)
    sites = Store.site_names(protocol, barrier)
    runs = [("random", seed) for seed in range(seeds)] + [(name, 0) for name in NAMED]
    rows = []
    for site in sites:
        row = {"site": site, "caught": False, "workload": None, "seed": None, "illegal": 0, "example": None}
        for workload, seed in runs:
            args = dict(kw)
            if workload == "grow":  # a file of 520 blocks needs room beside its copy-on-write
                args["image_size"] = max(args.get("image_size", 0), 8 << 20)
            res, _ = crashtest(workdir, protocol=protocol, barrier=barrier, seed=seed, ablate=site,
                               workload=workload, first_failure=True, **args)
            if not res.ok:
                f = res.failures[0]
                row.update(caught=True, workload=workload, seed=seed, illegal=res.illegal,
                           example=[f.reason] + f.explanation)
                break
        rows.append(row)
    return rows


def demo(workdir: str) -> int:
    """`make demo`'s second half: explore the default protocol, show the report, then `none`."""
    from .report import print_summary

    rc = 0
    for protocol, nops in (("journal", 60), ("none", 30)):
        if protocol == "none":
            print("\nThe same kind of workload without barriers (`none`), which the explorer must catch:")
        res, _ = crashtest(workdir, protocol=protocol, nops=nops, seed=1, jobs=2, progress=True)
        print_summary(res, limit=2)
        rc |= 0 if (res.ok or protocol == "none") else 1
    from .report import keep_demo_report

    keep_demo_report(res)
    return rc
