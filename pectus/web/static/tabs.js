// Tabs as the WAI-ARIA tabs pattern: a tablist of buttons, one panel shown at a time. Only the
// selected tab is in the Tab order; Left/Right move between tabs and show them at once, Home and
// End go to the first and last. The choice can be kept in this browser (storageKey).

import {h} from "./api.js";

/**
 * A set of tabs. `tabs`: [{key, label, testid, content: Element, hidden?}] — `label` may be an
 * Element or a list of nodes; a hidden tab is neither shown nor reachable. `onShow(key)` is
 * called after a panel is shown (e.g. for a widget that measures itself). Invariant: exactly one
 * visible tab is selected, and only its panel is shown.
 */
export class Tabs {
  constructor({id, label, tabs, storageKey = null, onShow = null, className = ""}) {
    this.id = id;
    this.storageKey = storageKey;
    this.onShow = onShow;
    this.entries = new Map(); // key -> {tab, panel}
    this.tablist = h("div.tablist", {role: "tablist", "aria-label": label, onkeydown: (event) => this.keydown(event)});
    const panels = [];
    for (const spec of tabs) {
      const tabId = `${id}-tab-${spec.key}`;
      const panelId = `${id}-panel-${spec.key}`;
      const tab = h("button.tab", {type: "button", role: "tab", id: tabId, "aria-controls": panelId, "aria-selected": "false",
        tabindex: "-1", "data-testid": spec.testid, "data-key": spec.key, hidden: Boolean(spec.hidden),
        onclick: () => this.select(spec.key)}, spec.label);
      const panel = h("div.tabpanel", {role: "tabpanel", id: panelId, "aria-labelledby": tabId, hidden: true}, spec.content);
      this.entries.set(spec.key, {tab, panel});
      this.tablist.append(tab);
      panels.push(panel);
    }
    this.panels = h("div.tabpanels", panels);
    this.element = h("div.tabs", {class: className}, this.tablist, this.panels);
    const stored = storageKey ? localStorage.getItem(storageKey) : null;
    this.selected = null;
    this.select(this.visibleKeys().includes(stored) ? stored : this.visibleKeys()[0]);
  }

  visibleKeys() {
    return [...this.entries].filter(([, entry]) => !entry.tab.hidden).map(([key]) => key);
  }

  /** Show the panel of `key`; with `focus`, move the keyboard focus to its tab. */
  select(key, {focus = false} = {}) {
    const chosen = this.entries.get(key);
    if (!chosen || chosen.tab.hidden) return;
    for (const [other, entry] of this.entries) {
      const on = other === key;
      entry.tab.setAttribute("aria-selected", String(on));
      entry.tab.tabIndex = on ? 0 : -1;
      entry.panel.hidden = !on;
    }
    const changed = this.selected !== key;
    this.selected = key;
    if (this.storageKey && changed) localStorage.setItem(this.storageKey, key);
    if (focus) chosen.tab.focus();
    if (this.onShow) this.onShow(key);
  }

  /** Show or hide a tab; hiding the selected one selects the first visible tab. */
  setHidden(key, hidden) {
    const entry = this.entries.get(key);
    if (!entry || entry.tab.hidden === hidden) return;
    entry.tab.hidden = hidden;
    if (hidden && this.selected === key) this.select(this.visibleKeys()[0]);
  }

  tab(key) {
    return this.entries.get(key).tab;
  }

  keydown(event) {
    const keys = this.visibleKeys();
    const at = keys.indexOf(event.target.dataset.key);
    if (at < 0) return;
    const next = {ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: keys.length - 1}[event.key];
    if (next === undefined) return;
    event.preventDefault();
    this.select(keys[(next + keys.length) % keys.length], {focus: true});
  }
}
