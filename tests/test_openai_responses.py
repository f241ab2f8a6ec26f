"""The OpenAI Responses face (``/v1/responses``), driven by the official ``openai`` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.cluster import Cluster, wait_for
from tests.fakellm import FakeLLM, FakeReply
from walrus_tasks import indexes, keys

REPLY = "Hello from the mock model."
SLOW = " ".join(f"w{i}" for i in range(1, 21))


@pytest.fixture
def client(cluster: Cluster) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=cluster.gateway_url + "/v1", api_key="unused", max_retries=0, timeout=60
    ) as c:
        yield c


def run_of(response_id: str) -> str:
    """The walrus run a response id names."""
    return response_id.removeprefix("resp_").split("_")[0]


def test_create_answers_with_the_reply_and_usage(client: openai.OpenAI, cluster: Cluster) -> None:
    resp = client.responses.create(model="echo", input="hi")
    assert resp.object == "response" and resp.model == "echo" and resp.status == "completed"
    assert resp.output_text == REPLY and resp.error is None
    [message] = resp.output
    assert message.type == "message" and message.role == "assistant"
    assert message.status == "completed" and message.content[0].type == "output_text"
    assert resp.usage is not None and resp.usage.output_tokens == 5
    assert resp.usage.input_tokens > 0
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert resp.store is True and resp.background is False and resp.created_at > 0
    run = cluster.run(run_of(resp.id))
    assert resp.id == f"resp_{run['run_id']}"
    assert run["face"] == "openai-responses" and run["status"] == "succeeded"
    assert run["sender"].startswith("resp-")
    assert client.responses.retrieve(resp.id).model_dump() == resp.model_dump()


def test_a_stream_sends_the_events_in_order_numbered_from_zero(client: openai.OpenAI) -> None:
    with client.responses.create(model="echo", input="hi", stream=True) as stream:
        events = list(stream)
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
    ]  # fmt: skip
    assert types[-4:] == [
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert "".join(e.delta for e in deltas) == REPLY
    assert len({e.item_id for e in deltas}) == 1
    created, done = events[0], events[-1]
    assert created.type == "response.created" and created.response.status == "queued"
    assert done.type == "response.completed" and done.response.output_text == REPLY
    assert done.response.id == created.response.id and done.response.usage is not None


def test_the_sdks_stream_helper_accumulates_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="echo", input="hi") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == REPLY and final.output_text == REPLY and final.status == "completed"


def test_previous_response_id_continues_the_same_conversation(
    client: openai.OpenAI, cluster: Cluster, fake_llm: FakeLLM
) -> None:
    fake_llm.script(FakeReply(text="Hi Ann."), FakeReply(text="Your name is Ann."), model="m-oai")
    first = client.responses.create(
        model="oai", instructions="be brief", input="my name is Ann", metadata={"k": "v"}
    )
    second = client.responses.create(
        model="oai", input="what is my name?", previous_response_id=first.id
    )
    assert (first.output_text, second.output_text) == ("Hi Ann.", "Your name is Ann.")
    assert second.previous_response_id == first.id and first.metadata == {"k": "v"}
    assert first.instructions == "be brief"
    sent = json.dumps(fake_llm.requests_for("m-oai")[-1]["messages"])
    for said in ("(system) be brief", "my name is Ann", "Hi Ann.", "what is my name?"):
        assert said in sent
    runs = [cluster.run(run_of(r.id)) for r in (first, second)]
    assert runs[0]["sender"] == runs[1]["sender"] and runs[1]["seq"] == 2
    contents = [m["content"] for m in cluster.history("oai", runs[0]["sender"])]
    assert contents == [
        "(system) be brief", "my name is Ann", "Hi Ann.", "what is my name?", "Your name is Ann."
    ]  # fmt: skip


def test_a_list_input_seeds_a_new_conversation_and_input_items_list_it(
    client: openai.OpenAI, cluster: Cluster
) -> None:
    resp = client.responses.create(
        model="echo",
        input=[
            {"role": "developer", "content": "be kind"},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": [{"type": "input_text", "text": "three"}]},
        ],
    )
    sender = cluster.run(run_of(resp.id))["sender"]
    contents = [m["content"] for m in cluster.history("echo", sender)]
    assert contents == ["(system) be kind", "one", "two", "three", REPLY]
    newest_first = client.responses.input_items.list(resp.id)
    texts = [item.content[0].text for item in newest_first.data]  # type: ignore[union-attr]
    assert texts == ["three", "two", "one", "be kind"]
    page = client.responses.input_items.list(resp.id, order="asc", limit=3)
    assert [i.role for i in page.data] == ["developer", "user", "assistant"]  # type: ignore[union-attr]
    assert page.has_more is True
    rest = client.responses.input_items.list(resp.id, order="asc", limit=3, after=page.data[-1].id)
    assert [i.role for i in rest.data] == ["user"] and rest.has_more is False  # type: ignore[union-attr]
    one_by_one = client.responses.input_items.list(resp.id, order="asc", limit=1)
    assert [i.id for i in one_by_one] == [i.id for i in reversed(newest_first.data)]


def test_background_answers_at_once_and_retrieve_sees_it_complete(
    client: openai.OpenAI, cluster: Cluster
) -> None:
    resp = client.responses.create(model="slow", input="hi", background=True)
    assert resp.background is True and resp.status in ("queued", "in_progress")

    def done() -> Any:
        got = client.responses.retrieve(resp.id)
        assert got.status in ("queued", "in_progress", "completed")
        return got if got.status == "completed" else None

    final = wait_for(done, 30, 0.2, "the background response to complete")
    assert final.output_text == SLOW and final.usage is not None
    assert cluster.run(run_of(resp.id))["status"] == "succeeded"


def test_a_stream_resumed_starting_after_n_gives_exactly_the_rest(client: openai.OpenAI) -> None:
    seen = []
    with client.responses.create(model="slow", input="hi", stream=True) as stream:
        for event in stream:
            seen.append(event)
            if sum(e.type == "response.output_text.delta" for e in seen) == 3:
                break  # the client leaves mid-run
    rid, last = seen[0].response.id, seen[-1].sequence_number  # type: ignore[union-attr]
    with client.responses.retrieve(rid, stream=True, starting_after=last) as stream:
        rest = list(stream)
    joined = seen + rest
    assert [e.sequence_number for e in joined] == list(range(len(joined)))
    assert joined[-1].type == "response.completed"
    text = "".join(e.delta for e in joined if e.type == "response.output_text.delta")
    assert text == SLOW
    with client.responses.retrieve(rid, stream=True) as stream:
        replay = list(stream)
    assert [e.model_dump() for e in replay] == [e.model_dump() for e in joined]
    n = len(joined) - 5
    with client.responses.retrieve(rid, stream=True, starting_after=n) as stream:
        tail = list(stream)
    assert [e.model_dump() for e in tail] == [e.model_dump() for e in joined[n + 1 :]]


def test_cancel_ends_the_response_cancelled(client: openai.OpenAI, cluster: Cluster) -> None:
    resp = client.responses.create(model="slow", input="hi", background=True)
    wait_for(lambda: "w2" in client.responses.retrieve(resp.id).output_text, 30, 0.1)
    cancelled = client.responses.cancel(resp.id)
    assert cancelled.status == "cancelled" and cancelled.error is not None
    assert cancelled.error.code == "run_cancelled"  # type: ignore[comparison-overlap]
    assert "w20" not in cancelled.output_text
    assert cancelled.output_text.startswith("w1 w2")
    assert cluster.run(run_of(resp.id))["status"] == "cancelled"
    assert client.responses.retrieve(resp.id).status == "cancelled"


def test_a_deleted_response_is_not_found(client: openai.OpenAI, cluster: Cluster) -> None:
    resp = client.responses.create(model="echo", input="hi")
    client.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(resp.id)
    assert cluster.run(run_of(resp.id))["status"] == "succeeded"  # the run stays


def test_store_false_is_not_kept_once_it_has_ended(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="echo", input="hi", store=False)
    assert resp.status == "completed" and resp.output_text == REPLY and resp.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with client.responses.create(model="echo", input="hi", store=False, stream=True) as stream:
        events = list(stream)
    assert events[-1].type == "response.completed"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(events[0].response.id)  # type: ignore[union-attr]


def test_thinking_is_a_reasoning_item(client: openai.OpenAI, fake_llm: FakeLLM) -> None:
    fake_llm.script(FakeReply(thinking="think it over", text="Answer."), model="m-oai")
    resp = client.responses.create(model="oai", input="q")
    reasoning, message = resp.output
    assert reasoning.type == "reasoning" and reasoning.status == "completed"
    assert reasoning.content is not None and reasoning.content[0].text == "think it over"
    assert message.type == "message" and resp.output_text == "Answer."
    fake_llm.script(FakeReply(thinking="think it over", text="Answer."), model="m-oai")
    with client.responses.create(model="oai", input="q", stream=True) as stream:
        events = list(stream)
    thought = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
    assert "".join(thought) == "think it over"
    done = [e.text for e in events if e.type == "response.reasoning_text.done"]
    assert done == ["think it over"]


def test_the_agents_own_tool_call_shows_as_an_mcp_call_item(
    client: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    fake_llm.script(FakeReply(tool_calls=[("clock", {})]), FakeReply(text="Late."), model="m-oai")
    resp = client.responses.create(model="oai", input="time?")
    call, message = resp.output
    assert call.type == "mcp_call" and call.name == "clock" and call.server_label == "walrus"
    assert call.status == "completed" and call.arguments == "{}" and call.output
    assert message.type == "message" and resp.output_text == "Late."
    fake_llm.script(
        FakeReply(thinking="hmm", tool_calls=[("clock", {})]), FakeReply(text="Late."),
        model="m-oai",
    )  # fmt: skip
    with client.responses.stream(model="oai", input="time?") as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    i = types.index("response.mcp_call.in_progress")
    assert types[i - 1] == "response.output_item.added"
    assert types[types.index("response.mcp_call.completed") + 1] == "response.output_item.done"
    assert [item.type for item in final.output] == ["reasoning", "mcp_call", "message"]
    assert final.output_text == "Late."


def test_the_raw_stream_names_each_event_and_ends_with_done(cluster: Cluster) -> None:
    body = {"model": "echo", "input": "hi", "stream": True}
    with cluster.http() as c, c.stream("POST", "/v1/responses", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert not any(line.startswith("id:") for line in lines)
    assert lines[-1] == "data: [DONE]"
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    datas = [json.loads(line[6:]) for line in lines[:-1] if line.startswith("data: ")]
    assert names == [d["type"] for d in datas] and names[-1] == "response.completed"


def test_a_failed_run_is_a_failed_response(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="broken", input="hi")
    assert resp.status == "failed" and resp.error is not None
    assert resp.error.code == "run_failed"  # type: ignore[comparison-overlap]
    assert "the mock model was told to fail" in resp.error.message
    with client.responses.create(model="broken", input="hi", stream=True) as stream:
        events = list(stream)
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None  # type: ignore[union-attr]


def test_a_run_out_of_steps_is_an_incomplete_response(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="budget", input="hi")
    assert resp.status == "incomplete" and resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_iterations"  # type: ignore[comparison-overlap]


@pytest.fixture
def nothing_stored(cluster: Cluster) -> Iterator[None]:
    """Fail the test if a response record or a run is added while it runs."""
    r = cluster.redis()
    before = (set(r.scan_iter(keys.response("*"))), indexes.sizes(r, "runs"))
    yield
    assert (set(r.scan_iter(keys.response("*"))), indexes.sizes(r, "runs")) == before
    r.close()


def test_an_unknown_model_is_not_found(client: openai.OpenAI, nothing_stored: None) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="gpt-4o", input="hi")
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_" + "0" * 32)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="echo", input="hi", previous_response_id="resp_nope")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         "text parts only"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "item type 'reasoning'"),
        ({"input": [{"role": "system", "content": "only a system message"}]}, "no message"),
        ({"input": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]},
         "last message"),
        ({"input": []}, "must not be empty"),
        ({"input": "  "}, "no text"),
        ({"tools": [{"type": "web_search"}]}, "only client function tools"),
        ({"input": [{"type": "function_call_output", "call_id": "c1", "output": "x"}]},
         "previous_response_id"),
        ({"conversation": "alice", "previous_response_id": "resp_x"}, "not both"),
        ({"background": True, "store": False}, "must be stored"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_and_stores_nothing(
    client: openai.OpenAI, nothing_stored: None, extra: dict[str, Any], fragment: str
) -> None:
    body = {"model": "echo", "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(**body)
    assert fragment in info.value.message, info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "invalid_request_error"


def test_a_body_without_a_model_is_a_422_in_openai_shape(
    cluster: Cluster, nothing_stored: None
) -> None:
    with cluster.http() as c:
        resp = c.post("/v1/responses", json={"input": "hi"})
        bad_json = c.post(
            "/v1/responses", content=b"{no", headers={"content-type": "application/json"}
        )
    assert resp.status_code == 422 and "model" in resp.json()["error"]["message"]
    assert bad_json.status_code == 422 and bad_json.json()["error"]["type"]


def test_a_conversation_names_the_walrus_sender(
    client: openai.OpenAI, cluster: Cluster, sender: str
) -> None:
    for said in ("one", "two"):
        resp = client.responses.create(model="echo", input=said, conversation=sender)
        assert resp.conversation is not None and resp.conversation.id == sender
    contents = [m["content"] for m in cluster.history("echo", sender)]
    assert contents == ["one", REPLY, "two", REPLY]


def test_the_routes_are_in_the_openapi_document(cluster: Cluster) -> None:
    with cluster.http() as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert "post" in paths["/v1/responses"]
    assert {"get", "delete"} <= set(paths["/v1/responses/{response_id}"])
    assert "post" in paths["/v1/responses/{response_id}/cancel"]
    assert "get" in paths["/v1/responses/{response_id}/input_items"]


WEATHER = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def test_a_client_function_call_parks_the_run_and_its_output_resumes_it(
    client: openai.OpenAI, cluster: Cluster, fake_llm: FakeLLM
) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("get_weather", {"city": "Paris"})]),
        FakeReply(text="It is sunny in Paris."),
        model="m-oai",
    )
    first = client.responses.create(model="oai", input="weather in Paris?", tools=WEATHER)
    assert first.status == "completed"
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    offered = json.dumps(fake_llm.requests_for("m-oai")[-1].get("tools"))
    assert "get_weather" in offered
    run_id = run_of(first.id)
    assert cluster.run(run_id)["status"] == "waiting"
    answer = [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    with pytest.raises(openai.BadRequestError):  # a message while the calls wait: refused
        client.responses.create(model="oai", input="hi", previous_response_id=first.id)
    with client.responses.create(
        model="oai", input=answer, previous_response_id=first.id, tools=WEATHER, stream=True
    ) as stream:
        events = list(stream)
    second = events[-1].response  # type: ignore[union-attr]
    assert events[-1].type == "response.completed" and second.id == f"resp_{run_id}_1"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert second.output_text == "It is sunny in Paris."
    assert "sunny" in json.dumps(fake_llm.requests_for("m-oai")[-1]["messages"])
    assert cluster.run(run_id)["status"] == "succeeded"
    with pytest.raises(openai.ConflictError):  # answered already
        client.responses.create(model="oai", input=answer, previous_response_id=first.id)
    assert client.responses.retrieve(second.id).output_text == "It is sunny in Paris."


CLOCK_TOO = [*WEATHER, {"type": "function", "name": "get_time", "parameters": {"type": "object"}}]


def test_a_step_with_two_client_calls_and_one_of_its_own_stops_once_both_are_asked(
    client: openai.OpenAI, cluster: Cluster, fake_llm: FakeLLM
) -> None:
    calls = [("get_weather", {"city": "Oslo"}), ("clock", {}), ("get_time", {})]
    fake_llm.script(FakeReply(tool_calls=calls), FakeReply(text="Cold, at noon."), model="m-oai")
    with client.responses.stream(model="oai", input="weather and time?", tools=CLOCK_TOO) as s:
        first = s.get_final_response()
    assert [(i.type, getattr(i, "name", "")) for i in first.output] == [
        ("function_call", "get_weather"), ("mcp_call", "clock"), ("function_call", "get_time"),
    ]  # fmt: skip
    assert first.output[1].status == "completed" and first.usage is None
    run_id = run_of(first.id)
    assert cluster.run(run_id)["status"] == "waiting"
    asked = {i.name: i.call_id for i in first.output if i.type == "function_call"}
    only_one = [{"type": "function_call_output", "call_id": asked["get_weather"], "output": "-3"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="oai", input=only_one, previous_response_id=first.id)
    assert "no function_call_output for call" in info.value.message
    both = [*only_one, {"type": "function_call_output", "call_id": asked["get_time"],
                        "output": [{"type": "input_text", "text": "noon"}]}]  # fmt: skip
    second = client.responses.create(model="oai", input=both, previous_response_id=first.id)
    assert second.id == f"resp_{run_id}_1" and second.output_text == "Cold, at noon."
    assert [i.type for i in second.output] == ["message"]
    items = client.responses.input_items.list(second.id, order="asc")
    assert [i.type for i in items.data] == ["function_call_output"] * 2
    sent = json.dumps(fake_llm.requests_for("m-oai")[-1]["messages"])
    assert "-3" in sent and "noon" in sent
    assert cluster.run(run_id)["status"] == "succeeded"


def test_cancelling_a_response_stopped_at_function_calls_ends_its_waiting_run(
    client: openai.OpenAI, cluster: Cluster, fake_llm: FakeLLM
) -> None:
    fake_llm.script(FakeReply(tool_calls=[("get_weather", {"city": "Rome"})]), model="m-oai")
    first = client.responses.create(model="oai", input="weather?", tools=WEATHER)
    run_id = run_of(first.id)
    assert cluster.run(run_id)["status"] == "waiting"
    assert client.responses.cancel(first.id).status == "completed"  # it had ended already
    wait_for(lambda: cluster.run(run_id)["status"] == "cancelled", 20)
    answer = [{"type": "function_call_output", "call_id": first.output[0].call_id,  # type: ignore[union-attr]
               "output": "warm"}]  # fmt: skip
    with pytest.raises(openai.ConflictError):
        client.responses.create(model="oai", input=answer, previous_response_id=first.id)


def test_a_function_tool_named_as_one_of_the_agents_own_is_refused(
    client: openai.OpenAI, nothing_stored: None
) -> None:
    clock = [{"type": "function", "name": "clock", "parameters": {"type": "object"}}]
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.responses.create(model="oai", input="hi", tools=clock)  # type: ignore[arg-type]
    assert "own tools" in info.value.message
    bad_schema = [{"type": "function", "name": "f", "parameters": {"type": "string"}}]
    with pytest.raises(openai.BadRequestError) as info2:
        client.responses.create(model="oai", input="hi", tools=bad_schema)  # type: ignore[arg-type]
    assert "tools[0]" in info2.value.message


def test_a_stream_cut_by_a_gateway_stop_resumes_on_the_next_gateway_with_nothing_lost(
    private_cluster: Cluster,
) -> None:
    """The stream ends with an ``error`` event numbered as the last event sent; resumed
    ``starting_after`` that number on a new gateway process, it goes on with no gap."""
    c = private_cluster
    port = int(c.start_gateway().rsplit(":", 1)[1])
    c.wait_ready()
    got: list[Any] = []
    with openai.OpenAI(base_url=c.gateway_url + "/v1", api_key="unused", max_retries=0) as oai:
        with oai.responses.create(model="echo", input="hi", stream=True) as stream:
            for event in stream:  # no worker yet: the run stays queued
                got.append(event)
                if event.type == "response.created":
                    c.stop(["gateway"])
        error = got[-1]
        assert error.type == "error" and error.code == "unavailable"
        assert error.sequence_number == 0 and "starting_after=0" in error.message
        c.start_gateway(port)
        c.start_worker("worker1")
        c.wait_ready()
        with oai.responses.retrieve(got[0].response.id, stream=True, starting_after=0) as stream:
            rest = list(stream)
    assert [e.sequence_number for e in rest] == list(range(1, len(rest) + 1))
    assert rest[-1].type == "response.completed" and rest[-1].response.output_text == REPLY


# --- the translation alone: a response is a function of its run's events ----------------------


def translated(events: list[dict[str, Any]], **view: Any) -> tuple[list[dict[str, Any]], Any]:
    """The stream events of a response fed ``events`` (entry ids 1000-0, 1000-1, …), and it."""
    from gateway.response_operations import ResponseView
    from gateway.responses.translate import Translator

    t = Translator(ResponseView(id="resp_" + "a" * 32, run_id="a" * 32, agent="echo",
                                sender="s", created_at=1, **view))  # fmt: skip
    out = t.opening()
    for i, event in enumerate(events):
        out += t.feed(f"1000-{i}", event)
    return out, t


START = {"type": "start", "run_id": "a" * 32, "agent": "echo", "sender": "s"}
END = {"type": "end", "status": "succeeded", "usage": {"input_tokens": 3, "output_tokens": 2},
       "model": "m"}  # fmt: skip


def chunks(*words: str) -> list[dict[str, Any]]:
    return [{"type": "chunk", "content": w} for w in words]


def test_a_restarted_step_that_repeats_its_text_shows_it_once() -> None:
    events = [
        START, {"type": "text_start"}, *chunks("Hel", "lo"),
        {"type": "restart", "step": 0, "reason": "worker lost"},
        {"type": "text_start"}, *chunks("Hel", "lo", " world"), {"type": "text_end"}, END,
    ]  # fmt: skip
    out, t = translated(events)
    deltas = [e["delta"] for e in out if e["type"] == "response.output_text.delta"]
    assert deltas == ["Hel", "lo", " world"]
    assert t.snapshot()["output"][0]["content"][0]["text"] == "Hello world"
    assert t.status == "completed" and [e["sequence_number"] for e in out] == list(range(len(out)))
    assert translated(events)[0] == out  # the same events, the same stream


def test_a_restarted_step_whose_text_differs_fails_the_response() -> None:
    events = [
        START, *chunks("Hel", "lo"), {"type": "restart", "step": 0, "reason": "worker lost"},
        *chunks("Bye"), {"type": "text_end"}, END,
    ]  # fmt: skip
    out, t = translated(events)
    assert out[-1]["type"] == "response.failed" and t.status == "failed"
    assert t.error is not None and t.error.code == "reply_restarted"
    assert t.stop == "1000-4"  # the event it ended at, not the run's end


def test_a_restarted_step_whose_thinking_differs_leaves_that_thinking_out() -> None:
    restart = {"type": "restart", "step": 0, "reason": "worker lost"}
    events = [
        START, {"type": "thinking", "content": "plan A"}, restart,
        {"type": "thinking", "content": "plan B"}, {"type": "text_start"}, *chunks("Done."),
        {"type": "text_end"}, END,
    ]  # fmt: skip
    _, t = translated(events)
    assert t.status == "completed"
    reasoning, message = t.snapshot()["output"]
    assert reasoning["content"][0]["text"] == "plan A"
    assert message["content"][0]["text"] == "Done."


def test_a_step_stops_at_its_client_calls_once_each_is_asked_and_its_own_calls_are_done() -> None:
    calls = [{"id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}},
             {"id": "c2", "name": "clock", "arguments": {}}]  # fmt: skip
    events = [
        START, {"type": "tool_start", "calls": calls},
        {"type": "ask_user", "kind": "client_tool", "call_id": "c1", "questions": [],
         "tool": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"type": "tool_result", "call_id": "c2", "name": "clock", "output": "noon",
         "is_error": False, "duration_ms": 1},
        {"type": "tools_complete"}, END,
    ]  # fmt: skip
    out, t = translated(events, tools=[{"type": "function", "name": "get_weather"}])
    assert t.status == "completed" and t.pending == ["c1"] and t.stop == "1000-3"
    assert t.usage is None  # the run has not ended
    fc, mcp = t.snapshot()["output"]
    assert (fc["type"], fc["call_id"], json.loads(fc["arguments"])) == (
        "function_call", "c1", {"city": "Paris"},
    )  # fmt: skip
    assert (mcp["type"], mcp["status"], mcp["output"]) == ("mcp_call", "completed", "noon")
    assert out[-1]["type"] == "response.completed"
    later, t2 = translated(events[4:], tools=[{"type": "function", "name": "get_weather"}], n=1)
    assert t2.snapshot()["output"] == [] and t2.status == "completed"  # the answered call: no item
    assert [e["type"] for e in later][:2] == ["response.created", "response.in_progress"]


def test_a_stream_again_answers_errors_in_openais_shape_on_either_path(
    client: openai.OpenAI, cluster: Cluster
) -> None:
    # ?stream=true is answered by the plain ASGI route (gateway/sse_route.py); a request it
    # does not take (a starting_after FastAPI must validate) goes on to FastAPI. Both answer
    # errors as OpenAI does.
    done = client.responses.create(model="echo", input="hi")
    with cluster.http() as h:
        gone = h.get("/v1/responses/resp_nothere", params={"stream": "true"})
        assert gone.status_code == 404 and gone.json()["error"]["type"]
        for bad in ("-1", "x"):
            refused = h.get(
                f"/v1/responses/{done.id}", params={"stream": "1", "starting_after": bad}
            )
            assert refused.status_code == 422 and "error" in refused.json(), refused.text
        again = h.get(f"/v1/responses/{done.id}", params={"stream": "yes", "starting_after": "0"})
        assert again.status_code == 200 and "event: response.completed" in again.text
        assert "event: response.created" not in again.text  # sequence number 0 was skipped
        plain = h.get(f"/v1/responses/{done.id}")
        assert plain.json()["status"] == "completed"
