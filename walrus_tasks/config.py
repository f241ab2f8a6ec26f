"""Loading the config directory: ``config.toml``, ``agents/<name>.toml`` and ``<name>.md``."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from walrus_tasks.config_providers import Limits as Limits
from walrus_tasks.config_providers import Price, TenantConfig
from walrus_tasks.config_providers import ProviderConfig as ProviderConfig
from walrus_tasks.durations import duration_seconds
from walrus_tasks.errors import ConfigError, NotFound, describe_invalid
from walrus_tasks.names import AGENT_RE
from walrus_tasks.skills import Skill, load_skills
from walrus_tasks.tool_names import BUILTIN_TOOLS

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

DEFAULT_AGENT = "assistant"
"""The agent ``walrus init`` writes: the offline mock model, so a first run needs no key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MockConfig(_Strict):
    """The built-in offline model: streams ``reply`` one word per chunk."""

    reply: str = Field(default="Hello from the mock model.", description="the answer it streams")
    chunk_delay_ms: int = Field(default=0, ge=0, description="milliseconds between two chunks")
    tool_calls: list[str] = Field(default_factory=list, description="tools to call on step 0")
    fail: str | None = Field(default=None, description="raise this error instead of answering")


MCP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
"""MCP server names: they prefix tool names (``<server>__<tool>``), so no ``_`` runs."""


class HeartbeatConfig(_Strict):
    """Per-agent timer (driven by beat): send ``prompt`` to ``(agent, "heartbeat")`` each tick."""

    interval: float | str = Field(
        # 0.0, not 0: a default is not validated, and an int in a float | str field makes
        # every model_dump of the config warn (PydanticSerializationUnexpectedValue).
        default=0.0,
        description="minutes (a number; 0 = off), or a duration like '30s', '5m', '1h'",
    )
    prompt: str = Field(
        default="Heartbeat: check whether anything needs doing.",
        description="the message each tick sends",
    )

    @field_validator("interval")
    @classmethod
    def _duration(cls, value: float | str) -> float | str:
        if isinstance(value, str) and duration_seconds(value) is None:
            raise PydanticCustomError(
                "duration", "interval must be minutes (a number) or like '30s', '5m', '1h'"
            )
        if isinstance(value, int | float):
            if value < 0:
                raise PydanticCustomError("duration", "interval must be >= 0 (0 = off)")
            return float(value)  # an int would serialise with a warning (float | str)
        return value

    @property
    def seconds(self) -> float:
        """The interval in seconds (0 = off)."""
        if isinstance(self.interval, str):
            seconds = duration_seconds(self.interval)
            assert seconds is not None  # checked by the validator
            return seconds
        return float(self.interval) * 60


_SIZE_RE = re.compile(r"^(\d+)\s*([KMG]?)i?B?$", re.IGNORECASE)
GIB = 1024**3


class BashLimits(_Strict):
    """Resource limits of every process a ``bash`` command starts (``[bash.limits]``).

    Enforced with setrlimit before the sandbox starts. ``processes`` counts every process of the
    host uid the sandbox runs as (``RLIMIT_NPROC`` is per real uid), so the sandboxes of one
    host share it: see docs/security.md.
    """

    processes: int = Field(
        default=256, ge=1, description="processes (and threads) of the sandbox's host uid"
    )
    address_space: int = Field(
        default=2 * GIB,
        ge=64 * 1024**2,
        description="bytes of address space per process: a number, or like '512M', '2G'",
    )
    file_size: int = Field(
        default=GIB,
        ge=1,
        description="largest file a process may write, in bytes or like '100M', '1G'; also "
        "the size of the sandbox's private /tmp and /dev/shm",
    )
    cpu_seconds: int = Field(default=300, ge=1, description="CPU seconds per process")
    open_files: int = Field(default=1024, ge=16, description="open files per process")

    @field_validator("address_space", "file_size", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        m = _SIZE_RE.fullmatch(value.strip())
        if not m:
            raise PydanticCustomError(
                "size", "a size must be bytes (a number) or like '512K', '100M', '2G'"
            )
        return int(m[1]) * 1024 ** " KMG".index(m[2].upper())  # "" finds index 0: bytes


class BashConfig(_Strict):
    """The ``bash`` tool's rules for one agent."""

    disabled: bool = Field(default=False, description="refuse every command")
    deny: list[str] = Field(
        default_factory=list,
        description="refuse commands that run one of these (e.g. 'rm -rf'), or contain them",
    )
    deny_senders: list[str] = Field(
        default_factory=list, description="refuse senders matching these globs, e.g. 'bot:*'"
    )
    timeout: float = Field(default=30.0, gt=0, description="seconds before the command is killed")
    max_output: int = Field(
        default=32 * 1024, gt=0, description="bytes kept of stdout and of stderr"
    )
    network: bool = Field(
        default=False,
        description="in the bubblewrap sandbox, whether commands reach the network (and Redis)",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="variables every command gets (the worker's never)"
    )
    limits: BashLimits = Field(
        default_factory=BashLimits, description="resource limits of the command's processes"
    )


Permission = Literal["allow", "ask", "deny"]


class McpServerConfig(_Strict):
    """One MCP server: a stdio command (``command, args, env``) or streamable HTTP (``url``)."""

    command: str | None = Field(default=None, description="a stdio server: the program to start")
    args: list[str] = Field(
        default_factory=list, description="its arguments (relative paths: the config directory)"
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="variables it gets besides HOME, PATH, USER…"
    )
    url: str | None = Field(default=None, description="a streamable-HTTP server: its URL")
    timeout: float = Field(default=30.0, gt=0, description="seconds for connect and each call")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise PydanticCustomError(
                "mcp_transport", "give exactly one of command (stdio) or url (streamable HTTP)"
            )
        return self


class AgentConfig(_Strict):
    """A configured persona."""

    name: str
    model: str = Field(default="mock", description="'<provider>/<model>', or mock (offline)")
    description: str = ""
    system_prompt: str = Field(default="", description="or in agents/<name>.md")
    max_iterations: int = Field(default=16, ge=1, description="steps (LLM calls) one run may take")
    tools: list[str] = Field(default_factory=list, description="the built-in tools it may call")
    members: list[str] = Field(default_factory=list, description="the agents it may delegate to")
    skills: list[str] = Field(default_factory=list, description="skills/<name>/SKILL.md it has")
    mcps: list[str] = Field(default_factory=list, description="the MCP servers it may use")
    permissions: dict[str, Permission] = Field(
        default_factory=dict, description="per tool: allow (default) | ask | deny"
    )
    workdir: str | None = Field(
        default=None, description="default working directory; default <home>/workspaces/<agent>"
    )
    bash: BashConfig = Field(default_factory=BashConfig)
    recall_limit: int = Field(default=5, ge=0, description="memory hits injected per run")
    compact_threshold: int = Field(
        default=100_000, ge=0, description="estimated tokens (chars/4) that trigger compaction"
    )
    ask_timeout: float = Field(default=300.0, gt=0, description="seconds ask_user waits")
    delegate_timeout: float = Field(
        default=600.0, gt=0, description="seconds a foreground delegate waits for its tasks"
    )
    retries: int = Field(default=4, ge=0, description="retries of a transient provider error")
    max_retry_wait: float = Field(
        default=60.0, gt=0, description="longest wait before one retry, in seconds"
    )
    fallback_models: list[str] = Field(
        default_factory=list,
        description="'<provider>/<model>' tried in order once retries are exhausted, or when "
        "the request is too long for the model",
    )
    priority: int = Field(
        default=0,
        description="higher starts first among its tenant's queued runs (walrus_tasks.fair)",
    )
    mock: MockConfig = Field(default_factory=MockConfig)
    heartbeat: HeartbeatConfig = Field(default_factory=HeartbeatConfig)

    @property
    def provider_name(self) -> str:
        """``local`` for ``local/gpt-4o-mini``; ``mock`` for the built-in model."""
        return "mock" if self.model == "mock" else self.model.split("/", 1)[0]

    @property
    def model_name(self) -> str:
        """``gpt-4o-mini`` for ``local/gpt-4o-mini``."""
        return "mock" if self.model == "mock" else self.model.split("/", 1)[1]


MIN_TOKEN_LENGTH = 16
"""Shortest bearer token accepted: anything shorter is guessable."""

_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")


class TokenGrant(_Strict):
    """One bearer token of the gateway: full access, or limited to ``agents``.

    Without ``tenant`` it is an admin token; with one it acts in that tenant only
    (``walrus_tasks.tenancy``).
    """

    token: SecretStr = Field(description="at least 16 printable characters, no spaces")
    agents: frozenset[str] | None = Field(
        default=None, description="the agents this token may use; None = every agent"
    )
    tenant: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the tenant this token acts in (and only in); None = an admin token, which "
        "acts in the default tenant or the one a request names",
    )

    @field_validator("token")
    @classmethod
    def _strong(cls, value: SecretStr) -> SecretStr:
        # Never echo the token: these messages end up in logs and on stderr.
        token = value.get_secret_value()
        if not token:
            raise PydanticCustomError(
                "token_empty", "token is empty (an environment variable set to an empty string?)"
            )
        if len(token) < MIN_TOKEN_LENGTH:
            raise PydanticCustomError(
                "token_short",
                "token is {length} characters; at least {minimum} are required",
                {"length": len(token), "minimum": MIN_TOKEN_LENGTH},
            )
        if not _TOKEN_RE.fullmatch(token):
            raise PydanticCustomError("token_chars", "token must be printable ASCII without spaces")
        return value

    @field_validator("agents")
    @classmethod
    def _agent_names(cls, value: frozenset[str] | None) -> frozenset[str] | None:
        if value is None:
            return None
        if not value:
            raise PydanticCustomError(
                "agents_empty",
                "agents is empty; list at least one agent (a plain string token has full access)",
            )
        for name in sorted(value):
            if not AGENT_RE.fullmatch(name):
                raise PydanticCustomError(
                    "agent_name", "'{name}' is not a valid agent name", {"name": name}
                )
        return value

    def permits(self, agent: str) -> bool:
        """True if this token may act on ``agent``."""
        return self.agents is None or agent in self.agents


class GatewayConfig(_Strict):
    """Gateway options that live in ``config.toml``.

    ``tokens`` entries are strings (full access, admin) or tables ``{token, agents, tenant}``
    (limited to those agents, acting in that tenant only); both load as :class:`TokenGrant`.
    """

    tokens: list[TokenGrant] = Field(
        default_factory=list, description="bearer tokens; none: no auth, loopback only"
    )

    @field_validator("tokens", mode="before")
    @classmethod
    def _tables(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for i, entry in enumerate(value):
            if isinstance(entry, str | SecretStr):
                entry = {"token": entry}
            elif not isinstance(entry, dict | TokenGrant):
                raise PydanticCustomError(
                    "token_entry",
                    "entry {index} must be a string or a table with token and agents",
                    {"index": i},
                )
            out.append(entry)
        return out

    @field_validator("tokens")
    @classmethod
    def _distinct(cls, value: list[TokenGrant]) -> list[TokenGrant]:
        secrets = [g.token.get_secret_value() for g in value]
        if len(set(secrets)) != len(secrets):
            raise PydanticCustomError("token_duplicate", "the same token is listed twice")
        return value


class WebhooksConfig(_Strict):
    """``[webhooks]``: where the Agent Protocol's ``webhook`` URLs may point, and how hard to try.

    An entry of ``allowed_hosts`` is ``host`` (the scheme's default port: 80 or 443) or
    ``host:port`` (``[v6]:port`` for IPv6); nothing else is called.
    """

    allowed_hosts: list[str] = Field(
        default_factory=list, description="host or host:port a webhook URL may name"
    )
    retries: int = Field(
        default=3, ge=0, le=20, description="retries of a 5xx, a 429 or a connection error"
    )
    timeout: float = Field(
        default=30.0, gt=0, le=300, description="seconds for each read and write of a POST"
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            try:
                parts = urlsplit("//" + entry.strip())
                port = parts.port
            except ValueError:
                port, parts = -1, urlsplit("")
            if not parts.hostname or port == -1 or parts.path or parts.username or "@" in entry:
                raise PydanticCustomError(
                    "webhook_host",
                    "{entry!r} is not a host or host:port (e.g. 'hooks.example.com', "
                    "'127.0.0.1:9000')",
                    {"entry": entry},
                )
            out.append(entry.strip().lower())
        return out


_FREE = Price(input_per_mtok=0, output_per_mtok=0)
"""The price of the offline ``mock`` model."""
_NO_LIMIT = TenantConfig()
"""A tenant with no table (frozen, so one serves every call: each LLM call asks)."""


class Config(_Strict):
    """The whole config directory, loaded."""

    home: Path
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    mcps: dict[str, McpServerConfig] = Field(default_factory=dict)
    skills: dict[str, Skill] = Field(default_factory=dict)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    prices: dict[str, Price] = Field(default_factory=dict)

    def price(self, model: str) -> Price | None:
        """The price of ``model`` (``provider/name``): its own entry, else its name's, else None.

        The offline ``mock`` model costs nothing unless the table says otherwise.
        """
        found = self.prices.get(model) or self.prices.get(model.split("/", 1)[-1])
        return found or (_FREE if model == "mock" else None)

    def tenant(self, name: str) -> TenantConfig:
        """The tenant's table, else ``[tenants."*"]``, else no limit."""
        return self.tenants.get(name) or self.tenants.get("*") or _NO_LIMIT

    @field_validator("mcps")
    @classmethod
    def _mcp_names(cls, value: dict[str, McpServerConfig]) -> dict[str, McpServerConfig]:
        for name in value:
            if not MCP_NAME_RE.fullmatch(name):
                raise PydanticCustomError(
                    "mcp_name",
                    "MCP server name {name!r} must match {pattern}",
                    {"name": name, "pattern": MCP_NAME_RE.pattern},
                )
        return value

    def agent(self, name: str) -> AgentConfig:
        """The agent called ``name``, or NotFound."""
        try:
            return self.agents[name]
        except KeyError:
            raise NotFound(f"unknown agent {name!r}") from None


def expand_env(value: Any, where: str) -> Any:
    """Replace ``${VAR}`` in every string of ``value``; an unset variable is a ConfigError."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            var = match.group(1)
            if var not in os.environ:
                raise ConfigError(f"{where}: environment variable {var} is not set")
            return os.environ[var]

        return _ENV_RE.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v, where) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, where) for k, v in value.items()}
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return expand_env(tomllib.load(f), str(path))  # type: ignore[no-any-return]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e


def load_config(home: Path) -> Config:
    """Load and validate the config directory at ``home``; raise ConfigError on any problem."""
    home = Path(home)
    raw: dict[str, Any] = {}
    if (home / "config.toml").is_file():
        raw = _read_toml(home / "config.toml")
    agents: dict[str, AgentConfig] = {}
    agents_dir = home / "agents"
    for path in sorted(agents_dir.glob("*.toml")) if agents_dir.is_dir() else []:
        name = path.stem
        if not AGENT_RE.fullmatch(name):
            raise ConfigError(f"{path}: agent file name must match {AGENT_RE.pattern}")
        data = _read_toml(path)
        prompt = path.with_suffix(".md")
        if prompt.is_file() and "system_prompt" not in data:
            data["system_prompt"] = prompt.read_text(encoding="utf-8")
        try:
            agents[name] = AgentConfig(name=name, **data)
        except ValidationError as e:
            raise ConfigError(f"{path}: {describe_invalid(e.errors(), '(root)')}") from None
        except TypeError as e:
            raise ConfigError(f"{path}: {e}") from None
    try:
        config = Config(home=home, agents=agents, skills=load_skills(home / "skills"), **raw)
    except ValidationError as e:
        raise ConfigError(
            f"{home / 'config.toml'}: {describe_invalid(e.errors(), '(root)')}"
        ) from None
    _check_references(config)
    return config


def _check_references(config: Config) -> None:
    """Every name an agent lists (provider, tool, member, skill, MCP server) must exist.

    So must the provider a price names (``[prices."openai/gpt-4o"]``).
    """
    for model in config.prices:
        provider, slash, name = model.partition("/")
        if not model.strip() or (slash and not name):
            raise ConfigError(f"prices: {model!r} must be '<provider>/<model>' or '<model>'")
        if slash and provider not in config.providers:
            raise ConfigError(
                f"prices: {model!r} names provider {provider!r}, which is not defined in "
                f"config.toml (defined: {sorted(config.providers) or 'none'})"
            )
    for agent in config.agents.values():
        unknown = [name for name in agent.tools if name not in BUILTIN_TOOLS]
        if unknown:
            raise ConfigError(
                f"agent {agent.name}: unknown tool {unknown[0]!r} "
                f"(known tools: {', '.join(sorted(BUILTIN_TOOLS))}; an MCP server's tools come "
                "with mcps)"
            )
        for model in (agent.model, *agent.fallback_models):
            if model == "mock":
                continue
            if "/" not in model:
                raise ConfigError(
                    f"agent {agent.name}: model {model!r} must be 'mock' or '<provider>/<model>'"
                )
            provider = model.split("/", 1)[0]
            if provider not in config.providers:
                raise ConfigError(
                    f"agent {agent.name}: provider {provider!r} is not defined in "
                    f"config.toml (defined: {sorted(config.providers) or 'none'})"
                )
        for kind, names, known in (
            ("member", agent.members, config.agents),
            ("skill", agent.skills, config.skills),
            ("mcp server", agent.mcps, config.mcps),
        ):
            for name in names:
                if name not in known:
                    raise ConfigError(
                        f"agent {agent.name}: {kind} {name!r} is not defined "
                        f"(defined: {sorted(known) or 'none'})"
                    )


def init_home(home: Path) -> bool:
    """Write a starter config directory (one mock agent) if ``home`` has none; True if written."""
    home = Path(home)
    if (home / "config.toml").exists() or (home / "agents").is_dir():
        return False
    (home / "agents").mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        "# walrus_tasks configuration. Providers, e.g.:\n"
        "# [providers.openai]\n"
        '# kind = "openai"\n'
        '# api_key = "${OPENAI_API_KEY}"\n',
        encoding="utf-8",
    )
    (home / "agents" / f"{DEFAULT_AGENT}.toml").write_text(
        'model = "mock"\n'
        'description = "Offline demo agent (the built-in mock model)"\n'
        "[mock]\n"
        'reply = "Hello! I am the walrus mock model, streaming one word at a time."\n'
        "chunk_delay_ms = 40\n",
        encoding="utf-8",
    )
    (home / "agents" / f"{DEFAULT_AGENT}.md").write_text(
        "You are a helpful assistant.\n", encoding="utf-8"
    )
    return True
