"""Durable evidence under "ordered": a later write's word that an earlier write was durable.

An ordered origin (format 5) and an ordered object map block (format 6) name, in `seen`, the
generation of other files' newest origins and of object map blocks that a barrier (or a
completed FUA) had made durable when they were issued.  Such a claim is true in every honest
crash state, so a file whose newest valid origin is older than a claim, or an object map block
older than one, lost a write or had it misdirected over: a stale-block.  Recovery
(`OrderedProtocol.lost_origins`) and fsck hold the claims against what they loaded with this one
judgement, so fsck names what recovery refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from .format import OBJ_PER_BLOCK, OBJ_PER_SECTOR, OBJMAP_ID


@dataclass(frozen=True)
class Claim:
    gen: int  # the generation said to be durable
    by: str  # who says so: "file 3's origin", "object map block 7"
    by_gen: int  # the generation of the block that says so


def gather(claims: dict, seen, by: str, by_gen: int) -> None:
    """Keep, per file id (or OBJMAP_ID | object map index), the newest generation claimed."""
    for x, g in seen:
        if x not in claims or g > claims[x].gen:
            claims[x] = Claim(g, by, by_gen)


def judge(claims: dict, *, file_gens: dict, entries, objmap_gens: dict, objmap_start: int,
          refused: set, torn: set = frozenset()) -> list[tuple[int, str]]:
    """(what is named, problem text) for every claim the medium contradicts.

    `file_gens`: the newest valid origin's generation of each file that loaded; `entries`: the
    object map entries; `objmap_gens`: each object map block's generation; `refused`: the names
    of files already refused by name (their load failed); `torn`: the object map blocks read torn
    (format.objmap_torn).  A claim about a file removed since (its object map block written at or
    after the generation claimed) or about a file id that now holds a file created after it (ids
    are reused) is no loss.

    A torn block's generation (its header, in sector 0) is its entries' only for the entries in
    sector 0: another sector may hold the write in flight at the crash, a remove issued after the
    generation claimed was durable, while sector 0 still holds the write before.  So a free entry
    outside sector 0 of a torn block that once held a file is taken as such a remove: the medium
    cannot tell it from a lost create the in-flight write tore over (docs/protocols.md, "A torn
    object map write")."""
    out = []
    for x, c in sorted(claims.items()):
        g, by = c.gen, f"{c.by} (generation {c.by_gen})"
        if x & OBJMAP_ID:  # an object map block: a lost create, remove or rename
            b = objmap_start + (x & ~OBJMAP_ID)
            if b in objmap_gens and objmap_gens[b] < g:
                out.append((x, f"stale-block: object map block {b} is generation {objmap_gens[b]}, but {by} was "
                               f"written after generation {g} of it was durable: a lost or misdirected-over write"))
            continue
        if x >= len(entries) or file_gens.get(x, -1) >= g:
            continue
        e, home = entries[x], objmap_start + x // OBJ_PER_BLOCK
        if x not in file_gens and e.in_use and e.name in refused:
            continue  # already refused by name
        if not e.in_use and (objmap_gens.get(home, 0) >= g or home in torn and _torn_remove(x, e)):
            continue  # removed after generation g: the object map says so (or, torn, may)
        if e.in_use and e.origin_gen > g:
            continue  # the entry holds a file created after g: the one named was removed
        what = (f"its newest valid origin is generation {file_gens[x]}" if x in file_gens else
                "it has no valid origin" if e.in_use else
                f"object map block {home} (generation {objmap_gens.get(home, 0)}) does not list it")
        out.append((x, f"file {x}{f' ({e.name!r})' if e.in_use else ''}: stale-block: {what}, but {by} was written "
                       f"after generation {g} of file {x} was durable: a lost or misdirected-over write"))
    return out


def _torn_remove(x: int, e) -> bool:
    """Whether free entry `x` of a torn object map block may be a remove in flight: outside sector
    0 (which holds the header) and once used (a remove keeps the birth; births start at 1)."""
    return x % OBJ_PER_BLOCK >= OBJ_PER_SECTOR and e.birth != 0


def hidden_by_tear(entries, torn, objmap_start: int) -> bool:
    """Whether a torn object map block may be a remove in flight (`_torn_remove`): its generation
    is then in a sector 0 that did not land, and the removed file's origins -- the newest commit,
    perhaps -- are unreachable (its entry is free), so the newest commit recovery finds says
    nothing of what was durable (`stale_stamp` cannot be judged)."""
    for b in torn:
        lo = (b - objmap_start) * OBJ_PER_BLOCK
        if any(not e.in_use and _torn_remove(lo + k, e) for k, e in enumerate(entries[lo:lo + OBJ_PER_BLOCK])):
            return True
    return False


def stale_stamp(b: int, stamp: int, newest: int) -> str:
    """The problem of a bitmap block whose sync stamped it after generation `stamp` was durable
    (OrderedProtocol.sync), when the newest origin or object map block found is older."""
    return (f"stale-block: bitmap block {b} was written after generation {stamp} was durable, but the newest "
            f"origin or object map block found is generation {newest}: a durable commit was lost or misdirected over")
