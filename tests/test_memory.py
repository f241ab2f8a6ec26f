"""Agent memory: BM25 recall over a real Redis, the three tools, and a round trip through real
workers (one run remembers, a later run in another conversation recalls)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.cluster import Cluster
from tests.conftest import tool_context
from tests.fakellm import FakeReply
from walrus_tasks import keys, memory
from walrus_tasks.config import AgentConfig
from walrus_tasks.errors import InvalidInput
from worker.tools import ToolContext, call_tool

NOTES = {
    "timezone": ("The user lives in Paris; use Europe/Paris for every time.", ["tz"]),
    "coffee": ("The user drinks coffee black, no sugar.", []),
    "deploy": ("Deploy with make release after the tests pass; the user reviews in Paris.", []),
    "pets": ("A cat named Ada and a dog named Turing.", ["animals"]),
}


@pytest.fixture
def noted(r: redis.Redis) -> redis.Redis:
    for name, (content, aliases) in NOTES.items():
        memory.remember(r, "keeper", name, content, aliases)
    return r


def names(hits: list[memory.MemoryHit]) -> list[str]:
    return [h.name for h in hits]


# --- the store ---------------------------------------------------------------------------------


def test_the_most_relevant_entry_ranks_first(noted: redis.Redis) -> None:
    hits = memory.recall(noted, "keeper", "What timezone does the user use?", 5)
    assert hits[0].name == "timezone"
    assert all(h.score > 0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # "Paris" is in two notes; the shorter, denser one wins.
    assert names(memory.recall(noted, "keeper", "paris", 5)) == ["timezone", "deploy"]


def test_entries_that_share_no_word_with_the_query_are_not_hits(noted: redis.Redis) -> None:
    assert memory.recall(noted, "keeper", "quantum chromodynamics", 5) == []
    assert memory.recall(noted, "keeper", "  ?! ", 5) == []
    assert memory.recall(noted, "nobody", "paris", 5) == []  # another agent's memory is empty


def test_aliases_are_matched(noted: redis.Redis) -> None:
    assert names(memory.recall(noted, "keeper", "tz", 5)) == ["timezone"]
    assert names(memory.recall(noted, "keeper", "ANIMALS!", 5)) == ["pets"]


def test_a_name_match_outweighs_a_passing_mention(r: redis.Redis) -> None:
    memory.remember(r, "keeper", "budget", "Spend at most 100 EUR a month.")
    memory.remember(r, "keeper", "shopping", "Groceries on Saturday, mind the budget.")
    assert names(memory.recall(r, "keeper", "budget", 5)) == ["budget", "shopping"]


def test_limit_caps_the_hits(noted: redis.Redis) -> None:
    query = "user paris cat coffee"
    assert len(memory.recall(noted, "keeper", query, 10)) == 4
    assert len(memory.recall(noted, "keeper", query, 2)) == 2
    assert memory.recall(noted, "keeper", query, 0) == []


def test_remember_upserts_and_keeps_the_creation_time(noted: redis.Redis) -> None:
    [first] = [e for e in memory.entries(noted, "keeper") if e.name == "coffee"]
    time.sleep(0.01)  # updated_at must be able to move
    memory.remember(noted, "keeper", " coffee ", "Tea now, green.", ["drinks", "drinks", " tea "])
    found = {e.name: e for e in memory.entries(noted, "keeper")}
    assert len(found) == 4
    assert found["coffee"].content == "Tea now, green."
    assert found["coffee"].aliases == ["drinks", "tea"]
    assert found["coffee"].created_at == first.created_at < found["coffee"].updated_at
    assert names(memory.recall(noted, "keeper", "drinks", 5)) == ["coffee"]


def test_forget_removes_the_entry(noted: redis.Redis) -> None:
    assert memory.forget(noted, "keeper", "pets") is True
    assert memory.forget(noted, "keeper", "pets") is False
    assert memory.recall(noted, "keeper", "cat animals", 5) == []
    assert [e.name for e in memory.entries(noted, "keeper")] == ["coffee", "deploy", "timezone"]


@pytest.mark.parametrize(
    ("name", "content", "aliases", "problem"),
    [
        ("", "x", [], "name is empty"),
        ("n" * 129, "x", [], "longer than 128"),
        ("two\nlines", "x", [], "spans lines"),
        ("ok", "  ", [], "content is empty"),
        ("ok", "x" * (16 * 1024 + 1), [], "larger than 16 KiB"),
        ("ok", "x", [""], "alias is empty"),
        ("ok", "x", [f"a{i}" for i in range(17)], "more than 16 aliases"),
    ],
)
def test_bad_entries_are_refused(
    r: redis.Redis, name: str, content: str, aliases: list[str], problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem):
        memory.remember(r, "keeper", name, content, aliases)
    assert r.exists(keys.memory("keeper")) == 0


def test_memory_has_a_size_limit(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "MAX_ENTRIES", 2)
    memory.remember(r, "keeper", "a", "x")
    memory.remember(r, "keeper", "b", "x")
    with pytest.raises(InvalidInput, match="memory is full"):
        memory.remember(r, "keeper", "c", "x")
    memory.remember(r, "keeper", "a", "y")  # an update still fits


def test_recall_context_renders_the_hits() -> None:
    assert memory.recall_context([]) == ""
    text = memory.recall_context(
        [
            memory.MemoryHit(name="tz", content="Paris\nCET in winter", score=2.0),
            memory.MemoryHit(name="coffee", content="black", score=1.0),
        ]
    )
    assert text.startswith("Relevant memories")
    assert text.splitlines()[1:] == ["- tz: Paris", "  CET in winter", "- coffee: black"]


def test_dump_and_load_are_lossless(noted: redis.Redis) -> None:
    memory.remember(noted, "other", "x", "y")
    stored = {k: noted.hgetall(k) for k in noted.scan_iter(match=keys.memory("*"))}
    data = memory.dump(noted)
    assert list(data) == ["keeper", "other"]
    assert [e["name"] for e in data["keeper"]] == sorted(NOTES)
    noted.flushdb()
    noted.hset(keys.memory("stale"), "gone", "{}")  # replaced, not merged
    assert memory.load(noted, data) == 5
    assert {k: noted.hgetall(k) for k in noted.scan_iter(match=keys.memory("*"))} == stored
    with pytest.raises(InvalidInput, match="listed twice"):
        memory.load(noted, {"keeper": data["keeper"] * 2})


# --- the tools -----------------------------------------------------------------------------------


def ctx_for(r: redis.Redis, tmp_path: Path, tools: list[str]) -> ToolContext:
    return tool_context(r, AgentConfig(name="keeper", tools=tools), tmp_path)


def test_the_tools_act_on_the_calling_agents_memory(r: redis.Redis, tmp_path: Path) -> None:
    ctx = ctx_for(r, tmp_path, ["remember", "recall", "forget"])
    args = {"name": "tz", "content": "Europe/Paris", "aliases": ["timezone"]}
    assert call_tool("remember", args, ctx) == ("remembered tz", False)
    assert call_tool("remember", args, ctx) == ("remembered tz (updated)", False)
    out, error = call_tool("recall", {"query": "which timezone?"}, ctx)
    assert not error
    [hit] = json.loads(out)
    assert hit["name"] == "tz" and hit["content"] == "Europe/Paris" and hit["score"] > 0
    assert call_tool("recall", {"query": "nothing matches"}, ctx) == ("[]", False)
    assert call_tool("recall", {"query": "tz", "limit": 21}, ctx)[1] is True
    assert call_tool("remember", {"name": "x", "content": ""}, ctx) == ("content is empty", True)
    assert call_tool("forget", {"name": "tz"}, ctx) == ("forgot tz", False)
    assert call_tool("forget", {"name": "tz"}, ctx) == ("no memory named 'tz'", True)
    assert r.exists(keys.memory("keeper")) == 0


def test_an_agent_without_the_tools_cannot_call_them(r: redis.Redis, tmp_path: Path) -> None:
    ctx = ctx_for(r, tmp_path, ["recall"])
    out, error = call_tool("remember", {"name": "a", "content": "b"}, ctx)
    assert error and "not available" in out


# --- through real workers ------------------------------------------------------------------------

MODEL = "m-mem1"
KEEPER = f"""
    model = "fake/{MODEL}"
    tools = ["remember", "recall", "forget"]
"""

AGENTS = {"keeper": KEEPER}
"""Carried by the session ``home`` (``conftest.SHARED_AGENT_MODULES``): the test runs on the
session ``cluster``, no cluster of its own."""


def tool_outputs(c: Cluster, agent: str, sender: str) -> list[str]:
    return [m["content"] for m in c.history(agent, sender) if m["role"] == "tool"]


def test_a_note_remembered_in_one_run_is_recalled_in_another_conversation(
    cluster: Cluster, fake_llm: Any
) -> None:
    c = cluster
    note = {"name": "deadline", "content": "The report is due on Friday.", "aliases": ["due"]}
    fake_llm.script(
        FakeReply(tool_calls=[("remember", note)]), FakeReply(text="Noted."), model=MODEL
    )
    assert c.wait_run(c.send("keeper", "Remember: report due Friday", "alice"))["status"] == (
        "succeeded"
    )
    assert tool_outputs(c, "keeper", "alice") == ["remembered deadline"]
    [entry] = memory.entries(c.redis(), "keeper")
    assert (entry.name, entry.content, entry.aliases) == ("deadline", note["content"], ["due"])

    fake_llm.script(
        FakeReply(tool_calls=[("recall", {"query": "when is the report due?"})]),
        FakeReply(text="Friday."),
        model=MODEL,
    )
    assert c.wait_run(c.send("keeper", "When is the report due?", "bob"))["status"] == "succeeded"
    [out] = tool_outputs(c, "keeper", "bob")
    [hit] = json.loads(out)
    assert hit["name"] == "deadline" and hit["content"] == note["content"]
    assert c.history("keeper", "bob")[-1]["content"] == "Friday."
