"""The OS tools (bash, read, write, edit) called directly: real files, processes and Redis."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.cluster import wait_for
from tests.conftest import tool_context
from walrus_tasks import keys
from walrus_tasks.config import AgentConfig, BashConfig
from walrus_tasks.errors import Cancelled
from worker.tools import TOOLS, ToolContext, ToolFailed, call_tool
from worker.tools.files import MAX_READ, _open_read, _write_bytes


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The working directory; ``tmp_path/outside`` is a sibling the tools must not reach."""
    (tmp_path / "work").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("top secret\n")
    return tmp_path / "work"


def make_ctx(
    r: redis.Redis,
    cwd: Path,
    sender: str = "alice",
    cancelled: threading.Event | None = None,
    **bash: Any,
) -> ToolContext:
    agent = AgentConfig(
        name="coder", tools=["bash", "read", "write", "edit"], bash=BashConfig(**bash)
    )
    flag = cancelled or threading.Event()
    return tool_context(r, agent, cwd, sender=sender, cancelled=flag.is_set)


def call(name: str, ctx: ToolContext, **args: Any) -> str:
    return TOOLS[name].run(args, ctx)


def bash(ctx: ToolContext, command: str, **extra: Any) -> dict[str, Any]:
    return json.loads(call("bash", ctx, command=command, **extra))  # type: ignore[no-any-return]


def marker() -> str:
    """A unique ``sleep`` duration: its processes are found by it, in a sandbox's pid namespace
    too (where ``$$`` is not the host's pid)."""
    return f"{300 + random.random():.9f}"


def running(mark: str) -> list[int]:
    """Host pids of the live processes whose command line holds ``mark``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if mark.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def gone(mark: str) -> bool:
    return not running(mark)


# --- path safety ---------------------------------------------------------------------------


def test_path_traversal_is_refused(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    for tool, args in (
        ("read", {"path": "../outside/secret.txt"}),
        ("write", {"path": "sub/../../outside/new.txt", "content": "x"}),
    ):
        with pytest.raises(ToolFailed, match="outside the working directory"):
            call(tool, ctx, **args)
    assert not (work.parent / "outside" / "new.txt").exists()


def test_absolute_path_outside_is_refused(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    secret = work.parent / "outside" / "secret.txt"
    with pytest.raises(ToolFailed, match="outside the working directory"):
        call("read", ctx, path=str(secret))
    with pytest.raises(ToolFailed, match="outside the working directory"):
        call("write", ctx, path=str(secret), content="overwritten")
    assert secret.read_text() == "top secret\n"
    (work / "inside.txt").write_text("ok\n")
    assert call("read", ctx, path=str(work / "inside.txt")) == "ok\n"


def test_symlink_escape_is_refused_for_read(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    (work / "link.txt").symlink_to(work.parent / "outside" / "secret.txt")
    (work / "linkdir").symlink_to(work.parent / "outside")
    for path in ("link.txt", "linkdir/secret.txt"):
        with pytest.raises(ToolFailed, match="outside the working directory"):
            call("read", ctx, path=path)


def test_symlink_escape_is_refused_for_write(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    outside = work.parent / "outside"
    (work / "link.txt").symlink_to(outside / "secret.txt")
    (work / "linkdir").symlink_to(outside)
    (work / "dangling.txt").symlink_to(outside / "not-yet.txt")
    for path in ("link.txt", "linkdir/new.txt", "linkdir/deeper/new.txt", "dangling.txt"):
        with pytest.raises(ToolFailed, match="outside the working directory"):
            call("write", ctx, path=path, content="escaped")
    assert (outside / "secret.txt").read_text() == "top secret\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_files_are_never_opened_through_a_symlink_put_in_place_after_the_check(
    r: redis.Redis, work: Path
) -> None:
    # The race resolve_inside cannot see: a symlink swapped in between the check and the open.
    target = work.parent / "outside" / "secret.txt"
    (work / "swapped.txt").symlink_to(target)
    with pytest.raises(ToolFailed, match="symlink"):
        _write_bytes(work / "swapped.txt", "swapped.txt", b"escaped")
    with pytest.raises(ToolFailed, match="symlink"):
        _open_read(work / "swapped.txt", "swapped.txt")
    assert target.read_text() == "top secret\n"


def test_a_symlink_that_stays_inside_is_followed(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    (work / "real.txt").write_text("real\n")
    (work / "alias.txt").symlink_to(work / "real.txt")
    assert call("read", ctx, path="alias.txt") == "real\n"
    call("edit", ctx, path="alias.txt", old_string="real", new_string="edited")
    assert (work / "real.txt").read_text() == "edited\n"
    assert (work / "alias.txt").is_symlink()


# --- read ----------------------------------------------------------------------------------


def test_read_pages_with_offset_and_limit(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    (work / "f.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    assert call("read", ctx, path="f.txt").count("\n") == 10
    assert call("read", ctx, path="f.txt", offset=9) == "line 9\nline 10\n"
    part = call("read", ctx, path="f.txt", offset=3, limit=2)
    assert part == "line 3\nline 4\n\n[lines 3-4 shown; more follow: continue with offset=5]"
    with pytest.raises(ToolFailed, match="past the end"):
        call("read", ctx, path="f.txt", offset=11)
    with pytest.raises(ToolFailed, match="must be 1 or more"):
        call("read", ctx, path="f.txt", limit=0)


def test_read_caps_a_large_file_and_says_where_to_continue(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    line = "x" * 99 + "\n"
    count = 2 * MAX_READ // len(line)
    (work / "big.txt").write_text(line * count)
    first = call("read", ctx, path="big.txt")
    shown = MAX_READ // len(line)
    assert len(first.encode()) < MAX_READ + 200
    assert first.endswith(f"[lines 1-{shown} shown; more follow: continue with offset={shown + 1}]")
    nxt = call("read", ctx, path="big.txt", offset=shown + 1, limit=1)
    assert nxt.startswith(line)


def test_read_refuses_binary_files_and_directories(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    (work / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02" * 10)
    (work / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (work / "dir").mkdir()
    for path in ("blob.bin", "latin1.txt"):
        with pytest.raises(ToolFailed, match="binary file"):
            call("read", ctx, path=path)
    with pytest.raises(ToolFailed, match="is a directory"):
        call("read", ctx, path="dir")
    with pytest.raises(ToolFailed, match="does not exist"):
        call("read", ctx, path="missing.txt")


def test_read_records_the_file_as_read_in_this_conversation(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    (work / "f.txt").write_text("hi\n")
    call("read", ctx, path="./f.txt")
    read_set = keys.conv(keys.cid("coder", "alice"), "read")
    assert r.smembers(read_set) == {str((work / "f.txt").resolve())}


# --- write and edit ------------------------------------------------------------------------


def test_write_creates_parents_and_the_file_counts_as_read(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    assert call("write", ctx, path="a/b/c.txt", content="héllo\n") == "wrote 7 bytes to a/b/c.txt"
    assert (work / "a" / "b" / "c.txt").read_text() == "héllo\n"
    call("edit", ctx, path="a/b/c.txt", old_string="héllo", new_string="bye")
    assert (work / "a" / "b" / "c.txt").read_text() == "bye\n"
    with pytest.raises(ToolFailed, match="is a directory"):
        call("write", ctx, path="a/b", content="x")


def test_edit_without_read_is_refused(r: redis.Redis, work: Path) -> None:
    (work / "f.txt").write_text("alpha\n")
    with pytest.raises(ToolFailed, match=r"read f\.txt first"):
        call("edit", make_ctx(r, work), path="f.txt", old_string="alpha", new_string="beta")
    call("read", make_ctx(r, work, sender="bob"), path="f.txt")
    with pytest.raises(ToolFailed, match=r"read f\.txt first"):  # bob's read is not alice's
        call("edit", make_ctx(r, work), path="f.txt", old_string="alpha", new_string="beta")
    assert (work / "f.txt").read_text() == "alpha\n"


def test_edit_with_non_unique_old_string_is_refused(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work)
    (work / "f.txt").write_text("x = 1\ny = 1\n")
    call("read", ctx, path="f.txt")
    with pytest.raises(ToolFailed, match=r"appears 2 times in f\.txt; give more context"):
        call("edit", ctx, path="f.txt", old_string=" = 1", new_string=" = 2")
    with pytest.raises(ToolFailed, match="not found"):
        call("edit", ctx, path="f.txt", old_string="z = 1", new_string="z = 2")
    assert (work / "f.txt").read_text() == "x = 1\ny = 1\n"
    assert call("edit", ctx, path="f.txt", old_string="y = 1", new_string="y = 2") == (
        "edited f.txt: replaced 1 occurrence"
    )
    assert (work / "f.txt").read_text() == "x = 1\ny = 2\n"


def test_a_failed_tool_call_is_an_error_result_for_the_model(r: redis.Redis, work: Path) -> None:
    output, is_error = call_tool("read", {"path": "../outside/secret.txt"}, make_ctx(r, work))
    assert is_error and "outside the working directory" in output


# --- bash ----------------------------------------------------------------------------------


def test_bash_runs_in_the_working_directory_and_a_nonzero_exit_is_data(
    r: redis.Redis, work: Path
) -> None:
    ctx = make_ctx(r, work)
    out = bash(ctx, 'pwd; echo "$GREETING"; echo oops >&2; exit 3', env={"GREETING": "hi"})
    assert out == {"stdout": f"{work}\nhi\n", "stderr": "oops\n", "exit_code": 3}
    with pytest.raises(ToolFailed, match="not a valid variable name"):
        bash(ctx, "true", env={"BAD NAME": "x"})
    with pytest.raises(ToolFailed, match="must be a string"):
        bash(ctx, "true", env={"N": 1})


def test_bash_does_not_hand_the_service_settings_to_commands(r: redis.Redis, work: Path) -> None:
    out = bash(make_ctx(r, work), "env | grep -c '^WALRUS_' || true")
    assert os.environ.get("WALRUS_REDIS_URL") and out["stdout"] == "0\n"


def test_bash_refuses_a_denied_substring_naming_the_rule(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work, deny=["rm -rf", "curl "])
    with pytest.raises(ToolFailed, match="contains 'rm -rf'"):
        bash(ctx, "touch x; rm -rf /tmp/nothing")
    assert not (work / "x").exists(), "a refused command does not run at all"
    with pytest.raises(ToolFailed, match="contains 'rm -rf'"):
        bash(ctx, 'eval "$X"', env={"X": "rm -rf /tmp/nothing"})
    assert bash(ctx, "echo curling")["stdout"] == "curling\n"


def test_bash_disabled_is_refused(r: redis.Redis, work: Path) -> None:
    with pytest.raises(ToolFailed, match="bash is disabled"):
        bash(make_ctx(r, work, disabled=True), "touch x")
    assert not (work / "x").exists()


def test_bash_is_refused_for_a_sender_matching_deny_senders(r: redis.Redis, work: Path) -> None:
    rules: dict[str, Any] = {"deny_senders": ["bot:*", "event:*"]}
    with pytest.raises(ToolFailed, match=r"sender 'bot:ci'.*'bot:\*'"):
        bash(make_ctx(r, work, sender="bot:ci", **rules), "touch x")
    assert not (work / "x").exists()
    assert bash(make_ctx(r, work, sender="robot", **rules), "echo ok")["stdout"] == "ok\n"


def test_bash_refuses_a_missing_working_directory(r: redis.Redis, work: Path) -> None:
    with pytest.raises(ToolFailed, match=r"working directory .* does not exist"):
        bash(make_ctx(r, work / "nope"), "true")


def test_bash_timeout_kills_the_command_and_its_children(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work, timeout=1)
    bg, fg = marker(), marker()
    started = time.monotonic()
    with pytest.raises(ToolFailed, match=r"timed out after 1s") as failure:
        bash(ctx, f"sleep {bg} & echo started; exec sleep {fg}")
    assert time.monotonic() - started < 3
    assert "started" in str(failure.value), "the output so far is part of the error"
    for mark in (bg, fg):
        wait_for(lambda mark=mark: gone(mark), 5, what=f"sleep {mark} to be gone")


def test_bash_leaves_no_background_job_behind(r: redis.Redis, work: Path) -> None:
    mark = marker()
    out = bash(make_ctx(r, work), f"sleep {mark} & echo started")
    assert out["exit_code"] == 0 and out["stdout"] == "started\n"
    assert gone(mark), "gone by the time the call returns"


def test_bash_output_is_capped_and_says_how_much_was_cut(r: redis.Redis, work: Path) -> None:
    ctx = make_ctx(r, work, max_output=100)
    out = bash(ctx, "head -c 5000 /dev/zero | tr '\\0' a; head -c 150 /dev/zero | tr '\\0' b >&2")
    note = "\n[4900 more bytes of stdout cut: only the first 100 are kept]"
    assert out["stdout"] == "a" * 100 + note
    assert out["stderr"].startswith("b" * 100 + "\n[50 more bytes of stderr cut")
    assert out["exit_code"] == 0


def test_bash_kill_terminates_the_process_group_promptly(r: redis.Redis, work: Path) -> None:
    flag = threading.Event()
    killed_at: list[float] = []
    mark = marker()

    def kill_once_started() -> None:
        wait_for(lambda: running(mark), what="the command to start")
        killed_at.append(time.monotonic())
        flag.set()

    killer = threading.Thread(target=kill_once_started)
    killer.start()
    try:
        with pytest.raises(Cancelled):
            # TERM is ignored (and stays ignored across exec): SIGKILL must follow.
            bash(make_ctx(r, work, cancelled=flag), f"trap '' TERM; exec sleep {mark}")
        ended_after = time.monotonic() - killed_at[0]
    finally:
        killer.join()
    assert ended_after < 2, f"the kill took {ended_after:.2f}s"
    assert gone(mark)
