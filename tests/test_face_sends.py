"""A message a face sends is accepted on the event loop.

The OpenAI chat and Anthropic Messages faces, given a conversation key, send as the native
streamed ``POST`` does (``operations.send_async``); with none, they seed a one-shot
conversation with the request's earlier turns and send into it
(``operations.send_with_context_async``). Neither hops to a thread of the pool, whose round
trip was about a fifth of a first chunk (docs/benchmarks.md, issue 25, eighteenth, twentieth
and twenty-first rounds). The in-process gateway alone (no worker): the run is queued, and its
stream's headers come back, with every thread hop made to fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    asked = {
        **{k: v.format(sender=sender) if isinstance(v, str) else v for k, v in body.items()},
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    with (
        no_thread(monkeypatch),
        gateway_client.stream(
            "POST",
            path,
            json=asked,
            headers={k: v.format(sender=sender) for k, v in headers.items()},
        ) as resp,
    ):
        assert resp.status_code == 200, resp.read()
    [conversation] = [c for c in conversations(gateway_client) if c["sender"] == sender]
    assert conversation["active_run"] or conversation["queued"], conversation


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "echo"}),
        ("/v1/messages", {"model": "echo", "max_tokens": 64}),
    ],
)
def test_a_stateless_message_is_seeded_and_sent_with_no_thread(
    gateway_client: TestClient, monkeypatch: pytest.MonkeyPatch, path: str, body: dict[str, Any]
) -> None:
    before = {c["sender"] for c in conversations(gateway_client)}
    earlier = [{"role": "user", "content": "I am Ann"}, {"role": "assistant", "content": "hi"}]
    asked = {**body, "messages": [*earlier, {"role": "user", "content": "who am I?"}]}
    with (
        no_thread(monkeypatch),
        gateway_client.stream("POST", path, json={**asked, "stream": True}) as resp,
    ):
        assert resp.status_code == 200, resp.read()
    [oneshot] = [c for c in conversations(gateway_client) if c["sender"] not in before]
    assert oneshot["sender"].startswith("oneshot-"), oneshot
    assert oneshot["active_run"] or oneshot["queued"], oneshot
    history = gateway_client.get(f"/v1/agents/echo/conversations/{oneshot['sender']}/history")
    assert [(m["role"], m["content"]) for m in history.json()["messages"][:2]] == [
        (m["role"], m["content"]) for m in earlier
    ]


@contextmanager
def no_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every hop to a thread of the pool fails the test while this is open."""

    def fail(*_: Any, **__: Any) -> Any:
        pytest.fail("on a thread")

    with monkeypatch.context() as m:
        m.setattr(to_thread, "run_sync", fail)
        yield


def conversations(client: TestClient) -> list[dict[str, Any]]:
    listed = client.get("/v1/conversations", params={"agent": "echo"})
    assert listed.status_code == 200, listed.text
    return list(listed.json()["conversations"])
