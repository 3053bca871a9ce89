"""The ordered protocol's two origin slots: which one is the file, and when damage refuses it.

Under `ordered`/`none` a file's origin slots are its commit point and are written alternately,
so after a crash one of them may hold a torn write: the other is then the file.  Format 3 frames
every sector of an origin with its own crc (format.frame), so a slot failing its block crc says
which it is: every sector passing its own is a torn write (each sector old or new), some sectors
failing their own is damage (bit rot, garbage sectors), and all failing is a block that never
held an origin (bit rot flips a few bits; a slot the store has not written yet holds anything).  Damage in a slot that may have held the
file's newest origin refuses the file by name (`checksum`) instead of silently taking the other
slot, which would roll the file back.

A damaged sector is only evidence of damage when the slot's previous content was itself a framed
block: a torn write leaves sectors of whatever the block held before.  So a create writes a
*blank* into both slots (`blanks`: a framed origin block naming the file with birth 0, which
no file's entry matches) with the used-list head, before the barrier that precedes its first
origin: from then on every write to either slot lands on a framed block, and a torn one leaves
every sector passing its own crc.  Damage in a slot is then always damage: in a slot that may
have held the newest origin (its intact sector 0 does not show an older generation than the
other slot's) the file is refused; in a provably older one fsck names it and the file stands.
Both callers -- recovery and fsck -- use `choose`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CorruptError
from .format import HDR, HEADER, MAGIC, T_ORIGIN, ObjEntry, Origin, damaged_sector, unframe, weak_detection


@dataclass(frozen=True)
class Damage:
    """A slot with a sector failing its own crc; `gen` is what its intact sector 0 says (else None)."""

    slot: int
    block: int
    sector: int
    gen: int | None

    def message(self) -> str:
        return f"origin slot {self.block}: sector {self.sector} fails its own crc (damage, not a torn write)"


def _damage(slot: int, b: int, raw: bytes, fid: int, e: ObjEntry) -> Damage | None:
    s = damaged_sector(raw, b)
    if s is None:  # torn (each sector old or new), or no origin ever completed here
        return None
    gen = None
    if s != 0:  # sector 0 passes its own crc: its header and the origin's first fields are as written
        magic, t, _, _, block, hgen = HEADER.unpack_from(raw)
        ofid, birth = Origin.FMT.unpack_from(unframe(raw), HDR)[:2]
        if magic == MAGIC and t == T_ORIGIN and block == b and ofid == fid and birth == e.birth:
            gen = hgen
    return Damage(slot, b, s, gen)


def choose(fid: int, e: ObjEntry, read) -> tuple[tuple[int, Origin] | None, list[Damage], list[Origin]]:
    """(slot, origin) of the newest valid origin slot that belongs to this file (or None), the
    damaged slots provably older than it (fsck names them; the file is still right), and every
    valid origin of the file (what each names of other files is evidence, protocols.py).

    Raises CorruptError when a slot that may have held the newest origin cannot be trusted: it
    holds another block's write or a bad field, or it is damaged (see the module docstring)."""
    best, damaged, valid = None, [], []
    for slot, b in enumerate((e.origin_a, e.origin_b)):
        if not b:
            continue
        raw = read(b)
        try:
            o = Origin.unpack(raw, b)
        except CorruptError as err:
            if err.fault != "checksum":
                raise type(err)(f"origin slot {b}: {err}") from None
            d = None if weak_detection() else _damage(slot, b, raw, fid, e)
            if d is not None:
                damaged.append(d)
            continue
        if o.file_id == fid and o.birth == e.birth:
            valid.append(o)
            if best is None or o.gen > best[1].gen:
                best = (slot, o)
    older = []
    for d in damaged:
        if best is not None and d.gen is not None and d.gen < best[1].gen:
            older.append(d)
            continue
        other = f"the other slot holds generation {best[1].gen}" if best else "no other slot holds a valid origin"
        raise CorruptError(f"{d.message()}; it may have held the file's newest origin ({other})")
    return best, older, valid


def blanks(fid: int, e: ObjEntry, gen: int) -> dict[int, bytes]:
    """What a create writes into both origin slots before the file's first origin (see above)."""
    return {b: Origin(fid, 0, gen, 0, 0, 0, 0).pack(b) for b in (e.origin_a, e.origin_b) if b}
