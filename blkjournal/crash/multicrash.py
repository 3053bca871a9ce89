"""Real systems die twice: crash -> recover (and crash during it) -> more operations -> crash.

A second phase starts from a crash state of the first run, *unrecovered*: that image is the
base of a new recording, which runs the protocol's recovery through the recorder (a mark
"recovery" before it, "mkfs" after) and then a seeded random workload over the files recovery
left.  The new log is explored like any other, so crashes during recovery and after the later
operations are enumerated exactly, as equivalence classes, against the model that starts from
what the uninterrupted recovery read back (DESIGN §4).  Bugs only this finds: a freelist that
recovery rebuilt wrongly (the later operations hand a block out twice), a stale transaction
resurrected, a leak recovery creates, a recovery that is not idempotent.

Which states: at evenly spaced crash points that have unsynced operations behind them, the
state with only the forced writes (everything the cache could lose, lost), and the one with
every write persisted -- deterministic, so a run is reproducible by its seed.
"""

from __future__ import annotations

import os
import shutil

from ..device import Device
from ..errors import BlkError, NoSpaceError
from ..store import Store
from .check import recover_and_read
from .jobs import fork_map
from .recorder import RecordingDevice
from .workload import MKFS_MARK, RECOVERY_MARK, apply, mark_text, parse_mark, random_workload

DEFAULT_STATES = 2  # first-phase crash states each run continues from
PHASE2_OPS = 20
PHASE2_MAX_FILE = 4 << 20  # larger files (a sparse 128 MiB one) stay as they are: the model copies per op


def pick_states(space, points: list[int], sync_done: list[int], n: int) -> list:
    """n crash states (forced-only and all-persisted alternately) at evenly spaced points."""
    cands = []
    for pi in points:
        k = parse_mark(space.points[pi].last_mark or "")
        if k is not None and sync_done[k + 1] < k + 1 and space.free_writes(pi):
            cands.append(pi)
    if not cands or n <= 0:
        return []
    out = []
    for i in range(n):
        pi = cands[(i * 2 + 1) * len(cands) // (2 * n)]
        free = space.free_writes(pi)
        combo = () if i % 2 == 0 else tuple((pos, 1) for pos, w in enumerate(free) if w.dead > pi)
        out.append(space.state_from_combo(pi, combo))
    return out


def record_phase2(base_img: str, log_path: str, seed: int, existing: tuple[str, ...], nops: int,
                  leave: frozenset = frozenset()) -> list:
    """Recovery + a random workload on `base_img` (a crash state) through the recorder; the ops run.

    An operation the store refuses for lack of space changes nothing (store._reserve), so it is
    left out of the workload rather than ending the phase.
    """
    dev = Device(base_img)
    rec = RecordingDevice(dev, log_path)
    done = []
    try:
        rec.mark(RECOVERY_MARK)
        st = Store.open(rec, recover=True)
        rec.mark(MKFS_MARK)
        for op in random_workload(seed, nops, existing=existing):
            if op.name in leave:  # a file the phase leaves alone (too big to model per op)
                continue
            try:
                apply(st, op)
            except NoSpaceError:
                continue
            rec.mark(mark_text(len(done), op))
            done.append(op)
    finally:
        rec.close()
    return done


def second_phases(workdir: str, res, ops: list, explore_log, save_workload, *, protocol: str, barrier: str,
                  seed: int, n: int = DEFAULT_STATES, nops: int = PHASE2_OPS, parallel: bool = False, **kw) -> list:
    """Explore n second phases of a finished first-phase Result; returns their Results, in order.

    `explore_log` and `save_workload` are explore.py's (passed in: explore.py imports this module).
    `parallel`: the phases run side by side, this process and one forked per further phase
    (jobs.fork_map); each phase's files are its own, so nothing they find depends on it.
    """
    space = res.space
    points = [p.index for p in space.points]  # all of them, not one shard's: every shard picks the same states
    sd, last = [0], 0  # sync_done[d]: ops up to the last sync among the first d ops
    for j, op in enumerate(ops):
        last = j + 1 if op.kind == "sync" else last
        sd.append(last)
    def phase(i: int, st):
        contents, err, _ = recover_and_read(st.overlay())
        if contents is None:
            return None  # the first phase reports this state
        base = os.path.join(workdir, f"phase2-{i}.base.img")
        st.overlay().materialize(base)
        work = os.path.join(workdir, f"phase2-{i}.img")
        shutil.copyfile(base, work)
        log = os.path.join(workdir, f"phase2-{i}.log")
        try:
            small = tuple(sorted(n for n, c in contents.items() if len(c) <= PHASE2_MAX_FILE))
            ops = record_phase2(work, log, seed * 1000 + i, small, nops, frozenset(contents) - set(small))
        except BlkError as e:  # the recovery the first phase accepted fails when run for real
            raise BlkError(f"second phase from {st.id}: {e}") from None
        save_workload(log, protocol, barrier, ops, phase2_of=st.id,
                      initial_sizes={n: len(c) for n, c in contents.items()})
        r = explore_log(log, protocol=protocol, ops=ops, seed=seed, barrier=barrier, base=base,
                           initial=contents, **kw)
        r.notes.append(f"second phase from first-phase state {st.id} ({st.point.label}), recovered then "
                       f"{len(ops)} ops")
        r.phase2_of = st.id
        r.space = None  # (the phase's crash space stays here: a forked phase hands back its Result)
        return r

    states = list(enumerate(pick_states(space, points, sd, n)))
    if parallel and len(states) > 1:  # each phase is too short to split (MIN_SHARED_POINTS): they run side by side
        got = fork_map(lambda item: phase(*item), states)
    else:
        got = [phase(i, st) for i, st in states]
    return [r for r in got if r is not None]
