// The live event feed (GET /v1/events): every run's events as they happen, newest on top.
import { follow, get } from "../api.js";
import { h } from "../dom.js";

const KEEP = 300;

export async function render(main, [agent], signal) {
  const { agents } = await get("/v1/agents", signal);
  const filter = h("select", { "aria-label": "agent", onchange: () => (location.hash = `#/feed/${filter.value}`) },
    h("option", { value: "" }, "all agents"), agents.map((a) => h("option", { value: a.name, selected: a.name === agent }, a.name)));
  const body = h("tbody");
  main.append(
    h("div", { class: "bar" }, h("h1", {}, "Events"), filter),
    h("p", { class: "note info" }, "Live: events appear as runs emit them."),
    h("table", { class: "list", id: "feed" },
      h("thead", {}, h("tr", {}, h("th", {}, "run"), h("th", {}, "agent"), h("th", {}, "sender"), h("th", {}, "type"), h("th", { class: "wide" }, "content"))),
      body),
  );
  const path = `/v1/events${agent ? `?agent=${encodeURIComponent(agent)}` : ""}`;
  follow(path, ({ data: ev }) => {
    const text = ev.content ?? ev.output ?? ev.status ?? (ev.calls ? ev.calls.map((c) => c.name).join(", ") : "");
    body.prepend(h("tr", {},
      h("td", { class: "id" }, h("a", { href: `#/runs/${ev.run_id}` }, ev.run_id)),
      h("td", {}, ev.agent), h("td", {}, ev.sender), h("td", {}, ev.type), h("td", { class: "wide" }, text)));
    while (body.childElementCount > KEEP) body.lastElementChild.remove();
  }, { signal }).catch(() => {});
}
