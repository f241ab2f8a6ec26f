"""The ``config.toml`` tables of providers and tenants: endpoints, timeouts, shared limits.

::

    [providers.openai]
    kind = "openai"
    api_key = "${OPENAI_API_KEY}"
    connect_timeout = 5          # seconds to open the connection
    read_timeout = 60            # seconds between two bytes of the answer
    first_token_timeout = 30     # seconds from the request to the first streamed item
    max_concurrency = 8          # calls in flight across the whole cluster
    requests_per_minute = 500
    tokens_per_minute = 200000

    [providers.openai.models."gpt-4o"]   # limits of one model, on top of the provider's
    max_concurrency = 2

    [tenants.acme]                # per tenant (the sender's prefix up to ':' by default)
    max_concurrency = 4
    weight = 2

    [prices."openai/gpt-4o"]      # USD per million tokens (GET /v1/usage, walrus usage)
    input_per_mtok = 2.5
    output_per_mtok = 10.0
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Cluster-wide limits, enforced in Redis across every worker (None = unlimited)."""

    max_concurrency: int | None = Field(default=None, ge=1, description="calls in flight")
    requests_per_minute: int | None = Field(default=None, ge=1, description="calls started")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="estimated input tokens (chars/4) plus output tokens"
    )

    @property
    def limited(self) -> bool:
        """True when any limit is set."""
        return any((self.max_concurrency, self.requests_per_minute, self.tokens_per_minute))


class ProviderConfig(Limits):
    """One named LLM endpoint, its timeouts and its limits (and those of its models)."""

    kind: Literal["openai", "anthropic"] = Field(description="the API it speaks")
    base_url: str | None = Field(default=None, description="default: the vendor's API")
    api_key: str | None = Field(default=None, description='e.g. "${OPENAI_API_KEY}"')
    timeout: float = Field(default=120.0, gt=0, description="seconds for the whole request")
    connect_timeout: float = Field(default=10.0, gt=0, description="seconds to connect")
    read_timeout: float | None = Field(
        default=None, gt=0, description="seconds between two reads; default: timeout"
    )
    first_token_timeout: float | None = Field(
        default=None, gt=0, description="seconds until the first streamed item; default: none"
    )
    max_tokens: int = Field(default=4096, description="output tokens asked for (Anthropic)")
    models: dict[str, Limits] = Field(default_factory=dict, description="limits per model")


class TenantConfig(_Strict):
    """One tenant's share of the cluster (``[tenants."*"]`` is every other tenant's)."""

    max_concurrency: int | None = Field(
        default=None, ge=1, description="LLM steps of the tenant in flight at once"
    )
    weight: int = Field(default=1, ge=1, description="turns per round of the fair dispatcher")


class Price(_Strict):
    """What one model costs, in US dollars per million tokens: the cost of ``GET /v1/usage``.

    Keyed by the model as agents name it (``"openai/gpt-4o"``), or by the model's own name
    (``"gpt-4o"``: under any provider); the full name wins. Cost is computed when usage is
    read, so a corrected price applies to the usage already counted too.
    """

    input_per_mtok: float = Field(ge=0, description="USD per million input tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million output tokens")
