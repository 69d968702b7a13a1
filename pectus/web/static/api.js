// The aggregator's API as the pages use it: REST calls, the live WebSocket, and the small
// helpers every page shares (DOM building, formatting, toasts, confirmation dialog).
//
// Live data: one WebSocket (/api/ws). A page "watches" some units: the client subscribes to
// them, waits for the {"subscribed": [...]} acknowledgement, then asks the page to refetch
// over REST (resync). Deltas (each frame an array of them) that arrive while a page refetches
// are held back and replayed after its snapshot, so none is lost or applied out of order. A
// browser that lags gets fewer deltas, not a backlog: the newest of each view, changes merged by
// key, which the pages merge by key as they do every delta. When the socket drops the
// client reconnects with back-off and every page resyncs again.
//
// Sign-in (auth.js): when it is on, every request carries the ID token (X-Identity) and the live
// socket's first message does ({"identity": ...}); a refused token (401, or the socket closed
// with 4401) is renewed and the request or connection tried again. When it is off, the name the
// user typed is sent as X-Pectus-User, as before.

import {authEnabled, authEvents, currentToken, identityToken, renewRefused, signedInUser} from "./auth.js";

// -- REST --------------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message, field, missingRoles = null) {
    super(message);
    this.status = status;
    this.field = field;
    this.missingRoles = missingRoles; // a 403: the roles any one of which would give access
  }
}

const USER_KEY = "pectus.user";
const WS_SIGN_IN_EXPIRED = 4401; // the aggregator's close code: the socket's ID token ran out

/** Who the user's actions are recorded as: the signed-in user's name, else the name typed in. */
export function userName() {
  if (authEnabled()) return (signedInUser() || {}).name || "";
  return localStorage.getItem(USER_KEY) || "";
}

export function setUserName(name) {
  if (name) localStorage.setItem(USER_KEY, name);
  else localStorage.removeItem(USER_KEY);
}

function headers(json, token) {
  const result = {Accept: "application/json"};
  if (json) result["Content-Type"] = "application/json";
  if (token) {
    result["X-Identity"] = token;
  } else if (!authEnabled()) {
    const name = userName();
    if (name) result["X-Pectus-User"] = name;
  }
  return result;
}

/** The message for a refusal for want of a role; pages and the banner show it as is. */
export function missingRolesMessage(roles) {
  return `You are missing one of these roles: ${roles.join(", ")}.`;
}

/** Tell the application shell (which shows a banner) that the user lacks one of `roles`. */
function reportMissingRoles(roles) {
  window.dispatchEvent(new CustomEvent("pectus:missing-roles", {detail: roles}));
}

async function answer(response, path) {
  let body = null;
  const text = await response.text();
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    const error = body && body.error;
    const roles = error && Array.isArray(error.missing_roles) && error.missing_roles.length ? error.missing_roles : null;
    if (response.status === 403 && roles) {
      reportMissingRoles(roles);
      throw new ApiError(403, missingRolesMessage(roles), error.field, roles);
    }
    throw new ApiError(response.status, (error && error.message) || `${response.status} ${response.statusText} (${path})`,
      error && error.field);
  }
  return body;
}

/**
 * fetch() with the user's credentials. With sign-in on, a 401 is answered by renewing the token
 * (or signing in again) and trying once more; a second 401 is the caller's to handle.
 */
async function send(path, {method, json = false, body}) {
  let token = authEnabled() ? await identityToken() : null;
  for (let attempt = 0; ; attempt += 1) {
    let response;
    try {
      response = await fetch(path, {method, headers: headers(json, token), body, cache: "no-store"});
    } catch (error) {
      throw new ApiError(0, `The aggregator cannot be reached (${path}).`);
    }
    if (response.status !== 401 || !token || attempt > 0) return response;
    token = await renewRefused(token);
  }
}

async function call(method, path, body) {
  // Every request that acts is sent as JSON, with a body or not: the aggregator refuses any other
  // (415), as a page of another site could send it.
  const json = body !== undefined || method !== "GET";
  return answer(await send(path, {method, json, body: body !== undefined ? JSON.stringify(body) : undefined}), path);
}

/**
 * Start a download of one of a run's exports (`path` ends in /csv or /events.jsonl). A link cannot
 * carry the sign-in header, so with sign-in on the page first asks for a one-time ticket and the
 * browser then saves the file as it streams, through a link that holds the ticket.
 */
export async function downloadExport(path) {
  const [base, exported] = [path.slice(0, path.lastIndexOf("/")), path.slice(path.lastIndexOf("/") + 1)];
  const {url} = await call("POST", `${base}/download_ticket`, {export: exported});
  const link = h("a", {href: url, download: "", hidden: true});
  document.body.append(link);
  link.click();
  link.remove();
}

export const api = {
  get: (path) => call("GET", path),
  post: (path, body) => call("POST", path, body),
  /** A GET whose answer is not JSON (e.g. an SVG), as text; a refusal throws as get() does. */
  text: async (path) => {
    const response = await send(path, {method: "GET"});
    return response.ok ? response.text() : answer(response, path);
  },
  unit: (id) => `/api/process_units/${encodeURIComponent(id)}`,
  run: (id) => `/api/runs/${encodeURIComponent(id)}`,
};

// -- the live WebSocket --------------------------------------------------------------------------

const BACKOFF = [500, 1000, 2000, 4000, 8000, 15000]; // ms, then the last one again

export class LiveClient extends EventTarget {
  constructor(url) {
    super();
    this.url = url || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/ws`;
    this.socket = null;
    this.state = "connecting"; // connecting | live | offline
    this.attempt = 0;
    this.retryAt = 0;
    this.watchers = new Set();
    this.subscribed = new Set();
    this.acks = []; // resolvers of the pending (un)subscribe requests, in order
    this.timer = null;
    this.identity = null; // the ID token the open socket signed in with (sign-in on)
    this.here = null; // the unit whose page is shown: the others there see this browser (presence)
    // A renewed token is sent on the open socket, so it is not closed when the old one runs out.
    authEvents.addEventListener("change", () => this.renewIdentity());
  }

  start() {
    if (!this.socket && !this.timer) this.connect();
  }

  connect() {
    this.timer = null;
    this.setState("connecting");
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => this.opened(socket));
    socket.addEventListener("message", (event) => this.received(socket, event.data));
    socket.addEventListener("close", (event) => this.closed(socket, event.code));
    socket.addEventListener("error", () => {
      /* a close event follows */
    });
  }

  async opened(socket) {
    this.subscribed = new Set();
    const units = this.wantedUnits();
    const message = {subscribe: [...units]};
    if (authEnabled()) {
      // The first message signs in: browsers cannot set headers on a WebSocket.
      message.identity = await identityToken();
      if (socket !== this.socket) return;
      this.identity = message.identity;
    }
    const presence = this.presence();
    const reply = await this.request({...message, ...presence});
    if (socket !== this.socket) return;
    if (reply && reply.error && authEnabled() && reply.error.status !== 403) {
      this.abandon(socket);
      if (reply.error.status === 401) this.reconnectSignedIn(this.identity); // the token was refused
      else this.scheduleReconnect(); // the sign-in cannot be checked now (503): an outage
      return;
    }
    // A refused subscription (a unit the user may not see) follows nothing; the page shows why.
    if (reply && Array.isArray(reply.subscribed)) reply.subscribed.forEach((unit) => this.subscribed.add(unit));
    else if (!(reply && reply.error)) units.forEach((unit) => this.subscribed.add(unit));
    this.attempt = 0;
    this.setState("live");
    if (JSON.stringify(this.presence()) !== JSON.stringify(presence)) this.announce(); // changed meanwhile
    for (const watcher of this.watchers) this.resync(watcher);
  }

  closed(socket, code) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.acks.splice(0).forEach((resolve) => resolve(null));
    if (code === WS_SIGN_IN_EXPIRED && authEnabled()) this.reconnectSignedIn(this.identity);
    else this.scheduleReconnect();
  }

  /** Stop using `socket` (its close event is then ignored) and close it. */
  abandon(socket) {
    this.socket = null;
    this.acks.splice(0).forEach((resolve) => resolve(null));
    socket.close(1000, "reconnecting");
  }

  /**
   * Connect again with a token other than `refused`. A token that ran out is not an outage: the
   * first time, connect at once and raise no alarm; when fresh tokens keep being refused, back off.
   */
  async reconnectSignedIn(refused) {
    this.setState("connecting");
    try {
      await renewRefused(refused);
    } catch (error) {
      console.warn("signing in again failed", error);
    }
    if (this.socket || this.timer) return;
    if (this.attempt === 0) {
      this.attempt = 1;
      this.connect();
    } else {
      this.scheduleReconnect();
    }
  }

  /** This browser shows `unit`'s page (null: no unit's page); the others there are told. */
  setHere(unit) {
    this.here = unit;
    this.announce();
  }

  /** Tell the aggregator where this browser is and its user's name (again after a change). */
  announce() {
    if (this.state === "live") this.request(this.presence());
  }

  presence() {
    return {here: this.here, name: userName()};
  }

  /** Send a renewed ID token on the open socket; the server answers as to any request. */
  async renewIdentity() {
    const token = currentToken(); // null when signed out: nothing to send then
    if (!authEnabled() || !token || token === this.identity || this.state !== "live") return;
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    this.identity = token;
    const reply = await this.request({identity: token});
    if (reply && reply.error) console.warn("live socket refused the renewed sign-in:", reply.error.message);
  }

  scheduleReconnect() {
    const delay = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)] * (0.8 + Math.random() * 0.4);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.setState("offline");
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Reconnect now (the banner's "Retry now" button). */
  retryNow() {
    if (this.state !== "offline") return;
    clearTimeout(this.timer);
    this.connect();
  }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", {detail: state}));
  }

  request(message) {
    return new Promise((resolve) => {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
        resolve(null);
        return;
      }
      this.acks.push(resolve);
      this.socket.send(JSON.stringify(message));
    });
  }

  received(socket, raw) {
    if (socket !== this.socket) return;
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (Array.isArray(message)) {
      message.forEach((delta) => this.dispatch(delta)); // a frame of deltas, in order
      return;
    }
    if ("subscribed" in message || "error" in message) {
      const resolve = this.acks.shift();
      if (resolve) resolve(message);
      if (message.error) console.warn("live socket:", message.error.message);
      const roles = message.error && message.error.missing_roles;
      if (Array.isArray(roles) && roles.length) reportMissingRoles(roles);
      // A new identity on the socket (another user, or fewer roles) may not see some units: the
      // server stopped sending them ({unit: roles that would give access}); the page says why.
      if (message.dropped) {
        Object.keys(message.dropped).forEach((unit) => this.subscribed.delete(unit));
        reportMissingRoles([...new Set(Object.values(message.dropped).flat())]);
      }
      return;
    }
  }

  /** One delta {unit, topic, data}: to the watchers that follow its unit or the global topics. */
  dispatch(message) {
    if (!message || typeof message.topic !== "string") return;
    if (message.topic === "notification") { // for whoever shows them (notify.js), not for a page's views
      this.dispatchEvent(new CustomEvent("notification", {detail: message.data}));
      return;
    }
    for (const watcher of this.watchers) {
      const global = message.topic === "units" || message.topic === "runs";
      const wanted = (watcher.globals && global) || (message.unit != null && watcher.units.has(message.unit));
      if (!wanted) continue;
      if (watcher.held) watcher.held.push(message);
      else deliver(watcher, message);
    }
  }

  wantedUnits() {
    const units = new Set();
    for (const watcher of this.watchers) watcher.units.forEach((unit) => units.add(unit));
    return units;
  }

  /**
   * Follow `units` (and, with `globals`, the unit and run lists). `resync()` is called (and
   * awaited) after every (re)connection: refetch everything over REST there. `delta(message)`
   * gets each {unit, topic, data} after the resync that preceded it. Returns `stop()`.
   */
  watch({units = [], globals = false, resync, delta}) {
    const watcher = {units: new Set(units), globals, resync, delta, held: null};
    this.watchers.add(watcher);
    this.start();
    if (this.state === "live") {
      const fresh = [...watcher.units].filter((unit) => !this.subscribed.has(unit));
      watcher.held = [];
      (async () => {
        if (fresh.length) {
          const reply = await this.request({subscribe: fresh});
          if (!(reply && reply.error)) fresh.forEach((unit) => this.subscribed.add(unit));
        }
        await this.resync(watcher);
      })();
    }
    return () => {
      this.watchers.delete(watcher);
      const remaining = this.wantedUnits();
      const gone = [...this.subscribed].filter((unit) => !remaining.has(unit));
      if (gone.length && this.state === "live") {
        gone.forEach((unit) => this.subscribed.delete(unit));
        this.request({unsubscribe: gone});
      }
    };
  }

  async resync(watcher) {
    if (!this.watchers.has(watcher)) return;
    watcher.held = watcher.held || [];
    try {
      await watcher.resync();
    } catch (error) {
      console.error("refetch failed", error);
      // A missing role has its own banner (app.js); a lost connection its own too.
      if (error instanceof ApiError && error.status !== 0 && !error.missingRoles) toast(error.message, "error");
    } finally {
      const held = watcher.held || [];
      watcher.held = null;
      for (const message of held) deliver(watcher, message);
    }
  }
}

function deliver(watcher, message) {
  try {
    watcher.delta(message);
  } catch (error) {
    console.error("applying a live change failed", message, error);
  }
}

export const live = new LiveClient();

// -- DOM helpers ---------------------------------------------------------------------------------

/**
 * h("button.primary#save", {type: "button", onclick}, "Save") -> element. Attributes: `class`,
 * `dataset`, `on<event>` handlers, `hidden`/`disabled`/... booleans, others as attributes.
 */
export function h(tag, attributes, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const element = document.createElement(name || "div");
  for (const part of rest) {
    if (part[0] === ".") element.classList.add(part.slice(1));
    else element.id = part.slice(1);
  }
  if (attributes && (typeof attributes !== "object" || attributes instanceof Node || Array.isArray(attributes))) {
    children.unshift(attributes);
    attributes = null;
  }
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = [element.className, value].filter(Boolean).join(" ");
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key === "text") element.textContent = value;
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A collapsible panel whose open state is kept per page path. */
export function panel(id, title, body, {open = true, actions = null, className = ""} = {}) {
  const key = `pectus.panel:${location.pathname}:${id}`;
  const stored = localStorage.getItem(key);
  const details = h(`details.panel#${id}`, {class: className, open: stored === null ? open : stored === "1"},
    h("summary", h("h2", title)),
    actions ? h("div.panel-actions", actions) : null,
    h("div.panel-body", body));
  details.addEventListener("toggle", () => localStorage.setItem(key, details.open ? "1" : "0"));
  return details;
}

// -- formatting ------------------------------------------------------------------------------------

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** ISO time (or epoch seconds) -> "2025-01-09 21:15:02" in the browser's time zone. */
export function formatDate(time, {millis = false} = {}) {
  const date = toDate(time);
  if (!date) return "";
  const text = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return millis ? `${text}.${pad(date.getMilliseconds(), 3)}` : text;
}

export function formatTime(time) {
  const date = toDate(time);
  if (!date) return "";
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function toDate(time) {
  if (time === null || time === undefined || time === "") return null;
  const date = typeof time === "number" ? new Date(time * 1000) : new Date(time);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** ISO time or epoch seconds -> epoch seconds (null when absent). */
export function toSeconds(time) {
  if (time === null || time === undefined || time === "") return null;
  if (typeof time === "number") return time;
  const ms = Date.parse(time);
  return Number.isNaN(ms) ? null : ms / 1000;
}

/** Seconds -> "1:02:03" (or "2:03" under an hour). */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "";
  const total = Math.max(0, Math.floor(Number(seconds)));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  return hours ? `${hours}:${pad(minutes)}:${pad(secs)}` : `${minutes}:${pad(secs)}`;
}

export function formatNumber(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return String(value);
  const magnitude = Math.abs(value);
  const digits = magnitude >= 100 ? 1 : magnitude >= 1 ? 2 : 3;
  return value.toFixed(digits);
}

/** A process value as text: numbers rounded, durations as a clock, nothing as an em dash. */
export function formatValue(value, unit, name = "") {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "number" && unit === "s" && / Time$/.test(name)) return formatDuration(value);
  if (typeof value === "number") return formatNumber(value);
  if (typeof value === "boolean") return value ? "true" : "false";
  return String(value);
}

// State icons are inline SVG, not characters: a glyph such as U+23F8 (pause) is missing from
// common Linux fonts and would show as an empty box.
const svgIcon = (body) => `<svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true" focusable="false" ` +
  `fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round">${body}</svg>`;
export const UNIT_STATES = {
  ready: {label: "Ready", icon: svgIcon('<path d="M3 8.5l3.2 3.2L13 4.8"/>')},
  running: {label: "Running", icon: svgIcon('<path d="M5 3l8 5-8 5z" fill="currentColor"/>')},
  paused: {label: "Paused", icon: svgIcon('<path d="M5.5 3.5v9M10.5 3.5v9" stroke-width="2.6"/>')},
  holding: {label: "On hold", icon: svgIcon('<path d="M5 8V4.6a1 1 0 0 1 2 0V8M7 7.5V3.3a1 1 0 0 1 2 0V7.5M9 7.5V4.3a1 1 0 0 1 2 0' +
    'V8.5M11 8V6a1 1 0 0 1 2 0v3.5A4.5 4.5 0 0 1 8.5 14H8a4 4 0 0 1-3.2-1.6L3 10a1 1 0 0 1 1.6-1.2L5 9.3V8"/>')},
  error: {label: "Interrupted by error", icon: svgIcon('<path d="M8 2L14.5 13.5h-13z"/><path d="M8 6.5v3M8 11.6v.1"/>')},
  offline: {label: "Offline", icon: svgIcon('<circle cx="8" cy="8" r="5.5"/><path d="M4.2 11.8l7.6-7.6"/>')},
};
const UNKNOWN_ICON = svgIcon('<circle cx="8" cy="8" r="5.5"/><path d="M8 11.5v.1"/><path d="M6.3 6.4a1.8 1.8 0 1 1 2.4 1.7c-.5.2-.7.6-.7 1.1"/>');

export function stateBadge(state) {
  const known = UNIT_STATES[state] || {label: state || "Unknown", icon: UNKNOWN_ICON};
  const icon = h("span.state-icon", {"aria-hidden": "true"});
  icon.innerHTML = known.icon; // a constant of this module, never data
  return h("span.state-badge", {class: `state-${state || "unknown"}`, "data-testid": "unit-state", "data-state": state},
    icon, " ", known.label);
}

// -- toasts and confirmations ----------------------------------------------------------------

/** A short message in the toast region (errors stay until dismissed or 30 s). */
export function toast(message, kind = "info") {
  const region = document.getElementById("toasts");
  if (!region) return;
  const item = h("div.toast", {class: `toast-${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": "toast"},
    h("span", message),
    h("button.icon-button", {type: "button", "aria-label": "Dismiss", onclick: () => item.remove()}, "×"));
  region.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 30000 : 6000);
}

/**
 * Ask before doing something that cannot be undone: a modal dialog (Escape cancels).
 * Resolves true when confirmed. Buttons: data-testid confirm-ok / confirm-cancel.
 */
export function confirmDialog(title, message, {ok = "OK", danger = false} = {}) {
  return new Promise((resolve) => {
    const okButton = h("button", {type: "submit", value: "ok", class: danger ? "danger" : "primary",
      "data-testid": "confirm-ok"}, ok);
    const dialog = h("dialog.confirm", {"data-testid": "confirm-dialog", "aria-labelledby": "confirm-title"},
      h("form", {method: "dialog"},
        h("h2#confirm-title", title),
        h("p", message),
        h("div.dialog-buttons",
          h("button", {type: "submit", value: "cancel", "data-testid": "confirm-cancel"}, "Cancel"),
          okButton)));
    document.body.append(dialog);
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    dialog.showModal();
    okButton.focus();
  });
}

/** Save `text` (or a Blob) as a file download. */
export function download(filename, content, type = "application/json") {
  const blob = content instanceof Blob ? content : new Blob([content], {type});
  const url = URL.createObjectURL(blob);
  const link = h("a", {href: url, download: filename, hidden: true});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
