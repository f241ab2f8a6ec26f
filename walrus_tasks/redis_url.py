"""Redis addresses: a plain ``redis://`` URL, or a Sentinel group that names the master.

``sentinel://[[user]:password@]host:port[,host:port…]/<master name>[/<db>][?options]`` asks the
sentinels which server is the master of ``<master name>``, and asks again after every lost
connection, so a client follows a failover without a restart. ``sentinels://`` is the same
over TLS. Options (query string): ``sentinel_password`` / ``sentinel_username`` (when the
sentinels want their own credentials; the userinfo is the master's), ``ssl=true`` (as
``sentinels://``), ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs`` (``required`` | ``optional`` | ``none``).

``redis+cluster://[[user]:password@]host:port[,host:port…][/0][?options]`` names a Redis
Cluster by some of its nodes (startup nodes: the client asks them for the slot map, and asks
again when a slot moves or a node fails). ``rediss+cluster://`` is the same over TLS, and the
options are the TLS ones above. A cluster has only database 0. The userinfo is every node's.

The state clients, the Celery broker and the result backend are all built from one such URL,
so they follow the same master; a Redis Cluster holds the state only (``celery_broker``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
import redis.cluster
import redis.sentinel

from walrus_tasks.errors import InvalidInput

SENTINEL_SCHEMES = ("sentinel", "sentinels")
_SSL_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
DEFAULT_SENTINEL_PORT = 26379
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_CLUSTER_PORT = 6379


def _server_kwargs(
    username: str | None, password: str | None, ssl: dict[str, str]
) -> dict[str, Any]:
    """Connection keyword arguments of a server: its credentials, TLS, a short connect timeout."""
    kwargs: dict[str, Any] = {"socket_connect_timeout": 2.0}
    if username:
        kwargs["username"] = username
    if password:
        kwargs["password"] = password
    if ssl:
        kwargs.update(ssl=True, **ssl)
    return kwargs


@dataclass(frozen=True)
class SentinelAddress:
    """A Sentinel group: where the sentinels are, which master, and how to talk to both."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    ssl: dict[str, str] = field(default_factory=dict)
    """Empty: no TLS; else the redis-py ``ssl_*`` keyword arguments (``ssl`` itself implied)."""

    def master_kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments for the master (and replicas)."""
        # A dead master host must not hold a caller for the OS connect timeout (minutes): the
        # next attempt asks the sentinels again.
        return {"db": self.db, **_server_kwargs(self.username, self.password, self.ssl)}

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments for the sentinels themselves."""
        kwargs: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
        if self.sentinel_username:
            kwargs["username"] = self.sentinel_username
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        if self.ssl:
            kwargs.update(ssl=True, **self.ssl)
        return kwargs


def parse_sentinel(url: str) -> SentinelAddress | None:
    """The Sentinel group a ``sentinel://`` URL names; None for any other URL."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        return None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.strip().rpartition(":") if ":" in host else (host, "", "")
        if not name.strip() or (port and not port.isdigit()):
            raise InvalidInput(f"bad sentinel address {host!r} in the Redis URL")
        sentinels.append((name.strip(), int(port) if port else DEFAULT_SENTINEL_PORT))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise InvalidInput("a sentinel URL ends in /<master name>[/<db>]")
    own = frozenset({"sentinel_password", "sentinel_username"})
    query, ssl = _options(parts, "sentinel", "sentinels", own)
    return SentinelAddress(
        sentinels=tuple(sentinels),
        master=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_username=query.get("sentinel_username"),
        sentinel_password=query.get("sentinel_password"),
        ssl=ssl,
    )


def _options(
    parts: SplitResult, kind: str, tls_scheme: str, own: frozenset[str] = frozenset()
) -> tuple[dict[str, str], dict[str, str]]:
    """A URL's query options and its TLS keyword arguments.

    The options allowed are ``own`` and the TLS ones (any other is refused); the TLS arguments
    are empty without TLS, with ``ssl_cert_reqs`` ``required`` unless given.
    """
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"ssl", *_SSL_OPTIONS, *own}
    if unknown:
        raise InvalidInput(f"unknown {kind} URL options {sorted(unknown)}")
    tls = parts.scheme == tls_scheme or query.get("ssl", "").lower() in ("1", "true", "yes")
    if not tls:
        return query, {}
    ssl = {k: query[k] for k in _SSL_OPTIONS if k in query}
    ssl.setdefault("ssl_cert_reqs", "required")
    return query, ssl


@dataclass(frozen=True)
class ClusterAddress:
    """A Redis Cluster: the nodes to ask for its slot map, and how to talk to every node."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: dict[str, str] = field(default_factory=dict)
    """Empty: no TLS; else the redis-py ``ssl_*`` keyword arguments (``ssl`` itself implied)."""

    def node_kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments for every node of the cluster."""
        # As for a Sentinel master: a dead node must not hold a caller for the OS connect
        # timeout while its replica takes over.
        return _server_kwargs(self.username, self.password, self.ssl)


def is_cluster(url: str) -> bool:
    """True for a ``redis+cluster://`` (or ``rediss+cluster://``) URL."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _cluster_node(text: str) -> tuple[str, int]:
    """``host[:port]`` (an IPv6 host in brackets) as a pair; port 6379 when none is given."""
    text = text.strip()
    if text.startswith("["):  # an IPv6 address: [::1]:7000
        host, bracket, rest = text[1:].partition("]")
        sep, port = rest[:1], rest[1:]
        ok = bool(bracket) and sep in ("", ":")
    else:
        host, sep, port = text.partition(":")
        ok = ":" not in port
    if sep and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        ok = False
    if not ok or not host:
        raise InvalidInput(f"bad cluster node {text!r} in the Redis URL: want host:port")
    return host, int(port) if sep else DEFAULT_CLUSTER_PORT


def parse_cluster(url: str) -> ClusterAddress | None:
    """The Redis Cluster a ``redis+cluster://`` URL names; None for any other URL."""
    if not is_cluster(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError as e:  # an unclosed IPv6 bracket
        raise InvalidInput(f"bad cluster URL: {e}") from e
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    if not hosts.strip():
        raise InvalidInput("a cluster URL names at least one node: redis+cluster://host:port")
    nodes = tuple(_cluster_node(host) for host in hosts.split(","))
    if parts.path.strip("/") not in ("", "0"):
        raise InvalidInput(
            f"a Redis Cluster has only database 0: the URL's path is {parts.path!r}, "
            "want nothing or /0"
        )
    _, ssl = _options(parts, "cluster", "rediss+cluster")
    return ClusterAddress(
        nodes=nodes,
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=ssl,
    )


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A synchronous client of ``url``; with Sentinel, of whichever server is the master.

    With a Redis Cluster, a ``redis.cluster.RedisCluster`` that sends each command to the
    master of its key's slot. Unlike the others it connects at once, to read the slot map:
    when no startup node answers it raises ``redis.RedisClusterException``
    (``RedisClusterUnreachableError``), which is no ``redis.RedisError``.
    """
    cluster = parse_cluster(url)
    if cluster is not None:
        nodes = [
            redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in cluster.nodes
        ]
        client = redis.cluster.RedisCluster(
            startup_nodes=nodes, **{**cluster.node_kwargs(), **kwargs}
        )
        # RedisCluster offers redis.Redis's command API (keys routed by slot): typed as one.
        return cast(redis.Redis, client)
    group = parse_sentinel(url)
    if group is None:
        return redis.Redis.from_url(url, **kwargs)
    sentinel = redis.sentinel.Sentinel(
        list(group.sentinels), sentinel_kwargs=group.sentinel_kwargs(), **group.master_kwargs()
    )
    master: redis.Redis = sentinel.master_for(group.master, **kwargs)
    return master


POOL_WAIT = 20.0
"""Seconds a command of a bounded asyncio client waits for a free connection."""


class _BlockingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The master's connections, at most ``max_connections``: a command waits for a free one."""


def async_client(url: str, pool_size: int | None = None, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client of ``url``; with Sentinel, of whichever server is the master.

    With ``pool_size`` it holds at most that many connections, and a command that finds them
    all in use waits for one (``POOL_WAIT``); without, redis-py's pool fails it ("Too many
    connections") past its default of 100.

    With a Redis Cluster, a ``redis.asyncio.cluster.RedisCluster``: ``pool_size`` caps the
    connections to each node (its ``max_connections``, default 100), but redis-py's cluster
    client has no waiting pool, so a command that finds them all in use fails at once
    (``MaxConnectionsError``). It refuses the arguments of one server's client
    (``single_connection_client``, ``db``): it holds connections per node.
    """
    cluster = parse_cluster(url)
    if cluster is not None:
        return _async_cluster_client(cluster, pool_size, **kwargs)
    group = parse_sentinel(url)
    bounded: dict[str, Any] = {}
    if pool_size is not None:
        bounded = {"max_connections": pool_size, "timeout": POOL_WAIT}
    if group is None:
        if not bounded:
            return aioredis.Redis.from_url(url, **kwargs)
        pool = aioredis.BlockingConnectionPool.from_url(url, **bounded, **kwargs)
        return aioredis.Redis.from_pool(pool)  # owns it: aclose() closes its connections
    sentinel = aiosentinel.Sentinel(
        list(group.sentinels), sentinel_kwargs=group.sentinel_kwargs(), **group.master_kwargs()
    )
    if bounded:
        kwargs = {**kwargs, **bounded, "connection_pool_class": _BlockingSentinelPool}
    master: aioredis.Redis = sentinel.master_for(group.master, **kwargs)
    return master


def _async_cluster_client(
    cluster: ClusterAddress, pool_size: int | None, **kwargs: Any
) -> aioredis.Redis:
    nodes = [aiocluster.ClusterNode(host, port) for host, port in cluster.nodes]
    if pool_size is not None:
        kwargs = {**kwargs, "max_connections": pool_size}
    client = aiocluster.RedisCluster(startup_nodes=nodes, **{**cluster.node_kwargs(), **kwargs})
    # RedisCluster offers redis.asyncio.Redis's command API (keys routed by slot): typed as one.
    return cast(aioredis.Redis, client)


class _SlotConnecting:
    """Connects to whichever master serves a slot, asked afresh (``locate``) each time."""

    def __init__(self, *, locate: Callable[[], Awaitable[tuple[str, int]]], **kwargs: Any):
        self._locate = locate
        super().__init__(**kwargs)

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected:  # type: ignore[attr-defined]
            self.host, self.port = await self._locate()
        await super().connect_check_health(  # type: ignore[misc]
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )


class _SlotConnection(_SlotConnecting, aioredis.Connection):
    """A connection to the master of a slot."""


class _SlotSSLConnection(_SlotConnecting, aioredis.SSLConnection):
    """A TLS connection to the master of a slot."""


def slot_client(
    slots: aioredis.Redis, cluster: ClusterAddress, key: str
) -> Callable[..., aioredis.Redis]:
    """A maker of plain asyncio clients of the cluster master that serves ``key``'s slot.

    Each new connection asks ``slots`` (a cluster client) for the slot map again and connects
    to the slot's master of the moment: after a failover a reconnect finds the new one. What a
    blocking ``XREAD`` over keys of one slot and ``CLIENT UNBLOCK`` of it need, which a cluster
    client (a pool per node, no connection of one's own) cannot give (``gateway.hub``).
    """
    node_client = cast(aiocluster.RedisCluster, slots)

    async def locate() -> tuple[str, int]:
        await node_client.nodes_manager.initialize()
        node = node_client.get_node_from_key(key)
        if node is None:
            raise redis.exceptions.SlotNotCoveredError(f"no master serves the slot of {key!r}")
        return node.host, int(node.port)

    def connect(**kwargs: Any) -> aioredis.Redis:
        single = bool(kwargs.pop("single_connection_client", False))
        options = {**cluster.node_kwargs(), **kwargs}
        tls = bool(options.pop("ssl", False))
        pool = aioredis.ConnectionPool(
            connection_class=_SlotSSLConnection if tls else _SlotConnection,
            locate=locate,
            **options,
        )
        client = aioredis.Redis(connection_pool=pool, single_connection_client=single)
        client.auto_close_connection_pool = True  # aclose() closes the pool made here
        return client

    return connect


def _kombu_url(group: SentinelAddress) -> str:
    # kombu and Celery's backend take one ``sentinel://`` URL per sentinel, joined by ``;``;
    # the userinfo is the master's password, the database is in the path.
    auth = ""
    if group.password:
        auth = f"{group.username or ''}:{group.password}@"
    return ";".join(f"sentinel://{auth}{h}:{p}/{group.db}" for h, p in group.sentinels)


def _sentinel_transport(group: SentinelAddress) -> dict[str, Any]:
    return {"master_name": group.master, "sentinel_kwargs": group.sentinel_kwargs()}


def celery_broker(url: str) -> dict[str, Any]:
    """Celery settings for a Redis broker at ``url``: the URL, extra transport options, TLS.

    A Redis Cluster is refused: kombu's Redis transport does not support one.
    """
    if is_cluster(url):
        raise InvalidInput(
            "Celery's broker cannot be a Redis Cluster (kombu's Redis transport does not "
            "support one): set WALRUS_BROKER_URL to a redis://, sentinel:// or amqp:// URL"
        )
    group = parse_sentinel(url)
    if group is None:
        return {"broker_url": url, "broker_transport_options": {}}
    settings: dict[str, Any] = {
        "broker_url": _kombu_url(group),
        "broker_transport_options": _sentinel_transport(group),
    }
    if group.ssl:
        settings["broker_use_ssl"] = dict(group.ssl)
    return settings


def celery_backend(url: str) -> dict[str, Any]:
    """Celery settings for a Redis result backend at ``url``, as ``celery_broker`` does.

    A Redis Cluster is refused: Celery's Redis result backend does not support one.
    """
    if is_cluster(url):
        raise InvalidInput(
            "Celery's result backend cannot be a Redis Cluster (Celery's Redis backend does "
            "not support one): it goes with WALRUS_BROKER_URL (walrus_tasks.celery_app)"
        )
    group = parse_sentinel(url)
    if group is None:
        return {"result_backend": url, "result_backend_transport_options": {}}
    settings: dict[str, Any] = {
        "result_backend": _kombu_url(group),
        "result_backend_transport_options": _sentinel_transport(group),
    }
    if group.ssl:
        settings["redis_backend_use_ssl"] = dict(group.ssl)
    return settings


def describe(url: str) -> str:
    """``url`` without its password, for logs and status output."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hosts}" if user else f":***@{hosts}").geturl()
