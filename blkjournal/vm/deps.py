"""Host packages the VM, report and CI tests need, installed with apt-get when missing.

`ensure_host_packages()` is idempotent: when everything is present it costs one `dpkg-query` call.
The kernel itself is never installed on the host: build.py downloads and unpacks its .deb.

Run as a module (`python -m blkjournal.vm.deps`) from the Makefile so `make test`/`make demo`
set up a fresh Debian machine.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from blkjournal.errors import BlkError

# Debian package -> a command it installs (a presence check besides dpkg's status).
HOST_PACKAGES: dict[str, str] = {
    "qemu-system-x86": "qemu-system-x86_64",
    "busybox-static": "busybox",
    "nbdkit": "nbdkit",
    "dmsetup": "dmsetup",
    "chromium": "chromium",  # headless, to check that the HTML crash report renders (tests/test_reports.py)
    "shellcheck": "shellcheck",  # the ci/ scripts, and actionlint's check of the workflow's run: steps
}
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
_updated = False


def _apt_env() -> dict[str, str]:
    return {**os.environ, **_APT_ENV}


def _lists_present() -> bool:
    return bool(glob.glob("/var/lib/apt/lists/*_Packages*"))


def apt_update(force: bool = False) -> None:
    """Run `apt-get update` once per process (or when no package lists exist at all)."""
    global _updated
    if _updated and not force:
        return
    _run(["apt-get", "update", "-qq"])
    _updated = True


def ensure_apt_lists() -> None:
    """Package lists are needed by apt-cache search / apt-get download: fetch them if absent."""
    if not _lists_present():
        apt_update()


def missing_packages(packages: dict[str, str] | None = None) -> list[str]:
    """The packages of `packages` (default HOST_PACKAGES) that dpkg does not list as installed."""
    packages = HOST_PACKAGES if packages is None else packages
    names = list(packages)
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *names],
        capture_output=True, text=True,
    )
    installed = {
        line.split()[0].split(":")[0]
        for line in proc.stdout.splitlines()
        if line.split()[1:] == ["installed"]
    }
    return [n for n in names if n not in installed or shutil.which(packages[n], path=_SEARCH_PATH) is None]


def ensure_host_packages(packages: dict[str, str] | None = None, *, quiet: bool = False) -> list[str]:
    """Install whichever of the VM's host packages are missing; return the names installed."""
    missing = missing_packages(packages)
    if not missing:
        return []
    if os.geteuid() != 0:
        raise BlkError(f"missing host packages {' '.join(missing)}: install them as root "
                       f"(apt-get install {' '.join(missing)})")
    if shutil.which("apt-get") is None:
        raise BlkError(f"missing host packages {' '.join(missing)} and no apt-get on this machine")
    if not quiet:
        print(f"blkjournal: installing host packages: {' '.join(missing)}", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if not _lists_present():
        apt_update()
    try:
        _run(install)
    except BlkError:
        # Stale or partial lists ("Unable to locate package", 404 on a superseded .deb): refresh once.
        apt_update(force=True)
        _run(install)
    still = missing_packages(packages)
    if still:
        raise BlkError(f"apt-get ran but these packages are still missing: {' '.join(still)}")
    return missing


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_apt_env())
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BlkError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def main() -> int:
    try:
        done = ensure_host_packages()
    except BlkError as e:
        print(f"blkjournal: {e}", file=sys.stderr)
        return e.exit_code
    if done:
        print(f"blkjournal: installed {' '.join(done)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
