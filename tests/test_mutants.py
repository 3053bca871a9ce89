"""The mutation suite's bounded share of `make test` (the whole suite is `make mutate`).

Every mutant's patch must still apply (a refactoring that moves the code fails here, not
silently in `make mutate`); a few mutants, one per way of being caught, must be caught, and the
crash-only check must hold for them.
"""

from __future__ import annotations

import pytest

from blkjournal.crash.explore import crashtest
from tests.mutants import all_mutants, applied, by_name
from tests.mutants.run import run_one


def test_every_mutant_applies_and_is_documented():
    ms = all_mutants()
    assert len(ms) >= 20 and len({m.name for m in ms}) == len(ms)
    areas = {m.area for m in ms}
    assert {"journal", "ordered", "freelist", "truncate", "fsck"} <= areas
    for m in ms:
        assert m.models and m.kind in ("explorer", "fsck", "faults")
        with applied(m):
            pass


@pytest.mark.parametrize("name", ["journal-reuse-before-checkpoint",  # only allocator pressure reaches it
                                  "ordered-recovery-trusts-bitmap",  # fsck cannot see it: the allocator check does
                                  "journal-evidence-one-early",  # only a search answered per class reaches it
                                  "ordered-bitmap-stamps-issued",  # only the sync's bitmap shows it
                                  "fsck-no-owned-twice",  # fsck's own tests must fail
                                  "store-read-unverified-block"])  # the fault explorer must return wrong data
def test_mutant_is_caught(name):
    row = run_one(name)
    assert row["verdict"] == "caught" and row["ok"], row


def test_the_unmutated_store_passes_where_the_mutant_is_caught(tmp_path):
    """The catch is the mutant's doing: the same run without it is clean."""
    kw = dict(protocol="journal", workload="pressure", seed=0, nops=60, first_failure=True)
    with applied(by_name("journal-reuse-before-checkpoint")):
        bad, _ = crashtest(str(tmp_path), **kw)
    good, _ = crashtest(str(tmp_path), **kw)
    assert not bad.ok and good.ok
