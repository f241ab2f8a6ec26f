"""Which webhook URLs a config allows (``[webhooks] allowed_hosts``): unit tests, no Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from walrus_tasks.config import Config, WebhooksConfig, load_config
from walrus_tasks.errors import ConfigError, InvalidInput
from walrus_tasks.webhooks import check_url


def config(*hosts: str) -> Config:
    return Config(home=Path("."), webhooks=WebhooksConfig(allowed_hosts=list(hosts)))


@pytest.mark.parametrize(
    ("hosts", "url"),
    [
        (("hooks.example.com",), "https://hooks.example.com/x?token=1"),
        (("hooks.example.com",), "http://HOOKS.example.com/x"),
        (("hooks.example.com",), "https://hooks.example.com:443/x"),
        (("127.0.0.1:9000",), "http://127.0.0.1:9000/hook"),
        (("[::1]:9000",), "http://[::1]:9000/hook"),
    ],
)
def test_an_allowed_host_and_port_is_accepted(hosts: tuple[str, ...], url: str) -> None:
    assert check_url(config(*hosts), url) == url


@pytest.mark.parametrize(
    ("hosts", "url"),
    [
        ((), "https://hooks.example.com/x"),
        (("hooks.example.com",), "https://hooks.example.com:8443/x"),  # not the default port
        (("hooks.example.com",), "https://evil.example/hooks.example.com"),
        (("hooks.example.com",), "https://hooks.example.com.evil.example/x"),
        (("127.0.0.1:9000",), "http://127.0.0.1:9001/hook"),
        (("127.0.0.1:9000",), "http://127.0.0.1/hook"),
        (("hooks.example.com",), "ftp://hooks.example.com/x"),
        (("hooks.example.com",), "hooks.example.com/x"),
        (("hooks.example.com",), "http://hooks.example.com:99999/x"),
    ],
)
def test_any_other_url_is_invalid_input_naming_only_the_host(
    hosts: tuple[str, ...], url: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_url(config(*hosts), url + "secret-query")
    assert refused.value.status == 422 and "secret-query" not in refused.value.message


@pytest.mark.parametrize("entry", ["https://hooks.example.com", "hooks.example.com/x", "a:b", ""])
def test_an_allowed_hosts_entry_that_is_no_host_is_a_config_error(
    tmp_path: Path, entry: str
) -> None:
    (tmp_path / "config.toml").write_text(f'[webhooks]\nallowed_hosts = ["{entry}"]\n')
    with pytest.raises(ConfigError, match="allowed_hosts"):
        load_config(tmp_path)
