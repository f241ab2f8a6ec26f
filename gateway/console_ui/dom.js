// A tiny DOM builder: h("div", {class: "x", onclick: f}, "text", child). Text is always set
// as text (never parsed as HTML), so nothing the API returns can inject markup.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "value") el.value = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function time(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  return d.toLocaleString(undefined, { hour12: false });
}

export function badge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

// A message under a form or a list: the API's error text, or a note.
export function note(text, kind = "error") {
  return h("p", { class: `note ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// The chat page of a conversation (or run): #/chat/agent/sender, and /tenant for a named
// tenant's (an admin token sees every tenant's conversations).
export const chatLink = (c) =>
  `#/chat/${encodeURIComponent(c.agent)}/${encodeURIComponent(c.sender)}${c.tenant ? `/${encodeURIComponent(c.tenant)}` : ""}`;
