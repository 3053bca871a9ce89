"""Seed B's six crash cases, found among the crash states of the append-a-block workload.

Seed B asks what a crash leaves when appending a block needs three writes: the DATA BLOCK, the
BITMAP (here: the file's used-list entry, the allocation record) and the INODE (here: the
origin).  We take the crash point right after the append, keep everything before the append
durable, and build the state for each subset of the append's own writes.  Each state is named
by the case it is, and given fsck's verdict on the raw image (as the seed reasons, before any
recovery) and the explorer's verdict after the protocol's recovery.

Under `none` all six cases occur.  Under `journal` the append is the data block plus one
transaction whose commit covers both, so its states are only "append committed" and "append
lost" (the seed's "crash while writing the journal: the write is lost, but the system is
consistent"); none of the six cases occurs.
"""

from __future__ import annotations

import os
from itertools import combinations

from ..fsck import fsck
from .check import judge, model_kind, recover_and_read
from .explore import record
from .logwrites import read_log
from .recorder import read_sidecar, sidecar_path
from .states import CrashSpace
from .workload import append_workload, model_states

CASES = {
    frozenset({"data"}): (1, "data only: consistent, data lost"),
    frozenset({"bitmap"}): (2, "bitmap only: space leak"),
    frozenset({"inode"}): (3, "inode only: points at a block marked free, garbage data"),
    frozenset({"data", "bitmap"}): (4, "data + bitmap: space leak"),
    frozenset({"data", "inode"}): (5, "data + inode: block in use but free"),
    frozenset({"bitmap", "inode"}): (6, "bitmap + inode: consistent metadata, garbage data"),
}
OBJECT = (("data block", "data"), ("used list", "bitmap"), ("bitmap", "bitmap"), ("origin", "inode"),
          ("journal txn", "transaction"))


def _object(role: str) -> str | None:
    for key, name in OBJECT:
        if role.startswith(key):
            return name
    return None


def append_states(workdir: str, protocol: str, barrier: str = "flush") -> list[dict]:
    """One row per subset of the append's writes: the objects written, the case, and the verdicts."""
    ops = append_workload()
    log = os.path.join(workdir, f"append-{protocol}-{barrier}.log")
    record(os.path.join(workdir, "append.img"), log, protocol, barrier, ops, size=4 << 20)
    space = CrashSpace(read_log(log), read_sidecar(sidecar_path(log)))
    mark = "op 2: " + ops[2].describe()
    pi = next(p.index for p in space.points if p.op is not None and p.op.kind == "mark" and p.op.text == mark)
    free = space.free_writes(pi)
    tag = f"[{ops[2].describe()}]"
    mine = [pos for pos, w in enumerate(free) if w.op.role.endswith(tag)]
    forced = frozenset(o for w in space.writes if w.forced <= pi and w.op.role.endswith(tag)
                       if (o := _object(w.op.role)))
    earlier = [pos for pos in range(len(free)) if pos not in mine]
    models = model_states(ops)
    rows = []
    for k in range(len(mine) + 1):
        for subset in combinations(mine, k):
            st = space.state_from_combo(pi, tuple((pos, 1) for pos in sorted(earlier + list(subset))))
            objects = forced | frozenset(o for pos in subset if (o := _object(free[pos].op.role)))
            raw = fsck(st.overlay())
            contents, err, _ = recover_and_read(st.overlay())
            legal = contents is not None and judge(contents, models, range(2, 4), model_kind(protocol)).legal
            case = None if "transaction" in objects or protocol == "journal" else CASES.get(objects)
            if protocol == "journal":  # the data block belongs to the transaction (its crc is in the commit)
                # the commit covers the data block too: the append is there exactly when recovery shows it
                done = contents is not None and contents == models[3]
                case = (None, "append committed" if done else "append lost: consistent")
            rows.append({"state": st.id, "written": sorted(objects), "writes": [free[p].op.role for p in subset],
                         "case": case[0] if case else None, "seed_verdict": case[1] if case else None,
                         "fsck": raw.verdict(), "fsck_codes": sorted(raw.codes()),
                         "after_recovery": "legal" if legal else (err or "illegal")})
    return rows
