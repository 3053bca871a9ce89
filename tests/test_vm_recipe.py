"""The guest recipe vm/guest.toml (+ vm/init.sh) decides the guest: change it, and the guest changes.

Parsing is tested everywhere; the build and the one boot need root and the cached kernel package
(marked vm, like the other VM tests).  The modified recipe drops dm_flakey and adds loop: the
initramfs built from it lists exactly that, its /init carries the edit, and the booted guest has
loop loaded and not dm_flakey.
"""

from __future__ import annotations

import gzip
import os
import shutil

import pytest
from vmutil import need_vm as _need_vm

from blkjournal.errors import BlkError
from blkjournal.vm import recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "echo blkjournal-recipe-test-marker > /dev/console"


def read_cpio(data: bytes) -> dict[str, bytes]:
    """name -> contents of a newc cpio archive (the initramfs)."""
    out, pos = {}, 0
    while True:
        hdr = data[pos:pos + 110]
        assert hdr[:6] == b"070701", f"bad cpio header at {pos}"
        size, namesize = int(hdr[54:62], 16), int(hdr[94:102], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = data[pos:pos + size]
        pos += size
        pos += -pos % 4


def modified_recipe(tmp_path) -> str:
    d = tmp_path / "vm"
    shutil.copytree(os.path.join(ROOT, "vm"), d)
    toml = (d / "guest.toml").read_text()
    assert '"dm_flakey", ' in toml
    (d / "guest.toml").write_text(toml.replace('"dm_flakey", ', '"loop", '))
    init = (d / "init.sh").read_text()
    (d / "init.sh").write_text(init.replace('say "running"', f'{MARKER}\nsay "running"'))
    return str(d / "guest.toml")


def test_the_repository_recipe_parses():
    r = recipe.load(os.path.join(ROOT, "vm", "guest.toml"))
    assert {"dm_log_writes", "dm_flakey", "virtio_blk", "9p"} <= set(r.modules)
    assert r.init_script.startswith("#!/bin/busybox sh") and "/modules.order" in r.init_script
    assert r.data_size == 4 << 20 and r.log_min == 64 << 20 and r.memory == "512M"


def test_recipe_changes_change_its_digest(tmp_path):
    base = recipe.load(os.path.join(ROOT, "vm", "guest.toml"))
    mod = recipe.load(modified_recipe(tmp_path))
    assert "loop" in mod.modules and "dm_flakey" not in mod.modules and MARKER in mod.init_script
    assert mod.digest != base.digest


@pytest.mark.parametrize("edit,words", [
    (lambda t: t.replace("[qemu]", "[qemu_]"), "no 'qemu'"),
    (lambda t: t.replace('data = "4M"', 'data = "four"'), "disks.data"),
    (lambda t: t.replace('init = "init.sh"', 'init = "nope.sh"'), "nope.sh"),
    (lambda t: t + "\n[[[", "not a TOML"),
    (lambda t: t.replace('load = ["virtio_pci"', 'load = [3, "virtio_pci"'), "modules.load"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, edit, words):
    path = modified_recipe(tmp_path)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(edit(text))
    with pytest.raises(BlkError) as e:
        recipe.load(path)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.vm
def test_module_list_in_the_recipe_changes_the_guest(tmp_path, monkeypatch):
    _need_vm()
    from blkjournal.vm.build import build_guest, cache_root
    from blkjournal.vm.qemu import run_guest

    debs = cache_root() / "debs"  # the kernel package already fetched: no second download
    cache = tmp_path / "cache"
    cache.mkdir()
    if debs.exists():
        (cache / "debs").symlink_to(debs)
    monkeypatch.setenv("BLKJOURNAL_VM_CACHE", str(cache))
    monkeypatch.setenv(recipe.RECIPE_ENV, modified_recipe(tmp_path))
    img = build_guest()
    files = read_cpio(gzip.decompress(open(img.initrd, "rb").read()))
    order = files["modules.order"].decode().split()
    assert "loop" in order and "dm_flakey" not in order and "dm_log_writes" in order
    assert "lib/modules/loop.ko" in files and "lib/modules/dm_flakey.ko" not in files
    assert MARKER.encode() in files["init"]
    assert img.recipe == os.environ[recipe.RECIPE_ENV]
    # the one boot: the guest kernel has loaded what the recipe lists
    res = run_guest(["-c", "print('MODULES', sorted(l.split()[0] for l in open('/proc/modules')))"],
                    disks=[], timeout=120, results_dir=str(tmp_path / "results")).check()
    line = next(x for x in res.console.splitlines() if "MODULES" in x)
    assert "'loop'" in line and "'dm_flakey'" not in line and "'dm_log_writes'" in line
    assert "blkjournal-recipe-test-marker" in res.console
