"""The web console: a single-page app at ``/console``, plus ``GET /v1/workers`` that it shows.

The app is static files shipped in this package (``gateway/console_ui``: plain ES modules, no
build step) and talks to the same ``/v1`` API as every other client, with the same token, so
it adds no privilege. It is same-origin with the API, which is why it needs no CORS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

UI = Path(__file__).parent / "console_ui"
INSPECT_TIMEOUT = 0.5
"""Seconds ``GET /v1/workers`` waits for the workers' replies (two broadcasts)."""


def workers() -> dict[str, list[dict[str, Any]]]:
    """Every worker that answers: its pool, queues and the tasks it is running."""
    from walrus_tasks.celery_app import app

    try:
        inspect = app.control.inspect(timeout=INSPECT_TIMEOUT)
        stats = inspect.stats() or {}
        active = inspect.active() or {}
    except Exception:  # Celery raises kombu/redis errors of many kinds: treat as no answer
        return {"workers": []}
    rows = []
    for host in sorted(set(stats) | set(active)):
        pool = stats.get(host, {}).get("pool", {})
        tasks = [
            {"id": t.get("id"), "name": t.get("name"), "run_id": _run_id(t)}
            for t in active.get(host) or []
        ]
        rows.append({"name": host, "concurrency": pool.get("max-concurrency"), "active": tasks})
    return {"workers": rows}


def _run_id(task: dict[str, Any]) -> str | None:
    """The run a task works for, from its headers (``walrus_run_id``) or kwargs."""
    headers = task.get("headers") or {}
    kwargs = task.get("kwargs") or {}
    value = headers.get("walrus_run_id") if isinstance(headers, dict) else None
    return value or (kwargs.get("run_id") if isinstance(kwargs, dict) else None)


def register(app: FastAPI) -> None:
    """Serve the console at ``/console`` and add ``GET /v1/workers``."""

    @app.get("/console", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(UI / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/console/", include_in_schema=False)
    def console_slash() -> RedirectResponse:
        return RedirectResponse("/console")

    @app.get("/v1/workers", tags=["console"])
    def list_workers() -> dict[str, list[dict[str, Any]]]:
        """The Celery workers that answer within half a second, with their active tasks."""
        return workers()

    app.mount("/console/ui", StaticFiles(directory=UI), name="console-ui")
