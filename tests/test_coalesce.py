"""Coalesced streaming: a fast model's tokens share chunk events, a slow one's do not (issue 11)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.cluster import Cluster, running, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.timers import TIMERS
from worker import chunks as chunks_module
from worker.chunks import ChunkWriter

FAST = " ".join(f"t{i}" for i in range(2000))
SLOW = " ".join(f"s{i}" for i in range(8))
AGENTS = {
    "fastmany": f'model = "mock"\n[mock]\nreply = "{FAST}"\nchunk_delay_ms = 0\n',
    "slow20": f'model = "mock"\n[mock]\nreply = "{SLOW}"\nchunk_delay_ms = 25\n',
}


@pytest.fixture(scope="module")
def co(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway and one worker with the two agents, on a database of their own."""
    root: Path = tmp_path_factory.mktemp("coalesce")
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=agents_home(root / "home", fake_llm.base_url, AGENTS),  # type: ignore[attr-defined]
        log_dir=root,
        env_extra={"WALRUS_CHUNK_FLUSH_MS": "5"},
    )
    with running(c):
        yield c


def chunks(c: Cluster, agent: str, sender: str) -> tuple[list[str], list[str]]:
    events = c.events(c.send(agent, "go", sender))
    assert events[-1][1]["type"] == "end"
    types = [e["type"] for _, e in events]
    return [e["content"] for _, e in events if e["type"] == "chunk"], types


def test_a_fast_reply_streams_in_fewer_chunk_events_that_add_up_to_it(
    co: Cluster, sender: str
) -> None:
    contents, types = chunks(co, "fastmany", sender)
    assert "".join(contents) == FAST
    assert len(contents) < 2000 // 10, len(contents)
    first, last = types.index("text_start"), types.index("text_end")
    assert set(types[first + 1 : last]) == {"chunk"}, "every other event kept, in order"


def test_a_slow_reply_still_gets_one_event_per_token(co: Cluster, sender: str) -> None:
    contents, _ = chunks(co, "slow20", sender)
    assert "".join(contents) == SLOW
    assert len(contents) == len(SLOW.split(" ")), contents


def test_held_text_goes_out_when_the_window_closes_even_if_the_model_pauses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer's clock stands still and the timer thread is held while the tokens come.

    So a stall of this thread (a loaded machine) can neither close the window between two
    tokens nor let the timer flush before the assertion; the timer runs once it is let go.
    """
    now = [100.0]
    monkeypatch.setattr(chunks_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    gate = threading.Event()
    TIMERS.call_later(0, lambda: gate.wait(5))
    written: list[str] = []
    writer = ChunkWriter(written.append, 20)
    try:
        writer.add("a")
        writer.add(" b")
        writer.add(" c")
        assert written == ["a"], "the first token of a burst at once, the rest held"
        assert writer.timer is not None, "a timer set for the window's end"
    finally:
        gate.set()
    wait_for(lambda: len(written) == 2, 2, 0.005, "the timer's flush")
    assert written[1] == " b c"
    writer.flush()
    assert len(written) == 2, "nothing held, nothing written"
