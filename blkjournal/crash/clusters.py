"""Group illegal crash states by cause, so a report reads as a few bugs, not thousands of states.

A failing equivalence class is decided by the check that failed (recovery, fsck, a file's
contents) and by the few free writes it fixed: those that had to be durable and those that had
to be lost (minimize.py).  Two classes with the same check and the same roles of deciding writes
fail for the same reason, whichever file, transaction or block number they happen to involve, so
roles are normalised first: "commit of txn 5 [put f1]" and "commit of txn 7 [put f3]" both become
"commit of txn #".  Each cluster keeps its count, its smallest representative (fewest deciding
writes) and one explanation; clusters are listed largest first.

Clusters are plain dicts keyed by a string, so the shards of a CI run merge by summing counts and
keeping the smaller representative (merge.py).
"""

from __future__ import annotations

import re

_BRACKETS = re.compile(r"\s*\[[^\]]*\]")  # the op that issued a write: "[write f0 @0+512]"
_PARENS = re.compile(r"\s*\((slot|gen)[^)]*\)")  # "(slot a, gen 1)": which copy, not what it is
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_BYTES = re.compile(r"\bb'(?:[^'\\]|\\.)*'|\bb\"(?:[^\"\\]|\\.)*\"")
_LISTS = re.compile(r"\[[^\]]*\]")
_NUM = re.compile(r"\d+")


def normalise_role(role: str) -> str:
    """'data block 3 of file 7 [write f2 @0+9]' -> 'data block # of file #'."""
    r = _BRACKETS.sub("", role)
    r = _PARENS.sub("", r)
    return _NUM.sub("#", r).strip()


def normalise_check(reason: str) -> str:
    """The failing check without the names and numbers of this instance.

    "file 'f0': size 78783, expected one of [0] (ops 24..25)" -> "file '…': size #, expected one of […] (ops #..#)".
    """
    r = _BYTES.sub("b'…'", reason)
    r = _QUOTED.sub("'…'", r)
    r = _LISTS.sub("[…]", r)
    return _NUM.sub("#", r).strip()


def cluster_key(check: str, durable: list[str]) -> str:
    """What a cluster stands for: the check and the roles that must be durable for it to fail.

    The lost writes are part of the explanation, not of the key: a class whose check never read
    the lost write's block fails the same way whatever became of it.
    """
    return " | ".join([check, "durable: " + ", ".join(durable)])


def explanation(check: str, durable: list[str], lost: list[str]) -> str:
    """One sentence: which check fails, and the write order that makes it fail."""
    if durable and lost:
        order = f"{_join(durable)} reached the disk while {_join(lost)} did not"
    elif durable:
        order = f"{_join(durable)} reached the disk, whatever else was lost"
    elif lost:
        order = f"{_join(lost)} was lost, whatever else persisted"
    else:
        order = ("even with every unflushed write lost, so what the last completed sync should have "
                 "made durable was not")
    return f"{check}: {order}."


def _join(xs: list[str]) -> str:
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def _weight(f: dict) -> tuple:
    """Smaller is a better representative: fewest deciding writes, then earliest."""
    return (len(f["present"]) + len(f["absent"]), f["point"], f["state"])


MAX_LOST_CANDIDATES = 64  # earlier writes tried per cause (the nearest first): bounded work per cause
MAX_MINIMISE = 24  # causes minimised per run; the classes no cause covers are grouped by check alone


def _role(free, pos: int) -> str:
    return normalise_role(free[pos].op.role or free[pos].op.kind)


def minimise(space, failure: dict, recheck) -> tuple[list[int], list[int], str]:
    """The writes that decide a failing class: (durable, lost, state id), each 1-minimal.

    Start from the class's representative (its durable writes, every other write lost).  A durable
    write stays only if dropping it makes the state pass or fail another way; then a lost write
    counts only if adding it back does (the candidates: the class's lost writes and every write
    submitted before the last durable one, nearest first and at most MAX_LOST_CANDIDATES; a later
    one cannot have been overtaken).  What is left is the cause in the writer's terms.
    """
    at = failure["at"]
    codes = dict(space.state(failure["state"]).combo)
    check = normalise_check(failure["reason"])

    def same(durable) -> bool:
        why = recheck(failure, tuple((p, codes.get(p, 1)) for p in durable))
        return why is not None and normalise_check(why) == check

    durable = list(failure["present"])
    for pos in sorted(failure["present"], reverse=True):
        trial = [p for p in durable if p != pos]
        if same(trial):
            durable = trial
    last = max(durable, default=-1)
    earlier = [p for p in range(last - 1, -1, -1) if p not in durable][:MAX_LOST_CANDIDATES]
    candidates = sorted(set(failure["absent"]) | set(earlier))
    lost = [pos for pos in candidates if not same(sorted(durable + [pos]))]
    sid = space.state_from_combo(at, tuple((p, codes.get(p, 1)) for p in durable)).id
    return durable, lost, sid


def _roles(space, g: dict) -> set[str]:
    if "_roles" not in g:
        free = space.free_writes(g["at"])
        g["_roles"] = {_role(free, p) for p in g["present"]}
    return g["_roles"]


def cluster_failures(space, failures: list[dict], explain=None, recheck=None,
                     max_minimise: int = MAX_MINIMISE) -> list[dict]:
    """Clusters of failing classes (the explorer's failure dicts: one per class and crash point judged).

    Causes are found one at a time: the smallest class no cause covers yet is minimised (with
    `recheck(failure, combo)`, the explorer's check of one state), and every class failing the same
    check with writes of the cause's durable roles durable joins its cluster.  `explain(space,
    failure)` gives the representative's lines in the writer's terms.
    """
    classes: dict[tuple, dict] = {}  # one entry per class; its states summed over the points judged
    points: dict[tuple, set] = {}
    for f in failures:
        k = (f["at"], f["state"])
        if k not in classes:
            classes[k] = {**f, "size": 0}
            points[k] = set()
        classes[k]["size"] += f.get("size", 1)
        points[k].add(f["point"])
    todo = sorted(classes.values(), key=_weight)
    checks = {id(g): normalise_check(g["reason"]) for g in todo}
    out = []
    while todo:
        f = todo[0]
        check = checks[id(f)]
        free = space.free_writes(f["at"])
        if recheck is not None and len(out) < max_minimise:
            durable, lost, sid = minimise(space, f, recheck)
            rep = {**f, "state": sid, "present": durable, "absent": lost}
            droles = sorted({_role(free, p) for p in durable})
            lroles = sorted({_role(free, p) for p in lost})
        else:  # no minimiser, or enough causes: the rest by check alone
            rep, droles, lroles = f, [], []
        members, rest = [], []
        for g in todo:
            ok = g is f or (checks[id(g)] == check and set(droles) <= _roles(space, g))
            (members if ok else rest).append(g)
        todo = rest
        minimised = recheck is not None and rep is not f
        out.append({"key": cluster_key(check, droles) + ("" if minimised else " | not minimised"),
                    "check": check, "durable": droles, "lost": lroles,
                    "explanation": explanation(check, droles, lroles) if minimised
                    else f"{check} (cause not minimised)",
                    "count": len(members), "states": sum(g["size"] for g in members),
                    "points": sorted(set().union(*(points[(g["at"], g["state"])] for g in members))),
                    "representative": {"state": rep["state"], "point": rep["point"], "reason": rep["reason"],
                                       "deciding_writes": len(rep["present"]) + len(rep["absent"]),
                                       "explanation": explain(space, rep) if explain else []}})
    return merge_clusters([out])


def sort_clusters(clusters: list[dict]) -> list[dict]:
    return sorted(clusters, key=lambda c: (-c["count"], -c["states"], c["key"]))


def merge_clusters(lists: list[list[dict]]) -> list[dict]:
    """Clusters of several shards as one list: counts add, the smaller representative stays."""
    merged: dict[str, dict] = {}
    for clusters in lists:
        for c in clusters:
            m = merged.get(c["key"])
            if m is None:
                merged[c["key"]] = {**c, "points": list(c["points"])}
                continue
            m["count"] += c["count"]
            m["states"] += c["states"]
            m["points"] = sorted(set(m["points"]) | set(c["points"]))
            rep, new = m["representative"], c["representative"]
            if (new["deciding_writes"], new["point"], new["state"]) < (rep["deciding_writes"], rep["point"],
                                                                       rep["state"]):
                m.update(representative=new, lost=c["lost"], explanation=c["explanation"])
    return sort_clusters(list(merged.values()))
