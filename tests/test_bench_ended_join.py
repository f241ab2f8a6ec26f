"""``python -m bench.ended_join``, small: every stream held open, every join answered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_ended_join_bench_holds_its_streams_and_answers_every_join() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.ended_join", "--open", "20", "--joins", "20"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout)
    assert out["open_streams"] == out["still_open"] == 20, out
    assert out["joins"] == out["answered"] == 20, out
    assert out["gateway_cpu_ms_a_join"] >= 0 and out["wall_ms_a_join"] > 0, out
