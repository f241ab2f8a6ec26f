"""The operator's gaps, tried as a new user would: ``walrus agents``, ``walrus runs`` as a list,
``walrus --version``, ids never cut at 80 columns, a cron of an unknown skill refused, and a
config that loads without a warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import warnings
from importlib.metadata import version
from pathlib import Path

from tests.cluster import Cluster
from walrus_tasks.config import load_config


def walrus(
    cluster: Cluster, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "WALRUS_URL": cluster.gateway_url, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "walrus_tasks.cli", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_walrus_version_prints_the_package_version(cluster: Cluster) -> None:
    assert ok(walrus(cluster, "--version")).strip() == f"walrus {version('walrus_tasks')}"


def test_walrus_agents_lists_shows_adds_and_removes(cluster: Cluster) -> None:
    name = f"ops-{uuid.uuid4().hex[:6]}"
    assert "tooly" in ok(walrus(cluster, "agents", "ls"))
    created = walrus(cluster, "agents", "add", name, "--tool", "clock", "--description", "x")
    assert f"created agent {name}" in ok(created)
    shown = ok(walrus(cluster, "agents", "show", name))
    assert "clock" in shown and "mock" in shown
    refused = walrus(cluster, "agents", "add", f"{name}-b", "--member", "nobody")
    assert refused.returncode != 0 and "nobody" in refused.stderr
    refused = walrus(cluster, "agents", "add", f"{name}-c", "--tool", "nosuchtool")
    assert refused.returncode != 0 and "created" not in refused.stdout
    assert "unknown tool 'nosuchtool' (known tools: ask_user, bash," in refused.stderr
    assert "HTTP 422" in refused.stderr
    assert f"deleted agent {name}" in ok(walrus(cluster, "agents", "rm", name))
    assert walrus(cluster, "agents", "show", name).returncode != 0


def test_walrus_runs_lists_with_filters_and_full_ids(cluster: Cluster, sender: str) -> None:
    ok_id = cluster.send("echo", "hi", sender)
    cluster.wait_run(ok_id)
    bad_id = cluster.send("broken", "hi", sender)
    cluster.wait_run(bad_id)
    listed = ok(walrus(cluster, "runs", "--sender", sender))
    assert ok_id in listed and bad_id in listed  # whole 32-character ids at 80 columns
    failed = ok(walrus(cluster, "runs", "--sender", sender, "--status", "failed"))
    assert bad_id in failed and ok_id not in failed
    paged = walrus(cluster, "runs", "--sender", sender, "--limit", "1")
    assert bad_id in ok(paged) and "--cursor" in paged.stderr
    assert "succeeded" in ok(walrus(cluster, "runs", ok_id))  # one run, as before


def uncut(result: subprocess.CompletedProcess[str], *ids: str) -> str:
    """The table printed at 80 columns: no line wider, no cell cut with "…", each id whole."""
    table = ok(result)
    assert all(len(line) <= 80 for line in table.splitlines()), table
    assert "…" not in table, table
    for whole in ids:
        assert whole in table, (whole, table)
    return table


def test_tables_fit_80_columns_without_cutting_a_cell_or_an_id(
    cluster: Cluster, sender: str
) -> None:
    added = ok(walrus(cluster, "cron", "add", "@every 1h", "echo", "a message to wrap here",
                      "--sender", sender, "--json"))  # fmt: skip
    cron_id = json.loads(added)["id"]
    sub = ok(walrus(cluster, "events", "sub", "ops.some.long.source.name", "echo", "--json"))
    sub_id = json.loads(sub)["id"]
    ok_id = cluster.send("echo", "hi", sender)
    bad_id = cluster.send("broken", "hi", sender)
    cluster.wait_run(ok_id)
    cluster.wait_run(bad_id)
    try:
        uncut(walrus(cluster, "cron", "ls"), cron_id, "schedule", "@every 1h", sender)
        uncut(walrus(cluster, "events", "ls"), sub_id, "ops.some.long.source.name")
        runs = walrus(cluster, "runs", "--sender", sender)
        assert "succeeded" in uncut(runs, ok_id, bad_id, "status", "failed", "broken")
        assert "left out at 80 columns: created" in runs.stderr  # says what it dropped
        uncut(walrus(cluster, "agents", "ls"), "tooly", "slowtool", "description")
        wide = walrus(cluster, "runs", "--sender", sender, env={"COLUMNS": "160"})
        assert "created" in ok(wide) and "left out" not in wide.stderr
    finally:
        ok(walrus(cluster, "cron", "rm", cron_id))
        ok(walrus(cluster, "events", "rm", sub_id))


def test_a_cron_of_a_skill_the_agent_lacks_is_refused(cluster: Cluster) -> None:
    refused = walrus(cluster, "cron", "add", "@every 1h", "echo", "--skill", "greet")
    assert refused.returncode != 0
    assert "has no skill 'greet'" in refused.stderr
    with cluster.http() as c:
        resp = c.post(
            "/v1/crons", json={"schedule": "@every 1h", "agent": "echo", "skill": "greet"}
        )
        assert resp.status_code == 422, resp.text
        assert all(x["skill"] != "greet" for x in c.get("/v1/crons").json()["crons"])


def test_a_config_loads_and_dumps_without_a_warning(home: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load_config(home)
        config.model_dump()
        config.model_dump_json()
