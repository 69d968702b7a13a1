// The application shell: a tiny router over the history API, the connection banner and the
// user name. Pages: `/` dashboard, `/units/<id>` unit page, `/runs/<id>` recent run page.
//
// A page module exports mount(root, params) -> {unmount(), canLeave?()}. canLeave() false
// means the page holds unsaved work: the router asks before leaving it.

import {clear, confirmDialog, h, live, setUserName, toast, userName} from "./api.js";
import * as dashboard from "./dashboard.js";
import * as run from "./run.js";
import * as unit from "./unit.js";

const ROUTES = [
  {pattern: /^\/$/, page: dashboard},
  {pattern: /^\/units\/([^/]+)\/?$/, page: unit},
  {pattern: /^\/runs\/([^/]+)\/?$/, page: run},
];

const root = document.getElementById("page");
let current = null; // {path, view}

function match(path) {
  for (const route of ROUTES) {
    const found = route.pattern.exec(path);
    if (found) return {page: route.page, params: found.slice(1).map(decodeURIComponent)};
  }
  return null;
}

async function mayLeave() {
  if (!current || !current.view || !current.view.canLeave || current.view.canLeave()) return true;
  return confirmDialog("Leave this page?", "The method has unsaved changes. They are lost if you leave.",
    {ok: "Leave and discard", danger: true});
}

function show(path) {
  if (current && current.view && current.view.unmount) current.view.unmount();
  clear(root);
  clear(document.getElementById("breadcrumb"));
  const found = match(path);
  if (!found) {
    document.title = "Not found — Pectus";
    root.append(h("section.not-found", h("h1", "Page not found"),
      h("p", "There is no page at ", h("code", path), ". ", h("a", {href: "/"}, "Go to the dashboard"), ".")));
    current = {path, view: null};
    return;
  }
  current = {path, view: found.page.mount(root, found.params)};
  root.focus({preventScroll: true});
}

export async function navigate(path, {replace = false} = {}) {
  if (current && path === current.path) return;
  if (!(await mayLeave())) return;
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  show(location.pathname);
  window.scrollTo(0, 0);
}

window.addEventListener("popstate", async () => {
  const target = location.pathname;
  if (current && target === current.path) return;
  if (!(await mayLeave())) {
    history.pushState(null, "", current.path); // stay: undo the browser's step
    return;
  }
  show(target);
});

window.addEventListener("beforeunload", (event) => {
  if (current && current.view && current.view.canLeave && !current.view.canLeave()) {
    event.preventDefault();
    event.returnValue = "";
  }
});

// Same-origin links to pages go through the router; API downloads and files do not.
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/") || url.pathname.startsWith("/static/")) return;
  if (!match(url.pathname)) return;
  event.preventDefault();
  navigate(url.pathname);
});

// -- connection status ---------------------------------------------------------------------------

const banner = document.getElementById("connection-banner");
const status = document.getElementById("live-status");
let wasOffline = false;
let countdown = null;

function renderConnection() {
  const state = live.state;
  status.dataset.state = state;
  status.textContent = state === "live" ? "Live" : state === "offline" ? "Disconnected" : "Connecting…";
  banner.dataset.state = state;
  clearInterval(countdown);
  if (state === "live") {
    banner.hidden = true;
    if (wasOffline) toast("Connection restored: the page is up to date again.", "info");
    wasOffline = false;
    return;
  }
  if (state === "connecting" && !wasOffline) return; // the first connection: no alarm yet
  wasOffline = true;
  banner.hidden = false;
  const update = () => {
    const seconds = Math.max(0, Math.ceil((live.retryAt - Date.now()) / 1000));
    clear(banner,
      h("strong", "Connection to the aggregator lost."), " ",
      live.state === "offline"
        ? `Live values are not updating. Reconnecting in ${seconds} s… `
        : "Reconnecting… ",
      live.state === "offline"
        ? h("button", {type: "button", "data-testid": "reconnect-now", onclick: () => live.retryNow()}, "Retry now")
        : null);
  };
  update();
  if (state === "offline") countdown = setInterval(update, 1000);
}

live.addEventListener("state", renderConnection);

// -- the user's name (sent as X-Pectus-User) ----------------------------------------------------

const nameInput = document.getElementById("user-name");
nameInput.value = userName();
nameInput.addEventListener("change", () => {
  setUserName(nameInput.value.trim());
  toast(nameInput.value.trim() ? `Your actions are recorded as ${nameInput.value.trim()}.` : "Your actions are recorded as Anonymous.");
});

live.start();
show(location.pathname);
