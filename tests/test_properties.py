"""probe() reads what the kernel says about a device without opening it; images borrow their host's."""

from __future__ import annotations

import os

import pytest

from blkjournal.errors import BlkError
from blkjournal.properties import DeviceProperties, list_block_devices, probe, read_mounts, unescape

SIZE = 8 << 20


@pytest.mark.parametrize("sector", [512, 4096])
def test_probe_loop_device_block_sizes(make_loop, sector):
    dev = make_loop(SIZE, sector)
    p = probe(dev)
    assert p.is_block and p.path == dev and p.name == os.path.basename(dev)
    assert p.size == SIZE
    assert p.logical_block_size == sector
    assert p.physical_block_size >= sector
    assert p.write_cache in ("write back", "write through")
    assert isinstance(p.fua, bool) and isinstance(p.rotational, bool)
    assert p.backing_file and p.backing_file.endswith(".img")
    line = p.preflight()
    assert "\n" not in line and line.startswith(f"write cache: {p.write_cache}; FUA: ")
    assert f"sectors: {sector}/" in line


def test_listed_devices_include_a_new_loop_device(make_loop):
    dev = make_loop(SIZE)
    found = {p.path: p for p in list_block_devices()}
    assert found[dev].size == SIZE
    assert all(p.size > 0 for p in found.values())


def test_probe_image_file(image):
    with open(image, "wb") as f:
        f.truncate(SIZE)
    p = probe(image)
    assert not p.is_block and p.size == SIZE and p.name == "store.img"
    assert p.logical_block_size == 512 and p.physical_block_size >= 512
    assert probe(image, logical_block_size=4096).logical_block_size == 4096
    assert p.preflight().startswith("image file on ")
    if p.host_device is not None:  # the host disk's cache is the one a crash can lose
        host = probe(p.host_device)
        assert (p.write_cache, p.fua, p.rotational) == (host.write_cache, host.fua, host.rotational)
    else:
        assert p.write_cache is None


def test_probe_rejects_what_is_not_a_device(tmp_path):
    with pytest.raises(BlkError, match="no such file or device"):
        probe(str(tmp_path / "missing"))
    with pytest.raises(BlkError, match="not a block device or regular file"):
        probe(str(tmp_path))
    with pytest.raises(BlkError, match="not a block device or regular file"):
        probe("/dev/null")


def _props(write_cache, fua):
    return DeviceProperties("/dev/x", "x", True, 4096, 512, 512, write_cache, fua, False, "M", "1.0", True)


@pytest.mark.parametrize("cache,fua,text", [
    ("write back", False, "FUA: emulated (2 flushes per FUA write)"),
    ("write back", True, "FUA: native"),
    ("write through", False, "FUA: not needed (no volatile write cache)"),
    (None, None, "FUA: unknown"),
])
def test_preflight_fua_wording(cache, fua, text):
    line = _props(cache, fua).preflight()
    assert text in line
    assert "rotational: no; model: M; firmware: 1.0" in line


def test_mount_table_and_escapes():
    assert any(m.mountpoint == "/" for m in read_mounts())
    assert unescape(r"/mnt/a\040b") == "/mnt/a b"
