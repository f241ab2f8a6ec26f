// Conversations: the list (filtered by agent) and the chat view, which streams a run's reply,
// its thinking and tool-call cards, answers ask_user questions inline, and steers, kills and
// compacts.
import { api, follow, get } from "../api.js";
import { badge, chatLink, clear, h, note, time } from "../dom.js";

const PAGE = 50;

export async function render(main, [agent, sender, tenant], signal) {
  if (agent && sender) return chat(main, agent, sender, tenant || null, signal);
  return list(main, agent, signal);
}

async function list(main, agent, signal) {
  const [{ agents }, { conversations }] = await Promise.all([
    get("/v1/agents", signal),
    get(`/v1/conversations${agent ? `?agent=${encodeURIComponent(agent)}` : ""}`, signal),
  ]);
  const filter = h("select", { "aria-label": "agent", onchange: () => (location.hash = `#/chat/${filter.value}`) },
    h("option", { value: "" }, "all agents"),
    agents.map((a) => h("option", { value: a.name, selected: a.name === agent }, a.name)));
  const start = h("form", { class: "inline", onsubmit: (e) => {
    e.preventDefault();
    const who = e.target.sender.value.trim() || "console";
    location.hash = `#/chat/${encodeURIComponent(e.target.agent.value)}/${encodeURIComponent(who)}`;
  } },
    h("select", { name: "agent", "aria-label": "new conversation agent" }, agents.map((a) => h("option", { value: a.name, selected: a.name === agent }, a.name))),
    h("input", { name: "sender", placeholder: "sender (default: console)" }),
    h("button", { type: "submit" }, "Open"));
  main.append(
    h("div", { class: "bar" }, h("h1", {}, "Conversations"), filter),
    start,
    h("table", { class: "list", id: "conversations" },
      h("thead", {}, h("tr", {}, h("th", {}, "agent"), h("th", {}, "sender"), h("th", {}, "last active"), h("th", {}, "active run"), h("th", {}, "queued"))),
      h("tbody", {}, conversations.map((c) =>
        h("tr", {},
          h("td", {}, c.agent),
          h("td", {}, h("a", { href: chatLink(c) }, c.tenant ? `${c.sender} (${c.tenant})` : c.sender)),
          h("td", {}, time(c.last_active)),
          h("td", { class: "id" }, c.active_run ? h("a", { href: `#/runs/${c.active_run}` }, c.active_run) : ""),
          h("td", {}, c.queued))))),
  );
}

async function chat(main, agent, sender, tenant, signal) {
  const base = `/v1/agents/${encodeURIComponent(agent)}/conversations/${encodeURIComponent(sender)}`;
  const q = tenant ? `?tenant=${encodeURIComponent(tenant)}` : "";
  const log = h("div", { class: "log", id: "chat-log", "aria-live": "polite" });
  const status = h("div", { class: "chat-status" });
  const box = h("textarea", { id: "chat-input", rows: 2, placeholder: `Message ${agent}…`, "aria-label": "message" });
  let active = null;
  // The history and any running run, shown once read: a message sent before then waits for
  // them, or the first read would show its run a second time, as the conversation's running run.
  let ready = null;
  const act = async (fn) => {
    status.replaceChildren();
    try {
      await fn();
    } catch (e) {
      status.append(note(e.message));
    }
  };
  const watch = (runId, bubble) => {
    active = runId;
    follow(`/v1/runs/${runId}/events`, (ev) => show(bubble, ev.data, `${base}/reply${q}`), {
      signal,
      until: (ev) => ev.type === "end",
    }).then(() => { if (active === runId) active = null; }, (e) => status.append(note(e.message)));
  };
  const send = () => act(async () => {
    const content = box.value.trim();
    if (!content) return;
    box.value = "";
    await ready?.catch(() => null);
    log.append(h("div", { class: "msg user" }, content));
    const { run_id } = await api("POST", `/v1/agents/${encodeURIComponent(agent)}/messages`, { content, sender, ...(tenant ? { tenant } : {}) });
    const bubble = runBubble(run_id);
    log.append(bubble);
    watch(run_id, bubble);
  });
  const steer = () => act(async () => {
    const content = box.value.trim();
    if (!content) return;
    await api("POST", `${base}/steer${q}`, { content });
    box.value = "";
  });
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      send();
    }
  });
  main.append(
    h("div", { class: "bar" },
      h("h1", {}, h("a", { href: `#/agents/${encodeURIComponent(agent)}` }, agent), " / ", sender, tenant ? ` (${tenant})` : ""),
      h("button", { id: "kill", class: "danger", onclick: () => act(async () => {
        const { run_id } = await api("POST", `${base}/cancel${q}`);
        status.append(note(run_id ? `killed run ${run_id}` : "nothing was running", "info"));
      }) }, "Kill"),
      h("button", { id: "compact", onclick: () => act(async () => {
        await ready?.catch(() => null);  // as a message sent: its run is shown once
        const { run_id } = await api("POST", `${base}/compact${q}`);
        const bubble = runBubble(run_id);
        log.append(bubble);
        watch(run_id, bubble);
      }) }, "Compact")),
    log,
    status,
    h("div", { class: "composer" }, box,
      h("button", { id: "send", onclick: send }, "Send"),
      h("button", { id: "steer", title: "add to the active run's next step", onclick: steer }, "Steer")),
  );
  ready = (async () => {
    const { messages } = await get(`${base}/history${q}`, signal).catch((e) => {
      if (e.status === 404) return { messages: [] };
      throw e;
    });
    const { conversations } = await get(`/v1/conversations?agent=${encodeURIComponent(agent)}`, signal);
    const running = conversations.find((c) => c.sender === sender && (c.tenant || null) === tenant)?.active_run;
    showHistory(log, messages.filter((m) => !running || m.run_id !== running), PAGE);
    if (running) {
      const bubble = runBubble(running);
      log.append(bubble);
      watch(running, bubble);
    }
    log.scrollTop = log.scrollHeight;
  })();
  await ready;
}

// History, newest PAGE messages first shown; "Earlier messages" pages back.
function showHistory(log, messages, count) {
  const cards = {};
  const shown = messages.slice(Math.max(0, messages.length - count));
  const nodes = [];
  if (shown.length < messages.length) {
    nodes.push(h("button", { class: "link", id: "earlier", onclick: () => {
      clear(log);
      showHistory(log, messages, count + PAGE);
    } }, `Earlier messages (${messages.length - shown.length})`));
  }
  for (const m of shown) {
    if (m.role === "user") nodes.push(h("div", { class: "msg user" }, m.content));
    else if (m.role === "assistant") {
      const bubble = h("div", { class: "msg assistant" }, m.content ? h("div", { class: "text" }, m.content) : null);
      for (const call of m.tool_calls || []) {
        cards[call.id] = toolCard(call);
        bubble.append(cards[call.id]);
      }
      nodes.push(bubble);
    } else if (m.role === "tool" && cards[m.tool_call_id]) {
      fillCard(cards[m.tool_call_id], m.content, m.is_error, null);
    }
  }
  log.prepend(...nodes);
}

function runBubble(runId) {
  return h("div", { class: "msg assistant live", "data-run": runId },
    h("div", { class: "meta" }, h("a", { href: `#/runs/${runId}` }, `run ${runId.slice(0, 8)}`), " ", badge("queued")));
}

function toolCard(call) {
  return h("details", { class: "tool", "data-call": call.id, open: true },
    h("summary", {}, h("span", { class: "tool-name" }, call.name), h("span", { class: "tool-state" }, "running")),
    h("pre", { class: "args" }, JSON.stringify(call.arguments ?? {}, null, 2)),
    h("pre", { class: "output" }));
}

function fillCard(card, output, isError, durationMs) {
  card.classList.add(isError ? "error" : "ok");
  card.querySelector(".tool-state").textContent = `${isError ? "error" : "done"}${durationMs === null ? "" : ` · ${durationMs} ms`}`;
  card.querySelector(".output").textContent = output;
}

// Apply one run event to the run's bubble.
function show(bubble, ev, replyUrl) {
  const meta = bubble.querySelector(".meta");
  const last = bubble.lastElementChild;
  switch (ev.type) {
    case "start":
      meta.querySelector(".badge").replaceWith(badge("running"));
      break;
    case "text_start":
      bubble.append(h("div", { class: "text" }));
      break;
    case "chunk":
      (last?.classList.contains("text") ? last : bubble.appendChild(h("div", { class: "text" }))).append(ev.content);
      break;
    case "thinking":
      (last?.classList.contains("thinking") ? last.querySelector("div") : bubble.appendChild(
        h("details", { class: "thinking" }, h("summary", {}, "thinking"), h("div"))).querySelector("div")).append(ev.content);
      break;
    case "restart":
      // The step runs again from its start (its worker was lost, or its LLM call failed):
      // its text and thinking so far are void. They are the bubble's last elements, since
      // nothing else is shown between a step's output and its restart.
      while (bubble.lastElementChild?.matches(".text, .thinking")) bubble.lastElementChild.remove();
      break;
    case "tool_start":
      for (const call of ev.calls) bubble.append(toolCard(call));
      break;
    case "tool_result": {
      const card = bubble.querySelector(`.tool[data-call="${CSS.escape(ev.call_id)}"]`);
      if (card) fillCard(card, ev.output, ev.is_error, ev.duration_ms);
      break;
    }
    case "ask_user":
      meta.querySelector(".badge").replaceWith(badge("waiting"));
      bubble.append(question(ev, replyUrl, meta));
      break;
    case "user_steered":
      bubble.append(h("div", { class: "steered" }, `steered: ${ev.content}`));
      break;
    case "compacted":
      bubble.append(h("div", { class: "steered" }, `compacted ${ev.archived} messages: ${ev.content}`));
      break;
    case "end":
      meta.querySelector(".badge").replaceWith(badge(ev.status));
      bubble.classList.remove("live");
      meta.append(` ${ev.model || ""} · ${ev.usage.input_tokens} in / ${ev.usage.output_tokens} out`);
      if (ev.error) bubble.append(note(ev.error));
      break;
  }
  const log = bubble.parentElement;
  if (log) log.scrollTop = log.scrollHeight;
}

// An ask_user question or approval, answered inline: an option's label, or free text.
function question(ev, replyUrl, meta) {
  const form = h("form", { class: "ask", "data-call": ev.call_id || "" });
  const answer = async (content) => {
    // The badge this question set: the run's events may replace it (its end, another question)
    // before the reply's answer comes back, and then it is not ours to change.
    const waiting = meta.querySelector(".badge");
    try {
      await api("POST", replyUrl, { content, ...(ev.call_id ? { call_id: ev.call_id } : {}) });
      form.replaceChildren(h("p", { class: "answered" }, `answered: ${content}`));
      if (waiting.isConnected) waiting.replaceWith(badge("running"));
    } catch (e) {
      form.append(note(e.message));
    }
  };
  for (const q of ev.questions) {
    form.append(h("p", { class: "q" }, q.header ? h("strong", {}, `${q.header}: `) : null, q.question),
      h("div", { class: "options" }, (q.options || []).map((o) =>
        h("button", { type: "button", title: o.description || "", onclick: () => answer(o.label) }, o.label))));
  }
  const text = h("input", { name: "answer", placeholder: "or type an answer", "aria-label": "answer" });
  form.append(h("div", { class: "inline" }, text, h("button", { type: "submit" }, "Answer")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (text.value.trim()) answer(text.value.trim());
  });
  return form;
}
