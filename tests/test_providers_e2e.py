"""Providers through the whole stack: gateway, broker, worker processes, fake LLM over HTTP."""

from __future__ import annotations

from typing import Any

from tests.cluster import Cluster
from tests.fakellm import FakeError, FakeLLM, FakeReply


def end_of(cluster: Cluster, run_id: str) -> tuple[list[str], dict[str, Any]]:
    events = cluster.events(run_id)
    return [str(e["type"]) for _, e in events], events[-1][1]


def test_openai_streams_text_and_drives_a_tool_call_round_trip(
    cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("clock", {})]),
        FakeReply(text="It is exactly now."),
        model="m-oai",
    )
    run_id = cluster.send("oai", "what time is it?", sender)
    kinds, end = end_of(cluster, run_id)
    assert end["status"] == "succeeded", end
    assert kinds[:4] == ["start", "tool_start", "tool_result", "tools_complete"]
    assert kinds.count("chunk") > 1, "the reply streams in several chunks"
    assert end["usage"] == {"input_tokens": 22, "output_tokens": 14}
    history = cluster.history("oai", sender)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[-1]["content"] == "It is exactly now."
    second = fake_llm.requests_for("m-oai")[-1]["messages"]
    assert second[-1]["role"] == "tool" and '"utc"' in second[-1]["content"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "clock"


def test_anthropic_streams_text_and_drives_a_tool_call_round_trip(
    cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("clock", {})]),
        FakeReply(text="Time, as requested."),
        model="m-anth",
    )
    run_id = cluster.send("anth", "what time is it?", sender)
    kinds, end = end_of(cluster, run_id)
    assert end["status"] == "succeeded", end
    assert kinds[:4] == ["start", "tool_start", "tool_result", "tools_complete"]
    assert cluster.history("anth", sender)[-1]["content"] == "Time, as requested."
    second = fake_llm.requests_for("m-anth")[-1]["messages"]
    assert second[-1]["content"][0]["type"] == "tool_result"


def test_a_provider_http_error_fails_the_run_with_its_message(
    cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    fake_llm.script(FakeError(status=500, message="the model is on fire"), model="m-oaierr")
    run_id = cluster.send("oaierr", "hi", sender)
    _, end = end_of(cluster, run_id)
    assert end["status"] == "failed"
    assert "HTTP 500" in end["error"] and "the model is on fire" in end["error"]
    info = cluster.wait_run(run_id)
    assert info["status"] == "failed" and "the model is on fire" in info["error"]
