"""The workload file beside a log (LOG.workload.json): what was run, so a log checks anywhere.

Written by crashtest and the VM's recorder, read by check-log, replay and the fault explorer; a
module of its own so each of them can read it without importing the explorer.  Nothing in it is
trusted: every field is typed and range-checked, its size and the model its ops would build are
bounded before anything is allocated.
"""

from __future__ import annotations

import json

from ..errors import BlkError
from ..format import BARRIERS, PROTOCOLS
from ..untrusted import integer, json_object, optional_integer, text
from .recorder import MAX_NBLOCKS
from .workload import MAX_FILE, MODEL_BUDGET, Operation, model_cost

MAX_WORKLOAD_FILE = 64 << 20  # bytes
MAX_OPS = 1 << 20


def workload_path(log_path: str) -> str:
    return log_path + ".workload.json"


def save_workload(log_path: str, protocol: str, barrier: str, ops: list[Operation], **extra) -> None:
    with open(workload_path(log_path), "w") as f:
        json.dump({"protocol": protocol, "barrier": barrier, "ops": [o.to_json() for o in ops], **extra}, f)


def load_workload(log_path: str, *, model_budget: int | None = MODEL_BUDGET) -> dict | None:
    """The workload file beside a log, every field checked (BlkError names the file and the fault);
    None when there is none.  `model_budget` bounds the model its ops would build; None when the
    caller has its own ops (its own workload, as crashtest's big one: ~270 MB of model) and uses
    the file only for protocol, barrier and size."""
    path = workload_path(log_path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_WORKLOAD_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BlkError(f"{path}: {e.strerror}") from None
    try:
        if len(raw) > MAX_WORKLOAD_FILE:
            raise ValueError(f"larger than {MAX_WORKLOAD_FILE} bytes")
        w = json_object(raw)
        if not isinstance(w.get("ops"), list) or len(w["ops"]) > MAX_OPS:
            raise ValueError(f"'ops' must be a list of at most {MAX_OPS} operations")
        w["ops"] = [Operation.from_json(o) for o in w["ops"]]
        if w.get("protocol") not in PROTOCOLS or w.get("barrier", "flush") not in BARRIERS:
            raise ValueError("unknown protocol or barrier")
        w["nblocks"] = optional_integer(w.get("nblocks"), "nblocks", 0, MAX_NBLOCKS)
        if w.get("kernel") is not None:
            text(w["kernel"], "kernel", 256)
        initial = w.get("initial_sizes") or {}
        if not isinstance(initial, dict) or len(initial) > MAX_OPS:
            raise ValueError("'initial_sizes' must be an object of file sizes")
        initial = {text(n, "file name", 256): integer(v, "file size", 0, MAX_FILE + 1) for n, v in initial.items()}
        cost = model_cost(w["ops"], initial)
        if model_budget is not None and cost > model_budget:
            raise ValueError(f"its model would need {cost} bytes (at most {model_budget})")
    except (ValueError, TypeError, KeyError) as e:
        raise BlkError(f"{path}: not a workload file ({e})") from None
    return w
