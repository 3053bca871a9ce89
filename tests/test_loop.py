"""Real kernel loop devices with 512 B and 4 KiB logical sectors, opened O_DIRECT.

A round trip per protocol: mkfs, put (small, multi-run large, sparse), get, reopen, fsck -- on
the library and through the CLI -- with the bytes checked in the loop device's backing file too.
"""

from __future__ import annotations

import os

import pytest

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.fsck import fsck
from blkjournal.store import Store

pytestmark = pytest.mark.loop


from cliutil import cli  # noqa: E402


def backing_file(loop: str) -> str:
    with open(f"/sys/block/{os.path.basename(loop)}/loop/backing_file") as f:
        return f.read().strip()


@pytest.mark.parametrize("sector", [512, 4096])
def test_device_reports_the_logical_block_size(make_loop, sector):
    loop = make_loop(8 << 20, sector)
    with Device(loop) as d:
        assert d.is_block and d.logical_block_size == sector
        assert d.nblocks == (8 << 20) // BLOCK_SIZE
        d.write(5, b"\xab" * BLOCK_SIZE, fua=True)
        d.write(6, b"\xcd" * (2 * BLOCK_SIZE))
        d.flush()
        assert d.read(5, 3) == b"\xab" * BLOCK_SIZE + b"\xcd" * (2 * BLOCK_SIZE)
    with open(backing_file(loop), "rb") as f:
        f.seek(5 * BLOCK_SIZE)
        assert f.read(3 * BLOCK_SIZE) == b"\xab" * BLOCK_SIZE + b"\xcd" * (2 * BLOCK_SIZE)


@pytest.mark.parametrize("protocol", ["journal", "ordered", "none"])
@pytest.mark.parametrize("sector", [512, 4096])
def test_round_trip(make_loop, protocol, sector):
    loop = make_loop(16 << 20, sector)
    small = os.urandom(5000)
    large = os.urandom(1100 * BLOCK_SIZE + 3)  # more than one 4 MiB device write
    with Device(loop) as d:
        assert d.logical_block_size == sector
        s = Store.mkfs(d, protocol, "fua" if sector == 4096 else "flush")
        s.put("small", small)
        s.put("large", large)
        s.put("sparse", b"head")
        s.write("sparse", (1 << 30) + 1, b"tail at 1 GiB")  # map height 2
        s.sync()
    with Device(loop) as d:
        s = Store.open(d)
        assert s.read("small") == small
        assert s.read("large") == large
        assert s.read("sparse", 0, 4) == b"head"
        assert s.read("sparse", (1 << 30) + 1, 100) == b"tail at 1 GiB"
        assert [r["name"] for r in s.listing()] == ["large", "small", "sparse"]
        r = fsck(d)
        assert r.clean, r.to_json()
    # the bytes really are on the device: the data block the map names holds them
    with Device(loop, readonly=True) as d:
        blk, _ = Store.open(d, recover=False).lookup("small").map.lookup(0)
    with open(backing_file(loop), "rb") as f:
        f.seek(blk * BLOCK_SIZE)
        assert f.read(BLOCK_SIZE) == small[:BLOCK_SIZE]


@pytest.mark.parametrize("protocol", ["journal", "ordered"])
def test_cli_round_trip_on_a_4k_loop_device(make_loop, protocol):
    loop = make_loop(16 << 20, 4096)
    code, out, err = cli("mkfs", loop, "--protocol", protocol)
    assert code == 0, err
    payload = os.urandom(3 * BLOCK_SIZE + 7)
    assert cli("put", loop, "f", stdin=payload)[0] == 0
    code, out, _ = cli("get", loop, "f")
    assert code == 0 and out == payload
    code, out, _ = cli("fsck", loop)
    assert code == 0 and b"consistent" in out
    code, out, _ = cli("info", loop, "--json")
    assert code == 0 and b'"logical_block_size": 4096' in out


def test_a_device_held_open_is_refused(make_loop):
    """Device opens block devices O_EXCL: a second writer gets a clear error, not shared writes."""
    from blkjournal.errors import BlkError

    loop = make_loop(8 << 20)
    with Device(loop):
        with pytest.raises(BlkError, match="busy"):
            Device(loop)
        code, _, err = cli("mkfs", loop)
        assert code == 2 and "Traceback" not in err
