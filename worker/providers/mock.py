"""The built-in offline model: deterministic, paced, no network."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from walrus_tasks.errors import ProviderError
from worker.providers.base import LLMRequest, StepUsage, StreamItem, TextDelta, ToolCallRequest


class MockProvider:
    """Streams the agent's ``[mock] reply`` one word per chunk, ``chunk_delay_ms`` apart.

    With ``[mock] tool_calls = ["clock", …]`` the first step of a run asks for those tools (all
    in one step, so they run in parallel) and the next step replies.
    """

    def stream(self, request: LLMRequest, pause: Callable[[float], None]) -> Iterator[StreamItem]:
        """Stream the configured reply (or tool calls) of the agent."""
        mock = request.agent.mock
        if mock.fail:
            raise ProviderError(f"mock: {mock.fail}")
        since_user = _since_last_user(request)
        if mock.tool_calls and not any(m["role"] == "tool" for m in since_user):
            for i, name in enumerate(mock.tool_calls):
                yield ToolCallRequest(id=f"call_{i}", name=name, arguments={})
            yield StepUsage(input_tokens=_tokens(request), output_tokens=len(mock.tool_calls))
            return
        words = mock.reply.split(" ")
        delay = mock.chunk_delay_ms / 1000
        for i, word in enumerate(words):
            if i and delay:
                pause(delay)
            yield TextDelta(word if i == 0 else " " + word)
        yield StepUsage(input_tokens=_tokens(request), output_tokens=len(words))


def _since_last_user(request: LLMRequest) -> list[dict[str, object]]:
    for i in range(len(request.messages) - 1, -1, -1):
        if request.messages[i]["role"] == "user":
            return request.messages[i + 1 :]
    return request.messages


def _tokens(request: LLMRequest) -> int:
    """Estimated input tokens (chars / 4), as compaction estimates context size."""
    chars = len(request.system) + sum(len(str(m.get("content", ""))) for m in request.messages)
    return chars // 4
