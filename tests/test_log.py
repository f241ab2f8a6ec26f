"""The log pipeline (structlog over stdlib logging), rendered in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import logging, structlog
from walrus_tasks.log import bound, setup_logging
setup_logging()
log = logging.getLogger("walrus.test")
with bound(agent="echo", sender="ops", run_id="r1", task_id=None):
    with bound(task_id="t1"):
        log.info("run %s", "succeeded", extra={"status": "succeeded"})
    structlog.get_logger("walrus.struct").warning("from structlog", step=2)
log.info("outside")
record = log.makeRecord("walrus.test", logging.INFO, "f.py", 1, "m", (), None)
assert (record.thread, record.process, record.processName) == (None, None, None), vars(record)
assert logging._srcfile is None  # no record looks for its caller
try:
    1 / 0
except ZeroDivisionError:
    log.exception("boom")
"""


def run(fmt: str) -> list[str]:
    env = {**os.environ, "WALRUS_LOG_FORMAT": fmt, "WALRUS_LOG_LEVEL": "INFO"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stderr.splitlines()


def test_json_lines_carry_the_bound_context_and_extras() -> None:
    lines = run("json")
    records = [json.loads(line) for line in lines if line.startswith("{")]
    first, second, outside, boom = records
    assert first["msg"] == "run succeeded" and first["level"] == "info"
    assert first["logger"] == "walrus.test" and isinstance(first["ts"], float)
    assert (first["agent"], first["sender"], first["run_id"], first["task_id"]) == (
        "echo", "ops", "r1", "t1",
    )  # fmt: skip
    assert first["status"] == "succeeded"
    assert second["msg"] == "from structlog" and second["level"] == "warning"
    assert second["run_id"] == "r1" and second["step"] == 2 and "task_id" not in second
    assert "run_id" not in outside
    assert "ZeroDivisionError" in boom["exception"]


def test_console_lines_end_with_the_context() -> None:
    lines = run("console")
    assert lines[0].endswith(
        "walrus.test: run succeeded  [agent=echo sender=ops run_id=r1 task_id=t1]"
    )
    assert any("Traceback" in line for line in lines)
