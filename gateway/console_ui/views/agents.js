// Agents: the list, one agent's detail, and the create / edit form (its 422s shown by field).
import { api, get } from "../api.js";
import { chatLink, h, note } from "../dom.js";

// Which field a 422 message is about: the words the API's messages use for each.
const HINTS = {
  name: /\bname\b/, model: /\b(model|provider)\b/, description: /\bdescription\b/,
  system_prompt: /\bsystem_prompt\b/, tools: /\btools?\b/, members: /\bmembers?\b/, skills: /\bskills?\b/,
};

const FIELDS = [
  ["name", "Name", "text"],
  ["model", "Model", "text"],
  ["description", "Description", "text"],
  ["system_prompt", "System prompt", "textarea"],
  ["tools", "Tools (comma separated)", "list"],
  ["members", "Members (comma separated)", "list"],
  ["skills", "Skills (comma separated)", "list"],
];

export async function render(main, [name], signal) {
  if (name === "new") return form(main, null);
  if (name) return detail(main, name, signal);
  const { agents } = await get("/v1/agents", signal);
  main.append(
    h("div", { class: "bar" }, h("h1", {}, "Agents"), h("a", { class: "button", href: "#/agents/new" }, "New agent")),
    h("table", { class: "list", id: "agents" },
      h("thead", {}, h("tr", {}, h("th", {}, "name"), h("th", {}, "model"), h("th", { class: "wide" }, "description"), h("th", {}, "tools"))),
      h("tbody", {}, agents.map((a) =>
        h("tr", {},
          h("td", {}, h("a", { href: `#/agents/${encodeURIComponent(a.name)}` }, a.name)),
          h("td", {}, a.model),
          h("td", { class: "wide" }, a.description),
          h("td", {}, a.tools.join(", ")))))),
  );
}

async function detail(main, name, signal) {
  const a = await get(`/v1/agents/${encodeURIComponent(name)}`, signal);
  const { conversations } = await get(`/v1/conversations?agent=${encodeURIComponent(name)}`, signal);
  const status = h("div");
  main.append(
    h("div", { class: "bar" }, h("h1", {}, a.name),
      h("a", { class: "button", href: `#/chat/${encodeURIComponent(name)}/console` }, "Chat"),
      h("button", { onclick: () => edit(main, a) }, "Edit"),
      h("button", { class: "danger", onclick: async () => {
        if (!confirm(`Delete agent ${name}? Its conversations are kept.`)) return;
        try {
          await api("DELETE", `/v1/agents/${encodeURIComponent(name)}`);
          location.hash = "#/agents";
        } catch (e) {
          status.replaceChildren(note(e.message));
        }
      } }, "Delete")),
    status,
    h("dl", { class: "facts" },
      h("dt", {}, "model"), h("dd", {}, a.model),
      h("dt", {}, "description"), h("dd", {}, a.description || "—"),
      h("dt", {}, "tools"), h("dd", {}, a.tools.join(", ") || "—"),
      h("dt", {}, "members"), h("dd", {}, a.members.join(", ") || "—")),
    h("h2", {}, "Conversations"),
    h("ul", { class: "plain" }, conversations.map((c) =>
      h("li", {}, h("a", { href: chatLink(c) }, c.tenant ? `${c.sender} (${c.tenant})` : c.sender)))),
  );
}

function edit(main, agent) {
  main.replaceChildren();
  form(main, agent);
}

// The form PUTs (or POSTs) the fields it shows: PUT replaces the whole config, as the API says.
function form(main, agent) {
  const inputs = {};
  const errors = {};
  const general = h("div");
  const rows = FIELDS.filter(([key]) => !(agent && key === "name")).map(([key, label, kind]) => {
    const value = agent ? (Array.isArray(agent[key]) ? agent[key].join(", ") : agent[key] ?? "") : key === "model" ? "mock" : "";
    inputs[key] = kind === "textarea" ? h("textarea", { name: key, rows: 4 }, value) : h("input", { name: key, value });
    errors[key] = h("span", { class: "field-error", "data-field": key });
    return h("label", {}, label, inputs[key], errors[key]);
  });
  const save = async (event) => {
    event.preventDefault();
    for (const span of Object.values(errors)) span.textContent = "";
    general.replaceChildren();
    const body = {};
    for (const [key, , kind] of FIELDS) {
      if (!inputs[key]) continue;
      const raw = inputs[key].value.trim();
      if (kind === "list") body[key] = raw ? raw.split(",").map((s) => s.trim()).filter(Boolean) : [];
      else if (raw) body[key] = raw;
    }
    try {
      const saved = agent
        ? await api("PUT", `/v1/agents/${encodeURIComponent(agent.name)}`, body)
        : await api("POST", "/v1/agents", body);
      location.hash = `#/agents/${encodeURIComponent(saved.name)}`;
    } catch (e) {
      const field = FIELDS.map(([key]) => key).find((key) => errors[key] && HINTS[key].test(e.message));
      (field ? errors[field] : general).append(field ? e.message : note(e.message));
    }
  };
  main.append(
    h("h1", {}, agent ? `Edit ${agent.name}` : "New agent"),
    agent ? note("Saving replaces the whole agent config: fields not shown here take their defaults.", "info") : null,
    h("form", { class: "stack", id: "agent-form", onsubmit: save }, rows, general, h("button", { type: "submit" }, "Save")),
  );
}
