"""MkDocs hook: the configuration reference page, written from the models at build time.

``reference.md`` is never checked in: every ``mkdocs build`` renders it from
``walrus_tasks.settings.Settings`` (the ``WALRUS_*`` environment) and the models of
``walrus_tasks.config`` (the config directory), so a field added to a model is documented by
its ``description`` and no page can fall behind. ``tests/test_docs_site.py`` checks the page
names every field.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from walrus_tasks.config import (
    AgentConfig,
    GatewayConfig,
    McpServerConfig,
    TokenGrant,
    WebhooksConfig,
)
from walrus_tasks.config_providers import Price, ProviderConfig, TenantConfig
from walrus_tasks.settings import Settings
from walrus_tasks.skills import Skill

PAGE = "reference.md"

INTRO = """\
# Configuration reference

Generated when the site is built (`docs/hooks/config_reference.py`) from the models the
processes load: `walrus_tasks/settings.py` (`Settings`, the environment) and
`walrus_tasks/config.py` (the config directory). How the pieces fit together, with examples,
is in [Configuration](configuration.md).
"""

SETTINGS_INTRO = """\
## Process settings: `WALRUS_*` environment variables

Every process (gateway, worker, beat, `walrus up`, the CLI) reads these from its environment
once, at start.
"""

FILES_INTRO = """\
## The config directory (`WALRUS_HOME`)

`config.toml` holds providers, the gateway's tokens, MCP servers, tenants, webhooks and prices;
`agents/<name>.toml` one agent each (its system prompt there or in `agents/<name>.md`);
`skills/<name>/SKILL.md` one skill each. A value may be `${VAR}`, read from the environment
(an unset variable is a config error). An unknown key is a config error too.
"""

SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("`[providers.<name>]` in config.toml", ProviderConfig, "providers.<name>"),
    ("`[gateway]` in config.toml", GatewayConfig, "gateway"),
    (
        "`[gateway] tokens` entries: a string (an admin token) or a table",
        TokenGrant,
        "gateway.tokens[]",
    ),
    ("`[mcps.<name>]` in config.toml", McpServerConfig, "mcps.<name>"),
    ("`[tenants.<name>]` in config.toml (`*`: every other tenant)", TenantConfig, "tenants.<name>"),
    ("`[webhooks]` in config.toml", WebhooksConfig, "webhooks"),
    ('`[prices."<model>"]` in config.toml', Price, "prices.<model>"),
    ("`agents/<name>.toml`", AgentConfig, ""),
    ("`skills/<name>/SKILL.md` front matter (`allowed-tools` for `allowed_tools`)", Skill, ""),
]
"""Each table of the config directory: its heading, its model, its TOML path."""

SKIPPED = {(AgentConfig, "name"), (Skill, "name"), (Skill, "body")}
"""Fields a file gives by its name or its text, not by a key."""


def type_name(annotation: Any) -> str:
    """A field's type as a reader writes it: ``float | None``, ``list[str]``, ``"a" | "b"``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in args)
    if origin in (types.UnionType, typing.Union):
        return " \\| ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    if annotation is SecretStr:
        return "str (secret)"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return getattr(annotation, "__name__", str(annotation))


def default_of(field: FieldInfo) -> str:
    """The field's default as it would be written, or *required*."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "*required*"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(see below)"
    if value is None or value == {} or value == []:
        return "none" if value is None else f"`{value!r}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    return f"`{value}`"


def constraints(field: FieldInfo) -> str:
    """The bounds and pattern pydantic checks, e.g. ``≥ 0``, ``pattern ^(json|console)$``."""
    out = []
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            out.append(f"≥ {m.ge}")
        elif isinstance(m, annotated_types.Gt):
            out.append(f"> {m.gt}")
        elif isinstance(m, annotated_types.Le):
            out.append(f"≤ {m.le}")
        elif isinstance(m, annotated_types.Lt):
            out.append(f"< {m.lt}")
        elif getattr(m, "pattern", None):
            out.append(f"`{m.pattern}`")
    return ", ".join(out)


def cell(text: str) -> str:
    """Prose safe inside a markdown table cell: no column break, no HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def prose(docstring: str | None) -> str:
    """A docstring's first paragraph, its reST ````code```` as markdown ```code```."""
    first = (docstring or "").strip().split("\n\n")[0]
    return " ".join(first.split()).replace("``", "`")


def describe(field: FieldInfo) -> str:
    """The description, then the constraints in brackets."""
    text = cell(field.description or "")
    bounds = constraints(field)
    return f"{text} ({bounds})" if bounds and text else text or bounds


def row(key: str, field: FieldInfo) -> str:
    """One table row: the key, its type, its default, what it does."""
    return f"| `{key}` | {type_name(field.annotation)} | {default_of(field)} | {describe(field)} |"


def settings_table() -> Iterator[str]:
    """One row per ``Settings`` field: its variable, type, default and description."""
    prefix = Settings.model_config.get("env_prefix", "")
    yield "| variable | type | default | what |"
    yield "|---|---|---|---|"
    for name, field in Settings.model_fields.items():
        env = f"{prefix}{name}".upper()
        yield row(env, field)


def nested_models(annotation: Any) -> Iterator[type[BaseModel]]:
    """The models a field's type holds directly (``BashConfig``, ``dict[str, Limits]``…)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from nested_models(arg)


def model_section(heading: str, model: type[BaseModel], path: str, level: int = 3) -> Iterator[str]:
    """A model's table, then one section per table nested in it (``[bash.limits]``…)."""
    yield f"{'#' * level} {heading}"
    yield ""
    doc = prose(model.__doc__)
    if doc:
        yield doc
        yield ""
    yield "| key | type | default | what |"
    yield "|---|---|---|---|"
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        if (model, name) in SKIPPED:
            continue
        yield row(name, field)
        for sub in nested_models(field.annotation):
            if sub is not model and sub is not TokenGrant:
                keyed = typing.get_origin(field.annotation) is dict
                nested.append((f"{path}.{name}" + (".<name>" if keyed else ""), sub))
    for sub_path, sub in nested:
        yield ""
        yield from model_section(f"`[{sub_path.lstrip('.')}]`", sub, sub_path, level + 1)


def render() -> str:
    """The whole reference page (markdown)."""
    lines = [INTRO, SETTINGS_INTRO, *settings_table(), "", FILES_INTRO]
    for heading, model, path in SECTIONS:
        lines.extend(model_section(heading, model, path))
        lines.append("")
    return "\n".join(lines)


def on_files(files: Any, config: Any) -> Any:
    """MkDocs event: add the generated page to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
