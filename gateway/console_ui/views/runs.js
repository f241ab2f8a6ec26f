// Runs: a live list with status and agent filters (GET /v1/runs, refreshed every 2 s, paged by
// cursor), and one run's page: its record, usage, error, its timeline (where the time went,
// views/timeline.js) and its events.
import { every } from "../app.js";
import { follow, get } from "../api.js";
import { badge, chatLink, clear, h, note, time } from "../dom.js";
import * as timelineView from "./timeline.js";

const STATUSES = ["queued", "running", "waiting", "succeeded", "failed", "cancelled"];

export async function render(main, [runId], signal) {
  return runId ? detail(main, runId, signal) : list(main, signal);
}

async function list(main, signal) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const chosen = new Set(params.getAll("status"));
  const { agents } = await get("/v1/agents", signal);
  const agent = h("select", { "aria-label": "agent", onchange: () => refresh() },
    h("option", { value: "" }, "all agents"), agents.map((a) => h("option", { value: a.name }, a.name)));
  const boxes = STATUSES.map((s) => h("label", { class: "check" },
    h("input", { type: "checkbox", value: s, checked: chosen.has(s), onchange: () => refresh() }), s));
  const body = h("tbody");
  const more = h("button", { class: "link", hidden: true }, "More");
  let pages = 1;
  const query = (cursor) => {
    const q = new URLSearchParams();
    if (agent.value) q.set("agent", agent.value);
    for (const b of boxes) if (b.firstChild.checked) q.append("status", b.firstChild.value);
    if (cursor) q.set("cursor", cursor);
    return `/v1/runs?${q}`;
  };
  // Reload every page shown so far, so the list stays live without losing the user's place.
  async function refresh() {
    const rows = [];
    let cursor = null;
    for (let i = 0; i < pages; i++) {
      const page = await get(query(cursor), signal);
      rows.push(...page.runs);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    body.replaceChildren(...rows.map(row));
    more.hidden = !cursor;
  }
  more.addEventListener("click", () => {
    pages += 1;
    refresh();
  });
  main.append(
    h("div", { class: "bar" }, h("h1", {}, "Runs"), agent),
    h("div", { class: "filters" }, boxes),
    h("table", { class: "list", id: "runs" },
      h("thead", {}, h("tr", {}, h("th", {}, "run"), h("th", {}, "status"), h("th", {}, "agent"), h("th", {}, "sender"), h("th", {}, "created"), h("th", { class: "wide" }, "error"))),
      body),
    more,
  );
  await refresh();
  every(2000, refresh, signal);
}

function row(run) {
  return h("tr", { "data-run": run.run_id },
    h("td", { class: "id" }, h("a", { href: `#/runs/${run.run_id}` }, run.run_id)),
    h("td", {}, badge(run.status)),
    h("td", {}, run.agent),
    h("td", {}, h("a", { href: chatLink(run) }, run.sender)),
    h("td", {}, time(run.created_at)),
    h("td", { class: "wide" }, run.error || ""));
}

function summary(ev) {
  switch (ev.type) {
    case "chunk": case "thinking": case "user_steered": case "compacted": return ev.content;
    case "tool_start": return ev.calls.map((c) => `${c.name}(${JSON.stringify(c.arguments)})`).join(", ");
    case "tool_result": return `${ev.name} ${ev.is_error ? "error" : "ok"} in ${ev.duration_ms} ms: ${ev.output}`;
    case "ask_user": return ev.questions.map((q) => q.question).join(" / ");
    case "restart": return `step ${ev.step}: ${ev.reason}`;
    case "end": return `${ev.status}${ev.error ? `: ${ev.error}` : ""}`;
    default: return "";
  }
}

// The events a restart voids: the step's output since the last boundary event before it
// (walrus_tasks/event_types.py: STEP_OUTPUT, STEP_BOUNDARY). They stay in the timeline, struck.
const { STEP_OUTPUT } = timelineView;
const STEP_BOUNDARY = new Set(["start", "tools_complete", "restart", "tool_start", "tool_result", "ask_user"]);

function dropStepOutput(timeline) {
  for (let item = timeline.lastElementChild; item; item = item.previousElementSibling) {
    const type = item.querySelector(".ev-type")?.textContent;
    if (STEP_BOUNDARY.has(type)) break;
    if (STEP_OUTPUT.has(type)) item.classList.add("dropped");
  }
}

async function detail(main, runId, signal) {
  const facts = h("dl", { class: "facts" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const bars = h("div", { class: "tl", id: "run-timeline" });
  const frames = [];
  let run = {};
  let drawing = false;
  // Redraw once per frame however many events arrived meanwhile (a reply is many chunks).
  const redraw = () => {
    if (drawing) return;
    drawing = true;
    requestAnimationFrame(() => {
      drawing = false;
      timelineView.draw(bars, timelineView.derive(frames, run));
    });
  };
  const show = async () => {
    run = await get(`/v1/runs/${runId}`, signal);
    const usage = run.usage ? `${run.usage.input_tokens} in / ${run.usage.output_tokens} out` : "—";
    clear(facts,
      h("dt", {}, "status"), h("dd", {}, badge(run.status)),
      h("dt", {}, "conversation"), h("dd", {}, h("a", { href: chatLink(run) }, `${run.agent} / ${run.sender}`)),
      h("dt", {}, "started by"), h("dd", { id: "run-face" }, run.face || "the system (cron, heartbeat, subscription or delegate)"),
      h("dt", {}, "created"), h("dd", {}, time(run.created_at)),
      h("dt", {}, "started"), h("dd", {}, time(run.started_at) || "—"),
      h("dt", {}, "finished"), h("dd", {}, time(run.finished_at) || "—"),
      h("dt", {}, "model"), h("dd", {}, run.model || "—"),
      h("dt", {}, "usage"), h("dd", {}, usage),
      h("dt", {}, "error"), h("dd", { class: run.error ? "error" : "" }, run.error || "—"),
      // The W3C trace id the run was sent under, to find it in a tracing backend.
      run.trace_id ? [h("dt", {}, "trace"), h("dd", { class: "id", id: "run-trace" }, run.trace_id)] : null);
    redraw();
  };
  main.append(h("h1", { class: "id" }, `Run ${runId}`), facts, h("h2", {}, "Timeline"), bars, h("h2", {}, "Events"), timeline);
  await show();
  let chunks = null;
  await follow(`/v1/runs/${runId}/events`, (frame) => {
    const ev = frame.data;
    frames.push(frame);
    redraw();
    // Consecutive chunks are one line of the list, or a long reply would be hundreds.
    if (ev.type === "chunk" && chunks) {
      chunks.lastChild.append(ev.content);
      return;
    }
    const item = h("li", { class: `ev ${ev.type}` }, h("span", { class: "ev-type" }, ev.type), h("span", { class: "ev-body" }, summary(ev)));
    chunks = ev.type === "chunk" ? item : null;
    if (ev.type === "restart") dropStepOutput(timeline);
    timeline.append(item);
  }, { signal, until: (ev) => ev.type === "end" }).catch((e) => timeline.append(note(e.message)));
  if (!signal.aborted) await show();
}
