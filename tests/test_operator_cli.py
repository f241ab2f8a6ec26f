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


def walrus(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "WALRUS_URL": cluster.gateway_url}
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


def test_cron_and_subscription_tables_never_cut_an_id(cluster: Cluster, sender: str) -> None:
    added = ok(walrus(cluster, "cron", "add", "@every 1h", "echo", "a long message " * 5,
                      "--sender", sender, "--json"))  # fmt: skip
    cron_id = json.loads(added)["id"]
    sub = ok(walrus(cluster, "events", "sub", "ops.some.long.source.name", "echo", "--json"))
    sub_id = json.loads(sub)["id"]
    try:
        assert cron_id in ok(walrus(cluster, "cron", "ls"))
        assert sub_id in ok(walrus(cluster, "events", "ls"))
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
