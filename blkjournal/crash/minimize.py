"""Explain a failing crash state in the writer's own terms, with only the writes that matter.

The explorer checks equivalence classes: a failing class fixes a few free writes (persisted or
lost) and leaves the rest undecided because the check never read a block they touch.  That *is*
the minimal failing state: the fixed writes are the fewest included/dropped writes that still
fail (dropping any other changes nothing the recovery looks at).  `explain` names them by the
roles the store gave its writes: "journal txn 5 (put f1)", "data block 3 of file 7", ...
"""

from __future__ import annotations


def explain(space, failure: dict) -> list[str]:
    pi = failure["point"]
    p = space.points[pi]
    free = space.free_writes(failure.get("at", pi))
    lines = [f"crash {p.label}" + (f" (after {p.last_mark})" if p.last_mark else "")]
    torn = failure.get("torn") or {}
    for pos in failure["present"]:
        op = free[pos].op
        what = f"durable: {op.role or op.describe()}"
        if pos in torn:
            from .states import pattern

            what += f" -- torn: only sectors {list(pattern(free[pos].n, torn[pos]))} of {free[pos].n}"
        lines.append(what)
    absent = failure["absent"]
    for pos in absent[:8]:
        op = free[pos].op
        lines.append(f"lost: {op.role or op.describe()}")
    if len(absent) > 8:
        lines.append(f"lost: ... and {len(absent) - 8} more writes")
    rest = len(free) - len(failure["present"]) - len(failure["absent"])
    if rest:
        lines.append(f"({rest} other unflushed writes do not matter: recovery never reads what they wrote)")
    return lines
