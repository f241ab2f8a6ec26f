"""A 2026-07-28 ``tools/call`` with a progress token, answered below the ``mcp`` package
(gateway/mcp_plain.py), driven over HTTP as the ``mcp`` client sends it, against the session
cluster: what it answers is what the package answers, and what it does not take the package
answers. (tests/test_mcp_face.py drives the face with the official client, on both paths.)
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster
from tests.fakellm import FakeLLM, FakeReply
from tests.test_mcp_face import MODEL, QUESTION, fresh_fake_llm  # noqa: F401  (autouse)
from walrus_tasks.client import parse_sse

MODERN = "2026-07-28"


def modern_call(message: str, progress: str | None, elicit: bool) -> tuple[dict[str, str], bytes]:
    """A 2026-07-28 ``tools/call`` of ``mcpchat`` as the ``mcp`` client sends it: headers, body."""
    capabilities: dict[str, Any] = {"elicitation": {"form": {}}} if elicit else {}
    meta: dict[str, Any] = {"io.modelcontextprotocol/protocolVersion": MODERN,
                            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
                            "io.modelcontextprotocol/clientCapabilities": capabilities}  # fmt: skip
    if progress is not None:
        meta["progressToken"] = progress
    params = {"name": "mcpchat", "arguments": {"message": message}, "_meta": meta}
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    headers = {"Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
               "MCP-Method": "tools/call", "MCP-Name": "mcpchat",
               "Accept": "application/json, text/event-stream"}  # fmt: skip
    return headers, json.dumps(body).encode()


def run_of(result: dict[str, Any]) -> str:
    """The run a ``tools/call`` result names (an input request names it in its state)."""
    if result.get("resultType") == "input_required":
        return str(json.loads(result["requestState"])["run"])
    return str(result["structuredContent"]["run_id"])


def same_shape(result: dict[str, Any]) -> str:
    """``result`` with what differs between two calls (the run, its conversation, the entry the
    question was asked at, the question's call id) replaced by placeholders."""
    conversation = (result.get("structuredContent") or {}).get("conversation")
    if result.get("resultType") == "input_required":
        state = json.loads(result["requestState"])
        conversation = state["conversation"]
        result = {**result, "requestState": json.dumps({**state, "asked": "ENTRY"})}
    run_id = run_of(result)
    text = json.dumps(result, sort_keys=True)
    text = re.sub(r"call_\d+_\d+", "CALL", text)  # the fake model's tool call ids
    return text.replace(str(run_id), "RUN").replace(str(conversation), "CONVERSATION")


@pytest.mark.parametrize("case", ["reply", "question, elicited", "question, waiting"])
def test_a_streamed_call_is_answered_below_the_package_as_the_package_answers_it(
    cluster: Cluster, fake_llm: FakeLLM, case: str
) -> None:
    """With a progress token the call is the gateway's own plain stream (EventStream's headers,
    not the package's); its notifications are the package's, and its result is what the
    package answers the same call without a token (served by the package: JSON, at once)."""
    asks = case.startswith("question")
    reply = FakeReply(tool_calls=[("ask_user", QUESTION)]) if asks else FakeReply(text="a b c")
    fake_llm.script(reply, reply, model=MODEL)
    results = []
    with httpx.Client(base_url=cluster.gateway_url, timeout=30) as h:
        for progress in ("tok-1", None):
            headers, body = modern_call("hi", progress, elicit=case.endswith("elicited"))
            answered = h.post("/mcp", content=body, headers=headers)
            assert answered.status_code == 200, answered.text
            kind = answered.headers["content-type"]
            if progress is None:  # the package's: no notification, so JSON
                assert kind.startswith("application/json")
                results.append(answered.json()["result"])
                continue
            assert kind.startswith("text/event-stream")
            assert answered.headers["cache-control"] == "no-cache"  # the package: no-transform too
            *notes, last = [e.data for e in parse_sse(iter(answered.text.splitlines()))]
            assert {n["method"] for n in notes} == {"notifications/progress"}
            assert [n["params"]["progress"] for n in notes] == list(range(1, len(notes) + 1))
            assert {n["params"]["progressToken"] for n in notes} == {"tok-1"}
            said = [n["params"]["message"] for n in notes]
            assert said[0].startswith("run ") and "run started" in said
            assert ("waiting for an answer" in said) if asks else ("".join(said[2:]) == "a b c")
            assert (last["jsonrpc"], last["id"]) == ("2.0", 7)
            results.append(last["result"])
    plain, package = results
    if asks:  # the runs wait for an answer: cancelled, so no later test finds them active
        with httpx.Client(base_url=cluster.gateway_url, timeout=30) as h:
            for result in results:
                run_id = run_of(result)
                assert h.post(f"/v1/runs/{run_id}/cancel").json() == {"run_id": run_id}
                assert cluster.wait_run(run_id)["status"] == "cancelled"
    assert plain["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "walrus"
    expected = {"reply": "complete", "question, elicited": "input_required",
                "question, waiting": "complete"}[case]  # fmt: skip
    assert plain["resultType"] == expected
    assert same_shape(plain) == same_shape(package)


def test_a_streamed_call_the_route_does_not_take_gets_the_package_s_answer(
    cluster: Cluster,
) -> None:
    """An unknown tool, a wrong routing header, an ``Accept`` without SSE: each streamed call is
    left to the package, which refuses it as it refuses one without a progress token."""
    headers, body = modern_call("hi", "tok", elicit=False)
    unknown = body.replace(b'"name": "mcpchat"', b'"name": "nosuchagent"')
    with httpx.Client(base_url=cluster.gateway_url, timeout=30) as h:
        refused = h.post("/mcp", content=unknown, headers={**headers, "MCP-Name": "nosuchagent"})
        assert refused.status_code == 400, refused.text  # -32602, mapped by the package
        assert "Unknown tool: 'nosuchagent'" in refused.json()["error"]["message"]
        mismatch = h.post("/mcp", content=body, headers={**headers, "MCP-Name": "echo"})
        assert mismatch.status_code == 400 and "error" in mismatch.json()
        no_sse = h.post("/mcp", content=body, headers={**headers, "Accept": "application/json"})
        assert no_sse.status_code == 406
