"""The config directory as this worker process last loaded it."""

from __future__ import annotations

from functools import lru_cache

from walrus_tasks.config import Config, load_config
from walrus_tasks.settings import get_settings


@lru_cache(maxsize=1)
def current_config() -> Config:
    """The loaded config directory (loaded on first use, once per process)."""
    return load_config(get_settings().home)
