"""``/docs`` that works offline: the Swagger UI assets come from the gateway, not a CDN.

The assets are those of the ``fastapi-swagger`` package, which ships the Swagger UI 5
distribution (Apache-2.0) as it is released, served under ``/docs/static``. Swagger UI 5 reads
the OpenAPI 3.1 document FastAPI produces (4.x cannot). ReDoc (which needs a CDN) is off; so is
the online validator badge, which would call a foreign host. A newer Swagger UI comes with a
newer ``fastapi-swagger``: ``make lock`` moves it forward with the other dependencies.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = "/docs/static"
ASSETS = Path(str(resources.files("fastapi_swagger") / "resources"))
"""Swagger UI's ``swagger-ui-bundle.js``, ``swagger-ui.css`` and favicon, from the package."""

INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_page(app: FastAPI) -> HTMLResponse:
    """The Swagger UI page of ``app`` (the same bytes every time)."""
    return get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - docs",
        swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},
    )


def inline_script_hash(page: HTMLResponse) -> str:
    """``sha256-…`` of the page's one inline script, for its Content-Security-Policy."""
    [script] = INLINE_SCRIPT.findall(bytes(page.body).decode())
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def install_docs(app: FastAPI) -> str:
    """Serve ``/docs`` and its assets (create the app with ``docs_url=None, redoc_url=None``).

    Returns the hash of the page's inline script (see :mod:`gateway.page_headers`).
    """
    app.mount(STATIC, StaticFiles(directory=ASSETS), name="docs-static")
    page = docs_page(app)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return page

    return inline_script_hash(page)
