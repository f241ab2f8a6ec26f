"""Printing a run's events on a terminal as they arrive: reply text plain, the rest dimmed."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.markup import escape

from walrus_tasks.cli.common import console
from walrus_tasks.client import Event

PREVIEW = 200
"""Characters of a tool's arguments or output shown in a chat; the rest is elided."""


def preview(value: Any, limit: int = PREVIEW) -> str:
    """One line of ``value`` (JSON for non-strings), cut at ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EventPrinter:
    """Writes reply chunks straight to ``out`` (flushed) and other events as dim lines."""

    def __init__(self, out: TextIO | None = None, show_tools: bool = True) -> None:
        self.out = out or sys.stdout
        self.show_tools = show_tools
        self.at_line_start = True
        self.end: Event | None = None
        self.run_id = ""
        self.last_id: str | None = None

    def write(self, text: str) -> None:
        """Write reply text as is (no markup), flushed so it appears word by word."""
        if text:
            self.out.write(text)
            self.out.flush()
            self.at_line_start = text.endswith("\n")

    def newline(self) -> None:
        """End the current line of reply text, if one is open."""
        if not self.at_line_start:
            self.write("\n")

    def note(self, text: str, style: str = "dim") -> None:
        """A line of its own, styled (markup in ``text`` is escaped)."""
        self.newline()
        console.print(escape(text), style=style, soft_wrap=True)

    def __call__(self, event: Event) -> None:
        """Render one event."""
        self.last_id = event.id or self.last_id
        data = event.data
        if event.type == "start":
            self.run_id = str(data.get("run_id", self.run_id))
        elif event.type == "chunk":
            self.write(str(data.get("content", "")))
        elif event.type == "text_end":
            self.newline()
        elif event.type == "restart":
            # A terminal cannot take the step's text back: a marker line parts the void attempt
            # from the new one, which streams the step again from its beginning.
            self.note(f"[restarted: {data.get('reason', '')}]")
        elif event.type == "thinking":
            self.note(f"(thinking) {preview(data.get('content', ''))}", "dim italic")
        elif event.type == "tool_start" and self.show_tools:
            for call in data.get("calls", []):
                self.note(f"→ {call.get('name')}({preview(call.get('arguments', ''))})")
        elif event.type == "tool_result" and self.show_tools:
            mark = "✗" if data.get("is_error") else "←"
            took = data.get("duration_ms")
            suffix = f"  [{took} ms]" if took is not None else ""
            name = data.get("name", data.get("call_id"))
            self.note(f"{mark} {name}: {preview(data.get('output', ''))}{suffix}")
        elif event.type == "ask_user":
            what = "asks for approval" if data.get("kind") == "approval" else "asks"
            questions = preview(data.get("tool") or data.get("questions", ""))
            self.note(f"(the agent {what}) {questions}  → answer: walrus reply", "yellow")
        elif event.type == "user_steered":
            self.note(f"(steered) {preview(data.get('content', ''))}", "yellow")
        elif event.type == "compacted":
            self.note(f"{data.get('content')} ({data.get('archived', 0)} messages archived)")
        elif event.type == "end":
            self.end = event
            self.newline()
            status = str(data.get("status", "?"))
            if status != "succeeded":
                error = data.get("error")
                self.note(f"[{status}]" + (f" {error}" if error else ""), "red")

    @property
    def status(self) -> str | None:
        """The run's end status, once the ``end`` event was seen."""
        return str(self.end.data.get("status")) if self.end else None
