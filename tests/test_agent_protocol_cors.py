"""CORS for ``WALRUS_GATEWAY_ALLOWED_ORIGINS``, proven in a real browser (system Chromium).

A page served from another origin (as a ``useStream`` app on ``http://localhost:3000`` is)
calls the gateway directly with a bearer token, reads ``Content-Location`` and joins the run's
stream with ``x-api-key`` and ``Last-Event-ID``: it works from the listed origin and fails with
a CORS error from an unlisted one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.browser import browser
from tests.cluster import Cluster, running
from tests.conftest import redis_db_url, write_home
from tests.fakellm import FakeLLM
from walrus_tasks.redis_server import RedisServer, free_port

__all__ = ["browser"]  # a fixture

TOKEN = "cors-test-token-0123456789"
PAGE = b"""<!doctype html><title>an app on another origin</title>
<script>
window.probe = async (api, token) => {
  const headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"};
  try {
    const made = await fetch(api + "/threads", {method: "POST", headers, body: "{}"});
    const thread = await made.json();
    const body = {assistant_id: "echo", input: {messages: [{role: "user", content: "hi"}]}};
    const res = await fetch(api + "/threads/" + thread.thread_id + "/runs",
                            {method: "POST", headers, body: JSON.stringify(body)});
    const location = res.headers.get("Content-Location");
    const run = await res.json();
    const joined = await fetch(api + location + "/stream",
                               {headers: {"x-api-key": token, "Last-Event-ID": "-1"}});
    return {ok: true, status: res.status, location, thread_id: thread.thread_id,
            run_id: run.run_id, stream: await joined.text()};
  } catch (e) {
    return {ok: false, error: String(e)};
  }
};
</script>
"""


class _Page(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """Two origins serving the page: ``(listed, unlisted)``."""
    servers = [ThreadingHTTPServer(("127.0.0.1", free_port()), _Page) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield tuple(f"http://127.0.0.1:{s.server_address[1]}" for s in servers)  # type: ignore[misc]
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture(scope="module")
def cors_cluster(
    redis_server: RedisServer,
    fake_llm: FakeLLM,
    origins: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cors")
    home = write_home(root / "home", fake_llm.base_url)
    with (home / "config.toml").open("a") as f:
        f.write(f'\n[gateway]\ntokens = ["{TOKEN}"]\n')
    c = Cluster(
        redis_url=redis_db_url(redis_server), home=home, log_dir=root,
        env_extra={"WALRUS_GATEWAY_ALLOWED_ORIGINS": origins[0]},
    )  # fmt: skip
    with running(c, workers=("w1",)):
        yield c


def probe(browser: Any, origin: str, api: str) -> dict[str, Any]:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(origin + "/")
        return page.evaluate("([api, token]) => window.probe(api, token)", [api, TOKEN])  # type: ignore[no-any-return]
    finally:
        context.close()


def test_a_page_from_an_allowed_origin_calls_the_gateway_and_reads_content_location(
    browser: Any, cors_cluster: Cluster, origins: tuple[str, str]
) -> None:
    got = probe(browser, origins[0], cors_cluster.gateway_url)
    assert got["ok"], got
    assert got["status"] == 200
    assert got["location"] == f"/threads/{got['thread_id']}/runs/{got['run_id']}"
    assert "event: values" in got["stream"] and "Hello from the mock model." in got["stream"]


def test_a_page_from_an_unlisted_origin_gets_a_cors_error(
    browser: Any, cors_cluster: Cluster, origins: tuple[str, str]
) -> None:
    got = probe(browser, origins[1], cors_cluster.gateway_url)
    assert not got["ok"] and "Failed to fetch" in got["error"], got


@pytest.mark.parametrize("which", [0, 1])
def test_the_preflight_names_the_listed_origin_only_never_a_wildcard(
    cors_cluster: Cluster, origins: tuple[str, str], which: int
) -> None:
    asked = {
        "Origin": origins[which],
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-api-key, content-type, last-event-id",
    }
    with httpx.Client(base_url=cors_cluster.gateway_url) as h:
        pre = h.options("/threads", headers=asked)
        token = {"Origin": origins[which], "Authorization": f"Bearer {TOKEN}"}
        actual = h.post("/threads", json={}, headers=token)
    assert actual.status_code == 200
    if which == 0:
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == origins[0]
        allowed = pre.headers["access-control-allow-headers"].lower()
        assert {"authorization", "x-api-key", "content-type", "last-event-id"} <= {
            h.strip() for h in allowed.split(",")
        }
        assert actual.headers["access-control-allow-origin"] == origins[0]
        exposed = actual.headers["access-control-expose-headers"]
        assert "Content-Location" in exposed and "Location" in exposed
    else:
        assert pre.status_code == 400
        assert "access-control-allow-origin" not in pre.headers
        assert "access-control-allow-origin" not in actual.headers
