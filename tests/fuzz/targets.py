"""The fuzz targets: one per kind of untrusted input, each a function of the fuzzer's bytes.

Every target builds its damaged input from a seed (corpus.py) with a mutation program
(mutate.py), runs the CLI commands a user would point at it through harness.Checker (which holds
each run to the contract), and checks what the contract cannot see on its own: that fsck
--repair leaves a clean image or says what it left and why, and that recovery's result is a
store every command can still open.  A target returns the contract violations it found.

    image      the image loader: info, ls, get, fsck on a damaged store (read-only: sha256 kept)
    repair     fsck --repair, then fsck again on the result
    recovery   recover, then fsck, ls, put and rm on the recovered store
    log        the dm-log-writes reader: log show, replay (--mark/--entry), check-log
    sidecar    the log's role sidecar: log show, replay, check-log
    workload   the log's workload file: check-log
    acks       the hwcheck acks parser: hwcheck verify (text and --json)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

from blkjournal.format import WEAK_ENV

from . import corpus, mutate
from .harness import Checker

SAVE_DIR = os.environ.get("FUZZ_SAVE")  # where failing inputs go (make fuzz sets it)
GET_LIMIT = 64 << 20  # a file larger than this is read with `get` only as far as the contract goes


class _Scratch:
    def __enter__(self) -> str:
        self.dir = tempfile.mkdtemp(dir=corpus.workdir())
        return self.dir

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, True)


def _image(data: bytes) -> tuple[mutate.Provider, bytes, str]:
    p = mutate.Provider(data)
    seeds = corpus.images()
    k = p.below(len(seeds))
    return p, mutate.mutate_image(seeds[k][1], corpus.image_meta()[k], p, corpus.image_owned()[k]), seeds[k][0]


@contextlib.contextmanager
def _damaged_image(target: str, data: bytes):
    """(checker, path of the damaged image in a scratch directory) for one input.

    Half the inputs run with BLKJOURNAL_WEAK_DETECTION=1 (format 1's detection; the children
    inherit it): format 2's pointer crcs would otherwise stop most re-sealed edits at the pointer,
    and a hostile image can forge those too -- the field checks behind them must hold alone."""
    p, raw, _ = _image(data)
    c = Checker(target, data, SAVE_DIR)
    weak = p.chance(128)
    saved = os.environ.pop(WEAK_ENV, None)
    if weak:
        os.environ[WEAK_ENV] = "1"
    try:
        with _Scratch() as d:
            yield c, _write(os.path.join(d, "img"), raw)
    finally:
        os.environ.pop(WEAK_ENV, None)
        if saved is not None:
            os.environ[WEAK_ENV] = saved


def _write(path: str, raw: bytes) -> str:
    with open(path, "wb") as f:
        f.write(raw)
    return path


def image(data: bytes) -> list[str]:
    with _damaged_image("image", data) as (c, img):
        ro = (img,)
        c.run("info", img, readonly=ro)
        ls = c.run("ls", img, "--json", readonly=ro)
        c.run("ls", img, readonly=ro)
        names = list(corpus.NAMES)
        sizes = {}
        if ls.code == 0:
            try:
                rows = json.loads(ls.out)
                sizes = {r["name"]: r["size"] for r in rows}
                names = sorted(set(names) | set(sizes))[:8]
            except (ValueError, KeyError, TypeError):
                c.found.append("ls --json: exit 0 but not a JSON listing")
        for n in names:
            if sizes.get(n, 0) <= GET_LIMIT:  # larger: a legal sparse file, output-bound (see GET_LIMIT)
                c.run("get", img, n, "--to", os.devnull, readonly=ro)
        c.run("fsck", img, readonly=ro, expect=(0, 1, 2))
        c.run("fsck", img, "--json", readonly=ro, expect=(0, 1, 2))
    return c.done()


def repair(data: bytes) -> list[str]:
    with _damaged_image("repair", data) as (c, img):
        r = c.run("fsck", img, "--repair", "--json")
        if r.code in (0, 1) and r.out:
            try:
                rep = json.loads(r.out)
            except ValueError:
                c.found.append("fsck --repair --json: not JSON")
                return c.done()
            after = rep.get("after_repair")
            if after is not None and not after["clean"] and not rep.get("not_repaired"):
                c.found.append("fsck --repair left findings without saying why: "
                               + "; ".join(f["code"] for f in after["findings"])[:200])
            again = c.run("fsck", img, "--json", readonly=(img,))
            if after is not None and again.code in (0, 1):
                if json.loads(again.out)["clean"] != after["clean"]:
                    c.found.append("fsck after --repair disagrees with the repair's own after_repair")
    return c.done()


def recovery(data: bytes) -> list[str]:
    with _damaged_image("recovery", data) as (c, img):
        r = c.run("recover", img)
        c.run("fsck", img, readonly=(img,))
        c.run("ls", img, readonly=(img,))
        if r.code == 0:
            c.run("recover", img, expect=(0,))  # recovering a recovered store works again
            c.run("put", img, "fuzz-new", stdin=b"new data", expect=(0, 2))
            c.run("rm", img, "small", expect=(0, 2))
            c.run("get", img, "fuzz-new", "--to", os.devnull, readonly=(img,))
    return c.done()


def _log_files(d: str, log: bytes, roles: bytes | None, workload: bytes | None) -> tuple[str, tuple[str, ...]]:
    path = _write(os.path.join(d, "run.log"), log)
    files = [path]
    if roles is not None:
        files.append(_write(path + ".roles", roles))
    if workload is not None:
        files.append(_write(path + ".workload.json", workload))
    return path, tuple(files)


def _log_commands(c: Checker, d: str, log: str, ro: tuple[str, ...], p: mutate.Provider, explore: bool = True) -> None:
    c.run("log", "show", log, readonly=ro)
    c.run("log", "show", log, "--json", readonly=ro)
    out = os.path.join(d, "state.img")
    c.run("replay", log, "--out", out, readonly=ro)
    c.run("replay", log, "--out", out, "--mark", "mkfs", readonly=ro)
    c.run("replay", log, "--out", out, "--entry", str(p.below(64)), readonly=ro)
    c.run("replay", log, "--out", out, "--state", f"P{p.below(40)}-{p.below(16):x}", readonly=ro)
    if explore:
        c.run("check-log", log, "--jobs", "1", "--bound", "8", readonly=ro)


def _log_target(name: str, data: bytes, build) -> list[str]:
    """Write the files `build(provider, seed) -> (log, roles, workload, explore)` makes, run the
    log commands on them."""
    p = mutate.Provider(data)
    c = Checker(name, data, SAVE_DIR)
    with _Scratch() as d:
        log_raw, roles, wl, explore = build(p, corpus.crash_log())
        path, ro = _log_files(d, log_raw, roles, wl)
        _log_commands(c, d, path, ro, p, explore=explore)
    return c.done()


def log(data: bytes) -> list[str]:
    def build(p, seed):
        keep = p.below(3)  # 0: log + sidecar + workload, 1: no sidecar, 2: log alone
        return (mutate.mutate_log(seed["log"], p), seed["roles"] if keep == 0 else None,
                seed["workload"] if keep < 2 else None, keep < 2)

    return _log_target("log", data, build)


def sidecar(data: bytes) -> list[str]:
    def build(p, seed):
        return seed["log"], mutate.mutate_lines(seed["roles"], p, mutate.plain_line), seed["workload"], True

    return _log_target("sidecar", data, build)


def workload(data: bytes) -> list[str]:
    p = mutate.Provider(data)
    seed = corpus.crash_log()
    c = Checker("workload", data, SAVE_DIR)
    with _Scratch() as d:
        if p.chance(64):
            wl = mutate.mutate_bytes(seed["workload"], p)
        else:
            obj = json.loads(seed["workload"])
            for _ in range(1 + p.below(3)):
                obj = mutate.mutate_json(obj, p)
            wl = mutate.dump(obj)
        path, ro = _log_files(d, seed["log"], seed["roles"], wl)
        c.run("check-log", path, "--jobs", "1", "--bound", "8", readonly=ro)
    return c.done()


def acks(data: bytes) -> list[str]:
    p = mutate.Provider(data)
    log, dev = corpus.acks()
    c = Checker("acks", data, SAVE_DIR)
    with _Scratch() as d:
        enc = mutate.acks_line if p.chance(220) else mutate.plain_line
        acks_path = _write(os.path.join(d, "acks.log"), mutate.mutate_lines(log, p, enc))
        img = _write(os.path.join(d, "dev.img"), dev)
        ro = (acks_path, img)
        c.run("hwcheck", "verify", img, "--acks", acks_path, readonly=ro)
        c.run("hwcheck", "verify", img, "--acks", acks_path, "--json", readonly=ro)
    return c.done()


TARGETS = {"image": image, "repair": repair, "recovery": recovery, "log": log, "sidecar": sidecar,
           "workload": workload, "acks": acks}
