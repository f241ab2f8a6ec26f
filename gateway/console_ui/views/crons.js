// Crons (create, delete, next fire) and event-bus subscriptions (create, delete).
import { api, get } from "../api.js";
import { h, note, time } from "../dom.js";

export async function render(main, _params, signal) {
  const [{ agents }, { crons }, { subscriptions }] = await Promise.all([
    get("/v1/agents", signal), get("/v1/crons", signal), get("/v1/subscriptions", signal),
  ]);
  const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  const agentSelect = (name) => h("select", { name, "aria-label": name }, agents.map((a) => h("option", { value: a.name }, a.name)));
  const submit = (path, build, status) => async (e) => {
    e.preventDefault();
    status.replaceChildren();
    try {
      await api("POST", path, build(e.target));
      reload();
    } catch (err) {
      status.append(note(err.message));
    }
  };
  const remove = (path, status) => async () => {
    try {
      await api("DELETE", path);
      reload();
    } catch (err) {
      status.append(note(err.message));
    }
  };
  const cronStatus = h("div");
  const subStatus = h("div");
  main.append(
    h("h1", {}, "Crons"),
    h("form", { class: "inline wrap", id: "cron-form", onsubmit: submit("/v1/crons", (f) => ({
      schedule: f.schedule.value.trim(),
      agent: f.agent.value,
      ...(f.message.value.trim() ? { message: f.message.value.trim() } : {}),
      ...(f.sender.value.trim() ? { sender: f.sender.value.trim() } : {}),
      once: f.once.checked,
    }), cronStatus) },
      h("input", { name: "schedule", placeholder: "*/5 * * * * or @every 30s", "aria-label": "schedule", required: true }),
      agentSelect("agent"),
      h("input", { name: "message", placeholder: "message", "aria-label": "message", required: true }),
      h("input", { name: "sender", placeholder: "sender (default cron:<id>)", "aria-label": "sender" }),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "once" }), "once"),
      h("button", { type: "submit" }, "Add cron")),
    cronStatus,
    h("table", { class: "list", id: "crons" },
      h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "schedule"), h("th", {}, "agent"), h("th", { class: "wide" }, "message"), h("th", {}, "next fire"), h("th", {}, "fires"), h("th", {}))),
      h("tbody", {}, crons.map((c) => h("tr", { "data-cron": c.id },
        h("td", { class: "id" }, c.id), h("td", {}, c.schedule), h("td", {}, c.agent),
        h("td", { class: "wide" }, c.message ?? `/${c.skill}`), h("td", {}, time(c.next_fire_at)), h("td", {}, c.fires),
        h("td", {}, h("button", { class: "danger small", onclick: remove(`/v1/crons/${encodeURIComponent(c.id)}`, cronStatus) }, "Delete")))))),
    h("h1", {}, "Subscriptions"),
    h("form", { class: "inline wrap", id: "sub-form", onsubmit: submit("/v1/subscriptions", (f) => ({
      source: f.source.value.trim(), target_agent: f.target_agent.value, once: f.once.checked,
    }), subStatus) },
      h("input", { name: "source", placeholder: "source, e.g. github.push", "aria-label": "source", required: true }),
      agentSelect("target_agent"),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "once" }), "once"),
      h("button", { type: "submit" }, "Subscribe")),
    subStatus,
    h("table", { class: "list", id: "subscriptions" },
      h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "source"), h("th", {}, "agent"), h("th", {}, "once"), h("th", {}))),
      h("tbody", {}, subscriptions.map((s) => h("tr", {},
        h("td", { class: "id" }, s.id), h("td", {}, s.source), h("td", {}, s.target_agent), h("td", {}, s.once ? "yes" : ""),
        h("td", {}, h("button", { class: "danger small", onclick: remove(`/v1/subscriptions/${encodeURIComponent(s.id)}`, subStatus) }, "Delete")))))),
  );
}
