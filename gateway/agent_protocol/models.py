"""Request bodies of the Agent Protocol routes (unknown LangGraph fields are accepted)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["reject", "enqueue", "interrupt", "rollback"]


class Loose(BaseModel):
    """A body that accepts the LangGraph fields walrus does not use."""

    model_config = ConfigDict(extra="allow")


class ThreadCreate(Loose):
    """``POST /threads``."""

    thread_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


class ThreadPatch(Loose):
    """``PATCH /threads/{thread_id}``."""

    metadata: dict[str, Any] = Field(default_factory=dict)


class Search(Loose):
    """``POST /threads/search``, ``/assistants/search``, ``/runs/crons/search``."""

    metadata: dict[str, Any] | None = None
    status: str | None = None
    ids: list[str] | None = None
    graph_id: str | None = None
    name: str | None = None
    assistant_id: str | None = None
    thread_id: str | None = None
    limit: int = Field(default=10, ge=0, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: str | None = None
    sort_order: Literal["asc", "desc"] | None = None


class RunCreate(Loose):
    """``POST /threads/{thread_id}/runs[/stream|/wait]`` and the stateless ``/runs…``."""

    assistant_id: str
    input: Any = None
    command: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: str | list[str] | None = None
    multitask_strategy: Strategy = "reject"
    if_not_exists: Literal["create", "reject"] = "reject"
    webhook: str | None = None

    def modes(self) -> list[str]:
        """The stream modes asked for (``values`` by default)."""
        if self.stream_mode is None:
            return ["values"]
        return [self.stream_mode] if isinstance(self.stream_mode, str) else list(self.stream_mode)


class CronCreate(Loose):
    """``POST /runs/crons`` and ``/threads/{thread_id}/runs/crons``."""

    assistant_id: str
    schedule: str
    input: Any = None
    metadata: dict[str, Any] | None = None
    timezone: str | None = None
    webhook: str | None = None


class StoreItem(Loose):
    """``PUT /store/items``."""

    namespace: list[str]
    key: str = Field(min_length=1)
    value: dict[str, Any]


class StoreKey(Loose):
    """``DELETE /store/items``."""

    namespace: list[str]
    key: str


class StoreSearch(Loose):
    """``POST /store/items/search``."""

    namespace_prefix: list[str] = Field(default_factory=list)
    filter: dict[str, Any] | None = None
    query: str | None = None
    limit: int = Field(default=10, ge=0, le=1000)
    offset: int = Field(default=0, ge=0)


class NamespaceSearch(Loose):
    """``POST /store/namespaces``."""

    prefix: list[str] | None = None
    suffix: list[str] | None = None
    max_depth: int | None = None
    limit: int = Field(default=100, ge=0, le=1000)
    offset: int = Field(default=0, ge=0)
