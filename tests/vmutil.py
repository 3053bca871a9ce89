"""What the VM tests share: skip unless this machine can build and boot the guest."""

from __future__ import annotations

import os
import platform

import pytest


def need_vm() -> None:
    if os.geteuid() != 0:
        pytest.skip("the VM build, qemu and nbdkit need root (apt-get, /var/cache)")
    if platform.machine() != "x86_64":
        pytest.skip("the guest is an amd64 Debian kernel")
