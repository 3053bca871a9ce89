"""Running the CLI from tests: in-process through main() (fast) and as a real process."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from typing import NamedTuple

BIN = os.path.join(os.path.dirname(sys.executable), "blkjournal")


class Result(NamedTuple):
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()


def cli(*args: str, stdin: bytes = b"") -> Result:
    """`blkjournal ARGS` through main(), in-process: exit code, stdout bytes, stderr text."""
    from blkjournal.cli import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.StringIO()
    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr
    sys.argv = ["blkjournal", *args]
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    sys.stdout, sys.stderr = out, err
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv, sys.stdin, sys.stdout, sys.stderr = saved
    out.flush()
    return Result(code, out.buffer.getvalue(), err.getvalue())


def sh(*args: str, stdin: bytes = b"") -> Result:
    """The installed console script in a real process."""
    p = subprocess.run([BIN, *args], input=stdin, capture_output=True, timeout=60)
    return Result(p.returncode, p.stdout, p.stderr.decode())


def sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
