"""Boot the guest under qemu (TCG) and run the host's Python in it.

    result = run_guest(["-m", "blkjournal.vm.guest", "selftest"],
                       disks=[Disk("data.img"), Disk("log.img")], timeout=120, results_dir=out)
    result.check()            # BlkError unless the guest program exited 0
    json.load(open(f"{out}/selftest.json"))

The guest sees the host's root read-only over 9p and chroots into it, so `sys.executable` and the
project tree are the host's own. Disks appear as /dev/vda, /dev/vdb, ... in the order given (also in
$BLKJOURNAL_DISKS, and each carries the virtio serial `blkjournalN`). `results_dir` is shared
read-write and mounted in the guest at the same absolute path, which is also in $BLKJOURNAL_RESULTS.
Every host path reads the same in the guest (read-only); the guest's writable scratch space is
$TMPDIR=/run/tmp, a tmpfs.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import blkjournal
from blkjournal.errors import BlkError
from blkjournal.vm.build import GuestImage, build_guest

CONSOLE_TAIL_LINES = 30
SECTOR_SIZES = (512, 1024, 2048, 4096)


@dataclasses.dataclass(frozen=True)
class Disk:
    """A guest disk: an image file, or an `nbd:unix:SOCKET` URL (e.g. an nbdkit lying disk).

    cache: qemu's cache mode; None picks `unsafe` for files (flushes are free: the host page cache
    keeps everything once qemu exits) and `none` for nbd (REFERENCE.md §5).
    sector_size: overrides run_guest's sector_size for this disk.
    """

    path: str
    cache: str | None = None
    sector_size: int | None = None
    readonly: bool = False

    @property
    def is_nbd(self) -> bool:
        return self.path.startswith("nbd:")

    def drive(self, index: int) -> str:
        cache = self.cache or ("none" if self.is_nbd else "unsafe")
        if not self.is_nbd and not os.path.exists(self.path):
            raise BlkError(f"disk image {self.path} does not exist")
        path = self.path if self.is_nbd else os.path.abspath(self.path)
        opts = f"file={_qemu_escape(path)},format=raw,if=none,id=d{index},cache={cache}"
        return opts + (",readonly=on" if self.readonly else "")


def _qemu_escape(value: str) -> str:
    return value.replace(",", ",,")


def guest_device(index: int) -> str:
    """The guest's device node for the index-th disk: /dev/vda, /dev/vdb, ..."""
    if index >= 26:
        raise BlkError("at most 26 guest disks")
    return f"/dev/vd{chr(ord('a') + index)}"


@dataclasses.dataclass
class GuestResult:
    """exit_code is None only when `power_cut` killed the guest (then power_cut is True)."""

    exit_code: int | None
    console: str
    results_dir: str
    devices: list[str]
    elapsed: float
    power_cut: bool = False

    def console_tail(self, lines: int = CONSOLE_TAIL_LINES) -> str:
        return console_tail(self.console, lines)

    def check(self) -> "GuestResult":
        """Raise BlkError (with the console's last lines) unless the guest program exited 0."""
        if self.power_cut:
            raise BlkError("the guest was killed by a power cut: it has no exit code")
        if self.exit_code != 0:
            raise BlkError(f"guest program exited {self.exit_code}; last console lines:\n"
                           f"{self.console_tail()}")
        return self


def console_tail(text: str, lines: int = CONSOLE_TAIL_LINES) -> str:
    return "\n".join(text.replace("\r", "").rstrip().splitlines()[-lines:])


def project_root() -> str:
    """The directory holding the `blkjournal` package the host is running."""
    return str(Path(blkjournal.__file__).resolve().parent.parent)


def qemu_command(image: GuestImage, disks: list[Disk], *, sector_size: int, ctl_dir: str,
                 results_dir: str | None, memory: str | None = None, interactive: bool = False,
                 kernel_args: str = "") -> list[str]:
    """The qemu command line; machine defaults (accel, cpu, cpus, memory, kernel args) from vm/guest.toml."""
    from blkjournal.vm.recipe import current

    spec = current()
    for ss in [sector_size] + [d.sector_size for d in disks if d.sector_size]:
        if ss not in SECTOR_SIZES:
            raise BlkError(f"sector size must be one of {', '.join(map(str, SECTOR_SIZES))}, not {ss}")
    cmd = [
        shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
        "-accel", spec.accel, "-cpu", spec.cpu, "-m", memory or spec.memory, "-smp", str(spec.cpus),
        "-nographic", "-no-reboot", "-nodefaults",
        "-serial", "mon:stdio" if interactive else "stdio",
        "-kernel", image.kernel, "-initrd", image.initrd,
        "-append", f"{spec.kernel_args} {kernel_args}".strip(),
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={_qemu_escape(ctl_dir)},mount_tag=blkctl,security_model=none,multidevs=remap",
    ]
    if results_dir is not None:
        cmd += ["-virtfs", f"local,path={_qemu_escape(results_dir)},mount_tag=blkresults,"
                           "security_model=none,multidevs=remap"]
    for i, disk in enumerate(disks):
        ss = disk.sector_size or sector_size
        cmd += ["-drive", disk.drive(i),
                "-device", f"virtio-blk-pci,drive=d{i},serial=blkjournal{i},"
                           f"logical_block_size={ss},physical_block_size={ss}"]
    return cmd


def _write_control(ctl_dir: str, command: list[str], *, results_dir: str | None, devices: list[str],
                   env: dict[str, str]) -> None:
    exports = {
        "BLKJOURNAL_IN_VM": "1",
        "BLKJOURNAL_RESULTS": results_dir or "",
        "BLKJOURNAL_DISKS": " ".join(devices),
        "BLKJOURNAL_PYTHON": sys.executable,
        "BLKJOURNAL_PROJECT": project_root(),
        "PYTHONPATH": project_root(),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/run/tmp",
        "TMPDIR": "/run/tmp",
        "TERM": os.environ.get("TERM", "linux"),
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        **env,
    }
    with open(os.path.join(ctl_dir, "env.sh"), "w") as f:
        for k, v in exports.items():
            f.write(f"export {k}={shlex.quote(v)}\n")
    with open(os.path.join(ctl_dir, "run.sh"), "w") as f:
        f.write('cd "$BLKJOURNAL_PROJECT" 2>/dev/null || cd /\n')
        f.write('[ -n "$BLKJOURNAL_STTY" ] && stty $BLKJOURNAL_STTY 2>/dev/null\n')
        f.write("exec " + " ".join(shlex.quote(a) for a in command) + "\n")


class _Console(threading.Thread):
    """Collects qemu's serial output as text (decoded as it arrives); optionally echoes it."""

    def __init__(self, stream, echo) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.echo = echo
        self.parts: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._joined = ""

    def run(self) -> None:
        while True:
            data = self.stream.read1(65536)
            if not data:
                self.parts.append(self._decoder.decode(b"", final=True))
                return
            text = self._decoder.decode(data)
            self.parts.append(text)
            if self.echo is not None:
                self.echo.write(text)
                self.echo.flush()

    def raw(self) -> str:
        """Everything so far, as received (cheap to call often)."""
        n = len(self.parts)
        if n:
            self._joined += "".join(self.parts[:n])
            del self.parts[:n]
        return self._joined

    def text(self) -> str:
        return _ANSI.sub("", self.raw().replace("\r\n", "\n"))


# Terminal control sequences (SeaBIOS clears the screen): noise in a captured console.
_ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[c()][0-9A-B]?)")


def run_guest(argv: list[str], *, disks: list[Disk], timeout: float, results_dir: str,
              sector_size: int = 512, env: dict[str, str] | None = None, memory: str | None = None,
              image: GuestImage | None = None, echo=None, python: bool = True,
              console_log: str | None = "console.log",
              power_cut: Callable[[float, str], bool] | None = None) -> GuestResult:
    """Boot the guest, run `python argv...` (the host's sys.executable) in it, return its result.

    argv: arguments after the interpreter, e.g. ["-m", "blkjournal.vm.guest", "selftest"]; with
    python=False, argv is a whole command line run by the guest's /bin/sh instead.
    disks: attached in order as /dev/vda, /dev/vdb, ... (passed as $BLKJOURNAL_DISKS).
    timeout: seconds from qemu start to power-off (boot is ~3 s, first python start ~1 s).
    results_dir: host directory shared read-write, at the same path in the guest.
    env: extra environment for the guest program.
    echo: a text stream to copy the console to as it arrives (e.g. sys.stderr), or None
    (then $BLKJOURNAL_VM_ECHO set to anything non-empty means sys.stderr).
    console_log: name of a file in results_dir that receives the console text (None: not written).
    power_cut: called about every 20 ms with (seconds since qemu started, raw console text so far);
    when it returns True qemu is killed with SIGKILL at once (a power cut: qemu's cache=unsafe
    file disks keep what reached the host page cache; an nbdkit lying disk loses more when the
    caller kills nbdkit too) and a GuestResult with power_cut=True, exit_code=None is returned.
    The guest can signal readiness on its console or in results_dir (read it from the callback).

    Raises BlkError when the guest hangs, panics, exceeds `timeout` or dies before the program
    ends; the message carries the console's last lines. A nonzero exit of the program itself is
    returned in GuestResult.exit_code (GuestResult.check() turns it into a BlkError).
    """
    image = image or build_guest()
    if echo is None and os.environ.get("BLKJOURNAL_VM_ECHO"):
        echo = sys.stderr
    results_dir = os.path.abspath(results_dir)
    os.makedirs(results_dir, exist_ok=True)
    devices = [guest_device(i) for i in range(len(disks))]
    command = [sys.executable, *argv] if python else ["/bin/sh", "-c", " ".join(argv)]
    with tempfile.TemporaryDirectory(prefix="blkjournal-vmctl-") as ctl:
        _write_control(ctl, command, results_dir=results_dir, devices=devices, env=env or {})
        cmd = qemu_command(image, disks, sector_size=sector_size, ctl_dir=ctl,
                           results_dir=results_dir, memory=memory)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        reader = _Console(proc.stdout, echo)
        reader.start()
        timed_out = cut = False
        try:
            if power_cut is None:
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
            else:
                while proc.poll() is None:
                    now = time.monotonic() - t0
                    if now > timeout:
                        timed_out = True
                        break
                    if power_cut(now, reader.raw()):
                        proc.kill()
                        proc.wait()
                        cut = True
                        break
                    time.sleep(0.02)
            if timed_out:
                _stop(proc)
        except BaseException:
            _stop(proc)
            raise
        reader.join(timeout=5)
        elapsed = time.monotonic() - t0
        console = reader.text()
        if console_log:
            with open(os.path.join(results_dir, console_log), "w") as f:
                f.write(console)
        exit_file = os.path.join(ctl, "exit_code")
        code = None
        if os.path.exists(exit_file):
            text = open(exit_file).read().strip()
            code = int(text) if text.lstrip("-").isdigit() else None
    tail = console_tail(console)
    if cut:
        return GuestResult(exit_code=None, console=console, results_dir=results_dir, devices=devices,
                           elapsed=elapsed, power_cut=True)
    if timed_out:
        raise BlkError(f"guest timed out after {timeout:.0f} s (hung?); last console lines:\n{tail}")
    if code is None:
        if "Kernel panic" in console:
            why = "the guest kernel panicked"
        elif proc.returncode != 0:
            why = f"qemu exited {proc.returncode}"
        else:
            why = "the guest stopped before its program finished"
        raise BlkError(f"{why} (after {elapsed:.1f} s); last console lines:\n{tail}")
    return GuestResult(exit_code=code, console=console, results_dir=results_dir, devices=devices,
                       elapsed=elapsed)


def _stop(proc: subprocess.Popen) -> None:
    """Stop qemu (its own session: we started it) — TERM, then KILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def shell_guest(*, disks: list[Disk], sector_size: int = 512, results_dir: str | None = None,
                command: list[str] | None = None, memory: str | None = None) -> int:
    """An interactive guest on this terminal (Ctrl-A X quits qemu); returns the shell's exit code.

    The shell runs chrooted in the host's root like run_guest's programs, with the disks at
    /dev/vda, ... and DM_DISABLE_UDEV=1 exported; `poweroff`-ing is done by leaving the shell.
    """
    image = build_guest()
    devices = [guest_device(i) for i in range(len(disks))]
    if results_dir is not None:
        results_dir = os.path.abspath(results_dir)
        os.makedirs(results_dir, exist_ok=True)
    shell = command or ["/bin/bash", "-i"]
    with tempfile.TemporaryDirectory(prefix="blkjournal-vmctl-") as ctl:
        size = shutil.get_terminal_size((0, 0))
        stty = f"rows {size.lines} cols {size.columns}" if size.lines and size.columns else ""
        _write_control(ctl, shell, results_dir=results_dir, devices=devices,
                       env={"BLKJOURNAL_STTY": stty})
        cmd = qemu_command(image, disks, sector_size=sector_size, ctl_dir=ctl, results_dir=results_dir,
                           memory=memory, interactive=True)
        print(f"blkjournal: disks {' '.join(devices) or '(none)'}; leave the shell to power off, "
              "Ctrl-A X kills qemu", file=sys.stderr)
        subprocess.run(cmd)
        exit_file = os.path.join(ctl, "exit_code")
        if os.path.exists(exit_file):
            return int(open(exit_file).read().strip() or 1)
    return 1


def run_scenario(name: str, args: list[str] = (), *, disks: list[Disk], timeout: float, results_dir: str,
                 sector_size: int = 512, check: bool = True, **kwargs) -> GuestResult:
    """Run the guest scenario `name` (see blkjournal.vm.guest.SCENARIOS) with `args`.

    With check=True (the default) a nonzero exit of the scenario raises BlkError.
    Other keyword arguments go to run_guest (env, memory, echo, image, console_log).
    """
    result = run_guest(["-m", "blkjournal.vm.guest", name, *args], disks=disks, timeout=timeout,
                       results_dir=results_dir, sector_size=sector_size, **kwargs)
    return result.check() if check else result
