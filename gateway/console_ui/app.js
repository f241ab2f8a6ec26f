// The console's router: #/<view>/<params...>. Each view renders into <main> and gets an
// AbortSignal that fires when the user leaves it (ending its streams and timers).
import { clear, note } from "./dom.js";
import * as agents from "./views/agents.js";
import * as chat from "./views/chat.js";
import * as crons from "./views/crons.js";
import * as feed from "./views/feed.js";
import * as runs from "./views/runs.js";
import * as usage from "./views/usage.js";
import * as workers from "./views/workers.js";

const VIEWS = { agents, chat, runs, feed, crons, workers, usage };
let leaving = null;

async function route() {
  leaving?.abort();
  const current = new AbortController();
  leaving = current;
  const [name = "agents", ...params] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const view = VIEWS[name] || agents;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === `#/${name}`);
  }
  const main = document.getElementById("main");
  clear(main);
  try {
    await view.render(main, params, current.signal);
  } catch (e) {
    if (current.signal.aborted || e.name === "AbortError") return;
    main.append(note(e.message));
  }
}

// An interval that stops when the view is left.
export function every(ms, fn, signal) {
  const id = setInterval(() => {
    fn().catch(() => {});
  }, ms);
  signal.addEventListener("abort", () => clearInterval(id));
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
