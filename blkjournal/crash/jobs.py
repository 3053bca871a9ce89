"""Spreading the explorer's segment searches over processes: the caller and forked workers take
the next segment from one shared counter until none is left.

Why not multiprocessing.Pool: a pool's start-up (its handler threads, a task queue fed one
segment at a time) and its idle parent cost more than a short run's whole search -- the 200-op
ordered run checks in well under a second, and every second phase of a run is shorter still.
Here `jobs` processes search, the caller being one of them (its memo tables stay warm across
phases), the workers are forked with the explorer's context already in place, and each result
crosses one pipe.  The order of `order` is the order segments are started in (largest first, so
no long one starts last); which process searches a segment changes nothing it finds.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import traceback

from ..errors import BlkError


def share_out(search, order: list[int], jobs: int):
    """Yield search(i) for every i of `order`, searched by `jobs` processes (this one included),
    in the order they finish.  An exception in a worker is raised here (with its traceback)."""
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    procs, conns, done = [], [], False
    try:
        for _ in range(jobs - 1):
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, args=(search, order, counter, w), daemon=True)
            p.start()
            w.close()
            procs.append(p)
            conns.append(r)
        while True:
            i = _take(counter, len(order))
            if i is None:
                break
            yield search(order[i])
            for c in list(conns):  # what the workers finished meanwhile
                while c in conns and c.poll():
                    got = _receive(c, conns)
                    if got is not None:
                        yield got
        while conns:  # this process is done: wait for the workers' last segments
            for c in multiprocessing.connection.wait(conns):
                got = _receive(c, conns)
                if got is not None:
                    yield got
        done = True
    finally:
        for p in procs:
            if not done and p.is_alive():  # (a worker that said "done" exits by itself)
                p.terminate()
            p.join()


def _take(counter, n: int) -> int | None:
    with counter.get_lock():
        i = counter.value
        if i >= n:
            return None
        counter.value = i + 1
    return i


def _receive(c, conns: list):
    try:
        kind, payload = c.recv()
    except EOFError:  # the worker died without a word
        conns.remove(c)
        raise BlkError("an explorer worker process died") from None
    if kind == "done":
        conns.remove(c)
        return None
    if kind == "error":
        conns.remove(c)
        raise RuntimeError(f"explorer worker failed:\n{payload}")
    return payload


def _worker(search, order: list[int], counter, w) -> None:
    try:
        while True:
            i = _take(counter, len(order))
            if i is None:
                break
            w.send(("result", search(order[i])))
        w.send(("done", None))
    except BaseException:  # noqa: BLE001 -- handed to the parent, which raises it
        w.send(("error", traceback.format_exc()))
    finally:
        w.close()


def fork_map(fn, items: list) -> list:
    """[fn(x) for x in items], the first in this process and each other in a forked child of its
    own, side by side; results in the order of `items`.  An exception in a child is raised here:
    the same exception when it can cross the pipe, else a RuntimeError with its traceback."""
    ctx = multiprocessing.get_context("fork")
    procs, conns, done = [], [], False
    try:
        for x in items[1:]:
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_one, args=(fn, x, w), daemon=True)
            p.start()
            w.close()
            procs.append(p)
            conns.append(r)
        out = [fn(items[0])] if items else []
        for c in conns:
            try:
                kind, payload = c.recv()
            except EOFError:
                raise BlkError("an explorer worker process died") from None
            if kind == "raise":
                raise payload
            if kind == "error":
                raise RuntimeError(f"explorer worker failed:\n{payload}")
            out.append(payload)
        done = True
        return out
    finally:
        for p in procs:
            if not done and p.is_alive():  # (a child that handed its result back exits by itself: a
                p.terminate()  # signal then could meet it still in its send)
            p.join()


def _one(fn, x, w) -> None:
    import pickle

    try:
        got = ("result", fn(x))
    except BaseException as e:  # noqa: BLE001 -- handed to the parent, which raises it
        got = ("raise", e)
        try:
            pickle.loads(pickle.dumps(e))
        except Exception:  # noqa: BLE001
            got = ("error", traceback.format_exc())
    try:
        w.send(got)
    finally:
        w.close()
