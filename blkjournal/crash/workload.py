"""Workloads: seeded random operation sequences and named ones, with the model that judges them.

An operation is a plain record (kind, file name, offset, size, data seed) so a workload can be
written to JSON, shipped into a VM, and replayed on the store and on the model alike.  The model
is a dict of name -> bytes after each operation; the checker compares recovered crash states with
it.  After every operation the runner marks the write stream ("op K: ...") so every crash point
knows which operations had completed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..device import BLOCK_SIZE
from ..untrusted import integer, text

KINDS = ("create", "put", "write", "truncate", "delete", "sync")
MKFS_MARK = "mkfs"  # set after mkfs (or, in a second phase, after recovery): the workload starts here
RECOVERY_MARK = "recovery"  # set before a second phase's recovery (multicrash.py)
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
        """The fields as asdict() gives them (all plain values), without its deep copy: a run's
        identity hashes every op at the end of each exploration."""
        return {"kind": self.kind, "name": self.name, "offset": self.offset, "size": self.size, "seed": self.seed}

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
                    sync_every: float = 0.25, existing: tuple[str, ...] = ()) -> list[Operation]:
    """nops seeded random operations over a few files; always ends with a sync.

    Writes cover whole blocks, partial blocks and block-straddling ranges, and sometimes land far
    past EOF (holes); truncates go up and down, often mid-block.  `existing` names files already
    in the store (a second phase after a crash works on what recovery left).
    """
    rnd = random.Random(seed)
    live: set[str] = set(existing)
    ops: list[Operation] = []
    names = [f"f{i}" for i in range(nfiles)] + sorted(set(existing) - {f"f{i}" for i in range(nfiles)})
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


def pressure_workload(seed: int = 0, nops: int = 60) -> list[Operation]:
    """Allocator pressure on a 1 MiB image (~185 data blocks): fill, free and refill.

    Files of 8..24 blocks are written, overwritten, truncated and deleted while up to ~70 blocks
    are live, so the next-fit allocator wraps round within a few syncs and hands out blocks that
    an operation a moment ago released -- the reuse that must wait until the release is durable
    (jbd2/ext3's "block reuse before the release is durable").
    """
    rnd = random.Random(f"pressure:{seed}")
    ops: list[Operation] = []
    sizes: dict[str, int] = {}  # live files -> size in blocks (rounded up)
    names = [f"p{i}" for i in range(5)]
    budget = 70
    while len(ops) < nops - 1:
        live = sum(sizes.values())
        r = rnd.random()
        if r < 0.2:
            ops.append(Operation("sync"))
            continue
        free = [n for n in names if n not in sizes]
        if free and (not sizes or r < 0.45):
            nb = rnd.randrange(8, 25)
            if live + nb <= budget:
                name = rnd.choice(free)
                ops.append(Operation("put", name, 0, nb * BLOCK_SIZE - rnd.choice([0, 0, 100]), rnd.getrandbits(32)))
                sizes[name] = nb
                continue
        if not sizes:
            continue
        name = rnd.choice(sorted(sizes))
        r2 = rnd.random()
        if r2 < 0.3 or live > budget - 8:
            ops.append(Operation("delete", name))
            del sizes[name]
        elif r2 < 0.6:  # overwrite most of it: every block moves, the old ones are released
            n = sizes[name]
            off = rnd.randrange(0, 2) * BLOCK_SIZE + rnd.choice([0, 0, 300])
            size = min(n * BLOCK_SIZE - off, rnd.randrange(4, 17) * BLOCK_SIZE)
            ops.append(Operation("write", name, off, size, rnd.getrandbits(32)))
        elif r2 < 0.8:  # truncate down mid-block (a partial last block), then perhaps extend again
            n = sizes[name]
            cut = rnd.randrange(0, n * BLOCK_SIZE)
            ops.append(Operation("truncate", name, 0, cut))
            sizes[name] = -(-cut // BLOCK_SIZE)
            if rnd.random() < 0.5 and sizes[name] + 4 + live <= budget:
                ops.append(Operation("write", name, cut + rnd.randrange(0, 3 * BLOCK_SIZE), rnd.randrange(1, 3 * BLOCK_SIZE),
                                     rnd.getrandbits(32)))
                sizes[name] = -(-(ops[-1].offset + ops[-1].size) // BLOCK_SIZE)
        else:  # a partial-block overwrite
            n = sizes[name]
            ops.append(Operation("write", name, rnd.randrange(0, n * BLOCK_SIZE), rnd.randrange(1, BLOCK_SIZE),
                                 rnd.getrandbits(32)))
            sizes[name] = max(n, -(-(ops[-1].offset + ops[-1].size) // BLOCK_SIZE))
    return ops[:nops - 1] + [Operation("sync")]


def wrap_workload(seed: int = 0, nops: int = 300) -> list[Operation]:
    """Many small operations, few syncs, on a 2 MiB image: its 63-block journal wraps many times
    (checkpoints with unsynced transactions in the log, transactions placed at the wrap, stale
    transactions from the previous lap behind the head).  Every ~30 ops a 150..170-block file is
    rewritten whole: a transaction of several journal blocks, which over an earlier lap can sit
    on sealed blocks of older transactions -- only its commit checksum tells them apart."""
    rnd = random.Random(f"wrap:{seed}")
    ops: list[Operation] = []
    live: dict[str, int] = {}
    names = [f"w{i}" for i in range(6)]
    while len(ops) < nops - 1:
        r = rnd.random()
        if len(ops) % 30 == 29:
            ops.append(Operation("put", "W", 0, rnd.randrange(150, 171) * BLOCK_SIZE, rnd.getrandbits(32)))
        elif r < 0.05:
            ops.append(Operation("sync"))
        elif r < 0.2 or not live:
            name = rnd.choice(names)
            if name in live:
                ops.append(Operation("delete", name))
                del live[name]
            else:
                n = rnd.choice([0, 100, BLOCK_SIZE, 2 * BLOCK_SIZE + 5])
                ops.append(Operation("put", name, 0, n, rnd.getrandbits(32)))
                live[name] = n
        else:
            name = rnd.choice(sorted(live))
            if rnd.random() < 0.8:
                off = rnd.randrange(0, 6 * BLOCK_SIZE)
                ops.append(Operation("write", name, off, rnd.choice([1, 200, BLOCK_SIZE]), rnd.getrandbits(32)))
                live[name] = max(live[name], ops[-1].offset + ops[-1].size)
            else:
                cut = rnd.randrange(0, max(1, live[name]))
                ops.append(Operation("truncate", name, 0, cut))
                live[name] = cut
    ops.append(Operation("sync"))
    return ops


def big_workload(seed: int = 0) -> list[Operation]:
    """Files past the origin's 128 map slots (map height 1, then 2 through a far sparse write),
    used lists of hundreds of entries (well past one 512-byte sector), multi-block journal
    transactions, partial-block overwrites and truncate down then extend -- several files
    changed between syncs."""
    rnd = random.Random(f"big:{seed}")
    d = lambda: rnd.getrandbits(32)  # noqa: E731
    far = (128 << 8) + 40  # file block index needing map height 2
    return [Operation("put", "a", 0, 200 * BLOCK_SIZE + 123, d()), Operation("put", "s", 0, 3 * BLOCK_SIZE, d()),
            Operation("sync"),
            Operation("write", "a", 150 * BLOCK_SIZE + 700, 2 * BLOCK_SIZE, d()),  # partial blocks at height 1
            Operation("write", "s", far * BLOCK_SIZE, 300, d()),  # sparse: map height 2
            Operation("truncate", "a", 0, 130 * BLOCK_SIZE + 77),
            Operation("sync"),
            Operation("write", "a", 170 * BLOCK_SIZE, BLOCK_SIZE + 1, d()),  # extend past the cut: zeros between
            Operation("write", "s", 5 * BLOCK_SIZE + 1, 10, d()),
            Operation("put", "b", 0, 140 * BLOCK_SIZE, d()),
            Operation("sync"),
            Operation("delete", "a"),
            Operation("truncate", "s", 0, 2 * BLOCK_SIZE + 9),
            Operation("write", "b", 0, 90 * BLOCK_SIZE, d()),
            Operation("sync")]


def relap_workload() -> list[Operation]:
    """Two laps of the 63-block journal (2 MiB image) that put the same 160-block file at the same
    log position: the second lap's two-block transaction lies over the first lap's, whose second
    block is a validly sealed block of an older transaction.  Torn, only the commit checksum
    tells the two apart (jbd2's "recovery trusts an unchecked descriptor")."""
    ops = [Operation("create", "x"), Operation("put", "W", 0, 160 * BLOCK_SIZE, 10), Operation("sync")]
    ops += [Operation("truncate", "x", 0, (k % 2 + 1) * BLOCK_SIZE) for k in range(61)]  # one journal block each
    return ops + [Operation("sync"), Operation("put", "W", 0, 160 * BLOCK_SIZE, 11), Operation("sync")]


def stream_workload(seed: int = 0, nops: int = 40) -> list[Operation]:
    """Runs of streaming writes (64..160 blocks each, journal/flush's early, staged path) with no
    sync or other operation between them: under journal/flush they join one running transaction
    (protocols.JournalProtocol.join), committed by what follows -- a sync, a small write, a
    truncate, a put, or a write that no longer fits with it in the 63-block log.  Appends and
    overwrites of two files, partial first and last blocks, an overwrite of blocks the same group
    wrote a moment ago (freed, held); about 14 MiB written per seed on a 4 MiB image (files of at
    most 200 blocks), so checkpoints (with a running transaction to commit first) come too."""
    rnd = random.Random(f"stream:{seed}")
    ops: list[Operation] = [Operation("create", "s0"), Operation("create", "s1")]
    size = {"s0": 0, "s1": 0}  # bytes
    cap = 200 * BLOCK_SIZE
    while len(ops) < nops - 1:
        for _ in range(rnd.randrange(2, 6)):  # a run of streaming writes
            name = rnd.choice(sorted(size))
            n = rnd.randrange(64, 161) * BLOCK_SIZE - rnd.choice([0, 0, 100])
            if size[name] + n <= cap and rnd.random() < 0.6:
                off = size[name] + rnd.choice([0, 0, 300])  # an append (sometimes leaving a gap mid-block)
            else:
                off = rnd.randrange(0, max(1, min(size[name], cap - n))) // 512 * 512  # an overwrite
            ops.append(Operation("write", name, off, n, rnd.getrandbits(32)))
            size[name] = max(size[name], off + n)
        r = rnd.random()
        if r < 0.35:
            ops.append(Operation("sync"))
        elif r < 0.5:
            name = rnd.choice(sorted(size))
            ops.append(Operation("write", name, rnd.randrange(0, size[name] + 1), rnd.randrange(1, 3 * BLOCK_SIZE),
                                 rnd.getrandbits(32)))
            size[name] = max(size[name], ops[-1].offset + ops[-1].size)
        elif r < 0.6:
            name = rnd.choice(sorted(size))
            size[name] = rnd.randrange(0, size[name] + 1)
            ops.append(Operation("truncate", name, 0, size[name]))
        elif r < 0.65:
            ops.append(Operation("put", "p", 0, rnd.randrange(0, 2 * BLOCK_SIZE), rnd.getrandbits(32)))
    return ops[:nops - 1] + [Operation("sync")]


NAMED = {"append": append_workload, "grow": grow_workload, "unsynced": unsynced_workload,
         "pressure": pressure_workload, "wrap": wrap_workload, "big": big_workload, "relap": relap_workload,
         "stream": stream_workload}
# image size each named workload wants (the default for the rest is 4 MiB)
IMAGE_SIZE = {"grow": 8 << 20, "pressure": 1 << 20, "wrap": 2 << 20, "big": 4 << 20, "relap": 2 << 20,
              "stream": 4 << 20}
SEEDED = ("pressure", "wrap", "big", "stream")  # named workloads that take the seed


def model_cost(ops: list[Operation], initial: dict[str, int] | None = None) -> int:
    """Bytes model_states will build, computed from sizes alone (`initial`: the sizes of the files a
    second phase starts with); ValueError when an op names a file the model does not have at that
    point (a workload file that was edited or damaged)."""
    sizes: dict[str, int] = dict(initial or {})
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


def model_states(ops: list[Operation], initial: dict[str, bytes] | None = None) -> list[dict[str, bytes]]:
    """The logical state before any op (index 0: `initial`, default empty) and after each op (index k+1)."""
    return list(_model_steps(ops, initial))


class ModelStates:
    """model_states(ops, initial) as a sequence whose states are made when first asked for, in
    order.  The explorer's jobs each judge their own range of crash points: made in the jobs
    (after the fork) rather than before it, the models leave the set-up that no job shares, and
    the first job, whose range ends part-way through the run, makes only the states up to there."""

    def __init__(self, ops: list[Operation], initial: dict[str, bytes] | None = None) -> None:
        self._steps = _model_steps(ops, initial)
        self._made: list[dict[str, bytes]] = []
        self._n = len(ops) + 1

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self._n))]
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError(k)
        made = self._made
        while len(made) <= k:
            made.append(next(self._steps))
        return made[k]


def _model_steps(ops: list[Operation], initial: dict[str, bytes] | None):
    state: dict[str, bytes] = dict(initial or {})
    yield dict(state)
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
        yield dict(state)


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


# The fixed, seeded mix the mutation suite (`make mutate`) searches with, cheapest first:
# (workload, seed, ops (0: the workload's own), extra crashtest options; "protocols" limits an entry).
MIX = (("random", 0, 200, {}), ("random", 1, 200, {}), ("pressure", 0, 60, {}), ("pressure", 1, 60, {}),
       ("random", 2, 200, {}), ("random", 3, 200, {}), ("unsynced", 0, 0, {}), ("pressure", 2, 60, {}),
       ("big", 0, 0, {}), ("grow", 0, 0, {}), ("wrap", 0, 300, {}), ("random", 0, 30, {"torn": True}),
       ("relap", 0, 0, {"torn": True}), ("random", 0, 60, {"torn": True, "protocols": ("ordered",)}),
       ("random", 4, 60, {"torn": True, "protocols": ("ordered",)}), ("stream", 0, 0, {}))
