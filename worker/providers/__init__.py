"""LLM providers.

The SDK-backed providers are imported on first use: ``anthropic`` and ``openai`` take seconds
of CPU to import, which a process that never calls them (a worker whose agents use the mock
model, a CLI) should not pay. ``import_sdks`` imports both at once, for a worker's parent
process to do before its pool forks (``worker.__main__``).
"""

from __future__ import annotations

import importlib

from walrus_tasks.config import AgentConfig, Config, ProviderConfig
from walrus_tasks.errors import ProviderError
from worker.providers.base import Provider
from worker.providers.mock import MockProvider

SDK_MODULES = ("worker.providers.anthropic", "worker.providers.openai")
"""The provider modules that import an SDK."""

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


def import_sdks() -> None:
    """Import the SDK-backed providers now (``SDK_MODULES``), not on their first call."""
    for module in SDK_MODULES:
        importlib.import_module(module)


def _build(config: ProviderConfig) -> Provider:
    if config.kind == "anthropic":
        from worker.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config)
    from worker.providers.openai import OpenAIProvider

    return OpenAIProvider(config)
