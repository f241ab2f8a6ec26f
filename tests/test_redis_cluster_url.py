"""``redis+cluster://`` state URLs: parsing, the broker and result backend rule, real clients.

The first tests need no server. The last ones run against a Redis Cluster of our own
(``tests.redis_cluster``: three masters, three replicas on free ports).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from celery import Celery

from tests.redis_cluster import RedisClusterGroup
from tests.redis_cluster import client as node_client
from walrus_tasks import celery_app, connection
from walrus_tasks.errors import InvalidInput
from walrus_tasks.redis_server import reachable
from walrus_tasks.redis_url import (
    ClusterAddress,
    celery_backend,
    celery_broker,
    is_cluster,
    parse_cluster,
)
from walrus_tasks.settings import Settings

# --- parsing ------------------------------------------------------------------------------------

REQUIRED = {"ssl_cert_reqs": "required"}


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("redis+cluster://h1:7000", ClusterAddress(nodes=(("h1", 7000),))),
        (
            "redis+cluster://h1:7000, h2:7001,h3",
            ClusterAddress(nodes=(("h1", 7000), ("h2", 7001), ("h3", 6379))),
        ),
        ("redis+cluster://h1:7000/", ClusterAddress(nodes=(("h1", 7000),))),
        ("redis+cluster://h1:7000/0", ClusterAddress(nodes=(("h1", 7000),))),
        (
            "redis+cluster://:s%40cret@h1:7000",
            ClusterAddress(nodes=(("h1", 7000),), password="s@cret"),
        ),
        (
            "redis+cluster://walrus:pw@h1:7000,h2:7000",
            ClusterAddress(nodes=(("h1", 7000), ("h2", 7000)), username="walrus", password="pw"),
        ),
        (
            "redis+cluster://[::1]:7000,[fe80::2]",
            ClusterAddress(nodes=(("::1", 7000), ("fe80::2", 6379))),
        ),
        ("rediss+cluster://h1:7000", ClusterAddress(nodes=(("h1", 7000),), ssl=REQUIRED)),
        ("redis+cluster://h1:7000?ssl=true", ClusterAddress(nodes=(("h1", 7000),), ssl=REQUIRED)),
        (
            "rediss+cluster://h1:7000?ssl_ca_certs=/ca.pem&ssl_cert_reqs=none",
            ClusterAddress(
                nodes=(("h1", 7000),), ssl={"ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "none"}
            ),
        ),
        # TLS options without TLS are not used.
        ("redis+cluster://h1:7000?ssl_ca_certs=/ca.pem", ClusterAddress(nodes=(("h1", 7000),))),
    ],
)  # fmt: skip
def test_a_cluster_url_names_its_nodes_credentials_and_tls(url: str, want: ClusterAddress) -> None:
    assert is_cluster(url)
    assert parse_cluster(url) == want


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "at least one node"),
        ("redis+cluster://user:pw@", "at least one node"),
        ("redis+cluster://h1:7000,,h2:7001", "bad cluster node ''"),
        ("redis+cluster://:7000", "bad cluster node ':7000'"),
        ("redis+cluster://h1:port", "bad cluster node 'h1:port'"),
        ("redis+cluster://h1:", "bad cluster node 'h1:'"),
        ("redis+cluster://h1:0", "bad cluster node 'h1:0'"),
        ("redis+cluster://h1:65536", "bad cluster node 'h1:65536'"),
        ("redis+cluster://h1:1:2", "bad cluster node 'h1:1:2'"),
        ("redis+cluster://[::1]x", "bad cluster node"),
        ("redis+cluster://[::1", "bad cluster URL"),
        ("redis+cluster://h1:7000/1", "only database 0"),
        ("redis+cluster://h1:7000/0/x", "only database 0"),
        ("redis+cluster://h1:7000/walrus", "only database 0"),
        ("redis+cluster://h1:7000?db=1", "unknown cluster URL options ['db']"),
        ("redis+cluster://h1:7000?sentinel_password=x", "unknown cluster URL options"),
    ],
)
def test_a_bad_cluster_url_is_refused_with_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_cluster(url)


@pytest.mark.parametrize(
    "url", ["redis://h:6379/0", "rediss://h:6379", "sentinel://h:26379/walrus", "amqp://h//", ""]
)
def test_other_urls_are_no_cluster(url: str) -> None:
    assert not is_cluster(url)
    assert parse_cluster(url) is None


def test_the_node_arguments_carry_credentials_and_tls() -> None:
    plain = parse_cluster("redis+cluster://h1:7000")
    assert plain is not None
    assert plain.node_kwargs() == {"socket_connect_timeout": 2.0}
    tls = parse_cluster("rediss+cluster://u:p@h1:7000?ssl_ca_certs=/ca.pem")
    assert tls is not None
    assert tls.node_kwargs() == {
        "socket_connect_timeout": 2.0, "username": "u", "password": "p", "ssl": True,
        "ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "required",
    }  # fmt: skip


def test_the_asyncio_client_is_redis_pys_cluster_client_with_a_cap_per_node() -> None:
    url = "redis+cluster://127.0.0.1:9,127.0.0.1:10"  # nothing listens: never connected
    bounded: Any = connection.async_redis(url, read_timeout=30, pool_size=7)
    assert isinstance(bounded, aiocluster.RedisCluster)
    assert {n.max_connections for n in bounded.startup_nodes} == {7}
    assert bounded.connection_kwargs["socket_timeout"] == 30
    assert bounded.connection_kwargs["decode_responses"] is True


def test_the_sync_client_reads_the_slot_map_at_once_and_an_unreachable_cluster_is_down() -> None:
    url = "redis+cluster://127.0.0.1:9,127.0.0.1:10"  # nothing listens
    with pytest.raises(redis.RedisClusterException, match="cannot be connected"):
        connection.client(url, socket_connect_timeout=0.5)
    assert not reachable(url, timeout=0.5)


# --- the broker and the result backend ----------------------------------------------------------

CLUSTER = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"


def test_a_cluster_state_without_a_broker_url_is_refused_at_start() -> None:
    with pytest.raises(InvalidInput, match="set WALRUS_BROKER_URL"):
        Settings(redis_url=CLUSTER, broker_url="")
    Settings(redis_url=CLUSTER, broker_url="redis://127.0.0.1:6380/0")


def test_a_cluster_broker_url_and_a_bad_cluster_url_are_refused_at_start() -> None:
    with pytest.raises(InvalidInput, match="WALRUS_BROKER_URL cannot name a Redis Cluster"):
        Settings(broker_url=CLUSTER)
    with pytest.raises(InvalidInput, match="WALRUS_REDIS_URL: a Redis Cluster has only"):
        Settings(redis_url=CLUSTER + "/2", broker_url="redis://127.0.0.1:6380/0")


def test_the_refusal_at_start_shows_no_password() -> None:
    secret = "redis+cluster://:hunter2@127.0.0.1:7000"
    with pytest.raises(InvalidInput) as refused:
        Settings(redis_url=secret, broker_url="", flower_basic_auth="admin:hunter2")
    assert "hunter2" not in str(refused.value) and refused.value.__cause__ is None
    with pytest.raises(InvalidInput) as bad:
        Settings(redis_url=secret + "/3", broker_url="redis://:hunter2@127.0.0.1:6380/0")
    assert "hunter2" not in str(bad.value) and bad.value.__cause__ is None


def test_celery_refuses_a_cluster_as_broker_or_result_backend() -> None:
    with pytest.raises(InvalidInput, match="broker cannot be a Redis Cluster"):
        celery_broker(CLUSTER)
    with pytest.raises(InvalidInput, match="result backend cannot be a Redis Cluster"):
        celery_backend(CLUSTER)
    with pytest.raises(InvalidInput, match="broker cannot be a Redis Cluster"):
        celery_app.broker_config(CLUSTER, 3600)


def test_the_result_backend_goes_with_a_redis_or_sentinel_broker_of_a_cluster_state() -> None:
    backend = celery_app.backend_config(CLUSTER, "redis://b:6379/3", 3600)
    assert backend == {
        "result_backend": "redis://b:6379/3",
        "result_backend_transport_options": {"visibility_timeout": 3600},
    }
    sentinel = celery_app.backend_config(CLUSTER, "sentinel://s1:26379,s2:26379/walrus/2", 60)
    assert sentinel["result_backend"] == "sentinel://s1:26379/2;sentinel://s2:26379/2"
    assert sentinel["result_backend_transport_options"]["master_name"] == "walrus"
    assert sentinel["result_backend_transport_options"]["visibility_timeout"] == 60


def test_the_result_backend_is_off_with_a_rabbitmq_broker_of_a_cluster_state() -> None:
    assert celery_app.backend_config(CLUSTER, "amqp://g:g@rabbit:5672//", 3600) == {
        "result_backend": None
    }
    with pytest.raises(InvalidInput, match="needs WALRUS_BROKER_URL"):
        celery_app.backend_config(CLUSTER, "", 3600)


def test_without_a_cluster_the_result_backend_stays_the_state_redis() -> None:
    backend = celery_app.backend_config("redis://state:6379/0", "amqp://g:g@rabbit//", 3600)
    assert backend["result_backend"] == "redis://state:6379/0"


def test_the_celery_app_of_a_cluster_state_and_rabbitmq_has_no_result_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(redis_url=CLUSTER, broker_url="amqp://g:g@127.0.0.1:9//")
    monkeypatch.setattr(celery_app, "get_settings", lambda: settings)
    config = celery_app.celery_config()
    assert config["broker_url"] == "amqp://g:g@127.0.0.1:9//"
    assert config["result_backend"] is None
    app = Celery("cluster-state", set_as_current=False)
    app.conf.update(config)
    assert type(app.backend).__name__ == "DisabledBackend"  # nothing connected to


# --- against a real Redis Cluster ---------------------------------------------------------------


def keys_on_every_master(
    c: redis.cluster.RedisCluster | aiocluster.RedisCluster, masters: int
) -> dict[str, int]:
    """A key per master, by the slot map the client read: ``{key: port of its master}``."""
    found: dict[int, str] = {}
    for i in range(1000):
        node = c.get_node_from_key(f"walrus:test:{i}")
        assert node is not None
        found.setdefault(int(node.port), f"walrus:test:{i}")
        if len(found) == masters:
            return {key: port for port, key in found.items()}
    raise AssertionError(f"no key on every master: {found}")


def test_the_sync_client_writes_and_reads_keys_on_every_master(
    redis_cluster: RedisClusterGroup,
) -> None:
    c = connection.client(redis_cluster.url)
    try:
        assert isinstance(c, redis.cluster.RedisCluster)
        placed = keys_on_every_master(c, 3)
        assert set(placed.values()) == {m.port for m in redis_cluster.masters()}
        for key in placed:
            assert c.set(key, f"v-{key}")
        for key, port in placed.items():
            assert c.get(key) == f"v-{key}"
            assert node_client(port).get(key) == f"v-{key}"  # on that master, not elsewhere
    finally:
        c.close()


def test_the_asyncio_client_writes_and_reads_keys_on_every_master(
    redis_cluster: RedisClusterGroup,
) -> None:
    async def main() -> dict[str, int]:
        c = connection.async_redis(redis_cluster.url, read_timeout=10, pool_size=4)
        try:
            assert isinstance(c, aiocluster.RedisCluster)
            await c.initialize()  # reads the slot map
            placed = keys_on_every_master(c, 3)
            for key in placed:
                assert await c.set(key, f"a-{key}")
            for key in placed:
                assert await c.get(key) == f"a-{key}"
            return placed
        finally:
            await c.aclose()

    placed = asyncio.run(main())
    assert set(placed.values()) == {m.port for m in redis_cluster.masters()}
    for key, port in placed.items():
        assert node_client(port).get(key) == f"a-{key}"


SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""


def test_a_lua_script_runs_on_hash_tagged_keys_and_cross_slot_keys_are_refused(
    redis_cluster: RedisClusterGroup,
) -> None:
    c = connection.client(redis_cluster.url)
    try:
        assert isinstance(c, redis.cluster.RedisCluster)
        script = c.register_script(SCRIPT)
        tagged = ["walrus:conv:{echo:alice}:last", "walrus:conv:{echo:alice}:count"]
        assert c.keyslot(tagged[0]) == c.keyslot(tagged[1])
        assert script(keys=tagged, args=["hi"]) == ["hi", "1"]
        assert script(keys=tagged, args=["again"]) == ["again", "2"]
        apart = ["walrus:test:0", "walrus:test:1"]
        assert c.keyslot(apart[0]) != c.keyslot(apart[1])
        with pytest.raises(redis.RedisClusterException, match="same key slot"):
            script(keys=apart, args=["x"])
    finally:
        c.close()

    async def main() -> list[str]:
        a = connection.async_redis(redis_cluster.url)
        try:
            result: list[str] = await a.register_script(SCRIPT)(keys=tagged, args=["async"])
            return result
        finally:
            await a.aclose()

    assert asyncio.run(main()) == ["async", "3"]


def test_the_sync_client_follows_a_master_killed_to_its_replica(
    redis_cluster: RedisClusterGroup,
) -> None:
    c = connection.client(redis_cluster.url)
    try:
        assert isinstance(c, redis.cluster.RedisCluster)
        placed = keys_on_every_master(c, 3)
        for key in placed:
            c.set(key, "before")
        doomed = redis_cluster.masters()[0]
        [key] = [k for k, port in placed.items() if port == doomed.port]
        assert node_client(doomed.port).wait(1, 5000) == 1  # its replica holds the key
        redis_cluster.kill9_master(doomed.port)
        redis_cluster.wait_failover()
        assert doomed.port not in {m.port for m in redis_cluster.masters()}
        assert c.get(key) == "before"  # the same client, from the promoted replica
        assert c.set(key, "after") and c.get(key) == "after"
    finally:
        c.close()
