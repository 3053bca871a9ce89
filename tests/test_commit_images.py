"""A journal commit's shortcuts leave exactly the images a plain pack gives (issue 12, commit CPU).

A synced append is CPU bound, so the commit reuses what it packed before: an object map block is
repacked from its last image (only the entries that changed, only their sectors' crcs), a map
node's image is the one its seal took the crc of, an origin is framed again only when its
payload changed.  Each shortcut must give the bytes the plain definition packs -- the journal
records deltas against the committed images, so one stale byte there is a wrong home block after
replay -- and a reopened store (replay, then a fresh read of every block) must hold the same.
"""

from __future__ import annotations

import random

from blkjournal.device import BLOCK_SIZE, Device
from blkjournal.format import OBJ_PER_BLOCK, ObjEntry, pack_objmap, repack_objmap
from blkjournal.store import Store


def _entry(rnd: random.Random) -> ObjEntry:
    if rnd.random() < 0.2:
        return ObjEntry(birth=rnd.randrange(1, 1 << 20))  # a freed entry
    return ObjEntry(rnd.randrange(1, 1 << 40), rnd.randrange(1 << 40), rnd.randrange(1, 1 << 20),
                    "f" * rnd.randrange(1, 110), rnd.randrange(1 << 40), rnd.randrange(1 << 32))


def test_objmap_repack_is_a_whole_pack():
    """Random edits of a block's entries -- one, several, none; a new but equal object; an entry
    put back as it was -- each repacked from the last image, compared with a whole pack."""
    rnd = random.Random(12)
    for block in (7, 1 << 33):
        ents = [ObjEntry()] * OBJ_PER_BLOCK
        img = pack_objmap(ents, block, 0)
        for step in range(300):
            new = list(ents)
            for _ in range(rnd.choice((0, 1, 1, 1, 2, 5, 24))):
                k = rnd.randrange(OBJ_PER_BLOCK)
                new[k] = rnd.choice((_entry(rnd), ObjEntry(**vars(new[k])), ents[rnd.randrange(OBJ_PER_BLOCK)]))
            gen = rnd.randrange(1 << 40)
            got = repack_objmap(img, ents, new, block, gen)
            assert got == pack_objmap(new, block, gen), step
            ents, img = new, got


def _plain_images(st: Store) -> dict[int, bytes]:
    """Every metadata block of the running store packed the plain way, from its objects."""
    sb = st.sb
    out = {}
    for b in range(sb.objmap_start, sb.bitmap_start):
        i = b - sb.objmap_start
        ents = st.entries[i * OBJ_PER_BLOCK:(i + 1) * OBJ_PER_BLOCK]
        out[b] = pack_objmap(ents + [ObjEntry()] * (OBJ_PER_BLOCK - len(ents)), b, st.objmap_gens.get(b, 0))
    out.update({b: st.freelist.image(b) for b in st.freelist.homes()})
    for f in st.files.values():
        out[f.origin_block] = f.origin().pack(f.origin_block)
        out.update({b: n.pack(b) for b, n in f.map.nodes.items()})
        out.update({b: f.ul.blocks[b].pack(b) for b in f.ul.blocks})
    return out


def test_committed_images_are_plain_packs_and_survive_a_reopen(image):
    """A random workload (appends, overwrites, sparse writes that grow the map, truncates, puts,
    removes, files spread over two object map blocks), journal/flush: after every operation the
    commit's images (the bases of the next deltas) are the plain packs, and a store reopened
    from the device holds the plain packs of every block."""
    rnd = random.Random(3)
    dev = Device(image, create_size=32 << 20)
    st = Store.mkfs(dev, "journal", "flush", journal_blocks=96)
    names = [f"f{i}" for i in range(OBJ_PER_BLOCK + 6)]
    model: dict[str, bytearray] = {}
    for step in range(400):
        name = rnd.choice(names)
        r = rnd.random()
        if name not in model:
            st.create(name)
            model[name] = bytearray()
        elif r < 0.45:  # an append, whole blocks or not
            data = rnd.randbytes(rnd.choice((BLOCK_SIZE, BLOCK_SIZE, 100, 3 * BLOCK_SIZE + 7)))
            st.write(name, len(model[name]), data)
            model[name] += data
        elif r < 0.6:  # an overwrite inside the file
            off = rnd.randrange(len(model[name]) + 1)
            data = rnd.randbytes(rnd.randrange(1, 2 * BLOCK_SIZE))
            st.write(name, off, data)
            model[name][off:off + len(data)] = data
        elif r < 0.68:  # far past the end: the map grows a level
            off = rnd.choice((200, 40000)) * BLOCK_SIZE
            st.write(name, off, b"x" * 10)
            model[name] += bytes(max(0, off - len(model[name])))
            model[name][off:off + 10] = b"x" * 10
        elif r < 0.8:
            size = rnd.randrange(len(model[name]) + 1)
            st.truncate(name, size)
            del model[name][size:]
        elif r < 0.9:
            data = rnd.randbytes(rnd.randrange(0, 5 * BLOCK_SIZE))
            st.put(name, data)
            model[name] = bytearray(data)
        else:
            st.remove(name)
            del model[name]
        if rnd.random() < 0.5:
            st.sync()
        held, plain = st.protocol.images, _plain_images(st)  # (held: every block committed since mkfs)
        assert held.keys() <= plain.keys() and held == {b: plain[b] for b in held}, f"step {step}"
    st.close()
    again = Store.open(dev)
    assert again.protocol.metadata_images() == _plain_images(st)
    assert {n: again.read(n) for n in model} == {n: bytes(v) for n, v in model.items()}
    dev.close()
