// The unit's process diagram: the UOD's SVG drawing (P&ID style), its elements bound to the live
// values of the unit's tags. The vocabulary (docs/uod.md, "Process diagram"):
//
//   data-tag="PU01"      the element stands for the tag; when the tag can be set, clicking it
//                        (or Enter / Space on it) opens the tag's editor on the page
//   data-show="value"    a <text>/<tspan> showing the value with its unit ("50 %")
//   data-show="state"    a <text>/<tspan> showing the state word ("Open", "Running", "On")
//   data-kind="valve|pump|switch"  its shapes take the state's colour and line style
//   data-on="Sample"     (with data-kind) on exactly when the value is this text
//   data-fixed           a shape inside a data-kind element that keeps its own look
//
// The state is also told without colour: off is drawn dashed, the state word can be shown, and
// every bound element has a tooltip (its <title>, also its accessible name) with the tag, its
// value and state.
//
// Safety: the aggregator sanitises the SVG before serving it. Here it is parsed with DOMParser as
// image/svg+xml and imported, never given to innerHTML; what could still run or load (scripts,
// foreignObject, event handler attributes, links to other documents) is removed once more before
// it enters the page.

import {api, clear, h} from "./api.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const STATE_WORDS = {valve: {on: "Open", off: "Closed"}, pump: {on: "Running", off: "Stopped"},
  switch: {on: "On", off: "Off"}};
const ON_WORDS = new Set(["open", "opened", "on", "running", "run", "started", "true", "yes"]);
const OFF_WORDS = new Set(["closed", "close", "off", "stopped", "stop", "false", "no", "n/a"]);
const REMOVE = "script, foreignObject, iframe, object, embed, image, a, style, animate, set, animateMotion, animateTransform, feImage";

/** "on", "off" or "unknown" for a tag's value; with `on`, on exactly when the value is that text. */
export function stateOf(value, on = undefined) {
  if (value === null || value === undefined || value === "") return "unknown";
  if (on !== undefined) return String(value) === on ? "on" : "off";
  if (typeof value === "boolean") return value ? "on" : "off";
  const number = typeof value === "number" ? value : Number(String(value).trim());
  if (Number.isFinite(number) && String(value).trim() !== "") return number > 0 ? "on" : "off";
  const word = String(value).trim().toLowerCase();
  return ON_WORDS.has(word) ? "on" : OFF_WORDS.has(word) ? "off" : "unknown";
}

/** Remove from a parsed SVG whatever could run code or load another document. */
function disarm(root) {
  for (const element of [...root.querySelectorAll(REMOVE)]) element.remove();
  for (const element of [root, ...root.querySelectorAll("*")]) {
    if (element.namespaceURI !== SVG_NS) {
      element.remove();
      continue;
    }
    for (const attribute of [...element.attributes]) {
      const name = attribute.localName.toLowerCase();
      if (name.startsWith("on") || (name === "href" && !attribute.value.trim().startsWith("#"))) {
        element.removeAttributeNode(attribute);
      }
    }
  }
}

let stylesheet = null;

/** diagram.css, added to the page once; resolves when it is loaded (or could not be). */
function loadStyles() {
  if (!stylesheet) {
    stylesheet = new Promise((resolve) => {
      const link = h("link", {rel: "stylesheet", href: new URL("./diagram.css", import.meta.url).pathname});
      link.addEventListener("load", resolve);
      link.addEventListener("error", resolve);
      document.head.append(link);
    });
  }
  return stylesheet;
}

export class ProcessDiagram {
  /**
   * Shows the diagram at `url` in `host`. `format(value)` gives a process value (`{name, value,
   * unit, commands}`) as text with its unit. Call update(values, names?) when values change.
   * Invariant: once loaded, every bound element shows the latest value given for its tag.
   */
  constructor(host, {url, format}) {
    this.host = host;
    this.format = format;
    this.values = new Map();
    this.byTag = new Map(); // tag -> [{element, role: "show" | "state" | "target", ...}]
    this.svg = null;
    this.destroyed = false;
    this.status = h("p.diagram-status", {role: "status", "data-testid": "process-diagram-status"}, "Loading the process diagram…");
    clear(host, this.status);
    this.ready = this.load(url);
  }

  async load(url) {
    let text;
    try {
      [text] = await Promise.all([api.text(url), loadStyles()]);
    } catch (error) {
      this.status.textContent = `The process diagram cannot be shown: ${error.message}`;
      return;
    }
    if (this.destroyed) return;
    const parsed = new DOMParser().parseFromString(text, "image/svg+xml");
    const root = parsed.documentElement;
    if (parsed.getElementsByTagNameNS("*", "parsererror").length || root.namespaceURI !== SVG_NS || root.localName !== "svg") {
      this.status.textContent = "The process diagram cannot be shown: the aggregator sent no valid SVG.";
      return;
    }
    disarm(root);
    const svg = document.importNode(root, true);
    svg.classList.add("process-diagram");
    svg.setAttribute("role", "group");
    svg.setAttribute("aria-label", "Process diagram");
    svg.addEventListener("click", (event) => this.activate(event));
    svg.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") this.activate(event);
    });
    this.bind(svg);
    this.svg = svg;
    clear(this.host, svg);
    this.update(this.values);
  }

  bind(svg) {
    const add = (tag, binding) => {
      if (!this.byTag.has(tag)) this.byTag.set(tag, []);
      this.byTag.get(tag).push(binding);
    };
    for (const element of svg.querySelectorAll("[data-show]")) {
      const owner = element.closest("[data-tag]");
      if (owner) add(owner.dataset.tag, {element, role: "show", show: element.dataset.show});
    }
    for (const element of svg.querySelectorAll("[data-tag]")) {
      const tag = element.dataset.tag;
      if (element.dataset.kind) add(tag, {element, role: "state"});
      // The outermost element of a tag is what a person points at: one target, not one per part.
      if (!element.parentElement?.closest(`[data-tag="${CSS.escape(tag)}"]`)) add(tag, {element, role: "target"});
    }
  }

  /** Take the page's values (name -> process value); `names`: the ones that changed (all if omitted). */
  update(values, names = null) {
    for (const name of names || values.keys()) {
      if (values.has(name)) this.values.set(name, values.get(name));
    }
    if (!this.svg) return;
    for (const name of names || this.byTag.keys()) {
      for (const binding of this.byTag.get(name) || []) this.render(name, binding);
    }
  }

  render(tag, {element, role, show}) {
    const value = this.values.get(tag);
    const text = value ? this.format(value) : "—";
    if (role === "show") {
      element.textContent = show === "state" ? this.stateWord(element, value) || text : text;
      return;
    }
    if (role === "state") {
      element.dataset.state = stateOf(value && value.value, element.dataset.on);
      return;
    }
    const word = this.stateWord(element, value);
    const settable = Boolean(value && value.commands && value.commands.length);
    const label = `${tag}: ${text}${word && word !== text ? `, ${word}` : ""}`;
    const isText = element.localName === "text" || element.localName === "tspan"; // named by its own text
    if (settable) {
      element.setAttribute("role", "button");
      element.setAttribute("tabindex", "0");
      element.dataset.action = "open-tag";
    } else {
      if (isText) element.removeAttribute("role");
      else element.setAttribute("role", "img");
      element.removeAttribute("tabindex");
      delete element.dataset.action;
    }
    if (isText) return;
    // The name and the tooltip (no aria-label: the name keeps the visible text, WCAG 2.5.3).
    let title = [...element.children].find((child) => child.localName === "title");
    if (!title) {
      title = document.createElementNS(SVG_NS, "title");
      element.prepend(title);
    }
    title.textContent = settable ? `${label} (select to change)` : label;
  }

  /** The state word ("Open", "Running"...) of the data-kind element at or around `element`. */
  stateWord(element, value) {
    const kindElement = element.closest("[data-kind]");
    const words = kindElement && STATE_WORDS[kindElement.dataset.kind];
    const state = stateOf(value && value.value, kindElement ? kindElement.dataset.on : undefined);
    return words && state !== "unknown" ? words[state] : null;
  }

  activate(event) {
    const target = event.target.closest("[data-action='open-tag']");
    if (!target || !this.svg.contains(target)) return;
    event.preventDefault();
    target.dispatchEvent(new CustomEvent("pectus:open-tag", {bubbles: true, detail: {tag: target.dataset.tag}}));
  }

  destroy() {
    this.destroyed = true;
    this.svg = null;
    this.byTag.clear();
    clear(this.host);
  }
}
