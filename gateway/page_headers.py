"""The headers of the gateway's pages: the console (``/console``) and the API docs (``/docs``).

Both pages run with the caller's token in reach (the console keeps it for the tab), so a page
must not be framed by another site (clickjacking: ``frame-ancestors 'none'`` and
``X-Frame-Options: DENY``), must run no script it did not ship (a Content-Security-Policy
with ``script-src 'self'``: an injected ``<script>`` or inline handler does not run), and no
file of theirs may be sniffed into another type (``X-Content-Type-Options: nosniff``).

The console's policy is strict: its page has no inline script or style. The docs page is
FastAPI's Swagger UI, whose one inline script (the ``SwaggerUIBundle`` call) is allowed by its
hash, and whose styles include inline ones (``style-src 'unsafe-inline'``, styles only).
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""The console's Content-Security-Policy: its own files only, never framed."""


def docs_csp(script_hash: str) -> str:
    """The docs page's policy, with the hash (``sha256-…``) of its inline script allowed."""
    return (
        f"default-src 'self'; script-src 'self' '{script_hash}'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class PageHeaders:
    """ASGI middleware: the security headers of ``/console…`` and ``/docs…`` responses."""

    def __init__(self, app: ASGIApp, docs_policy: str) -> None:
        self.app = app
        self.docs_policy = docs_policy

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Add the page's headers to its response start.

        Not a coroutine: every other request gets the app's own awaitable, so this layer
        keeps no frame alive for as long as a stream is open (ten thousand streams, each
        with its own frame per layer, is megabytes).
        """
        path = scope.get("path", "") if scope["type"] == "http" else ""
        policy = (
            CONSOLE_CSP
            if _under(path, "/console")
            else self.docs_policy
            if _under(path, "/docs")
            else None
        )
        if policy is None:
            return self.app(scope, receive, send)
        return self._page(scope, receive, send, policy)

    async def _page(self, scope: Scope, receive: Receive, send: Send, policy: str) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = policy
                headers["X-Frame-Options"] = "DENY"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
            await send(message)

        await self.app(scope, receive, with_headers)
