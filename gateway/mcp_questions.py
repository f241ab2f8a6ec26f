"""A run's question (its ``ask_user`` event) in MCP's words: an elicitation form, its answer.

The MCP face (:mod:`gateway.mcp_face`) asks a client that declared the elicitation capability
the run's question as a form (``elicitation/create``, or an ``InputRequiredResult`` carrying
one) and sends the answer back as the run's reply; a client without the capability gets the
question as the text of the tool's result (:func:`question_text`). Pure shape conversions:
nothing here reads or writes state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

DECLINED = "(the user declined to answer)"
"""The reply a declined question sends (a declined approval sends ``deny``)."""


@dataclass(frozen=True)
class Form:
    """An ``ask_user`` as a form: one property per question, in order."""

    kind: Literal["question", "approval"]
    message: str
    schema: dict[str, Any]
    names: tuple[str, ...]
    questions: tuple[str, ...]


def _questions(asked: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = asked.get("questions")
    items = raw if isinstance(raw, list) else []
    return [q for q in items if isinstance(q, dict) and isinstance(q.get("question"), str)]


def _labels(question: Mapping[str, Any]) -> list[str]:
    options = question.get("options")
    items = options if isinstance(options, list) else []
    return [o["label"] for o in items if isinstance(o, dict) and isinstance(o.get("label"), str)]


def form_of(asked: Mapping[str, Any]) -> Form:
    """The form of an ``ask_user`` event (or a pending question's value).

    One question is the property ``answer``, several are ``answer_1``, ``answer_2``, …; a
    question with options is an enum of their labels (a list of them with ``multi_select``),
    one without is free text. Every question is required.
    """
    questions = _questions(asked)
    props: dict[str, Any] = {}
    names = []
    for i, q in enumerate(questions):
        name = "answer" if len(questions) == 1 else f"answer_{i + 1}"
        header = q.get("header")
        title = header if isinstance(header, str) and header else f"Question {i + 1}"
        prop: dict[str, Any] = {"type": "string", "title": title, "description": q["question"]}
        if labels := _labels(q):
            if q.get("multi_select"):
                prop = {**prop, "type": "array", "items": {"type": "string", "enum": labels}}
            else:
                prop["enum"] = labels
        props[name] = prop
        names.append(name)
    kind: Literal["question", "approval"] = (
        "approval" if asked.get("kind") == "approval" else "question"
    )
    message = "\n".join(q["question"] for q in questions) or "The agent waits for an answer."
    schema = {"type": "object", "properties": props, "required": names}
    return Form(kind, message, schema, tuple(names), tuple(q["question"] for q in questions))


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def answer_of(form: Form, content: Mapping[str, Any] | None) -> str:
    """The run's reply for an accepted form: one answer as it is, several as a JSON object.

    The object maps each question to its answer, as the Agent Protocol face sends a resume
    value that is not a string.
    """
    answers = [_text((content or {}).get(name)) for name in form.names]
    if len(answers) == 1:
        return answers[0] or "(no answer)"
    return json.dumps(dict(zip(form.questions, answers, strict=True)), ensure_ascii=False)


def declined(form: Form) -> str:
    """The run's reply for a declined form: ``deny`` for an approval, :data:`DECLINED` else."""
    return "deny" if form.kind == "approval" else DECLINED


def question_text(asked: Mapping[str, Any], agent: str, conversation: str, run_id: str) -> str:
    """The question as a tool result's text, saying how to answer it."""
    lines = []
    for q in _questions(asked):
        lines.append(f"The agent asks: {q['question']}")
        if labels := _labels(q):
            lines.append(f"Options: {', '.join(labels)}")
    lines.append(
        f"Answer with a next call of the tool {agent} with the answer as the message and "
        f'"conversation": "{conversation}" (run {run_id} waits for it).'
    )
    return "\n".join(lines)
