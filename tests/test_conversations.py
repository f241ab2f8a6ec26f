"""A conversation outside its runs (``walrus_tasks.conversations``), in both of its forms.

The synchronous form and the asyncio one (the gateway's stateless chat faces seed and delete
their one-shot conversations on the event loop) give the same answers on a real Redis, and a
refusal changes nothing.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import pytest
import redis

from tests.conftest import OnLoop
from walrus_tasks import conversations, keys, reads
from walrus_tasks.errors import Conflict, NotFound

Form = Literal["sync", "asyncio"]
FORMS: list[Form] = ["sync", "asyncio"]
AGENT = "echo"


def seed(form: Form, r: redis.Redis, on_loop: OnLoop, sender: str, m: list[Any]) -> bool:
    if form == "sync":
        return conversations.seed(r, AGENT, sender, m)
    return bool(on_loop(lambda aredis: conversations.seed_async(aredis, AGENT, sender, m)))


def delete(form: Form, r: redis.Redis, on_loop: OnLoop, sender: str) -> None:
    if form == "sync":
        conversations.delete(r, AGENT, sender)
    else:
        on_loop(lambda aredis: conversations.delete_async(aredis, AGENT, sender))


@pytest.mark.parametrize("form", FORMS)
def test_a_seed_writes_a_new_conversation_s_history_and_no_other_s(
    form: Form, r: redis.Redis, on_loop: OnLoop
) -> None:
    sender = f"seed-{uuid.uuid4().hex[:8]}"
    said = [{"role": "user", "content": "my name is Ann"}, {"role": "assistant", "content": "hi"}]
    assert seed(form, r, on_loop, sender, said)
    assert reads.history(r, AGENT, sender) == said
    assert not seed(form, r, on_loop, sender, [{"role": "user", "content": "another"}])
    assert reads.history(r, AGENT, sender) == said


@pytest.mark.parametrize("form", FORMS)
def test_a_delete_refuses_a_busy_conversation_and_a_missing_one(
    form: Form, r: redis.Redis, on_loop: OnLoop
) -> None:
    sender = f"del-{uuid.uuid4().hex[:8]}"
    said = [{"role": "user", "content": "hi"}]
    assert seed(form, r, on_loop, sender, said)
    inbox = keys.conv(keys.cid(AGENT, sender), "inbox")
    r.rpush(inbox, "f" * 32)  # a run queued
    with pytest.raises(Conflict, match="active or queued run"):
        delete(form, r, on_loop, sender)
    assert reads.history(r, AGENT, sender) == said
    r.delete(inbox)
    delete(form, r, on_loop, sender)
    assert reads.history(r, AGENT, sender) == []
    with pytest.raises(NotFound, match=f"no conversation {AGENT}/{sender}"):
        delete(form, r, on_loop, sender)
