"""An operation's change set: what the store edited in memory, for the protocol to write.

Its own module so that the store (which builds one) and the protocols (which write it, and build
one for recovery's repairs) both import it without importing each other both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Op:
    """What one operation changed; built by Store, written by the protocol."""

    name: str
    cow: bool
    data: dict = field(default_factory=dict)  # block -> bytes (always fresh blocks)
    crcs: dict = field(default_factory=dict)  # block -> crc32c of data[block], computed once
    roles: dict = field(default_factory=dict)  # block -> role text
    meta: set = field(default_factory=set)  # metadata blocks changed in place (not fresh)
    fresh: set = field(default_factory=set)  # metadata blocks allocated by this op
    owned: dict = field(default_factory=dict)  # fid -> [blocks] newly owned
    released: dict = field(default_factory=dict)  # fid -> [blocks] no longer referenced
    origins: set = field(default_factory=set)  # fids whose origin changes
    objmap: set = field(default_factory=set)  # object map blocks changed
    created: set = field(default_factory=set)
    deleted: list = field(default_factory=list)  # FileStates removed (their blocks all released)

    def own(self, f, b: int) -> None:
        self.owned.setdefault(f.fid, []).append(b)

    def release(self, f, b: int) -> None:
        if b in self.fresh:
            self.fresh.discard(b)
        self.data.pop(b, None)
        self.released.setdefault(f.fid, []).append(b)
