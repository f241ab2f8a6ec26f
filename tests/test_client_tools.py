"""Client tools: functions a client sends with its message and runs itself, as durable waits.

On the session cluster (its home carries ``AGENTS``): a real gateway, two real workers, beat
(the reaper times waits out) and the fake LLM over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.sync.client import connect

from gateway import operations
from tests.cluster import Cluster, wait_for
from tests.fakellm import FakeLLM, FakeReply
from tests.test_ws import Socket, error_code
from walrus_tasks import indexes, keys
from walrus_tasks.config import load_config
from walrus_tasks.errors import InvalidInput
from walrus_tasks.models import ClientTool

AGENTS = {
    "fielder": 'model = "fake/m-client"\ntools = ["clock"]\n',
    "impatient": 'model = "fake/m-client-hasty"\ntools = ["clock"]\nask_timeout = 1\n',
}

WEATHER = {
    "name": "get_weather",
    "description": "The weather now in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def c(cluster: Cluster, fake_llm: FakeLLM) -> Cluster:
    """The session cluster; replies a failed test left queued must not answer this one's."""
    fake_llm.reset()
    return cluster


def send(c: Cluster, agent: str, sender: str, tools: list[dict[str, Any]]) -> httpx.Response:
    with c.http() as h:
        return h.post(
            f"/v1/agents/{agent}/messages",
            json={"content": "how is the weather?", "sender": sender, "client_tools": tools},
        )


def reply(c: Cluster, agent: str, sender: str, content: str, call_id: str = "") -> httpx.Response:
    body = {"content": content, **({"call_id": call_id} if call_id else {})}
    with c.http() as h:
        return h.post(f"/v1/agents/{agent}/conversations/{sender}/reply", json=body)


def status(c: Cluster, run_id: str) -> str:
    with c.http() as h:
        return str(h.get(f"/v1/runs/{run_id}").json()["status"])


def events_so_far(c: Cluster, run_id: str) -> list[dict[str, Any]]:
    """The run's events stored so far (the SSE route would follow the run to its end)."""
    stream = c.redis().xrange(keys.run_part(run_id, "events"))
    return [json.loads(fields["data"]) for _, fields in stream]  # type: ignore[union-attr]


def asked(c: Cluster, run_id: str, count: int) -> list[dict[str, Any]]:
    """Wait for ``count`` ``ask_user`` events of the run; they, in stream order."""

    def found() -> list[dict[str, Any]] | None:
        got = [e for e in events_so_far(c, run_id) if e["type"] == "ask_user"]
        return got if len(got) >= count else None

    return wait_for(found, 30, what=f"{count} ask_user events")  # type: ignore[no-any-return]


def no_task_of(c: Cluster, run_id: str) -> bool:
    """Whether every worker answered and none runs a task of the run (a task's args name it)."""
    workers = {
        f"{n}@test"
        for n, p in c.procs.items()
        if n.startswith("worker") and not getattr(p, "_walrus_killed", False)
    }
    with c.control_app() as app:
        active = app.control.inspect(timeout=2).active() or {}
    return set(active) >= workers and run_id not in json.dumps(active)


def offered(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tools an OpenAI chat request offered, by name."""
    return {t["function"]["name"]: t["function"] for t in request.get("tools") or []}


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request["messages"] if m["role"] == "tool"]


def test_a_client_tool_call_waits_without_a_worker_and_its_output_resumes_the_run(
    c: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("get_weather", {"city": "Oslo"})]),
        FakeReply(text="It is sunny"),
        model="m-client",
    )
    resp = send(c, "fielder", sender, [WEATHER])
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    [event] = asked(c, run_id, 1)
    [call] = next(e for e in events_so_far(c, run_id) if e["type"] == "tool_start")["calls"]
    assert event == {
        "type": "ask_user",
        "kind": "client_tool",
        "questions": [],
        "tool": {"name": "get_weather", "arguments": {"city": "Oslo"}},
        "call_id": call["id"],
    }
    assert status(c, run_id) == "waiting"
    wait_for(lambda: no_task_of(c, run_id), 20, what="no task of the run on a worker")
    first = fake_llm.requests_for("m-client")[0]
    tools = offered(first)
    assert set(tools) == {"clock", "get_weather"}  # beside the agent's own
    assert tools["get_weather"]["description"] == WEATHER["description"]
    assert tools["get_weather"]["parameters"] == WEATHER["parameters"]

    answer = reply(c, "fielder", sender, '{"sky": "sunny", "celsius": 21}', call["id"])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"run_id": run_id, "status": "resumed", "call_id": call["id"]}
    assert c.wait_run(run_id)["status"] == "succeeded"
    result = next(e for _, e in c.events(run_id) if e["type"] == "tool_result")
    assert result["call_id"] == call["id"] and result["name"] == "get_weather"
    assert result["output"] == '{"sky": "sunny", "celsius": 21}' and not result["is_error"]
    second = fake_llm.requests_for("m-client")[1]
    [tool] = tool_messages(second)
    assert tool["tool_call_id"] == call["id"]
    assert tool["content"] == '{"sky": "sunny", "celsius": 21}'
    assert "get_weather" in offered(second)  # offered on every step of the run
    assert c.history("fielder", sender)[-1]["content"] == "It is sunny"


def test_two_client_calls_of_one_step_both_wait_and_both_must_be_answered(
    c: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    fake_llm.script(
        FakeReply(
            tool_calls=[("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})]
        ),
        FakeReply(text="Sunny in both"),
        model="m-client",
    )
    run_id = send(c, "fielder", sender, [WEATHER]).json()["run_id"]
    both = asked(c, run_id, 2)
    cities = {e["call_id"]: e["tool"]["arguments"]["city"] for e in both}
    assert sorted(cities.values()) == ["Bergen", "Oslo"]
    assert reply(c, "fielder", sender, "x", "call_unknown").status_code == 409
    # Without call_id a reply answers the pending call that parked first (earliest deadline).
    first = reply(c, "fielder", sender, "the first answer")
    assert first.json()["status"] == "resumed" and first.json()["call_id"] in cities
    wait_for(lambda: any(e["type"] == "tool_result" for e in events_so_far(c, run_id)), 30)
    assert status(c, run_id) == "waiting"  # the other call still waits: the step is not over
    assert len(fake_llm.requests_for("m-client")) == 1
    [other] = set(cities) - {first.json()["call_id"]}
    second = reply(c, "fielder", sender, f"sunny in {cities[other]}", other)
    assert second.json() == {"run_id": run_id, "status": "resumed", "call_id": other}
    assert c.wait_run(run_id)["status"] == "succeeded"
    types = [e["type"] for _, e in c.events(run_id)]
    assert types.count("ask_user") == 2 and types.count("tools_complete") == 1
    outputs = {
        m["tool_call_id"]: m["content"] for m in tool_messages(fake_llm.requests_for("m-client")[1])
    }
    assert outputs == {
        first.json()["call_id"]: "the first answer",
        other: f"sunny in {cities[other]}",
    }


def test_a_client_call_not_returned_within_ask_timeout_fails_with_an_error_the_model_sees(
    c: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("get_weather", {"city": "Oslo"})]),
        FakeReply(text="I could not get the weather"),
        model="m-client-hasty",
    )
    run_id = send(c, "impatient", sender, [WEATHER]).json()["run_id"]
    assert c.wait_run(run_id, timeout=30)["status"] == "succeeded"
    result = next(e for _, e in c.events(run_id) if e["type"] == "tool_result")
    assert result["is_error"]
    assert result["output"] == "the client did not return function get_weather within 1s"
    [tool] = tool_messages(fake_llm.requests_for("m-client-hasty")[1])
    assert tool["content"] == "the client did not return function get_weather within 1s"


def test_kill_ends_a_run_waiting_on_a_client_call(
    c: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    fake_llm.script(FakeReply(tool_calls=[("get_weather", {"city": "Oslo"})]), model="m-client")
    run_id = send(c, "fielder", sender, [WEATHER]).json()["run_id"]
    asked(c, run_id, 1)
    with c.http() as h:
        assert h.post(f"/v1/agents/fielder/conversations/{sender}/kill").json() == {
            "run_id": run_id
        }
    assert c.wait_run(run_id, timeout=30)["status"] == "cancelled"
    assert len(fake_llm.requests_for("m-client")) == 1


def test_the_websocket_streams_a_client_call_and_its_reply_resumes_the_run(
    c: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("get_weather", {"city": "Oslo"})]),
        FakeReply(text="It is sunny"),
        model="m-client",
    )
    url = c.gateway_url.replace("http://", "ws://") + "/v1/ws"
    with connect(url, open_timeout=10) as conn:
        ws = Socket(conn)
        refused = ws.call("send", agent="fielder", content="hi", client_tools=[{"name": "clock"}])
        assert error_code(refused) == "invalid"
        rid = ws.start(
            "stream", agent="fielder", content="weather?", sender=sender, client_tools=[WEATHER]
        )
        while (frame := ws.next(rid))["event"]["type"] != "ask_user":
            pass
        event = frame["event"]
        assert event["kind"] == "client_tool" and event["tool"]["name"] == "get_weather"
        call_id = event["call_id"]
        answer = {"agent": "fielder", "sender": sender, "content": "sunny", "call_id": call_id}
        replied = ws.result("reply_to_ask", **answer)
        events, run_id = ws.until_done(rid)
    assert replied == {"run_id": run_id, "status": "resumed", "call_id": call_id}
    assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded"
    [tool] = tool_messages(fake_llm.requests_for("m-client")[1])
    assert tool["content"] == "sunny"


@pytest.fixture
def unchanged(c: Cluster) -> Iterator[None]:
    """Fail the test if any walrus key changes while it runs (the cluster must be idle)."""
    r = c.redis()
    wait_for(lambda: indexes.sizes(r, "runs:active", "leases") == [0, 0], 30)
    before = {k: r.dump(k) for k in r.scan_iter("walrus:*")}
    yield
    assert {k: r.dump(k) for k in r.scan_iter("walrus:*")} == before


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ([{"name": "clock"}], "'clock' is one of agent 'fielder''s own tools"),
        ([WEATHER, {**WEATHER, "description": "again"}], "'get_weather' is given twice"),
        ([{"name": "get weather"}], "client_tools.0.name"),
        ([{**WEATHER, "parameters": {"type": "string"}}], '"type": "object"'),
        ([{"name": f"f{i}"} for i in range(65)], "client_tools"),
    ],
)
def test_client_tools_that_clash_or_are_malformed_are_refused_and_nothing_is_stored(
    c: Cluster, unchanged: None, sender: str, tools: list[dict[str, Any]], message: str
) -> None:
    resp = send(c, "fielder", sender, tools)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid"
    assert message in resp.json()["error"]["message"]


def test_the_openapi_document_describes_client_tools(c: Cluster) -> None:
    with c.http() as h:
        schemas = h.get("/openapi.json").json()["components"]["schemas"]
    field = schemas["SendMessage"]["properties"]["client_tools"]
    assert "ask_user" in field["description"]
    assert set(schemas["ClientTool"]["properties"]) == {"name", "description", "parameters"}


def test_a_one_shot_send_stores_its_client_tools_and_a_clash_writes_nothing(
    r: redis.Redis, home: Path
) -> None:
    config = load_config(home)
    prior = [{"role": "user", "content": "earlier"}]
    clock = [ClientTool(name="clock")]
    with pytest.raises(InvalidInput, match="'clock' is one of agent 'fielder''s own tools"):
        operations.send_with_context(r, config, "fielder", prior, "hi", client_tools=clock)
    assert r.dbsize() == 0  # not even the seeded history
    weather = [ClientTool.model_validate(WEATHER)]
    _, run = operations.send_with_context(r, config, "fielder", prior, "hi", client_tools=weather)
    assert json.loads(str(r.hget(keys.run(run.run_id), "client_tools"))) == [WEATHER]


def test_the_python_client_sends_client_tools_and_answers_their_call(
    c: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    from walrus_tasks.client import Client

    fake_llm.script(
        FakeReply(tool_calls=[("get_weather", {"city": "Bergen"})]),
        FakeReply(text="Rain, as always"),
        model="m-client",
    )
    with Client(c.gateway_url) as client:
        run = client.send(
            "fielder", "weather?", sender, client_tools=[ClientTool.model_validate(WEATHER)]
        )
        [event] = asked(c, run.run_id, 1)
        assert event["tool"] == {"name": "get_weather", "arguments": {"city": "Bergen"}}
        replied = client.reply("fielder", "rain", sender, call_id=event["call_id"])
        assert replied.status == "resumed"
        assert client.reply_text(run.run_id) == "Rain, as always"
    assert (
        offered(fake_llm.requests_for("m-client")[0])["get_weather"]["parameters"]
        == (WEATHER["parameters"])
    )
