"""Run webhooks: which URLs may be called, the outbox that sends each one once, and its body.

A run created with ``webhook`` (the Agent Protocol's parameter) keeps the URL on its record. The
script that ends the run (``lua/finish.lua``) puts it in the outbox (its bucket's ``webhooks``
index), held for the dispatch grace, in the same atomic step; the worker that ended it then
sends the ``walrus.webhook.post`` task (``worker/webhook.py`` delivers it). Whatever the moment
a worker dies, the webhook is not lost: a webhook still in the outbox past its hold is sent
again by the reaper (``due``), under a new *chain*, so a delivery of the old chain that turns up
late sends nothing (``hold``). Each attempt holds it for its timeout and a margin, so the reaper
starts no second delivery while one runs. Two POSTs can still happen: a worker killed after the
receiver got the body and before the outbox heard of it, or a receiver slower than the hold
(httpx's timeout bounds each read, not the whole answer); receivers can tell by ``run_id``.

The body is what LangGraph Server sends: the run object (``walrus_tasks.agent_protocol``) with
``status`` (``success | error | interrupted | rollback``), ``run_started_at``, ``run_ended_at``,
``webhook_sent_at``, ``values`` (the thread's messages at the run's end; null for a rollback)
and, unless it succeeded, ``error``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import redis

from walrus_tasks import agent_protocol, keys, reads, scripts
from walrus_tasks import script_args as S
from walrus_tasks.config import Config
from walrus_tasks.errors import InvalidInput
from walrus_tasks.lease import now_ms

INTERRUPTED = "User interrupted the run"
ROLLED_BACK = "User requested rollback of the run"
"""The ``error`` of a cancelled and of a rolled back run, as LangGraph Server words them."""

SWEEP_LIMIT = 100
"""Webhooks the reaper sends again per sweep, at most."""

Hold = S.Hold


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def check_url(config: Config, url: str) -> str:
    """``url`` if it is an http(s) URL whose host is in ``[webhooks] allowed_hosts``.

    InvalidInput (a 422) otherwise; the message names the host, never the whole URL (which
    may carry a secret).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("webhook: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("webhook: must be an http:// or https:// URL")
    host, port = parts.hostname.lower(), port or _default_port(parts.scheme)
    for entry in config.webhooks.allowed_hosts:
        allowed = urlsplit("//" + entry)
        if allowed.hostname == host and (allowed.port or _default_port(parts.scheme)) == port:
            return url
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    raise InvalidInput(
        f"webhook: host {shown} is not allowed; list it in [webhooks] allowed_hosts of "
        f"config.toml (allowed: {', '.join(config.webhooks.allowed_hosts) or 'none'})"
    )


def hold(r: redis.Redis, run_id: str, chain: str, seconds: float) -> Hold:
    """Hold run ``run_id``'s webhook ``seconds`` for a delivery of ``chain`` (webhook_hold.lua).

    ``ok``: deliver it; ``done``: it was sent (or given up); ``stale``: the reaper sent it again
    meanwhile, and that delivery is the one that counts.
    """
    until = now_ms() + int(seconds * 1000)
    return scripts.call(
        r,
        S.WEBHOOK_HOLD,
        [keys.run(run_id), keys.run_index("webhooks", run_id)],
        {"run_id": run_id, "chain": chain, "until_ms": until},
    )


def delivered(r: redis.Redis, run_id: str) -> None:
    """Take the webhook out of the outbox: sent, or given up."""
    r.zrem(keys.run_index("webhooks", run_id), run_id)


def due(r: redis.Redis, hold_seconds: float) -> list[tuple[str, str]]:
    """The webhooks to send again (webhook_due.lua): ``(run id, new chain)``, each held anew."""
    out: list[tuple[str, str]] = []
    for key in keys.every("webhooks"):  # one script a bucket: its runs live in its slot
        flat = scripts.call(
            r,
            S.WEBHOOK_DUE,
            [key],
            {"now_ms": now_ms(), "hold_ms": int(hold_seconds * 1000), "limit": SWEEP_LIMIT},
        )
        out += zip(flat[::2], flat[1::2], strict=True)
    return out


def _values(r: redis.Redis, run_id: str, record: dict[str, str]) -> dict[str, Any]:
    """The thread's messages up to the run's last one (its state as the run ended)."""
    history = reads.history(r, record["agent"], record["sender"])
    last = max((i for i, m in enumerate(history) if m.get("run_id") == run_id), default=None)
    if last is not None:
        history = history[: last + 1]
    return {"messages": agent_protocol.to_langchain(history)}


def payload(r: redis.Redis, run_id: str, record: dict[str, str]) -> dict[str, Any]:
    """The JSON body of run ``run_id``'s webhook (``record``: its run record)."""
    ap: dict[str, str] = r.hgetall(keys.ap_run(run_id))  # type: ignore[assignment]
    run = agent_protocol.run_object(run_id, record, ap)
    rolled_back = bool(record.get("rollback"))
    status = "rollback" if rolled_back else run["status"]
    body = {
        **run,
        "status": status,
        "run_started_at": agent_protocol.iso(record.get("started_at")),
        "run_ended_at": agent_protocol.iso(record.get("finished_at")),
        "webhook_sent_at": agent_protocol.iso(now_ms()),
        "values": None if rolled_back else _values(r, run_id, record),
    }
    if status != "success":
        body["error"] = record.get("error") or (ROLLED_BACK if rolled_back else INTERRUPTED)
    return body


def body_bytes(body: dict[str, Any]) -> bytes:
    """The body as sent: compact JSON, UTF-8."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
