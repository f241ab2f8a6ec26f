"""LLM providers."""

from __future__ import annotations

from walrus_tasks.config import AgentConfig, Config, ProviderConfig
from walrus_tasks.errors import ProviderError
from worker.providers.anthropic import AnthropicProvider
from worker.providers.base import Provider
from worker.providers.mock import MockProvider
from worker.providers.openai import OpenAIProvider

_MOCK = MockProvider()


def provider_for(agent: AgentConfig, config: Config) -> Provider:
    """The provider that answers ``agent``: the built-in mock, or its configured endpoint.

    A provider only holds its config, so one is built per call (a reloaded config takes effect
    at once); the SDK clients behind it are cached by ``base.cached_client``.
    """
    if agent.model == "mock":
        return _MOCK
    provider_config = config.providers.get(agent.provider_name)
    if provider_config is None:
        raise ProviderError(
            f"agent {agent.name}: provider {agent.provider_name!r} is not configured "
            f"(configured: {sorted(config.providers) or 'none'})"
        )
    return _build(provider_config)


def _build(config: ProviderConfig) -> Provider:
    if config.kind == "anthropic":
        return AnthropicProvider(config)
    return OpenAIProvider(config)
