"""The line `hwcheck write` prints before it writes: what durability the device claims.

The facts come from `blkjournal.properties` (sysfs: write cache, native FUA, rotational, model,
firmware, sector sizes).  hwcheck adds what they mean for this experiment: a disk without a
volatile cache makes flushes free and any loss a plain lie; FUA without native support is
emulated by the kernel with a flush before and after every write (two flushes per record).

The same facts go into the acks log's run header, so a verify report names the disk it judged.
"""

from __future__ import annotations

def describe(path: str, barrier: str, logical_block_size: int) -> tuple[str, dict]:
    """(one-line summary, facts for the run header).  Never fails: it only informs."""
    # The single call site of the device-properties probe (blkjournal/properties.py).
    try:
        from ..properties import probe

        props = probe(path, logical_block_size=logical_block_size)
    except Exception as e:  # noqa: BLE001 -- informative only; the probe module is still evolving
        return f"preflight: device properties unavailable ({e})", {}
    facts = {
        "write_cache": props.write_cache,
        "fua": props.fua,
        "fua_mode": props.fua_mode,
        "rotational": props.rotational,
        "model": props.model,
        "firmware": props.firmware,
        "logical_block_size": props.logical_block_size,
        "physical_block_size": props.physical_block_size,
    }
    notes = []
    if props.write_cache == "write through":
        notes.append("no volatile cache: flushes cost nothing and any loss is a lie")
    elif barrier == "fua" and props.fua is False:
        notes.append("--barrier fua here costs two flushes per record")
    elif barrier == "none":
        notes.append("--barrier none is a control run: acks without barriers, verify must find lies "
                     "if the cache loses anything")
    line = "preflight: " + props.preflight() + "".join(f"; {n}" for n in notes)
    return line, facts
