"""A run's reply text from its events, honouring ``restart``: for clients and gateway faces.

A ``restart`` voids the output its step streamed since the step's last boundary event
(``event_types.STEP_BOUNDARY``), and the step streams again from its beginning. Two readers:

- ``ReplyText`` rebuilds the reply as a client that can take text back sees it: the text of
  every step, a restarted step's once (the Python clients, the OpenAI face's non-streamed
  answer).
- ``ForwardOnce`` is for a face whose client cannot take text back (OpenAI chat streaming,
  Agent Protocol ``messages``): it passes on only text the client does not have yet, skips what
  the client has while a restarted step repeats it exactly, and raises ``ReplyDiverged`` when
  the new attempt says something else (or less), so the face ends its stream with an error
  instead of showing a word twice or a wrong one. ``ForwardOnce("thinking")`` does the same
  for the thinking (the Anthropic and Responses faces).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from walrus_tasks.event_types import STEP_BOUNDARY

REPLY_RESTARTED = "reply_restarted"
"""The error code a face ends its stream with when a restarted reply differs from its start."""


class ReplyDiverged(Exception):
    """A restarted step's new text differs from the text the client already has."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"the reply restarted ({reason}) and its new text differs from the text already "
            "streamed; the run goes on, and its reply is in the conversation's history"
        )

    @property
    def message(self) -> str:
        """What the face tells its client."""
        return str(self)


Kind = Literal["text", "thinking"]
"""What a part of the reply is: the answer's text, or the model's thinking."""


@dataclass
class ReplyText:
    """The reply of a run, fed its events in order (``feed``); ``text`` at any point.

    With ``thinking`` the thinking is kept too, as ``("thinking", ...)`` parts in order with the
    text (``parts``: the Anthropic face's answer blocks).
    """

    thinking: bool = False
    """Whether the thinking is kept."""
    done: list[tuple[Kind, str]] = field(default_factory=list)
    """The output of the steps before the current one."""
    step: list[tuple[Kind, str]] = field(default_factory=list)
    """The current step's output so far (what a ``restart`` drops)."""

    def feed(self, event: Mapping[str, Any]) -> None:
        """Take the next event of the run."""
        kind = event.get("type")
        if kind == "chunk":
            self.step.append(("text", str(event.get("content", ""))))
        elif kind == "thinking":
            if self.thinking:
                self.step.append(("thinking", str(event.get("content", ""))))
        elif kind == "restart":
            self.step = []
        elif kind in STEP_BOUNDARY:
            self.done += self.step
            self.step = []

    @property
    def parts(self) -> list[tuple[Kind, str]]:
        """The output so far, in order: every step's, a restarted step's new attempt only."""
        return self.done + self.step

    @property
    def text(self) -> str:
        """The reply so far: every step's text, a restarted step's new attempt only."""
        return "".join(text for kind, text in self.parts if kind == "text")


@dataclass
class ForwardOnce:
    """The text to pass on to a client that cannot take text back, fed the run's events."""

    output: str = "chunk"
    """The event type whose ``content`` it passes on: ``chunk`` (the reply), or ``thinking``."""
    sent: str = ""
    """The current step's text the client has."""
    repeated: int | None = None
    """While a restarted step repeats ``sent``: how much of it the new attempt has repeated."""
    reason: str = ""
    """The last restart's reason."""

    def feed(self, event: Mapping[str, Any]) -> str:
        """The text of ``event`` to pass on ('' for none); ReplyDiverged when it cannot be.

        A restarted step's new text must repeat what the client has before anything new
        goes out; a step that ends (the next boundary, or the run's successful ``end``) having
        repeated less than that diverged too.
        """
        kind = event.get("type")
        if kind == self.output:
            return self._chunk(str(event.get("content", "")))
        if kind == "restart":
            self.reason = str(event.get("reason", ""))
            self.repeated = 0 if self.sent else None
        elif kind in STEP_BOUNDARY or (kind == "end" and event.get("status") == "succeeded"):
            if self.repeated is not None:
                raise ReplyDiverged(self.reason)
            self.sent = ""
        return ""

    def _chunk(self, text: str) -> str:
        if self.repeated is None:
            self.sent += text
            return text
        expected = self.sent[self.repeated :]
        n = min(len(text), len(expected))
        if text[:n] != expected[:n]:
            raise ReplyDiverged(self.reason)
        self.repeated += n
        if self.repeated < len(self.sent):
            return ""
        self.repeated = None  # caught up: what follows is new to the client
        new = text[n:]
        self.sent += new
        return new
