// The process plot: a uPlot wrapper driven by the UOD's plot configuration.
//
//   const plot = new ProcessPlot(container, {configuration, units, decimals, storageKey, timeFirst});
//   plot.setSeries({tag: [[epochSeconds, value], ...]})   // a run's plot_log, a unit's trend, or both (joinSeries)
//   plot.append(epochSeconds, {tag: value, ...})          // live changes
//   plot.setMarkers([{time, label}])                      // e.g. where a run started and ended
//   plot.forget(epochSeconds)                             // drop the rows before it (a rolling window)
//   plot.clear(); plot.destroy();
//
// Layout: one uPlot per sub plot, stacked, heights by `ratio`, sharing the x axis (cursor and
// zoom are synchronised). Each sub plot has several y axes (colour, title "Label (unit)", range
// from the configuration unless the user overrode it; overrides are kept in localStorage).
// Every sub plot reserves the same room on each side for y axes (fixed sizes, and empty axes
// where it has fewer than another), so all plotting areas start and end at the same x: the
// cursor, mark lines and block shading line up from one sub plot to the next.
// Colour regions shade the background by the value of a tag (e.g. Block); annotations draw a
// dashed vertical line where an annotated tag (e.g. Mark) changes; markers a solid one. Their
// labels are elements laid over the first sub plot's plotting area and kept inside it (left of
// their line near the right edge, on the next row rather than over another label).
// Values read as on their axis: numbers in the tag's unit, with the tag's decimals when its UOD
// gives them (`decimals`: {tag: n}), else to 4 significant digits; times of day as h:mm:ss.
//
// Data: one table of rows (time + the held value of every tag); a tag's value holds until its
// next point. Live changes closer than MIN_STEP to the last row update that row instead of
// adding one, and redraws are batched (at most one per REDRAW_MS), so a fast unit costs a few
// array pushes per change and a canvas repaint a few times a second - never a rebuild.

import {h, toDate, toSeconds} from "./api.js";

const MIN_STEP = 0.5; // s between live rows
const REDRAW_MS = 250;
const DASHES = [undefined, [8, 4], [2, 3], [12, 4, 2, 4]];
const TIME = ""; // the x choice "time of day"
const AXIS_SIZE = 56; // px for the tick values of every y axis, so that sub plots line up
const AXIS_TITLE_SIZE = 22; // px for the title of every y axis, an empty one's too
const X_TICK_SPACE = 72; // least px between two x ticks: "12:34:56" fits
const X_AXIS_SIZE = 40; // px for the x axis' tick values, under the last sub plot (and its title's)
const MARKER_COLOUR = "#0b4fa8";
const LABEL_ROWS = 4; // rows of mark and marker labels, under the row of block labels
const LABEL_ROW_HEIGHT = 17; // px
const LABEL_GAP = 4; // px between a label and its line, or the label before it

let uPlotModule = null;

function loadUPlot() {
  if (!uPlotModule) {
    if (!document.querySelector("link[data-uplot]")) {
      document.head.append(h("link", {rel: "stylesheet", href: "/static/vendor/uPlot.min.css", "data-uplot": true}),
        h("link", {rel: "stylesheet", href: "/static/plot.css", "data-uplot": true}));
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

// Steps between the time axis' ticks, seconds.
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

/** A number to `digits` significant digits, without trailing zeros: 26.60028 -> "26.6". */
export function significant(value, digits = 4) {
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return "0";
  const decimals = Math.min(6, Math.max(0, digits - 1 - Math.floor(Math.log10(Math.abs(value)))));
  return value.toFixed(decimals).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

/** A tag's value as the plot shows it: "26.6 s", "Wash", "—" for none; `decimals` (the tag's, from its UOD) when given. */
export function formatReading(value, unit, decimals) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "number") {
    const number = Number.isInteger(decimals) ? value.toFixed(decimals) : significant(value);
    return unit ? `${number} ${unit}` : number;
  }
  if (typeof value === "boolean") return value ? "true" : "false";
  return String(value);
}

/** Epoch seconds -> the time of day as h:mm:ss ("9:05:03"). */
export function clock(time) {
  const date = toDate(time);
  if (!date) return "";
  const two = (n) => String(n).padStart(2, "0");
  return `${date.getHours()}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

/**
 * A unit's trend (GET .../trend) around a run's series (plot_log), as one series for setSeries:
 * the trend's points outside the run - from `start` to `end`, epoch seconds; end null: the run
 * goes on - and the run's own points inside (they are its record).
 */
export function joinSeries(trend, run, start, end) {
  const inside = (time) => time >= start && (end === null || time <= end);
  const joined = {};
  for (const [tag, points] of Object.entries(trend || {})) {
    joined[tag] = points.filter(([time]) => !inside(toSeconds(time)));
  }
  for (const [tag, points] of Object.entries(run || {})) joined[tag] = [...(joined[tag] || []), ...points];
  return joined;
}

export class ProcessPlot {
  constructor(container, {configuration = {}, units = {}, decimals = {}, storageKey = "default", timeFirst = false} = {}) {
    this.container = container;
    this.config = configuration || {};
    this.units = units;
    this.decimals = decimals;
    this.storageKey = `pectus.plot:${storageKey}`;
    this.settings = this.loadSettings();
    this.plots = [];
    this.uPlot = null;
    this.zoomed = false;
    this.timer = null;
    this.syncing = false;
    this.destroyed = false;
    this.markers = [];

    const config = this.config;
    this.subPlots = (config.sub_plots || []).filter((sub) => (sub.axes || []).length);
    this.plotted = [...new Set(this.subPlots.flatMap((sub) => sub.axes.flatMap((axis) => axis.process_value_names)))];
    this.xNames = config.x_axis_process_value_names || [];
    this.regionTags = (config.color_regions || []).map((region) => region.process_value_name);
    this.annotated = config.process_value_names_to_annotate || [];
    this.categorical = [...new Set([...this.regionTags, ...this.annotated])];
    const stored = this.settings.x;
    // x: the user's choice, else time for a trend (`timeFirst`), else the configuration's first x tag.
    const fallback = timeFirst ? TIME : this.xNames[0] || TIME;
    this.xChoice = stored !== undefined && (stored === TIME || this.xNames.includes(stored)) ? stored : fallback;
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

  /** A whole series: {tag: [[time, value], ...]} (one point per change). */
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

  /**
   * Live values at `time` (epoch seconds): {tag: value}. Time moves on even when no plotted value
   * changed (a row every MIN_STEP at most), so a steady unit's plot reaches the present.
   */
  append(time, values) {
    time = toSeconds(time);
    if (time === null) return;
    let changed = false;
    for (const [tag, value] of Object.entries(values)) {
      if (!this.tracked(tag) || this.current.get(tag) === value) continue;
      this.current.set(tag, value);
      changed = true;
    }
    // Changes within MIN_STEP of the time the last row *started* join it; comparing with its
    // updated time instead would let a 10 Hz feed extend one row for ever.
    const joins = this.times.length && time - this.rowStarted < MIN_STEP;
    if (joins ? !changed : !changed && !this.times.length) return;
    if (joins) this.updateLastRow(time);
    else this.pushRow(time);
    this.extendView();
    this.scheduleRedraw();
  }

  /** Drops the rows before `time` (the newest row stays); a tag's value at the new first row holds from it. */
  forget(time) {
    let count = 0;
    while (count < this.times.length - 1 && this.times[count] < time) count += 1;
    if (!count) return;
    this.times.splice(0, count);
    for (const column of this.numbers.values()) column.splice(0, count);
    for (const [tag, column] of this.raw) {
      column.splice(0, count);
      const changes = this.changes.get(tag);
      const kept = changes.filter((change) => change.row >= count).map((change) => ({row: change.row - count, value: change.value}));
      if (!kept.length || kept[0].row > 0) kept.unshift({row: 0, value: column[0]});
      this.changes.set(tag, kept);
    }
    this.rebuildView();
    this.scheduleRedraw();
  }

  /** Solid vertical lines with a label, e.g. [{time: runStart, label: "Run start"}]. */
  setMarkers(markers) {
    this.markers = (markers || []).map(({time, label}) => ({time: toSeconds(time), label})).filter((m) => m.time !== null);
    for (const plot of this.plots) plot.redraw(false);
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

  /** The x of a time: itself, or with a tag on x, that tag at the first row at or after it. */
  xOfTime(time) {
    if (this.xChoice === TIME) return time;
    let low = 0;
    let high = this.times.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (this.times[middle] < time) low = middle + 1;
      else high = middle;
    }
    return low < this.times.length ? this.xOfRow(low) : null;
  }

  /**
   * When x is a tag, uPlot needs rising x: rows with no x are left out, and where x falls (a new
   * run's Process Time starts again from 0) the view starts again from that row.
   */
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
    if (view.x.length && x < view.x[view.x.length - 1]) {
      view.rows = [];
      view.x = [];
      for (const column of view.columns.values()) column.length = 0;
    }
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
    // The last sub plot also holds the x axis: its plotting area gets its share all the same.
    const xAxis = X_AXIS_SIZE + AXIS_TITLE_SIZE;
    const ratios = this.subPlots.map((sub) => sub.ratio || 1);
    const sum = ratios.reduce((a, b) => a + b, 0);
    return ratios.map((ratio, index) => ({width,
      height: Math.max(120, Math.round((total - xAxis) * ratio / sum)) + (index === ratios.length - 1 ? xAxis : 0)}));
  }

  /** The x axis' title, with its unit: "Time (h:mm:ss)", "Process Time (s)". */
  xTitle() {
    return this.xChoice === TIME ? "Time (h:mm:ss)" : this.axisTitle(this.xChoice, [this.xChoice]);
  }

  /** A tag's value as the read-out and the legends show it. */
  reading(tag, value) {
    return formatReading(value, this.units[tag], this.decimals[tag]);
  }

  /** The x value as the read-out and legends show it. */
  /** The time axis' labels; written on the plot (data-x-labels) too, as data-rows is: what the
   *  canvas shows, for tests and support. */
  timeLabels(splits) {
    const labels = splits.map((time) => clock(time));
    this.container.dataset.xLabels = labels.join(" ");
    return labels;
  }

  formatX(x) {
    return this.xChoice === TIME ? clock(x) : this.reading(this.xChoice, x);
  }

  build() {
    if (!this.uPlot || this.destroyed) return;
    for (const plot of this.plots) plot.destroy();
    this.plots = [];
    this.stage.replaceChildren();
    const uPlot = this.uPlot;
    const sizes = this.sizes();
    const syncKey = `${this.storageKey}:${Math.random()}`;
    // Every sub plot gets as many y axes on each side as the one with the most, all of one size
    // and with room for a title: their plotting areas then start and end at the same x.
    const sides = this.subPlots.map((sub) => ({
      left: sub.axes.filter((_, index) => index % 2 === 0).length,
      right: sub.axes.filter((_, index) => index % 2 === 1).length,
    }));
    const maxLeft = Math.max(...sides.map((side) => side.left));
    const maxRight = Math.max(...sides.map((side) => side.right));
    const yAxis = (side, scale, options) => ({scale, side, size: AXIS_SIZE, labelSize: AXIS_TITLE_SIZE, ...options});
    // A value holds until the next point: steps. Where there are more rows than pixels, steps and
    // lines look the same, and uPlot's lines are drawn from each pixel column's min and max, which
    // keeps an hour of 20 series within a frame.
    const stepped = uPlot.paths.stepped({align: 1});
    const linear = uPlot.paths.linear();
    const paths = (u, seriesIndex, first, last) => (last - first > u.bbox.width ? linear : stepped)(u, seriesIndex, first, last);
    this.subPlots.forEach((sub, subIndex) => {
      const scales = {x: {time: this.xChoice === TIME}};
      // The x axis is written under the last sub plot only; the others keep its grid lines.
      const last = subIndex === this.subPlots.length - 1;
      const axes = [{
        scale: "x",
        space: X_TICK_SPACE,
        size: last ? X_AXIS_SIZE : 0,
        values: !last ? () => [] : this.xChoice === TIME ? (u, splits) => this.timeLabels(splits) : undefined,
        // Whole seconds at least: the labels are h:mm:ss, and half-second ticks read as the same time twice.
        incrs: this.xChoice === TIME ? TIME_STEPS : undefined,
        ticks: {show: last},
        label: last ? this.xTitle() : undefined,
        labelSize: AXIS_TITLE_SIZE,
        grid: {stroke: "#d9dde3"},
      }];
      const series = [{label: this.xChoice === TIME ? "Time" : this.xChoice, value: (u, x) => (x === null ? "—" : this.formatX(x))}];
      sub.axes.forEach((axis, axisIndex) => {
        const key = `y${axisIndex}`;
        const limits = this.limits(subIndex, axisIndex, axis);
        scales[key] = {auto: false, range: () => [limits.min, limits.max]};
        axes.push(yAxis(axisIndex % 2 === 0 ? 3 : 1, key, {
          label: this.axisTitle(axis.label, axis.process_value_names),
          stroke: axis.color,
          grid: {show: axisIndex === 0, stroke: "#e4e7eb"},
        }));
        axis.process_value_names.forEach((tag, index) => {
          const unit = this.units[tag];
          series.push({
            label: unit ? `${tag} (${unit})` : tag,
            scale: key,
            stroke: axis.color,
            width: 1.5,
            dash: DASHES[index % DASHES.length],
            paths,
            points: {show: false},
            spanGaps: false,
            value: (u, value) => this.reading(tag, value),
          });
        });
      });
      const filler = (side) => yAxis(side, "y0", {label: "", values: () => [], grid: {show: false}, ticks: {show: false}});
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
          drawClear: [(u) => this.drawRegions(u)],
          draw: [(u) => this.drawLines(u, subIndex)],
          setSelect: [(u) => {
            if (u.select.width > 0) this.zoomed = true;
          }],
          setScale: [(u, key) => this.syncScale(u, key)],
          setCursor: [(u) => this.showReadout(u)],
        },
      };
      // The axes' titles are drawn on the canvas: the figure's name says them to everyone else.
      const titles = sub.axes.map((axis) => this.axisTitle(axis.label, axis.process_value_names)).join(", ");
      const target = h("div.sub-plot", {"data-testid": "sub-plot", role: "figure", "aria-label": `${titles} against ${this.xTitle()}`});
      this.stage.append(target);
      const plot = new uPlot(options, this.dataFor(sub), target);
      plot.over.addEventListener("dblclick", () => {
        this.zoomed = false;
      });
      this.enablePanning(plot);
      if (subIndex === 0) {
        this.labels = h("div.plot-labels", {"data-testid": "plot-labels"});
        plot.over.append(this.labels);
        this.drawLabels(plot);
      }
      this.plots.push(plot);
    });
  }

  /** "Label (unit)", the unit of the axis' first tag that has one (unless the label has it already). */
  axisTitle(label, tags) {
    const unit = tags.map((tag) => this.units[tag]).find(Boolean);
    const text = String(label);
    return unit && !text.includes(`(${unit})`) && !text.includes(`[${unit}]`) ? `${text} (${unit})` : text;
  }

  setUnits(units, decimals = {}) {
    this.units = units || {};
    this.decimals = decimals || {};
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

  // -- regions, annotations, markers, labels, read-out ------------------------------------------

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

  /** The shaded spans of the colour regions: [{x0, x1, value, colour}]. */
  regions() {
    const regions = [];
    for (const region of this.config.color_regions || []) {
      const colours = region.value_color_map || {};
      for (const span of this.spans(region.process_value_name)) {
        const colour = colours[String(span.value)];
        if (colour && span.value !== null) regions.push({...span, colour});
      }
    }
    return regions;
  }

  /** The vertical lines: annotations (dashed, where an annotated tag changed) and markers (solid). */
  lines() {
    const lines = [];
    for (const tag of this.annotated) {
      for (const span of this.spans(tag)) {
        if (span.value !== null && span.value !== "") lines.push({x: span.x0, label: String(span.value), kind: "mark"});
      }
    }
    for (const marker of this.markers) {
      const x = this.xOfTime(marker.time);
      if (x !== null && x !== undefined && this.times.length && marker.time >= this.times[0]) {
        lines.push({x, label: marker.label, kind: "run"});
      }
    }
    return lines;
  }

  drawRegions(u) {
    if (!this.times.length) return;
    const {ctx, bbox} = u;
    ctx.save();
    ctx.beginPath();
    ctx.rect(bbox.left, bbox.top, bbox.width, bbox.height);
    ctx.clip();
    for (const span of this.regions()) {
      const left = u.valToPos(span.x0, "x", true);
      const right = u.valToPos(span.x1, "x", true);
      if (right < bbox.left || left > bbox.left + bbox.width) continue;
      ctx.fillStyle = span.colour;
      ctx.fillRect(left, bbox.top, Math.max(1, right - left), bbox.height);
    }
    ctx.restore();
  }

  drawLines(u, subIndex) {
    if (subIndex === 0) this.drawLabels(u);
    if (!this.times.length) return;
    const {ctx, bbox} = u;
    const ratio = devicePixelRatio;
    ctx.save();
    ctx.beginPath();
    ctx.rect(bbox.left, bbox.top, bbox.width, bbox.height);
    ctx.clip();
    ctx.lineWidth = ratio;
    for (const line of this.lines()) {
      const x = Math.round(u.valToPos(line.x, "x", true));
      if (x < bbox.left || x > bbox.left + bbox.width) continue;
      ctx.strokeStyle = line.kind === "run" ? MARKER_COLOUR : "#3d4450";
      ctx.lineWidth = (line.kind === "run" ? 2 : 1) * ratio;
      ctx.setLineDash(line.kind === "run" ? [] : [4 * ratio, 3 * ratio]);
      ctx.beginPath();
      ctx.moveTo(x, bbox.top);
      ctx.lineTo(x, bbox.top + bbox.height);
      ctx.stroke();
    }
    ctx.restore();
  }

  /**
   * The labels of the regions (top row, inside their span) and of the lines (the rows below,
   * right of their line, or left of it near the right edge), as elements over the first sub
   * plot's plotting area: never outside it, never over one another (a label with no free row
   * is left out; the read-out still names the value under the cursor).
   */
  drawLabels(u) {
    const layer = this.labels;
    if (!layer) return;
    const width = u.over.clientWidth;
    const label = (text, kind, left, row, maxWidth) => {
      const element = h("span.plot-label", {"data-testid": "plot-label", "data-kind": kind}, text);
      element.style.left = `${left}px`;
      element.style.top = `${2 + row * LABEL_ROW_HEIGHT}px`;
      if (maxWidth !== undefined) element.style.maxWidth = `${maxWidth}px`;
      return element;
    };
    const elements = [];
    for (const span of this.times.length ? this.regions() : []) {
      const left = Math.max(0, u.valToPos(span.x0, "x")) + LABEL_GAP;
      const right = Math.min(width, u.valToPos(span.x1, "x")) - LABEL_GAP;
      if (right - left >= 28) elements.push(label(String(span.value), "block", left, 0, right - left));
    }
    layer.replaceChildren(...elements);
    const rowEnds = new Array(LABEL_ROWS).fill(-Infinity);
    const lines = (this.times.length ? this.lines() : [])
      .map((line) => ({...line, pos: u.valToPos(line.x, "x")}))
      .filter((line) => line.pos >= 0 && line.pos <= width)
      .sort((a, b) => a.pos - b.pos);
    for (const line of lines) {
      const element = label(line.label.slice(0, 60), line.kind, 0, 1);
      layer.append(element);
      const size = Math.min(element.offsetWidth, width);
      let left = line.pos + LABEL_GAP;
      if (left + size > width) left = Math.max(0, line.pos - LABEL_GAP - size);
      const row = rowEnds.findIndex((end) => left >= end + LABEL_GAP);
      if (row < 0) {
        element.remove();
        continue;
      }
      rowEnds[row] = left + size;
      element.style.left = `${left}px`;
      element.style.top = `${2 + (row + 1) * LABEL_ROW_HEIGHT}px`;
    }
  }

  showReadout(u) {
    const index = u.cursor.idx;
    if (index === null || index === undefined) {
      this.readout.textContent = "";
      return;
    }
    const row = this.rowAt(index);
    if (row === undefined) return;
    const parts = [`Time ${clock(this.times[row])}`];
    if (this.xChoice !== TIME) parts.push(`${this.xChoice} ${this.reading(this.xChoice, this.numbers.get(this.xChoice)[row])}`);
    for (const tag of this.categorical) parts.push(`${tag}: ${this.reading(tag, this.raw.get(tag)[row])}`);
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
