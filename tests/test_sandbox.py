"""bash's sandbox, its process tree, its environment and deny rules; hard links in file tools.

Called directly, on real files and processes. The bubblewrap tests skip only when ``bwrap``
cannot run on this host.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import tool_context
from tests.test_os_tools import bash, call, gone, make_ctx, marker
from walrus_tasks import keys, sandbox
from walrus_tasks.config import AgentConfig, BashConfig, Config
from walrus_tasks.errors import InvalidInput
from worker.tools import ToolContext, ToolFailed
from worker.tools.paths import working_directory

needs_bwrap = pytest.mark.skipif(
    sandbox.current().kind != "bwrap", reason=f"no bubblewrap: {sandbox.current().detail}"
)
security = pytest.mark.security


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A config directory with a secret, the agent's workspace in it, another agent's next to it."""
    home = tmp_path / "home"
    work = home / "workspaces" / "coder"
    other = home / "workspaces" / "other"
    for d in (work, other):
        d.mkdir(parents=True)
    (home / "config.toml").write_text('api_key = "sk-config-secret"\n')
    (other / "notes.txt").write_text("other agent's notes\n")
    (work / "mine.txt").write_text("my file\n")
    return {"home": home, "work": work, "other": other}


def sandboxed_ctx(r: redis.Redis, layout: dict[str, Path], **rules: Any) -> ToolContext:
    agent = AgentConfig(name="coder", tools=["bash"], bash=BashConfig(**rules))
    config = Config(home=layout["home"], agents={"coder": agent})
    return tool_context(r, agent, layout["work"], config=config)


# --- the process tree ---------------------------------------------------------------------


def test_setsid_children_and_double_forked_daemons_die_with_the_call(
    r: redis.Redis, tmp_path: Path
) -> None:
    detached, daemon, nohup = marker(), marker(), marker()
    command = (
        f"setsid sleep {detached} & "  # a session of its own: not in the command's group
        f"( ( sleep {daemon} & ) & ) ; "  # double fork: reparented away from bash
        f"nohup setsid sleep {nohup} >/dev/null 2>&1 & "
        "echo started"
    )
    out = bash(make_ctx(r, tmp_path), command)
    assert out["stdout"] == "started\n"
    for mark in (detached, daemon, nohup):
        assert gone(mark), f"sleep {mark} outlived the call"


# --- the environment ----------------------------------------------------------------------


def test_bash_never_sees_the_worker_environment(
    r: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-worker-secret")
    monkeypatch.setenv("SOME_TOKEN", "t0ken")
    ctx = make_ctx(r, tmp_path, env={"REGION": "eu"})
    out = bash(ctx, "env", env={"EXTRA": "1"})
    env = dict(line.split("=", 1) for line in out["stdout"].splitlines())
    assert "sk-worker-secret" not in out["stdout"] and "t0ken" not in out["stdout"]
    assert not any(k.startswith("WALRUS_") for k in env)
    assert env["REGION"] == "eu" and env["EXTRA"] == "1", "the agent's env, then the call's"
    assert env["HOME"] == str(tmp_path.resolve())
    assert set(env) <= {"PATH", "HOME", "PWD", "TERM", "USER", "LOGNAME", "LANG", "LANGUAGE",
                        "TZ", "REGION", "EXTRA", "SHLVL", "_", "OLDPWD"} | {
        k for k in env if k.startswith("LC_")
    }  # fmt: skip


# --- bubblewrap ---------------------------------------------------------------------------


@security
@needs_bwrap
def test_bwrap_shows_the_workspace_and_hides_the_config_and_other_workspaces(
    r: redis.Redis, layout: dict[str, Path]
) -> None:
    ctx = sandboxed_ctx(r, layout)
    out = bash(ctx, "cat mine.txt; pwd")
    assert out["stdout"] == f"my file\n{layout['work']}\n"
    for secret in (layout["home"] / "config.toml", layout["other"] / "notes.txt"):
        out = bash(ctx, f"cat {secret}")
        assert out["exit_code"] != 0 and "No such file" in out["stderr"], out
    out = bash(ctx, "ls /root /home /work 2>&1; cat /etc/shadow | wc -c")
    assert out["stdout"].endswith("0\n"), "no other home, no secrets of /etc"


@security
@needs_bwrap
def test_bwrap_cannot_write_outside_the_workspace(r: redis.Redis, layout: dict[str, Path]) -> None:
    ctx = sandboxed_ctx(r, layout)
    for target in ("/etc/walrus-test", "/usr/walrus-test", "/walrus-test"):
        assert bash(ctx, f"echo x > {target}")["exit_code"] != 0, f"wrote {target}"
        assert not Path(target).exists()
    # Paths under hidden directories land in the sandbox's own scratch space, never on disk.
    bash(ctx, f"echo x > {layout['other']}/x; echo x > {layout['home']}/config.toml")
    assert (layout["home"] / "config.toml").read_text() == 'api_key = "sk-config-secret"\n'
    assert not (layout["other"] / "x").exists()
    out = bash(ctx, "echo new > made.txt && echo tmp > /tmp/t && cat /tmp/t")
    assert out["stdout"] == "tmp\n" and (layout["work"] / "made.txt").read_text() == "new\n"


@security
@needs_bwrap
def test_bwrap_network_is_off_by_default_and_on_when_configured(
    r: redis.Redis, layout: dict[str, Path], redis_server: object
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"
        assert bash(sandboxed_ctx(r, layout), probe)["exit_code"] != 0
        out = bash(sandboxed_ctx(r, layout, network=True), probe)
        assert out["stdout"] == "connected\n"


@security
def test_sandbox_bwrap_that_cannot_run_refuses_bash(
    r: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = sandbox.Sandbox("unavailable", "WALRUS_SANDBOX=bwrap but it cannot run: test")
    monkeypatch.setattr(sandbox, "current", lambda: broken)
    with pytest.raises(ToolFailed, match="cannot run on this worker"):
        bash(make_ctx(r, tmp_path), "touch x")
    assert not (tmp_path / "x").exists()


# --- hard links ---------------------------------------------------------------------------


def test_file_tools_refuse_a_file_with_another_hard_link(r: redis.Redis, tmp_path: Path) -> None:
    work, outside = tmp_path / "work", tmp_path / "outside.txt"
    work.mkdir()
    outside.write_text("outside\n")
    os.link(outside, work / "link.txt")
    ctx = make_ctx(r, work)
    with pytest.raises(ToolFailed, match="2 hard links"):
        call("read", ctx, path="link.txt")
    with pytest.raises(ToolFailed, match="2 hard links"):
        call("write", ctx, path="link.txt", content="overwritten\n")
    read = keys.conv(keys.cid("coder", ctx.sender), "read")
    r.sadd(read, str(work / "link.txt"))  # as if read before
    with pytest.raises(ToolFailed, match="2 hard links"):
        call("edit", ctx, path="link.txt", old_string="outside", new_string="changed")
    assert outside.read_text() == "outside\n"
    assert call("write", ctx, path="fresh.txt", content="ok\n") == "wrote 3 bytes to fresh.txt"


# --- deny rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf x",
        "rm -r -f x",
        "rm -fr x",
        "rm -f -r x",
        "rm x -r -f",
        "/bin/rm -rf x",
        "\\rm -rf x",
        "'rm' -r -f x",
        "true; rm -f -r x",
        "true && rm -fr x",
        "false || rm -fr x",
        "echo x | xargs rm -r -f",
        "echo $(rm -f -r x)",
        'echo "$(rm -f -r x)"',
        "echo `rm -r -f x`",
        "(cd . && rm -r -f x)",
        "X=1 rm -fr x",
        "sudo rm -r -f x",
        "env A=1 nice -n 5 rm -f -r x",
        "true\nrm -f -r x",
    ],
)
def test_a_command_deny_rule_refuses_every_spelling_of_the_command(
    r: redis.Redis, tmp_path: Path, command: str
) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(ToolFailed, match="'rm -rf'"):
        bash(make_ctx(r, tmp_path, deny=["rm -rf"]), command)
    assert (tmp_path / "x").is_dir()


def test_deny_rules_allow_what_they_do_not_name(r: redis.Redis, tmp_path: Path) -> None:
    ctx = make_ctx(r, tmp_path, deny=["rm -rf", "git push --force", "curl "])
    (tmp_path / "a").write_text("")
    out = bash(ctx, "rm -f a; echo removed; echo git push; echo curling")
    assert out["stdout"] == "removed\ngit push\ncurling\n"
    with pytest.raises(ToolFailed, match="'git push --force'"):
        bash(ctx, "git push origin main --force")
    with pytest.raises(ToolFailed, match="'curl '"):  # not a command rule: a substring
        bash(ctx, "echo curl http://x")


# --- the working directory ----------------------------------------------------------------


@pytest.mark.parametrize("cwd", ["/", "../other", "sub/../../other", "/etc"])
def test_the_worker_refuses_a_stored_cwd_outside_the_agent_s_directory(
    layout: dict[str, Path], cwd: str
) -> None:
    agent = AgentConfig(name="coder", tools=["bash"])
    config = Config(home=layout["home"], agents={"coder": agent})
    with pytest.raises(InvalidInput, match="outside the agent's working directory"):
        working_directory(agent, config, cwd)
    assert working_directory(agent, config, "sub") == layout["work"] / "sub"
    assert working_directory(agent, config, str(layout["work"])) == layout["work"]
