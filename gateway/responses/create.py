"""``POST /v1/responses``: which walrus operation a request is, done once it is all checked.

Three ways in, each checked whole before anything is written (a bad one changes nothing):

- **a new conversation** (no ``previous_response_id``, no ``conversation``): sender
  ``resp-<uuid>`` in the caller's tenant; ``instructions`` and the messages before the last
  user message become its history (system and developer ones marked ``(system)``, as the chat
  face does), and the last user message is sent: a new run, ``resp_<run_id>``;
- **a next message** (``previous_response_id`` or ``conversation`` naming a walrus sender, and a
  user message last): only that message is sent into the same conversation (the server keeps
  the history, as the chat face does with a sender), a new run queued behind any active one;
- **answers to function calls** (``previous_response_id`` and ``function_call_output`` items):
  the previous response stopped at client function calls and its run waits for them; each is
  answered (``operations.reply`` with its call id) and the same run goes on, as response
  ``resp_<run_id>_<n + 1>``, streaming from where the previous one stopped.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from gateway import operations as ops
from gateway import response_operations as resp_ops
from gateway.response_operations import ResponseView
from gateway.responses.inputs import Input, client_tools, read_input, read_tools
from gateway.responses.models import BadRequest, ResponseCreate
from gateway.responses.translate import Translator
from walrus_tasks.config import Config
from walrus_tasks.errors import Conflict
from walrus_tasks.faces import Face
from walrus_tasks.models import SendMessage
from walrus_tasks.names import sender_name
from walrus_tasks.tenancy import Caller, bare

FACE: Face = "openai-responses"


def fold(r: redis.Redis, view: ResponseView) -> Translator:
    """The response of ``view`` as its run's events stand now."""
    t = Translator(view)
    t.opening()
    for entry_id, event in resp_ops.events_after(r, view.run_id, view.after):
        t.feed(entry_id, event)
        if t.terminal:
            break
    return t


def _input_ids(items: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return [{"id": f"in_{tag}_{i}", **item} for i, item in enumerate(items)]


def _conversation(value: str | dict[str, Any] | None) -> str | None:
    """The walrus sender a request's ``conversation`` names (a string, or ``{"id"}``)."""
    if isinstance(value, dict):
        value = value.get("id")
    return None if value is None else sender_name(value)


def _previous(r: redis.Redis, caller: Caller, response_id: str, agent: str) -> ResponseView:
    prev = resp_ops.get_response(r, response_id, caller)
    if prev.agent != agent:
        raise BadRequest(
            f"model: response {prev.id} is of model {prev.agent!r}; a conversation keeps its agent"
        )
    return prev


def _waiting(r: redis.Redis, prev: ResponseView) -> tuple[Translator, list[str]]:
    """The previous response, and the client calls it stopped at that its run still waits on."""
    t = fold(r, prev)
    if not t.pending:
        return t, []
    waiting = resp_ops.waiting_calls(r, prev.run_id)
    return t, [c for c in t.pending if c in waiting]


def start(
    r: redis.Redis, config: Config, caller: Caller, body: ResponseCreate, ttl: int
) -> ResponseView:
    """Check ``body`` whole, then send it (or answer with it); the recorded response."""
    agent = ops.known_agent(config, body.model)
    tools = read_tools(body.tools)
    got = read_input(body.input)
    conversation = _conversation(body.conversation)
    if body.previous_response_id and conversation:
        raise BadRequest("give previous_response_id or conversation, not both")
    if body.background and not body.store:
        raise BadRequest("background: a background response must be stored (store: true)")
    fields: dict[str, Any] = {
        "agent": agent, "created_at": int(time.time()), "instructions": body.instructions,
        "metadata": body.metadata or {}, "store": body.store, "background": body.background,
        "previous_response_id": body.previous_response_id, "conversation": conversation,
        "tools": [t.model_dump(exclude_none=True) for t in tools],
    }  # fmt: skip
    if got.outputs:
        return _answer(r, config, caller, body, got, fields, ttl)
    _, text = got.last_user()
    offered = client_tools(tools) or None
    if body.previous_response_id:
        prev = _previous(r, caller, body.previous_response_id, agent)
        if calls := _waiting(r, prev)[1]:
            raise BadRequest(
                f"input: response {prev.id} stopped at function calls {', '.join(calls)}; "
                "answer them with function_call_output items first"
            )
        tenant = resp_ops.run_tenant(prev)
        asked = SendMessage(content=text, sender=bare(prev.sender), client_tools=offered,
                            tenant=tenant if caller.admin else None)  # fmt: skip
        submitted = ops.send(r, config, agent, asked, None, caller, FACE)
        sender = prev.sender
    elif conversation:
        asked = SendMessage(content=text, sender=conversation, client_tools=offered)
        submitted = ops.send(r, config, agent, asked, None, caller, FACE)
        sender = ops.sender_in(caller.acting(None), conversation)
    else:
        sender, submitted = ops.send_with_context(
            r, config, agent, got.prior(body.instructions), text, caller.tenant, FACE, offered,
            prefix=resp_ops.SENDER_PREFIX,
        )  # fmt: skip
    rid = resp_ops.response_id(submitted.run_id)
    items = _input_ids(got.items, rid.removeprefix("resp_"))
    view = ResponseView(id=rid, run_id=submitted.run_id, sender=sender, input=items, **fields)
    resp_ops.store_response(r, view, ttl)
    return view


def _answer(
    r: redis.Redis,
    config: Config,
    caller: Caller,
    body: ResponseCreate,
    got: Input,
    fields: dict[str, Any],
    ttl: int,
) -> ResponseView:
    """Answer the client calls the previous response stopped at: the same run goes on."""
    if not body.previous_response_id:
        raise BadRequest(
            "input: function_call_output items answer the function calls a response stopped "
            "at: give that response's id as previous_response_id"
        )
    if got.messages:
        raise BadRequest("input: give function_call_output items or messages, not both")
    prev = _previous(r, caller, body.previous_response_id, fields["agent"])
    t, waiting = _waiting(r, prev)
    if not t.pending or t.stop is None:
        raise BadRequest(f"input: response {prev.id} did not stop at function calls")
    if missing := [c for c in t.pending if c not in got.outputs]:
        raise BadRequest(f"input: no function_call_output for call {', '.join(missing)}")
    if extra := [c for c in got.outputs if c not in t.pending]:
        raise BadRequest(f"input: response {prev.id} made no function call {', '.join(extra)}")
    if len(waiting) != len(t.pending):
        raise Conflict(f"run {prev.run_id} no longer waits for these calls (ended or answered)")
    rid = resp_ops.response_id(prev.run_id, prev.n + 1)
    view = ResponseView(
        id=rid, run_id=prev.run_id, sender=prev.sender, n=prev.n + 1, after=t.stop,
        input=_input_ids(got.items, rid.removeprefix("resp_")),
        **{**fields, "tools": prev.tools, "conversation": prev.conversation},
    )  # fmt: skip
    resp_ops.store_response(r, view, ttl)  # Conflict if another request answered first
    for call_id in t.pending:
        ops.reply(r, config, prev.agent, bare(prev.sender), got.outputs[call_id], call_id,
                  resp_ops.run_tenant(prev))  # fmt: skip
    return view
