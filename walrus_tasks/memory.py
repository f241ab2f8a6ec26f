"""Per-agent memory: named notes an agent keeps across conversations, recalled by BM25.

An agent's entries are JSON in the hash ``walrus:memory:<agent>`` (name -> entry). The agent
writes them with its ``remember`` / ``forget`` tools and searches them with ``recall``; each
run also gets the best hits for the last user message in its context (``recall_context``),
rebuilt every run and never stored in the history.

Recall is Okapi BM25 over word tokens (lowercase letters and digits) of the name, the aliases
and the content. Name and alias tokens count ``FIELD_WEIGHT`` times: a note named after the
thing asked about beats one that mentions it in passing. An agent's whole memory is scored per
query; ``MAX_ENTRIES`` keeps that cheap.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from walrus_tasks import keys, tenancy, topology
from walrus_tasks.errors import InvalidInput, WalrusError
from walrus_tasks.names import agent_name

MAX_NAME = 128
"""Longest entry name or alias (characters)."""
MAX_CONTENT = 16 * 1024
"""Largest entry content (UTF-8 bytes): a note, not a document store."""
MAX_ALIASES = 16
"""Most aliases one entry may have."""
MAX_ENTRIES = 1000
"""Most entries one agent may keep (every recall scores all of them)."""
K1 = 1.2
"""BM25 term-frequency saturation."""
B = 0.75
"""BM25 document-length normalisation."""
FIELD_WEIGHT = 3
"""How many times a name or alias token counts against one content token."""

_TOKEN = re.compile(r"[^\W_]+")  # runs of letters and digits: "user_tz-v2" -> user, tz, v2


class MemoryEntry(BaseModel):
    """One stored note (times in Unix seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=MAX_NAME)
    content: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list, max_length=MAX_ALIASES)
    created_at: float
    updated_at: float


class MemoryHit(BaseModel):
    """One recall result: the entry's name and content, and its BM25 score (> 0)."""

    model_config = ConfigDict(frozen=True)

    name: str
    content: str
    score: float


def tokens(text: str) -> list[str]:
    """The lowercase word tokens of ``text``, as recall matches them."""
    return _TOKEN.findall(text.lower())


def _label(value: str, what: str) -> str:
    """A name or alias, stripped; InvalidInput if empty, too long or spanning lines."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    value = value.strip()
    if not value:
        raise InvalidInput(f"{what} is empty")
    if len(value) > MAX_NAME:
        raise InvalidInput(f"{what} is longer than {MAX_NAME} characters")
    if any(c in value for c in "\r\n"):  # rendered as "- name: content" in the prompt
        raise InvalidInput(f"{what} spans lines")
    return value


def _check_content(content: str) -> str:
    if not isinstance(content, str) or not content.strip():
        raise InvalidInput("content is empty")
    if len(content.encode("utf-8", "surrogatepass")) > MAX_CONTENT:
        raise InvalidInput(f"content is larger than {MAX_CONTENT // 1024} KiB")
    return content


def _check_aliases(aliases: list[str], name: str) -> list[str]:
    if not isinstance(aliases, list):
        raise InvalidInput("aliases must be a list of strings")
    out: list[str] = []
    for alias in aliases:
        alias = _label(alias, "an alias")
        if alias not in out and alias != name:  # duplicates would only inflate the score
            out.append(alias)
    if len(out) > MAX_ALIASES:
        raise InvalidInput(f"more than {MAX_ALIASES} aliases")
    return out


def _parse(raw: str | bytes, where: str) -> MemoryEntry:
    try:
        return MemoryEntry.model_validate_json(raw)
    except ValidationError as e:
        raise WalrusError(f"{where}: not a memory entry ({e.error_count()} errors)") from e


def remember(
    r: redis.Redis,
    agent: str,
    name: str,
    content: str,
    aliases: list[str] | None = None,
    tenant: str | None = None,
) -> MemoryEntry:
    """Store the entry ``name`` of ``agent``, replacing one of that name (keeping its created_at).

    The name and aliases are stripped. Raises InvalidInput for an empty or too long name or
    alias, empty or too large content, too many aliases, or a new entry past ``MAX_ENTRIES``.
    """
    key = keys.memory(agent_name(agent), tenant)
    name = _label(name, "name")
    content = _check_content(content)
    clean = _check_aliases(aliases or [], name)

    # WATCH: two upserts of one name race on created_at, and two new entries on MAX_ENTRIES.
    with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                old = pipe.hget(key, name)
                if old is None and pipe.hlen(key) >= MAX_ENTRIES:
                    raise InvalidInput(
                        f"memory is full ({MAX_ENTRIES} entries): forget something first"
                    )
                now = time.time()
                created = now if old is None else _parse(old, f"{key} {name}").created_at
                entry = MemoryEntry(
                    name=name, content=content, aliases=clean, created_at=created, updated_at=now
                )
                pipe.multi()
                pipe.hset(key, name, entry.model_dump_json())
                pipe.execute()
                return entry
            except redis.WatchError:
                continue


def forget(r: redis.Redis, agent: str, name: str, tenant: str | None = None) -> bool:
    """Delete the entry ``name`` of ``agent`` (in ``tenant``); False if there was none."""
    return bool(r.hdel(keys.memory(agent_name(agent), tenant), name.strip()))


def entries(r: redis.Redis, agent: str, tenant: str | None = None) -> list[MemoryEntry]:
    """Every entry of ``agent`` (in ``tenant``), sorted by name."""
    key = keys.memory(agent_name(agent), tenant)
    stored: dict[Any, Any] = r.hgetall(key)
    found = [_parse(raw, f"{key} {field!r}") for field, raw in stored.items()]
    return sorted(found, key=lambda e: e.name)


def rank(found: list[MemoryEntry], query: str, limit: int) -> list[MemoryHit]:
    """The ``limit`` entries of ``found`` that best match ``query`` by BM25, best first.

    Only entries sharing a token with the query score above 0, and only those are returned;
    ties go by name.
    """
    terms = set(tokens(query))
    if limit <= 0 or not terms or not found:
        return []
    docs: list[Counter[str]] = []
    for e in found:
        bag = Counter(tokens(e.content))
        for label in (e.name, *e.aliases):
            for t in tokens(label):
                bag[t] += FIELD_WEIGHT
        docs.append(bag)
    lengths = [sum(d.values()) for d in docs]
    avgdl = max(sum(lengths) / len(docs), 1.0)
    df = {t: sum(1 for d in docs if t in d) for t in terms}
    # Lucene's idf (the +1 inside the log): never negative, so a match always adds to the score.
    idf = {t: math.log(1 + (len(docs) - n + 0.5) / (n + 0.5)) for t, n in df.items()}
    hits = []
    for e, bag, dl in zip(found, docs, lengths, strict=True):
        norm = K1 * (1 - B + B * dl / avgdl)
        score = sum(idf[t] * bag[t] * (K1 + 1) / (bag[t] + norm) for t in terms if t in bag)
        if score > 0:
            hits.append(MemoryHit(name=e.name, content=e.content, score=score))
    hits.sort(key=lambda h: (-h.score, h.name))
    return hits[:limit]


def recall(
    r: redis.Redis, agent: str, query: str, limit: int, tenant: str | None = None
) -> list[MemoryHit]:
    """The ``limit`` entries of ``agent`` (in ``tenant``) that best match ``query`` (``rank``)."""
    if limit <= 0 or not tokens(query):
        return []  # skip the read: auto-recall runs on every message
    return rank(entries(r, agent, tenant), query, limit)


def recall_context(hits: list[MemoryHit]) -> str:
    """The hits as a block of the system prompt, ``""`` for none."""
    if not hits:
        return ""
    lines = ["Relevant memories (from your memory store; recall, remember, forget manage it):"]
    for h in hits:
        lines.append(f"- {h.name}: " + h.content.strip().replace("\n", "\n  "))
    return "\n".join(lines)


# --- export / import -------------------------------------------------------------------------


def dump(r: redis.Redis) -> dict[str, list[dict[str, Any]]]:
    """Every agent's entries as JSON-able dicts, by agent, sorted by name (lossless with load)."""
    prefix = keys.memory("")
    agents = sorted(k[len(prefix) :] for k in r.scan_iter(match=keys.memory("*"), count=1000))
    out: dict[str, list[dict[str, Any]]] = {}
    for agent in agents:
        try:
            agent_name(agent)
        except InvalidInput as e:
            raise WalrusError(f"memory of {agent!r} in Redis cannot be exported: {e}") from e
        found = entries(r, agent)
        if found:  # the hash may have emptied between the scan and the read
            out[agent] = [e.model_dump() for e in found]
    return out


def _tenant_keys(r: redis.Redis) -> list[tuple[str, str, str]]:
    """``(key, tenant, agent)`` of every named tenant's memory (not their other keys)."""
    found = []
    for key in r.scan_iter(match=keys.memory("*", "*"), count=1000):
        owner = keys.memory_owner(key)
        if owner is not None:
            found.append((key, *owner))
    return sorted(found)


def dump_tenants(r: redis.Redis) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every named tenant's memory: ``tenant -> agent -> entries`` (as :func:`dump` gives them)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for _, tenant, agent in _tenant_keys(r):
        try:
            tenancy.tenant_name(tenant)
            agent_name(agent)
        except InvalidInput as e:
            raise WalrusError(f"memory of {tenant}/{agent} cannot be exported: {e}") from e
        found = entries(r, agent, tenant)
        if found:
            out.setdefault(tenant, {})[agent] = [e.model_dump() for e in found]
    return out


def validate(data: dict[str, list[dict[str, Any]]]) -> dict[str, list[MemoryEntry]]:
    """Parse ``data`` (as :func:`dump` gives it); InvalidInput naming the first bad entry."""
    parsed: dict[str, list[MemoryEntry]] = {}
    for agent, items in data.items():
        agent_name(agent)
        seen: set[str] = set()
        parsed[agent] = []
        for n, item in enumerate(items, 1):
            try:
                entry = MemoryEntry.model_validate(item)
                _label(entry.name, "name")
                _check_content(entry.content)
                if _check_aliases(entry.aliases, entry.name) != entry.aliases:
                    raise InvalidInput("aliases are not stripped and unique")
            except (ValidationError, InvalidInput) as e:
                why = e.message if isinstance(e, InvalidInput) else f"{e.error_count()} errors"
                raise InvalidInput(f"memory of {agent}, entry {n}: {why}") from e
            if entry.name in seen:
                raise InvalidInput(f"memory of {agent}: entry {entry.name!r} is listed twice")
            seen.add(entry.name)
            parsed[agent].append(entry)
    return parsed


def load(
    r: redis.Redis,
    data: dict[str, list[dict[str, Any]]],
    tenants: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
) -> int:
    """Replace every agent's memory with ``data`` in one transaction; the entries stored.

    With ``tenants`` (as :func:`dump_tenants` gives it) every named tenant's memory is replaced
    too, in the same transaction; without, theirs is left as it is. Raises InvalidInput, and
    changes nothing, if an entry or a tenant's name is bad.
    """
    parsed: dict[tuple[str | None, str], list[MemoryEntry]] = {
        (None, agent): found for agent, found in validate(data).items()
    }
    for tenant, agents in (tenants or {}).items():
        tenancy.tenant_name(tenant)
        parsed |= {(tenant, agent): found for agent, found in validate(agents).items()}
    old = list(r.scan_iter(match=keys.memory("*"), count=1000))
    if tenants is not None:
        old += [key for key, _, _ in _tenant_keys(r)]
    pipe = topology.pipeline(r)
    for key in old:  # one a command: on a cluster they live in many slots
        pipe.delete(key)
    for (owner, agent), found in parsed.items():
        if found:
            mapping: dict[str | bytes, str] = {e.name: e.model_dump_json() for e in found}
            pipe.hset(keys.memory(agent, owner), mapping=mapping)
    pipe.execute()
    return sum(len(found) for found in parsed.values())
