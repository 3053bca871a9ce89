"""The progress bar of a long exploration: crash points, classes checked, rate and ETA.

Shown only on a terminal: in CI logs (not a TTY, or CI=true as GitHub and GitLab set it) and when
output is piped, a live bar is noise, so it stays quiet.  The bar goes to stderr and disappears
when done, leaving the report alone on stdout.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def wanted(stream=None) -> bool:
    """A bar only on an interactive terminal, never under CI."""
    stream = stream or sys.stderr
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def progress_bar(total_points: int, enabled: bool = True):
    """Yields tick(result) for each segment's result dict ('points', 'checks')."""
    if not (enabled and wanted()):
        yield lambda _r: None
        return
    bar = Progress(TextColumn("checking crash states"), BarColumn(),
                   TextColumn("{task.completed}/{task.total} crash points"),
                   TextColumn("{task.fields[classes]:,} classes, {task.fields[rate]:.0f}/s"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=Console(file=sys.stderr), transient=True)
    with bar:
        task = bar.add_task("explore", total=total_points, classes=0, rate=0.0)
        state = {"classes": 0}

        def tick(r: dict) -> None:
            state["classes"] += r["checks"]
            t = bar.tasks[0]
            elapsed = t.elapsed or 0
            bar.update(task, advance=len(r["points"]), classes=state["classes"],
                       rate=state["classes"] / elapsed if elapsed else 0.0)

        yield tick
