"""Headless Chromium (Debian's `chromium`, installed by blkjournal/vm/deps.py) for the HTML report.

`make demo` keeps a screenshot of the `none` run's report, and the tests read the report's DOM as
the browser renders it (scripts run), so "the report renders" is checked in a real browser.
Flags: no sandbox (root), no GPU, and nothing that reaches the network (updates, sync, first run).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import BlkError

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        raise BlkError("no chromium: `make test` installs it (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="blkjournal-chromium-") as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                              timeout=timeout)


def dump_dom(html_path: str, fragment: str = "") -> str:
    """The page's DOM after its scripts ran (`fragment`: the URL's #part, which the page may act on)."""
    r = chromium("--dump-dom", Path(html_path).resolve().as_uri() + (f"#{fragment}" if fragment else ""))
    if r.returncode != 0:
        raise BlkError(f"chromium --dump-dom failed (exit {r.returncode}): {r.stderr.strip()[-300:]}")
    return r.stdout


def screenshot(html_path: str, png_path: str, size: str = "1280,1600") -> str:
    r = chromium(f"--screenshot={Path(png_path).resolve()}", f"--window-size={size}",
                 Path(html_path).resolve().as_uri())
    if r.returncode != 0 or not Path(png_path).exists():
        raise BlkError(f"chromium --screenshot failed (exit {r.returncode}): {r.stderr.strip()[-300:]}")
    return png_path
