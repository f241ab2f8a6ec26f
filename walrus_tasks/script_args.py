"""What each Lua script receives and answers: one spec per script, read by Python and Lua alike.

A ``Script`` names its ARGV in order (and, for a variable tail, the tail and the fields of each
of its entries) and how its reply is read. ``scripts.call`` takes the arguments *by name* and
orders them by the spec, raising ``TypeError`` before Redis is called when a name is missing or
unknown; ``prelude()`` generates, from the same spec, the Lua that puts in front of the script a
local table ``A`` with each argument under its name (``A.token``, ``A.now_ms``; a tail is a
list, ``A.events``, or a list of tables, ``A.limits[i].name``). So no script reads ``ARGV[n]``
(``tests/test_scripts.py`` checks), as none spells a key name (``keys.lua_library``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar, get_args

T = TypeVar("T")

Begin = Literal["ok", "fenced", "stale", "busy"]
"""A claim: ``ok`` (run it), ``fenced`` (lease lost), ``stale`` (done already, or not the
run's current step), ``busy`` (another delivery is executing it)."""
Commit = Literal["ok", "fenced", "stale"]
"""A fenced step transition: ``ok``, ``fenced`` (lease lost) or ``stale`` (moved on)."""
ToolRecord = Literal["complete", "pending", "fenced", "stale"]
"""A tool result recorded: ``complete`` (the last of its step), ``pending`` (others to come)."""
Bind = Literal["bound", "missing", "other", "changed"]
"""An Agent Protocol thread's binding (``ap_bind``): ``bound`` to the assistant asked (now or
before); else left as it is, ``missing``, ``other`` (another's) or ``changed`` (its metadata)."""
Wait = Literal["waiting", "woken", "fenced", "stale"]
"""A tool call parked (``waiting``), or its wake was due already (``woken``)."""
Hold = Literal["ok", "done", "stale"]
"""A webhook delivery's hold: ``ok`` (deliver), ``done`` (sent or given up), ``stale``."""
Deleted = Literal["busy", "missing", "deleted"]
"""What deleting a conversation did."""


Ended = Literal["ended", "fenced", "stale"]
"""How ending a run went (``lua/finish.lua``)."""


def parse_literal(kind: Any, raw: Any) -> Any:
    """``raw`` when it is one of the strings of the ``Literal`` type ``kind``; else ValueError."""
    allowed = get_args(kind)
    if raw not in allowed:
        raise ValueError(f"unexpected script reply {raw!r}, not one of {allowed}")
    return raw


def _literal(kind: Any) -> Callable[[Any], Any]:
    """A reply parser that accepts only the strings of the ``Literal`` type ``kind``."""
    return lambda raw: parse_literal(kind, raw)


def _raw(raw: Any) -> Any:
    """A reply of several shapes (wake.lua: a list, a word or nothing), told apart by callers."""
    return raw


def _flag(raw: Any) -> bool:
    return bool(raw)


def _optional_str(raw: Any) -> str | None:
    return None if raw is None else str(raw)


def _optional_list(raw: Any) -> list[Any] | None:
    """A list, or None for Lua's ``false`` (nothing done)."""
    return None if raw is None else list(raw)


def _strs(raw: Any) -> list[str]:
    return [str(x) for x in raw]


@dataclass(frozen=True)
class Script(Generic[T]):
    """One Lua script (``lua/<name>.lua``): its named ARGV and how its reply is read.

    ``args``: the names of its fixed arguments, in ARGV order. ``tail``: the name of a variable
    tail after them ("" = none), a sequence of values, or with ``each`` a sequence of mappings
    with exactly those fields (a repeated group, sent flat). ``reply``: the reply's parser.
    """

    name: str
    args: tuple[str, ...]
    reply: Callable[[Any], T]
    tail: str = ""
    each: tuple[str, ...] = ()

    @cached_property
    def _names(self) -> frozenset[str]:
        return frozenset((*self.args, self.tail) if self.tail else self.args)

    def argv(self, given: Mapping[str, Any]) -> list[Any]:
        """``given`` as ARGV, in the spec's order; TypeError for a missing or unknown name."""
        if given.keys() != self._names:  # one set comparison per call: scripts run per step
            names = (*self.args, self.tail) if self.tail else self.args
            missing = [n for n in names if n not in given]
            unknown = [n for n in given if n not in names]
            raise TypeError(f"{self.name}.lua: missing {missing}, unknown {unknown}")
        out = [given[n] for n in self.args]
        if self.tail:
            out += self._flat_tail(given[self.tail])
        return out

    def _flat_tail(self, tail: Sequence[Any]) -> list[Any]:
        if not self.each:
            return list(tail)
        out: list[Any] = []
        for entry in tail:
            if set(entry) != set(self.each):
                raise TypeError(f"{self.name}.lua: {self.tail} entries have {self.each}")
            out += [entry[f] for f in self.each]
        return out

    def prelude(self) -> str:
        """The Lua that builds ``A`` from ARGV for this script (the only reader of ARGV)."""
        lines = ["local A = {}"]
        lines += [f"A.{n} = ARGV[{i}]" for i, n in enumerate(self.args, 1)]
        if self.tail:
            first = len(self.args) + 1
            lines.append(f"A.{self.tail} = {{}}")
            if self.each:
                fields = ", ".join(f"{f} = ARGV[i + {j}]" for j, f in enumerate(self.each))
                lines.append(f"for i = {first}, #ARGV, {len(self.each)} do")
                lines.append(f"  table.insert(A.{self.tail}, {{{fields}}})")
            else:
                lines.append(f"for i = {first}, #ARGV do")
                lines.append(f"  table.insert(A.{self.tail}, ARGV[i])")
            lines.append("end")
        return "\n".join(lines) + "\n"


FENCED = ("token", "ttl_ms")
"""The first arguments of every fenced script (``lua/lib/fence.lua``)."""

STEP_CLAIM = ("agent_config_json", "held_len", "held_first_sha", "held_last_sha", "held_epoch",
              "restart_json", "output_types", "boundary_types", "step_span")  # fmt: skip
"""What the claim of an LLM step is given besides its run, step and claim id
(``lua/lib/step.lua``): by ``begin_step.lua``, and by ``acquire.lua`` for a drain's step 0."""
NO_CLAIM: Mapping[str, str] = MappingProxyType({"claim_id": "", **dict.fromkeys(STEP_CLAIM, "")})
"""``acquire.lua``'s claim arguments when it claims nothing (the script reads none of them)."""

TASK_PUSH = ("task_queue", "task_message", "task_channel", "task_event")
"""A task message a script pushes when it finds one due, and its ``task-sent`` event
(``walrus_tasks.task_push``; all "" for none)."""
NO_TASK: Mapping[str, str] = MappingProxyType(dict.fromkeys(TASK_PUSH, ""))
"""``TASK_PUSH`` when there is no message to push."""

ACQUIRE: Script[list[Any] | None] = Script(
    "acquire",
    ("cid", "now_ms", "ttl_ms", "maxlen", "fair", "weights_json", "default_weight",
     "priorities_json", "start_own", "one_redis", "claim_id", *STEP_CLAIM),
    _optional_list,
)  # fmt: skip
AP_BIND: Script[Bind] = Script("ap_bind", ("agent", "seen", "metadata"), _literal(Bind))
AP_RECORD: Script[list[Any] | None] = Script(
    "ap_record", ("run_id", "sender", "now_ms", "fields_json"), _optional_list
)
BEGIN: Script[Begin] = Script(
    "begin", (*FENCED, "step", "phase", "claim_id", "call_id", "task_id"), _literal(Begin)
)
BEGIN_STEP: Script[list[Any]] = Script(
    "begin_step",
    (*FENCED, "step", "claim_id", "now_ms", "cid", "run_id", "task_id", "maxlen", *STEP_CLAIM),
    list,
)  # fmt: skip
CANCEL: Script[list[Any]] = Script("cancel", ("cancel_ttl", "now_ms", "grace_ms"), list)
COMMIT: Script[Commit] = Script(
    "commit",
    (*FENCED, "step", "message_json", "next_phase", "calls_json", "input_tokens",
     "output_tokens", "model", "run_id", "maxlen", "usage_field", "usage_expire_at"),
    _literal(Commit),
    tail="events",
)  # fmt: skip
COMMIT_FINAL: Script[list[Any]] = Script(
    "commit_final",
    (*FENCED, "step", "message_json", "input_tokens", "output_tokens", "model", "run_id",
     "maxlen", "usage_field", "usage_expire_at", "events_json", "cid", "status", "error",
     "end_json", "now_ms", "events_ttl", "result_json", "grace_ms", "count_field",
     "seconds_field", "seconds", "bucket_field", "one_redis", "claim_id", *STEP_CLAIM),
    list,
    tail="increments",
    each=("field", "by"),
)  # fmt: skip
COMPACT: Script[list[Any]] = Script(
    "compact",
    (*FENCED, "run_id", "keep", "summary_json", "event_json", "maxlen", "now_ms", "expected_len"),
    list,
)
CHILD_DONE: Script[list[Any] | None] = Script(
    "child_done",
    ("parent_run", "call_id", "run_id", "result_json", "now_ms", "grace_ms"),
    _optional_list,
)
CRON_CLAIM: Script[str | None] = Script(
    "cron_claim", ("id", "due_ms", "next_ms", "fired", "now_s", "dedup_ttl_ms"), _optional_str
)
CRON_RECORD: Script[bool] = Script("cron_record", ("id", "run_id"), _flag)
DEFER: Script[Commit] = Script(
    "defer",
    (*FENCED, "step", "claim_id", "hold_ms", "now_ms", "cid", "task_id"),
    _literal(Commit),
)
DELETE_CONVERSATION: Script[Deleted] = Script("delete_conversation", ("cid",), _literal(Deleted))
FAIR_MARK: Script[list[Any]] = Script(
    "fair_mark", ("now_ms",), list, tail="entries", each=("cid", "agent", "tenant")
)
FAIR_PICK: Script[str | None] = Script(
    "fair_pick",
    ("now_ms", "weights_json", "default_weight", "priorities_json", "claim_ms"),
    _optional_str,
)
FAIR_UNMARK: Script[int] = Script("fair_unmark", ("cid", "agent", "tenant"), int)
EMIT: Script[str | None] = Script(
    "emit", (*FENCED, "run_id", "maxlen"), _optional_str, tail="events"
)
FINISH: Script[list[Any]] = Script(
    "finish",
    (*FENCED, "run_id", "cid", "status", "error", "end_json", "now_ms", "maxlen", "events_ttl",
     "result_json", "grace_ms", "count_field", "seconds_field", "seconds", "bucket_field",
     "one_redis", "claim_id", *STEP_CLAIM),
    list,
    tail="increments",
    each=("field", "by"),
)  # fmt: skip
HISTORY_JSON: Script[str] = Script("history_json", (), str)
HEARTBEAT_CLAIM: Script[bool] = Script(
    "heartbeat_claim", ("agent", "due_ms", "next_ms", "dedup_ttl_ms"), _flag
)
LIMIT_ACQUIRE: Script[list[Any]] = Script(
    "limit_acquire",
    ("now_ms", "holder", "hold_ms", "run_id"),
    list,
    tail="limits",
    each=("name", "max_concurrency", "requests_per_minute", "tokens_per_minute", "tokens"),
)
LIMIT_RELEASE: Script[list[Any] | None] = Script(
    "limit_release",
    ("now_ms", "holder", "task_id", "extra_tokens", "one_redis"),
    _optional_list,
    tail="limits",
    each=("name", "max_concurrency", "tokens_per_minute"),
)
LIMIT_NEXT: Script[list[Any] | None] = Script(
    "limit_next", ("now_ms",), _optional_list, tail="names"
)
LIMIT_WAKE: Script[list[Any] | None] = Script("limit_wake", ("run_id", "task_id"), _optional_list)
PIN_CONFIG: Script[bool] = Script("pin_config", ("agent_config_json",), _flag)
REAP_READY: Script[list[str]] = Script(
    "reap_ready", ("now_ms", "stale_ms", "one_redis"), _strs, tail="conversations"
)
RELEASE_CALLS: Script[list[Any] | None] = Script(
    "release_calls", (*FENCED, "run_id"), _optional_list
)
RENEW: Script[bool] = Script("renew", (*FENCED, "now_ms", "cid", "claim_id"), _flag)
RETRY: Script[Commit] = Script(
    "retry",
    (*FENCED, "step", "attempts", "fallback", "run_id", "maxlen", "restart_json", "retry_json",
     "tries", "not_before_ms"),
    _literal(Commit),
)  # fmt: skip
ROLLBACK: Script[int] = Script("rollback", ("run_id",), int)
SET_WEBHOOK: Script[bool] = Script("set_webhook", ("url",), _flag)
SPAWN_CHILDREN: Script[list[str]] = Script(
    "spawn_children", ("ids_json", "foreground", "ttl_s"), _strs
)
SEED: Script[int] = Script("seed", ("messages_json",), int)
STEER: Script[str | None] = Script("steer", ("content",), _optional_str)
STEER_INJECT: Script[int] = Script("steer_inject", (*FENCED, "run_id", "maxlen"), int)
START_PICKED: Script[list[Any] | None] = Script(
    "start_picked", ("cid", "now_ms", "ttl_ms", "maxlen"), _optional_list
)
SUB_DELETE: Script[bool] = Script("sub_delete", ("id",), _flag)
SUB_PUBLISH: Script[list[str]] = Script("sub_publish", (), _strs)
SUBMIT: Script[list[Any]] = Script(
    "submit",
    (
        "run_id",
        "agent",
        "sender",
        "content",
        "on_busy",
        "now_ms",
        "cid",
        "meta_json",
        "queued",
        "one_redis",
        *TASK_PUSH,
        "guard_field",
        "guard_value",
    ),
    list,
)
TAKEOVER: Script[list[Any] | None] = Script(
    "takeover", ("cid", "now_ms", "ttl_ms", "maxlen"), _optional_list
)
TOOL_RESULT: Script[ToolRecord] = Script(
    "tool_result", (*FENCED, "step", "call_id", "message_json"), _literal(ToolRecord)
)
WAIT_BEGIN: Script[Wait] = Script(
    "wait_begin",
    (*FENCED, "step", "call_id", "kind", "deadline_ms", "event_json", "data_json", "now_ms",
     "maxlen", "cid"),
    _literal(Wait),
)  # fmt: skip
WAKE: Script[list[Any] | str | None] = Script(
    "wake", ("call_id", "kinds", "wake_kind", "content", "now_ms", "grace_ms", "cid"), _raw
)
WEBHOOK_DUE: Script[list[str]] = Script("webhook_due", ("now_ms", "hold_ms", "limit"), _strs)
WEBHOOK_HOLD: Script[Hold] = Script("webhook_hold", ("run_id", "chain", "until_ms"), _literal(Hold))

SCRIPTS: dict[str, Script[Any]] = {
    s.name: s for s in list(globals().values()) if isinstance(s, Script)
}
"""Every script by name (``tests/test_scripts.py``: one spec per ``lua/*.lua``)."""
