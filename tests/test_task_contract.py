"""The task contract: what ``celery_app.send_*`` sends is what the worker's task bodies take."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from walrus_tasks import celery_app
from walrus_tasks.lease import Fence
from worker import tasks

FENCE = Fence("echo", "alice", "run-1", "7")


def sent(
    monkeypatch: pytest.MonkeyPatch, send: Any, *args: Any
) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(
        celery_app.app,
        "send_task",
        lambda name, args, kwargs=None, **_: calls.append((name, tuple(args), kwargs or {})),
    )
    send(*args)
    assert len(calls) == 1
    return calls[0]


@pytest.mark.parametrize(
    ("send", "args", "expected"),
    [
        (celery_app.send_drain, ("echo", "alice"), {"agent": "echo", "sender": "alice"}),
        (
            celery_app.send_drain,
            ("echo", "alice", "run-1"),
            {"agent": "echo", "sender": "alice", "run_id": "run-1"},
        ),
        (
            celery_app.send_step,
            (FENCE, 3),
            {"agent": "echo", "sender": "alice", "run_id": "run-1", "token": "7", "step": 3},
        ),
        (
            celery_app.send_tool_call,
            (FENCE, 3, 1),
            {
                "agent": "echo",
                "sender": "alice",
                "run_id": "run-1",
                "token": "7",
                "step": 3,
                "index": 1,
            },
        ),
        (celery_app.send_webhook, ("run-1",), {"run_id": "run-1", "chain": "0"}),
        (celery_app.send_webhook, ("run-1", "3"), {"run_id": "run-1", "chain": "3"}),
    ],
)
def test_every_sent_task_binds_to_its_body_by_name(
    monkeypatch: pytest.MonkeyPatch, send: Any, args: tuple[Any, ...], expected: dict[str, Any]
) -> None:
    name, sent_args, sent_kwargs = sent(monkeypatch, send, *args)
    body = {t.name: t for t in (tasks.drain, tasks.step, tasks.tool_call, tasks.post_webhook)}[name]
    bound = inspect.signature(body.run).bind(*sent_args, **sent_kwargs)
    assert dict(bound.arguments) == expected
