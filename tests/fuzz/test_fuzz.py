"""The fuzz targets, bounded, inside `make test`; every saved crash input replayed; and the
harness itself shown to catch each kind of violation it exists for (planted in a child).

`make fuzz` runs the same targets for FUZZ_SECONDS each under atheris (tests/fuzz/run.py).
"""

from __future__ import annotations

import glob
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import harness
from .targets import TARGETS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
CRASHES = os.path.join(os.path.dirname(__file__), "crashes")


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_bounded(name):
    """EXAMPLES inputs per target (derandomized, so `make test` is repeatable)."""

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.binary(min_size=4, max_size=96))
    def one(data: bytes) -> None:
        found = TARGETS[name](data)
        assert not found, found

    one()


def test_saved_crash_inputs_stay_fixed():
    """Inputs the fuzzer once broke a command with (`make fuzz` saves each as CRASHES/TARGET/*.bin, the
    mutation program's bytes), replayed on every run.  One test over the folder, not one per file, so
    a checkout with none saved (the defects found so far are regression tests of their own, in
    tests/test_untrusted_input.py) runs it rather than skipping it."""
    found = {}
    for path in sorted(glob.glob(os.path.join(CRASHES, "*", "*.bin"))):
        name = os.path.basename(os.path.dirname(path))
        assert name in TARGETS, f"{path}: saved for an unknown target"
        with open(path, "rb") as f:
            if hit := TARGETS[name](f.read()):
                found[os.path.relpath(path, CRASHES)] = hit
    assert not found, found


# --------------------------------------------------------------------------- the harness's own checks
def _planted(monkeypatch, target: str, fn) -> list[str]:
    """Run the `image` target's commands with `target` replaced by `fn` (inherited by the children)."""
    import blkjournal.store as store

    monkeypatch.setattr(store.Store, target, fn)
    c = harness.Checker("planted", b"")
    from . import corpus

    with open(os.path.join(corpus.workdir(), "planted.img"), "wb") as f:
        f.write(corpus.images()[0][1])
    c.run("ls", f.name, readonly=(f.name,))
    return c.found


def test_harness_catches_a_traceback(monkeypatch):
    def boom(self):
        raise IndexError("planted")

    found = _planted(monkeypatch, "listing", boom)
    assert any("traceback: IndexError: planted" in f for f in found), found


def test_harness_catches_unbounded_memory(monkeypatch):
    def hog(self):
        return [bytearray(1 << 20) for _ in range(1024)]  # 1 GiB

    found = _planted(monkeypatch, "listing", hog)
    assert any("MemoryError" in f for f in found), found


def test_harness_catches_a_hang(monkeypatch):
    import time

    monkeypatch.setattr(harness, "TIME_LIMIT", 1.0)

    def hang(self):
        time.sleep(30)

    monkeypatch.setattr(harness.run_cli, "__defaults__", (b"", 1.0, harness.MEM_LIMIT))
    found = _planted(monkeypatch, "listing", hang)
    assert any("timed out" in f for f in found), found


def test_harness_catches_a_write_by_a_read_only_command(monkeypatch):
    def scribble(self):
        os.pwrite(os.open(self.dev.path, os.O_WRONLY), b"x", 4096 * 3)
        return []

    found = _planted(monkeypatch, "listing", scribble)
    assert any("wrote to" in f for f in found), found


def test_harness_catches_a_second_error_format(monkeypatch):
    import sys

    def other_format(self):
        print("error: planted", file=sys.stderr)
        raise SystemExit(2)

    found = _planted(monkeypatch, "listing", other_format)
    assert any("not one 'blkjournal: ' line" in f for f in found), found
