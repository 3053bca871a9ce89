"""The oracle: recover a crash state, fsck it, read every file, and compare with the model.

A state is legal when recovery succeeds, fsck finds nothing, every file reads back with valid
checksums, and the contents equal the model after some op k in the window [last op whose sync had
completed, last op started] (DESIGN §4).  The "ordered" and "none" protocols declare a weaker,
per-file model: each file (and each name's absence) must equal the model of that name after
some k in the window, independently of the other files -- the guarantee ext4's data=ordered
gives, since seed A orders one file's objects and never ties two files' origins together.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import compress

from ..errors import BlkError
from ..fsck import fsck, unmarked_flags
from ..store import Store

GLOBAL, PER_FILE = "global", "per-file"


def model_kind(protocol: str) -> str:
    return GLOBAL if protocol == "journal" else PER_FILE


@dataclass
class Verdict:
    legal: bool
    reason: str = ""
    matched: int | None = None  # the op index whose model the state equals (global model)
    contents: dict | None = None


def recover_and_read(dev) -> tuple[dict[str, bytes] | None, str, list]:
    """Run recovery on `dev` (an overlay), fsck, and read every file; (contents, error, findings).

    Every failure is a verdict on the crash state, never an aborted run: a BlkError names what
    recovery, fsck or a read refused; any other exception (a decoder tripping over bytes a crash
    left, fsck raising on a superblock recovery broke) is reported the same way, with its type,
    so an illegal state can never hide behind a traceback.
    """
    stage = "recovery"
    try:
        st = Store.open(dev, recover=True)
        handed = _allocatable_but_owned(st)
        if handed:
            return None, (f"recovery left {len(handed)} owned blocks allocatable (e.g. {sorted(handed)[:4]}): "
                          f"the next operations would hand them out twice"), []
        stage = "fsck after recovery"
        report = fsck(dev)
        if not report.clean:
            return None, f"fsck after recovery: {report.verdict()}", [f.code + ": " + f.message for f in report.findings]
        out = {}
        for f in list(st.files.values()):
            stage = f"reading {f.name!r}"
            out[f.name] = st.read_file(f)
        return out, "", []
    except BlkError as e:
        return None, (f"recovery failed: {e}" if stage == "recovery" else f"{stage}: {e}"), []
    except Exception as e:  # noqa: BLE001 -- see the docstring: an exception is an illegal state
        return None, f"{stage} raised {type(e).__name__}: {e}", []


def _allocatable_but_owned(st) -> set[int]:
    """Blocks a file owns that the recovered allocator would hand out (free and not held).

    fsck judges the disk; this judges what recovery left in memory -- under ordered the bitmap
    on disk is only a hint, so a freelist recovery rebuilt wrongly is invisible to fsck until the
    next operations allocate (and a second crash shows the damage).
    """
    fl = st.freelist
    bits, n, held = fl.bits, fl.nblocks, fl.held  # (fl.used(b), inline: every owned block is asked)
    owned = sorted(st.owned_blocks())
    if not owned or owned[0] < 0 or 8 * len(bits) < n:  # (the general case, block by block)
        return {b for b in owned if b < n and not bits[b >> 3] >> (b & 7) & 1 and b not in held}
    # the owned blocks below n whose bit is clear, picked at C speed (one flag byte per block)
    low = owned[:bisect_left(owned, n)]
    free = set(compress(low, map(unmarked_flags(bits, n).__getitem__, low)))
    return free - held if free and held else free


_MEMO: list = [None, None, {}, {}]  # [contents, models last judged, {(name, id(model bytes)): equal}, {k: match}]


def judge(contents: dict[str, bytes], models: list[dict[str, bytes]], ks: range, kind: str) -> Verdict:
    """Compare recovered contents with the model states models[k] for k in ks.

    A file unchanged between two model states is the same bytes object in both, so each
    distinct (name, object) is compared once (a sparse file can be 128 MiB), and each model
    state once per contents (the windows of a segment's points overlap).
    """
    if _MEMO[0] is not contents or _MEMO[1] is not models:  # one state is judged against several windows in a row
        _MEMO[:] = [contents, models, {}, {}]
    memo, matches = _MEMO[2], _MEMO[3]

    def same(n: str, want) -> bool:
        got = contents.get(n)
        if want is None or got is None:
            return want is got
        key = (n, id(want))
        r = memo.get(key)
        if r is None:
            r = memo[key] = len(want) == len(got) and want == got
        return r

    for k in reversed(ks):
        hit = matches.get(k)
        if hit is None:
            m = models[k]
            hit = matches[k] = m.keys() == contents.keys() and all(same(n, w) for n, w in m.items())
        if hit:
            return Verdict(True, matched=k, contents=contents)
    if kind == GLOBAL:
        return Verdict(False, _difference(contents, models, ks), contents=contents)
    names = set(contents) | {n for k in ks for n in models[k]}
    for n in sorted(names):
        got = contents.get(n)
        if not any(same(n, models[k].get(n)) for k in ks):
            return Verdict(False, f"file {n!r}: " + _describe_file(got, [models[k].get(n) for k in ks], ks),
                           contents=contents)
    return Verdict(True, contents=contents)


def _describe_file(got, wants, ks) -> str:
    if got is None:
        return f"missing, but it exists after every op {ks.start}..{ks.stop - 1}"
    sizes = sorted({len(w) for w in wants if w is not None})
    if not sizes:
        return f"present ({len(got)} bytes) but absent after every op {ks.start}..{ks.stop - 1}"
    if len(got) not in sizes:
        return f"size {len(got)}, expected one of {sizes[:6]} (ops {ks.start}..{ks.stop - 1})"
    near = min((w for w in wants if w is not None and len(w) == len(got)),
               key=lambda w: sum(a != b for a, b in zip(w, got)))
    bad = next((i for i, (a, b) in enumerate(zip(near, got)) if a != b), None)
    if bad is None:
        return "matches a legal version of itself, but not together with the other files' contents"
    return f"content differs from every legal version from byte {bad} (block {bad // 4096})"


def _difference(contents, models, ks) -> str:
    k = ks.stop - 1
    want = models[k]
    for n in sorted(set(contents) | set(want)):
        if contents.get(n) != want.get(n):
            return f"matches no op {ks.start}..{k}; e.g. " + _describe_file(contents.get(n), [m.get(n) for m in models[ks.start:ks.stop]], ks)
    return f"matches no op {ks.start}..{k}"

