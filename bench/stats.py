"""Samples by round, and their summaries: min/median/max, and ratios taken round by round."""

from __future__ import annotations

import statistics
from collections import defaultdict


class Samples:
    """task -> {round: sample dict}.  A task runs at most once per round."""

    def __init__(self) -> None:
        self.by_task: dict[str, dict[int, dict]] = defaultdict(dict)

    def add(self, task: str, rnd: int, sample: dict) -> None:
        self.by_task[task][rnd] = sample

    def values(self, task: str, metric: str) -> dict[int, float]:
        return {r: s[metric] for r, s in self.by_task.get(task, {}).items()
                if metric in s and s[metric] is not None}

    def to_json(self) -> dict:
        return {t: {str(r): s for r, s in sorted(d.items())} for t, d in sorted(self.by_task.items())}

    @classmethod
    def from_json(cls, d: dict) -> "Samples":
        """The samples a results.json saved (to judge them again: `bench.run --render`)."""
        S = cls()
        for task, rounds in d.items():
            for r, sample in rounds.items():
                S.add(task, int(r), sample)
        return S


def summary(vals) -> dict | None:
    vals = sorted(vals)
    if not vals:
        return None
    return {"min": vals[0], "median": statistics.median(vals), "max": vals[-1], "n": len(vals)}


def paired_ratio(num: dict[int, float], den: dict[int, float]) -> dict | None:
    """num/den per round where both were measured (side by side), summarised."""
    rs = [num[r] / den[r] for r in num if r in den and den[r]]
    return summary(rs)
