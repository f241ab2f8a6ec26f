"""Figure 8 and its baseline in turns: walrus's Agent Protocol, then a fresh LangGraph dev.

``--ap-rounds`` rounds of the same phase (``bench.agent_protocol``), walrus's runs then
LangGraph dev's (``bench.langgraph_dev``) in each, so this machine's drift within the phase
falls on both alike (docs/benchmarks.md, "8.'s baseline").
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.progress import Progress

from bench import agent_protocol, langgraph_dev
from bench.procs import AGENT, Env, Phase, cpu_seconds


def rounds(
    args: argparse.Namespace,
    env: Env,
    progress: Progress,
    cpu: dict[str, dict[str, float]],
    results: dict[str, Any],
) -> tuple[agent_protocol.AgentProtocol | None, agent_protocol.AgentProtocol | None]:
    """8. and its baseline: ``--ap-rounds`` rounds, walrus's then LangGraph dev's in each.

    In turns, so the machine's drift within the phase (the same work's CPU a run moved
    5.9-11.3 ms within minutes here) falls on both alike; each figure is its rounds' runs over
    their time. Walrus keeps its processes and Redis across rounds (its earlier rounds'
    threads and runs stay); LangGraph dev is started fresh for each round (its in-memory
    store empty), and stopped before walrus's next.
    """
    ours = "agent-protocol" in args.only
    say = progress.console.print
    lg_env = langgraph_dev.prepare(say) if "langgraph" in args.only else None
    if isinstance(lg_env, str):
        results["langgraph_dev"] = {"error": lg_env}
        lg_env = None
    versions = lg_env[1] if lg_env else ""
    if not ours and lg_env is None:
        return None, None
    sides = int(ours) + int(lg_env is not None)
    total = (agent_protocol.WARMUP_RUNS + args.ap_runs) * args.ap_rounds * sides
    task = progress.add_task("8. Agent Protocol (and LangGraph dev): joined", total=total)

    def tick(n: int) -> None:
        progress.advance(task, n)

    walrus: list[agent_protocol.AgentProtocol] = []
    theirs: list[agent_protocol.AgentProtocol] = []
    for _ in range(args.ap_rounds):
        if ours:
            with Phase(env, "8. Agent Protocol", cpu):
                part = agent_protocol.run(
                    env.gateway_url, AGENT, args.ap_runs, args.ap_threads,
                    lambda: cpu_seconds(env), tick,
                )  # fmt: skip
            walrus.append(part)
        if lg_env is not None:
            try:  # a fresh one each round: its in-memory store starts empty every time
                with langgraph_dev.server(lg_env[0]) as (url, pgid):
                    theirs.append(
                        langgraph_dev.run_on(url, pgid, args.ap_runs, args.ap_threads, tick)
                    )
            except (OSError, RuntimeError) as e:
                say(f"[red]8.'s baseline: LangGraph dev did not start: {e}[/red]")
                results["langgraph_dev"] = {"error": str(e)}
                lg_env, versions = None, ""  # no figure of fewer rounds than walrus's
    ap = agent_protocol.combined(walrus) if walrus else None
    lg = agent_protocol.combined(theirs) if theirs and versions else None
    if lg is not None:
        results["langgraph_dev"] = langgraph_dev.summary(lg, versions)
    return ap, lg
