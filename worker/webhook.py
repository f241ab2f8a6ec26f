"""Delivering an ended run's webhook: one POST per attempt; the task retries with backoff.

What counts as a failure worth retrying is what LangGraph Server retries: a connection error
or timeout, a 5xx and a 429. Any other answer but a 2xx is final (redirects are not followed:
their target was never checked against ``allowed_hosts``). The URL is checked against the
config again, so removing a host from ``allowed_hosts`` stops its webhooks at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import httpx
import redis

from walrus_tasks import reads, webhooks
from walrus_tasks.config import Config
from walrus_tasks.errors import InvalidInput, NotFound
from walrus_tasks.log import bound
from walrus_tasks.settings import get_settings

log = logging.getLogger("walrus.webhook")

BACKOFF = 1.0
"""Seconds before the first retry; each next one waits twice as long."""
MAX_BACKOFF = 60.0
"""The longest wait before a retry."""
CONNECT_TIMEOUT = 5.0
"""Seconds to connect (within the ``[webhooks] timeout`` of the whole POST)."""
HOLD_MARGIN = 5.0
"""Seconds an attempt holds the webhook beyond its timeout, before the reaper may resend it."""


@dataclass(frozen=True)
class Delivery:
    """How one attempt went.

    ``sent``; ``retry`` (after ``retry_in`` seconds); ``failed`` (given up, logged);
    ``skipped`` (sent already, or another chain's).
    """

    outcome: Literal["sent", "retry", "failed", "skipped"]
    retry_in: float = 0.0


def backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt + 1``."""
    return float(min(BACKOFF * 2**attempt, MAX_BACKOFF))


def deliver(r: redis.Redis, config: Config, run_id: str, chain: str, attempt: int) -> Delivery:
    """POST run ``run_id``'s webhook (attempt ``attempt``, 0 first) if ``chain`` still owns it."""
    limits = config.webhooks
    if webhooks.hold(r, run_id, chain, limits.timeout + HOLD_MARGIN) != "ok":
        return Delivery("skipped")
    try:
        record = reads.run_record(r, run_id)
    except NotFound:
        webhooks.delivered(r, run_id)
        log.error("webhook of run %s not sent: its record has expired", run_id)
        return Delivery("failed")
    with bound(agent=record.get("agent"), sender=record.get("sender")):
        url = record.get("webhook", "")
        try:
            webhooks.check_url(config, url)
        except InvalidInput as e:
            webhooks.delivered(r, run_id)
            log.error("webhook not sent: %s", e.message)
            return Delivery("failed")
        body = webhooks.body_bytes(webhooks.payload(r, run_id, record))
        try:
            response = httpx.post(
                url,
                content=body,
                headers={"Content-Type": "application/json", "User-Agent": "walrus-webhook"},
                timeout=httpx.Timeout(limits.timeout, connect=min(CONNECT_TIMEOUT, limits.timeout)),
                follow_redirects=False,
            )
            status = response.status_code
            transient, why = status >= 500 or status == 429, f"HTTP {status}"
            if response.is_success:
                webhooks.delivered(r, run_id)
                log.info("webhook sent (%s)", why, extra={"attempt": attempt})
                return Delivery("sent")
        except httpx.TransportError as e:  # connection refused or cut, timeouts
            transient, why = True, f"{type(e).__name__}: {e}"
        if transient and attempt < limits.retries:
            wait = backoff(attempt)
            # Held over the countdown and the dispatch grace: the retry is not lost, only late.
            webhooks.hold(r, run_id, chain, wait + get_settings().dispatch_grace)
            log.warning("webhook failed (%s); retry %d in %gs", why, attempt + 1, wait)
            return Delivery("retry", wait)
        webhooks.delivered(r, run_id)
        log.error("webhook failed (%s) after %d attempt(s); given up", why, attempt + 1)
        return Delivery("failed")
