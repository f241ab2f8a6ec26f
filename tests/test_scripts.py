"""Every Lua script reads its ARGV by name, from one spec per script (``script_args.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from walrus_tasks import script_args, scripts
from walrus_tasks import script_args as S

LUA = Path(scripts.__file__).parent / "lua"
SOURCES = sorted(LUA.glob("*.lua")) + sorted((LUA / "lib").glob("*.lua"))


def test_no_lua_source_reads_argv_by_position() -> None:
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in SOURCES
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "ARGV" in line.split("--", 1)[0]
    ]
    assert SOURCES and not found, "\n".join(found)


def test_every_script_has_one_spec() -> None:
    assert {p.stem for p in LUA.glob("*.lua")} == set(script_args.SCRIPTS)
    assert all(name == s.name for name, s in script_args.SCRIPTS.items())


def test_every_name_a_script_reads_is_in_its_spec() -> None:
    unknown = []
    for name, spec in script_args.SCRIPTS.items():
        used = set(re.findall(r"\bA\.(\w+)", (LUA / f"{name}.lua").read_text()))
        unknown += [f"{name}.lua: A.{n}" for n in used - {*spec.args, spec.tail}]
    assert not unknown, "\n".join(unknown)


def test_a_missing_or_unknown_argument_raises_before_redis_is_called() -> None:
    class NoRedis:
        def register_script(self, _source: str) -> None:
            raise AssertionError("Redis was called")

    args = {"id": "c1", "run_id": "r1"}
    for bad in ({"id": "c1"}, {**args, "extra": "x"}):
        with pytest.raises(TypeError, match="cron_record"):
            scripts.call(NoRedis(), S.CRON_RECORD, ["k"], bad)  # type: ignore[arg-type]
    bad_limit = {"now_ms": 0, "holder": "h", "task_id": "t", "extra_tokens": 0, "one_redis": "1"}
    with pytest.raises(TypeError, match="limits"):
        S.LIMIT_RELEASE.argv({**bad_limit, "limits": [{"name": "x"}]})


def test_the_prelude_names_fixed_arguments_and_repeated_groups(r: redis.Redis) -> None:
    spec: S.Script[list[object]] = S.Script(
        "probe", ("a", "b"), list, tail="rows", each=("name", "n")
    )
    argv = spec.argv({"b": 2, "a": 1, "rows": [{"name": "x", "n": 3}, {"n": 4, "name": "y"}]})
    assert argv == [1, 2, "x", 3, "y", 4]
    lua = spec.prelude() + "return {A.a, A.b, #A.rows, A.rows[1].name, A.rows[2].n}"
    assert r.eval(lua, 0, *argv) == ["1", "2", 2, "x", "4"]
    flat: S.Script[list[object]] = S.Script("flat", ("a",), list, tail="rest")
    assert r.eval(flat.prelude() + "return A.rest", 0, *flat.argv({"a": 0, "rest": []})) == []


def test_a_reply_outside_the_scripts_literal_raises() -> None:
    assert S.COMMIT.reply("ok") == "ok"
    with pytest.raises(ValueError, match="unexpected"):
        S.COMMIT.reply("busy")
