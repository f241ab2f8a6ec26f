"""The clients' sans-IO core: the resume decisions and the reading of answers, without a socket."""

from __future__ import annotations

import inspect

import httpx
import pytest

from walrus_tasks.client import AsyncClient, Client, GatewayUnreachable
from walrus_tasks.client import core as api
from walrus_tasks.client.stream import RETRY_DELAY, RETRY_DELAY_MAX, Event, Resume
from walrus_tasks.errors import NotFound, WalrusError


def test_the_async_client_has_every_method_of_the_sync_client_with_the_same_parameters() -> None:
    def methods(cls: type) -> dict[str, list[inspect.Parameter]]:
        return {
            name: list(inspect.signature(fn).parameters.values())
            for name, fn in vars(cls).items()
            if callable(fn) and not name.startswith("_")
        }

    assert methods(AsyncClient) == methods(Client)


def test_resume_backs_off_doubling_then_gives_up_after_the_give_up_time() -> None:
    resume = Resume("http://gw", give_up=10.0)
    delays = [resume.on_drop("refused", now) for now in (100.0, 100.5, 101.0, 102.0, 103.0)]
    assert delays == [RETRY_DELAY, 2 * RETRY_DELAY, 4 * RETRY_DELAY, 8 * RETRY_DELAY, 2.0]
    assert max(delays) == RETRY_DELAY_MAX
    assert resume.on_drop("refused", 109.9) == pytest.approx(0.1)  # never sleeps past give_up
    with pytest.raises(GatewayUnreachable, match=r"refused \(gave up reconnecting after 10.0 s"):
        resume.on_drop("refused", 110.0)


def test_an_event_resets_the_backoff_and_moves_the_resume_point() -> None:
    resume = Resume("http://gw", give_up=1.0, last_id="1-0")
    assert resume.headers() == {"Accept": "text/event-stream", "Last-Event-ID": "1-0"}
    resume.on_drop("cut", 0.0)
    resume.on_drop("cut", 0.9)
    assert resume.on_event(Event("2-0", "token", {})) is False
    assert resume.headers()["Last-Event-ID"] == "2-0"
    assert resume.on_drop("cut", 5.0) == RETRY_DELAY  # down again, counted from now
    assert resume.on_event(Event("", "token", {})) is False  # an event without id keeps 2-0
    assert resume.headers()["Last-Event-ID"] == "2-0"
    assert resume.on_event(Event("3-0", "end", {})) is True
    assert Resume("http://gw", 1.0, until_end=False).on_event(Event("3-0", "end", {})) is False


def _answer(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://gw/v1/x"))


def test_a_call_reads_its_answer_or_names_what_is_wrong_with_it() -> None:
    assert api.cancel("echo", None).read(_answer(200, {"run_id": None})) is None
    assert api.steer("echo", "hi", "bob").path == "/v1/agents/echo/conversations/bob/steer"
    assert api.publish("s", 1).read(_answer(200, {"fired": ["a", 2]})) == ["a", "2"]
    with pytest.raises(WalrusError, match="no 'messages' in the body"):
        api.history("echo", None).read(_answer(200, {"msgs": []}))
    with pytest.raises(WalrusError, match="unexpected RunInfo from the gateway"):
        api.run("r").read(_answer(200, {"status": "nope"}))
    with pytest.raises(NotFound, match="no run") as info:
        api.run("r").read(_answer(404, {"error": {"code": "not_found", "message": "no run"}}))
    assert info.value.status == 404
