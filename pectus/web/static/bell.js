// The bell in the top bar: Web Push for this browser. Its menu turns push notifications on or
// off for this browser, chooses the topics and units they are sent for, and sends a test.
//
// A subscription is this browser's (its endpoint at its push service and its keys, made by the
// browser's PushManager with the aggregator's public key) and the user's (the signed-in user, or
// the name typed in): the aggregator keeps it, with the choices, as events (pectus.web.push).
// The service worker /sw.js shows what is pushed, also when no page of Pectus is open.
//
// On every page load the bell asks the browser for its subscription and the aggregator for the
// user's; when both know it, the page sends it again unchanged, which refreshes the roles the
// aggregator checks before pushing a unit (a new event only when something changed).
//
// Hooks (data-testid): push-bell (data-state on | off | blocked | unavailable), push-menu,
// push-status, push-topic-<topic>, push-units-all, push-units-some, push-unit-<unit id>,
// push-subscribe, push-save, push-unsubscribe, push-test, push-error.

import {api, clear, h, toast} from "./api.js";

const WORKER = "/sw.js";
const QUIET_TOPICS = new Set(["block_started"]); // off until chosen: a method may start many blocks
const SVG = "http://www.w3.org/2000/svg";

function bellIcon() {
  // Drawn, not a font glyph: Debian's fonts have no bell.
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "20");
  svg.setAttribute("height", "20");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", "M12 3a6 6 0 0 0-6 6v4l-2 3h16l-2-3V9a6 6 0 0 0-6-6zM9.5 19a2.5 2.5 0 0 0 5 0");
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "2");
  path.setAttribute("stroke-linejoin", "round");
  svg.append(path);
  return svg;
}

function supported() {
  return window.isSecureContext && "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

function bytes(base64url) {
  const text = atob(base64url.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(text, (character) => character.charCodeAt(0));
}

function sameBytes(a, b) {
  const left = new Uint8Array(a || []);
  return left.length === b.length && left.every((value, index) => value === b[index]);
}

/** The aggregator's id of a subscription: the first 32 hex digits of the SHA-256 of its endpoint. */
async function idOf(endpoint) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(endpoint));
  return [...new Uint8Array(digest)].map((value) => value.toString(16).padStart(2, "0")).join("").slice(0, 32);
}

/** Mount the bell before `before` (an element of the top bar). */
export function mountBell(before) {
  const state = {
    config: null, // GET /api/push/config
    units: [], // the units the user may see
    subscription: null, // the browser's PushSubscription
    known: null, // the aggregator's view of it (null: the aggregator does not have it)
    busy: false,
  };
  const hint = h("span.visually-hidden", "Push notifications");
  const button = h("button.bell-button", {
    type: "button", "data-testid": "push-bell", "aria-expanded": "false", "aria-controls": "push-menu",
    "data-state": "off", title: "Push notifications",
  }, bellIcon(), hint);
  const menu = h("section.bell-menu#push-menu", {"data-testid": "push-menu", "aria-labelledby": "push-menu-title",
    hidden: true});
  const wrapper = h("div.bell", button, menu);
  before.before(wrapper);

  const status = h("p.bell-status", {"data-testid": "push-status", role: "status"});
  const error = h("p.field-error", {"data-testid": "push-error", role: "alert"});
  const topicsBox = h("div.bell-choices");
  const allUnits = h("input", {type: "radio", name: "push-units", value: "all", "data-testid": "push-units-all"});
  const someUnits = h("input", {type: "radio", name: "push-units", value: "some", "data-testid": "push-units-some"});
  const unitsBox = h("div.bell-choices.bell-units");
  const actions = h("div.toolbar");
  clear(menu,
    h("h2#push-menu-title", "Push notifications"),
    status,
    h("fieldset", h("legend", "Topics"), topicsBox),
    h("fieldset", h("legend", "Units"),
      h("label.checkbox", allUnits, "All units I may see"),
      h("label.checkbox", someUnits, "Only these:"),
      unitsBox),
    actions,
    error);
  allUnits.addEventListener("change", renderUnits);
  someUnits.addEventListener("change", renderUnits);

  function chosenTopics() {
    return [...topicsBox.querySelectorAll("input:checked")].map((input) => input.value);
  }

  function chosenUnits() {
    if (allUnits.checked) return null;
    return [...unitsBox.querySelectorAll("input:checked")].map((input) => input.value);
  }

  function renderButton() {
    const permission = "Notification" in window ? Notification.permission : "denied";
    const on = Boolean(state.subscription && state.known);
    const value = !supported() ? "unavailable" : on ? "on" : permission === "denied" ? "blocked" : "off";
    button.dataset.state = value;
    hint.textContent = `Push notifications: ${{on: "on", off: "off", blocked: "blocked", unavailable: "unavailable"}[value]}`;
  }

  function renderUnits() {
    for (const input of unitsBox.querySelectorAll("input")) input.disabled = allUnits.checked;
  }

  function renderMenu() {
    renderButton();
    const on = Boolean(state.subscription && state.known);
    if (!supported()) {
      status.textContent = "This browser cannot receive push notifications here: they need a browser that supports " +
        "them and an https address (or this computer's own).";
    } else if (Notification.permission === "denied") {
      status.textContent = "Notifications are blocked for this site in the browser's settings. Allow them there, " +
        "then turn push notifications on.";
    } else if (on) {
      status.textContent = "On: this browser is told of the topics and units below, also when no Pectus page is open.";
    } else {
      status.textContent = "Off: this browser gets no push notifications. Choose what to be told of, then turn them on.";
    }
    const chosen = on ? new Set(state.known.topics) : null;
    clear(topicsBox, (state.config ? state.config.topics : []).map((topic) => h("label.checkbox",
      h("input", {type: "checkbox", value: topic.name, "data-testid": `push-topic-${topic.name}`,
        checked: chosen ? chosen.has(topic.name) : !QUIET_TOPICS.has(topic.name)}),
      topic.label)));
    const units = on ? state.known.units : null;
    allUnits.checked = units === null;
    someUnits.checked = units !== null;
    const picked = new Set(units || []);
    clear(unitsBox, state.units.length ? state.units.map((unit) => h("label.checkbox",
      h("input", {type: "checkbox", value: unit.id, "data-testid": `push-unit-${unit.id}`, checked: picked.has(unit.id)}),
      unit.name || unit.id)) : h("p.empty", "No units yet."));
    renderUnits();
    const usable = supported() && Notification.permission !== "denied";
    clear(actions, on
      ? [h("button.primary", {type: "button", "data-testid": "push-save", onclick: () => act(save)}, "Save choices"),
        h("button", {type: "button", "data-testid": "push-test", onclick: () => act(sendTest)}, "Send a test"),
        h("button.danger-outline", {type: "button", "data-testid": "push-unsubscribe", onclick: () => act(turnOff)},
          "Turn off")]
      : h("button.primary", {type: "button", "data-testid": "push-subscribe", disabled: !usable,
        onclick: () => act(turnOn)}, "Turn on for this browser"));
    for (const control of menu.querySelectorAll("input, button")) {
      if (!supported()) control.disabled = true;
    }
  }

  async function act(action) {
    if (state.busy) return;
    state.busy = true;
    error.textContent = "";
    const buttons = [...actions.querySelectorAll("button")];
    buttons.forEach((each) => each.setAttribute("aria-busy", "true"));
    try {
      await action();
    } catch (failure) {
      error.textContent = failure.message || String(failure);
    } finally {
      state.busy = false;
      buttons.forEach((each) => each.removeAttribute("aria-busy"));
    }
  }

  function choices() {
    const topics = chosenTopics();
    const units = chosenUnits();
    if (!topics.length) throw new Error("Choose at least one topic.");
    if (units !== null && !units.length) throw new Error("Choose at least one unit, or All units I may see.");
    return {topics, units};
  }

  async function record(subscription, {topics, units}) {
    const {endpoint, keys} = subscription.toJSON();
    state.known = await api.post("/api/push/subscriptions", {endpoint, keys, topics, units});
    state.subscription = subscription;
  }

  async function turnOn() {
    const wanted = choices();
    if (await Notification.requestPermission() !== "granted") {
      renderMenu();
      throw new Error("The browser did not allow notifications for this site.");
    }
    const registration = await navigator.serviceWorker.register(WORKER, {scope: "/"});
    const key = bytes(state.config.public_key);
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameBytes(subscription.options.applicationServerKey, key)) {
      await subscription.unsubscribe(); // made with another aggregator key: its pushes would be refused
      subscription = null;
    }
    subscription = subscription || await registration.pushManager.subscribe({userVisibleOnly: true,
      applicationServerKey: key});
    await record(subscription, wanted);
    renderMenu();
    toast("Push notifications are on for this browser.");
  }

  async function save() {
    await record(state.subscription, choices());
    renderMenu();
    toast("Your push notification choices are saved.");
  }

  async function turnOff() {
    const {subscription, known} = state;
    if (known) await api.post(`/api/push/subscriptions/${known.id}/unsubscribe`, {endpoint: subscription.endpoint});
    await subscription.unsubscribe();
    state.subscription = null;
    state.known = null;
    renderMenu();
    toast("Push notifications are off for this browser.");
  }

  async function sendTest() {
    const {deliveries} = await api.post("/api/push/test", {subscription: state.known.id});
    const [delivery] = deliveries;
    if (delivery.outcome === "delivered") {
      toast("Test notification sent: it appears in a moment.");
    } else if (delivery.outcome === "removed") {
      state.known = null;
      renderMenu();
      throw new Error("The push service no longer knows this browser: turn push notifications on again.");
    } else {
      throw new Error(`The test notification did not reach the push service: ${delivery.detail}`);
    }
  }

  async function load() {
    if (!supported()) return;
    const registration = await navigator.serviceWorker.getRegistration("/");
    const subscription = registration ? await registration.pushManager.getSubscription() : null;
    if (!subscription) return;
    state.subscription = subscription;
    state.config = state.config || await api.get("/api/push/config");
    if (!sameBytes(subscription.options.applicationServerKey, bytes(state.config.public_key))) {
      return; // made with a key the aggregator no longer has (replaced): off until turned on again
    }
    const id = await idOf(subscription.endpoint);
    const known = (await api.get("/api/push/subscriptions")).find((each) => each.id === id);
    if (known) await record(subscription, {topics: known.topics, units: known.units}); // refreshes the roles
  }

  async function open() {
    try {
      [state.config, state.units] = await Promise.all([
        state.config || api.get("/api/push/config"), api.get("/api/process_units")]);
    } catch (failure) {
      error.textContent = failure.message || String(failure);
    }
    renderMenu();
    menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    (menu.querySelector("input:not(:disabled), button:not(:disabled)") || menu).focus();
  }

  function close({focus = true} = {}) {
    if (menu.hidden) return;
    menu.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (focus) button.focus();
  }

  button.addEventListener("click", () => (menu.hidden ? open() : close()));
  wrapper.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !menu.hidden) {
      event.stopPropagation();
      close();
    }
  });
  document.addEventListener("click", (event) => {
    if (!wrapper.contains(event.target)) close({focus: false});
  });

  renderButton();
  load().then(renderButton, (failure) => console.warn("push notifications: the subscription cannot be read", failure));
}
