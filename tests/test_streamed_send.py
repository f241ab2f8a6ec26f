"""A ``POST`` asking for its run's stream is answered below FastAPI (through
``gateway.sse_route``) with the route's contract: the same stream, the same errors, the same
idempotency, counted under the same route; whatever it does not take, FastAPI answers. The
native message (``"stream": true`` or ``Accept: text/event-stream``,
``gateway.native.PLAIN_SEND``, which answers the message's ``202`` too), and with ``"stream":
true`` the OpenAI chat completion, the Anthropic message and the Responses create
(``gateway.plain_post``; the official clients' streams are in each face's own tests).

``python -m bench.post_streams`` measures what it saves (docs/benchmarks.md).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster, parse_sse

SEND = "/v1/agents/{agent}/messages"


def stream(c: httpx.Client, agent: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return c.post(SEND.format(agent=agent), json=body, headers=headers, timeout=60)


def events(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    return [e for _, e in parse_sse(iter(resp.text.splitlines()))]


def test_a_streamed_message_gets_its_run_s_events_either_way_it_asks(
    cluster: Cluster, sender: str
) -> None:
    with cluster.http() as c:
        by_body = events(stream(c, "echo", {"content": "hi", "sender": sender, "stream": True}))
        sse = {"accept": "text/event-stream"}
        by_accept = events(stream(c, "echo", {"content": "again", "sender": sender}, **sse))
        plain = stream(c, "echo", {"content": "no stream", "sender": sender})
    for got in (by_body, by_accept):
        assert got[0]["type"] == "start" and got[-1]["type"] == "end", got
        assert got[-1]["status"] == "succeeded"
    assert by_body[0]["run_id"] != by_accept[0]["run_id"]
    assert plain.status_code == 202 and set(plain.json()) >= {"run_id", "events_url"}


def test_a_streamed_message_s_errors_are_the_route_s(cluster: Cluster, sender: str) -> None:
    with cluster.http() as c:
        unknown = stream(c, "nobody", {"content": "hi", "sender": sender, "stream": True})
        unknown_plain = stream(c, "nobody", {"content": "hi", "sender": sender})
        empty = stream(c, "echo", {"content": "", "sender": sender, "stream": True})
        extra = stream(c, "echo", {"content": "hi", "stream": True, "nope": 1})
        form = c.post(
            SEND.format(agent="echo"),
            content=json.dumps({"content": "hi", "sender": sender, "stream": True}),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        metrics = c.get("/metrics").text
    assert unknown.status_code == unknown_plain.status_code == 404
    assert unknown.json() == unknown_plain.json()
    assert unknown.json()["error"]["code"] == "not_found"
    for refused in (empty, extra, form):  # FastAPI's 422, in our shape; nothing streamed
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "invalid", refused.text
    route = 'route="/v1/agents/{agent}/messages"'
    assert any(route in line and 'status="404"' in line for line in metrics.splitlines())


def test_a_streamed_message_sent_again_with_its_idempotency_key_streams_the_same_run(
    cluster: Cluster, sender: str
) -> None:
    body = {"content": "once", "sender": sender, "stream": True}
    key = {"idempotency-key": f"key-{sender}"}
    with cluster.http() as c:
        first = events(stream(c, "echo", body, **key))
        again = events(stream(c, "echo", body, **key))
    assert first[0]["run_id"] == again[0]["run_id"]
    assert first == again


def send(
    c: httpx.Client, agent: str, body: dict[str, Any], chunked: bool, **headers: str
) -> httpx.Response:
    """``POST`` a message: answered below FastAPI (a declared length), or by FastAPI (a chunked
    body, which ``gateway.sse_route`` leaves to the app behind)."""
    data = json.dumps(body).encode()
    content: Any = iter([data]) if chunked else data
    headers = {"content-type": "application/json", **headers}
    return c.post(SEND.format(agent=agent), content=content, headers=headers, timeout=60)


def test_a_message_s_202_below_fastapi_is_fastapi_s(cluster: Cluster, sender: str) -> None:
    """Not streamed, the message is answered below FastAPI too: the same ``202``, byte for
    byte but its run id, the same refusals and idempotency, counted under the route."""
    answers: dict[bool, httpx.Response] = {}
    with cluster.http() as c:
        for chunked in (False, True):
            answers[chunked] = send(c, "echo", {"content": "hi", "sender": sender}, chunked)
            once = {"content": "once", "sender": sender}
            key = {"idempotency-key": f"202-{chunked}-{sender}"}
            first, again = (send(c, "echo", once, chunked, **key) for _ in range(2))
            assert first.status_code == again.status_code == 202, first.text
            assert first.json() == again.json()
            unknown = send(c, "nobody", {"content": "hi", "sender": sender}, chunked)
            assert unknown.status_code == 404, unknown.text
            assert unknown.json()["error"]["code"] == "not_found"
            for refused in ({"content": ""}, {"content": "hi", "nope": 1}, {"text": "hi"}):
                bad = send(c, "echo", {"sender": sender, **refused}, chunked)
                assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"
        metrics = c.get("/metrics").text
    plain, app = answers[False], answers[True]
    for got in (plain, app):
        assert got.status_code == 202, got.text
        run_id = got.json()["run_id"]
        assert got.json() == {"run_id": run_id, "events_url": f"/v1/runs/{run_id}/events"}
    swap = plain.content.replace(plain.json()["run_id"].encode(), app.json()["run_id"].encode())
    assert swap == app.content
    assert plain.headers["content-type"] == app.headers["content-type"] == "application/json"
    assert plain.headers["content-length"] == app.headers["content-length"]
    for got in (plain, app):  # both were accepted: each ran to its end
        assert cluster.wait_run(got.json()["run_id"])["status"] == "succeeded"
    route = 'route="/v1/agents/{agent}/messages"'
    assert any(route in line and 'status="202"' in line for line in metrics.splitlines())


SAY = [{"role": "user", "content": "hi"}]
FACES = {  # path, a good body, refused bodies (404, 400 where the face has one, 422s)
    "openai": ("/v1/chat/completions", {"model": "echo", "messages": SAY}, [
        {"model": "nobody", "messages": SAY},
        {"model": "echo", "messages": SAY, "n": 2},
        {"model": "echo", "messages": []},
        {"model": "echo", "messages": SAY, "stream": "maybe"},
    ]),
    "anthropic": ("/v1/messages", {"model": "echo", "max_tokens": 64, "messages": SAY}, [
        {"model": "nobody", "max_tokens": 64, "messages": SAY},
        {"model": "echo", "max_tokens": 64, "messages": SAY,
         "tools": [{"name": "t", "input_schema": {"type": "object"}}]},
        {"model": "echo", "max_tokens": 64, "messages": []},
        {"model": "echo", "max_tokens": 64, "messages": SAY, "stream": "maybe"},
    ]),
    "responses": ("/v1/responses", {"model": "echo", "input": "hi"}, [
        {"model": "nobody", "input": "hi"},
        {"model": "echo"},
        {"model": "echo", "input": "hi", "stream": "maybe"},
    ]),
}  # fmt: skip
"""The faces whose ``POST`` answers with its stream when asked (``gateway.plain_post``)."""
ENDS = {"openai": "data: [DONE]", "anthropic": "event: message_stop",
        "responses": "event: response.completed"}  # fmt: skip


@pytest.mark.parametrize("face", list(FACES))
def test_a_streamed_post_of_each_face_streams_and_refuses_as_its_route(
    cluster: Cluster, sender: str, face: str
) -> None:
    """Each refusal of a request asking for a stream is what the same request without
    ``stream`` gets, in the face's own shape; a good one streams to its end."""
    path, good, refused = FACES[face]
    with cluster.http() as c:
        for case in refused:
            streamed = c.post(path, json={"stream": True, **case})
            plain = c.post(path, json=case)
            assert streamed.status_code == plain.status_code >= 400, (case, streamed.text)
            assert streamed.json() == plain.json() or (
                set(streamed.json()) == set(plain.json())
                and streamed.json()["error"]["type"] == plain.json()["error"]["type"]
            ), (case, streamed.text, plain.text)
        ok = c.post(path, json={**good, "stream": True}, headers={"x-walrus-sender": sender})
        metrics = c.get("/metrics").text
    assert ok.status_code == 200 and ENDS[face] in ok.text, ok.text
    route = f'route="{path}"'
    assert any(route in line and 'status="404"' in line for line in metrics.splitlines())
