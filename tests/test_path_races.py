"""The file tools against paths that lead out, the racing kind too: resolved where they are used.

Each test runs under both resolvers (``WALRUS_PATHS_RESOLVE``): the kernel's ``openat2`` with
``RESOLVE_BENEATH`` and the component walk. The races are real: a thread swaps a workspace
directory with a symlink to the outside (``renameat2(RENAME_EXCHANGE)``, as the agent's own
``bash`` can) while the tools open a path through it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import tool_context
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.settings import get_settings
from worker.tools import TOOLS, ToolContext, ToolFailed, beneath, files

pytestmark = pytest.mark.security

SECRET = 'provider_key = "sk-outside-secret"\n'
INSIDE = "inside = true\n"
READS, WRITES = 8000, 1000
"""The finding saw 7 of 80 reads and 25 of 60 writes escape; here thousands of calls make
the race sure to show on the code before the fix (it takes about a second)."""
SWAP_SECONDS = 60.0
"""Longest a swap loop runs (it stops as soon as the calls are done)."""


@pytest.fixture(params=["auto", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``WALRUS_PATHS_RESOLVE`` for this test; ``walk`` never reaches ``openat2``."""
    monkeypatch.setenv("WALRUS_PATHS_RESOLVE", request.param)
    get_settings.cache_clear()
    if request.param == "walk":

        def never(*args: Any) -> int:
            raise AssertionError("openat2 used though WALRUS_PATHS_RESOLVE=walk")

        monkeypatch.setattr(beneath, "_openat2", never)
    else:
        top = os.open("/", os.O_PATH)
        try:
            os.close(beneath.open_beneath(top, "tmp", os.O_PATH))  # learns whether it has one
        finally:
            os.close(top)
        if not beneath.kernel_resolves():
            pytest.skip("this kernel has no openat2: auto is the walk, tested as walk")
    yield request.param
    get_settings.cache_clear()


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """``work`` (the agent's directory) with ``d/config.toml``; ``outside`` holds the secret."""
    work, outside = tmp_path / "work", tmp_path / "outside"
    (work / "d").mkdir(parents=True)
    outside.mkdir()
    (outside / "config.toml").write_text(SECRET)
    (work / "d" / "config.toml").write_text(INSIDE)
    return {"work": work, "outside": outside}


def make_ctx(r: redis.Redis, work: Path, cwd: Path | None = None) -> ToolContext:
    agent = AgentConfig(name="coder", tools=["read", "write", "edit"], workdir=str(work))
    config = Config(home=work.parent, agents={"coder": agent})
    return tool_context(r, agent, cwd or work, config=config)


def call(name: str, ctx: ToolContext, **args: Any) -> str:
    return TOOLS[name].run(args, ctx)


def outcome(fn: Callable[[], str]) -> str:
    try:
        return fn()
    except ToolFailed as e:
        return f"refused: {e}"
    except OSError as e:  # not a tool error: the code before the fix raised these mid-race
        return f"crashed: {e}"


def untouched(outside: Path) -> None:
    assert (outside / "config.toml").read_text() == SECRET
    assert sorted(p.name for p in outside.iterdir()) == ["config.toml"]


SWAP_LOOP = """
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b, seconds = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2]), float(sys.argv[3])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
swaps, deadline = 0, time.monotonic() + seconds
while not stop and time.monotonic() < deadline:
    if libc.renameat2(-100, a, -100, b, 2) != 0:
        sys.exit("renameat2: " + os.strerror(ctypes.get_errno()))
    swaps += 1
    if swaps == 1:
        print("swapping", flush=True)
print(swaps, flush=True)
"""
"""``renameat2(RENAME_EXCHANGE)`` in a loop, in a process of its own as the agent's ``bash``
would be (a thread would share the GIL with the tool and hardly ever run inside its window)."""


class Swapper:
    """A process exchanging ``a`` and ``b`` (a directory and a symlink) until stopped."""

    def __init__(self, a: Path, b: Path) -> None:
        self.argv = [sys.executable, "-c", SWAP_LOOP, str(a), str(b), str(SWAP_SECONDS)]
        self.swaps = 0

    def __enter__(self) -> Swapper:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "swapping\n"  # it runs: the calls race it
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, out
        self.swaps = int(out.split()[-1])


def swap_setup(layout: dict[str, Path]) -> tuple[Path, Path]:
    """``work/link`` -> ``outside``: the symlink exchanged with ``work/d``."""
    link = layout["work"] / "link"
    link.symlink_to(layout["outside"])
    return layout["work"] / "d", link


# --- the races of the finding --------------------------------------------------------------


def test_a_read_raced_by_a_swapped_parent_never_returns_the_outside_file(
    r: redis.Redis, layout: dict[str, Path], resolver: str
) -> None:
    ctx = make_ctx(r, layout["work"])
    d, link = swap_setup(layout)
    with Swapper(d, link) as swapper:
        results = [outcome(lambda: call("read", ctx, path="d/config.toml")) for _ in range(READS)]
    leaked = [x for x in results if "sk-outside-secret" in x]
    assert len(leaked) == 0, f"{len(leaked)} of {READS} reads returned the outside file"
    assert swapper.swaps > 0
    assert all(x == INSIDE or x.startswith("refused: ") for x in results), set(results)
    untouched(layout["outside"])


def test_a_write_raced_by_a_swapped_parent_never_lands_outside(
    r: redis.Redis, layout: dict[str, Path], resolver: str
) -> None:
    ctx = make_ctx(r, layout["work"])
    d, link = swap_setup(layout)
    with Swapper(d, link) as swapper:
        results = [
            outcome(lambda i=i: call("write", ctx, path="d/config.toml", content=f"w{i}\n"))
            for i in range(WRITES)
        ]
    untouched(layout["outside"])
    assert swapper.swaps > 0
    assert all(x.startswith(("wrote ", "refused: ")) for x in results), set(results)
    real = d if not d.is_symlink() else link
    wrote = [i for i, x in enumerate(results) if x.startswith("wrote ")]
    expected = f"w{wrote[-1]}\n" if wrote else INSIDE
    assert (real / "config.toml").read_text() == expected


def test_an_edit_raced_by_a_swapped_parent_never_changes_or_copies_the_outside_file(
    r: redis.Redis, layout: dict[str, Path], resolver: str
) -> None:
    work = layout["work"]
    ctx = make_ctx(r, work)
    # As if the model had read both: edit must still refuse the outside one.
    r.sadd(files.read_set(ctx), str(layout["outside"] / "config.toml"))
    r.sadd(files.read_set(ctx), str(work / "d" / "config.toml"))
    d, link = swap_setup(layout)
    # "= " occurs once in both files, and still once after each edit: every edit may go ahead.
    edit = {"path": "d/config.toml", "old_string": "= ", "new_string": "=  "}
    with Swapper(d, link) as swapper:
        results = [outcome(lambda: call("edit", ctx, **edit)) for _ in range(WRITES)]
    assert swapper.swaps > 0
    untouched(layout["outside"])
    real = d if not d.is_symlink() else link
    assert "sk-outside" not in (real / "config.toml").read_text(), "the secret was copied in"
    assert all(x.startswith(("edited ", "refused: ")) for x in results), set(results)


def test_a_conversation_cwd_swapped_for_a_symlink_is_not_followed(
    r: redis.Redis, layout: dict[str, Path], resolver: str
) -> None:
    # The conversation's cwd ("sub", checked when the message was sent) is a directory the
    # agent can swap too: it is resolved beneath the agent's own directory at every call.
    work = layout["work"]
    (work / "sub").symlink_to(layout["outside"])
    ctx = make_ctx(r, work, cwd=work / "sub")
    for tool, args in (("read", {}), ("write", {"content": "x"})):
        with pytest.raises(ToolFailed, match="leads outside"):
            call(tool, ctx, path="config.toml", **args)
    untouched(layout["outside"])


# --- paths that lead out, without a race ---------------------------------------------------


def test_paths_that_lead_out_are_refused_and_change_nothing(
    r: redis.Redis, layout: dict[str, Path], resolver: str
) -> None:
    work, outside = layout["work"], layout["outside"]
    secret = outside / "config.toml"
    (work / "out").symlink_to(outside)  # a directory symlink that leads out
    (work / "rel-out").symlink_to("../outside")  # relative, climbing out
    (work / "secret.toml").symlink_to(secret)  # a file symlink that leads out
    (work / "d" / "up").symlink_to("../../outside/config.toml")
    (work / "abs-in").symlink_to(work / "d")  # absolute, though it points inside
    ctx = make_ctx(r, work)
    refused = [
        str(secret),
        "../outside/config.toml",
        "d/../../outside/config.toml",
        f"{work}/../outside/config.toml",
        "out/config.toml",
        "rel-out/config.toml",
        "secret.toml",
        "d/up",
        "abs-in/config.toml",
    ]
    r.sadd(files.read_set(ctx), str(secret))  # as if read: edit must still refuse
    for path in refused:
        for tool, args in (
            ("read", {}),
            ("write", {"content": "escaped\n"}),
            ("edit", {"old_string": "sk-", "new_string": "XX"}),
        ):
            with pytest.raises(ToolFailed, match="outside the working directory"):
                call(tool, ctx, path=path, **args)
    for tool, args in (("write", {"content": "x"}), ("read", {})):
        with pytest.raises(ToolFailed, match="outside the working directory"):
            call(tool, ctx, path="out/new/deeper.txt", **args)
    untouched(outside)


def test_a_hard_link_to_an_outside_file_is_refused(
    r: redis.Redis, layout: dict[str, Path], resolver: str
) -> None:
    work, secret = layout["work"], layout["outside"] / "config.toml"
    os.link(secret, work / "d" / "linked.toml")
    ctx = make_ctx(r, work)
    r.sadd(files.read_set(ctx), str(work / "d" / "linked.toml"))
    for tool, args in (
        ("read", {}),
        ("write", {"content": "overwritten\n"}),
        ("edit", {"old_string": "sk-", "new_string": "XX"}),
    ):
        with pytest.raises(ToolFailed, match="2 hard links"):
            call(tool, ctx, path="d/linked.toml", **args)
    untouched(layout["outside"])


def test_paths_that_stay_inside_work(
    r: redis.Redis, layout: dict[str, Path], resolver: str
) -> None:
    work = layout["work"]
    (work / "alias").symlink_to("d")  # relative symlinks that stay inside are followed
    (work / "d" / "back").symlink_to("../d/config.toml")
    ctx = make_ctx(r, work)
    for path in ("d/config.toml", "alias/config.toml", "d/back", "d/../d/./config.toml",
                 str(work / "d" / "config.toml")):  # fmt: skip
        assert call("read", ctx, path=path) == INSIDE
    assert call("write", ctx, path="alias/new/deep/n.txt", content="n\n").startswith("wrote")
    assert (work / "d" / "new" / "deep" / "n.txt").read_text() == "n\n"
    call("edit", ctx, path="d/back", old_string="true", new_string="yes")
    assert (work / "d" / "config.toml").read_text() == "inside = yes\n"
    with pytest.raises(ToolFailed, match="is a directory"):
        call("write", ctx, path="d", content="x")
    with pytest.raises(ToolFailed, match="not a directory"):
        call("write", ctx, path="d/config.toml/x", content="x")


def test_a_fifo_is_refused_without_hanging(
    r: redis.Redis, layout: dict[str, Path], resolver: str
) -> None:
    os.mkfifo(layout["work"] / "pipe")
    ctx = make_ctx(r, layout["work"])
    for tool, args in (("read", {}), ("write", {"content": "x"})):
        with pytest.raises(ToolFailed, match="not a regular file"):
            call(tool, ctx, path="pipe", **args)


def test_without_openat2_the_walk_takes_over(
    r: redis.Redis, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kernel older than 5.6 (or a seccomp filter) answers ENOSYS: auto walks from then on.
    class NoOpenat2:
        def syscall(self, *args: Any) -> int:
            ctypes.set_errno(errno.ENOSYS)
            return -1

    monkeypatch.setattr(beneath, "_libc", NoOpenat2())
    monkeypatch.setattr(beneath, "_missing", False)
    ctx = make_ctx(r, layout["work"])
    (layout["work"] / "out").symlink_to(layout["outside"])
    assert call("read", ctx, path="d/config.toml") == INSIDE
    assert not beneath.kernel_resolves()
    with pytest.raises(ToolFailed, match="outside the working directory"):
        call("read", ctx, path="out/config.toml")


# --- ownership ----------------------------------------------------------------------------


def test_what_the_tools_create_belongs_to_the_user_bash_runs_as(
    r: redis.Redis, layout: dict[str, Path], resolver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving files away takes root (the case it is for)")
    owner = (65534, 65534)
    monkeypatch.setattr(files, "workspace_owner", lambda: owner)
    work = layout["work"]
    ctx = make_ctx(r, work)
    call("write", ctx, path="a/b/new.txt", content="new\n")
    call("write", ctx, path="d/config.toml", content="replaced\n")  # exists: keeps its owner
    for made in ("a", "a/b", "a/b/new.txt"):
        st = os.stat(work / made)
        assert (st.st_uid, st.st_gid) == owner, made
    assert os.stat(work / "d" / "config.toml").st_uid == os.geteuid()
    assert os.stat(work).st_uid == os.geteuid()
    assert os.stat(work / "d").st_uid == os.geteuid()
