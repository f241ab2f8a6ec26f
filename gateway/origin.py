"""Which ``Host`` and ``Origin`` headers the gateway serves: browsers must not reach it by proxy.

With no token configured (loopback mode) the gateway trusts whoever can reach it, which is
only safe if that is a local program. Two browser tricks would break that:

- DNS rebinding: a page on ``evil.example`` re-points its name at ``127.0.0.1`` and then
  talks to the gateway as "same origin". Its requests carry ``Host: evil.example``, so only
  loopback hosts (``127.0.0.1``, ``localhost``, ``[::1]``, any port), the configured
  ``WALRUS_GATEWAY_HOST`` and the hosts of ``WALRUS_GATEWAY_ALLOWED_ORIGINS`` are served.
- Cross-origin requests: any page may POST a "simple" request or open a WebSocket (which CORS
  does not cover) to ``127.0.0.1:8765``. Browsers mark both with ``Origin``, so a request
  whose ``Origin`` is present must be same-origin, loopback, or listed in
  ``WALRUS_GATEWAY_ALLOWED_ORIGINS``. Programs (curl, the CLI, SDKs) send no ``Origin``.

With tokens configured, HTTP is left to the bearer check: a browser never attaches a bearer
token by itself (it is no cookie), and a page cannot add ``Authorization`` to a cross-origin
request without a CORS preflight, which this gateway approves only for the origins listed in
``WALRUS_GATEWAY_ALLOWED_ORIGINS`` (:func:`cors_options`: never ``*``, never an unlisted origin;
with none listed there is no CORS at all). A WebSocket is still
refused from an origin that is neither same-origin, loopback nor listed: the browser WebSocket
API cannot send ``Authorization`` today, but a reverse proxy that injects the token (a common
way to put a gateway behind single sign-on) would hand it to every page that opens a socket.

CORS for the listed origins (a ``useStream`` app on ``http://localhost:3000`` talking to the
gateway directly): preflights are answered, and responses carry ``Access-Control-Allow-Origin``,
for exactly those origins; a page may send ``Authorization``, ``x-api-key`` (what the
LangGraph SDKs send), ``Content-Type`` and ``Last-Event-ID``, and read ``Content-Location`` and
``Location`` (where the SDKs find a new run's id). Starlette's ``CORSMiddleware`` does it, a pure
ASGI middleware, inside the guard (so a foreign ``Host`` is still refused first) and outside
the bearer check (a preflight carries no token).

A refusal is ``403 {"error": {"code": "forbidden", ...}}`` for HTTP and for a WebSocket
handshake (a 403 response instead of the upgrade), logged with the header that was refused.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import is_loopback
from gateway.errors import error_response
from walrus_tasks.config import Config
from walrus_tasks.settings import Settings

log = logging.getLogger("walrus.gateway.origin")

CORS_REQUEST_HEADERS = ("Authorization", "X-Api-Key", "Content-Type", "Last-Event-ID")
"""Headers a listed origin's page may send: a token (bearer, or the SDKs' ``x-api-key``), a
JSON body's type, and where a resumed stream picks up."""
CORS_EXPOSED_HEADERS = ("Content-Location", "Location")
"""Response headers a listed origin's page may read: the LangGraph SDKs take a run's id there."""
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def cors_options(settings: Settings) -> dict[str, Any] | None:
    """``CORSMiddleware``'s options for the allowed origins, or None when none are listed."""
    origins = settings.allowed_origins()
    if not origins:
        return None
    return {
        "allow_origins": origins,
        "allow_methods": CORS_METHODS,
        "allow_headers": CORS_REQUEST_HEADERS,
        "expose_headers": CORS_EXPOSED_HEADERS,
        "allow_credentials": False,  # tokens travel in headers, never in cookies
        "max_age": 600,
    }


def host_name(netloc: str) -> str:
    """The host of ``host[:port]`` or ``[v6][:port]``, lower case, brackets removed."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc[1:]
    if netloc.count(":") > 1:
        return netloc  # a bare IPv6 address: no port to strip
    return netloc.partition(":")[0]


def is_loopback_name(host: str) -> bool:
    """True for ``localhost`` (and its subdomains), 127.0.0.0/8 and ``::1``."""
    return is_loopback(host) or host.endswith(".localhost")


class OriginGuard:
    """ASGI middleware: refuse foreign ``Host`` and cross-origin ``Origin`` headers (403)."""

    _asgi_single_callable = True
    """ASGI 3 though ``__call__`` is no coroutine function: for asgiref, with which the
    OpenTelemetry middleware (``walrus_tasks.tracing``) wraps the app inside it, this one."""

    def __init__(self, app: ASGIApp, config: Config, settings: Settings) -> None:
        self.app = app
        self.config = config
        self.origins = set(settings.allowed_origins())
        self.hosts = {host_name(urlsplit(o).netloc) for o in self.origins}
        self.hosts.add(host_name(settings.gateway_host))

    def _open(self, scope: Scope) -> bool:
        # The app's current config (a reload may add or remove tokens), else the one we got.
        config = getattr(getattr(scope.get("app"), "state", None), "config", None)
        return not (config if isinstance(config, Config) else self.config).gateway.tokens

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Check ``Host`` (open gateway only) and ``Origin`` before anything else runs.

        Not a coroutine: its frame would stay for as long as an SSE stream is open.
        """
        if scope["type"] in ("http", "websocket"):
            open_gateway = self._open(scope)
            if open_gateway or scope["type"] == "websocket":
                refusal = self.refusal(scope["headers"], check_host=open_gateway)
                if refusal:
                    return forbid(scope, receive, send, refusal)
        return self.app(scope, receive, send)

    def refusal(self, headers: Iterable[tuple[bytes, bytes]], check_host: bool) -> str | None:
        """Why a request with ``headers`` is refused, or None if it may go on."""
        host = origin = None
        for name, value in headers:
            if name == b"host" and host is None:
                host = value.decode("latin-1")
            elif name == b"origin" and origin is None:
                origin = value.decode("latin-1")
        # No Host at all is HTTP/1.0 from a program: browsers always send one.
        if check_host and host is not None and not self.host_allowed(host):
            return (
                f"Host {host!r} is not served: a gateway without tokens answers only loopback "
                "hosts (127.0.0.1, localhost, [::1]); add the origin to "
                "WALRUS_GATEWAY_ALLOWED_ORIGINS to serve it"
            )
        if origin is not None and not self.origin_allowed(origin, host):
            return (
                f"cross-origin request from Origin {origin!r} refused: only same-origin, "
                "loopback and WALRUS_GATEWAY_ALLOWED_ORIGINS origins are served"
            )
        return None

    def host_allowed(self, host: str) -> bool:
        """True for a loopback host, the gateway's own host, or an allowed origin's host."""
        name = host_name(host)
        return is_loopback_name(name) or name in self.hosts

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """True for an allowed, loopback or same-origin ``Origin`` (``null`` is none of them)."""
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        if is_loopback_name(host_name(parts.netloc)):
            return True
        return host is not None and parts.netloc == host.strip().lower()


async def forbid(scope: Scope, receive: Receive, send: Send, message: str) -> None:
    """Answer 403 with the JSON error body: for a WebSocket, instead of accepting it."""
    client = scope.get("client") or ("?", 0)
    method = scope.get("method", "WEBSOCKET")
    log.warning("%s %s from %s: 403 %s", method, scope["path"], client[0], message)
    response = error_response(403, "forbidden", message)
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get(
        "extensions", {}
    ):
        # A server without the denial-response extension answers a close before accept
        # with a bare 403.
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    await response(scope, receive, send)
