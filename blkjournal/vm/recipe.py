"""The guest's recipe: vm/guest.toml and vm/init.sh at the top of the repository, read here.

The recipe is data a user changes without reading Python (kernel package, modules, /init, qemu
defaults, disk sizes); build.py and qemu.py take every such choice from it.  Found at
$BLKJOURNAL_VM_RECIPE, else vm/guest.toml of the checkout this package runs from, else ./vm/guest.toml
(a `pip install .` in CI runs from the checkout).  `digest` covers the file and the init script,
so the build cache (build.py) rebuilds the initramfs whenever either changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
from pathlib import Path

from blkjournal.errors import BlkError

RECIPE_ENV = "BLKJOURNAL_VM_RECIPE"


@dataclasses.dataclass(frozen=True)
class Recipe:
    path: str
    kernel_series: str
    kernel_flavour: str
    kernel_package: str  # "" = the newest of the series
    kernel_args: str
    modules: tuple[str, ...]
    optional_modules: tuple[str, ...]
    module_dirs: tuple[str, ...]
    init_script: str
    applets: tuple[str, ...]
    accel: str
    cpu: str
    cpus: int
    memory: str
    data_size: int
    log_min: int
    digest: str


def recipe_path() -> Path:
    env = os.environ.get(RECIPE_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent.parent / "vm" / "guest.toml"
    return here if here.exists() else Path("vm") / "guest.toml"


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(text, where: str) -> int:
    """Bytes from 4096 or "4M" (binary units, as qemu and truncate read them)."""
    if isinstance(text, int) and text > 0:
        return text
    t = str(text).strip().upper()
    unit = t[-1:] if t[-1:] in _UNITS else ""
    num = t[:-1] if unit else t
    if not num.isdigit() or int(num) == 0:
        raise BlkError(f"{where}: a size like \"4M\", not {text!r}")
    return int(num) * _UNITS[unit]


def _strings(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise BlkError(f"{where}: a list of names")
    return tuple(value)


def load(path: str | Path | None = None) -> Recipe:
    """Parse and check a recipe; BlkError (one line) for anything missing or mistyped."""
    p = Path(path) if path is not None else recipe_path()
    try:
        raw = p.read_bytes()
        doc = tomllib.loads(raw.decode())
    except FileNotFoundError:
        raise BlkError(f"{p}: no guest recipe (set ${RECIPE_ENV}, or run from the blkjournal checkout)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BlkError(f"{p}: not a TOML guest recipe ({e})") from None
    try:
        k, m, i, q, d = (doc[s] for s in ("kernel", "modules", "initramfs", "qemu", "disks"))
        init_path = p.parent / i["init"]
        try:
            init = init_path.read_text()
        except OSError as e:
            raise BlkError(f"{p}: initramfs.init {init_path}: {e.strerror}") from None
        cpus = q.get("cpus", 1)
        if not isinstance(cpus, int) or cpus < 1:
            raise BlkError(f"{p}: qemu.cpus must be a positive integer")
        r = Recipe(path=str(p), kernel_series=str(k["series"]), kernel_flavour=str(k["flavour"]),
                   kernel_package=str(k.get("package", "")), kernel_args=str(k["args"]),
                   modules=_strings(m["load"], f"{p}: modules.load"),
                   optional_modules=_strings(m.get("optional", []), f"{p}: modules.optional"),
                   module_dirs=_strings(m["search"], f"{p}: modules.search"),
                   init_script=init, applets=_strings(i["applets"], f"{p}: initramfs.applets"),
                   accel=str(q["accel"]), cpu=str(q["cpu"]), cpus=cpus, memory=str(q["memory"]),
                   data_size=_size(d["data"], f"{p}: disks.data"), log_min=_size(d["log_min"], f"{p}: disks.log_min"),
                   digest=hashlib.sha256(raw + b"\0" + init.encode()).hexdigest()[:12])
    except KeyError as e:
        raise BlkError(f"{p}: the guest recipe has no {e.args[0]!r}") from None
    except TypeError:
        raise BlkError(f"{p}: a section of the guest recipe is not a table") from None
    return r


def current() -> Recipe:
    """The recipe in force, read afresh (a user may have just edited it)."""
    return load(recipe_path())
