"""Every run keeps the face (protocol) a client started it by: ``GET /v1/runs/{id}`` shows it.

The in-process gateway alone (no worker): what is checked is what ``submit()`` stores with the
accepted run. Following and cancelling a run from a face other than its own is tested end to end
with each face (``tests/test_cross_face.py``).
"""

from __future__ import annotations

from starlette.testclient import TestClient

from walrus_tasks.faces import FACES
from walrus_tasks.models import RunInfo


def test_a_run_sent_over_http_says_http(gateway_client: TestClient, sender: str) -> None:
    sent = gateway_client.post("/v1/agents/echo/messages", json={"content": "hi", "sender": sender})
    assert sent.status_code == 202, sent.text
    run = gateway_client.get(f"/v1/runs/{sent.json()['run_id']}")
    assert run.status_code == 200, run.text
    assert run.json()["face"] == "http"


def test_a_run_sent_over_the_websocket_says_websocket(
    gateway_client: TestClient, sender: str
) -> None:
    with gateway_client.websocket_connect("ws://127.0.0.1:8765/v1/ws") as ws:
        ws.send_json({"id": 1, "op": "send", "agent": "echo", "content": "hi", "sender": sender})
        answer = ws.receive_json()
    assert answer["type"] == "result", answer
    run = gateway_client.get(f"/v1/runs/{answer['result']['run_id']}")
    assert run.json()["face"] == "websocket"


def test_a_run_with_no_face_is_one_the_system_started() -> None:
    record = {"run_id": "r1", "agent": "echo", "sender": "s", "status": "queued"}
    assert RunInfo.from_hash(record).face is None
    assert RunInfo.from_hash({**record, "face": "mcp"}).face == "mcp"
    assert {"http", "websocket", "openai-chat", "agent-protocol"} <= FACES
