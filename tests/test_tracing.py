"""OpenTelemetry traces: one trace per message across the gateway and the workers.

A receiver of the test's own decodes what the processes export over OTLP/HTTP; a private
cluster is started with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from bench import trace_sink
from tests.cluster import Cluster, running, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeReply
from tests.test_recovery import pool_process_running
from walrus_tasks import keys, tracing
from walrus_tasks.redis_server import RedisServer

AGENTS = {
    "boss": """
        model = "fake/m-boss"
        tools = ["delegate"]
        members = ["helper"]
    """,
    "helper": """
        model = "mock"
        [mock]
        reply = "helped"
    """,
}


@dataclass
class Span:
    """One exported span, decoded."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


SERVER = 2
"""``Span.kind`` of a server span (OTLP's ``SPAN_KIND_SERVER``)."""


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


class Receiver:
    """Every span the OTLP/HTTP sink (``bench.trace_sink``) it is fed by is sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self.url = ""
        """The sink's endpoint, once it serves."""

    def take(self, body: bytes) -> None:
        """Keep the spans of one export (an ``ExportTraceServiceRequest``)."""
        request = ExportTraceServiceRequest.FromString(body)
        got = []
        for rs in request.resource_spans:
            service = str(_attrs(rs.resource.attributes).get("service.name"))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        Span(
                            service, s.name, s.kind, s.trace_id.hex(), s.span_id.hex(),
                            s.parent_span_id.hex(), _attrs(s.attributes),
                            [(e.name, _attrs(e.attributes)) for e in s.events],
                            [link.span_id.hex() for link in s.links],
                        )
                    )  # fmt: skip
        with self._lock:
            self.spans.extend(got)

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def named(self, name: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def of_run(self, run_id: str, name: str) -> list[Span]:
        with self._lock:
            return [
                s for s in self.spans
                if s.name.startswith(name) and s.attributes.get("walrus.run_id") == run_id
            ]  # fmt: skip


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    with trace_sink.sink(rec.take) as env:
        rec.url = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        yield rec


@pytest.fixture(scope="module")
def traced(
    redis_server: RedisServer,
    fake_llm: Any,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """A gateway, a worker and beat that export their spans to ``receiver``."""
    root = tmp_path_factory.mktemp("traced")
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=agents_home(root / "home", fake_llm.base_url, AGENTS),
        log_dir=root,
        env_extra={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "WALRUS_LEASE_TTL": "3",
            "WALRUS_REAPER_INTERVAL": "1",
        },
    )
    with running(c, workers=("worker-a",), concurrency=2, beat=True):
        yield c


def run_record(c: Cluster, run_id: str) -> dict[str, str]:
    return c.redis().hgetall(keys.run(run_id))  # type: ignore[return-value]


def test_a_tool_calling_run_is_one_trace_across_the_gateway_and_the_worker(
    traced: Cluster, receiver: Receiver, fake_llm: Any, sender: str
) -> None:
    fake_llm.reset()
    fake_llm.script(FakeReply(tool_calls=[("clock", {})]), FakeReply(text="It is noon."))
    run_id = traced.send("oai", "what time is it?", sender)
    info = traced.wait_run(run_id)
    assert info["status"] == "succeeded", info
    trace_id = info["trace_id"]
    assert trace_id and len(trace_id) == 32
    traceparent = run_record(traced, run_id)["traceparent"]
    accept_span = traceparent.split("-")[2]

    def complete() -> list[Span] | None:
        spans = receiver.trace(trace_id)
        names = [s.name for s in spans]
        enough = (
            sum(n.startswith("chat ") for n in names) >= 2
            and "execute_tool clock" in names
            and sum(n == "invoke_agent oai" for n in names) >= 2
            and any(s.span_id == accept_span for s in spans)
        )
        return spans if enough else None

    spans = wait_for(complete, 20, 0.1, "the run's spans")
    assert {"walrus-gateway", "walrus-worker"} <= {s.service for s in spans}
    (server,) = [s for s in spans if s.span_id == accept_span]
    assert server.service == "walrus-gateway" and server.kind == SERVER
    assert server.attributes.get("http.route", "").endswith("/messages") or "POST" in server.name
    assert any(s.name.startswith("apply_async/walrus.") for s in spans), "Celery publish spans"
    assert any(s.name.startswith("run/walrus.") for s in spans), "Celery task spans"

    agents = [s for s in spans if s.name == "invoke_agent oai"]
    agents.sort(key=lambda s: int(s.attributes["walrus.step"]))
    assert [s.attributes["walrus.step"] for s in agents] == [0, 1]
    for s in agents:
        assert s.parent == accept_span, "every step continues the accepting span"
        assert s.service == "walrus-worker"
        assert s.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert s.attributes["gen_ai.agent.name"] == "oai"
        assert s.attributes["gen_ai.conversation.id"] == f"oai/{sender}"
        assert s.attributes["walrus.run_id"] == run_id
        assert "walrus.tenant" not in s.attributes, "the default tenant"
        assert s.attributes["walrus.face"] == "http"

    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == 2
    assert {c.parent for c in chats} == {s.span_id for s in agents}
    for chat in chats:
        assert chat.name == "chat m-oai"
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.provider.name"] == "openai"
        assert chat.attributes["gen_ai.request.model"] == "m-oai"
        assert chat.attributes["gen_ai.usage.input_tokens"] == 11
        assert chat.attributes["gen_ai.usage.output_tokens"] == 7
        assert "gen_ai.input.messages" not in chat.attributes, "content only when switched on"
    reasons = sorted(c.attributes["gen_ai.response.finish_reasons"][0] for c in chats)
    assert reasons == ["stop", "tool_call"]

    (tool,) = [s for s in spans if s.name == "execute_tool clock"]
    assert tool.parent == agents[0].span_id, "a call is a child of the step that asked for it"
    assert tool.attributes["gen_ai.tool.name"] == "clock"
    (started,) = [e for _, e in traced.events(run_id) if e["type"] == "tool_start"]
    assert tool.attributes["gen_ai.tool.call.id"] == started["calls"][0]["id"]


def test_a_message_queued_behind_a_busy_conversation_gets_its_own_trace(
    traced: Cluster, receiver: Receiver, fake_llm: Any, sender: str
) -> None:
    fake_llm.reset()
    fake_llm.script(FakeReply(text="first", delay=1.0), FakeReply(text="second"))
    first = traced.send("oai", "one", sender)
    second = traced.send("oai", "two", sender)  # busy: no drain is sent for it
    assert traced.wait_run(second)["status"] == "succeeded"
    one, two = traced.wait_run(first), traced.wait_run(second)
    assert one["trace_id"] and two["trace_id"] and one["trace_id"] != two["trace_id"]
    accept = run_record(traced, second)["traceparent"].split("-")[2]
    (span,) = wait_for(lambda: receiver.of_run(second, "invoke_agent"), 20, 0.1, "its span")
    assert span.trace_id == two["trace_id"]
    assert span.parent == accept, "it continues its own accepting span"
    server = wait_for(
        lambda: [s for s in receiver.trace(two["trace_id"]) if s.span_id == accept], 20, 0.1
    )
    assert server[0].service == "walrus-gateway"


def test_a_delegated_run_is_a_child_of_the_delegate_call_and_the_wait_is_an_event(
    traced: Cluster, receiver: Receiver, fake_llm: Any, sender: str
) -> None:
    fake_llm.reset()
    task = {"tasks": [{"agent": "helper", "message": "help"}]}
    fake_llm.script(FakeReply(tool_calls=[("delegate", task)]), FakeReply(text="done"))
    run_id = traced.send("boss", "delegate it", sender)
    info = traced.wait_run(run_id)
    assert info["status"] == "succeeded", info

    def spans() -> tuple[Span, Span, list[Span]] | None:
        """The call that waited, the call that resumed, the child's step.

        Two spans when the run parked and a later delivery resumed the call; one span with
        both events when the child had ended before the wait was recorded (``wait_begin``
        answered ``woken`` and the call went on in place).
        """
        trace = receiver.trace(info["trace_id"])
        calls = [s for s in trace if s.name == "execute_tool delegate"]
        child = [s for s in trace if s.name == "invoke_agent helper"]
        parked = [s for s in calls if "wait" in [e for e, _ in s.events]]
        resumed = [s for s in calls if "resume" in [e for e, _ in s.events]]
        return (parked[0], resumed[0], child) if parked and resumed and child else None

    parked, resumed, child = wait_for(spans, 20, 0.1, "the delegate call's spans and the child's")
    assert child[0].parent == parked.span_id, "the child run continues the call that spawned it"
    assert child[0].attributes["walrus.run_id"] != run_id
    (wait,) = [a for e, a in parked.events if e == "wait"]
    assert wait["walrus.wait.kind"] == "delegate" and wait["walrus.wait.timeout_s"] > 0
    (resume,) = [a for e, a in resumed.events if e == "resume"]
    assert resume["walrus.wait.kind"] == "delegate" and resume["walrus.wake.kind"] == "children"
    assert 0 <= resume["walrus.wait.seconds"] < 30


def test_a_step_resumed_after_kill_9_links_to_the_lost_attempt(
    traced: Cluster, receiver: Receiver, sender: str
) -> None:
    run_id = traced.send("slowtool", "clock, then count", sender)
    with traced.http() as h, h.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        for line in resp.iter_lines():
            if line == "event: chunk":  # step 1 streams, in a walrus.run.step task
                break
    step, _, lost = run_record(traced, run_id)["step_span"].partition(":")
    assert step == "1" and len(lost) == 16
    pid = wait_for(lambda: pool_process_running(traced, run_id), 10, 0.1, "the pool process")
    os.kill(pid, signal.SIGKILL)
    info = traced.wait_run(run_id, timeout=60)
    assert info["status"] == "succeeded", info
    resumed = wait_for(
        lambda: [s for s in receiver.of_run(run_id, "invoke_agent") if lost in s.links],
        20, 0.1, "the resumed step's span",
    )  # fmt: skip
    assert resumed[0].trace_id == info["trace_id"], "the resumed step continues the same trace"
    assert resumed[0].attributes["walrus.step"] == 1
    assert not [s for s in receiver.of_run(run_id, "invoke_agent") if s.span_id == lost], (
        "the lost attempt's span died with its process"
    )


def test_without_the_otel_variables_walrus_loads_no_opentelemetry_module(tmp_path: Path) -> None:
    """Nothing of the tracing stack is imported, nor any tracer provider set.

    Some libraries import parts of OpenTelemetry by themselves when it is installed (redis-py
    8's ``redis.observability`` the metrics SDK, FastAPI's ``fastapi.telemetry`` the
    propagators): what importing them loads is the probe's baseline.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["WALRUS_HOME"] = str(tmp_path)
    probe = (
        "import sys\n"
        "import celery, fastapi, redis\n"
        "def otel(): return {m for m in sys.modules if m.startswith('opentelemetry')}\n"
        "baseline = otel()\n"
        "from walrus_tasks import tracing, submit\n"
        "import gateway.app, worker.tasks, worker.runtime, beat.timers\n"
        "assert not tracing.setup(tracing.WORKER)\n"
        "tracing.on_worker_process_init()\n"
        "assert tracing.traceparent() is None and tracing.new_span_id() == ''\n"
        "with tracing.run_span('x', {}, {}) as span:\n"
        "    assert span is None\n"
        "print(sorted(otel() - baseline))\n"
        "print(sorted(m for m in otel() if m.startswith(('opentelemetry.sdk.trace', "
        "'opentelemetry.exporter', 'opentelemetry.instrumentation'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "[]"]


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask_for_it(
    env: dict[str, str], on: bool
) -> None:
    assert tracing.configured(env) is on


def test_with_tracing_on_a_streamed_mcp_call_keeps_the_package_s_span(
    traced: Cluster, receiver: Receiver
) -> None:
    """A 2026-07-28 call with a progress token is served below the ``mcp`` package only while
    tracing is off (gateway/mcp_plain.py): on, the package serves it and its span is exported."""
    from mcp import Client

    said: list[str] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        said.append(message or "")

    async def go() -> Any:
        async with Client(f"{traced.gateway_url}/mcp") as client:
            return await client.call_tool("helper", {"message": "hi"}, progress_callback=progress)

    result = asyncio.run(go())
    assert result.structured_content["status"] == "succeeded" and said[-1] == "helped"

    spans = wait_for(lambda: receiver.named("tools/call helper"), 20, 0.1, "the package's span")
    found = spans[0]
    assert found.service == "walrus-gateway" and found.kind == SERVER
    assert found.attributes["gen_ai.tool.name"] == "helper"
