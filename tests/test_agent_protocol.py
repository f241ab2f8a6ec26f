"""The Agent Protocol, driven by the official ``langgraph-sdk`` clients against real processes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError

from tests.cluster import Cluster, wait_for
from tests.fakellm import FakeLLM, FakeReply

AGENTS = {"apask": 'model = "fake/m-apask"\ntools = ["ask_user"]\n'}
QUESTION = {"questions": [{"question": "Which colour?", "options": [{"label": "blue"}]}]}


@pytest.fixture(scope="module")
def ap(cluster: Cluster) -> Cluster:
    """The session cluster (gateway, two workers, beat), which carries ``AGENTS``."""
    return cluster


def client(c: Cluster) -> Any:
    return get_sync_client(url=c.gateway_url, api_key=None)


def ai_text(values: dict[str, Any]) -> str:
    return str(values["messages"][-1]["content"])


def test_assistants_and_info(ap: Cluster) -> None:
    lg = client(ap)
    found = lg.assistants.search(graph_id="echo")
    assert [a["assistant_id"] for a in found] == ["echo"]
    assert found[0]["metadata"]["description"] == "Replies at once"
    assert lg.assistants.get("tooly")["graph_id"] == "tooly"
    assert "messages" in lg.assistants.get_schemas("echo")["input_schema"]["properties"]
    assert {n["id"] for n in lg.assistants.get_graph("echo")["nodes"]} >= {"agent", "tools"}
    with httpx.Client(base_url=ap.gateway_url) as h:
        assert h.get("/ok").json() == {"ok": True}
        assert h.get("/info").status_code == 200


def test_a_thread_is_created_once_with_its_id_and_shown_as_read_after(ap: Cluster) -> None:
    """``threads.create``: made on the loop without an assistant, on a thread with one
    (``graph_id``); either way shown as ``threads.get`` reads it, and an id taken is a 409,
    or the thread there with ``if_exists="do_nothing"``."""
    lg = client(ap)
    tid = str(uuid.uuid4())
    made = lg.threads.create(thread_id=tid, metadata={"team": "red"})
    assert made == lg.threads.get(tid)
    assert made["status"] == "idle" and made["values"] == {"messages": []}
    assert made["metadata"] == {"team": "red"} and made["interrupts"] == {}
    with pytest.raises(ConflictError):
        lg.threads.create(thread_id=tid)
    assert lg.threads.create(thread_id=tid, if_exists="do_nothing") == made
    bound = lg.threads.create(metadata={"graph_id": "echo"})
    assert bound == lg.threads.get(bound["thread_id"])
    assert bound["metadata"] == {"graph_id": "echo"}
    with pytest.raises(ConflictError):
        lg.threads.create(thread_id=bound["thread_id"], metadata={"graph_id": "echo"})


def test_threads_stream_values_and_message_deltas(ap: Cluster) -> None:
    lg = client(ap)
    thread = lg.threads.create(metadata={"team": "blue"})
    tid = thread["thread_id"]
    assert thread["status"] == "idle"
    parts = list(
        lg.runs.stream(
            tid,
            "tooly",
            input={"messages": [{"role": "user", "content": "what time is it?"}]},
            stream_mode=["values", "messages-tuple"],
        )
    )
    assert parts[0].event == "metadata" and parts[0].data["run_id"]
    values = [p.data for p in parts if p.event == "values"]
    final = values[-1]["messages"][-1]
    assert final["type"] == "ai" and final["content"] == "It is late."
    deltas = [p.data[0] for p in parts if p.event == "messages" and p.data[0]["id"] == final["id"]]
    assert "".join(d["content"] for d in deltas) == final["content"]
    assert any(m["type"] == "tool" for m in values[-1]["messages"])
    found = lg.threads.search(metadata={"team": "blue", "graph_id": "tooly"}, status="idle")
    assert [t["thread_id"] for t in found] == [tid]
    state = lg.threads.get_state(tid)
    assert state["values"]["messages"][0] == {**values[-1]["messages"][0]}
    assert state["values"]["messages"][-1]["content"] == "It is late."
    history = lg.threads.get_history(tid)
    assert history[0]["values"] == state["values"]
    [run] = lg.runs.list(tid)
    assert run["status"] == "success" and run["assistant_id"] == "tooly"


def test_wait_and_stateless(ap: Cluster) -> None:
    lg = client(ap)
    tid = lg.threads.create()["thread_id"]
    out = lg.runs.wait(tid, "echo", input={"messages": [{"type": "human", "content": "hi"}]})
    assert ai_text(out) == "Hello from the mock model."
    out = lg.runs.wait(None, "echo", input={"messages": [{"role": "user", "content": "hey"}]})
    assert [m["type"] for m in out["messages"]] == ["human", "ai"]


def test_background_run_joined_then_rejoined_without_repeats(ap: Cluster) -> None:
    lg = client(ap)
    tid = lg.threads.create()["thread_id"]
    run = lg.runs.create(
        tid, "paced", input={"messages": [{"role": "user", "content": "go"}]},
        stream_mode=["values", "messages-tuple"],
    )  # fmt: skip
    # The answer is the run as stored when it is read back: on a busy machine the
    # paced run (five chunks 20 ms apart) may already be over, as it was once in CI.
    assert run["status"] in ("pending", "running", "success")
    first = []
    for part in lg.runs.join_stream(tid, run["run_id"], last_event_id="-1"):
        first.append(part)
        if part.event == "messages":
            break  # leave mid-run
    last_id = first[-1].id
    assert last_id, first
    rest = list(lg.runs.join_stream(tid, run["run_id"], last_event_id=last_id))
    ids = [p.id for p in first + rest if p.id]
    assert len(ids) == len(set(ids))
    assert rest and rest[-1].event == "values" and ai_text(rest[-1].data) == "a b c d e"
    assert ai_text(lg.runs.join(tid, run["run_id"])) == "a b c d e"


def test_a_join_after_the_runs_end_answers_as_the_join_that_waited_for_it(ap: Cluster) -> None:
    """A join of a run whose record says it has ended reads its stream to the ``end`` without
    subscribing to it (``Hub.run_items``, ``ended``): the answer is the one a join that waited
    for the end gave, a failed run's ``__error__`` included."""
    lg = client(ap)
    say = {"messages": [{"role": "user", "content": "go"}]}
    for agent, status in (("paced", "success"), ("broken", "error")):
        tid = lg.threads.create()["thread_id"]
        run = lg.runs.create(tid, agent, input=say)
        waited = lg.runs.join(tid, run["run_id"])  # paced: five chunks 20 ms apart, so running
        assert lg.runs.get(tid, run["run_id"])["status"] == status
        assert lg.runs.join(tid, run["run_id"]) == waited
        assert waited["messages"] == lg.threads.get_state(tid)["values"]["messages"]
        if agent == "paced":
            assert ai_text(waited) == "a b c d e" and "__error__" not in waited
        else:
            assert waited["__error__"] == {
                "error": "run_failed",
                "message": "mock: the mock model was told to fail",
            }


def test_cancel_interrupts_within_two_seconds_and_reject_is_409(ap: Cluster) -> None:
    lg = client(ap)
    tid = lg.threads.create()["thread_id"]
    say = {"messages": [{"role": "user", "content": "talk"}]}
    run = lg.runs.create(tid, "slow", input=say)
    wait_for(lambda: lg.threads.get(tid)["status"] == "busy", 20, what="busy")
    with pytest.raises(ConflictError):
        lg.runs.create(tid, "slow", input=say, multitask_strategy="reject")
    started = time.monotonic()
    lg.runs.cancel(tid, run["run_id"], wait=True)
    assert time.monotonic() - started < 2
    assert lg.runs.get(tid, run["run_id"])["status"] == "interrupted"
    assert lg.threads.get(tid)["status"] == "idle"


def test_rollback_removes_the_cancelled_runs_messages(ap: Cluster) -> None:
    lg = client(ap)
    tid = lg.threads.create()["thread_id"]
    lg.runs.wait(tid, "slow", input={"messages": [{"role": "user", "content": "keep me"}]})
    reply = lg.threads.get_state(tid)["values"]["messages"][-1]["content"]
    run = lg.runs.create(tid, "slow", input={"messages": [{"role": "user", "content": "drop"}]})
    wait_for(lambda: lg.threads.get(tid)["status"] == "busy", 20, what="busy")
    lg.runs.cancel(tid, run["run_id"], wait=True, action="rollback")
    contents = [m["content"] for m in lg.threads.get_state(tid)["values"]["messages"]]
    assert contents == ["keep me", reply]
    # The rollback strategy: a busy thread's run is cancelled and its messages go.
    lg.runs.create(tid, "slow", input={"messages": [{"role": "user", "content": "drop 2"}]})
    wait_for(lambda: lg.threads.get(tid)["status"] == "busy", 20, what="busy")
    out = lg.runs.wait(
        tid, "slow", input={"messages": [{"role": "user", "content": "x"}]},
        multitask_strategy="rollback",
    )  # fmt: skip
    contents = [m["content"] for m in out["messages"]]
    assert "drop 2" not in contents and contents[-2] == "x"


def test_rollback_also_drops_the_runs_queued_behind_the_active_one(ap: Cluster) -> None:
    lg = client(ap)
    tid = lg.threads.create()["thread_id"]
    say = {"messages": [{"role": "user", "content": "running"}]}
    running = lg.runs.create(tid, "slow", input=say)
    wait_for(lambda: lg.runs.get(tid, running["run_id"])["status"] == "running", 20,
             what="the first run to start")  # fmt: skip
    say = {"messages": [{"role": "user", "content": "queued"}]}
    queued = lg.runs.create(tid, "slow", input=say, multitask_strategy="enqueue")
    say = {"messages": [{"role": "user", "content": "x"}]}
    out = lg.runs.wait(tid, "slow", input=say, multitask_strategy="rollback")
    assert [m["content"] for m in out["messages"]][:-1] == ["x"]
    for run in (running, queued):
        assert lg.runs.get(tid, run["run_id"])["status"] == "interrupted"


def test_a_rejoined_stream_answers_its_errors_in_the_agent_protocols_shape(ap: Cluster) -> None:
    # GET .../runs/{run_id}/stream is answered by the plain ASGI route (gateway/sse_route.py),
    # not FastAPI: its errors must still be LangGraph's {"detail"}, and it is counted under
    # its route.
    lg = client(ap)
    tid = lg.threads.create()["thread_id"]
    run = lg.runs.create(tid, "echo", input={"messages": [{"role": "user", "content": "hi"}]})
    lg.runs.join(tid, run["run_id"])
    stream = f"/threads/{tid}/runs/{run['run_id']}/stream"
    with httpx.Client(base_url=ap.gateway_url) as h:
        gone = h.get(f"/threads/{uuid.uuid4()}/runs/{run['run_id']}/stream")
        assert gone.status_code == 404 and set(gone.json()) == {"detail"}
        bad = h.get(stream, headers={"Last-Event-ID": "not-an-id"})
        assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]
        ok = h.get(stream, params={"stream_mode": "values"}, headers={"Last-Event-ID": "-1"})
        assert ok.status_code == 200 and "event: values" in ok.text
        metrics = h.get("/metrics").text
    route = 'route="/threads/{thread_id}/runs/{run_id}/stream"'
    assert any(route in line and 'status="404"' in line for line in metrics.splitlines())


PICK = {"messages": [{"role": "user", "content": "pick a colour"}]}


def asking_thread(ap: Cluster, fake_llm: FakeLLM, then: str) -> tuple[Any, str]:
    """A client and a new thread whose ``apask`` run asks QUESTION, then says ``then``."""
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", QUESTION)]), FakeReply(text=then), model="m-apask"
    )
    lg = client(ap)
    return lg, lg.threads.create()["thread_id"]


def test_ask_user_interrupt_resumed_with_command(ap: Cluster, fake_llm: FakeLLM) -> None:
    lg, tid = asking_thread(ap, fake_llm, "blue it is")
    parts = list(lg.runs.stream(tid, "apask", input=PICK, stream_mode="values"))
    interrupt = parts[-1].data["__interrupt__"][0]
    assert interrupt["value"]["questions"][0]["question"] == "Which colour?"
    thread = lg.threads.get(tid)
    assert thread["status"] == "interrupted" and interrupt["id"] in thread["interrupts"]
    assert lg.threads.get_state(tid)["interrupts"][0]["id"] == interrupt["id"]
    parts = list(lg.runs.stream(tid, "apask", command={"resume": "blue"}, stream_mode="values"))
    assert ai_text(parts[-1].data) == "blue it is"
    assert lg.threads.get(tid)["status"] == "idle"


def test_ask_user_resumed_by_a_background_create_answers_the_run_that_goes_on(
    ap: Cluster, fake_llm: FakeLLM
) -> None:
    """``runs.create(command={resume})`` answers the interrupted run, as it is now."""
    lg, tid = asking_thread(ap, fake_llm, "green it is")
    asked = lg.runs.create(tid, "apask", input=PICK)
    wait_for(lambda: lg.threads.get(tid)["status"] == "interrupted", 30, what="the question")
    resumed = lg.runs.create(tid, "apask", command={"resume": "green"})
    assert resumed["run_id"] == asked["run_id"] and resumed["thread_id"] == tid
    wait_for(lambda: lg.threads.get(tid)["status"] == "idle", 30, what="the rest of the run")
    assert ai_text(lg.threads.get_state(tid)["values"]) == "green it is"


def test_cron_and_store(ap: Cluster) -> None:
    lg = client(ap)
    tid = lg.threads.create()["thread_id"]
    cron = lg.crons.create_for_thread(
        tid, "echo", schedule="@every 1s", input={"messages": [{"role": "user", "content": "tick"}]}
    )
    assert [c["cron_id"] for c in lg.crons.search(thread_id=tid)] == [cron["cron_id"]]
    wait_for(lambda: lg.runs.list(tid) or lg.threads.get_state(tid)["values"]["messages"], 30,
             what="the cron to fire")  # fmt: skip
    lg.crons.delete(cron["cron_id"])
    assert lg.crons.search(thread_id=tid) == []
    ns = ["notes", uuid.uuid4().hex]
    lg.store.put_item(ns, "a", {"colour": "blue", "text": "the sky"})
    lg.store.put_item(ns, "b", {"colour": "red", "text": "a rose"})
    assert lg.store.get_item(ns, "a")["value"]["colour"] == "blue"
    found = lg.store.search_items(ns[:1], filter={"colour": "red"})["items"]
    assert [i["key"] for i in found] == ["b"]
    assert ns in lg.store.list_namespaces(prefix=["notes"])["namespaces"]
    lg.store.delete_item(ns, "a")
    assert [i["key"] for i in lg.store.search_items(ns)["items"]] == ["b"]


def test_async_client(ap: Cluster) -> None:
    async def go() -> None:
        lg = get_client(url=ap.gateway_url, api_key=None)
        thread = await lg.threads.create()
        say = {"messages": [{"role": "user", "content": "hi"}]}
        parts = [
            p
            async for p in lg.runs.stream(
                thread["thread_id"], "echo", input=say, stream_mode="messages-tuple"
            )
        ]
        text = "".join(p.data[0]["content"] for p in parts if p.event == "messages")
        assert text == "Hello from the mock model."
        assert [a["graph_id"] for a in await lg.assistants.search(graph_id="echo")] == ["echo"]

    asyncio.run(go())


def test_docs_reference_no_external_host(ap: Cluster) -> None:
    with httpx.Client(base_url=ap.gateway_url) as h:
        page = h.get("/docs")
        assert page.status_code == 200
        assert "http://" not in page.text.replace(ap.gateway_url, "")
        assert "https://" not in page.text
        assert h.get("/docs/static/swagger-ui-bundle.js").status_code == 200
        assert h.get("/docs/static/swagger-ui.css").status_code == 200


def _create(h: httpx.Client, tid: str, body: dict[str, Any], chunked: bool) -> httpx.Response:
    """``POST /threads/{tid}/runs``: by the plain route (a declared length), or by FastAPI (a
    chunked body, which ``gateway.sse_route`` leaves to the app behind)."""
    data = json.dumps(body).encode()
    content: Any = iter([data]) if chunked else data
    headers = {"content-type": "application/json"}
    return h.post(f"/threads/{tid}/runs", content=content, headers=headers)


SAME_WAYS = {"run_id", "created_at", "updated_at", "status"}
"""The fields of a run that differ between two creates of the same body: its status too, which
is ``pending`` or ``running`` by whether a worker took the run before the answer's read."""


def test_a_background_create_and_its_join_answer_below_fastapi_as_fastapi_does(
    ap: Cluster,
) -> None:
    """``runs.create`` and ``runs.join`` are answered by plain ASGI routes
    (``PLAIN_CREATE``, ``PLAIN_JOIN``): the same answers as the FastAPI routes, errors in the
    protocol's shape, counted under their routes."""
    lg = client(ap)
    tid = lg.threads.create()["thread_id"]
    say = {"assistant_id": "echo", "input": {"messages": [{"role": "user", "content": "hi"}]}}
    with httpx.Client(base_url=ap.gateway_url, timeout=30) as h:
        answers = {}
        for chunked in (False, True):
            plain_or_app = _create(h, tid, {**say, "metadata": {"n": 1}}, chunked)
            assert plain_or_app.status_code == 200, plain_or_app.text
            answers[chunked] = plain_or_app.json()
            lg.runs.join(tid, answers[chunked]["run_id"])
        plain, app = answers[False], answers[True]
        assert {k: v for k, v in plain.items() if k not in SAME_WAYS} == {
            k: v for k, v in app.items() if k not in SAME_WAYS
        }
        assert plain["metadata"] == {"n": 1} and plain["thread_id"] == tid
        assert {plain["status"], app["status"]} <= {"pending", "running", "success"}
        # Errors: an unknown thread, an unknown assistant, a body FastAPI refuses.
        for chunked in (False, True):
            gone = _create(h, str(uuid.uuid4()), say, chunked)
            assert gone.status_code == 404 and set(gone.json()) == {"detail"}, gone.text
            nobody = _create(h, tid, {**say, "assistant_id": "nobody"}, chunked)
            assert nobody.status_code == 404 and set(nobody.json()) == {"detail"}, nobody.text
            bad = _create(h, tid, {**say, "multitask_strategy": "sometimes"}, chunked)
            assert bad.status_code == 422, bad.text
        # The join: the thread's values at the run's end, as its state shows them.
        run = lg.runs.create(
            tid, "echo", input={"messages": [{"role": "user", "content": "again"}]}
        )
        joined = h.get(f"/threads/{tid}/runs/{run['run_id']}/join")
        assert joined.status_code == 200
        assert joined.json() == lg.threads.get_state(tid)["values"]
        assert [m["content"] for m in joined.json()["messages"]][-2] == "again"
        unknown = h.get(f"/threads/{tid}/runs/{uuid.uuid4()}/join")
        assert unknown.status_code == 404 and set(unknown.json()) == {"detail"}
        metrics = h.get("/metrics").text
    for route, status in (
        ("/threads/{thread_id}/runs", "200"),
        ("/threads/{thread_id}/runs/{run_id}/join", "404"),
    ):
        assert any(
            f'route="{route}"' in line and f'status="{status}"' in line
            for line in metrics.splitlines()
        ), route
