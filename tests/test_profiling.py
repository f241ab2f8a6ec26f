"""``WALRUS_PROFILE_DIR`` profiles a process; ``WALRUS_PROFILE_CLOCK=cpu`` on its CPU clock,
``WALRUS_PROFILE_CLOCK=samples`` by sampling its stack.

Each case runs a fresh interpreter (profiling starts at a process's start and dumps at its
exit) that sleeps 0.4 s in one function and spins the CPU in another, then reads its dump:
on the wall clock the sleep counts, on the CPU clock and in the samples it does not.
"""

from __future__ import annotations

import os
import pstats
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROGRAM = textwrap.dedent(
    """
    import time
    from walrus_tasks import profiling

    def asleep():
        time.sleep(0.4)

    def busy():
        end = time.thread_time() + 0.1
        while time.thread_time() < end:
            pass

    assert profiling.start("probe")
    asleep()
    busy()
    """
)


def _run(tmp_path: Path, clock: str | None) -> None:
    """The program, profiled into ``tmp_path``."""
    env = {**os.environ, "WALRUS_PROFILE_DIR": str(tmp_path)}
    env.pop("WALRUS_PROFILE_CLOCK", None)
    if clock is not None:
        env["WALRUS_PROFILE_CLOCK"] = clock
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, timeout=60, check=False)
    assert done.returncode == 0


def _profiled(tmp_path: Path, clock: str | None) -> dict[str, float]:
    """Seconds each of the program's functions took, as its dump records them."""
    _run(tmp_path, clock)
    (dump,) = tmp_path.glob("probe-*.prof")
    stats = pstats.Stats(str(dump)).stats  # type: ignore[attr-defined]
    return {name: entry[3] for (_, _, name), entry in stats.items() if name in ("asleep", "busy")}


@pytest.mark.parametrize("clock", [None, "wall"])
def test_a_process_is_profiled_on_the_wall_clock_by_default(
    tmp_path: Path, clock: str | None
) -> None:
    took = _profiled(tmp_path, clock)
    assert took["asleep"] >= 0.35 and took["busy"] >= 0.09


def test_on_the_cpu_clock_a_sleep_costs_nothing_and_work_counts(tmp_path: Path) -> None:
    took = _profiled(tmp_path, "cpu")
    assert took["asleep"] < 0.05 and took["busy"] >= 0.09


def test_samples_count_the_stacks_on_the_cpu_and_not_a_sleep(tmp_path: Path) -> None:
    _run(tmp_path, "samples")
    (dump,) = tmp_path.glob("probe-*.folded")
    counts = {}
    for line in dump.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[stack] = int(n)
    busy = sum(n for stack, n in counts.items() if stack.split(";")[-1].startswith("busy ("))
    asleep = sum(n for stack, n in counts.items() if "asleep (" in stack)
    # 0.1 s of CPU: at least one tick's sample in 10 ms at any kernel HZ >= 100; the sleep none.
    assert busy >= 5 and asleep <= 1, counts
    assert all(stack.startswith("<module> (") for stack in counts), "outermost frame first"
    report = subprocess.run(
        [sys.executable, "-m", "walrus_tasks.profiling", str(dump)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f"{sum(counts.values())} samples" in report and "busy (<string>:" in report
