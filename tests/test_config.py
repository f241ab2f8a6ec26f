"""Config directory loading and name validation (narrow unit tests, no Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest

from walrus_tasks.config import init_home, load_config
from walrus_tasks.errors import ConfigError, InvalidInput, NotFound
from walrus_tasks.names import agent_name, sender_name
from walrus_tasks.tool_names import BUILTIN_TOOLS
from worker.tools import TOOLS


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_an_agent_with_a_prompt_file_and_env_expanded_provider_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_KEY", "sk-123")
    write(tmp_path / "config.toml", '[providers.local]\nkind = "openai"\napi_key = "${TEST_KEY}"\n')
    write(tmp_path / "agents/researcher.toml", 'model = "local/gpt"\nmax_iterations = 4\n')
    write(tmp_path / "agents/researcher.md", "Be thorough.\n")
    config = load_config(tmp_path)
    agent = config.agent("researcher")
    assert config.providers["local"].api_key == "sk-123"
    assert agent.system_prompt == "Be thorough.\n" and agent.max_iterations == 4
    assert (agent.provider_name, agent.model_name) == ("local", "gpt")
    with pytest.raises(NotFound):
        config.agent("nobody")


def test_a_price_is_found_by_the_models_full_name_else_by_its_own(tmp_path: Path) -> None:
    write(
        tmp_path / "config.toml",
        '[providers.oa]\nkind = "openai"\n'
        '[prices."gpt-4o"]\ninput_per_mtok = 2.5\noutput_per_mtok = 10\n'
        '[prices."oa/gpt-4o"]\ninput_per_mtok = 1.25\noutput_per_mtok = 5\n',
    )
    config = load_config(tmp_path)
    full, bare = config.price("oa/gpt-4o"), config.price("other/gpt-4o")
    assert full is not None and (full.input_per_mtok, full.output_per_mtok) == (1.25, 5.0)
    assert bare is not None and bare.input_per_mtok == 2.5
    assert config.price("oa/gpt-4o-mini") is None
    mock = config.price("mock")  # the offline model is free unless the table prices it
    assert mock is not None and (mock.input_per_mtok, mock.output_per_mtok) == (0, 0)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"config.toml": 'x = "${WALRUS_TEST_UNSET_VAR}"'}, "WALRUS_TEST_UNSET_VAR is not set"),
        ({"config.toml": "[providers\n"}, "config.toml"),
        ({"agents/a.toml": 'model = "nowhere/gpt"'}, "provider 'nowhere' is not defined"),
        ({"agents/a.toml": 'model = "gpt"'}, "must be 'mock' or '<provider>/<model>'"),
        ({"agents/a.toml": "max_iterations = 0"}, "max_iterations"),
        ({"agents/a.toml": "colour = 1"}, "colour"),
        ({"agents/Bad Name.toml": ""}, "agent file name"),
        ({"config.toml": '[providers.p]\nkind = "cohere"'}, "providers.p.kind"),
        ({"agents/a.toml": 'tools = ["clock", "nosuchtool"]'}, "unknown tool 'nosuchtool'"),
        (
            {"config.toml": '[prices."gpt"]\ninput_per_mtok = -1\noutput_per_mtok = 1'},
            "prices.gpt.input_per_mtok",
        ),
        ({"config.toml": '[prices."gpt"]\ninput_per_mtok = 1'}, "prices.gpt.output_per_mtok"),
        (
            {"config.toml": '[prices."gpt"]\ninput_per_mtok = 1\noutput_per_mtok = 1\nper = 2'},
            "prices.gpt.per",
        ),
        (
            {"config.toml": '[prices."opnai/gpt"]\ninput_per_mtok = 1\noutput_per_mtok = 1'},
            "prices: 'opnai/gpt' names provider 'opnai', which is not defined",
        ),
    ],
)
def test_bad_config_is_a_clear_config_error(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert message in err.value.message


def test_the_tool_names_the_config_knows_are_the_workers_registry() -> None:
    assert set(TOOLS) == BUILTIN_TOOLS


def test_an_unknown_tool_is_refused_with_the_known_ones_listed(tmp_path: Path) -> None:
    write(tmp_path / "agents/a.toml", 'tools = ["nosuchtool"]')
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert "agent a: unknown tool 'nosuchtool' (known tools: " in err.value.message
    assert all(name in err.value.message for name in BUILTIN_TOOLS)
    write(tmp_path / "agents/a.toml", f"tools = {sorted(BUILTIN_TOOLS)}")
    assert load_config(tmp_path).agent("a").tools == sorted(BUILTIN_TOOLS)


def test_init_home_writes_a_mock_agent_once(tmp_path: Path) -> None:
    assert init_home(tmp_path / "home")
    assert not init_home(tmp_path / "home")
    config = load_config(tmp_path / "home")
    assert config.agent("assistant").model == "mock"


@pytest.mark.parametrize("name", ["a", "researcher", "x-1_y", "a" * 64])
def test_valid_agent_names_pass(name: str) -> None:
    assert agent_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "-a", "a/b", "a:b", "../x", "a" * 65, "é"])
def test_invalid_agent_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        agent_name(name)


def test_sender_names() -> None:
    assert sender_name(None) == "user" and sender_name("") == "user"
    for ok in ["telegram:42", "event:github.push", "delegate:researcher", "a@b.c"]:
        assert sender_name(ok) == ok
    for bad in [":x", "a b", "a/b", "x" * 129, "../etc"]:
        with pytest.raises(InvalidInput):
            sender_name(bad)
