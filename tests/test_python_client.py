"""The Python clients (sync and asyncio) against the real gateway and workers."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

import walrus_tasks
from tests.cluster import Cluster
from walrus_tasks import AsyncClient, Client, NotFound


def test_the_public_surface_is_locked() -> None:
    assert walrus_tasks.__all__ == [
        "Accepted",
        "AsyncClient",
        "Client",
        "Conflict",
        "Event",
        "GatewayUnreachable",
        "InvalidInput",
        "NotFound",
        "PayloadTooLarge",
        "RunInfo",
        "RunStatus",
        "WalrusError",
    ]
    for name in walrus_tasks.__all__:
        assert getattr(walrus_tasks, name) is not None


def test_the_sync_client_sends_streams_and_reads_history(cluster: Cluster, sender: str) -> None:
    with Client(cluster.gateway_url) as client:
        accepted = client.send("echo", "hi", sender=sender)
        events = list(client.events(accepted.run_id))
        assert events[0].type == "start" and events[-1].data["status"] == "succeeded"
        assert client.run(accepted.run_id).status == "succeeded"
        assert [m["role"] for m in client.history("echo", sender)] == ["user", "assistant"]
        with pytest.raises(NotFound):
            client.send("nobody", "hi")


def test_the_async_client_resumes_a_stream_cut_in_the_middle(cluster: Cluster, sender: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(cluster.gateway_url) as client:
            accepted = await client.send("slow", "count", sender=sender)
            first: list[walrus_tasks.Event] = []
            async with aclosing(client.events(accepted.run_id)) as stream:
                async for event in stream:
                    first.append(event)
                    if len(first) == 5:
                        break  # closing the stream drops the connection mid-run
            rest = [e async for e in client.events(accepted.run_id, first[-1].id)]
            whole = first + rest
            fresh = [e async for e in client.events(accepted.run_id)]
            assert whole == fresh, "no gap, no duplicate"
            assert whole[-1].data["status"] == "succeeded"
            assert (await client.run(accepted.run_id)).status == "succeeded"
            history = await client.history("slow", sender)
            assert history[-1]["content"].endswith("w20")
            assert await client.cancel("slow", sender) is None
            assert await client.kill("slow", sender) is None  # the older name
            agents = await client.agents()
            assert "slow" in {a.name for a in agents}
            with pytest.raises(NotFound):
                await client.run("0" * 32)

    asyncio.run(scenario())
