"""Planted crash bugs (mutants): the test of the crash explorer itself (issue 9, DESIGN §4).

Each mutant is one module here with a docstring naming the real-world bug it models and a
`MUTANT`: a source patch of one function of the importable library (`old` text -> `new` text),
applied by monkeypatching that function for the duration of a `with applied(m):` block.  A
patch whose `old` text is no longer in the function is an error, never a silent no-op, so a
refactoring cannot quietly take a mutant's teeth out.

A mutant is *crash-only*: with it applied, a workload run without a crash (then closed and
reopened) still reads back the model and fscks clean -- `crash_only()` checks exactly that.  Two
kinds:
  explorer  the explorer must find an illegal crash state with it applied (`caught_by_explorer`);
  fsck      it weakens fsck itself; fsck's own tests (tests/test_fsck.py) must fail with it;
  faults    it removes one of the checks that detect storage faults (docs/faults.md): the fault
            explorer must then return wrong data as good somewhere (`faults_catch`, run.py).
A mutant that is not a bug under this design carries `equivalent`: the argument why; the runner
then checks it is *not* caught (an equivalent mutant that gets caught has a wrong argument).

`python -m tests.mutants` (`make mutate`) runs them all and prints the table.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    models: str  # the real-world bug, one line
    target: str  # "module:Class.function" or "module:function"
    patches: tuple  # ((old text, new text), ...): each old text must occur exactly once
    protocols: tuple = ("journal", "ordered")
    kind: str = "explorer"  # explorer | fsck | faults
    equivalent: str | None = None  # why this change is not a bug under this design
    barriers: tuple = ("flush",)
    fault_kinds: tuple = ()  # faults: the kinds injected (default: all), fault_samples of each per run
    fault_samples: int = 100
    fault_seeds: int = 4  # faults: seeds of each workload
    fault_workloads: tuple = ("random",)

    @property
    def area(self) -> str:
        return self.name.split("-", 1)[0]


def all_mutants() -> list[Mutant]:
    """Every mutant module's MUTANT, in module name order."""
    out = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("m") and info.name[1:3].isdigit():
            mod = importlib.import_module(f"{__name__}.{info.name}")
            out.append(mod.MUTANT)
    return out


def by_name(name: str) -> Mutant:
    for m in all_mutants():
        if m.name == name:
            return m
    raise KeyError(name)


def _block_at(src: str, i: int, old: str) -> bool:
    """Does `old` (dedented lines) start at line i of src, at that line's indentation?"""
    lines, want = src.splitlines(), old.splitlines()
    if i + len(want) > len(lines):
        return False
    ind = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
    return all(ln == (ind + w if w else "") or (not w and not ln.strip()) for ln, w in zip(lines[i:], want))


def _replace_block(src: str, i: int, old: str, new: str) -> str:
    lines = src.splitlines()
    ind = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
    repl = [ind + ln if ln else "" for ln in new.splitlines()]
    return "\n".join(lines[:i] + repl + lines[i + len(old.splitlines()):]) + "\n"


def _resolve(target: str):
    modname, _, path = target.partition(":")
    mod = importlib.import_module(modname)
    owner = mod
    parts = path.split(".")
    for p in parts[:-1]:
        owner = getattr(owner, p)
    return mod, owner, parts[-1]


@contextmanager
def applied(m: Mutant):
    """Patch the target function with the mutated source for the duration of the block."""
    mod, owner, fname = _resolve(m.target)
    orig = owner.__dict__[fname]
    func = orig.__func__ if isinstance(orig, (classmethod, staticmethod)) else orig
    src = textwrap.dedent(inspect.getsource(func))
    for old, new in m.patches:
        old, new = textwrap.dedent(old).strip("\n"), textwrap.dedent(new).strip("\n")
        hits = [i for i in range(len(src.splitlines())) if _block_at(src, i, old)]
        if len(hits) != 1:
            raise RuntimeError(f"mutant {m.name}: the text to replace occurs {len(hits)} times in {m.target} "
                               f"(want 1): the code changed, update the mutant")
        src = _replace_block(src, hits[0], old, new)
    ns = dict(vars(mod))
    exec(compile(src, f"<mutant {m.name}: {m.target}>", "exec"), ns)
    new = ns[fname]
    # modules that imported a module-level function by name hold the original: patch them too
    holders = []
    if owner is mod:
        for other in list(sys.modules.values()):
            d = getattr(other, "__dict__", None)
            if d is not None and other is not mod and d.get(fname) is orig:
                holders.append(other)
    setattr(owner, fname, new)
    for h in holders:
        setattr(h, fname, new)
    try:
        yield
    finally:
        setattr(owner, fname, orig)
        for h in holders:
            setattr(h, fname, orig)
