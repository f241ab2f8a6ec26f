"""Skills: ``skills/<name>/SKILL.md`` (front matter + body), and ``/name rest`` expansion."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from walrus_tasks.errors import ConfigError
from walrus_tasks.names import AGENT_RE

_FRONT_RE = re.compile(r"\A---\s*\n(.*?)\n---\s*\n?(.*)\Z", re.S)
_INVOKE_RE = re.compile(r"\A/([a-z0-9][a-z0-9_-]{0,63})(?:\s+(.*))?\Z", re.S)


class Skill(BaseModel):
    """One skill: what the model is told when it is invoked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    allowed_tools: list[str] = Field(
        default_factory=list, description="while invoked, the run may call only these (if any)"
    )
    body: str


def _front_matter(text: str, path: Path) -> tuple[dict[str, str | list[str]], str]:
    """The ``key: value`` lines between ``---`` fences, and the body after them."""
    m = _FRONT_RE.match(text)
    if m is None:
        return {}, text
    meta: dict[str, str | list[str]] = {}
    key = ""
    for line in m[1].splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.lstrip().startswith("- ") and key:  # a YAML block list under the last key
            item = line.strip()[2:].strip().strip("\"'")
            current = meta.get(key)
            meta[key] = [*current, item] if isinstance(current, list) else [item]
            continue
        if ":" not in line:
            raise ConfigError(f"{path}: front matter line {line!r} is not 'key: value'")
        key, value = (part.strip() for part in line.split(":", 1))
        if value.startswith("[") and value.endswith("]"):
            meta[key] = [v.strip().strip("\"'") for v in value[1:-1].split(",") if v.strip()]
        else:
            meta[key] = value.strip("\"'") if value else []
    return meta, m[2]


def _tool_list(value: str | list[str]) -> list[str]:
    if isinstance(value, list):
        return value
    return [t for t in re.split(r"[,\s]+", value) if t]


def load_skill(path: Path) -> Skill:
    """Parse one ``SKILL.md``; the skill's name is its directory's name."""
    name = path.parent.name
    meta, body = _front_matter(path.read_text(encoding="utf-8"), path)
    declared = meta.get("name", name)
    if declared != name:
        raise ConfigError(f"{path}: front matter name {declared!r} differs from directory {name!r}")
    description = meta.get("description", "")
    return Skill(
        name=name,
        description=description if isinstance(description, str) else " ".join(description),
        allowed_tools=_tool_list(meta.get("allowed-tools", [])),
        body=body.strip() + "\n",
    )


def load_skills(directory: Path) -> dict[str, Skill]:
    """Every ``<directory>/<name>/SKILL.md``; names follow the agent-name rule."""
    skills: dict[str, Skill] = {}
    for path in sorted(directory.glob("*/SKILL.md")) if directory.is_dir() else []:
        if not AGENT_RE.fullmatch(path.parent.name):
            raise ConfigError(f"{path}: skill directory name must match {AGENT_RE.pattern}")
        skills[path.parent.name] = load_skill(path)
    return skills


def invoked(text: str, available: dict[str, Skill]) -> tuple[Skill, str] | None:
    """``(skill, rest)`` when ``text`` is ``/name rest`` for a skill in ``available``."""
    m = _INVOKE_RE.match(text.strip())
    if m is None or m[1] not in available:
        return None
    return available[m[1]], (m[2] or "").strip()


def expand(skill: Skill, rest: str) -> str:
    """What the model sees for ``/name rest``: the request, then the skill's instructions."""
    head = rest or f"Run the {skill.name} skill."
    return f'{head}\n\n<skill name="{skill.name}">\n{skill.body}</skill>'
