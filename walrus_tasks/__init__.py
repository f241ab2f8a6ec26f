"""walrus_tasks: LLM agents as a distributed service on Celery + Redis.

The public surface for scripts: the HTTP clients, their event type, and the exceptions.
"""

from walrus_tasks.client import AsyncClient, Client, Event, GatewayUnreachable
from walrus_tasks.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    WalrusError,
)
from walrus_tasks.models import Accepted, RunInfo, RunStatus

__all__ = [
    "Accepted",
    "AsyncClient",
    "Client",
    "Conflict",
    "Event",
    "GatewayUnreachable",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "RunInfo",
    "RunStatus",
    "WalrusError",
]
