"""Random ids: a version-4 UUID, as its 32 hex digits or its dashed string.

The same values ``uuid.uuid4().hex`` and ``str(uuid.uuid4())`` give (16 bytes of
``os.urandom``, the version and variant bits set as ``uuid.UUID`` sets them), without
``uuid.UUID``'s constructor in Python: 2.5 -> 1.2 us an id here, and a run makes several (its
id, each step's claim, a task message's id and delivery tags).
"""

from __future__ import annotations

import os

_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
"""The version nibble and the variant's two bits."""
_SET = (0x4000 << 64) | (0x8000 << 48)
"""Version 4, variant RFC 4122."""


def hex_id() -> str:
    """A random version-4 UUID's 32 lower-case hex digits (``uuid.uuid4().hex``)."""
    return "%032x" % (int.from_bytes(os.urandom(16), "big") & _CLEAR | _SET)


def uuid_str() -> str:
    """A random version-4 UUID's string, ``8-4-4-4-12`` hex digits (``str(uuid.uuid4())``)."""
    h = hex_id()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
