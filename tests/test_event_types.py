"""Run events have one typed model (``walrus_tasks.event_types``): what runs emit conforms to it."""

from __future__ import annotations

import httpx
import redis

from tests.cluster import Cluster
from walrus_tasks import keys, runs, waits
from walrus_tasks.event_types import RUN_EVENT
from walrus_tasks.lease import Fence
from walrus_tasks.runs import acquire
from walrus_tasks.submit import submit


def test_every_event_of_a_run_with_tool_calls_is_a_typed_run_event(
    cluster: Cluster, sender: str
) -> None:
    run_id = cluster.send("tooly", "what time is it?", sender)
    events = [e for _, e in cluster.events(run_id)]
    types = [RUN_EVENT.validate_python(e)["type"] for e in events]
    assert types[0] == "start" and types[-1] == "end"
    assert {"tool_start", "tool_result", "tools_complete", "chunk"} <= set(types)


def test_what_lua_writes_is_a_typed_run_event(r: redis.Redis, sender: str) -> None:
    submit(r, "echo", sender, "hello")
    acquired = acquire(r, "echo", sender)
    assert acquired is not None and acquired.run_id is not None
    waits.steer(r, "echo", sender, "shorter, please")
    assert runs.inject_steering(r, Fence("echo", sender, acquired.run_id, acquired.token)) == 1
    stream = r.xrange(keys.run_part(acquired.run_id, "events"))
    events = [RUN_EVENT.validate_json(fields["data"]) for _, fields in stream]
    assert [e["type"] for e in events] == ["start", "user_steered"]


def test_the_openapi_document_describes_the_run_events_of_the_sse_routes(
    cluster: Cluster,
) -> None:
    doc = httpx.get(f"{cluster.gateway_url}/openapi.json").json()
    route = doc["paths"]["/v1/runs/{run_id}/events"]["get"]
    schema = route["responses"]["200"]["content"]["text/event-stream"]["x-run-event"]
    described = {v["properties"]["type"]["const"] for v in schema["anyOf"] if "properties" in v}
    assert {"start", "chunk", "tool_result", "ask_user", "end"} <= described
