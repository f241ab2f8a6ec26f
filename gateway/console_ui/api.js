// The gateway's /v1 API from the browser: JSON requests, SSE over fetch (so the token goes in
// a header, which EventSource cannot send), and the token prompt.
const TOKEN_KEY = "walrus.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let asking = null;

// Ask for a token once, however many requests were refused at the same time.
function askToken(refused) {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dialog = document.getElementById("token-dialog");
      const input = document.getElementById("token-input");
      document.getElementById("token-why").textContent = refused
        ? "That token was refused. Enter another; it is kept for this tab only."
        : "This gateway needs a bearer token. It is kept for this tab only.";
      input.value = "";
      dialog.addEventListener(
        "close",
        () => {
          sessionStorage.setItem(TOKEN_KEY, input.value.trim());
          asking = null;
          resolve();
        },
        { once: true },
      );
      dialog.showModal();
      input.focus();
    });
  }
  return asking;
}

function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function authorized(path, init) {
  for (;;) {
    const resp = await fetch(path, { ...init, headers: headers(init.headers) });
    if (resp.status !== 401) return resp;
    await askToken(Boolean(sessionStorage.getItem(TOKEN_KEY)));
  }
}

async function failure(resp) {
  const body = await resp.json().catch(() => null);
  const error = body && body.error ? body.error : {};
  return new ApiError(resp.status, error.code || "http", error.message || resp.statusText);
}

export async function api(method, path, body, signal) {
  const init = { method, signal, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await authorized(path, init);
  if (!resp.ok) throw await failure(resp);
  return resp.json();
}

export const get = (path, signal) => api("GET", path, undefined, signal);

function parseFrame(frame) {
  const event = { id: null, type: "message", data: "" };
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    if (field === "id") event.id = value;
    else if (field === "event") event.type = value;
    else if (field === "data") event.data += (event.data ? "\n" : "") + value;
  }
  if (!event.data) return null;
  event.data = JSON.parse(event.data);
  return event;
}

// Follow an SSE route, calling onEvent(event) for each; reconnects with Last-Event-ID after a
// drop, so no event is missed or repeated. Resolves when `until(event)` says so or on abort.
export async function follow(path, onEvent, { signal, until = () => false } = {}) {
  let last = null;
  for (let attempt = 0; attempt < 20 && !signal?.aborted; attempt++) {
    try {
      const resp = await authorized(path, {
        signal,
        headers: { Accept: "text/event-stream", ...(last ? { "Last-Event-ID": last } : {}) },
      });
      if (!resp.ok) throw await failure(resp);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseFrame(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (!event) continue;
          last = event.id || last;
          attempt = 0;
          onEvent(event);
          if (until(event)) {
            reader.cancel().catch(() => {});
            return;
          }
        }
      }
    } catch (e) {
      if (signal?.aborted || e.name === "AbortError") return;
      if (e instanceof ApiError && e.status < 500) throw e;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}
