"""Routes that read only the config answer on the event loop.

The Agent Protocol's ``/ok``, ``/info`` and assistants, and the OpenAI face's models: each is an
``async def``, since FastAPI runs a plain ``def`` route on a thread of its pool, a hop for a dict
read (docs/benchmarks.md, issue 25, twenty-first round). The in-process gateway answers each
with every thread hop made to fail, and its answer is the one the official clients read.
"""

from __future__ import annotations

from typing import Any

import pytest
from anyio import to_thread
from starlette.testclient import TestClient

SEARCH = {"graph_id": "echo", "limit": 10, "offset": 0}


@pytest.mark.parametrize(
    ("method", "path", "body", "expect"),
    [
        ("GET", "/ok", None, lambda got: got == {"ok": True}),
        ("GET", "/info", None, lambda got: got["flags"]["assistants"] is True),
        ("POST", "/assistants/search", SEARCH, lambda got: [a["name"] for a in got] == ["echo"]),
        ("POST", "/assistants/count", SEARCH, lambda got: got == 1),
        ("GET", "/assistants/echo", None, lambda got: got["assistant_id"] == "echo"),
        ("GET", "/assistants/echo/schemas", None, lambda got: got["graph_id"] == "echo"),
        ("GET", "/assistants/echo/graph", None, lambda got: len(got["nodes"]) == 4),
        ("GET", "/assistants/echo/subgraphs", None, lambda got: got == {}),
        ("GET", "/v1/models", None, lambda got: "echo" in [m["id"] for m in got["data"]]),
        ("GET", "/v1/models/echo", None, lambda got: got["id"] == "echo"),
    ],
)
def test_a_route_that_reads_only_the_config_answers_with_no_thread(
    gateway_client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    expect: Any,
) -> None:
    def no_thread(*_: Any, **__: Any) -> Any:
        pytest.fail("on a thread")

    monkeypatch.setattr(to_thread, "run_sync", no_thread)
    resp = gateway_client.request(method, path, json=body)
    assert resp.status_code == 200, resp.text
    assert expect(resp.json()), resp.json()


def test_an_unknown_assistant_or_model_is_still_404_on_the_loop(
    gateway_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(to_thread, "run_sync", lambda *_, **__: pytest.fail("on a thread"))
    assert gateway_client.get("/assistants/nobody").status_code == 404
    assert gateway_client.get("/v1/models/nobody").status_code == 404
