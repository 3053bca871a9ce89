"""Workloads: seeded random operation sequences and named ones, with the model that judges them.

An operation is a plain record (kind, file name, offset, size, data seed) so a workload can be
written to JSON, shipped into a VM, and replayed on the store and on the model alike.  The model
is a dict of name -> bytes after each operation; the checker compares recovered crash states with
it.  After every operation the runner marks the write stream ("op K: ...") so every crash point
knows which operations had completed.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from ..device import BLOCK_SIZE
from ..untrusted import integer, text

KINDS = ("create", "put", "write", "truncate", "delete", "sync")
FIELDS = {"kind", "name", "offset", "size", "seed"}
MAX_NAME_CHARS = 110
MAX_FILE = 1 << 30  # bytes: an offset + size past this is no workload the model should hold in memory
MODEL_BUDGET = 256 << 20  # bytes the model may build over all ops (see model_cost)


@dataclass(frozen=True)
class Operation:
    kind: str
    name: str = ""
    offset: int = 0
    size: int = 0
    seed: int = 0

    def data(self) -> bytes:
        return random.Random(self.seed).randbytes(self.size) if self.size else b""

    def describe(self) -> str:
        if self.kind == "write":
            return f"write {self.name} @{self.offset}+{self.size}"
        if self.kind == "put":
            return f"put {self.name} ({self.size} bytes)"
        if self.kind == "truncate":
            return f"truncate {self.name} to {self.size}"
        if self.kind in ("create", "delete"):
            return f"{self.kind} {self.name}"
        return "sync"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d) -> "Operation":
        """An op read from a workload file; ValueError unless every field has its type and range."""
        if not isinstance(d, dict) or not set(d) <= FIELDS:
            raise ValueError(f"an operation is an object with fields {', '.join(sorted(FIELDS))}")
        kind = d.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown operation kind {str(kind)[:20]!r}")
        return cls(kind, text(d.get("name", ""), "name", MAX_NAME_CHARS),
                   integer(d.get("offset", 0), "offset", 0, MAX_FILE), integer(d.get("size", 0), "size", 0, MAX_FILE),
                   integer(d.get("seed", 0), "seed", 0, 1 << 64))


def random_workload(seed: int, nops: int, *, nfiles: int = 4, max_offset: int = 96 * 1024,
                    sync_every: float = 0.25) -> list[Operation]:
    """nops seeded random operations over a few files; always ends with a sync.

    Writes cover whole blocks, partial blocks and block-straddling ranges, and sometimes land far
    past EOF (holes); truncates go up and down, often mid-block.
    """
    rnd = random.Random(seed)
    live: set[str] = set()
    ops: list[Operation] = []
    names = [f"f{i}" for i in range(nfiles)]
    while len(ops) < nops - 1:
        r = rnd.random()
        if r < sync_every:
            ops.append(Operation("sync"))
            continue
        if not live or r < sync_every + 0.08:
            free = [n for n in names if n not in live]
            if free:
                name = rnd.choice(free)
                live.add(name)
                if rnd.random() < 0.5:
                    ops.append(Operation("create", name))
                else:
                    ops.append(Operation("put", name, 0, rnd.choice([0, 100, BLOCK_SIZE, 3 * BLOCK_SIZE + 17]),
                                         rnd.getrandbits(32)))
                continue
        name = rnd.choice(sorted(live))
        r2 = rnd.random()
        if r2 < 0.6:
            size = rnd.choice([1, 512, BLOCK_SIZE, BLOCK_SIZE + 100, 2 * BLOCK_SIZE, rnd.randrange(1, 3 * BLOCK_SIZE)])
            off = rnd.choice([0, rnd.randrange(0, max_offset), rnd.randrange(0, max_offset // BLOCK_SIZE) * BLOCK_SIZE])
            ops.append(Operation("write", name, off, size, rnd.getrandbits(32)))
        elif r2 < 0.85:
            ops.append(Operation("truncate", name, 0, rnd.choice([0, rnd.randrange(0, max_offset),
                                                                   rnd.randrange(0, 8) * BLOCK_SIZE])))
        elif r2 < 0.93:
            ops.append(Operation("delete", name))
            live.discard(name)
        else:
            ops.append(Operation("put", name, 0, rnd.randrange(0, 2 * BLOCK_SIZE), rnd.getrandbits(32)))
    ops.append(Operation("sync"))
    return ops


def append_workload() -> list[Operation]:
    """Seed B's example: a file with one block, made durable, then one block appended and synced."""
    return [Operation("put", "file", 0, BLOCK_SIZE, 1), Operation("sync"),
            Operation("write", "file", BLOCK_SIZE, BLOCK_SIZE, 2), Operation("sync")]


def grow_workload() -> list[Operation]:
    """A file whose durable used list outgrows its first block (509 entries), then shrinks again."""
    return [Operation("put", "big", 0, 500 * BLOCK_SIZE, 3), Operation("sync"),
            Operation("write", "big", 500 * BLOCK_SIZE, 20 * BLOCK_SIZE, 4), Operation("sync"),
            Operation("truncate", "big", 0, 100 * BLOCK_SIZE), Operation("sync")]


def unsynced_workload() -> list[Operation]:
    """Long runs of operations between syncs: the journal fills and checkpoints with transactions
    that are not yet durable (the case the checkpoint's first flush exists for)."""
    return random_workload(7, 160, sync_every=0.03)


NAMED = {"append": append_workload, "grow": grow_workload, "unsynced": unsynced_workload}


def model_cost(ops: list[Operation]) -> int:
    """Bytes model_states will build, computed from sizes alone; ValueError when an op names a
    file the model does not have at that point (a workload file that was edited or damaged)."""
    sizes: dict[str, int] = {}
    cost = 0
    for k, op in enumerate(ops):
        if op.kind in ("write", "truncate", "delete") and op.name not in sizes:
            raise ValueError(f"op {k} ({op.kind}) names {op.name[:40]!r}, which does not exist then")
        if op.kind == "create":
            sizes[op.name] = 0
        elif op.kind == "put":
            sizes[op.name] = op.size
        elif op.kind == "write":
            sizes[op.name] = max(sizes[op.name], op.offset + op.size)
        elif op.kind == "truncate":
            sizes[op.name] = op.size
        elif op.kind == "delete":
            del sizes[op.name]
        if op.kind in ("put", "write", "truncate"):
            cost += sizes[op.name]
        cost += 64 * len(sizes)  # the per-op dict
    return cost


def model_states(ops: list[Operation]) -> list[dict[str, bytes]]:
    """The logical state before any op (index 0) and after each op (index k+1)."""
    state: dict[str, bytes] = {}
    out = [dict(state)]
    for op in ops:
        if op.kind == "create":
            state[op.name] = b""
        elif op.kind == "put":
            state[op.name] = op.data()
        elif op.kind == "write":
            cur = bytearray(state[op.name])
            end = op.offset + op.size
            if len(cur) < end:
                cur.extend(bytes(end - len(cur)))
            cur[op.offset:end] = op.data()
            state[op.name] = bytes(cur)
        elif op.kind == "truncate":
            cur = state[op.name]
            state[op.name] = cur[:op.size] + bytes(max(0, op.size - len(cur)))
        elif op.kind == "delete":
            del state[op.name]
        out.append(dict(state))
    return out


def apply(store, op: Operation) -> None:
    """Run one operation on a Store."""
    if op.kind == "create":
        store.create(op.name)
    elif op.kind == "put":
        store.put(op.name, op.data())
    elif op.kind == "write":
        store.write(op.name, op.offset, op.data())
    elif op.kind == "truncate":
        store.truncate(op.name, op.size)
    elif op.kind == "delete":
        store.remove(op.name)
    elif op.kind == "sync":
        store.sync()
    else:
        raise ValueError(op.kind)


def mark_text(k: int, op: Operation) -> str:
    return f"op {k}: {op.describe()}"


def run(store, ops: list[Operation]) -> None:
    """Apply every op with a mark after each; marks are how crash points map to ops."""
    for k, op in enumerate(ops):
        apply(store, op)
        store.dev.mark(mark_text(k, op))


def parse_mark(text: str) -> int | None:
    """The op index a mark names, or None for other marks."""
    if text.startswith("op ") and ":" in text:
        try:
            return int(text[3:text.index(":")])
        except ValueError:
            return None
    return None
