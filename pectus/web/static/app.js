// The application shell: a tiny router over the history API, the connection banner, the health
// banner, sign-in and the user name. Pages: `/` dashboard, `/units/<id>` unit page, `/runs/<id>` recent run page;
// `/auth-callback` is where the sign-in provider sends the browser back (see auth.js).
//
// A page module exports mount(root, params) -> {unmount(), canLeave?()}. canLeave() false
// means the page holds unsaved work: the router asks before leaving it.
//
// With sign-in on, no page is shown before the user is signed in: the shell signs in first.

import {
  clear, confirmDialog, downloadExport, h, live, missingRolesMessage, setUserName, toast, userName,
} from "./api.js";
import {
  CALLBACK_PATH, authEnabled, authEvents, completeSignIn, loadSettings, signIn, signOut, signedIn, signedInUser,
} from "./auth.js";
import {mountBell} from "./bell.js";
import * as dashboard from "./dashboard.js";
import {mountNotifications} from "./notify.js";
import * as run from "./run.js";
import * as unit from "./unit.js";

const ROUTES = [
  {pattern: /^\/$/, page: dashboard},
  {pattern: /^\/units\/([^/]+)\/?$/, page: unit},
  {pattern: /^\/runs\/([^/]+)\/?$/, page: run},
];

const root = document.getElementById("page");
const accessBanner = document.getElementById("access-banner");
let current = null; // {path, view}
const notifications = mountNotifications(); // every page: the units it follows; the dashboard: all of them
let leaving = false; // the user chose to leave the site (sign out): no second question

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
  root.hidden = false;
  accessBanner.hidden = true;
  clear(document.getElementById("breadcrumb"));
  const found = match(path);
  notifications.showEveryUnit(Boolean(found) && found.page === dashboard);
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
  if (!leaving && current && current.view && current.view.canLeave && !current.view.canLeave()) {
    event.preventDefault();
    event.returnValue = "";
  }
});

// Same-origin links to pages go through the router; API downloads and files do not.
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest("a[href]");
  if (!link) return;
  const url = new URL(link.href, location.href);
  const exported = /^\/api\/runs\/[^/]+\/(csv|events\.jsonl)$/.test(url.pathname) && !url.searchParams.has("ticket");
  if (url.origin === location.origin && exported && authEnabled()) {
    // A plain link carries no X-Identity header: it gets a one-time ticket instead.
    event.preventDefault();
    downloadExport(url.pathname).catch((error) => toast(error.message, "error"));
    return;
  }
  if (link.target || link.hasAttribute("download")) return;
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

// -- the record's health: a red banner while /health says the store fails or its chain is broken --

const HEALTH_POLL_MS = 30_000;
const HEALTH_TROUBLE = {
  failing: ["The event store cannot write.",
    "New events and your actions are not being recorded until this is fixed: tell the aggregator's operators."],
  broken: ["The record failed its integrity check.",
    "The stored record may have been tampered with: it is shown as it is, but tell the aggregator's operators " +
    "so that they verify it."],
};
const healthBanner = h("div.health-banner", {"data-testid": "health-banner", role: "alert", hidden: true});
root.before(healthBanner);

async function checkHealth() {
  let report;
  try {
    report = await (await fetch("/health", {cache: "no-store"})).json();
  } catch {
    return; // the aggregator cannot be reached: the connection banner tells that
  }
  const trouble = HEALTH_TROUBLE[report.status];
  healthBanner.hidden = !trouble;
  if (trouble) {
    clear(healthBanner, h("strong", trouble[0]), " ", trouble[1], " ", h("span.health-problem", report.problem || ""));
  }
}

live.addEventListener("state", () => { if (live.state === "live") checkHealth(); });

// -- who the user is: the signed-in user, or (sign-in off) the name typed in -------------------

const nameField = document.getElementById("user-name-field");
const nameInput = document.getElementById("user-name");
const signedInBox = document.getElementById("signed-in");
nameInput.value = userName();
nameInput.addEventListener("change", () => {
  setUserName(nameInput.value.trim());
  live.announce(); // the others on the same unit page see the new name
  toast(nameInput.value.trim() ? `Your actions are recorded as ${nameInput.value.trim()}.` : "Your actions are recorded as Anonymous.");
});

function renderUser() {
  const user = authEnabled() ? signedInUser() : null;
  nameField.hidden = authEnabled();
  signedInBox.hidden = !user;
  clear(document.getElementById("signed-in-name"), user ? user.name : "");
}

authEvents.addEventListener("change", renderUser);
document.getElementById("sign-out").addEventListener("click", async () => {
  if (!(await mayLeave())) return;
  leaving = true;
  signOut();
});

// A unit or run the user may not see (403): say which roles would do instead of the page, which
// is all about that unit or run and so would show nothing but controls that cannot work.
window.addEventListener("pectus:missing-roles", (event) => {
  clear(accessBanner, h("strong", "Access denied. "), missingRolesMessage(event.detail), " ",
    h("a", {href: "/"}, "Back to the dashboard"));
  accessBanner.hidden = false;
  root.hidden = true;
});

function signInFailed(error) {
  console.error("sign-in failed", error);
  clear(root, h("section.sign-in-failed", {"data-testid": "sign-in-failed"},
    h("h1", "Sign-in failed"),
    h("p", error.message || String(error)),
    h("button.primary", {type: "button", "data-testid": "sign-in-again", onclick: () => signIn("/").catch(signInFailed)},
      "Sign in again")));
}

async function start() {
  await loadSettings((error) => console.warn("the aggregator's sign-in settings cannot be read yet", error));
  renderUser();
  if (authEnabled() && location.pathname === CALLBACK_PATH) {
    history.replaceState(null, "", await completeSignIn()); // the code in the address is used up
  }
  if (authEnabled() && !signedIn()) {
    clear(root, h("p.signing-in", {role: "status"}, "Signing in…"));
    await signIn(); // leaves the page for the provider's
    return;
  }
  live.start();
  mountBell(nameField); // Web Push for this browser, once signed in
  show(location.pathname);
  checkHealth();
  setInterval(checkHealth, HEALTH_POLL_MS);
}

start().catch(signInFailed);
