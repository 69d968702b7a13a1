// A bar between two stacked areas of a grid that moves the line between them: the WAI-ARIA window
// splitter (role separator, focusable, its value the upper area's share of the height in percent).
// Drag it; or focus it and use Up/Down (a step), Home/End (the least and most), Enter (the start
// share again); a double-click also goes back to it. The share is kept in this browser.
//
// The grid reads the share from two custom properties, `--upper` and `--lower` (fr units), so the
// layout stays in CSS and works without this script; CSSOM writes are allowed by the page's CSP.

import {h} from "./api.js";

export class Splitter {
  /** `grid`: the element whose rows it moves; `upper`: the area above (what aria-controls names). */
  constructor({grid, upper, label, share = 64, min = 30, max = 85, step = 5, storageKey = null}) {
    this.grid = grid;
    this.initial = share;
    this.min = min;
    this.max = max;
    this.storageKey = storageKey;
    this.element = h("div.splitter", {role: "separator", tabindex: "0", "aria-orientation": "horizontal",
      "aria-label": label, "aria-controls": upper.id, "aria-valuemin": String(min), "aria-valuemax": String(max),
      "data-testid": "splitter", title: "Drag, or use the arrow keys, to share the height",
      onkeydown: (event) => {
        const moves = {ArrowUp: this.share - step, ArrowDown: this.share + step, Home: min, End: max, Enter: this.initial};
        if (!(event.key in moves)) return;
        event.preventDefault();
        this.set(moves[event.key]);
      },
      ondblclick: () => this.set(this.initial),
      onpointerdown: (event) => this.drag(event)});
    const stored = storageKey ? Number(localStorage.getItem(storageKey)) : NaN;
    this.set(Number.isFinite(stored) && stored > 0 ? stored : share, {keep: false});
  }

  /** The upper area gets `share` % of the height the two take (clamped); kept unless `keep` is false. */
  set(share, {keep = true} = {}) {
    this.share = Math.round(Math.min(this.max, Math.max(this.min, share)));
    this.grid.style.setProperty("--upper", `${this.share}fr`);
    this.grid.style.setProperty("--lower", `${100 - this.share}fr`);
    this.element.setAttribute("aria-valuenow", String(this.share));
    this.element.setAttribute("aria-valuetext", `Trend ${this.share} %`);
    if (keep && this.storageKey) localStorage.setItem(this.storageKey, String(this.share));
  }

  drag(event) {
    if (event.button !== 0) return;
    event.preventDefault();
    const bar = this.element;
    bar.setPointerCapture(event.pointerId);
    // The two areas' height: the grid's rows less the bar itself (and the gaps around it).
    const rows = this.grid.getBoundingClientRect();
    const move = (moved) => this.set((moved.clientY - rows.top) / (rows.height - bar.offsetHeight) * 100);
    const end = () => {
      bar.removeEventListener("pointermove", move);
      bar.removeEventListener("pointerup", end);
      bar.removeEventListener("pointercancel", end);
    };
    bar.addEventListener("pointermove", move);
    bar.addEventListener("pointerup", end);
    bar.addEventListener("pointercancel", end);
  }
}
