"""What ``python -m bench`` prints: a table per figure, from the results it also writes as JSON.

Each ``report_*`` reads one part of the results dict (``bench.__main__`` builds it); any part may
be missing when ``--only`` left its phase out.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import cost


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def report(args: argparse.Namespace, results: dict[str, Any], console: Console) -> None:
    if results.get("tracing"):
        console.print("Traces on: every process exported its spans (--tracing)")
    if "dispatch" in results:
        report_latency(results, console)
    if "throughput" in results or "celery_throughput" in results:
        report_throughput(results, console)
    report_cost(results["cost"], console)

    if results["ratios"]:
        rt = Table(title="4. Ratios to the baseline", title_justify="left")
        rt.add_column("ratio")
        rt.add_column("value", justify="right")
        for k, v in results["ratios"].items():
            rt.add_row(k, f"{v:.2f}x")
        console.print(rt)

    if results.get("fanout"):
        report_streams(results, console)
    if results.get("history"):
        report_history(results["history"], console)
    if results.get("agent_protocol"):
        report_agent_protocol(results["agent_protocol"], console)
    if results.get("langgraph_dev"):
        report_langgraph_dev(results["langgraph_dev"], console)

    if results.get("cpu_seconds"):
        c = Table(title="CPU seconds used per phase (user+sys)", title_justify="left")
        kinds = ["wall", "gateway", "workers", "redis", "bench client"]
        c.add_column("phase")
        for k in kinds:
            c.add_column(k, justify="right")
        for phase, v in results["cpu_seconds"].items():
            c.add_row(phase, *(f"{v.get(k, math.nan):.2f}" for k in kinds))
        console.print(c)

    m = Table(title="Machine and parameters", title_justify="left")
    m.add_column("key")
    m.add_column("value")
    for k, v in results["machine"].items():
        m.add_row(k, str(v))
    for k, v in results["params"].items():
        m.add_row(k, str(v))
    m.add_row("total wall time", f"{results['wall_s']:.1f} s")
    console.print(m)


def report_latency(results: dict[str, Any], console: Console) -> None:
    """Figures 1 and 2: the ping's and the dispatch's latency percentiles."""
    lat = Table(title="Latency (ms)", title_justify="left")
    for col in ("figure", "n", "p50", "p90", "p99", "mean", "min", "max"):
        lat.add_column(col, justify="left" if col == "figure" else "right")
    d = results["dispatch"]
    rows = [
        ("1. baseline: ping .get()", results["baseline"]),
        ("2. dispatch: → 1st chunk", d["first_chunk"]),
        ("   same runs: → headers", d["headers"]),
        ("   same runs: → start", d["start"]),
        ("   same runs: → end", d["end"]),
    ]
    if d.get("start_written", {}).get("n"):  # by the run's own clock (streamed_runs.Dispatch)
        rows += [
            ("   → start written (entry id)", d["start_written"]),
            ("   start → chunk written", d["chunk_written"]),
            ("   chunk written → parsed", d["chunk_delivered"]),
        ]
    for label, s in rows:
        lat.add_row(
            label, str(s["n"]),
            *(f"{s[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms")),
        )  # fmt: skip
    console.print(lat)
    if d["failures"]:
        console.print(f"[red]dispatch failures: {d['failures']}[/red]")


def report_throughput(results: dict[str, Any], console: Console) -> None:
    """Figure 3 and its baseline, raw Celery measured strictly (either may run alone)."""
    t = Table(title="3. Throughput", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    tp = results.get("throughput")
    if tp:
        failed = tp["submitted"] - tp["succeeded"] + sum(tp["http_errors"].values())
        t.add_row("completed runs/s", f"[bold]{tp['runs_per_s']:.1f}[/bold]")
        t.add_row("first submit → last run terminal", f"{tp['elapsed_s']:.2f} s")
        t.add_row("messages / conversations", f"{tp['messages']} / {tp['conversations']}")
        t.add_row("succeeded / submitted", f"{tp['succeeded']} / {tp['submitted']}")
        t.add_row("failed or not terminal", ("[red]" if failed else "") + str(failed))
        t.add_row("statuses", ", ".join(f"{k}={v}" for k, v in sorted(tp["statuses"].items())))
        if tp["http_errors"]:
            t.add_row("not accepted (HTTP status / error)", str(tp["http_errors"]))
        t.add_row(
            "submit phase (all accepted)",
            f"{tp['submit_s']:.2f} s ({tp['submit_per_s']:.0f} msg/s)",
        )
        rl = tp["run_latency"]
        t.add_row(
            "run accepted → finished p50 / p99", f"{rl['p50_ms']:.0f} / {rl['p99_ms']:.0f} ms"
        )
    raw = results.get("celery_throughput")
    if raw:
        rounds = raw["rounds_tasks_per_s"]
        t.add_row(
            f"baseline: raw Celery no-op tasks/s ({raw['tasks']} sent at once, results "
            f"awaited; best of {len(rounds)} after {raw['warmup_round_trips']} round trips)",
            f"[bold]{raw['tasks_per_s']:.1f}[/bold]",
        )
        t.add_row("baseline: each round, tasks/s", " / ".join(f"{x:.1f}" for x in rounds))
        t.add_row("baseline, best round: all sent / all results after",
                  f"{raw['send_s']:.2f} / {raw['elapsed_s']:.2f} s")  # fmt: skip
    if tp and raw:
        t.add_row(
            "completed runs/s / raw Celery tasks/s (goal ≥ 0.6)",
            f"[bold]{ratio(tp['runs_per_s'], raw['tasks_per_s']):.2f}x[/bold]",
        )
    console.print(t)


def report_agent_protocol(a: dict[str, Any], console: Console) -> None:
    """Figure 8 beside LangGraph dev's fixed figure and the goal."""
    t = Table(title="8. Agent Protocol (langgraph-sdk), background runs", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row(
        f"joined runs/s ({len(a['rounds_runs_per_s'])} x {a['runs'] // len(a['rounds_runs_per_s'])}"
        f" runs on {a['threads']} threads, enqueue)",
        f"[bold]{a['runs_per_s']:.1f}[/bold]",
    )
    t.add_row("   each round, runs/s", " / ".join(f"{x:.1f}" for x in a["rounds_runs_per_s"]))
    t.add_row("LangGraph dev, same load, this machine (fixed figure)",
              f"{a['langgraph_dev_runs_per_s']:.0f}")  # fmt: skip
    t.add_row("goal (1.5x LangGraph dev)", f"{a['goal_runs_per_s']:.0f}")
    t.add_row(
        "runs/s / LangGraph dev",
        f"[bold]{ratio(a['runs_per_s'], a['langgraph_dev_runs_per_s']):.2f}x[/bold]",
    )
    if this_run := a.get("langgraph_dev_this_run_runs_per_s"):
        t.add_row("LangGraph dev, same load, this run (8.'s baseline)", f"{this_run:.1f}")
        t.add_row(
            "runs/s / LangGraph dev's, this run (goal 1.5x)",
            f"[bold]{ratio(a['runs_per_s'], this_run):.2f}x[/bold]",
        )
    t.add_row("first threads.create → last runs.create / last join",
              f"{a['created_s']:.2f} / {a['elapsed_s']:.2f} s")  # fmt: skip
    t.add_row("created / joined", f"{a['created']} / {a['joined']}")
    t.add_row("statuses", ", ".join(f"{k}={v}" for k, v in sorted(a["statuses"].items())))
    if a["errors"]:
        t.add_row("[red]calls that raised[/red]", str(a["errors"]))
    t.add_row("gateway CPU-ms per run", f"[bold]{a['gateway_cpu_ms_per_run']:.2f}[/bold]")
    for key, label in (
        ("workers_cpu_ms_per_run", "workers"),
        ("redis_cpu_ms_per_run", "redis"),
        ("client_cpu_ms_per_run", "bench client (langgraph-sdk, httpx)"),
    ):
        t.add_row(f"   {label} CPU-ms per run", f"{a[key]:.2f}")
    t.add_row(f"CPU-ms per run in all / runs/s {a['cores']:.0f} cores allow at that",
              f"{a['cpu_ms_per_run']:.2f} / {a['cores_allow_runs_per_s']:.0f}")  # fmt: skip
    t.add_row("runs/s the bench client allows alone (1000 / its CPU-ms)",
              f"{a['client_allows_runs_per_s']:.0f}")  # fmt: skip
    console.print(t)


def report_langgraph_dev(lg: dict[str, Any], console: Console) -> None:
    """8.'s baseline: the same phase against LangGraph dev (or why it did not run)."""
    t = Table(title="8. baseline: LangGraph dev, the same phase", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    if "error" in lg:
        t.add_row("[red]did not run[/red]", lg["error"])
        console.print(t)
        return
    t.add_row("server", lg["server"])
    t.add_row("joined runs/s", f"[bold]{lg['runs_per_s']:.1f}[/bold]")
    t.add_row("   each round, runs/s", " / ".join(f"{x:.1f}" for x in lg["rounds_runs_per_s"]))
    t.add_row("joined", str(lg["joined"]))
    t.add_row("statuses", ", ".join(f"{k}={v}" for k, v in sorted(lg["statuses"].items())))
    if lg["errors"]:
        t.add_row("[red]calls that raised[/red]", str(lg["errors"]))
    t.add_row("its processes' CPU-ms per run", f"{lg['server_cpu_ms_per_run']:.2f}")
    t.add_row("   bench client CPU-ms per run", f"{lg['client_cpu_ms_per_run']:.2f}")
    console.print(t)


COST_ROWS = (
    ("redis_commands", "Redis commands (script calls included)", ".1f"),
    ("client_commands", "   sent by clients (slow log: scripts' own calls not)", ".1f"),
    ("evalsha", "   EVALSHA (walrus Lua scripts)", ".1f"),
    ("celery_task_messages", "Celery task messages (LPUSH)", ".2f"),
    ("celery_event_messages", "Celery events + result notices (PUBLISH)", ".2f"),
    ("worker_cpu_ms", "worker CPU-ms (user+sys, parents and pools)", ".2f"),
)


def report_cost(c: dict[str, dict[str, Any]], console: Console) -> None:
    """Per-run cost of 3. beside the raw Celery baseline's per-task cost."""
    walrus, raw = c["walrus, per run (3.)"], c["raw Celery, per task"]
    if not walrus:
        return
    t = Table(
        title="3. Cost per run (all processes, INFO commandstats deltas)", title_justify="left"
    )
    for col in ("figure", "walrus, per run", "raw Celery, per task", "ratio"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    for key, label, fmt in COST_ROWS:
        a, b = walrus[key], raw.get(key, math.nan)
        t.add_row(label, f"{a:{fmt}}", f"{b:{fmt}}", f"{ratio(a, b):.1f}x")
    t.add_section()
    t.add_row("[bold]sent by clients, by command[/bold]", "", "", "")
    for name, per in walrus["sent_commands"].items():
        t.add_row(
            f"   {name}", f"{per:.2f}", f"{raw.get('sent_commands', {}).get(name, 0):.2f}", ""
        )
    t.add_section()
    t.add_row("[bold]EVALSHA by script[/bold]", "", "", "")
    for name, per in walrus["scripts"].items():
        t.add_row(f"   {name}", f"{per:.2f}", "", "")
    t.add_section()
    t.add_row("[bold]all commands (scripts' calls too), top[/bold]", "", "", "")
    for name, per in walrus["top_commands"].items():
        t.add_row(f"   {name}", f"{per:.2f}", f"{raw.get('top_commands', {}).get(name, 0):.2f}", "")
    t.add_row("   other commands", f"{walrus['other_commands']:.2f}", "", "")
    console.print(t)
    if walrus["log_full"] or raw.get("log_full"):
        console.print(f"[red]the slow log filled up ({cost.LOG_LEN}): client counts too low[/red]")


def report_history(h: dict[str, Any], console: Console) -> None:
    """Figure 7: a long conversation's step beside a fresh one's, p50 and p90."""
    t = Table(title=f"7. History: {h['messages']} messages vs an empty one (ms)",
              title_justify="left")  # fmt: skip
    for col in ("figure", "empty p50", f"{h['messages']} p50", "ratio", "empty p90",
                f"{h['messages']} p90"):  # fmt: skip
        t.add_column(col, justify="left" if col == "figure" else "right")
    for key, label in (
        ("first_chunk", "POST → first chunk"),
        ("worker", "run started → finished (worker clock, ms)"),
        ("end", "POST → end"),
    ):
        e, lng = h["empty"][key], h["long"][key]
        t.add_row(
            label, f"{e['p50_ms']:.2f}", f"{lng['p50_ms']:.2f}",
            f"{ratio(lng['p50_ms'], e['p50_ms']):.2f}x", f"{e['p90_ms']:.2f}",
            f"{lng['p90_ms']:.2f}",
        )  # fmt: skip
    console.print(t)
    for kind in ("empty", "long"):
        if h[kind]["failures"]:
            console.print(f"[red]7. {kind} failures: {h[kind]['failures']}[/red]")


def report_streams(results: dict[str, Any], console: Console) -> None:
    f, one = results["fanout"], results["single_stream"]
    t = Table(title="5. Fan-out and 6. one stream", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("5. SSE clients / runs followed / client processes",
              f"{f['clients']} / {f['runs']} / {f['client_processes']}")  # fmt: skip
    t.add_row("   face: what each client sends", f"{f['face']}: {f['follow']}")
    t.add_row(f"   complete streams (every event, then {f['final_event']})",
              f"[bold]{f['complete_streams']}[/bold]")  # fmt: skip
    early = f["runs_started_before_release"]
    shown = "-" if early is None else f"[red]{early}[/red]" if early else "0"
    t.add_row(f"   runs succeeded / started before release (gates ahead of each: "
              f"{f['gate_runs_per_run']})", f"{f['runs_succeeded']} / {shown}")  # fmt: skip
    if f["failures"]:
        t.add_row("   [red]incomplete[/red]", str(f["failures"]))
    t.add_row("   most streams open at once", str(f["peak_open_streams"]))
    times = (f["all_connected_s"], f["runs_released_s"], f["last_end_s"])
    t.add_row(f"   all headers / runs started / last end ({f['connect_rate_per_s']:g} opens/s)",
              " / ".join("-" if x is None else f"{x:.2f}" for x in times) + " s")  # fmt: skip
    rss = (f["rss_before_kb"], f["rss_connected_kb"], f["rss_peak_kb"])
    t.add_row("   gateway RSS before → all connected → peak", " → ".join(map(str, rss)) + " KB")
    per_stream = f"[bold]{f['rss_growth_per_stream_kb']:.1f} KB[/bold]"
    t.add_row("   gateway RSS growth per stream (at its peak)", per_stream)
    t.add_row("   of which while idle (all connected, runs not started)",
              f"{f['rss_growth_per_idle_stream_kb']:.1f} KB")  # fmt: skip
    t.add_row("   Redis connections (all processes) before → peak",
              f"{f['redis_clients_before']} → {f['redis_clients_peak']}")  # fmt: skip
    per = f["gateway_cpu_ms_per_1000_events"]
    t.add_row("   gateway CPU-ms per 1000 delivered events",
              f"{per:.1f} ({f['delivered_events']} events)" if per else "-")  # fmt: skip
    t.add_row("   busiest client process: CPU / wall", f"{f['client_busiest_share']:.0%}")
    if f.get("heap"):
        h = f["heap"]
        t.add_row("   heap traced while connected, per stream (--fanout-heap)",
                  f"{h['total_kb_per']:.2f} KB")  # fmt: skip
        for row in h["by_line"][:15]:
            t.add_row(f"     {row['where']}", f"{row['kb_per']:.3f} KB")
    soft, hard = f["gateway_open_files_limit"]
    t.add_row("   gateway open-file limit (soft / hard)", f"{soft} / {hard}")
    t.add_row("6. one run, 20 000 one-word tokens: chunk events", str(one["chunk_events"]))
    t.add_row("   POST → end / first chunk → end",
              f"{one['post_to_end_s']:.3f} / {one['first_chunk_to_end_s']:.3f} s")  # fmt: skip
    t.add_row("   chunk events/s (first chunk → end)", f"{one['chunk_events_per_s']:.0f}")
    t.add_row("   tokens/s", f"[bold]{one['tokens_per_s']:.0f}[/bold]")
    console.print(t)
