"""The suite never reaches a Redis it did not start (whatever ``WALRUS_REDIS_URL`` names)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from walrus_tasks.redis_server import start_redis

ROOT = Path(__file__).resolve().parent.parent


def test_in_process_tests_leave_a_decoy_redis_named_by_walrus_redis_url_untouched(
    tmp_path: Path,
) -> None:
    decoy = start_redis(tmp_path / "decoy")
    try:
        env = {**os.environ, "WALRUS_REDIS_URL": decoy.url}
        # The in-process tests: they call submit() and the Lua scripts directly, and so send
        # Celery messages from this process.
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/test_lease.py", "tests/test_schedule.py"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        client = redis.Redis.from_url(decoy.url)
        assert client.dbsize() == 0, sorted(client.keys("*"))[:10]
        stats = client.info("commandstats")
        writes = {c for c in stats if c.split("_", 1)[-1] in {"lpush", "rpush", "sadd", "evalsha"}}
        assert not writes, writes
        client.close()
    finally:
        decoy.stop()
