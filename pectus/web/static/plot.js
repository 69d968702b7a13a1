// The process plot: a uPlot wrapper driven by the UOD's plot configuration.
//
//   const plot = new ProcessPlot(container, {configuration, units, storageKey});
//   plot.setSeries({tag: [[epochSeconds, value], ...]})   // the whole run so far (plot_log)
//   plot.append(epochSeconds, {tag: value, ...})          // live changes
//   plot.clear(); plot.destroy();
//
// Layout: one uPlot per sub plot, stacked, heights by `ratio`, sharing the x axis (cursor and
// zoom are synchronised). Each sub plot has several y axes (colour, label with the unit, range
// from the configuration unless the user overrode it; overrides are kept in localStorage).
// Colour regions shade the background by the value of a tag (e.g. Block); annotations draw a
// labelled vertical line each time an annotated tag (e.g. Mark) changes.
//
// Data: one table of rows (time + the held value of every tag); a tag's value holds until its
// next point. Live changes closer than MIN_STEP to the last row update that row instead of
// adding one, and redraws are batched (at most one per REDRAW_MS), so a fast unit costs a few
// array pushes per change and a canvas repaint a few times a second - never a rebuild.

import {formatTime, h, toSeconds} from "./api.js";

const MIN_STEP = 0.5; // s between live rows
const REDRAW_MS = 250;
const DASHES = [undefined, [8, 4], [2, 3], [12, 4, 2, 4]];
const TIME = ""; // the x choice "time of day"

let uPlotModule = null;

function loadUPlot() {
  if (!uPlotModule) {
    if (!document.querySelector("link[data-uplot]")) {
      document.head.append(h("link", {rel: "stylesheet", href: "/static/vendor/uPlot.min.css", "data-uplot": true}));
    }
    uPlotModule = import("./vendor/uPlot.esm.js").then((module) => module.default);
  }
  return uPlotModule;
}

function numeric(value) {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value === "boolean") return value ? 1 : 0;
  return null;
}

export class ProcessPlot {
  constructor(container, {configuration = {}, units = {}, storageKey = "default"} = {}) {
    this.container = container;
    this.config = configuration || {};
    this.units = units;
    this.storageKey = `pectus.plot:${storageKey}`;
    this.settings = this.loadSettings();
    this.plots = [];
    this.uPlot = null;
    this.zoomed = false;
    this.timer = null;
    this.syncing = false;
    this.destroyed = false;

    const config = this.config;
    this.subPlots = (config.sub_plots || []).filter((sub) => (sub.axes || []).length);
    this.plotted = [...new Set(this.subPlots.flatMap((sub) => sub.axes.flatMap((axis) => axis.process_value_names)))];
    this.xNames = config.x_axis_process_value_names || [];
    this.regionTags = (config.color_regions || []).map((region) => region.process_value_name);
    this.annotated = config.process_value_names_to_annotate || [];
    this.categorical = [...new Set([...this.regionTags, ...this.annotated])];
    const stored = this.settings.x;
    this.xChoice = stored !== undefined && (stored === TIME || this.xNames.includes(stored)) ? stored : (this.xNames[0] || TIME);
    this.reset();
    this.renderShell();
    if (this.subPlots.length) {
      loadUPlot().then((uPlot) => {
        if (this.destroyed) return;
        this.uPlot = uPlot;
        this.build();
      }).catch((error) => {
        console.error(error);
        this.stage.replaceChildren(h("p.empty", "The plot library could not be loaded."));
      });
    }
  }

  // -- data ---------------------------------------------------------------------------------------

  reset() {
    this.times = [];
    this.numbers = new Map([...new Set([...this.plotted, ...this.xNames])].map((tag) => [tag, []]));
    this.raw = new Map(this.categorical.map((tag) => [tag, []]));
    this.changes = new Map(this.categorical.map((tag) => [tag, []])); // tag -> [{row, value}]
    this.current = new Map(); // tag -> latest value
    this.view = null; // rows shown when x is a tag: {rows, x, columns}
  }

  tracked(tag) {
    return this.numbers.has(tag) || this.raw.has(tag);
  }

  pushRow(time) {
    const row = this.times.length;
    this.times.push(time);
    this.rowStarted = time;
    for (const [tag, column] of this.numbers) column.push(numeric(this.current.get(tag)));
    for (const [tag, column] of this.raw) {
      const value = this.current.has(tag) ? this.current.get(tag) : null;
      column.push(value);
      const changes = this.changes.get(tag);
      const last = changes[changes.length - 1];
      if ((last ? last.value : null) !== value) changes.push({row, value});
    }
    return row;
  }

  /** Put the held values into the last row (a live change close to it). */
  updateLastRow(time) {
    const row = this.times.length - 1;
    this.times[row] = Math.max(this.times[row], time);
    for (const [tag, column] of this.numbers) column[row] = numeric(this.current.get(tag));
    for (const [tag, column] of this.raw) {
      const value = this.current.has(tag) ? this.current.get(tag) : null;
      if (column[row] === value) continue;
      column[row] = value;
      const changes = this.changes.get(tag);
      const last = changes[changes.length - 1];
      if (last && last.row === row) changes.pop();
      const before = changes[changes.length - 1];
      if ((before ? before.value : null) !== value) changes.push({row, value});
    }
    return row;
  }

  /** The whole series of a run: {tag: [[time, value], ...]} (one point per change). */
  setSeries(series) {
    this.reset();
    const points = [];
    for (const [tag, list] of Object.entries(series || {})) {
      if (!this.tracked(tag)) continue;
      for (const [time, value] of list) points.push([toSeconds(time), tag, value]);
    }
    points.sort((a, b) => a[0] - b[0]);
    let rowTime = null;
    for (const [time, tag, value] of points) {
      if (time === null) continue;
      if (rowTime !== null && time !== rowTime) this.pushRow(rowTime);
      this.current.set(tag, value);
      rowTime = time;
    }
    if (rowTime !== null) this.pushRow(rowTime);
    this.rebuildView();
    this.redraw(true);
  }

  /** Live changes at `time` (epoch seconds): {tag: value}. */
  append(time, values) {
    time = toSeconds(time);
    if (time === null) return;
    let relevant = false;
    for (const [tag, value] of Object.entries(values)) {
      if (!this.tracked(tag) || this.current.get(tag) === value) continue;
      this.current.set(tag, value);
      relevant = true;
    }
    if (!relevant) return;
    // Changes within MIN_STEP of the time the last row *started* join it; comparing with its
    // updated time instead would let a 10 Hz feed extend one row for ever.
    if (this.times.length && time - this.rowStarted < MIN_STEP) this.updateLastRow(time);
    else this.pushRow(time);
    this.extendView();
    this.scheduleRedraw();
  }

  clear() {
    this.reset();
    this.zoomed = false;
    this.redraw(true);
  }

  // -- x axis -------------------------------------------------------------------------------------

  xOfRow(row) {
    if (this.xChoice === TIME) return this.times[row];
    return this.numbers.get(this.xChoice)[row];
  }

  /** When x is a tag, uPlot needs rising x: rows with no x, or an x below the last, are left out. */
  rebuildView() {
    if (this.xChoice === TIME) {
      this.view = null;
      return;
    }
    this.view = {rows: [], x: [], columns: new Map(this.plotted.map((tag) => [tag, []]))};
    for (let row = 0; row < this.times.length; row += 1) this.addViewRow(row);
  }

  addViewRow(row) {
    const view = this.view;
    const x = this.numbers.get(this.xChoice)[row];
    if (x === null || x === undefined) return;
    const lastRow = view.rows[view.rows.length - 1];
    if (lastRow === row) {
      view.x[view.x.length - 1] = Math.max(view.x[view.x.length - 1], x);
      for (const [tag, column] of view.columns) column[column.length - 1] = this.numbers.get(tag)[row];
      return;
    }
    if (view.x.length && x < view.x[view.x.length - 1]) return;
    view.rows.push(row);
    view.x.push(x);
    for (const [tag, column] of view.columns) column.push(this.numbers.get(tag)[row]);
  }

  extendView() {
    if (this.view) this.addViewRow(this.times.length - 1);
  }

  rowAt(index) {
    return this.view ? this.view.rows[index] : index;
  }

  dataFor(sub) {
    const tags = sub.axes.flatMap((axis) => axis.process_value_names);
    if (this.view) return [this.view.x, ...tags.map((tag) => this.view.columns.get(tag))];
    return [this.times, ...tags.map((tag) => this.numbers.get(tag))];
  }

  // -- settings (axis limits, x choice) ---------------------------------------------------------

  loadSettings() {
    try {
      return JSON.parse(localStorage.getItem(this.storageKey) || "{}") || {};
    } catch {
      return {};
    }
  }

  saveSettings() {
    localStorage.setItem(this.storageKey, JSON.stringify(this.settings));
  }

  limits(subIndex, axisIndex, axis) {
    const override = (this.settings.axes || {})[`${subIndex}:${axisIndex}`];
    return {
      min: override && Number.isFinite(override.min) ? override.min : axis.y_min,
      max: override && Number.isFinite(override.max) ? override.max : axis.y_max,
      overridden: Boolean(override),
    };
  }

  // -- DOM and uPlot -------------------------------------------------------------------------------

  renderShell() {
    const xSelect = h("select#plot-x", {"data-testid": "plot-x-axis", onchange: () => {
      this.xChoice = xSelect.value;
      this.settings.x = this.xChoice;
      this.saveSettings();
      this.zoomed = false;
      this.rebuildView();
      this.build();
    }}, h("option", {value: TIME}, "Time"), this.xNames.map((name) => h("option", {value: name}, name)));
    xSelect.value = this.xChoice;
    const button = (label, testid, onclick, title) => h("button", {type: "button", "data-testid": testid, onclick, title}, label);
    this.toolbar = h("div.plot-toolbar.toolbar",
      h("label", {for: "plot-x"}, "X axis"), xSelect,
      h("span.button-group", {role: "group", "aria-label": "Zoom and pan"},
        button("◀", "plot-pan-left", () => this.pan(-0.25), "Pan left"),
        button("▶", "plot-pan-right", () => this.pan(0.25), "Pan right"),
        button("+", "plot-zoom-in", () => this.zoom(0.5), "Zoom in"),
        button("−", "plot-zoom-out", () => this.zoom(2), "Zoom out"),
        button("Reset zoom", "plot-reset-zoom", () => this.resetZoom())),
      button("Axis limits…", "plot-axis-limits", () => this.editAxes()),
      h("span.plot-hint", "Drag to zoom, Shift+drag to pan, double-click to reset."));
    this.readout = h("div.plot-readout", {"data-testid": "plot-readout", "aria-live": "off"});
    this.stage = h("div.plot-stage");
    this.container.replaceChildren(this.toolbar, this.stage, this.readout);
    this.container.classList.add("process-plot");
    if (!this.subPlots.length) this.stage.append(h("p.empty", "This unit has no plot configuration."));
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.container);
  }

  sizes() {
    const width = Math.max(200, this.stage.clientWidth || this.container.clientWidth || 600);
    const total = Math.max(160 * this.subPlots.length,
      (parseFloat(getComputedStyle(this.container).getPropertyValue("--plot-height")) || 420));
    const ratios = this.subPlots.map((sub) => sub.ratio || 1);
    const sum = ratios.reduce((a, b) => a + b, 0);
    return ratios.map((ratio) => ({width, height: Math.max(120, Math.round(total * ratio / sum))}));
  }

  build() {
    if (!this.uPlot || this.destroyed) return;
    for (const plot of this.plots) plot.destroy();
    this.plots = [];
    this.stage.replaceChildren();
    const uPlot = this.uPlot;
    const sizes = this.sizes();
    const syncKey = `${this.storageKey}:${Math.random()}`;
    // the same number of axes on each side of every sub plot, so their x axes line up
    const sides = this.subPlots.map((sub) => ({
      left: sub.axes.filter((_, index) => index % 2 === 0).length,
      right: sub.axes.filter((_, index) => index % 2 === 1).length,
    }));
    const maxLeft = Math.max(...sides.map((side) => side.left));
    const maxRight = Math.max(...sides.map((side) => side.right));
    this.subPlots.forEach((sub, subIndex) => {
      const scales = {x: {time: this.xChoice === TIME}};
      const axes = [{
        scale: "x",
        show: subIndex === this.subPlots.length - 1,
        values: this.xChoice === TIME
          ? (u, splits, axisIndex, space, increment) => splits.map((v) => (increment < 60 ? formatTime(v) : formatTime(v).slice(0, 5)))
          : undefined,
        label: this.xChoice === TIME ? undefined : this.axisTitle(this.xChoice, [this.xChoice]),
        grid: {stroke: "#d9dde3"},
      }];
      const series = [{label: this.xChoice === TIME ? "Time" : this.xChoice}];
      sub.axes.forEach((axis, axisIndex) => {
        const key = `y${axisIndex}`;
        const limits = this.limits(subIndex, axisIndex, axis);
        scales[key] = {auto: false, range: () => [limits.min, limits.max]};
        axes.push({
          scale: key,
          side: axisIndex % 2 === 0 ? 3 : 1,
          label: this.axisTitle(axis.label, axis.process_value_names),
          stroke: axis.color,
          grid: {show: axisIndex === 0, stroke: "#e4e7eb"},
          size: 56,
        });
        axis.process_value_names.forEach((tag, index) => {
          series.push({
            label: this.units[tag] ? `${tag} [${this.units[tag]}]` : tag,
            scale: key,
            stroke: axis.color,
            width: 1.5,
            dash: DASHES[index % DASHES.length],
            paths: uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({align: 1}) : undefined,
            points: {show: false},
            spanGaps: false,
          });
        });
      });
      const filler = (side) => ({scale: "y0", side, size: 56, values: () => [], grid: {show: false}, ticks: {show: false}});
      for (let n = sides[subIndex].left; n < maxLeft; n += 1) axes.push(filler(3));
      for (let n = sides[subIndex].right; n < maxRight; n += 1) axes.push(filler(1));
      const options = {
        ...sizes[subIndex],
        scales,
        axes,
        series,
        legend: {show: true, live: true},
        cursor: {sync: {key: syncKey, setSeries: false}, drag: {x: true, y: false, setScale: true}},
        hooks: {
          drawClear: [(u) => this.drawRegions(u, subIndex)],
          draw: [(u) => this.drawAnnotations(u, subIndex)],
          setSelect: [(u) => {
            if (u.select.width > 0) this.zoomed = true;
          }],
          setScale: [(u, key) => this.syncScale(u, key)],
          setCursor: [(u) => this.showReadout(u)],
        },
      };
      const target = h("div.sub-plot", {"data-testid": "sub-plot"});
      this.stage.append(target);
      const plot = new uPlot(options, this.dataFor(sub), target);
      plot.over.addEventListener("dblclick", () => {
        this.zoomed = false;
      });
      this.enablePanning(plot);
      this.plots.push(plot);
    });
  }

  axisTitle(label, tags) {
    const unit = tags.map((tag) => this.units[tag]).find(Boolean);
    return unit && !String(label).includes(unit) ? `${label} [${unit}]` : label;
  }

  setUnits(units) {
    this.units = units || {};
    this.build();
  }

  resize() {
    if (!this.plots.length) return;
    const sizes = this.sizes();
    this.plots.forEach((plot, index) => {
      if (plot.width !== sizes[index].width || plot.height !== sizes[index].height) plot.setSize(sizes[index]);
    });
  }

  scheduleRedraw() {
    if (this.timer === null) this.timer = setTimeout(() => this.redraw(false), REDRAW_MS);
  }

  redraw(full) {
    clearTimeout(this.timer);
    this.timer = null;
    this.container.dataset.rows = String(this.times.length); // how much is drawn: for tests and support
    if (!this.plots.length) return;
    if (full && this.xChoice !== TIME) this.rebuildView();
    const keep = this.zoomed && !full;
    const range = keep ? {min: this.plots[0].scales.x.min, max: this.plots[0].scales.x.max} : null;
    this.syncing = true;
    try {
      this.plots.forEach((plot, index) => {
        plot.setData(this.dataFor(this.subPlots[index]), !keep);
        if (range) plot.setScale("x", range);
      });
    } finally {
      this.syncing = false;
    }
  }

  syncScale(source, key) {
    if (key !== "x" || this.syncing) return;
    const {min, max} = source.scales.x;
    this.syncing = true;
    try {
      for (const plot of this.plots) if (plot !== source) plot.setScale("x", {min, max});
    } finally {
      this.syncing = false;
    }
  }

  xRange() {
    const plot = this.plots[0];
    return plot ? {min: plot.scales.x.min, max: plot.scales.x.max} : null;
  }

  pan(fraction) {
    const range = this.xRange();
    if (!range || range.min === null) return;
    const shift = (range.max - range.min) * fraction;
    this.zoomed = true;
    this.plots[0].setScale("x", {min: range.min + shift, max: range.max + shift});
  }

  zoom(factor) {
    const range = this.xRange();
    if (!range || range.min === null) return;
    const middle = (range.min + range.max) / 2;
    const half = (range.max - range.min) * factor / 2;
    this.zoomed = true;
    this.plots[0].setScale("x", {min: middle - half, max: middle + half});
  }

  resetZoom() {
    this.zoomed = false;
    this.redraw(true);
  }

  enablePanning(plot) {
    plot.over.addEventListener("mousedown", (event) => {
      if (!event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      event.stopPropagation();
      const start = event.clientX;
      const {min, max} = plot.scales.x;
      const perPixel = (max - min) / plot.over.clientWidth;
      const move = (moved) => {
        const shift = (start - moved.clientX) * perPixel;
        this.zoomed = true;
        plot.setScale("x", {min: min + shift, max: max + shift});
      };
      const up = () => {
        window.removeEventListener("mousemove", move);
        window.removeEventListener("mouseup", up);
      };
      window.addEventListener("mousemove", move);
      window.addEventListener("mouseup", up);
    }, true);
  }

  // -- regions, annotations, read-out ------------------------------------------------------------

  /** [{x0, x1, value}] of a categorical tag over the rows, in x order. */
  spans(tag) {
    const changes = this.changes.get(tag) || [];
    const last = this.times.length - 1;
    const spans = [];
    for (let i = 0; i < changes.length; i += 1) {
      const endRow = i + 1 < changes.length ? changes[i + 1].row : last;
      const x0 = this.xOfRow(changes[i].row);
      const x1 = this.xOfRow(endRow);
      if (x0 === null || x0 === undefined || x1 === null || x1 === undefined) continue;
      spans.push({x0, x1, value: changes[i].value, row: changes[i].row});
    }
    return spans;
  }

  drawRegions(u, subIndex) {
    const regions = this.config.color_regions || [];
    if (!regions.length || !this.times.length) return;
    const {ctx, bbox} = u;
    ctx.save();
    ctx.beginPath();
    ctx.rect(bbox.left, bbox.top, bbox.width, bbox.height);
    ctx.clip();
    for (const region of regions) {
      const colours = region.value_color_map || {};
      for (const span of this.spans(region.process_value_name)) {
        const colour = colours[String(span.value)];
        if (!colour || span.value === null) continue;
        const left = u.valToPos(span.x0, "x", true);
        const right = u.valToPos(span.x1, "x", true);
        if (right < bbox.left || left > bbox.left + bbox.width) continue;
        ctx.fillStyle = colour;
        ctx.fillRect(left, bbox.top, Math.max(1, right - left), bbox.height);
        if (subIndex === 0 && right - left > 40) {
          ctx.fillStyle = "#1f2328";
          ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui, sans-serif`;
          ctx.fillText(String(span.value), Math.max(left, bbox.left) + 4 * devicePixelRatio, bbox.top + 13 * devicePixelRatio);
        }
      }
    }
    ctx.restore();
  }

  drawAnnotations(u, subIndex) {
    if (!this.annotated.length || !this.times.length) return;
    const {ctx, bbox} = u;
    const ratio = devicePixelRatio;
    ctx.save();
    ctx.beginPath();
    ctx.rect(bbox.left, bbox.top, bbox.width, bbox.height);
    ctx.clip();
    ctx.strokeStyle = "#3d4450";
    ctx.fillStyle = "#1f2328";
    ctx.lineWidth = ratio;
    ctx.setLineDash([4 * ratio, 3 * ratio]);
    ctx.font = `${Math.round(11 * ratio)}px system-ui, sans-serif`;
    for (const tag of this.annotated) {
      for (const span of this.spans(tag)) {
        if (span.value === null || span.value === "") continue;
        const x = Math.round(u.valToPos(span.x0, "x", true));
        if (x < bbox.left || x > bbox.left + bbox.width) continue;
        ctx.beginPath();
        ctx.moveTo(x, bbox.top);
        ctx.lineTo(x, bbox.top + bbox.height);
        ctx.stroke();
        if (subIndex === 0) {
          ctx.save();
          ctx.translate(x + 3 * ratio, bbox.top + 4 * ratio);
          ctx.rotate(Math.PI / 2);
          ctx.fillText(String(span.value).slice(0, 40), 0, 0);
          ctx.restore();
        }
      }
    }
    ctx.restore();
  }

  showReadout(u) {
    const index = u.cursor.idx;
    if (index === null || index === undefined) {
      this.readout.textContent = "";
      return;
    }
    const row = this.rowAt(index);
    if (row === undefined) return;
    const parts = [`Time ${formatTime(this.times[row])}`];
    if (this.xChoice !== TIME) parts.push(`${this.xChoice} ${this.numbers.get(this.xChoice)[row] ?? "—"}`);
    for (const tag of this.categorical) {
      const value = this.raw.get(tag)[row];
      parts.push(`${tag}: ${value === null || value === undefined || value === "" ? "—" : value}`);
    }
    this.readout.textContent = parts.join(" · ");
  }

  editAxes() {
    const fields = [];
    const rows = this.subPlots.flatMap((sub, subIndex) => sub.axes.map((axis, axisIndex) => {
      const limits = this.limits(subIndex, axisIndex, axis);
      const id = `axis-${subIndex}-${axisIndex}`;
      const min = h("input", {type: "number", step: "any", id: `${id}-min`, value: limits.min, "data-testid": `${id}-min`});
      const max = h("input", {type: "number", step: "any", id: `${id}-max`, value: limits.max, "data-testid": `${id}-max`});
      fields.push({subIndex, axisIndex, axis, min, max});
      return h("tr", h("th", {scope: "row"}, h("span.swatch", {style: `background:${axis.color}`, "aria-hidden": "true"}),
        this.axisTitle(axis.label, axis.process_value_names)),
      h("td", h("label.visually-hidden", {for: `${id}-min`}, `${axis.label} minimum`), min),
      h("td", h("label.visually-hidden", {for: `${id}-max`}, `${axis.label} maximum`), max));
    }));
    const dialog = h("dialog.axis-dialog", {"data-testid": "axis-dialog", "aria-labelledby": "axis-dialog-title"},
      h("form", {method: "dialog"},
        h("h2#axis-dialog-title", "Axis limits"),
        h("p", "Your limits are kept in this browser only."),
        h("table", h("thead", h("tr", h("th", "Axis"), h("th", "Minimum"), h("th", "Maximum"))), h("tbody", rows)),
        h("div.dialog-buttons",
          h("button", {type: "submit", value: "reset", "data-testid": "axis-reset"}, "Reset axes"),
          h("button", {type: "submit", value: "cancel"}, "Cancel"),
          h("button.primary", {type: "submit", value: "save", "data-testid": "axis-save"}, "Apply"))));
    document.body.append(dialog);
    dialog.addEventListener("close", () => {
      if (dialog.returnValue === "reset") {
        this.settings.axes = {};
      } else if (dialog.returnValue === "save") {
        const axes = {};
        for (const field of fields) {
          const min = parseFloat(field.min.value);
          const max = parseFloat(field.max.value);
          const changed = min !== field.axis.y_min || max !== field.axis.y_max;
          if (Number.isFinite(min) && Number.isFinite(max) && min < max && changed) {
            axes[`${field.subIndex}:${field.axisIndex}`] = {min, max};
          }
        }
        this.settings.axes = axes;
      }
      if (dialog.returnValue === "reset" || dialog.returnValue === "save") {
        this.saveSettings();
        this.build();
      }
      dialog.remove();
    });
    dialog.showModal();
  }

  destroy() {
    this.destroyed = true;
    clearTimeout(this.timer);
    if (this.resizer) this.resizer.disconnect();
    for (const plot of this.plots) plot.destroy();
    this.plots = [];
  }
}
