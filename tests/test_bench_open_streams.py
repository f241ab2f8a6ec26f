"""``python -m bench.open_streams``, small: every stream held open, every call answered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_open_streams_bench_holds_its_streams_and_answers_every_call() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--open", "20", "--joins", "20", "--streamed", "20"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.open_streams", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout)
    assert out["open_streams"] == out["still_open"] == 20, out
    assert out["join"]["joins"] == out["join"]["answered"] == 20, out
    assert out["streamed"]["runs"] == 20 and out["streamed"]["failures"] == {}, out
    assert out["streamed"]["first_chunk_p50_ms"] > 0 and out["join"]["wall_ms"] > 0, out
