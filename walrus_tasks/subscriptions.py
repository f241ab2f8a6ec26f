"""The event bus: subscriptions in Redis, and ``publish()``, which turns events into messages.

A subscription ``{id, source, target_agent, once, created_at}`` fires on every event published
to exactly its ``source``: the payload is sent as a message to ``(target_agent, "event:<source>")``
with ``submit()``. A ``once`` subscription is removed by the same Lua script that fires it, so of
any number of concurrent publishers exactly one fires it. Every finished run publishes
``agent:<name>:done`` with its final text (``publish_done``), so agents can chain.

Target agents are checked against the config by the caller (the gateway): the core holds no
config, and ``load()`` must accept subscriptions of agents a restore has yet to configure.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import redis
from pydantic import ValidationError

from walrus_tasks import ids, keys, scripts, tenancy
from walrus_tasks import script_args as S
from walrus_tasks.errors import InvalidInput
from walrus_tasks.models import Subscription
from walrus_tasks.names import agent_name
from walrus_tasks.submit import submit

SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,121}$")
"""A source: ``"event:" + source`` must be a valid sender (128 characters at most)."""
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A subscription id (ours are 32 hex digits; ``load()`` keeps the ids it is given)."""
SENDER_PREFIX = "event:"
"""The sender of the messages an event sends: ``event:<source>``."""
HISTORY_SCAN = 200
"""How many of a conversation's last messages ``final_text`` looks through."""


def source_name(source: str) -> str:
    """Return ``source`` if it is a valid event source, else raise InvalidInput."""
    if not isinstance(source, str) or not SOURCE_RE.fullmatch(source):
        raise InvalidInput(f"invalid event source {source!r}: must match {SOURCE_RE.pattern}")
    return source


def done_source(agent: str) -> str:
    """The source every finished run of ``agent`` publishes to."""
    return f"agent:{agent}:done"


def _validated(item: Any) -> Subscription:
    """``item`` as a Subscription with valid id, source and agent name, or InvalidInput.

    A tenant's subscription is indexed under its scoped source ``<tenant>/<source>``
    (``walrus_tasks.tenancy``): only that tenant's publishes reach it.
    """
    try:
        sub = Subscription.model_validate(item)
    except ValidationError as e:
        raise InvalidInput(f"invalid subscription {item!r:.200}: {e}") from e
    if not ID_RE.fullmatch(sub.id):
        raise InvalidInput(f"invalid subscription id {sub.id!r}: must match {ID_RE.pattern}")
    source_name(tenancy.bare(sub.source))
    if (tenant := tenancy.tenant_of(sub.source)) is not None:
        tenancy.tenant_name(tenant)
    agent_name(sub.target_agent)
    return sub


def _stored(sub: Subscription) -> str:
    return json.dumps(sub.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False)


def create(r: redis.Redis, source: str, target_agent: str, once: bool = False) -> dict[str, Any]:
    """Store a new subscription (the agent must be known to the caller); return it.

    ``source`` is scoped to the subscription's tenant (``tenancy.scoped``).
    """
    sub = _validated(
        {
            "id": ids.hex_id(),
            "source": source,
            "target_agent": target_agent,
            "once": once,
            "created_at": round(time.time(), 3),
        }
    )
    pipe = r.pipeline(transaction=True)
    pipe.hset(keys.SUBSCRIPTIONS, sub.id, _stored(sub))
    pipe.sadd(keys.subs_source(sub.source), sub.id)
    pipe.execute()
    return sub.model_dump(mode="json")


def list_all(r: redis.Redis) -> list[dict[str, Any]]:
    """Every subscription, oldest first."""
    raw: dict[str, str] = r.hgetall(keys.SUBSCRIPTIONS)  # type: ignore[assignment]
    subs = [json.loads(v) for v in raw.values()]
    return sorted(subs, key=lambda s: (s["created_at"], s["id"]))


def delete(r: redis.Redis, sub_id: str) -> bool:
    """Remove a subscription; False if there was none with this id."""
    return scripts.call(r, S.SUB_DELETE, [keys.SUBSCRIPTIONS], {"id": sub_id})


def payload_text(payload: Any) -> str:
    """The message an event sends: a string as is, anything else as JSON text."""
    if isinstance(payload, str):
        return payload
    return json.dumps(payload, ensure_ascii=False)


def public(sub: dict[str, Any]) -> dict[str, Any]:
    """A stored subscription as clients see it: its source, and its tenant apart."""
    source = sub["source"]
    return {**sub, "source": tenancy.bare(source), "tenant": tenancy.tenant_of(source)}


def publish(r: redis.Redis, source: str, payload: Any) -> list[str]:
    """Send ``payload`` to every subscription of ``source``; the run ids started, in order.

    ``source`` is scoped to the publisher's tenant: only that tenant's subscriptions fire, and
    their runs are in that tenant. ``once`` subscriptions are removed atomically as they fire.
    """
    tenant = tenancy.tenant_of(source)
    source_name(tenancy.bare(source))
    content = payload_text(payload)
    raw = scripts.call(r, S.SUB_PUBLISH, [keys.SUBSCRIPTIONS, keys.subs_source(source)], {})
    fired = sorted((json.loads(s) for s in raw), key=lambda s: (s["created_at"], s["id"]))
    sender = tenancy.scoped(tenant, SENDER_PREFIX + tenancy.bare(source))
    return [submit(r, s["target_agent"], sender, content).run_id for s in fired]


def final_text(r: redis.Redis, agent: str, sender: str, run_id: str) -> str:
    """The run's last assistant text ("" if none), from the conversation's history."""
    conversation = keys.conv(keys.cid(agent, sender), "history")
    tail: list[str] = r.lrange(conversation, -HISTORY_SCAN, -1)  # type: ignore[assignment]
    for line in reversed(tail):
        message = json.loads(line)
        if message.get("run_id") != run_id:
            continue
        if message.get("role") == "user":
            break  # the run's own first message: nothing it said comes before
        if message.get("role") == "assistant" and message.get("content"):
            return str(message["content"])
    return ""


def publish_done(r: redis.Redis, agent: str, sender: str, run_id: str) -> list[str]:
    """Publish ``agent:<agent>:done`` with the finished run's final text, in its tenant."""
    source = tenancy.scoped(tenancy.tenant_of(sender), done_source(agent))
    return publish(r, source, final_text(r, agent, sender, run_id))


def dump(r: redis.Redis) -> list[dict[str, Any]]:
    """Every subscription, as ``load()`` takes them (same ids and fields)."""
    return list_all(r)


def load(r: redis.Redis, items: list[dict[str, Any]]) -> None:
    """Replace all subscriptions with ``items``; InvalidInput (nothing changed) if one is bad."""
    subs = [_validated(item) for item in items]
    ids = [s.id for s in subs]
    if len(set(ids)) != len(ids):
        raise InvalidInput("duplicate subscription ids")

    indexes = set(r.scan_iter(match=keys.subs_source("*"), count=1000))

    def replace(pipe: Any) -> None:
        old: dict[str, str] = pipe.hgetall(keys.SUBSCRIPTIONS)
        stale = indexes | {keys.subs_source(json.loads(v)["source"]) for v in old.values()}
        pipe.multi()
        pipe.delete(keys.SUBSCRIPTIONS, *stale)
        for sub in subs:
            pipe.hset(keys.SUBSCRIPTIONS, sub.id, _stored(sub))
            pipe.sadd(keys.subs_source(sub.source), sub.id)

    r.transaction(replace, keys.SUBSCRIPTIONS)
