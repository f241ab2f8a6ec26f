"""``walrus export`` / ``walrus import``: a lossless round trip of the durable state, in the
daemon's on-disk layout (docs/operations.md, "Backup and restore"), and bad input that gets a
clear error and changes nothing."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rich.console import Console

from tests.cluster import Cluster
from walrus_tasks import crons, indexes, keys, memory, subscriptions
from walrus_tasks.cli.progress import bars
from walrus_tasks.errors import Conflict, InvalidInput, WalrusError
from walrus_tasks.export import export_state, import_state
from walrus_tasks.models import CronSpec
from walrus_tasks.redis_server import RedisServer, start_redis

DURABLE = ("walrus:{*}:conversations", keys.conv_pattern("history"), keys.conv_pattern("seq"),
           keys.conv_pattern("archive"), "walrus:crons*", "walrus:subs*",
           "walrus:memory:*")  # fmt: skip
"""The keys an export covers (everything else is in flight, derived or ephemeral)."""


def durable_state(r: redis.Redis) -> dict[str, Any]:
    """Every durable key with its full value, comparable with ==."""
    found = {k for pattern in DURABLE for k in r.scan_iter(match=pattern)}
    state: dict[str, Any] = {}
    for key in sorted(found):
        kind = r.type(key)
        if kind == "zset":
            state[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            state[key] = r.lrange(key, 0, -1)
        elif kind == "hash":
            state[key] = r.hgetall(key)
        elif kind == "set":
            state[key] = sorted(r.smembers(key))  # type: ignore[arg-type]
        else:
            state[key] = r.get(key)
    return state


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (directories as ``b"<dir>"``)."""
    return {
        p.relative_to(root).as_posix(): b"<dir>" if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def owned() -> Iterator[RedisServer]:
    """A Redis server of the test's own: it may be wiped."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="walrus-archive-") as data:
        server = start_redis(Path(data))
        try:
            yield server
        finally:
            server.stop()


def client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


def fill(r: redis.Redis) -> None:
    """Conversations as the run scripts store them, compaction archives as the compactor does,
    crons and subscriptions as the API does, memory as the tools do."""
    messages = {
        ("echo", "user"): [
            # cjson escapes "/" and writes no spaces; json.dumps (tools) writes ", " and raw UTF-8
            '{"role":"user","content":"see http:\\/\\/x","run_id":"r1"}',
            '{"role": "assistant", "content": "caf\u00e9 \u2028 ok \\n two", "run_id": "r1"}',
        ],
        ("tooly", "telegram:42"): [
            '{"content":"what time?","role":"user","run_id":"r2"}',
            '{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "clock",'
            ' "arguments": "{}"}], "run_id": "r2"}',
            '{"role": "tool", "tool_call_id": "c1", "content": "12:00", "run_id": "r2"}',
        ],
        ("echo", "event:agent:a:done"): ['{"role":"user","content":"done","run_id":"r3"}'],
    }
    for n, ((agent, sender), history) in enumerate(messages.items()):
        c = keys.cid(agent, sender)
        r.rpush(keys.conv(c, "history"), *history)
        r.set(keys.conv(c, "seq"), len(history) + n)
        r.zadd(keys.conv_index("conversations", c), {c: 1_712_000_000_000 + n})
    r.rpush(
        keys.conv(keys.cid("echo", "user"), "archive"),
        json.dumps({"archived_at": 1_711_000_000_000, "run_id": "r0",
                    "messages": [{"role": "user", "content": "old \u2028 news"}]}),
        '{"archived_at":1711000000500,"run_id":"r0b","messages":[]}',
    )  # fmt: skip
    queued_only = keys.cid("echo", "queued-only")
    r.zadd(keys.conv_index("conversations", queued_only), {queued_only: 1_712_000_000_123.5})
    r.set(keys.conv(keys.cid("echo", "queued-only"), "seq"), 1)
    agents = ["echo", "tooly"]
    crons.create(r, CronSpec(schedule="@every 30s", agent="echo", message="tick"), agents)
    crons.create(
        r,
        CronSpec(schedule="0 9 * * 1-5", agent="tooly", sender="boss", skill="report",
                 quiet_start="22:00", quiet_end="07:00", timezone="Europe/Paris", once=True),
        agents,
    )  # fmt: skip
    subscriptions.create(r, "agent:echo:done", "tooly")
    subscriptions.create(r, "github.push", "echo", once=True)
    memory.remember(
        r, "echo", "tz", "Europe/Paris \u2014 caf\u00e9 hours\nsecond line", ["timezone"]
    )
    memory.remember(r, "echo", "a note", "plain")
    memory.remember(r, "tooly", "clock", "it is always late", [])


def test_export_wipe_import_gives_identical_files_and_redis_state(
    owned: RedisServer, tmp_path: Path
) -> None:
    r = client(owned)
    fill(r)
    before = durable_state(r)
    summary = export_state(r, tmp_path / "a")
    assert summary.as_dict() == {
        "conversations": 4, "messages": 6, "archived": 2, "crons": 2, "subscriptions": 2,
        "memories": 3,
    }  # fmt: skip
    files = tree(tmp_path / "a")
    assert set(files) == {
        "sessions", "sessions/index.toml", "sessions/echo", "sessions/tooly",
        "sessions/echo/user.jsonl", "sessions/echo/user.archive.jsonl",
        "sessions/echo/event:agent:a:done.jsonl",
        "sessions/echo/queued-only.jsonl", "sessions/tooly/telegram:42.jsonl",
        "cron", "cron/crons.toml", "events", "events/subscriptions.toml", "memory",
        "memory/echo.jsonl", "memory/tooly.jsonl",
    }  # fmt: skip
    # One message per line, exactly as stored.
    assert files["sessions/tooly/telegram:42.jsonl"].decode().split("\n")[:-1] == r.lrange(
        keys.conv(keys.cid("tooly", "telegram:42"), "history"), 0, -1
    )
    assert files["sessions/echo/queued-only.jsonl"] == b""
    archive = keys.conv(keys.cid("echo", "user"), "archive")
    assert files["sessions/echo/user.archive.jsonl"].decode().split("\n")[:-1] == r.lrange(
        archive, 0, -1
    )
    # One entry per line, sorted by name, every field (timestamps too).
    assert [json.loads(line) for line in files["memory/echo.jsonl"].splitlines()] == [
        e.model_dump() for e in memory.entries(r, "echo")
    ]
    assert [e.name for e in memory.entries(r, "echo")] == ["a note", "tz"]

    r.flushall()  # our own server
    assert import_state(r, tmp_path / "a", replace=False) == summary
    assert durable_state(r) == before
    export_state(r, tmp_path / "b")
    assert tree(tmp_path / "b") == files

    # Replace: a conversation and a cron that the export does not hold are gone afterwards.
    r.rpush(keys.conv(keys.cid("echo", "stranger"), "history"), '{"role":"user","content":"x"}')
    crons.create(r, CronSpec(schedule="@every 1m", agent="echo", message="x"), ["echo"])
    memory.remember(r, "stranger", "x", "y")
    r.rpush(keys.conv(keys.cid("stranger", "user"), "archive"), '{"messages":[]}')
    with pytest.raises(Conflict, match="use --replace"):
        import_state(r, tmp_path / "a", replace=False)
    import_state(r, tmp_path / "a", replace=True)
    assert durable_state(r) == before


def test_memory_alone_is_state_that_import_does_not_overwrite(
    owned: RedisServer, tmp_path: Path
) -> None:
    r = client(owned)
    export_state(r, tmp_path / "empty")
    memory.remember(r, "echo", "keep", "me")
    with pytest.raises(Conflict, match="1 memories"):
        import_state(r, tmp_path / "empty", replace=False)
    import_state(r, tmp_path / "empty", replace=True)
    assert r.dbsize() == 0


def test_a_history_and_an_archive_with_one_file_name_are_refused(
    owned: RedisServer, tmp_path: Path
) -> None:
    r = client(owned)
    r.rpush(keys.conv(keys.cid("echo", "x"), "archive"), '{"messages":[]}')
    r.rpush(keys.conv(keys.cid("echo", "x.archive"), "history"), '{"role":"user"}')
    with pytest.raises(WalrusError, match="both a history and an archive"):
        export_state(r, tmp_path / "a")
    r.delete(keys.conv(keys.cid("echo", "x"), "archive"))  # sender "x.archive" alone is fine
    export_state(r, tmp_path / "b")
    r.flushall()
    import_state(r, tmp_path / "b", replace=False)
    assert r.lrange(keys.conv(keys.cid("echo", "x.archive"), "history"), 0, -1) == [
        '{"role":"user"}'
    ]


def test_an_absent_toml_field_is_none(owned: RedisServer, tmp_path: Path) -> None:
    r = client(owned)
    fill(r)
    export_state(r, tmp_path / "a")
    text = (tmp_path / "a" / "cron" / "crons.toml").read_text()
    assert "last_run_id" not in text and "null" not in text  # None fields are left out
    r.flushall()
    import_state(r, tmp_path / "a", replace=False)
    assert {c["last_run_id"] for c in crons.dump(r)} == {None}


def _break_line(root: Path) -> None:
    path = root / "sessions" / "echo" / "user.jsonl"
    path.write_text(path.read_text() + "not json\n")


BAD_DIRS = {
    "not a directory": lambda root: (root.rename(root.with_suffix(".x")), root.write_text("")),
    "missing crons": lambda root: (root / "cron" / "crons.toml").unlink(),
    "bad toml": lambda root: (root / "events" / "subscriptions.toml").write_text("[[subs"),
    "a line that is not JSON": _break_line,
    "truncated history": lambda root: (root / "sessions/echo/user.jsonl").write_bytes(b'{"a":1}'),
    "an unlisted history": lambda root: (root / "sessions/echo/ghost.jsonl").write_text(""),
    "a bad sender": lambda root: (root / "sessions/index.toml").write_text(
        'format = 1\n[[conversations]]\nagent = "echo"\nsender = "../x"\n'
    ),
    "a bad cron": lambda root: (root / "cron/crons.toml").write_text(
        '[[crons]]\nid = "x"\nschedule = "every day"\nagent = "echo"\n'
    ),
    "a bad subscription": lambda root: (root / "events/subscriptions.toml").write_text(
        '[[subscriptions]]\nid = "x"\nsource = ""\ntarget_agent = "echo"\ncreated_at = 1.0\n'
    ),
    "a stray file in memory": lambda root: (root / "memory" / "notes.md").write_text("hi"),
    "memory of a bad agent name": lambda root: (root / "memory" / "Bad.jsonl").write_text(""),
    "a bad memory entry": lambda root: (root / "memory" / "echo.jsonl").write_text(
        '{"name": "x", "content": ""}\n'
    ),
    "a memory entry listed twice": lambda root: (root / "memory" / "tooly.jsonl").write_text(
        (root / "memory" / "tooly.jsonl").read_text() * 2
    ),
    "no memory dir": lambda root: shutil.rmtree(root / "memory"),
    "an unlisted archive": lambda root: (root / "sessions/echo/ghost.archive.jsonl").write_text(""),
    "an archive line that is not JSON": lambda root: (
        root / "sessions/echo/user.archive.jsonl"
    ).write_text("[1]\n"),
}


@pytest.mark.parametrize("damage", list(BAD_DIRS))
def test_a_bad_export_dir_gets_a_clear_error_and_changes_nothing(
    owned: RedisServer, tmp_path: Path, damage: str
) -> None:
    r = client(owned)
    fill(r)
    export_state(r, tmp_path / "a")
    r.flushall()
    r.set(keys.conv(keys.cid("echo", "other"), "seq"), 7)  # something the import would replace
    crons.create(r, CronSpec(schedule="@every 1m", agent="echo", message="x"), ["echo"])
    before = durable_state(r)
    BAD_DIRS[damage](tmp_path / "a")
    with pytest.raises(InvalidInput) as e:
        import_state(r, tmp_path / "a", replace=True)
    assert str(tmp_path / "a") in e.value.message and "\n" not in e.value.message
    assert durable_state(r) == before


def test_import_refuses_while_runs_are_in_flight(owned: RedisServer, tmp_path: Path) -> None:
    r = client(owned)
    fill(r)
    export_state(r, tmp_path / "a")
    r.flushall()
    r.zadd(keys.conv_index("leases", keys.cid("echo", "user")), {keys.cid("echo", "user"): 1})
    with pytest.raises(Conflict, match="in flight"):
        import_state(r, tmp_path / "a", replace=True)
    assert r.dbsize() == 1


def test_export_refuses_a_dir_that_holds_an_export(owned: RedisServer, tmp_path: Path) -> None:
    r = client(owned)
    export_state(r, tmp_path / "a")
    with pytest.raises(InvalidInput, match="already holds an export"):
        export_state(r, tmp_path / "a")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.toml").write_text("")  # a config directory is fine
    export_state(r, tmp_path / "home")


def test_export_and_import_tell_their_progress_phase_by_phase(
    owned: RedisServer, tmp_path: Path
) -> None:
    r = client(owned)
    fill(r)
    told: list[tuple[str, int, int]] = []
    export_state(r, tmp_path / "a", lambda *step: told.append(step))
    conversations = indexes.sizes(r, "conversations")[0]
    assert [t for t in told if t[0] == "writing conversations"] == [
        ("writing conversations", n, conversations) for n in range(1, conversations + 1)
    ]
    phases = list(dict.fromkeys(phase for phase, _, _ in told))
    assert phases == [
        "reading Redis",
        "writing conversations",
        "writing crons, subscriptions, memory",
    ]
    assert told[-1] == ("writing crons, subscriptions, memory", 1, 1)
    told.clear()
    import_state(r, tmp_path / "a", True, lambda *step: told.append(step))
    phases = list(dict.fromkeys(phase for phase, _, _ in told))
    assert phases == [
        "reading conversations", "reading crons, subscriptions, memory", "writing Redis"
    ]  # fmt: skip
    assert told[-1] == ("writing Redis", 1, 1)


def test_progress_bars_only_on_a_terminal() -> None:
    plain = Console(file=io.StringIO(), force_terminal=False)
    with bars(plain) as tell:
        tell("writing conversations", 1, 2)
    assert plain.file.getvalue() == ""  # type: ignore[attr-defined]
    terminal = Console(file=io.StringIO(), force_terminal=True, width=80)
    with bars(terminal) as tell:
        tell("writing conversations", 1, 2)
        tell("writing conversations", 2, 2)
    assert "writing conversations" in terminal.file.getvalue()  # type: ignore[attr-defined]
    assert "2/2" in terminal.file.getvalue()  # type: ignore[attr-defined]


def walrus(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUS_")}
    env["WALRUS_REDIS_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "walrus_tasks.cli", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_cli_round_trip_of_real_conversations(
    cluster: Cluster, owned: RedisServer, tmp_path: Path, sender: str
) -> None:
    for agent in ("echo", "tooly", "echo"):
        cluster.wait_run(cluster.send(agent, "héllo / \u2028 there", sender))
    source = cluster.redis()
    stored = source.lrange(keys.conv(keys.cid("tooly", sender), "history"), 0, -1)
    assert [json.loads(m)["role"] for m in stored] == [
        "user",
        "assistant",
        *["tool"] * 3,
        "assistant",
    ]

    done = walrus(cluster.redis_url, "export", str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr
    assert "conversations" in done.stdout and "subscriptions" in done.stdout
    done = walrus(owned.url, "import", str(tmp_path / "a"), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not a terminal: no progress bars, the output stays parseable
    counts = json.loads(done.stdout)
    assert counts["conversations"] >= 2 and counts["messages"] >= len(stored) + 4
    target = client(owned)
    assert target.lrange(keys.conv(keys.cid("tooly", sender), "history"), 0, -1) == stored
    done = walrus(owned.url, "export", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "b") == tree(tmp_path / "a")

    # Existing state is not overwritten without --replace; a bad dir is one clear line.
    done = walrus(owned.url, "import", str(tmp_path / "a"))
    assert done.returncode == 1 and "--replace" in done.stderr and done.stdout == ""
    done = walrus(owned.url, "import", str(tmp_path / "nowhere"), "--replace")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "is not a directory" in done.stderr
    done = walrus(owned.url, "import", str(tmp_path / "a"), "--replace")
    assert done.returncode == 0, done.stderr
