"""Content-keyed memo of pure decoders, switched on only while the crash explorer checks states.

The explorer recovers, fscks and reads back thousands of crash states of one run, and nearly
every block they decode is byte-for-byte one they decoded a moment ago (the forced journal
transactions, the object map, the origins).  A decoder marked `@pure` is a function of its
arguments alone -- block bytes and plain values -- so its result can be looked up by those
arguments instead of recomputed: the bytes are the key, so a block whose content differs in any
byte is decoded afresh, and a decoder that refused a block (a `BlkError`) refuses it again with
a fresh error of the same class and message.  Nothing about the format is known here, and the
reads themselves still happen (the explorer's read tracking sees every one).

Only results that cannot be changed by the caller are kept (None, numbers, bytes, memoryviews
of bytes, frozen dataclasses, tuples of those); a list is kept as a tuple and handed out as a
fresh list.  Any other result, an unhashable argument or any other exception goes straight
through, every time.  The key includes every `depends_on` mode (format.py's test-only
`weak_detection()` changes what its checks accept).  Off (the default), a marked function costs one extra call.

`replayed()` does the same for a computation that reads blocks through a `read` function (the
store's load, fsck past the journal): its former runs are kept as read traces, and a run that
reads the same contents again -- the same reads are made, in the same order -- gets the result.
"""

from __future__ import annotations

import dataclasses
import functools

from crc32c import crc32c as _crc

from .errors import BlkError

MAX_ENTRIES = 4096  # per decoder (a few MiB of blocks); a full table is emptied and refilled

_state = {"on": False}
_tables: list[dict] = []
_modes: list = []  # zero-argument callables whose value changes what decoders accept (part of every key)


def depends_on(mode) -> None:
    """Make `mode()` part of every key: e.g. format.weak_detection, a test-only switch."""
    global _mode_key
    _modes.append(mode)
    _mode_key = mode if len(_modes) == 1 else lambda: tuple(m() for m in _modes)


def _mode_key():
    return ()


_immutable: set = set()  # classes whose instances never change: list elements keyed by identity


_QUICK = {bytes}  # list elements an identity key may name: bytes and the immutable classes


def immutable(cls):
    """Declare `cls`'s instances values that never change (a frozen record of plain fields): as
    elements of a list argument they are keyed by identity (the object is kept, so its id is not
    reused) instead of hashed, field by field, at every call -- an object map block's entries."""
    _immutable.add(cls)
    _QUICK.add(cls)
    _FLAT.add(cls)
    return cls


def enable(on: bool = True) -> None:
    """Switch memoisation on (the explorer) or off; either way every table starts empty."""
    _state["on"] = on
    clear()


def enabled() -> bool:
    return _state["on"]


def clear() -> None:
    for t in _tables:
        t.clear()
    _crcs.clear()
    _trace_nodes[0] = 0


_RAISE = object()  # marks a memoised refusal: (_RAISE, exception class, args)


_PLAIN = {type(None), int, float, str, bytes}


_FLAT = {type(None), int, float, str, bytes, bool}  # types each of whose instances is keepable by itself:
# the plain ones and the immutable classes (immutable() adds to it); a tuple of them is judged at C speed
_frozen_fields: dict = {}  # class -> its fields' names if a frozen dataclass, else None


def _keepable(x) -> bool:
    t = type(x)
    if t in _FLAT or isinstance(x, (int, float, str, bytes)):
        return True
    if t is tuple:
        if set(map(type, x)) <= _FLAT:  # e.g. a used-list block's 509 slots, an object map block's entries
            return True
        return all(_keepable(v) for v in x)
    if isinstance(x, memoryview):
        return x.readonly and isinstance(x.obj, bytes)
    if isinstance(x, tuple):
        return all(_keepable(v) for v in x)
    names = _frozen_fields.get(t, False)
    if names is False:
        names = _frozen_fields[t] = tuple(f.name for f in dataclasses.fields(x)) \
            if dataclasses.is_dataclass(x) and t.__dataclass_params__.frozen else None
    if names is None:
        return False
    vals = tuple(getattr(x, n) for n in names)
    return set(map(type, vals)) <= _FLAT or all(_keepable(v) for v in vals)


_B, _L, _I = object(), object(), object()  # key tags: a bytes argument (by length and crc32c), a list
# argument, an immutable object (by identity)


def _fingerprint(a: bytes) -> tuple:
    """(tag, length, crc32c) of a bytes argument; the crc of an object seen before is remembered
    by identity (the explorer hands every state the same object for the same block content).
    The remembered object is kept alive, so its id cannot be reused while it is remembered."""
    got = _crcs.get(id(a))
    if got is None or got[0] is not a:
        if len(_crcs) >= 2 * MAX_ENTRIES:
            _crcs.clear()
        got = _crcs[id(a)] = (a, (_B, len(a), _crc(a)))
    return got[1]


_crcs: dict[int, tuple] = {}


def _key(args: tuple, kw: dict, mode) -> tuple[tuple, list]:
    """(key, the bytes arguments to compare on a hit).  Bytes enter the key as (length, crc32c)
    -- several times cheaper than hashing 4 KiB -- and are compared whole on a hit, so two
    contents with one crc are never confused.  TypeError: a mutable buffer (not memoisable)."""
    parts, raws = [], []
    for a in args:
        t = type(a)
        if t is bytes:
            got = _crcs.get(id(a))  # (_fingerprint, inline)
            parts.append(got[1] if got is not None and got[0] is a else _fingerprint(a))
            raws.append(a)
        elif t is list:  # e.g. a transaction's blocks, or an object map block's entries
            kinds = set(map(type, a))
            if kinds <= _immutable:  # (in C: an object map block's entries at every checkpoint)
                parts.append((_I, tuple(map(id, a))))
                raws.extend(a)
                continue
            sub = []
            for x in a:
                if type(x) is bytes:
                    sub.append(_fingerprint(x))
                    raws.append(x)
                elif isinstance(x, (bytearray, memoryview)):
                    raise TypeError("mutable buffer")
                else:
                    sub.append(x)
            parts.append((_L, tuple(sub)))
        elif t is bytearray or t is memoryview:
            raise TypeError("mutable buffer")
        else:
            parts.append(a)
    if kw:
        parts.append(tuple(kw.items()))  # in the call's order: a call site always names them alike
    parts.append(mode)
    return tuple(parts), raws


def pure(fn):
    """Mark `fn` as a pure function of its arguments (see the module docstring)."""
    table: dict = {}
    _tables.append(table)

    # The same bytes object asked about again (the explorer hands every state the same object for
    # the same block): found by its identity and the other arguments, without fingerprinting it.
    # The object is kept in the entry, so its id cannot be reused while the entry lives.
    same: dict = {}
    _tables.append(same)

    @functools.wraps(fn)
    def memoised(*args, **kw):
        if not _state["on"]:
            return fn(*args, **kw)
        mode = _mode_key()
        if args and type(args[0]) is bytes:  # the usual call: a block, then plain values
            pins = args[0]
            quick = (id(pins), args[1:], tuple(kw.items()), mode) if kw else (id(pins), args[1:], mode)
        else:
            quick, pins = _quick(args, kw, mode)
        if quick is not None:
            try:
                got = same.get(quick)
            except TypeError:  # an unhashable argument: the full key says so too
                got = quick = None
            if got is not None:
                ans = got[1]
                return ans[1] if ans[0] is None else _answer(ans)
        try:
            key, raws = _key(args, kw, mode)
            got = table.get(key)
        except TypeError:  # a mutable buffer or an unhashable argument: not memoisable
            return fn(*args, **kw)
        if got is not None and (got[0] == raws):  # bytes compare by content (identity first)
            if quick is not None:
                _put(same, quick, (pins, got[1]))
            return _answer(got[1])
        try:
            res = fn(*args, **kw)
        except BlkError as e:
            ans = (_RAISE, type(e), e.args)
            _put(table, key, (raws, ans))
            if quick is not None:
                _put(same, quick, (pins, ans))
            raise
        if isinstance(res, list):
            ans = (_L, tuple(res)) if _keepable(tuple(res)) else None
        else:
            ans = (None, res) if _keepable(res) else None
        if ans is not None:
            _put(table, key, (raws, ans))
            if quick is not None:
                _put(same, quick, (pins, ans))
        return res

    return memoised


def _answer(ans: tuple):
    """A memoised answer as the caller gets it: a fresh error, a fresh list, or the value."""
    if ans[0] is _RAISE:
        raise ans[1](*ans[2])
    return list(ans[1]) if ans[0] is _L else ans[1]


_Q = object()  # tags the identity key of a call whose first argument is not bytes


def _quick(args: tuple, kw: dict, mode) -> tuple:
    """(identity key, the objects it names) of a call, or (None, None): bytes arguments, and lists
    of bytes or of immutable objects, by the identity of their objects.  The entry keeps those
    objects alive, so an equal key names the same objects (an id is not reused while they live)."""
    parts, pins = [_Q], []
    for a in args:
        t = type(a)
        if t is bytes:
            parts.append((_B, id(a)))
            pins.append(a)
        elif t is list:
            kinds = set(map(type, a))
            if not kinds <= _QUICK or (bytes in kinds and len(a) > 4):  # a long transaction's fresh
                return None, None  # slices are never the same objects again: not worth keeping
            parts.append((_L, tuple(map(id, a))))
            pins.extend(a)
        elif t is bytearray or t is memoryview:
            return None, None
        else:
            parts.append(a)
    if kw:
        parts.append(tuple(kw.items()))
    parts.append(mode)
    return tuple(parts), pins


def _put(table: dict, key, value) -> None:
    if len(table) >= MAX_ENTRIES:
        table.clear()
    table[key] = value


# ---------------------------------------------------------------- computations that read blocks
MAX_TRACE_NODES = 1 << 16  # read-trace nodes kept over every computation; a full trie is emptied and refilled

_LEAF = object()
_traces: dict = {}  # (kind, key) -> trie of read traces (see replayed)
_tables.append(_traces)
_trace_nodes = [0]


def replayed(kind: str, key, read, compute, restore):
    """`compute(read)` for a computation determined by `key` and the blocks it reads, answered
    from a former run that read the same contents.

    The computation must be deterministic: the same key and the same content from each of its
    reads (`read(block) -> bytes`) make the same reads in the same order and the same result.
    So former runs form a trie: a node names the block the computation reads next, its children
    the contents seen there, a leaf the result.  A lookup reads the blocks again, in the same
    order, and follows the contents (compared whole, identity first); every read a real run
    would make up to the first difference is made (the explorer's read tracking sees the same
    blocks), and a leaf means the computation would read nothing else.  Any difference runs it.
    `compute(read)` returns (result, snapshot); `restore(snapshot)` gives the result of a hit
    (e.g. fresh copies of mutable objects).  A run that raised, or whose read raised, is not
    kept.  Off (the default), `compute` just runs: `compute(read)[0]`.
    """
    if not _state["on"]:
        return compute(read)[0]
    root = (kind, key, _mode_key())
    node = _traces.get(root, (None, None))[1]
    try:
        while node is not None:
            if node[0] is _LEAF:
                return restore(node[1])
            got = read(node[0])
            ent = node[2].get(id(got))  # the very object seen before (kept in the trie, so its id is its own)
            if ent is not None and ent[0] is got:
                kid = ent[1]
            else:
                kid = node[1].get(_content(got))
                if kid is None or not (kid[0] is got or kid[0] == got):
                    break
                _alias(node[2], got, kid)
            node = kid[1]
    except Exception:  # noqa: BLE001 -- a read refused: let the real run meet it
        pass
    trace: list = []

    def recording(b):
        try:
            v = read(b)
        except Exception:
            trace.append(None)  # unstorable
            raise
        trace.append((b, v))
        return v

    res, snap = compute(recording)
    if None not in trace and all(type(v) is bytes for _, v in trace):
        _insert(root, trace, snap)
    return res


def _alias(ids: dict, v, kid) -> None:
    """Let the next walk find `kid` by the identity of `v`, an equal content met as another object
    (the explorer hands each segment its own objects for the blocks its free writes touch): kept
    with the entry, so its id is its own while the entry lives."""
    if type(v) is bytes and _trace_nodes[0] < MAX_TRACE_NODES:
        ids[id(v)] = (v, kid)
        _trace_nodes[0] += 1


def _content(v) -> tuple:
    return _fingerprint(v) if type(v) is bytes else (id(v),)


def _insert(root, trace: list, snap) -> None:
    """Add one run's reads and result under `root`; nothing when they contradict a former run
    (a computation that was not deterministic after all, or two contents with one crc)."""
    if _trace_nodes[0] >= MAX_TRACE_NODES:
        _traces.clear()
        _trace_nodes[0] = 0
    holder = _traces.get(root)
    if holder is None:
        holder = _traces[root] = [None, None]  # [content, node]: the root has no content
    for b, v in trace:
        node = holder[1]
        if node is None:
            node = holder[1] = (b, {}, {})  # (block, children by content, the same children by object)
            _trace_nodes[0] += 1
        elif node[0] is _LEAF or node[0] != b:
            return
        c = _content(v)
        holder = node[1].get(c)
        if holder is None:
            holder = node[1][c] = [v, None]
            node[2][id(v)] = (v, holder)
        elif not (holder[0] is v or holder[0] == v):
            return
    if holder[1] is None:
        holder[1] = (_LEAF, snap)
        _trace_nodes[0] += 1


# ---------------------------------------------------------------- computations taken step by step
_STEP = object()


def stepped(kind: str, key, read, state, step):
    """The final state of `state, done = step(state, read)` repeated until done, resuming a
    former run at the last step whose reads matched.  `kind`, `key` and the first `state` name
    the computation (hashable; `step` must depend on nothing else but what it reads).

    `replayed()` answers only when every read of a run matches a former one; a computation that
    walks a log (journal replay) reads mostly what every other run read -- the same committed
    transactions -- and differs only near its end.  Taken step by step, each step a
    deterministic function of the state before it (immutable: it is kept) and of the contents it
    reads, runs form one trie of reads in which a node after each step holds the state it left.
    A lookup walks it as replayed() does, making every read a real run would make, in order, up
    to the first difference; from there it runs the steps for real, from the state the last
    matched step left, and adds what they read.  So a run that differs only in its last step
    pays for the walk and that step.  A step that raised, or whose read raised, is not kept
    (the steps before it are: each was a whole step).  Off (the default), the steps just run.
    """
    if not _state["on"]:
        done = False
        while not done:
            state, done = step(state, read)
        return state
    root = (kind, key, state, _mode_key())  # the first state is part of the key: a step reads from it
    holder = _traces.get(root)
    if holder is None:
        holder = _traces[root] = [None, None]
    start = holder  # where the reads of the step to run next begin
    try:
        while True:
            node = holder[1]
            if node is None:
                break
            if node[0] is _STEP:
                state, done = node[1]
                if done:
                    return state
                holder = start = node[2]
                continue
            got = read(node[0])
            ent = node[2].get(id(got))
            if ent is not None and ent[0] is got:
                kid = ent[1]
            else:
                kid = node[1].get(_content(got))
                if kid is None or not (kid[0] is got or kid[0] == got):
                    break
                _alias(node[2], got, kid)
            holder = kid
    except Exception:  # noqa: BLE001 -- a read refused: let the real step meet it
        pass
    holder = start
    while True:
        trace: list = []

        def recording(b, count=1):
            try:
                if count == 1:
                    v = read(b)
                    trace.append((b, v))
                    return v
                vs = []
                for i in range(count):  # block by block, as a walk reads them
                    vs.append(read(b + i))
                    trace.append((b + i, vs[-1]))
                return b"".join(vs)
            except Exception:
                trace.append(None)  # unstorable
                raise

        state, done = step(state, recording)
        if holder is not None:
            holder = _after(holder, trace, (state, done))
        if done:
            return state


def _after(holder, trace: list, outcome: tuple):
    """Add one step's reads and outcome below `holder`; the holder the next step's reads begin
    at, or None when the trace cannot be kept or contradicts a former run."""
    if None in trace or not all(type(v) is bytes for _, v in trace):
        return None
    for b, v in trace:
        node = holder[1]
        if node is None:
            node = holder[1] = (b, {}, {})
            _trace_nodes[0] += 1
        elif node[0] is _STEP or node[0] is _LEAF or node[0] != b:
            return None
        c = _content(v)
        kid = node[1].get(c)
        if kid is None:
            kid = node[1][c] = [v, None]
            node[2][id(v)] = (v, kid)
        elif not (kid[0] is v or kid[0] == v):
            return None
        holder = kid
    node = holder[1]
    if node is None:
        if _trace_nodes[0] >= MAX_TRACE_NODES:
            _traces.clear()  # the runs in progress keep their holders: only their additions are lost
            _trace_nodes[0] = 0
        node = holder[1] = (_STEP, outcome, [None, None])
        _trace_nodes[0] += 1
    elif node[0] is not _STEP or node[1] != outcome:
        return None
    return node[2]


# ---------------------------------------------------------------- folds over immutable items
_FOLD_ITEM, _FOLD_STATE, _FOLD_KIDS = range(3)


def folded(kind: str, key, items, step, start):
    """`state = step(state, item)` for each of `items` from `start`; the final state, resuming a
    former fold at the last item it shares with this one.

    The explorer's checks fold the same journal transactions state after state (recovery's
    replayed homes) and differ in the last one or two.  Former folds form a trie keyed by the
    items themselves (by identity: a node keeps its item, so its id is its own), each node
    holding the state its step left (which must therefore never be changed by the caller or a
    later step).  So `step` must depend on its arguments only -- it reads nothing (recovery
    gathers its records per home and reads the homes after the fold).  A lookup follows the
    items; from the first one not in the trie it runs the steps for real, from the state the
    last matched step left, and adds them.  A step that raised is not kept; a first state other
    than the one the key's trie starts from is not memoised.  Off (the default), the steps just
    run."""
    if not _state["on"]:
        state = start
        for item in items:
            state = step(state, item)
        return state
    root = (kind, key, _mode_key())
    node = _traces.get(root)
    if node is None:
        node = _traces[root] = [None, start, {}]
    elif not node[_FOLD_STATE] == start:  # another first state under this key: not what the trie holds
        node = None
    state, i, n = start, 0, len(items)
    while node is not None and i < n:
        kid = node[_FOLD_KIDS].get(id(items[i]))
        if kid is None or kid[_FOLD_ITEM] is not items[i]:
            break
        node, state, i = kid, kid[_FOLD_STATE], i + 1
    for item in items[i:]:
        state = step(state, item)
        if node is not None:
            if _trace_nodes[0] >= MAX_TRACE_NODES:
                _traces.clear()  # this fold keeps its nodes: only what it adds from here is lost
                _trace_nodes[0] = 0
            kid = node[_FOLD_KIDS][id(item)] = [item, state, {}]
            _trace_nodes[0] += 1
            node = kid
    return state

