"""The chaos suite: walrus's invariants under worker kills and Redis restarts (issue 9)."""

from bench.chaos.run import Params, Result, run

__all__ = ["Params", "Result", "run"]
