// A run's timeline: where its time went (queue wait, LLM calls, tool calls, waits), drawn as
// bars on a time axis from the run's events alone; no tracing backend is needed.
//
// The time of an event is its stream entry id, `<ms>-<seq>`, which the SSE `id:` carries (the
// Redis clock, one clock for every event). `derive(frames, run)` is pure: SSE frames
// ({id, data}) and the run record (GET /v1/runs/{id}) in, rows of bars out. `draw` renders
// them. How each bar is placed (walrus_tasks/event_types.py is the grammar):
//
// - queue wait: the run's `created_at` (the gateway's clock) to its `start` event.
// - LLM call of step n: from the step's boundary (`start` for step 0, `tools_complete` for
//   the next, moved on past a `user_steered` or `compacted` before the call) to the step's end:
//   its `tool_start` (the answer was committed and its calls sent), or for a step without tool
//   calls its last text / thinking event (or `end`, when it streamed nothing). A wait for a
//   limit's capacity before the call has no event, so it is inside the bar.
// - a `retry` ends the attempt there (failed), then a back-off of its `delay_ms`, then the next
//   attempt (on the retry's `model`). A `restart` voids the attempt's output: it is drawn void
//   (hatched); a lost worker's `restart` ends the void attempt where the step was claimed
//   again. (A lost attempt that had streamed nothing leaves no event: its time is in the bar.)
// - a tool call: its `tool_start` to its `tool_result` (by call id), the last `duration_ms` of
//   it drawn solid (the tool running; before that, the call waited in the tools queue).
// - a wait: an `ask_user` (question, approval or client tool) to the `tool_result` of its call.
// - end: the `end` event, with its status. Bars still open when the run ends close there.
//
// While the run goes on, an open bar ends at the latest event (the browser's clock is not the
// server's); the page redraws as events arrive.
import { h } from "../dom.js";

const WORKER_LOST = "worker lost"; // event_types.WORKER_LOST
// A step's output events (event_types.STEP_OUTPUT); views/runs.js strikes them when voided.
export const STEP_OUTPUT = new Set(["text_start", "chunk", "text_end", "thinking"]);

// The millisecond of a stream entry id "<ms>-<seq>".
export const entryMs = (id) => Number(String(id).split("-")[0]);

export function duration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(ms < 10_000 ? 2 : 1))} s`; // 2 s, not 2.00 s
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

// frames: [{id: "<ms>-<seq>", data: event}] in stream order; run: the run record (optional).
// Returns {start, end, rows: [{kind, label, start, end, open, title, segments}], ended}; each
// segment is {start, end, cls, title}; times in ms since the epoch.
export function derive(frames, run = {}) {
  const rows = [];
  const tools = new Map();
  const waits = new Map();
  let step = -1;
  let llm = null;
  let attempt = null;
  let latest = null;
  let ended = null;
  const row = (kind, label, start, extra = {}) => {
    const r = { kind, label, start, end: null, segments: [], ...extra };
    rows.push(r);
    return r;
  };
  const begin = (at, model = null) => {
    attempt = { start: at, end: null, cls: "", model, output: null, why: "" };
    llm.segments.push(attempt);
  };
  const close = (at) => {
    attempt.end = Math.max(at, attempt.start);
    attempt = null;
  };
  const nextStep = (at) => {
    step += 1;
    llm = row("llm", `LLM · step ${step}`, at, { step, retries: 0 });
    begin(at);
  };
  for (const { id, data: ev } of frames) {
    const at = entryMs(id);
    latest = at;
    if (STEP_OUTPUT.has(ev.type)) {
      if (attempt) attempt.output = at;
      continue;
    }
    switch (ev.type) {
      case "start": {
        if (run.created_at) {
          const created = Math.min(Math.round(run.created_at * 1000), at);
          row("queue", "queue wait", created).segments.push({ start: created, end: at, cls: "" });
        }
        nextStep(at);
        break;
      }
      case "user_steered":
      case "compacted":
        // Before the step's LLM call: the call starts after it (a compaction is its own call).
        if (attempt && attempt.output === null) {
          if (ev.type === "compacted") {
            const c = row("compaction", "compaction", attempt.start);
            c.segments.push({ start: attempt.start, end: at, cls: "" });
          }
          attempt.start = at;
        }
        break;
      case "retry":
        if (!attempt) break;
        attempt.cls += " failed";
        attempt.why = ev.reason;
        close(at);
        llm.retries += 1;
        llm.segments.push({ start: at, end: at + ev.delay_ms, cls: "backoff", why: `back-off before attempt ${ev.attempt + 1}` });
        begin(at + ev.delay_ms, ev.model);
        break;
      case "restart":
        if (!attempt) break;
        attempt.cls += " void";
        attempt.why = `restarted: ${ev.reason}`;
        if (ev.reason === WORKER_LOST) {
          const model = attempt.model;
          close(at);
          begin(at, model);
        }
        break;
      case "tool_start":
        if (attempt) close(at);
        for (const call of ev.calls) {
          tools.set(call.id, row("tool", call.name, at, { callId: call.id }));
        }
        break;
      case "ask_user": {
        const name = ev.tool?.name ? ` · ${ev.tool.name}` : "";
        const w = row("wait", `wait · ${ev.kind}${name}`, at);
        w.segments.push({ start: at, end: null, cls: ev.kind });
        if (ev.call_id) waits.set(ev.call_id, w);
        break;
      }
      case "tool_result": {
        const t = tools.get(ev.call_id);
        if (t) {
          t.end = at;
          t.duration_ms = ev.duration_ms;
          t.error = ev.is_error;
          const ran = Math.max(t.start, at - ev.duration_ms);
          t.segments.push({ start: t.start, end: at, cls: "queued" }, { start: ran, end: at, cls: ev.is_error ? "ran failed" : "ran" });
          tools.delete(ev.call_id);
        }
        const w = waits.get(ev.call_id);
        if (w) {
          w.segments[0].end = at;
          waits.delete(ev.call_id);
        }
        break;
      }
      case "tools_complete":
        nextStep(at);
        break;
      case "end":
        if (attempt) {
          const stop = ev.status === "succeeded" && attempt.output !== null ? attempt.output : at;
          if (ev.status !== "succeeded") attempt.cls += ` ${ev.status}`;
          close(stop);
        }
        for (const t of tools.values()) t.segments.push({ start: t.start, end: at, cls: `queued ${ev.status}` });
        for (const w of waits.values()) w.segments[0].end = at;
        tools.clear();
        waits.clear();
        ended = { at, status: ev.status, error: ev.error || "", model: ev.model };
        row("end", `end · ${ev.status}`, at).segments.push({ start: at, end: at, cls: ev.status });
        break;
      default:
        break;
    }
  }
  // Open bars end at the latest event; a row spans its segments.
  for (const r of rows) {
    r.open = false;
    if (r.kind === "tool" && !r.segments.length) r.segments.push({ start: r.start, end: null, cls: "queued" });
    for (const s of r.segments) {
      if (s.end === null) {
        s.end = Math.max(latest, s.start);
        s.open = true;
        r.open = true;
        s.cls += " open";
      }
    }
    r.start = Math.min(...r.segments.map((s) => s.start)); // a call moved past a compaction
    r.end = Math.max(r.start, ...r.segments.map((s) => s.end));
    titles(r, run);
  }
  rows.sort((a, b) => a.start - b.start); // stable: same-ms rows keep the stream's order
  const first = rows.length ? rows[0].start : latest;
  return { start: first, end: latest === null ? first : Math.max(latest, ...rows.map((r) => r.end)), rows, ended };
}

function titles(r, run) {
  const took = duration(r.end - r.start) + (r.open ? " so far" : "");
  if (r.kind === "llm") {
    r.title = `LLM call, step ${r.step}: ${took}${r.retries ? `, ${r.retries} ${r.retries === 1 ? "retry" : "retries"}` : ""}`;
    let n = 0;
    for (const s of r.segments) {
      if (s.cls.includes("backoff")) {
        s.title = `${s.why}: ${duration(s.end - s.start)}`;
        continue;
      }
      n += 1;
      const model = s.model || (run.model ? `${run.model} (the run's)` : "unknown");
      s.title = `attempt ${n}, model ${model}: ${duration(s.end - s.start)}${s.why ? ` — ${s.why}` : ""}`;
    }
  } else if (r.kind === "tool") {
    const ran = r.duration_ms === undefined ? "" : `, ran ${duration(r.duration_ms)}${r.error ? " (error)" : ""}`;
    r.title = `tool ${r.label}: ${took}${ran}`;
    for (const s of r.segments) s.title = r.title;
  } else if (r.kind === "end") {
    r.title = r.label;
    for (const s of r.segments) s.title = r.title;
  } else {
    r.title = `${r.label}: ${took}`;
    for (const s of r.segments) s.title = r.title;
  }
}

// Tick spacing: 1, 2 or 5 × a power of ten ms, about five ticks over the span.
function tickStep(span) {
  const raw = Math.max(span, 1) / 5;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
}

// Draw `derived` (from derive) into `el`, replacing what it held.
export function draw(el, derived) {
  const { start, end, rows } = derived;
  if (!rows.length) {
    el.replaceChildren(h("p", { class: "tl-empty" }, "No events yet."));
    return;
  }
  const span = Math.max(end - start, 1);
  const place = (node, from, to) => {
    // CSSOM, not a style attribute: the console's CSP (style-src 'self') allows only this.
    node.style.left = `${((from - start) / span) * 100}%`;
    if (to !== undefined) node.style.width = `${((to - from) / span) * 100}%`;
    return node;
  };
  const every = tickStep(span);
  const ticks = [];
  for (let t = 0; t <= span; t += every) {
    // A label past 70 % of the axis hangs left of its tick, so none runs off the track.
    const cls = t / span > 0.7 ? "tl-tick right" : "tl-tick";
    ticks.push(place(h("span", { class: cls }, t ? `+${duration(t)}` : "0"), start + t));
  }
  const axis = h("div", { class: "tl-row tl-axis" }, h("span", { class: "tl-label" }, duration(span)), h("div", { class: "tl-track" }, ticks));
  const lines = rows.map((r) => {
    const track = h("div", { class: "tl-track" },
      r.segments.map((s) => place(h("span", {
        class: ["tl-bar", r.kind, ...s.cls.split(" ")].filter(Boolean).join(" "),
        title: s.title,
        "data-start": s.start - start,
        "data-ms": s.end - s.start,
      }), s.start, s.end)));
    return h("div", {
      class: `tl-row ${r.kind}${r.open ? " open" : ""}`,
      "data-kind": r.kind,
      "data-start": r.start - start,
      "data-end": r.end - start,
      title: r.title,
    },
    h("span", { class: "tl-label" }, h("span", { class: "tl-name" }, r.label),
      r.kind === "end" ? null : h("span", { class: "tl-took" }, duration(r.end - r.start))),
    track);
  });
  el.replaceChildren(axis, ...lines, legend());
}

const LEGEND = [
  ["queue", "queue wait"], ["llm", "LLM call"], ["llm void", "void attempt"],
  ["llm failed", "failed attempt"], ["llm backoff", "retry back-off"],
  ["tool queued", "tool call queued"], ["tool ran", "tool running"], ["wait question", "wait"],
];

function legend() {
  return h("p", { class: "tl-legend" },
    LEGEND.map(([cls, text]) => h("span", {}, h("i", { class: `tl-bar ${cls}` }), text)));
}
