"""Reading text files nobody vouches for: bounded lines, bounded JSON, checked integers.

The harness reads files that come back from VMs and other machines (a log's role sidecar, its
workload file, an hwcheck acks log).  Any of them may be truncated, damaged or hostile, so what
is read is never trusted: a line is bounded before it is held in memory, JSON that nests without
end is refused (Python's decoder would raise RecursionError), and a value used as an integer must
be a JSON integer in range (JSON also offers floats, 1e400 = Infinity, strings, booleans, lists).
Every refusal is a ValueError the caller turns into a one-line error naming the file and line.
"""

from __future__ import annotations

import json

MAX_LINE = 1 << 20  # a line longer than this is damaged (real lines are a few hundred bytes)
U64 = 1 << 64


def lines(f, max_line: int = MAX_LINE):
    """The lines of binary file `f` without their newlines, streamed.  A line longer than
    `max_line` is read past and yielded as None, so a file without newlines never sits in memory."""
    while True:
        raw = f.readline(max_line + 1)
        if not raw:
            return
        if len(raw) > max_line and not raw.endswith(b"\n"):
            while (more := f.readline(max_line)) and not more.endswith(b"\n"):
                pass
            yield None
            continue
        yield raw.rstrip(b"\n")


def json_value(raw: bytes | str | None):
    """json.loads, with every failure (bad UTF-8, bad JSON, too deep, too long) a ValueError."""
    if raw is None:
        raise ValueError(f"line longer than {MAX_LINE} bytes")
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def json_object(raw: bytes | str | None) -> dict:
    v = json_value(raw)
    if not isinstance(v, dict):
        raise ValueError(f"expected a JSON object, found {type(v).__name__}")
    return v


def integer(value, what: str, lo: int = 0, hi: int = U64) -> int:
    """`value` if it is a JSON integer in lo..hi-1; ValueError otherwise (never a float or a bool)."""
    if type(value) is not int or not lo <= value < hi:  # (a JSON value: a bool is an int of another type)
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ValueError(f"{what} {shown} is not an integer in {lo}..{hi - 1}")
    return value


def optional_integer(value, what: str, lo: int = 0, hi: int = U64) -> int | None:
    return None if value is None else integer(value, what, lo, hi)


def text(value, what: str, max_len: int = MAX_LINE) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise ValueError(f"{what} is not a string of at most {max_len} characters")
    return value
