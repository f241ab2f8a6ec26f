"""Every ``WS /v1/ws`` operation is exercised by a WebSocket test, so a new op needs one."""

from __future__ import annotations

import re
from pathlib import Path

from gateway import registry
from gateway.ws import STREAMS

TESTS = Path(__file__).parent

OP_USE = re.compile(r"""(?:\.(?:call|result|start)\(|["']op["']\s*:\s*)["'](\w+)["']""")
"""An op name as a test sends it: ``.call("x"``, ``.result("x"``, ``.start("x"``, ``"op": "x"``."""


def used_ops() -> set[str]:
    """Op names the other ``tests/test_ws*.py`` files send."""
    return {
        name
        for path in TESTS.glob("test_ws*.py")
        if path.name != Path(__file__).name
        for name in OP_USE.findall(path.read_text(encoding="utf-8"))
    }


def test_every_ws_op_has_a_websocket_test() -> None:
    ops = {*registry.OPERATIONS, *STREAMS}
    assert {"send", "stream", "ping", "cancel"} <= ops
    untested = sorted(ops - used_ops())
    assert not untested, f"ops of WS /v1/ws with no test in tests/test_ws*.py: {untested}"


def test_the_pattern_recognises_each_way_a_test_sends_an_op() -> None:
    text = """ws.call("a", x=1) ws.result('b') ws.start("c", agent="d") {"id": 7, "op": "e"}"""
    assert OP_USE.findall(text) == ["a", "b", "c", "e"]
