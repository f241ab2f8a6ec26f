"""Beat: cron entries created over the API, heartbeats, two beats at once, and config reload."""

from __future__ import annotations

import itertools
import json
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from celery import Celery

from beat.scheduler import WalrusScheduler
from tests.cluster import Cluster, parse_sse, wait_for
from tests.conftest import redis_db_url, write_home
from walrus_tasks import keys
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.settings import get_settings

PULSE = """
    model = "mock"
    [mock]
    reply = "p1 p2 p3 p4 p5 p6 p7 p8 p9 p10"
    chunk_delay_ms = 250
    [heartbeat]
    interval = "1s"
    prompt = "pulse check"
"""
NAPPER = """
    model = "mock"
    tools = ["sleep"]
    [mock]
    tool_calls = ["sleep"]
    reply = "old reply"
"""


@pytest.fixture
def beat_cluster(redis_server: RedisServer, tmp_path: Path, fake_llm: Any) -> Iterator[Cluster]:
    """A gateway, a worker and two beats on a fresh database, with a config dir of its own."""
    home = write_home(tmp_path / "home", fake_llm.base_url)
    (home / "agents" / "napper.toml").write_text(textwrap.dedent(NAPPER))
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    c.env_extra["WALRUS_CONFIG_POLL"] = "0.2"
    try:
        c.start_gateway()
        c.start_worker("worker1")
        c.start_beat("beat1")
        c.start_beat("beat2")
        c.wait_ready()
        yield c
    finally:
        c.stop()


def runs_of(c: Cluster, agent: str, sender: str) -> list[dict[str, Any]]:
    """The runs of a conversation, in history order (one per user message)."""
    with c.http() as http:
        return [
            http.get(f"/v1/runs/{m['run_id']}").json()
            for m in c.history(agent, sender)
            if m["role"] == "user"
        ]


def slot_of(run: dict[str, Any], entry: dict[str, Any], period: float) -> int:
    """The schedule slot (``created_at + k * period``) of the fire that sent the run: the beat
    records the slot's time in the run (``timer_due``), however late the fire was."""
    return round((run["timer_due"] - entry["created_at"]) / period)


def test_a_cron_every_2s_fires_on_schedule_five_times_with_two_beats_running(
    beat_cluster: Cluster,
) -> None:
    c = beat_cluster
    with c.http() as http:
        resp = http.post(
            "/v1/crons", json={"schedule": "@every 2s", "agent": "echo", "message": "tick"}
        )
        assert resp.status_code == 201, resp.text
        entry = resp.json()
        assert entry["sender"] == f"cron:{entry['id']}"
        assert entry["next_fire_at"] == pytest.approx(entry["created_at"] + 2, abs=0.01)
        assert http.get("/v1/crons").json()["crons"] == [entry]

    sender = entry["sender"]
    # Five fires whose runs have ended (a run enters history as it starts: under load the
    # fifth may still be running when the fifth message is seen).
    runs = wait_for(
        lambda: (r := runs_of(c, "echo", sender)) and len(r) >= 5
        and all(run["status"] in ("succeeded", "failed", "cancelled") for run in r[:5]) and r,
        30, 0.2, "5 fires, ended",
    )  # fmt: skip
    with c.http() as http:
        assert http.delete(f"/v1/crons/{entry['id']}").json() == {"deleted": entry["id"]}
    # Each fire is on its own slot of the schedule (created_at + 2 k), consecutive, within
    # one beat tick of it: no slot fired twice (two beats), none skipped.
    slots = [slot_of(run, entry, 2) for run in runs[:5]]
    assert slots == list(range(slots[0], slots[0] + 5)), slots
    for run, slot in zip(runs, slots, strict=False):
        assert run["timer_due"] == pytest.approx(entry["created_at"] + 2 * slot, abs=0.002)
        late = run["created_at"] - run["timer_due"]
        assert -0.05 <= late < 1.0, f"fired {late:.3f}s after its slot"
        assert run["status"] == "succeeded"
    assert all(m["content"] == "tick" for m in c.history("echo", sender) if m["role"] == "user")

    # Deleted: it never fires again (two more periods, nothing new).
    fired = len(runs_of(c, "echo", sender))
    time.sleep(4.5)
    assert len(runs_of(c, "echo", sender)) == fired
    with c.http() as http:
        assert http.get("/v1/crons").json()["crons"] == []
        assert http.delete(f"/v1/crons/{entry['id']}").status_code == 404
    # Exactly one of the two beats fired timers all along.
    logs = [(c.log_dir / f"beat{i}.log").read_text() for i in (1, 2)]
    assert sum("holds the beat lock" in log for log in logs) == 1
    assert sum(log.count(f"cron {entry['id']} fired") for log in logs) == fired


def test_the_standby_beat_takes_over_when_the_firing_one_dies(beat_cluster: Cluster) -> None:
    c = beat_cluster
    with c.http() as http:
        entry = http.post(
            "/v1/crons", json={"schedule": "@every 1s", "agent": "echo", "message": "tick"}
        ).json()
    sender = entry["sender"]
    wait_for(lambda: len(runs_of(c, "echo", sender)) >= 2, 20, 0.2, "the first fires")
    holder = next(
        n
        for n in ("beat1", "beat2")
        if "holds the beat lock" in (c.log_dir / f"{n}.log").read_text()
    )
    c.kill9(holder)
    before = len(runs_of(c, "echo", sender))
    # The lock of the dead beat expires (WALRUS_BEAT_LOCK_TTL, 5 s) and the other one fires on.
    wait_for(lambda: len(runs_of(c, "echo", sender)) >= before + 3, 20, 0.2, "fires after failover")
    runs = runs_of(c, "echo", sender)
    slots = [slot_of(r, entry, 1) for r in runs]
    assert len(slots) == len(set(slots)), f"a slot fired twice: {slots}"


def test_a_once_entry_fires_once_and_deletes_itself(beat_cluster: Cluster) -> None:
    c = beat_cluster
    with c.http() as http:
        entry = http.post(
            "/v1/crons",
            json={"schedule": "@every 1s", "agent": "echo", "message": "only once", "once": True},
        ).json()
    wait_for(lambda: runs_of(c, "echo", entry["sender"]), 20, 0.1, "the one fire")
    time.sleep(2.5)  # two more periods
    runs = runs_of(c, "echo", entry["sender"])
    assert len(runs) == 1 and runs[0]["status"] in ("queued", "running", "succeeded")
    with c.http() as http:
        assert http.get("/v1/crons").json()["crons"] == []


def test_quiet_hours_skip_fires_without_catch_up(beat_cluster: Cluster) -> None:
    c = beat_cluster
    with c.http() as http:
        # Quiet all day but the minute before midnight: every fire now is skipped.
        entry = http.post(
            "/v1/crons",
            json={"schedule": "@every 1s", "agent": "echo", "message": "shh",
                  "quiet_start": "00:00", "quiet_end": "23:59", "timezone": "Pacific/Kiritimati"},
        ).json()  # fmt: skip
        time.sleep(3.5)
        now = time.time()
        # (Kiritimati is UTC+14; skip the test in the one minute a day the window is open.)
        local = time.gmtime(now + 14 * 3600)
        if (local.tm_hour, local.tm_min) == (23, 59):
            pytest.skip("ran in the open minute of the quiet window")
        listed = http.get(f"/v1/crons/{entry['id']}").json()
        http.delete(f"/v1/crons/{entry['id']}")
    assert runs_of(c, "echo", entry["sender"]) == []
    assert listed["fires"] == 0 and listed["skipped"] >= 2
    assert listed["next_fire_at"] > now - 1.5  # moved on with the clock: no backlog to replay


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"schedule": "61 * * * *", "agent": "echo", "message": "x"}, 422, "bad cron expression"),
        ({"schedule": "* * *", "agent": "echo", "message": "x"}, 422, "expected 5 fields"),
        ({"schedule": "@every 0s", "agent": "echo", "message": "x"}, 422, "shortest interval"),
        ({"schedule": "@every soon", "agent": "echo", "message": "x"}, 422, "@every"),
        ({"schedule": "@every 5s", "agent": "nobody", "message": "x"}, 404, "unknown agent"),
        ({"schedule": "@every 5s", "agent": "Bad Name", "message": "x"}, 422, "agent"),
        ({"schedule": "@every 5s", "agent": "echo"}, 422, "exactly one of"),
        ({"schedule": "@every 5s", "agent": "echo", "message": "x", "skill": "s"}, 422, "exactly"),
        ({"schedule": "@every 5s", "agent": "echo", "message": "x", "timezone": "Mars/Base"},
         422, "unknown timezone"),
        ({"schedule": "@every 5s", "agent": "echo", "message": "x", "quiet_start": "22:00"},
         422, "quiet_end"),
        ({"schedule": "@every 5s", "agent": "echo", "message": "x", "quiet_start": "25:00",
          "quiet_end": "07:00"}, 422, "HH:MM"),
        ({"schedule": "@every 5s", "agent": "echo", "message": "x", "sender": "no spaces"},
         422, "sender"),
        ({"schedule": "@every 5s", "agent": "echo", "message": "x", "extra": 1}, 422, "extra"),
    ],
)  # fmt: skip
def test_a_bad_cron_entry_is_refused_and_changes_nothing(
    cluster: Cluster, body: dict[str, Any], status: int, fragment: str
) -> None:
    r = cluster.redis()
    before = (r.hgetall(keys.CRONS), r.zrange(keys.CRONS_DUE, 0, -1))
    with cluster.http() as http:
        resp = http.post("/v1/crons", json=body)
    assert resp.status_code == status, resp.text
    assert fragment in resp.json()["error"]["message"]
    assert (r.hgetall(keys.CRONS), r.zrange(keys.CRONS_DUE, 0, -1)) == before


def test_heartbeats_arrive_each_interval_never_two_at_once_and_follow_a_reload(
    redis_server: RedisServer, tmp_path: Path, fake_llm: Any
) -> None:
    home = write_home(tmp_path / "home", fake_llm.base_url)
    pulse = home / "agents" / "pulse.toml"
    pulse.write_text(textwrap.dedent(PULSE))
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    c.env_extra["WALRUS_CONFIG_POLL"] = "0.2"
    try:
        c.start_gateway()
        c.start_worker("worker1")
        c.start_beat()
        c.wait_ready()
        # Each run streams 10 chunks 250 ms apart (~2.5 s); the interval is 1 s.
        wait_for(
            lambda: sum(r["status"] == "succeeded" for r in runs_of(c, "pulse", "heartbeat")) >= 2,
            30, 0.2, "two heartbeat runs",
        )  # fmt: skip
        runs = [r for r in runs_of(c, "pulse", "heartbeat") if r["finished_at"]]
        for earlier, later in itertools.pairwise(runs):
            assert later["started_at"] >= earlier["finished_at"], "two heartbeat runs overlapped"
        # The user turn is the configured prompt; skipped ticks are said so in the log.
        prompts = [m["content"] for m in c.history("pulse", "heartbeat") if m["role"] == "user"]
        assert set(prompts) == {"pulse check"}
        wait_for(
            lambda: "the previous heartbeat run is still going"
            in (c.log_dir / "beat.log").read_text(),
            10, 0.2, "a skipped tick",
        )  # fmt: skip

        # A reload that turns the heartbeat off removes its entry: no new heartbeat runs.
        pulse.write_text(textwrap.dedent(PULSE).replace('interval = "1s"', "interval = 0"))
        with c.http() as http:
            assert http.post("/v1/admin/reload").status_code == 200
        r = c.redis()
        wait_for(lambda: not r.hexists(keys.HEARTBEATS, "pulse"), 10, 0.1, "the entry removed")
        wait_for(
            lambda: all(x["status"] == "succeeded" for x in runs_of(c, "pulse", "heartbeat")),
            15, 0.2, "the last heartbeat run to end",
        )  # fmt: skip
        count = len(runs_of(c, "pulse", "heartbeat"))
        time.sleep(2.5)
        assert len(runs_of(c, "pulse", "heartbeat")) == count
    finally:
        c.stop()


def test_reload_adds_agents_everywhere_and_runs_in_flight_keep_their_config(
    beat_cluster: Cluster, sender: str
) -> None:
    c = beat_cluster
    agents = c.home / "agents"
    with c.http() as http:
        # A bad config directory is refused and nothing changes.
        (agents / "broken-new.toml").write_text("model = [\n")
        resp = http.post("/v1/admin/reload")
        assert resp.status_code == 422, resp.text
        assert "broken-new" in resp.json()["error"]["message"]
        (agents / "broken-new.toml").unlink()
        assert http.get("/v1/agents/newcomer").status_code == 404

        # A run that started on the old config finishes on it, across its tool call.
        run_id = c.send("napper", "nap", sender)
        with http.stream("GET", f"/v1/runs/{run_id}/events") as events:
            for _, event in parse_sse(events.iter_lines()):
                if event["type"] == "tool_start":
                    break
        (agents / "napper.toml").write_text(textwrap.dedent(NAPPER).replace("old", "new"))
        (agents / "newcomer.toml").write_text('model = "mock"\n[mock]\nreply = "I am new."\n')
        resp = http.post("/v1/admin/reload")
        assert resp.status_code == 200, resp.text
        assert "newcomer" in resp.json()["agents"]
        assert http.get("/v1/agents/newcomer").status_code == 200

        assert c.wait_run(run_id)["status"] == "succeeded"
        assert c.history("napper", sender)[-1]["content"] == "old reply"
        # New runs see the new config, on the worker too (it polls the generation).
        assert c.wait_run(c.send("napper", "again", sender))["status"] == "succeeded"
        assert c.history("napper", sender)[-1]["content"] == "new reply"
        assert c.wait_run(c.send("newcomer", "hi", sender))["status"] == "succeeded"
        assert c.history("newcomer", sender)[-1]["content"] == "I am new."


def test_walrus_cron_add_ls_rm_and_reload_over_the_gateway(cluster: Cluster) -> None:
    from tests.test_cli import walrus

    url = ["--url", cluster.gateway_url]
    added = walrus("cron", "add", "0 9 * * 1-5", "echo", "standup?", "--quiet", "12:00-13:00",
                   "--timezone", "Europe/Berlin", "--json", *url)  # fmt: skip
    assert added.returncode == 0, added.stderr
    entry = json.loads(added.stdout)
    assert entry["timezone"] == "Europe/Berlin" and entry["quiet_start"] == "12:00"
    fire = datetime.fromtimestamp(entry["next_fire_at"], ZoneInfo("Europe/Berlin"))
    assert (fire.hour, fire.minute, fire.weekday() < 5) == (9, 0, True)

    listed = walrus("cron", "ls", *url)
    assert listed.returncode == 0, listed.stderr
    assert entry["id"] in listed.stdout and "0 9 * * 1-5" in listed.stdout

    bad = walrus("cron", "add", "0 25 * * *", "echo", "x", *url)
    assert bad.returncode != 0 and "bad cron expression" in bad.stderr
    assert "Traceback" not in bad.stderr

    removed = walrus("cron", "rm", entry["id"], *url)
    assert removed.returncode == 0 and f"deleted cron {entry['id']}" in removed.stdout
    again = walrus("cron", "rm", entry["id"], *url)
    assert again.returncode != 0 and "unknown cron" in again.stderr

    reloaded = walrus("reload", *url)
    assert reloaded.returncode == 0, reloaded.stderr
    assert "config reloaded (generation" in reloaded.stdout and "echo" in reloaded.stdout


def test_the_firing_beat_sleeps_10_ms_or_more_between_ticks_and_static_entries_keep_time(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's scheduler wakes 10 ms before a static entry (the reaper) is due, then asks for
    no sleep at all until it is: the beat ticked ~20 times in a row there, each tick six Redis
    round trips (found by hand in ``MONITOR``). Driven as ``celery.beat.Service`` drives it."""
    monkeypatch.setenv("WALRUS_HOME", str(write_home(tmp_path / "home", "http://127.0.0.1:1")))
    get_settings.cache_clear()
    url = redis_db_url(redis_server)  # a fresh database: the beat's state and its broker
    r = redis.Redis.from_url(url, decode_responses=True)
    app = Celery("beat-ticks", set_as_current=False, broker=url)
    app.conf.beat_schedule = {"often": {"task": "walrus.test.often", "schedule": 0.2}}
    try:
        scheduler = WalrusScheduler(app=app)
        scheduler.redis = r  # the test's database, not the session's default one
        scheduler.lock = r.lock(keys.BEAT_LOCK, timeout=5, thread_local=False)
        waits = []
        until = time.monotonic() + 1.1
        while time.monotonic() < until:
            waits.append(scheduler.tick())
            if waits[-1] > 0:  # celery.beat.Service.start sleeps only then
                time.sleep(waits[-1])
        sent = r.llen("celery")  # the app's default queue, in the test's database
    finally:
        get_settings.cache_clear()
        app.close()
        r.flushdb()
        r.close()
    assert min(waits) >= 0.01, sorted(waits)[:5]
    assert len(waits) < 40, f"{len(waits)} ticks in 1.1 s"
    assert 3 <= sent <= 6, f"the 0.2 s entry sent {sent} times in 1.1 s"
