"""The GenAI spans of a run (OpenTelemetry's GenAI semantic conventions).

``invoke_agent`` per step attempt, ``chat`` per LLM call, ``execute_tool`` per tool call.
Each span continues the trace the run was accepted in (``walrus_tasks.tracing``), whichever
worker executes it. With tracing off every function returns at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from walrus_tasks import tenancy, tracing
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.lease import Fence

PROVIDER_MOCK = "mock"
"""``gen_ai.provider.name`` of the built-in mock model (the others are the provider's kind)."""


def step_span_of(record: dict[str, str], step: int) -> str:
    """The span id of step ``step``'s last attempt stored with the run ('' if another step's)."""
    stored_step, _, span_id = record.get("step_span", "").partition(":")
    return span_id if stored_step == str(step) else ""


def _of_step(fence: Fence, step: int) -> dict[str, Any]:
    """The attributes every span of step ``step`` carries: its agent, conversation and run."""
    return {
        "gen_ai.agent.name": fence.agent,
        "gen_ai.conversation.id": f"{fence.agent}/{fence.sender}",
        "walrus.run_id": fence.run_id,
        "walrus.step": step,
    }


@contextmanager
def invoke_agent(
    fence: Fence, step: int, record: dict[str, str], span_id: str, start_ns: int
) -> Iterator[None]:
    """The span of one attempt of step ``step``: a child of the run's accepting span.

    ``span_id``: the id chosen before the claim (stored with the run by ``begin_step``);
    ``record``: the run as the claim read it, whose ``step_span`` names the attempt before,
    if it was of this step (a worker lost, a deferral): the span links to it.
    """
    if not span_id:
        yield
        return
    attributes = {"gen_ai.operation.name": "invoke_agent", **_of_step(fence, step)}
    if tenant := tenancy.tenant_of(fence.sender):  # none: the default tenant
        attributes["walrus.tenant"] = tenant
    if face := record.get("face"):  # none: a run the system started
        attributes["walrus.face"] = face
    with tracing.run_span(
        f"invoke_agent {fence.agent}", record, attributes, span_id=span_id,
        links=[step_span_of(record, step)], start_ns=start_ns,
    ):  # fmt: skip
        yield


def provider_name(agent: AgentConfig, config: Config) -> str:
    """``gen_ai.provider.name``: ``mock``, or the configured provider's kind."""
    if agent.model == "mock":
        return PROVIDER_MOCK
    provider = config.providers.get(agent.provider_name)
    return provider.kind if provider is not None else agent.provider_name


@contextmanager
def chat(agent: AgentConfig, config: Config, history: Sequence[dict[str, Any]]) -> Iterator[None]:
    """The span of one LLM call (one attempt: a retry or a fallback is a span of its own)."""
    if not tracing.enabled():
        yield
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_name(agent, config),
        "gen_ai.request.model": agent.model_name,
    }
    if tracing.capture_content():
        attributes["gen_ai.input.messages"] = json.dumps(
            [_message(m) for m in history], ensure_ascii=False
        )
    with tracing.child_span(f"chat {agent.model_name}", attributes, kind="client"):
        yield


def answered(usage: tuple[int, int], text: Sequence[str], calls: Sequence[Any]) -> None:
    """Record the call's answer on its ``chat`` span: tokens, finish reason, content if on.

    ``text``: the answer's chunks, joined only when content goes on spans.
    """
    if not tracing.enabled():
        return
    reason = "tool_call" if calls else "stop"
    attributes: dict[str, Any] = {
        "gen_ai.usage.input_tokens": usage[0],
        "gen_ai.usage.output_tokens": usage[1],
        "gen_ai.response.finish_reasons": [reason],
    }
    if tracing.capture_content():
        content = "".join(text)
        parts: list[dict[str, Any]] = [{"type": "text", "content": content}] if content else []
        parts += [
            {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
            for c in calls
        ]
        attributes["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": parts, "finish_reason": reason}], ensure_ascii=False
        )
    tracing.set_attributes(attributes)


def _message(m: dict[str, Any]) -> dict[str, Any]:
    """A history message as the conventions' ``{role, parts}``."""
    parts: list[dict[str, Any]] = []
    if m.get("role") == "tool":
        parts.append({"type": "tool_call_response", "id": m.get("tool_call_id"),
                      "response": m.get("content")})  # fmt: skip
    elif m.get("content"):
        parts.append({"type": "text", "content": m["content"]})
    for c in m.get("tool_calls") or ():
        parts.append({"type": "tool_call", "id": c.get("id"), "name": c.get("name"),
                      "arguments": c.get("arguments")})  # fmt: skip
    return {"role": m.get("role", "user"), "parts": parts}


@contextmanager
def execute_tool(
    fence: Fence, step: int, record: dict[str, str], call: dict[str, Any]
) -> Iterator[None]:
    """The span of one tool call: a child of its step's ``invoke_agent`` span.

    The step's span ended when it dispatched its calls; the call continues its trace from
    the run (``step_span``), on whichever tool worker it lands.
    """
    if not tracing.enabled():
        yield
        return
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call["name"],
        "gen_ai.tool.call.id": call["id"],
        **_of_step(fence, step),
    }
    if tracing.capture_content():
        attributes["gen_ai.tool.call.arguments"] = json.dumps(call.get("arguments"))
    with tracing.run_span(
        f"execute_tool {call['name']}", record, attributes,
        parent_span=step_span_of(record, step),
    ):  # fmt: skip
        yield


def tool_result(output: str, is_error: bool) -> None:
    """Record a call's outcome: its exit code (a shell's JSON), error status, content if on."""
    if not tracing.enabled():
        return
    attributes: dict[str, Any] = {}
    if output.startswith("{") and '"exit_code"' in output:
        try:
            code = json.loads(output).get("exit_code")
        except (ValueError, AttributeError):
            code = None
        if isinstance(code, int):
            attributes["process.exit.code"] = code
    if tracing.capture_content():
        attributes["gen_ai.tool.call.result"] = output
    tracing.set_attributes(attributes)
    if is_error:
        tracing.set_error(output[:200], "tool_error")


def waits(kind: str, timeout: float) -> None:
    """The call parks its run (``ask_user``, an approval, a client tool, delegated runs)."""
    tracing.event("wait", {"walrus.wait.kind": kind, "walrus.wait.timeout_s": timeout})


def resumed(wait: str, wake: str, since_ms: int) -> None:
    """The call resumes after its wait: what ended it, and how long it lasted when known."""
    if not tracing.enabled():
        return
    attributes: dict[str, Any] = {"walrus.wait.kind": wait, "walrus.wake.kind": wake}
    if since_ms:
        attributes["walrus.wait.seconds"] = round(time.time() - since_ms / 1000, 3)
    tracing.event("resume", attributes)


def now_ns() -> int:
    """The wall clock in ns, as spans take it (a span started before a claim)."""
    return time.time_ns()
