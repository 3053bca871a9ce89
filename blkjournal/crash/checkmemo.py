"""A segment's first check answered by the previous segment's last one, when they meet alike.

A check (`recover_and_read`: recovery, the allocator check, fsck, a read of every file) is a
deterministic function of what it learns from the tracer: the content of each block it reads
before writing it, and the answer of each search (`Tracer.find`).  Everything else it does --
its own writes, the reads of blocks it wrote -- follows from those answers.  While a check is
recorded the tracer notes each question and its answer in order (`Tracer.events`).

A segment ends where a flush (or a completed FUA write) forces the writes before it, and the
search of a segment checks last the state with the writes it decided persisted; the next
segment's first state (no free write persisted) is then very often the same image as far as a
check can tell.  So that first check walks the previous segment's last one: every question is
put to this state's tracer in the same order -- so `first_read`, hence the split of classes, is
exactly what the real check would record -- and the check's own writes are made again, so a
later search sees them as the real check would.  Every answer the same (contents compared
whole, identity first): the outcome is the former one.  At the first difference the tracer is
set back to a fresh check's state (nothing read, nothing written) and the check runs for real.
A check whose read, search or write raised is not kept.

A predicate is kept with its question: `BlockDevice.find` requires that `pred` depend on its
arguments only, and the real check would have built an equal one from the same answers; so is
the function of a derived read (`BlockDevice.read_derived`), whose answer is its value.
"""

from __future__ import annotations

# what the tracer notes in its `events` while a check is recorded: (kind, question, answer)
READ, FIND, WRITE, DISCARD, DERIVED = range(5)


class CheckMemo:
    def __init__(self, run) -> None:
        self.run = run  # run(dev) -> (contents, err, findings): recover_and_read
        self.ends: dict = {}  # segment -> (events, outcome) of its last check
        self.hits = 0

    def check(self, tr, after=None, keep=None) -> tuple:
        """run(tr) for the tracer `tr` (explore.Tracer), or the outcome of the last check of
        segment `after` if this one gets the same answers.  `keep`: a segment whose last check
        this may be (recorded, see end()); None: not recorded."""
        former = self.ends.pop(after, None) if after is not None else None
        if former is not None:
            got = _walk(tr, former[0])
            if got:
                self.hits += 1
                contents, err, findings = former[1]
                if keep is not None:
                    self._kept = (keep, former)
                return contents, err, list(findings)
            # a fresh check's tracer: what the walk read and wrote is read and written again
            tr.cache.clear()
            tr.written.clear()
            tr.first_read.clear()
        self._kept = None
        if keep is None:
            return self.run(tr)
        tr.events = []
        try:
            out = self.run(tr)
        finally:
            events, tr.events = tr.events, None
        if events is not None:
            self._kept = (keep, (events, (out[0], out[1], tuple(out[2]))))
        return out

    def end(self, segment: int) -> None:
        """The check just made was `segment`'s last: keep it for the next segment's first."""
        if self._kept is not None and self._kept[0] == segment:
            self.ends[segment] = self._kept[1]
        self._kept = None

    _kept = None


def _walk(tr, events: list) -> bool:
    """Put a former check's questions to `tr` in order (its writes made too): every answer the
    same?  A question that raises is a difference (the real check meets it)."""
    try:
        for kind, q, answer in events:
            if kind == READ:
                v = tr.read(q)
                if v is not answer and v != answer:
                    return False
            elif kind == FIND:
                if tr.find(*q) != answer:
                    return False
            elif kind == DERIVED:
                v = tr.read_derived(*q)
                if v is not answer and v != answer:
                    return False
            elif kind == WRITE:
                tr.write(q[0], q[1], fua=q[2])
            else:
                tr.discard(q[0], q[1])
    except Exception:  # noqa: BLE001
        return False
    return True
