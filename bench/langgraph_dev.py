"""Figure 8's baseline: LangGraph's own server (``langgraph dev``) under the same load, this run.

Issue 25 drew its goal (225 runs/s) from LangGraph dev measured once on a faster machine (149
runs/s): 1.5x LangGraph's own server. A fixed figure does not follow the machine, so the bench
measures LangGraph dev too, in the same run, as it measures raw Celery beside walrus's
throughput: the same phase (``bench.agent_protocol``: the same SDK calls, threads and runs)
against a fresh ``langgraph dev`` (in-memory) serving one graph, ``bench``, that answers each
run with the bench agent's reply as one ``AIMessage`` (walrus's streams it as five chunks
through the mock provider).

LangGraph dev runs from a virtualenv of its own, made on first use from
``requirements/bench-langgraph.txt`` under ``$XDG_CACHE_HOME/walrus_tasks`` (``~/.cache``; the
first run needs PyPI, ~20 s). The bench drives it in turns with walrus (``--ap-rounds``), a
fresh one each round. Its CPU a run is its process group's (``/proc``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import agent_protocol
from bench.measure import Tick
from bench.procs import REPLY, group_cpu

LOCK = Path(__file__).resolve().parent.parent / "requirements" / "bench-langgraph.txt"
GRAPH = "bench"
"""The graph's id: the assistant the phase names, as walrus's bench agent is named."""
GRAPH_PY = textwrap.dedent(
    f"""
    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, MessagesState, StateGraph


    def reply(state: MessagesState) -> dict:
        return {{"messages": [AIMessage({REPLY!r})]}}


    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    graph = builder.compile()
    """
)
READY_S = 90.0
"""Seconds ``langgraph dev`` has to answer ``/ok`` after its start."""
QUIET = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
}
"""No telemetry and no traces sent anywhere while it is measured."""


def venv(say: Callable[[str], None]) -> Path:
    """LangGraph dev's virtualenv (made from the lock on first use; one per lock's content)."""
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    home = cache / "walrus_tasks" / f"bench-langgraph-{digest}"
    if (home / "bin" / "langgraph").exists():
        return home
    say(f"setting up LangGraph dev in {home} (once; from PyPI)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
    pip = [str(home / "bin" / "python"), "-m", "pip", "install", "-q"]
    done = subprocess.run([*pip, "-r", str(LOCK)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pip install -r {LOCK} failed: {done.stderr.strip()[-500:]}")
    return home


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server(home: Path) -> Iterator[tuple[str, int]]:
    """A fresh ``langgraph dev`` serving the ``bench`` graph: its URL and process group id."""
    with tempfile.TemporaryDirectory(prefix="walrus-bench-langgraph-") as app:
        Path(app, "graph.py").write_text(GRAPH_PY)
        config = {"dependencies": ["."], "graphs": {GRAPH: "./graph.py:graph"}}
        Path(app, "langgraph.json").write_text(json.dumps(config))
        port = _free_port()
        argv = [
            str(home / "bin" / "langgraph"), "dev", "--no-browser", "--no-reload",
            "--host", "127.0.0.1", "--port", str(port), "--server-log-level", "warning",
        ]  # fmt: skip
        log_path = Path(app, "langgraph-dev.log")
        with log_path.open("wb") as log:
            p = subprocess.Popen(
                argv, cwd=app, env={**os.environ, **QUIET}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, p, log_path)
            yield url, p.pid
        finally:
            _stop(p)


def _wait_ready(url: str, p: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"langgraph dev exited with {p.returncode}: {_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"langgraph dev did not answer /ok in {READY_S:g} s: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-800:]


def _stop(p: subprocess.Popen[bytes]) -> None:
    """SIGINT its process group, SIGKILL what is left after 10 s."""
    for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def prepare(say: Callable[[str], None]) -> tuple[Path, str] | str:
    """LangGraph dev's virtualenv (made on first use) and its versions, or why not (printed)."""
    try:
        home = venv(say)
        versions = subprocess.run(
            [str(home / "bin" / "python"), "-c",
             "from importlib.metadata import version as v; "
             "print(f\"langgraph-api {v('langgraph-api')}, langgraph {v('langgraph')}\")"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        say(f"[red]8.'s baseline: LangGraph dev did not run: {e}[/red]")
        return str(e)
    return home, versions


def summary(lg: agent_protocol.AgentProtocol, versions: str) -> dict[str, Any]:
    """8.'s baseline as the report prints it (no runs/s where a run failed)."""
    out: dict[str, Any] = {
        "server": f"langgraph dev (in-memory; {versions}), a fresh one each round",
        "joined": lg.joined,
        "statuses": dict(lg.statuses),
        "errors": dict(lg.errors),
        "elapsed_s": lg.elapsed_s,
        "runs_per_s": lg.runs_per_s,
        "rounds_runs_per_s": lg.rounds,
        "server_cpu_ms_per_run": lg.cpu_ms_per_run("LangGraph dev"),
        "client_cpu_ms_per_run": lg.cpu_ms_per_run("bench client"),
    }
    if not lg.all_succeeded(lg.runs):
        out["runs_per_s"] = math.nan  # not a figure to compare with
    return out


def run_on(
    url: str, pgid: int, runs: int, threads: int, tick: Tick
) -> agent_protocol.AgentProtocol:
    """Figure 8's phase against the LangGraph dev at ``url`` (process group ``pgid``)."""

    def cpu() -> dict[str, float]:
        t = os.times()
        return {"LangGraph dev": group_cpu(pgid), "bench client": t.user + t.system}

    return agent_protocol.run(url, GRAPH, runs, threads, cpu, tick)
