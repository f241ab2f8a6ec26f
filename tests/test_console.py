"""The web console in a real browser (system Chromium through Playwright) against a real
gateway, worker and fake LLM: chat streams, tool cards, ask_user answered inline, kill, the live
runs list, crons, the token prompt, and no JavaScript error on any page at either screen size."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import DESKTOP, PHONE, Page, browser, shots
from tests.cluster import Cluster, running, wait_for
from tests.conftest import redis_db_url, write_home
from tests.fakellm import FakeLLM, FakeReply
from walrus_tasks.redis_server import RedisServer

__all__ = ["browser", "shots"]  # fixtures

AGENTS = {
    "asker": 'model = "fake/m-console-ask"\ntools = ["ask_user"]\n',
    "helper": 'model = "fake/m-console"\ntools = ["clock"]\ndescription = "Tells the time"\n',
}
QUESTION = {
    "questions": [{"question": "Which colour?", "options": [{"label": "blue"}, {"label": "green"}]}]
}
TOKEN = "console-test-token"


@pytest.fixture(scope="module")
def console_cluster(cluster: Cluster) -> Cluster:
    """The session cluster, which carries ``AGENTS``."""
    return cluster


@pytest.fixture
def page(browser: Any, console_cluster: Cluster) -> Iterator[Page]:
    p = Page(browser, console_cluster.gateway_url, DESKTOP)
    yield p
    p.close()
    assert p.errors == [], "JavaScript or console errors"


def test_a_chat_reply_streams_into_the_page(page: Page, sender: str) -> None:
    pg: Any = page.open(f"chat/slow/{sender}")
    pg.fill("#chat-input", "count to twenty")
    pg.click("#send")
    bubble = pg.locator(".msg.assistant").last
    # Streaming: part of the reply is on the page before the rest has been written.
    pg.wait_for_function(
        "() => { const t = document.querySelector('.msg.assistant .text')?.textContent || '';"
        " return t.includes('w2') && !t.includes('w20'); }"
    )
    bubble.locator(".badge.succeeded").wait_for()
    assert bubble.locator(".text").inner_text().strip().endswith("w20")
    assert "out" in bubble.locator(".meta").inner_text()  # usage shown at the end


def test_a_tool_call_shows_as_a_card(
    page: Page, console_cluster: Cluster, fake_llm: FakeLLM, sender: str, shots: Path
) -> None:
    fake_llm.script(
        FakeReply(thinking="The user wants the time: ask the clock.", tool_calls=[("clock", {})]),
        FakeReply(text="It is the time the clock said. Anything else?"),
        model="m-console",
    )
    pg: Any = page.open(f"chat/helper/{sender}")
    pg.fill("#chat-input", "What time is it?")
    pg.click("#send")
    card = pg.locator("details.tool.ok")
    card.wait_for()
    assert card.locator(".tool-name").inner_text() == "clock"
    assert re.search(r"done · \d+ ms", card.locator(".tool-state").inner_text())
    assert card.locator(".output").inner_text().strip()
    pg.locator(".msg.assistant .badge.succeeded").wait_for()
    assert pg.locator(".thinking").count() == 1
    pg.screenshot(path=str(shots / "console-chat.png"))
    # Reopened later, the conversation's history shows the same card.
    pg.reload()
    pg.locator("details.tool.ok .tool-name").wait_for()
    pg.set_viewport_size(PHONE)
    pg.screenshot(path=str(shots / "console-chat-phone.png"))


def asks_for_a_colour(fake_llm: FakeLLM) -> None:
    """The ``asker`` agent's model asks QUESTION, then answers "blue it is"."""
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", QUESTION)]),
        FakeReply(text="blue it is"),
        model="m-console-ask",
    )


def test_an_answer_whose_reply_returns_after_the_runs_end_leaves_the_end_shown(
    page: Page, console_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    # Found in a full run under load: the reply POST's answer came after the run's `end`
    # event, and the page then set the finished run's badge back to "running" for good.
    asks_for_a_colour(fake_llm)
    pg: Any = page.open(f"chat/asker/{sender}")

    def late_reply(route: Any) -> None:
        answer = route.fetch()  # the reply reaches the gateway now; its answer is held back
        wait_for(
            lambda: any(
                m["role"] == "assistant" and m["content"] == "blue it is"
                for m in console_cluster.history("asker", sender)
            ),
            30,
        )
        time.sleep(0.5)  # the end event reaches the page first
        route.fulfill(response=answer)

    pg.route("**/reply*", late_reply)
    pg.fill("#chat-input", "pick a colour")
    pg.click("#send")
    pg.locator("form.ask").wait_for()
    pg.locator("form.ask").get_by_role("button", name="blue").click()
    pg.locator(".answered").wait_for()
    pg.locator(".msg.assistant .badge.succeeded").wait_for(timeout=5000)
    assert pg.locator(".msg.assistant .badge.running").count() == 0


def test_an_ask_user_question_is_answered_from_the_page(
    page: Page, console_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    asks_for_a_colour(fake_llm)
    pg: Any = page.open(f"chat/asker/{sender}")
    pg.fill("#chat-input", "pick a colour")
    pg.click("#send")
    form = pg.locator("form.ask")
    form.wait_for()
    assert "Which colour?" in form.inner_text()
    pg.locator(".msg.assistant .badge.waiting").wait_for()
    form.get_by_role("button", name="blue").click()
    pg.locator(".answered").wait_for()
    pg.locator(".msg.assistant .badge.succeeded").wait_for()
    assert "blue it is" in pg.locator(".msg.assistant").last.inner_text()
    tool = [m for m in console_cluster.history("asker", sender) if m["role"] == "tool"]
    assert tool[0]["content"] == "blue"


def test_kill_cancels_the_running_reply(page: Page, sender: str) -> None:
    pg: Any = page.open(f"chat/slow/{sender}")
    pg.fill("#chat-input", "count")
    pg.click("#send")
    pg.wait_for_function(
        "() => (document.querySelector('.msg.assistant .text')?.textContent || '').includes('w1')"
    )
    pg.click("#kill")
    pg.locator(".msg.assistant .badge.cancelled").wait_for()
    assert "killed run" in pg.locator(".chat-status").inner_text()


def _first_conversations_read_held(page: Page) -> list[Any]:
    """Hold the page's first read of the conversations (its route) until the test lets it go."""
    held: list[Any] = []

    def hold_the_first(route: Any) -> None:
        if held:
            route.continue_()
        held.append(route)

    page.page.route("**/v1/conversations?*", hold_the_first)
    return held


def _active_run(cluster: Cluster, agent: str, sender: str) -> str | None:
    with cluster.http() as c:
        rows = c.get("/v1/conversations", params={"agent": agent}).json()["conversations"]
    return next((x["active_run"] for x in rows if x["sender"] == sender), None)


def _release_once_started(pg: Any, held: list[Any], started: Callable[[], object]) -> None:
    """Let the held read go once ``started()`` (or after 3 s: the page may wait for the read)."""
    deadline = time.monotonic() + 3
    while not (held and started()) and time.monotonic() < deadline:
        pg.wait_for_timeout(50)
    assert held, "the page read the conversations"
    held[0].continue_()


def test_a_message_sent_before_the_page_has_read_its_conversation_shows_once(
    page: Page, console_cluster: Cluster, sender: str
) -> None:
    # Found in a full run (the test above saw two "cancelled" badges): a message sent before
    # the page's first read of the conversations had answered came back in that read as the
    # conversation's running run, and the page showed its reply a second time.
    held = _first_conversations_read_held(page)
    pg: Any = page.open(f"chat/slow/{sender}")
    pg.fill("#chat-input", "count")
    pg.click("#send")
    _release_once_started(pg, held, lambda: _active_run(console_cluster, "slow", sender))
    pg.locator(".msg.assistant .badge.succeeded").wait_for()
    assert pg.locator(".msg.assistant").count() == 1
    assert pg.locator(".msg.user").all_inner_texts() == ["count"]


def test_a_compaction_asked_before_the_page_has_read_its_conversation_shows_once(
    page: Page, console_cluster: Cluster, sender: str
) -> None:
    """As a message sent: the compaction's run is shown once (its summary takes ~5 s)."""
    done = console_cluster.wait_run(console_cluster.send("slow", "count", sender), timeout=30)
    assert done["status"] == "succeeded"
    held = _first_conversations_read_held(page)
    pg: Any = page.open(f"chat/slow/{sender}")
    pg.click("#compact")
    _release_once_started(pg, held, lambda: _active_run(console_cluster, "slow", sender))
    pg.locator(".msg.assistant[data-run] .badge.succeeded").wait_for()
    assert pg.locator(".msg.assistant[data-run]").count() == 1


def test_a_new_run_appears_live_in_the_runs_list(
    page: Page, console_cluster: Cluster, sender: str, shots: Path
) -> None:
    pg: Any = page.open("runs")
    pg.locator("#runs").wait_for()  # the list is on the page before the run exists
    run_id = console_cluster.send("echo", "hello", sender)
    row = pg.locator(f'#runs tr[data-run="{run_id}"]')
    row.locator(".badge.succeeded").wait_for()
    assert row.locator("td.id").inner_text() == run_id  # the whole id, never cut
    pg.screenshot(path=str(shots / "console-runs.png"))
    row.locator("td.id a").click()
    pg.locator("#timeline li.ev.end").wait_for()
    types = pg.locator("#timeline .ev-type").all_inner_texts()
    assert types[0] == "start" and types[-1] == "end" and "chunk" in types
    assert pg.locator("#run-face").inner_text() == "http"  # sent by the native route


def test_a_cron_is_created_and_deleted_from_the_page(page: Page, console_cluster: Cluster) -> None:
    pg: Any = page.open("crons")
    form = pg.locator("#cron-form")
    form.locator("[name=schedule]").fill("@every 1h")
    form.locator("[name=agent]").select_option("echo")
    form.locator("[name=message]").fill("hourly hello from the console")
    form.get_by_role("button", name="Add cron").click()
    row = pg.locator("#crons tbody tr", has_text="hourly hello from the console")
    row.wait_for()
    with console_cluster.http() as c:
        [cron] = [x for x in c.get("/v1/crons").json()["crons"] if x["agent"] == "echo"]
    assert row.get_attribute("data-cron") == cron["id"]
    row.get_by_role("button", name="Delete").click()
    row.wait_for(state="detached")
    with console_cluster.http() as c:
        assert c.get(f"/v1/crons/{cron['id']}").status_code == 404


def test_every_page_renders_without_a_javascript_error_at_both_sizes(
    browser: Any, console_cluster: Cluster, shots: Path
) -> None:
    console_cluster.wait_run(console_cluster.send("tooly", "what time is it?", "pages"))
    [run] = httpx.get(f"{console_cluster.gateway_url}/v1/runs?limit=1").json()["runs"]
    routes = {
        "agents": "#agents",
        "agents/echo": "dl.facts",
        "agents/new": "#agent-form",
        "chat": "#conversations",
        "chat/tooly/pages": "details.tool.ok",
        "runs": "#runs tbody tr",
        f"runs/{run['run_id']}": "#timeline li.ev.end",
        "feed": "#feed",
        "crons": "#crons",
        "workers": "#workers tbody tr",
    }
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        p = Page(browser, console_cluster.gateway_url, viewport)
        try:
            for route, ready in routes.items():
                pg: Any = p.open(route)
                pg.locator(ready).first.wait_for()
                name = route.split("/")[0]
                if route in ("agents", "chat/tooly/pages", "runs", "workers"):
                    pg.screenshot(path=str(shots / f"page-{name}-{label}.png"), full_page=True)
                # Nothing wider than the screen: no sideways scrolling on a phone.
                width = pg.evaluate("document.documentElement.scrollWidth")
                assert width <= viewport["width"], (route, label, width)
        finally:
            p.close()
        assert p.errors == [], (label, p.errors)


def test_an_agent_form_shows_the_apis_422_next_to_the_field(
    page: Page, console_cluster: Cluster
) -> None:
    pg: Any = page.open("agents/new")
    pg.fill("[name=name]", "console-made")
    pg.fill("[name=members]", "nobody")
    pg.click("#agent-form button[type=submit]")
    error = pg.locator('.field-error[data-field="members"]')
    error.wait_for()
    assert "member 'nobody' is not defined" in error.inner_text()
    page.errors = [e for e in page.errors if "status of 422" not in e]  # the refused POST
    pg.fill("[name=members]", "")
    pg.click("#agent-form button[type=submit]")
    pg.locator("h1", has_text="console-made").wait_for()
    pg.once("dialog", lambda d: d.accept())
    pg.get_by_role("button", name="Delete").click()
    pg.locator("#agents").wait_for()
    with console_cluster.http() as c:
        assert c.get("/v1/agents/console-made").status_code == 404


def test_a_tenants_conversation_opens_and_continues_in_its_tenant(
    page: Page, console_cluster: Cluster, sender: str
) -> None:
    c = console_cluster
    c.wait_run(c.send("echo", "in the default tenant", sender))
    c.wait_run(c.send("echo", "in acme", sender, tenant="acme"))
    pg: Any = page.open("chat")
    pg.click(f"#conversations a:text-is('{sender} (acme)')")
    pg.locator(".msg.user", has_text="in acme").wait_for()
    assert pg.locator(".msg.user", has_text="in the default tenant").count() == 0
    pg.fill("#chat-input", "more for acme")
    pg.click("#send")
    pg.locator(".msg.assistant .badge.succeeded").last.wait_for()
    with c.http() as h:
        url = f"/v1/agents/echo/conversations/{sender}/history"
        acme = h.get(url, params={"tenant": "acme"}).json()["messages"]
    assert [m["content"] for m in acme if m["role"] == "user"] == ["in acme", "more for acme"]
    assert [m["content"] for m in c.history("echo", sender) if m["role"] == "user"] == [
        "in the default tenant"
    ]


@pytest.fixture(scope="module")
def token_cluster(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    home = write_home(tmp_path_factory.mktemp("token-home"), fake_llm.base_url)
    with (home / "config.toml").open("a") as f:
        f.write(f'\n[gateway]\ntokens = ["{TOKEN}"]\n')
    c = Cluster(
        redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path_factory.mktemp("l")
    )
    with running(c, workers=()):
        yield c


def test_the_console_asks_for_a_token_once_and_keeps_it_for_the_tab(
    browser: Any, token_cluster: Cluster
) -> None:
    p = Page(browser, token_cluster.gateway_url, DESKTOP)
    try:
        pg: Any = p.open("agents")
        dialog = pg.locator("#token-dialog")
        dialog.wait_for()
        pg.fill("#token-input", "wrong")
        pg.click("#token-form button")
        pg.locator("#token-why", has_text="refused").wait_for()
        pg.fill("#token-input", TOKEN)
        pg.click("#token-form button")
        pg.locator("#agents tbody tr", has_text="echo").wait_for()
        assert not dialog.is_visible()
        pg.goto("/console#/runs")  # a new page load in the same tab: no second prompt
        pg.locator("#runs").wait_for()
        assert not dialog.is_visible()
    finally:
        p.close()
    refused = [e for e in p.errors if "status of 401" in e]
    assert refused and len(refused) == len(p.errors), p.errors
