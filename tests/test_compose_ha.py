"""compose/docker-compose.ha.yml, checked without a Docker engine as test_compose.py does.

Parsed and interpolated with ``.env.example`` (secrets filled in); the walrus commands parse,
the sentinels' config names the master every walrus process asks for, the load balancer fronts
the two gateways, and the Sentinel URL is one walrus accepts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import tests.test_compose as base
from walrus_tasks.redis_url import parse_sentinel

HA_FILE = base.COMPOSE_DIR / "docker-compose.ha.yml"
SENTINELS = {"sentinel-1", "sentinel-2", "sentinel-3"}
REDIS = {"redis-master", "redis-replica"}
WALRUS = {"gateway", "worker", "beat", "flower"}
SERVICES = REDIS | SENTINELS | WALRUS | {"lb"}


def raw() -> dict[str, Any]:
    return yaml.safe_load(HA_FILE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ha() -> dict[str, Any]:
    env = {**base.env_example(), **{name: f"secret{name.lower()}" for name in base.SECRETS}}
    env["FLOWER_BASIC_AUTH"] = "admin:secret"
    return base.interpolate(raw(), env)  # type: ignore[no-any-return]


def test_a_master_a_replica_three_sentinels_gateways_behind_a_balancer(ha: dict[str, Any]) -> None:
    services = ha["services"]
    assert set(services) == SERVICES
    assert services["gateway"]["deploy"]["replicas"] == 2
    assert "ports" not in services["gateway"], "clients go through the load balancer"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["beat"]["deploy"]["replicas"] == 1
    conf = (base.COMPOSE_DIR / "lb" / "nginx.conf").read_text()
    assert re.search(r"server gateway:8765\b", conf)
    assert "proxy_buffering off" in conf, "SSE must not be buffered"
    mount = services["lb"]["volumes"][0].split(":")
    assert (base.COMPOSE_DIR / mount[0]).resolve() == (base.COMPOSE_DIR / "lb" / "nginx.conf")


def test_every_variable_is_in_env_example_and_secrets_are_required() -> None:
    documented = base.env_example()
    used = base.variables(raw())
    assert set(used) <= set(documented), f"not in .env.example: {set(used) - set(documented)}"
    required = {name for name, ops in used.items() if ":?" in ops}
    assert required >= base.SECRETS
    for name in required:
        with pytest.raises(base.MissingVariable, match=name):
            base.interpolate(raw(), {**documented, **{n: "x" for n in required - {name}}})


def test_depends_on_waits_for_healthy_services(ha: dict[str, Any]) -> None:
    services = ha["services"]
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert spec == {"condition": "service_healthy"}, (name, target)
            assert "healthcheck" in services[target], (name, target)
    for name in WALRUS:
        assert set(services[name]["depends_on"]) == SENTINELS, name


def sentinel_conf(service: dict[str, Any]) -> str:
    script = service["command"][2]
    return script.split("<<CONF\n", 1)[1].split("\nCONF", 1)[0]


def test_the_sentinels_watch_the_master_walrus_asks_them_for(ha: dict[str, Any]) -> None:
    services = ha["services"]
    url = services["gateway"]["environment"]["WALRUS_REDIS_URL"]
    group = parse_sentinel(url)
    assert group is not None
    assert {host for host, _ in group.sentinels} == SENTINELS
    assert group.password == group.sentinel_password == "secretredis_password"
    for name in SENTINELS:
        conf = sentinel_conf(services[name])
        monitor = re.search(r"sentinel monitor (\S+) (\S+) (\d+) (\d+)", conf)
        assert monitor is not None, conf
        assert monitor.group(1) == group.master
        assert monitor.group(2) == "redis-master" and monitor.group(4) == "2", "a quorum of 2"
        assert f"sentinel auth-pass {group.master} $REDIS_PASSWORD" in conf
        assert services[name]["environment"]["REDIS_PASSWORD"] == group.password
    for name in WALRUS:
        assert services[name]["environment"]["WALRUS_REDIS_URL"] == url, name


def test_master_and_replica_keep_an_aof_never_evict_and_can_swap_roles(ha: dict[str, Any]) -> None:
    services = ha["services"]
    for name in REDIS:
        args = services[name]["command"]
        flags = dict(zip(args[1::2], args[2::2], strict=False))
        assert flags["--appendonly"] == "yes" and flags["--maxmemory-policy"] == "noeviction"
        # After a failover the old master becomes a replica: it must authenticate too.
        assert flags["--masterauth"] == flags["--requirepass"] == "secretredis_password"
        assert flags["--replica-announce-ip"] == name
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :] == ["redis-master", "6379"]


def test_walrus_commands_parse_and_help(ha: dict[str, Any]) -> None:
    walrus_only = {"services": {k: v for k, v in ha["services"].items() if k in WALRUS}}
    base.test_walrus_commands_parse_and_help(walrus_only)
    base.test_celery_commands_help(walrus_only)


def test_the_ha_file_shares_the_image_and_config_of_the_plain_one(ha: dict[str, Any]) -> None:
    plain = base.interpolate(base.raw_compose(), {**base.env_example(), "WALRUS_TOKEN": "t",
                              "REDIS_PASSWORD": "p", "FLOWER_BASIC_AUTH": "a:b"})  # fmt: skip
    for name in WALRUS:
        assert ha["services"][name]["image"] == plain["services"]["gateway"]["image"]
        assert ha["services"][name]["volumes"] == plain["services"][name]["volumes"]
        assert ha["services"][name]["command"] == plain["services"][name]["command"]
    assert Path(base.COMPOSE_DIR / "config" / "config.toml").is_file()
