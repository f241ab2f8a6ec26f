"""The console's and the API docs' security headers (gateway.page_headers): a strict CSP, no
framing, no sniffing (the headers asked of the in-process app); and in the real browser, served
by the session cluster's gateway, both pages still load with no CSP violation."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.browser import DESKTOP, Page, browser
from tests.cluster import Cluster

__all__ = ["browser"]  # fixture

pytestmark = pytest.mark.security

VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.effectiveDirective} ${e.blockedURI}`));
"""
"""Recorded before any script of the page runs (an init script is not subject to the CSP)."""


@pytest.mark.parametrize(
    "path", ["/console", "/console/ui/app.js", "/console/ui/style.css", "/docs",
             "/docs/static/swagger-ui.css"],
)  # fmt: skip
def test_the_pages_and_their_files_forbid_framing_sniffing_and_foreign_scripts(
    gateway_client: TestClient, path: str
) -> None:
    resp = gateway_client.get(path)
    assert resp.status_code == 200
    csp = resp.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    if path.startswith("/console"):
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_the_api_is_not_given_page_headers(gateway_client: TestClient) -> None:
    resp = gateway_client.get("/v1/agents")
    assert "content-security-policy" not in resp.headers


def test_both_pages_load_in_the_browser_with_no_csp_violation(
    browser: Any, cluster: Cluster
) -> None:
    p = Page(browser, cluster.gateway_url, DESKTOP)
    try:
        pg: Any = p.page
        pg.add_init_script(VIOLATIONS)
        p.open("agents")
        pg.locator("#agents").first.wait_for()
        assert pg.evaluate("window.__csp") == []
        # The policy is enforced: an injected inline script does not run, and is reported.
        ran = pg.evaluate(
            """() => new Promise((done) => {
                 window.__ran = false;
                 const s = document.createElement("script");
                 s.textContent = "window.__ran = true";
                 document.body.appendChild(s);
                 setTimeout(() => done(window.__ran), 200);
               })"""
        )
        assert ran is False
        assert any(v.startswith("script-src") for v in pg.evaluate("window.__csp"))
        p.errors = [e for e in p.errors if "Content Security Policy" not in e]  # that one

        pg.goto("/docs")
        # Rendered by the page's inline SwaggerUIBundle call: it ran under the policy's hash.
        pg.locator("#swagger-ui .swagger-ui").first.wait_for(state="attached")
        assert pg.evaluate("window.__csp") == []
    finally:
        p.close()
    assert p.errors == [], p.errors
