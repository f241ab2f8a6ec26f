// Usage: LLM tokens and cost per day (or hour) as a bar chart drawn here in SVG, and a table by
// agent and model (GET /v1/usage). A tenant token sees its own tenant's usage; an admin every
// tenant's. Cost comes from [prices] in config.toml; "?" where a model has no price.
import { get } from "../api.js";
import { append, h, note } from "../dom.js";

const RANGES = [
  { value: "1d", label: "last 24 hours", period: "hour" },
  { value: "7d", label: "last 7 days", period: "day" },
  { value: "30d", label: "last 30 days", period: "day" },
  { value: "90d", label: "last 90 days", period: "day" },
];
const GROUPS = [
  { value: "agent,model", label: "by agent and model" },
  { value: "tenant,agent,model", label: "by tenant, agent and model" },
  { value: "tenant", label: "by tenant" },
  { value: "agent", label: "by agent" },
  { value: "model", label: "by model" },
];
const SVG = "http://www.w3.org/2000/svg";
const HOUR = 3600;
const DAY = 24 * HOUR;

// An SVG element (presentation attributes only: the console's CSP allows no inline style).
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  return append(el, children);
}

const tokens = (n) => Number(n).toLocaleString("en-US");
const dollars = (n) => (n === null || n === undefined ? "?" : `$${n.toFixed(n < 1 ? 4 : 2)}`);

// Every period of the answer's range, so a day without usage shows as an empty slot.
function periods(report, period) {
  const out = [];
  const step = period === "hour" ? HOUR : DAY;
  const first = period === "hour" ? report.from : Math.floor(report.from / DAY) * DAY;
  for (let t = first; t < report.to; t += step) {
    const iso = new Date(t * 1000).toISOString();
    out.push(period === "hour" ? `${iso.slice(0, 13)}:00:00Z` : iso.slice(0, 10));
  }
  return out;
}

function chart(report, period, metric) {
  const byPeriod = new Map(report.rows.map((r) => [r.period, r]));
  const slots = periods(report, period).map((p) => ({ period: p, row: byPeriod.get(p) }));
  const value = (row) => (!row ? 0 : metric === "cost" ? row.cost_usd || 0 : row.input_tokens + row.output_tokens);
  const max = Math.max(0, ...slots.map((x) => value(x.row)));
  const width = 960, height = 240, left = 70, bottom = 28, top = 12;
  const plot = height - bottom - top;
  const slot = (width - left) / Math.max(slots.length, 1);
  const bar = Math.max(1, slot * 0.7);
  const y = (v) => top + plot - (max ? (v / max) * plot : 0);
  const label = (v) => (metric === "cost" ? dollars(v) : tokens(Math.round(v)));
  const every = Math.ceil(slots.length / 12);
  const svg = s("svg", { id: "usage-chart", viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart",
    "aria-label": `${metric === "cost" ? "cost" : "tokens"} per ${period}` });
  svg.append(
    s("line", { x1: left, x2: width, y1: y(0), y2: y(0), class: "axis" }),
    s("text", { x: left - 6, y: y(0), class: "tick", "text-anchor": "end", "dominant-baseline": "middle" }, label(0)),
  );
  if (max) {
    svg.append(
      s("line", { x1: left, x2: width, y1: y(max), y2: y(max), class: "grid" }),
      s("text", { x: left - 6, y: y(max), class: "tick", "text-anchor": "end", "dominant-baseline": "middle" }, label(max)),
    );
  }
  slots.forEach(({ period: p, row }, i) => {
    const x = left + i * slot + (slot - bar) / 2;
    const g = s("g", { class: "slot", "data-period": p });
    const what = row
      ? `${p}: ${tokens(row.input_tokens)} in, ${tokens(row.output_tokens)} out, ${row.calls} calls, ${dollars(row.cost_usd)}`
      : `${p}: no usage`;
    g.append(s("title", {}, what));
    if (row && metric === "tokens") {
      // Input below, output stacked on top.
      const total = row.input_tokens + row.output_tokens;
      g.append(
        s("rect", { x, width: bar, y: y(row.input_tokens), height: y(0) - y(row.input_tokens), class: "bar input" }),
        s("rect", { x, width: bar, y: y(total), height: y(row.input_tokens) - y(total), class: "bar output" }),
      );
    } else if (row) {
      const v = value(row);
      g.append(s("rect", { x, width: bar, y: y(v), height: y(0) - y(v), class: "bar cost" }));
    }
    if (i % every === 0) {
      const text = period === "hour" ? `${p.slice(11, 13)}h` : p.slice(5);
      g.append(s("text", { x: x + bar / 2, y: height - 8, class: "tick", "text-anchor": "middle" }, text));
    }
    svg.append(g);
  });
  return svg;
}

function legend(metric) {
  return metric === "cost"
    ? h("p", { class: "legend" }, h("span", { class: "swatch cost" }), "cost (USD)")
    : h("p", { class: "legend" }, h("span", { class: "swatch input" }), "input tokens ",
      h("span", { class: "swatch output" }), "output tokens");
}

export async function render(main, _params, signal) {
  const range = h("select", { id: "usage-range", "aria-label": "range", onchange: () => refresh() },
    RANGES.map((r) => h("option", { value: r.value, selected: r.value === "7d" }, r.label)));
  const metric = h("select", { id: "usage-metric", "aria-label": "chart", onchange: () => refresh() },
    h("option", { value: "tokens" }, "tokens"), h("option", { value: "cost" }, "cost"));
  const groups = h("select", { id: "usage-group", "aria-label": "group", onchange: () => refresh() },
    GROUPS.map((g) => h("option", { value: g.value }, g.label)));
  const figure = h("figure", { class: "chart-box" });
  const status = h("div");
  const head = h("thead");
  const body = h("tbody", { id: "usage-rows" });
  const foot = h("tfoot", { id: "usage-totals" });

  async function refresh() {
    const chosen = RANGES.find((r) => r.value === range.value);
    const dims = groups.value.split(",");
    const q = (group) => `/v1/usage?${new URLSearchParams({ group_by: group, from: chosen.value })}`;
    const [perPeriod, table] = await Promise.all([get(q(chosen.period), signal), get(q(groups.value), signal)]);
    figure.replaceChildren(chart(perPeriod, chosen.period, metric.value), legend(metric.value));
    const cells = (r) => [
      h("td", { class: "num" }, tokens(r.input_tokens)), h("td", { class: "num" }, tokens(r.output_tokens)),
      h("td", { class: "num" }, r.calls), h("td", { class: "num" }, r.runs), h("td", { class: "num" }, dollars(r.cost_usd)),
    ];
    head.replaceChildren(h("tr", {}, dims.map((d) => h("th", {}, d)),
      ["input", "output", "calls", "runs", "cost"].map((c) => h("th", { class: "num" }, c))));
    body.replaceChildren(...(table.rows.length
      ? table.rows.map((r) => h("tr", { "data-agent": r.agent ?? "", "data-model": r.model ?? "" },
        dims.map((d) => h("td", { class: d === "model" ? "id" : "" }, r[d] ?? "")), cells(r)))
      : [h("tr", {}, h("td", { colspan: dims.length + 5 }, "no usage in this range"))]));
    foot.replaceChildren(h("tr", {}, h("th", { colspan: dims.length }, "total"), cells(table.totals)));
    status.replaceChildren(...(table.unpriced_models.length
      ? [note(`no price for ${table.unpriced_models.join(", ")}: add [prices."<model>"] to config.toml`, "info")]
      : []));
  }

  main.append(
    h("div", { class: "bar" }, h("h1", {}, "Usage"), range, metric, groups),
    figure,
    status,
    h("table", { class: "list", id: "usage" }, head, body, foot),
  );
  await refresh();
}
