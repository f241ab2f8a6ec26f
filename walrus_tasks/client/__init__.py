"""The client SDK: Python clients of the gateway's HTTP API, sync and asyncio.

Four modules, one idea each:

- ``core``: every request of the API, described once, sans-IO (``Call``), and the errors an
  answer (or its absence) means;
- ``stream``: following an event stream, sans-IO: the SSE parser and the reconnect/resume
  decisions (docs/design.md, invariant 5);
- ``sync``: ``Client``, which sends the calls and drives the streams with ``httpx.Client``;
- ``aio``: ``AsyncClient``, its asyncio twin over ``httpx.AsyncClient``.

It loads no server code: only ``walrus_tasks.models``, ``errors`` and ``names``, and the run
event types ``walrus_tasks.reply_text`` reads (docs/design.md, invariant 20).
"""

from walrus_tasks.client.aio import AsyncClient
from walrus_tasks.client.core import (
    STREAM_GIVE_UP,
    STREAM_READ_TIMEOUT,
    GatewayUnreachable,
    http_status,
    raise_for_error,
)
from walrus_tasks.client.stream import (
    RETRY_DELAY,
    RETRY_DELAY_MAX,
    RETRY_STATUSES,
    Event,
    SSEParser,
    parse_sse,
)
from walrus_tasks.client.sync import Client
from walrus_tasks.reply_text import ReplyText

__all__ = [
    "RETRY_DELAY",
    "RETRY_DELAY_MAX",
    "RETRY_STATUSES",
    "STREAM_GIVE_UP",
    "STREAM_READ_TIMEOUT",
    "AsyncClient",
    "Client",
    "Event",
    "GatewayUnreachable",
    "ReplyText",
    "SSEParser",
    "http_status",
    "parse_sse",
    "raise_for_error",
]
