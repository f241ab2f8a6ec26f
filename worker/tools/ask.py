"""``ask_user``: put questions to the client and wait for the reply, without a worker."""

from __future__ import annotations

from typing import Any

from walrus_tasks import event_types
from worker.providers.base import ToolSpec
from worker.tools.base import ToolContext, ToolFailed, WaitFor, register, schema

_OPTION = schema(
    {"label": {"type": "string"}, "description": {"type": "string"}}, required=["label"]
)
_QUESTION = schema(
    {
        "question": {"type": "string"},
        "header": {"type": "string", "description": "a short title"},
        "options": {"type": "array", "items": _OPTION},
        "multi_select": {"type": "boolean"},
    },
    required=["question"],
)


def _questions(args: dict[str, Any]) -> list[dict[str, Any]]:
    questions = args.get("questions")
    if not isinstance(questions, list) or not questions:
        raise ToolFailed("questions must be a non-empty list of {question, header?, options?}")
    for i, q in enumerate(questions):
        if not isinstance(q, dict) or not isinstance(q.get("question"), str) or not q["question"]:
            raise ToolFailed(f"questions[{i}].question must be a non-empty string")
        options = q.get("options", [])
        if not isinstance(options, list) or not all(
            isinstance(o, dict) and isinstance(o.get("label"), str) for o in options
        ):
            raise ToolFailed(f"questions[{i}].options must be a list of {{label, description?}}")
    return questions


@register(
    ToolSpec(
        name="ask_user",
        description=(
            "Ask the user one or more questions and wait for the answer (the reply text is the "
            "result). Use it when you cannot go on without the user's decision."
        ),
        parameters=schema(
            {"questions": {"type": "array", "items": _QUESTION, "minItems": 1}},
            required=["questions"],
        ),
    )
)
def ask_user(args: dict[str, Any], ctx: ToolContext) -> str:
    """Emit ``ask_user {questions}`` and wait; the reply (the call runs again) is the result."""
    wake = ctx.wake
    if wake is None:
        event = event_types.ask_user("question", _questions(args))
        raise WaitFor("ask", ctx.agent.ask_timeout, event=event)
    if wake.kind == "timeout":
        raise ToolFailed(f"the user did not answer within {ctx.agent.ask_timeout:g}s")
    if wake.kind == "cancelled":
        raise ToolFailed("cancelled while waiting for the user")
    return wake.content
