"""`make fuzz`: each target for FUZZ_SECONDS (default 600) under atheris, coverage-guided.

    python -m tests.fuzz.run [--seconds N] [--targets image,log,...] [--engine atheris|random]

Each target runs in its own process.  Per input, an in-process pass over the library (the same
decoders the commands use, on an in-memory overlay) gives atheris its coverage, and the CLI
commands then run in forked children under the harness's limits (harness.py).  Violations do not
stop the run: each failing input is saved to tests/fuzz/crashes/<target>/ (with a .txt saying what
broke) and becomes a regression test (test_fuzz.py replays every saved input).  The figures --
inputs, commands, failures, longest command, peak memory -- go to FUZZ_OUT/<target>.json and a
summary table at the end.  Exit 1 if any target found a violation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CRASHES = os.path.join(HERE, "crashes")


def _library_pass(name: str, data: bytes) -> None:
    """The decoders in-process, for coverage; only BlkError may escape them."""
    from blkjournal.errors import BlkError

    from . import corpus, mutate, targets

    try:
        if name in ("image", "repair", "recovery"):
            from blkjournal.crash.image import Overlay
            from blkjournal.fsck import fsck
            from blkjournal.store import Store

            _, raw, _ = targets._image(data)
            fsck(Overlay(raw))
            st = Store.open(Overlay(raw), recover=True)
            for f in list(st.files.values())[:4]:
                for _ in st.stream_file(f, 0, 1 << 20):
                    pass
        elif name == "acks":
            from blkjournal.hwcheck.acklog import read_runs

            p = mutate.Provider(data)
            path = os.path.join(corpus.workdir(), "lib-acks.log")
            with open(path, "wb") as f:
                f.write(mutate.mutate_lines(corpus.acks()[0], p, mutate.acks_line))
            read_runs(path)
        else:
            from blkjournal.crash.logwrites import parse_log

            parse_log(mutate.mutate_log(corpus.crash_log()["log"], mutate.Provider(data)))
    except BlkError:
        pass


def fuzz_one(name: str, seconds: int, engine: str, out: str) -> None:
    """Run in the target's own process."""
    sys.path.insert(0, os.path.dirname(HERE))
    os.environ.setdefault("FUZZ_SAVE", CRASHES)
    if engine == "atheris":  # instrument the library before anything imports it
        import importlib
        import pkgutil

        import atheris

        with atheris.instrument_imports(include=["blkjournal"]):
            import blkjournal

            for m in pkgutil.walk_packages(blkjournal.__path__, "blkjournal."):
                if ".vm." not in m.name + "." and not m.name.endswith(("__main__", "demo")):
                    importlib.import_module(m.name)
    from fuzz import harness, targets  # noqa: E402 -- the test tree is not a package

    target = targets.TARGETS[name]
    targets.SAVE_DIR = os.environ["FUZZ_SAVE"]
    stats_path = os.path.join(out, f"{name}.json")
    t0 = time.monotonic()

    def write_stats() -> None:
        s = harness.STATS.summary()
        s.update(target=name, engine=engine, seconds=round(time.monotonic() - t0, 1))
        with open(stats_path, "w") as f:
            json.dump(s, f, indent=2)

    def one(data: bytes) -> None:
        lib_error = None
        try:
            _library_pass(name, data)
        except Exception as e:  # noqa: BLE001 -- recorded; the CLI run below shows it too
            lib_error = f"library pass: {type(e).__name__}: {e}"
        found = target(data)
        if lib_error and not found:  # the library broke where the CLI did not: save it too
            c = harness.Checker(name, data, targets.SAVE_DIR)
            c.found.append(lib_error)
            harness.STATS.inputs -= 1  # (done() counts the input again)
            c.done()
        write_stats()  # every input: libFuzzer leaves through exit(), past atexit

    harness.warm()
    if engine == "atheris":
        import atexit

        atexit.register(write_stats)
        atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", "-timeout=120", "-rss_limit_mb=4096",
                       "-max_len=256", "-len_control=0", f"-artifact_prefix={os.path.join(out, name + '-')}"], one)
        try:
            atheris.Fuzz()
        finally:
            write_stats()
    else:
        rnd = random.Random(int(os.environ.get("FUZZ_SEED", "0")))
        while time.monotonic() - t0 < seconds:
            one(rnd.randbytes(rnd.randrange(4, 128)))
        write_stats()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 600)))
    ap.add_argument("--targets", default="image,repair,recovery,log,sidecar,workload,acks")
    ap.add_argument("--engine", choices=("atheris", "random"), default=None)
    ap.add_argument("--out", default=os.environ.get("FUZZ_OUT", os.path.join(ROOT, "build", "fuzz")))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    engine = a.engine
    if engine is None:
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
    os.makedirs(a.out, exist_ok=True)
    if a.one:
        fuzz_one(a.one, a.seconds, engine, a.out)
        return 0
    rows = []
    for name in a.targets.split(","):
        print(f"fuzz {name}: {a.seconds} s ({engine})", flush=True)
        subprocess.run([sys.executable, "-m", "tests.fuzz.run", "--one", name, "--seconds", str(a.seconds),
                        "--engine", engine, "--out", a.out], cwd=ROOT, stdout=subprocess.DEVNULL,
                       stderr=open(os.path.join(a.out, f"{name}.log"), "w"))
        try:
            with open(os.path.join(a.out, f"{name}.json")) as f:
                rows.append(json.load(f))
        except (OSError, ValueError):
            rows.append({"target": name, "inputs": 0, "commands": 0, "failures": "no stats (crashed?)"})
    print(f"{'target':10} {'inputs':>8} {'commands':>9} {'failures':>8} {'longest s':>9} {'growth MiB':>10}")
    bad = 0
    for r in rows:
        print(f"{r['target']:10} {r['inputs']:>8} {r['commands']:>9} {r['failures']:>8} "
              f"{r.get('longest', 0):>9.2f} {r.get('peak_growth_mib', 0):>10}")
        bad += r["failures"] if isinstance(r["failures"], int) else 1
    print(f"{'total':10} {sum(r['inputs'] for r in rows):>8} {sum(r['commands'] for r in rows):>9} {bad:>8}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
