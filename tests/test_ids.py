"""``walrus_tasks.ids``: what ``uuid.uuid4()`` gives, version and variant bits included."""

from __future__ import annotations

import re
import uuid

from walrus_tasks.ids import hex_id, uuid_str


def test_a_hex_id_is_a_version_4_uuid_s_hex() -> None:
    ids = {hex_id() for _ in range(2000)}
    assert len(ids) == 2000
    for h in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", h), h
        u = uuid.UUID(hex=h)
        assert (u.version, u.variant) == (4, uuid.RFC_4122) and u.hex == h
    # every other bit is random: each of the 122 free bits was seen both ways
    ones = [int(h, 16) for h in ids]
    free = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
    seen_set = seen_clear = 0
    for n in ones:
        seen_set |= n
        seen_clear |= ~n
    assert seen_set & free == free and seen_clear & free == free


def test_a_uuid_str_is_a_version_4_uuid_s_string() -> None:
    for _ in range(500):
        s = uuid_str()
        u = uuid.UUID(s)
        assert str(u) == s and (u.version, u.variant) == (4, uuid.RFC_4122)
