"""One key schema for Python and Lua: ``walrus_tasks/keys.py`` names every key."""

from __future__ import annotations

import re
from pathlib import Path

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from walrus_tasks import keys, runs, scripts
from walrus_tasks.lease import Fence
from walrus_tasks.runs import acquire
from walrus_tasks.submit import keyed_run_id, new_run_id, submit

LUA = Path(scripts.__file__).parent / "lua"
SCRIPTS = sorted(LUA.glob("*.lua")) + sorted((LUA / "lib").glob("*.lua"))

KEY_BUILDING = [
    (re.compile(r"""['"]walrus:"""), "a key literal"),
    (re.compile(r"""\.\.\s*['"]:"""), "a key built with .. ':'"),
    (re.compile(r"""(?:^|[\s(,=])['"]:[a-z_]*['"]\s*\.\."""), "a key built with ':part' .."),
    (re.compile(r"\bPREFIX\b"), "a key prefix of its own"),
]


def test_no_lua_script_spells_a_key_name() -> None:
    assert SCRIPTS, LUA
    found = []
    for path in SCRIPTS:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("--", 1)[0]
            found += [f"{path.name}:{n}: {what}: {line.strip()}" for rx, what in KEY_BUILDING
                      if rx.search(code)]  # fmt: skip
    assert not found, "\n".join(found)


def test_every_key_builder_the_scripts_call_is_generated_from_keys_py() -> None:
    library = keys.lua_library()
    defined = set(re.findall(r"^function K\.(\w+)\(", library, re.M))
    defined |= set(re.findall(r"^K\.(\w+) =", library, re.M))
    used = {name for path in SCRIPTS for name in re.findall(r"\bK\.(\w+)", path.read_text())}
    assert used - defined == set()
    assert used, "the scripts get their keys from K"


CIDS = ("a:s", "echo:tenant:acme:alice", "agent:sénder-☃", "x:" + "y" * 300)
RUN_IDS = ("r1", "0" * 32, "f0e1d2c3b4a5968778695a4b3c2d1e0f", "A-upper", "")


def test_the_generated_library_names_the_same_keys_as_python(r: redis.Redis) -> None:
    def lua_list(items: list[str]) -> str:
        return "for _, p in ipairs({" + ",".join(items) + "}) do table.insert(out, p) end\n"

    probe = "local out = {K.cid('a', 's'), K.subs_source('x')}\n"
    for cid in CIDS:
        q = "'" + cid + "'"
        probe += lua_list([f"K.conv_{p}({q})" for p in keys.CONV_PARTS])
        probe += lua_list([f"K.{n}({q})" for n in keys.CONV_INDEXES])
    for run_id in RUN_IDS:
        q = "'" + run_id + "'"
        probe += lua_list([f"K.run({q})"] + [f"K.run_{p}({q})" for p in keys.RUN_PARTS])
        probe += lua_list([f"K.call_{p}({q}, 'c1')" for p in keys.CALL_PARTS])
        probe += lua_list([f"K.runs_active({q})", f"K.runs({q})", f"K.webhooks({q})"])
    probe += lua_list([f"K.limit_{p}('fake/m1')" for p in keys.LIMIT_PARTS])
    probe += lua_list(["K.FAIR_TENANTS", "K.FAIR_AHEAD", "K.FAIR_CLOCK", "K.fair_agents('t1')"])
    probe += lua_list(["K.fair_ready('t1','a')"])
    probe += "return out"
    got = r.eval(keys.lua_library() + probe, 0)
    want = [keys.cid("a", "s"), keys.subs_source("x")]
    for cid in CIDS:
        want += [keys.conv(cid, p) for p in keys.CONV_PARTS]
        want += [keys.conv_index(n, cid) for n in keys.CONV_INDEXES]
    for run_id in RUN_IDS:
        want += [keys.run(run_id)] + [keys.run_part(run_id, p) for p in keys.RUN_PARTS]
        want += [keys.run_call(run_id, p, "c1") for p in keys.CALL_PARTS]
        want += [keys.run_index(n, run_id) for n in ("runs:active", "runs", "webhooks")]
    want += [keys.limit("fake/m1", p) for p in keys.LIMIT_PARTS]
    want += [keys.FAIR_TENANTS, keys.FAIR_AHEAD, keys.FAIR_CLOCK]
    want += [keys.fair_agents("t1"), keys.fair_ready("t1", "a")]
    assert got == want


def test_the_buckets_spread_over_the_slot_range_and_a_run_shares_its_conversations() -> None:
    slots = [key_slot(t.encode()) for t in keys.TAGS]
    width = REDIS_CLUSTER_HASH_SLOTS // keys.BUCKETS
    assert [s // width for s in slots] == list(range(keys.BUCKETS)), "one bucket a sixteenth"
    for cid in CIDS:
        agent, sender = keys.split_cid(cid)
        run_id = new_run_id(agent, sender)
        assert re.fullmatch("[0-9a-f]{32}", run_id)
        assert key_slot(keys.run(run_id).encode()) == key_slot(keys.conv(cid, "inbox").encode())
        keyed = keyed_run_id(agent, sender, "key-1")
        assert keys.run_bucket(keyed) == keys.bucket_of(cid) and keyed == keyed_run_id(
            agent, sender, "key-1"
        )
    # Many conversations fill every bucket about evenly.
    counts = [0] * keys.BUCKETS
    for i in range(16_000):
        counts[keys.bucket_of(f"agent:user-{i}")] += 1
    assert min(counts) > 800 and max(counts) < 1200, counts


def test_a_finished_run_deletes_what_keys_py_lists_and_keeps_its_record_and_events(
    r: redis.Redis, sender: str
) -> None:
    submit(r, "echo", sender, "hello")
    acquired = acquire(r, "echo", sender)
    assert acquired is not None and acquired.run_id is not None
    run_id = acquired.run_id
    fence = Fence("echo", sender, run_id, acquired.token)
    for part in keys.RUN_ENDED_PARTS:  # every run-wide key a run can have, all at once
        r.rpush(keys.run_part(run_id, part), "1")  # the type does not matter to a delete
    present = set(r.scan_iter(f"{keys.run(run_id)}*"))
    assert present == set(keys.run_keys(run_id)), "keys.run_keys lists every run-wide key"
    assert runs.finish(r, fence, "succeeded", {"type": "end", "status": "succeeded"}).state == (
        "ended"
    )
    left = set(r.scan_iter(f"{keys.run(run_id)}*"))
    assert left == present - {keys.run_part(run_id, p) for p in keys.RUN_ENDED_PARTS}
    assert left == {keys.run(run_id), keys.run_part(run_id, "events")}
    assert all(r.ttl(k) > 0 for k in left), "the record and events expire after events_ttl"
