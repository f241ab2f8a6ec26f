"""A message a face sends into a server-side conversation is accepted on the event loop.

The OpenAI chat and Anthropic Messages faces, given a conversation key, send as the native
streamed ``POST`` does (``operations.send_async``): no hop to a thread of the pool, whose
round trip was about a fifth of a first chunk (docs/benchmarks.md, issue 25, eighteenth and
twentieth rounds). The in-process gateway alone (no worker): the run is queued, and its stream's
headers come back, with every thread hop made to fail.
"""

from __future__ import annotations

from typing import Any

import pytest
from anyio import to_thread
from starlette.testclient import TestClient


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/chat/completions", {"model": "echo", "user": "{sender}"}, {}),
        ("/v1/messages", {"model": "echo", "max_tokens": 64}, {"X-Walrus-Sender": "{sender}"}),
    ],
)
def test_a_faces_message_into_its_conversation_is_sent_with_no_thread(
    gateway_client: TestClient,
    sender: str,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> None:
    def no_thread(*_: Any, **__: Any) -> Any:
        pytest.fail("on a thread")

    monkeypatch.setattr(to_thread, "run_sync", no_thread)
    asked = {
        **{k: v.format(sender=sender) if isinstance(v, str) else v for k, v in body.items()},
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    with gateway_client.stream(
        "POST", path, json=asked, headers={k: v.format(sender=sender) for k, v in headers.items()}
    ) as resp:
        assert resp.status_code == 200, resp.read()
    monkeypatch.undo()
    [conversation] = [
        c
        for c in gateway_client.get("/v1/conversations", params={"agent": "echo"}).json()[
            "conversations"
        ]
        if c["sender"] == sender
    ]
    assert conversation["active_run"] or conversation["queued"], conversation
