"""The exceptions of walrus_tasks.

::

    WalrusError                    base of everything we raise on purpose
    ├── InvalidInput               bad name, body or argument (HTTP 422)
    │   └── ConfigError            the config directory cannot be loaded
    ├── NotFound                   unknown agent, run or conversation (HTTP 404)
    ├── Forbidden                  the caller's token may not do this (HTTP 403)
    ├── Conflict                   the conversation is busy, or no run to act on (HTTP 409)
    ├── PayloadTooLarge            body over the size limit (HTTP 413)
    ├── Unavailable                Redis did not answer in time, e.g. during a failover (HTTP 503)
    ├── LeaseLost                  this worker no longer holds the conversation's lease
    ├── Cancelled                  the run was killed; raised at the next check point
    └── ProviderError              the LLM provider failed (HTTP error, bad response)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class WalrusError(Exception):
    """Raised for every failure walrus_tasks reports on purpose."""

    code = "error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(WalrusError):
    """Raised when a name, body or argument is not acceptable."""

    code = "invalid"
    status = 422


class ConfigError(InvalidInput):
    """Raised when the config directory cannot be loaded."""

    code = "config"


class NotFound(WalrusError):
    """Raised when an agent, run or conversation does not exist."""

    code = "not_found"
    status = 404


class Forbidden(WalrusError):
    """Raised when the caller's token may not do this (a tenant token naming a tenant)."""

    code = "forbidden"
    status = 403


class Conflict(WalrusError):
    """Raised when the conversation's state forbids the operation."""

    code = "conflict"
    status = 409


class PayloadTooLarge(WalrusError):
    """Raised when a request body exceeds the configured limit."""

    code = "too_large"
    status = 413


class Unavailable(WalrusError):
    """Raised when Redis does not answer within the retry window (a failover that lasts)."""

    code = "unavailable"
    status = 503


class LeaseLost(WalrusError):
    """Raised when a fenced write finds another holder of the conversation lease."""

    code = "lease_lost"


class Cancelled(WalrusError):
    """Raised inside a run when its cancel flag is seen."""

    code = "cancelled"


class ProviderError(WalrusError):
    """Raised when the LLM provider fails.

    ``transient``: worth retrying (rate limit, overload, server error, connection, timeout);
    ``retry_after``: seconds the provider asked us to wait, if it said; ``context_length``: the
    request is too long for the model (a fallback model may take it).
    """

    code = "provider"
    status = 502

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        retry_after: float | None = None,
        context_length: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
        self.context_length = context_length


def describe_invalid(errors: Iterable[Mapping[str, Any]], root: str = "body") -> str:
    """One sentence for pydantic's validation ``errors``: ``loc: message; …``.

    The one formatter of validation errors, for HTTP bodies, WebSocket arguments and config
    files alike; ``root`` names what an error without a location is about.
    """
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            return "malformed JSON body"
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or root}: {err.get('msg')}")
    return "; ".join(parts)
