"""Provider errors classified for retries and fallbacks, against the fake server over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.fakellm import FakeError, FakeLLM, FakeReply
from tests.test_providers import KINDS, make, run
from walrus_tasks.config import AgentConfig
from walrus_tasks.errors import ProviderError
from worker.llm_call import retry_delay
from worker.providers.base import close_clients, retry_after


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server
    close_clients()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeLLM) -> None:
    fake.reset()


def error_of(kind: str, fake: FakeLLM, **options: object) -> ProviderError:
    with pytest.raises(ProviderError) as err:
        run(make(kind, fake, **options))
    return err.value


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [408, 409, 429, 500, 503, 529])
def test_transient_statuses_are_retryable(fake: FakeLLM, kind: str, status: int) -> None:
    fake.script(FakeError(status=status, message="busy"))
    assert error_of(kind, fake).transient


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(fake: FakeLLM, kind: str, status: int) -> None:
    fake.script(FakeError(status=status, message="no"))
    assert not error_of(kind, fake).transient


@pytest.mark.parametrize("kind", KINDS)
def test_a_429_says_how_long_the_provider_asked_to_wait(fake: FakeLLM, kind: str) -> None:
    fake.script(FakeError(status=429, message="slow down", headers={"Retry-After": "7"}))
    error = error_of(kind, fake)
    assert error.transient and error.retry_after == 7


@pytest.mark.parametrize("kind", KINDS)
def test_a_too_long_request_is_a_context_length_error(fake: FakeLLM, kind: str) -> None:
    message = "This model's maximum context length is 8192 tokens"
    fake.script(FakeError(status=400, message=message, type="invalid_request_error"))
    error = error_of(kind, fake)
    assert error.context_length and not error.transient


@pytest.mark.parametrize("kind", KINDS)
def test_an_overload_inside_the_stream_is_retryable(fake: FakeLLM, kind: str) -> None:
    fake.script(FakeError(message="overloaded", type="overloaded_error", mid_stream=True))
    assert error_of(kind, fake).transient


@pytest.mark.parametrize("kind", KINDS)
def test_a_connection_cut_mid_stream_is_retryable(fake: FakeLLM, kind: str) -> None:
    fake.script(FakeReply(text="a b c d e f", cut_after=3))
    assert error_of(kind, fake).transient


@pytest.mark.parametrize("kind", KINDS)
def test_first_token_timeout_closes_a_silent_stream(fake: FakeLLM, kind: str) -> None:
    fake.script(FakeReply(text="late", first_delay=2.0))
    started = time.monotonic()
    error = error_of(kind, fake, first_token_timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert "first token" in error.message and error.transient


@pytest.mark.parametrize("kind", KINDS)
def test_first_token_timeout_leaves_a_streaming_answer_alone(fake: FakeLLM, kind: str) -> None:
    fake.script(FakeReply(text="a b c d e f g", chunk_delay=0.1))  # a second, all told
    items = run(make(kind, fake, first_token_timeout=0.5))
    assert "".join(getattr(i, "text", "") for i in items) == "a b c d e f g"


def test_retry_after_reads_every_header_providers_send() -> None:
    now = 1_700_000_000.0
    assert retry_after({"retry-after-ms": "1500"}) == 1.5
    assert retry_after({"Retry-After": "3"}) == 3
    assert retry_after({"Retry-After": "Tue, 14 Nov 2023 22:13:30 GMT"}, now) == 10
    openai = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m2.5s"}
    assert retry_after(openai) == 62.5
    assert retry_after({**openai, "x-ratelimit-remaining-requests": "3"}) is None
    anthropic = {
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:24Z",
    }
    assert retry_after(anthropic, now) == 4
    assert retry_after({}) is None


def test_backoff_grows_with_jitter_and_stops_at_the_budget() -> None:
    agent = AgentConfig(name="a", retries=3, max_retry_wait=1.2)
    error = ProviderError("x", transient=True)
    delays = [retry_delay(error, n, agent) for n in (1, 2, 3)]
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0  # type: ignore[operator]
    assert 0.6 <= delays[2] <= 1.2  # type: ignore[operator]
    assert retry_delay(error, 4, agent) is None
    assert retry_delay(ProviderError("x"), 1, agent) is None
    waited = ProviderError("x", transient=True, retry_after=1.0)
    assert 1.0 <= retry_delay(waited, 1, agent) <= 1.2  # type: ignore[operator]
    too_long = ProviderError("x", transient=True, retry_after=5.0)
    assert retry_delay(too_long, 1, agent) is None, "a wait beyond max_retry_wait is not waited"
