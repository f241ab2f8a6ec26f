"""``walrus status``: workers, queue depths, leases, active runs and run outcomes by agent.

Read from Redis directly; the figures are those the gateway's ``GET /metrics`` exports.

It does not go through the gateway, so it works (and is most useful) when the gateway is down.
When a ``walrus up`` runs for the config directory, its children and their restarts come first
(from its state file, so they show even when Redis is down).
"""

from __future__ import annotations

from typing import Any

import redis
from rich.markup import escape
from rich.table import Table

from walrus_tasks import indexes, keys, limits
from walrus_tasks.cli.common import RET_CONNECT, JsonOption, console, fail, print_json
from walrus_tasks.cli.tables import Col, print_table
from walrus_tasks.cli.up_state import read_state
from walrus_tasks.config import Config, load_config
from walrus_tasks.connection import client
from walrus_tasks.errors import ConfigError
from walrus_tasks.metrics import RUN_STATUSES, read_figures
from walrus_tasks.redis_url import describe
from walrus_tasks.settings import get_settings


def active_runs(r: redis.Redis) -> list[dict[str, str]]:
    """The runs in ``running``/``waiting`` state with their agent, sender, status and step."""
    run_ids = sorted(indexes.members(r, "runs:active"))
    fields = ("agent", "sender", "status", "step", "started_at")
    pipe = r.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hmget(keys.run(run_id), fields)
    rows: list[dict[str, str]] = []
    for run_id, values in zip(run_ids, pipe.execute(), strict=True):
        rows.append({"run_id": run_id, **{f: v or "" for f, v in zip(fields, values, strict=True)}})
    return sorted(rows, key=lambda row: row["started_at"])


def workers() -> dict[str, list[dict[str, Any]]]:
    """Hostname → the tasks it is running, for every worker that answers within 1 s."""
    from walrus_tasks.celery_app import app

    try:
        replies = app.control.inspect(timeout=1).active()
    except Exception:  # Celery raises kombu/redis errors of many kinds: treat as no answer
        return {}
    return {host: list(tasks or []) for host, tasks in sorted((replies or {}).items())}


def snapshot(r: redis.Redis) -> dict[str, Any]:
    """Everything ``walrus status`` shows, as plain data."""
    from walrus_tasks.celery_app import ALL_QUEUES

    figures = read_figures(r, ALL_QUEUES)
    return {
        "redis": describe(get_settings().redis_url),
        "broker": describe(get_settings().broker_url or get_settings().redis_url),
        "broker_up": figures.broker_up,
        "workers": {
            host: {"active": len(tasks), "tasks": [t.get("name") for t in tasks]}
            for host, tasks in (workers() if figures.broker_up else {}).items()
        },
        "queues": figures.queues,
        "unacked": figures.unacked,
        "leases": figures.leases,
        "conversations": figures.conversations,
        "inboxes": figures.inboxes,
        "active_runs": active_runs(r),
        "runs": {agent: stats.as_dict() for agent, stats in figures.runs.items()},
        "limits": [use.model_dump() for use in limits.usage(r, _config())],
    }


def _config() -> Config:
    """The config directory's limits; none when it does not load (status still shows use)."""
    home = get_settings().home
    try:
        return load_config(home)
    except ConfigError:
        return Config(home=home)


def status(as_json: JsonOption = False) -> None:
    """Show walrus up's children, workers, queues, leases, active runs and run outcomes."""
    up = read_state(get_settings().home.resolve())
    if up and not as_json:
        _render_up(up)
    url = get_settings().redis_url
    r = client(url, socket_connect_timeout=2)
    try:
        r.ping()  # first: Celery's broadcast would retry a dead broker for a long time
        data = {"up": up, **snapshot(r)}
    except (redis.RedisError, OSError) as e:
        fail(f"cannot reach Redis at {url}: {e}", RET_CONNECT)
    finally:
        r.close()
    if as_json:
        print_json(data)
        return
    _render(data)


ACTIVE_RUNS = (Col("run_id", "id"), Col("agent"), Col("sender"), Col("status"), Col("step"))


def _render_up(up: dict[str, Any]) -> None:
    table = Table(title=f"walrus up (pid {up.get('pid')})", title_justify="left")
    for column in ("child", "pid", "state", "restarts", "last exit"):
        table.add_column(column, justify="right" if column == "restarts" else "left")
    for name, child in up.get("children", {}).items():
        table.add_row(
            escape(name),
            str(child.get("pid") or ""),
            escape(str(child.get("state", ""))),
            str(child.get("restarts", 0)),
            escape(str(child.get("last_exit") or "")),
        )
    console.print(table)


def _render(data: dict[str, Any]) -> None:
    console.print(f"[bold]redis[/] {escape(data['redis'])}")
    table = Table(title="workers", title_justify="left")
    table.add_column("worker")
    table.add_column("active", justify="right")
    table.add_column("tasks")
    for host, w in data["workers"].items():
        table.add_row(escape(host), str(w["active"]), escape(", ".join(map(str, w["tasks"]))))
    if not data["workers"]:
        table.add_row("[yellow]none answered[/]", "", "")
    console.print(table)

    table = Table(title="queues and state", title_justify="left")
    table.add_column("name")
    table.add_column("count", justify="right")
    for q, n in data["queues"].items():
        table.add_row(f"queue {q}", str(n))
    if not data["broker_up"]:
        table.add_row(f"[red]broker {escape(data['broker'])} did not answer[/]", "?")
    if data["unacked"] is not None:
        table.add_row("in flight (unacked)", str(data["unacked"]))
    table.add_row("leases held", str(data["leases"]))
    table.add_row("conversations", str(data["conversations"]))
    table.add_row("inboxes with messages", str(data["inboxes"]))
    console.print(table)

    names = [c.header for c in ACTIVE_RUNS]
    rows = [[str(run[c]) for c in names] for run in data["active_runs"]]
    print_table(ACTIVE_RUNS, rows, f"active runs ({len(rows)})")

    table = Table(title="runs ended, by agent", title_justify="left")
    table.add_column("agent")
    for column in (*RUN_STATUSES, "mean duration"):
        table.add_column(column, justify="right")
    for agent, runs in data["runs"].items():
        mean = runs["mean_seconds"]
        table.add_row(
            escape(agent),
            *(str(runs.get(s, 0)) for s in RUN_STATUSES),
            "" if mean is None else f"{mean:.2f} s",
        )
    if not data["runs"]:
        table.add_row("[yellow]none yet[/]", *[""] * (len(RUN_STATUSES) + 1))
    console.print(table)
    if data["limits"]:
        _render_limits(data["limits"])


def _render_limits(uses: list[dict[str, Any]]) -> None:
    table = Table(title="limits (cluster-wide)", title_justify="left")
    for column in ("limit", "in flight", "requests/min", "tokens/min", "waiting"):
        table.add_column(column, justify="left" if column == "limit" else "right")

    def of(used: int, limit: int | None) -> str:
        return f"{used}/{limit}" if limit else str(used)

    for u in uses:
        table.add_row(
            escape(u["name"]),
            of(u["in_flight"], u["max_concurrency"]),
            of(u["requests_last_minute"], u["requests_per_minute"]),
            of(u["tokens_last_minute"], u["tokens_per_minute"]),
            str(u["waiting"]),
        )
    console.print(table)
