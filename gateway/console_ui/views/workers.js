// Workers and queues: what `walrus status` shows (workers, pools, queue depths, leases, active
// runs), refreshed every 3 s; and the config reload button.
import { every } from "../app.js";
import { api, get } from "../api.js";
import { h, note } from "../dom.js";

export async function render(main, _params, signal) {
  const figures = h("dl", { class: "facts", id: "stats" });
  const workers = h("tbody");
  const runs = h("tbody");
  const status = h("div");
  const refresh = async () => {
    const [stats, { workers: rows }, active] = await Promise.all([
      get("/v1/stats", signal), get("/v1/workers", signal), get("/v1/runs?status=running&status=waiting&limit=200", signal),
    ]);
    figures.replaceChildren(
      ...["agents", "conversations", "active_runs", "queued", "leases", "unacked"].flatMap((k) => [h("dt", {}, k.replace("_", " ")), h("dd", {}, stats[k])]),
      ...Object.entries(stats.queues).flatMap(([q, n]) => [h("dt", {}, `queue ${q}`), h("dd", {}, n)]));
    workers.replaceChildren(...(rows.length ? rows : [null]).map((w) => w
      ? h("tr", {}, h("td", {}, w.name), h("td", {}, w.concurrency ?? ""), h("td", {}, w.active.length), h("td", { class: "wide" }, w.active.map((t) => t.name).join(", ")))
      : h("tr", {}, h("td", { colspan: 4 }, "no worker answered"))));
    runs.replaceChildren(...active.runs.map((r) => h("tr", {},
      h("td", { class: "id" }, h("a", { href: `#/runs/${r.run_id}` }, r.run_id)), h("td", {}, r.status), h("td", {}, r.agent), h("td", {}, r.sender))));
  };
  main.append(
    h("div", { class: "bar" }, h("h1", {}, "Workers and queues"),
      h("button", { id: "reload", onclick: async () => {
        status.replaceChildren();
        try {
          const { generation, agents } = await api("POST", "/v1/admin/reload");
          status.append(note(`config reloaded (generation ${generation}): ${agents.join(", ")}`, "info"));
        } catch (e) {
          status.append(note(e.message));
        }
      } }, "Reload config")),
    status,
    figures,
    h("h2", {}, "Workers"),
    h("table", { class: "list", id: "workers" }, h("thead", {}, h("tr", {}, h("th", {}, "worker"), h("th", {}, "pool"), h("th", {}, "busy"), h("th", { class: "wide" }, "tasks"))), workers),
    h("h2", {}, "Active runs"),
    h("table", { class: "list" }, h("thead", {}, h("tr", {}, h("th", {}, "run"), h("th", {}, "status"), h("th", {}, "agent"), h("th", {}, "sender"))), runs),
  );
  await refresh();
  every(3000, refresh, signal);
}
