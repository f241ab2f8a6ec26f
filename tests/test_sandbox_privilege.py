"""bash's sandbox holds no host privilege, whatever uid the worker has (these tests run as root).

The attacks of the security review, run as commands: remounting a read-only system folder,
unmounting a hidden file, reading a root-only file, fork and file bombs, the network, and a
symlink swapped into the conversation's cwd while calls run. Most call the tool directly (on
real processes); one goes through a real gateway and worker with a limit from the agent's TOML.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.cluster import Cluster
from tests.conftest import redis_db_url, tool_context, write_home
from tests.fakellm import FakeLLM, FakeReply
from tests.test_cli import walrus
from tests.test_os_tools import bash, make_ctx
from tests.test_sandbox import layout, sandboxed_ctx  # noqa: F401 (a fixture)
from walrus_tasks import sandbox
from walrus_tasks.config import AgentConfig, BashConfig, Config
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.settings import get_settings
from worker.tools import ToolFailed

pytestmark = [
    pytest.mark.security,
    pytest.mark.skipif(os.geteuid() != 0, reason="the attacks need a root worker"),
    pytest.mark.skipif(
        sandbox.current().kind != "bwrap", reason=f"no sandbox: {sandbox.current().detail}"
    ),
]

RENAME_EXCHANGE = 2
AT_FDCWD = -100


def fresh_uid() -> int:
    """A host uid no other process uses: its process count (RLIMIT_NPROC) is this test's own."""
    return random.randrange(61000, 64000)


@pytest.fixture
def own_uid(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """bash runs as a fresh host uid for this test."""
    uid = fresh_uid()
    monkeypatch.setenv("WALRUS_SANDBOX_UID", str(uid))
    monkeypatch.setenv("WALRUS_SANDBOX_GID", str(uid))
    get_settings.cache_clear()
    yield uid
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def rehost(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Change the environment, then probe the sandbox again; both undone afterwards."""
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()
    sandbox.current.cache_clear()


def reprobe() -> None:
    get_settings.cache_clear()
    sandbox.current.cache_clear()


# --- no host root, no capability ---------------------------------------------------------


def test_a_remount_of_a_system_folder_cannot_write_the_host(r: redis.Redis, tmp_path: Path) -> None:
    target = Path(f"/usr/local/walrus-remount-{os.getpid()}")
    try:
        out = bash(make_ctx(r, tmp_path), f"mount -o remount,rw /usr && touch {target}")
        assert out["exit_code"] != 0, out
        assert not target.exists(), "the sandbox wrote into the host's /usr"
    finally:
        target.unlink(missing_ok=True)


def test_unmounting_the_hidden_shadow_file_shows_nothing(r: redis.Redis, tmp_path: Path) -> None:
    assert Path("/etc/shadow").stat().st_size > 0, "precondition: the host has a shadow file"
    out = bash(make_ctx(r, tmp_path), "umount /etc/shadow; cat /etc/shadow")
    assert out["stdout"] == "", "the host's /etc/shadow showed through"


def test_a_root_only_file_on_a_read_only_bound_path_is_unreadable(
    r: redis.Redis, tmp_path: Path
) -> None:
    planted = Path(f"/etc/walrus-root-only-{os.getpid()}")
    secret = f"root-only-{random.random()}"
    fd = os.open(planted, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret.encode())
        os.close(fd)
        out = bash(make_ctx(r, tmp_path), f"cat {planted}")
        assert secret not in out["stdout"] and out["exit_code"] != 0, out
        assert "Permission denied" in out["stderr"]
    finally:
        planted.unlink()


def test_the_sandbox_holds_no_capability_and_runs_as_the_sandbox_uid(
    r: redis.Redis, tmp_path: Path
) -> None:
    probe = "cat /proc/self/uid_map; grep CapEff /proc/self/status; : > made"
    out = bash(make_ctx(r, tmp_path), probe)
    lines = out["stdout"].splitlines()
    assert lines[-1].split() == ["CapEff:", "0000000000000000"], out
    uid_map = [line.split() for line in lines[:-1]]
    assert len(uid_map) == 1 and uid_map[0][2] == "1", f"one uid mapped, not the host's: {uid_map}"
    # The file's host owner is the host uid the sandbox ran as: never root.
    assert (tmp_path / "made").stat().st_uid == get_settings().sandbox_uid != 0
    assert tmp_path.stat().st_uid == get_settings().sandbox_uid, "the workspace root is its own"


# --- resource limits ----------------------------------------------------------------------

FORKS = (
    "import os, time\n"
    "ok = 0\n"
    "for _ in range(60):\n"
    "    try:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(3); os._exit(0)\n"
    "        ok += 1\n"
    "    except OSError:\n"
    "        pass\n"
    "print(ok)\n"
)


def test_a_fork_bomb_is_bounded_by_the_agent_s_process_limit(
    r: redis.Redis, tmp_path: Path, own_uid: int
) -> None:
    (tmp_path / "forks.py").write_text(FORKS)
    bounded = bash(make_ctx(r, tmp_path, limits={"processes": 20}), "python3 forks.py")
    assert bounded["exit_code"] == 0, bounded
    assert int(bounded["stdout"]) <= 20, f"{bounded['stdout'].strip()} of 60 forks went through"
    free = bash(make_ctx(r, tmp_path), "python3 forks.py")
    assert int(free["stdout"]) == 60, "the default limit (256) lets 60 through"


def test_a_file_is_bounded_by_the_agent_s_file_size_limit(r: redis.Redis, tmp_path: Path) -> None:
    ctx = make_ctx(r, tmp_path, limits={"file_size": "1M"})
    out = bash(ctx, "for f in big /tmp/big /dev/shm/big; do head -c 3M /dev/zero > $f; echo $?; "
                    "done; stat -c %s /tmp/big /dev/shm/big; touch /dev/new")  # fmt: skip
    *codes, tmp_size, shm_size = out["stdout"].split()
    assert codes == [str(128 + 25)] * 3, "head died of SIGXFSZ writing past the limit"
    assert (tmp_path / "big").stat().st_size <= 1024**2
    assert int(tmp_size) <= 1024**2 and int(shm_size) <= 1024**2
    assert "Read-only file system" in out["stderr"], "/dev itself takes no new file"


def test_limits_apply_without_a_sandbox_too(
    r: redis.Redis, tmp_path: Path, rehost: pytest.MonkeyPatch
) -> None:
    rehost.setenv("WALRUS_SANDBOX", "none")
    reprobe()
    out = bash(make_ctx(r, tmp_path, limits={"cpu_seconds": 7}), "ulimit -t; ulimit -f; id -u")
    assert out["stdout"] == f"7\n{1024**3 // 1024}\n0\n", "none: the worker's uid (root here)"


def test_the_network_is_off(r: redis.Redis, tmp_path: Path) -> None:
    out = bash(make_ctx(r, tmp_path), "cat /proc/net/dev | tail -n +3 | cut -d: -f1")
    assert out["stdout"].split() == ["lo"], "only a loopback of its own"


def test_a_bad_limit_is_a_clear_config_error() -> None:
    with pytest.raises(ValueError, match="a size must be bytes"):
        BashConfig(limits={"address_space": "lots"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="processes"):
        BashConfig(limits={"processes": 0})  # type: ignore[arg-type]


# --- the cwd race ---------------------------------------------------------------------------


def swapper(a: Path, b: Path, stop: threading.Event, swaps: list[int]) -> None:
    """Exchange ``a`` and ``b`` (a directory and a symlink) over and over, bounded."""
    libc = ctypes.CDLL(None, use_errno=True)
    give_up = time.monotonic() + 60
    n = 0
    while not stop.is_set() and n < 5_000_000 and time.monotonic() < give_up:
        libc.renameat2(AT_FDCWD, bytes(a), AT_FDCWD, bytes(b), RENAME_EXCHANGE)
        n += 1
    swaps.append(n)


def test_a_symlink_swapped_into_the_cwd_never_leads_out_of_the_workspace(
    r: redis.Redis,
    layout: dict[str, Path],  # noqa: F811
) -> None:
    work, home = layout["work"], layout["home"]
    (work / "sub").mkdir()
    os.chown(work / "sub", get_settings().sandbox_uid, get_settings().sandbox_gid)  # bash's own
    (work / "link").symlink_to(home)  # a swap makes "sub" this symlink for a moment
    agent = AgentConfig(name="coder", tools=["bash"])
    ctx = tool_context(r, agent, work / "sub", Config(home=home, agents={"coder": agent}))
    stop, swaps = threading.Event(), []
    thread = threading.Thread(target=swapper, args=(work / "sub", work / "link", stop, swaps))
    thread.start()
    ran = 0
    try:
        for i in range(30):
            try:
                out = bash(ctx, f"echo {i} > race-{i}")
                ran += out["exit_code"] == 0
            except (ToolFailed, OSError):
                pass  # refused mid-swap ("does not exist"; before the fix, a realpath loop)
    finally:
        stop.set()
        thread.join()
    assert swaps and swaps[0] > 0
    real = work / ("link" if (work / "sub").is_symlink() else "sub")  # the directory, now
    written = [
        Path(top, name)
        for top, _, files in os.walk(home)  # symlinks not followed: every file once
        for name in files
        if name.startswith("race-")
    ]
    escaped = [p for p in written if p.parent != real]
    assert escaped == [], f"{len(escaped)} of {ran} calls wrote outside the workspace: {escaped}"
    assert len(written) <= ran
    # Calls caught mid-swap followed the symlink inside the sandbox: to an empty stand-in of
    # the home (in its private /tmp, here), gone with the call. Unswapped, a call writes home.
    if real.name == "link":
        (work / "sub").rename(work / "swap")
        real.rename(work / "sub")
    last = bash(ctx, "echo last > race-last")
    assert last["exit_code"] == 0, last
    assert (work / "sub" / "race-last").read_text() == "last\n"


# --- no sandbox: refuse, unless none was chosen -------------------------------------------


def test_a_missing_or_broken_bwrap_refuses_bash_with_a_clear_error(
    r: redis.Redis, tmp_path: Path, rehost: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # Outside tmp_path (0700 root): the sandbox's uid must be able to run this bwrap.
    bin_dir = Path(tempfile.mkdtemp(prefix="walrus-fake-bwrap-"))
    bin_dir.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(bin_dir))
    rehost.setenv("PATH", str(bin_dir))
    reprobe()
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ToolFailed, match=r"cannot run on this worker.*bwrap is not on PATH"):
        bash(make_ctx(r, work), "touch x")
    (bin_dir / "bwrap").write_text("#!/bin/sh\necho 'bwrap: no user namespaces here' >&2\nexit 1\n")
    (bin_dir / "bwrap").chmod(0o755)
    reprobe()
    with pytest.raises(ToolFailed, match=r"no user namespaces here.*WALRUS_SANDBOX=none"):
        bash(make_ctx(r, work), "touch x")
    assert not (work / "x").exists()


def test_walrus_sandbox_none_still_runs_bash(
    r: redis.Redis, tmp_path: Path, rehost: pytest.MonkeyPatch
) -> None:
    rehost.setenv("WALRUS_SANDBOX", "none")
    rehost.setenv("PATH", str(tmp_path))  # no bwrap needed
    reprobe()
    out = bash(make_ctx(r, tmp_path), "echo ran > ran.txt; id -u")
    assert out["stdout"] == "0\n" and (tmp_path / "ran.txt").read_text() == "ran\n"


def test_doctor_shows_the_sandbox_s_host_uid_map_and_capabilities(tmp_path: Path) -> None:
    env = {"WALRUS_REDIS_URL": "redis://127.0.0.1:1/0", "WALRUS_HOME": str(tmp_path)}
    doctor = walrus("doctor", "--url", "http://127.0.0.1:1", env=env)
    text = " ".join(doctor.stdout.split())
    assert "sandbox: bwrap" in text and "host uid 65534" in text, doctor.stdout
    assert "CapEff 0000000000000000" in text and "uid_map" in text


# --- through a real worker ------------------------------------------------------------------


@pytest.fixture
def limited_cluster(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> Iterator[tuple[Cluster, Path]]:
    """A gateway and a worker; agent ``bomber`` has ``[bash.limits] processes = 20``."""
    home = write_home(tmp_path / "home", fake_llm.base_url)
    work = tmp_path / "bomber-ws"
    work.mkdir()
    (work / "forks.py").write_text(FORKS)
    (home / "agents" / "bomber.toml").write_text(
        f'model = "fake/m-bomber"\ntools = ["bash"]\nworkdir = "{work}"\n\n'
        "[bash.limits]\nprocesses = 20\n"
    )
    uid = fresh_uid()
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=home,
        log_dir=tmp_path / "logs",
        env_extra={"WALRUS_SANDBOX_UID": str(uid), "WALRUS_SANDBOX_GID": str(uid)},
    )
    (tmp_path / "logs").mkdir()
    try:
        c.start_gateway()
        c.start_worker("worker-sandbox", concurrency=1)
        c.wait_ready()
        yield c, work
    finally:
        c.stop()


def test_a_real_worker_bounds_a_fork_bomb_and_holds_no_privilege(
    limited_cluster: tuple[Cluster, Path], fake_llm: FakeLLM, sender: str
) -> None:
    cluster, work = limited_cluster
    command = "python3 forks.py; grep CapEff /proc/self/status; mount -o remount,rw /usr; : > m"
    fake_llm.script(
        FakeReply(tool_calls=[("bash", {"command": command})]),
        FakeReply(text="done"),
        model="m-bomber",
    )
    run_id = cluster.send("bomber", "fork away", sender)
    assert cluster.wait_run(run_id)["status"] == "succeeded"
    tool: dict[str, Any] = next(m for m in cluster.history("bomber", sender) if m["role"] == "tool")
    result = json.loads(tool["content"])
    forks, caps = result["stdout"].splitlines()
    assert int(forks) <= 20, f"{forks} of 60 forks went through"
    assert caps.split() == ["CapEff:", "0000000000000000"]
    assert (work / "m").stat().st_uid not in (0, os.getuid())
