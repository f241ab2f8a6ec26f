"""docs/design.md, invariant 8: bad input gets a clear error and changes nothing in Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, wait_for
from walrus_tasks import indexes


@pytest.fixture
def unchanged(cluster: Cluster) -> Iterator[None]:
    """Fail the test if any walrus key changes while it runs (the cluster must be idle)."""
    r = cluster.redis()
    wait_for(lambda: indexes.sizes(r, "runs:active", "leases") == [0, 0], 30)
    before = {k: r.dump(k) for k in r.scan_iter("walrus:*")}
    yield
    assert {k: r.dump(k) for k in r.scan_iter("walrus:*")} == before


CASES = [
    ("POST", "/v1/agents/nobody/messages", {"json": {"content": "hi"}}, 404, "not_found"),
    ("POST", "/v1/agents/Bad!/messages", {"json": {"content": "hi"}}, 422, "invalid"),
    ("POST", "/v1/agents/echo/messages", {"json": {"content": "hi", "sender": "a b"}}, 422,
     "invalid"),
    ("POST", "/v1/agents/echo/messages", {"json": {"content": "hi", "sender": "x" * 200}}, 422,
     "invalid"),
    ("POST", "/v1/agents/echo/messages", {"content": b"{not json", "headers":
     {"content-type": "application/json"}}, 422, "invalid"),
    ("POST", "/v1/agents/echo/messages", {"json": {"sender": "u"}}, 422, "invalid"),
    ("POST", "/v1/agents/echo/messages", {"json": {"content": ""}}, 422, "invalid"),
    ("POST", "/v1/agents/echo/messages", {"json": {"content": "x", "on_busy": "later"}}, 422,
     "invalid"),
    ("POST", "/v1/agents/echo/messages", {"json": {"content": "x", "surprise": 1}}, 422,
     "invalid"),
    ("POST", "/v1/agents/echo/messages", {"json": {"content": "x" * 2_000_000}}, 413,
     "too_large"),
    ("GET", "/v1/runs/0123456789abcdef0123456789abcdef", {}, 404, "not_found"),
    ("GET", "/v1/runs/not-a-run-id", {}, 422, "invalid"),
    ("GET", "/v1/runs/0123456789abcdef0123456789abcdef/events", {}, 404, "not_found"),
    ("POST", "/v1/agents/echo/conversations/bad%20sender/kill", {}, 422, "invalid"),
    ("POST", "/v1/agents/nobody/conversations/user/kill", {}, 404, "not_found"),
    ("GET", "/v1/agents/echo/conversations/..x/history", {}, 422, "invalid"),
    ("GET", "/v1/agents/nobody", {}, 404, "not_found"),
    ("GET", "/v1/nowhere", {}, 404, "not_found"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), CASES)
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    cluster: Cluster,
    unchanged: None,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    code: str,
) -> None:
    with cluster.http() as c:
        resp = c.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_an_oversize_body_streamed_without_content_length_is_refused(
    cluster: Cluster, unchanged: None
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"content": "'
        for _ in range(300):
            yield b"x" * 8192
        yield b'"}'

    with cluster.http() as c:
        resp = c.post(
            "/v1/agents/echo/messages",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
    assert resp.status_code == 413
