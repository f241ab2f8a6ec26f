"""``/docs`` in the real browser (system Chromium through Playwright): Swagger UI renders the
OpenAPI 3.1 document the gateway serves, offline, with no JavaScript error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import DESKTOP, Page, browser
from tests.cluster import Cluster

__all__ = ["browser"]  # fixture

OPERATIONS = [
    ("POST", "/v1/agents/{agent}/messages"),
    ("GET", "/v1/runs/{run_id}"),
    ("GET", "/v1/runs/{run_id}/events"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/crons"),
]
"""A few operations of each face that must be on screen."""


@pytest.fixture
def docs_page(browser: Any, cluster: Cluster) -> Iterator[tuple[Page, list[str]]]:
    """A browser page, and every URL it requests; none is let out of the gateway."""
    p = Page(browser, cluster.gateway_url, DESKTOP)
    gateway = urlsplit(cluster.gateway_url).netloc
    requests: list[str] = []

    def route(r: Any) -> None:
        requests.append(r.request.url)
        if urlsplit(r.request.url).netloc == gateway:
            r.continue_()
        else:
            r.abort()

    p.page.route("**/*", route)  # type: ignore[attr-defined]
    try:
        yield p, requests
    finally:
        p.close()


def test_docs_show_the_operations_offline_with_no_javascript_error(
    docs_page: tuple[Page, list[str]], cluster: Cluster
) -> None:
    page, requests = docs_page
    pg: Any = page.page
    pg.goto("/docs")
    for method, path in OPERATIONS:
        block = pg.locator(f".opblock-summary:has([data-path='{path}'])").filter(
            has=pg.locator(".opblock-summary-method", has_text=method)
        )
        block.first.wait_for(state="visible")
    assert pg.locator(".opblock").count() > 40  # every route, not a few
    # Swagger UI 4 read only OpenAPI 3.0 and showed this in place of the operations.
    assert pg.get_by_text("Unable to render this definition").count() == 0
    assert pg.locator(".swagger-ui .errors-wrapper").count() == 0

    # Opening the "send" operation shows its body schema, from the same document.
    send = pg.locator(".opblock-summary:has([data-path='/v1/agents/{agent}/messages'])").first
    send.click()
    pg.locator(".opblock.is-open .opblock-body").first.wait_for(state="visible")
    assert "content" in pg.locator(".opblock.is-open").first.inner_text()

    gateway = urlsplit(cluster.gateway_url).netloc
    assert requests, "the page made no request"
    foreign = [u for u in requests if urlsplit(u).netloc != gateway]
    assert foreign == []
    assert any(urlsplit(u).path == "/openapi.json" for u in requests)
    assert page.errors == [], page.errors
