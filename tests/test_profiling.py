"""``WALRUS_PROFILE_DIR`` profiles a process; ``WALRUS_PROFILE_CLOCK=cpu`` on its CPU clock.

Each case runs a fresh interpreter (profiling starts at a process's start and dumps at its
exit) that sleeps 0.4 s in one function and spins the CPU in another, then reads its dump:
on the wall clock the sleep counts, on the CPU clock it does not.
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


def _profiled(tmp_path: Path, clock: str | None) -> dict[str, float]:
    """Seconds each of the program's functions took, as its dump records them."""
    env = {**os.environ, "WALRUS_PROFILE_DIR": str(tmp_path)}
    env.pop("WALRUS_PROFILE_CLOCK", None)
    if clock is not None:
        env["WALRUS_PROFILE_CLOCK"] = clock
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, timeout=60, check=False)
    assert done.returncode == 0
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
