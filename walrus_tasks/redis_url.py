"""Redis addresses: a plain ``redis://`` URL, or a Sentinel group that names the master.

``sentinel://[[user]:password@]host:port[,host:port…]/<master name>[/<db>][?options]`` asks the
sentinels which server is the master of ``<master name>``, and asks again after every lost
connection, so a client follows a failover without a restart. ``sentinels://`` is the same
over TLS. Options (query string): ``sentinel_password`` / ``sentinel_username`` (when the
sentinels want their own credentials; the userinfo is the master's), ``ssl=true`` (as
``sentinels://``), ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs`` (``required`` | ``optional`` | ``none``).

The state clients, the Celery broker and the result backend are all built from one such URL,
so they follow the same master.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from walrus_tasks.errors import InvalidInput

SENTINEL_SCHEMES = ("sentinel", "sentinels")
_SSL_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
DEFAULT_SENTINEL_PORT = 26379


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
        kwargs: dict[str, Any] = {"db": self.db, "socket_connect_timeout": 2.0}
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        if self.ssl:
            kwargs.update(ssl=True, **self.ssl)
        return kwargs

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
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"sentinel_password", "sentinel_username", "ssl", *_SSL_OPTIONS}
    if unknown:
        raise InvalidInput(f"unknown sentinel URL options {sorted(unknown)}")
    tls = parts.scheme == "sentinels" or query.get("ssl", "").lower() in ("1", "true", "yes")
    ssl = {k: query[k] for k in _SSL_OPTIONS if k in query}
    if tls and "ssl_cert_reqs" not in ssl:
        ssl["ssl_cert_reqs"] = "required"
    return SentinelAddress(
        sentinels=tuple(sentinels),
        master=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_username=query.get("sentinel_username"),
        sentinel_password=query.get("sentinel_password"),
        ssl=ssl if tls else {},
    )


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A synchronous client of ``url``; with Sentinel, of whichever server is the master."""
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
    """
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
    """Celery settings for a Redis broker at ``url``: the URL, extra transport options, TLS."""
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
    """Celery settings for a Redis result backend at ``url``, as ``celery_broker`` does."""
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
