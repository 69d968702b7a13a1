// The process unit page: header with run controls, process values, commands, the method
// editor, the run log, the live plot and the error log. Everything live arrives as deltas of
// the unit (topics values, trend, run_log, method, control_state, error_log and the unit's
// `units` summary); after every (re)connection the page refetches its state over REST.
//
// RunLogView, ErrorLogView and loadEditor are shared with the recent run page (run.js).

import {
  ApiError, api, clear, confirmDialog, formatDate, formatDuration, formatTime, formatValue, h, live, stateBadge, toSeconds,
  toast, userName,
} from "./api.js";
import {ProcessPlot, joinSeries} from "./plot.js";
import {Splitter} from "./splitter.js";
import {Tabs} from "./tabs.js";
import {ProcessDiagram} from "./diagram.js";

const STOP_UNLOCK_MS = 4000;
// The page fills the window (trend, values and tabs side by side) where there is room for it;
// style.css has the same query.
const WIDE_LAYOUT = "(min-width: 1100px) and (min-height: 640px)";
const MIN_PLOT_HEIGHT = 160;
const PRESENCE_NAME_CHARS = 60; // as pectus.actors.ui_hub.PRESENCE_NAME_CHARS
const LOCK_CLOSED = '<svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true" focusable="false">' +
  '<rect x="3" y="7" width="10" height="8" rx="1.5" fill="currentColor"/>' +
  '<path d="M5 7V5a3 3 0 0 1 6 0v2" fill="none" stroke="currentColor" stroke-width="1.6"/></svg>';
const LOCK_OPEN = '<svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true" focusable="false">' +
  '<rect x="3" y="7" width="10" height="8" rx="1.5" fill="currentColor"/>' +
  '<path d="M5 7V5a3 3 0 0 1 5.8-1" fill="none" stroke="currentColor" stroke-width="1.6"/></svg>';

function icon(svg) {
  const span = document.createElement("span");
  span.className = "icon";
  span.innerHTML = svg; // a constant of this module, never data
  return span;
}
const DIRECTIONS = [["input", "Input"], ["output", "Output"], ["na", "N/A"], ["unspecified", "Unspecified"]];

// -- the method editor (editor.js), with a plain fallback -----------------------------------------

/** createEditor from editor.js; a <textarea> with the same API if it cannot be loaded. */
export async function loadEditor() {
  try {
    const module = await import("./editor.js");
    return module.createEditor;
  } catch (error) {
    console.error("editor.js could not be loaded; using a plain text box", error);
    return plainEditor;
  }
}

function plainEditor(parent, {text = "", lines = null, onChange = null, readOnly = false, label = "P-code method"} = {}) {
  const area = h("textarea.plain-editor", {"aria-label": label, spellcheck: "false", readonly: readOnly});
  let ids = [];
  let saved = "";
  const load = (newLines) => {
    ids = newLines.map((line) => String(line.id));
    area.value = newLines.map((line) => line.text).join("\n");
    saved = area.value;
  };
  load(lines || text.split("\n").map((line, index) => ({id: `id_${index + 1}`, text: line})));
  area.addEventListener("input", () => onChange && onChange(area.value, area.value !== saved));
  parent.append(area);
  return {
    getText: () => area.value,
    setText: (value) => load(String(value).split("\n").map((line, index) => ({id: `id_${index + 1}`, text: line}))),
    getLines: () => area.value.split("\n").map((line, index) => ({id: ids[index] || `new_${Date.now()}_${index}`, text: line})),
    setLines: load,
    isDirty: () => area.value !== saved,
    markSaved: () => {
      saved = area.value;
    },
    setLineStates: () => {},
    setReadOnly: (on) => {
      area.readOnly = Boolean(on);
    },
    destroy: () => area.remove(),
  };
}

/** {line_id: state} -> {executed: [ids], started: [ids], failed: [ids]}. */
export function lineStateSets(lineStates) {
  const sets = {executed: [], started: [], failed: []};
  for (const [id, state] of Object.entries(lineStates || {})) if (sets[state]) sets[state].push(id);
  return sets;
}

// -- run log ---------------------------------------------------------------------------------------

function itemStart(item, firstSeen) {
  if (item.start != null) return item.start;
  if (firstSeen.has(item.id)) return firstSeen.get(item.id);
  return item.state === "started" ? item.time : null;
}

function itemEnd(item) {
  if (item.end != null) return item.end;
  return item.state && item.state !== "started" ? item.time : null;
}

/** A tag's value as a person reads it: as its UOD says (`format` date_time or duration, `decimals`),
 *  else as formatValue does, and a number followed by its unit ("40 %", "12.5 L/h"). `tag` is
 *  {name, unit, format, decimals} (a process value of the API), any of them missing. */
export function valueWithUnit(value, tag = {}) {
  const {name = "", unit = null, format = null, decimals = null} = tag;
  const number = typeof value === "number" && Number.isFinite(value);
  if (number && format === "date_time") return formatDate(value);
  if (number && format === "duration") return formatDuration(value);
  const text = number && Number.isInteger(decimals) ? value.toFixed(decimals) : formatValue(value, unit, name);
  return unit && /^[-+]?\d[\d.]*(?:e[-+]?\d+)?$/i.test(text) ? `${text} ${unit}` : text;
}

function valueChips(values, tagOf) {
  const entries = Object.entries(values || {});
  if (!entries.length) return h("span.muted", "none recorded");
  return h("ul.chips", entries.map(([name, value]) => h("li.chip", {"data-tag": name},
    h("span.chip-name", name), " ", h("span.chip-value", valueWithUnit(value, {name, ...tagOf(name)})))));
}

export class RunLogView {
  /** `act(kind, item)` (kind "force" | "cancel") is called after confirmation; null: read-only.
   *  `tagOf(name)` tells how to show a tag's values at an item's start and end: {unit, format,
   *  decimals} (valueWithUnit), or nothing. */
  constructor({act = null, tagOf = () => null} = {}) {
    this.act = act;
    this.tagOf = tagOf;
    this.items = new Map(); // id -> {item, row, details}
    this.firstSeen = new Map();
    this.filter = "";
    this.runningOnly = false;
    this.tbody = h("tbody");
    this.status = h("p.table-status", {role: "status", "data-testid": "run-log-status"});
    const filterInput = h("input#run-log-filter", {type: "search", "data-testid": "run-log-filter", placeholder: "Time or instruction",
      oninput: () => {
        this.filter = filterInput.value.trim().toLowerCase();
        this.applyFilter();
      }});
    const running = h("input#run-log-running", {type: "checkbox", "data-testid": "run-log-running-only", onchange: () => {
      this.runningOnly = running.checked;
      this.applyFilter();
    }});
    this.element = h("div.run-log", {"data-testid": "run-log"},
      h("div.toolbar",
        h("label", {for: "run-log-filter"}, "Filter"), filterInput,
        h("label.checkbox", running, " Running only"),
        h("button", {type: "button", "data-testid": "run-log-expand-all", onclick: () => this.expandAll(true)}, "Expand all"),
        h("button", {type: "button", "data-testid": "run-log-collapse-all", onclick: () => this.expandAll(false)}, "Collapse all")),
      h("div.table-scroll.run-log-scroll",
        h("table.run-log-table",
          h("caption.visually-hidden", "Run log: each instruction that ran, in start order"),
          h("thead", h("tr", h("th", {scope: "col"}, "Start"), h("th", {scope: "col"}, "End"),
            h("th", {scope: "col"}, "Instruction"), h("th", {scope: "col"}, h("span.visually-hidden", "Actions")))),
          this.tbody)),
      this.status);
    this.updateStatus();
  }

  reset(items) {
    this.items.clear();
    this.tbody.replaceChildren();
    this.merge(items || []);
  }

  merge(changed) {
    const now = Date.now() / 1000;
    for (const update of changed) {
      const id = update.id;
      if (!this.firstSeen.has(id)) this.firstSeen.set(id, update.start ?? (update.state === "started" ? update.time ?? now : null));
      const known = this.items.get(id);
      const item = known ? {...known.item, ...update} : {...update};
      if (known) {
        known.item = item;
        this.fill(known);
      } else {
        const entry = {item, row: h("tr.run-log-row"), details: null, expanded: false};
        this.items.set(id, entry);
        this.fill(entry);
        this.insert(entry);
      }
    }
    this.applyFilter();
  }

  insert(entry) {
    const id = Number(entry.item.id);
    let before = null;
    for (const row of this.tbody.children) {
      if (row.classList.contains("run-log-row") && Number(row.dataset.itemId) > id) {
        before = row;
        break;
      }
    }
    this.tbody.insertBefore(entry.row, before);
    if (entry.details) entry.row.after(entry.details);
  }

  fill(entry) {
    const {item, row} = entry;
    const start = itemStart(item, this.firstSeen);
    const end = itemEnd(item);
    const state = item.forced ? "forced" : item.cancelled ? "cancelled" : item.state || "started";
    row.dataset.itemId = String(item.id);
    row.dataset.state = state;
    row.dataset.testid = "run-log-row";
    row.setAttribute("data-testid", "run-log-row");
    row.className = `run-log-row state-${state}`;
    let endCell;
    if (end != null) {
      endCell = formatTime(end);
    } else if (item.progress != null) {
      const percent = Math.round(Math.max(0, Math.min(1, item.progress)) * 100);
      endCell = h("span.progress", h("progress", {max: 100, value: percent, "aria-label": `${item.name}: ${percent}%`}), ` ${percent}%`);
    } else {
      endCell = h("span.progress", h("progress", {"aria-label": `${item.name}: running`}), " running");
    }
    const toggle = h("button.expand", {type: "button", "aria-expanded": entry.expanded ? "true" : "false",
      "data-testid": "run-log-expand", title: "Values at start and end", onclick: () => this.toggle(entry)}, entry.expanded ? "▾" : "▸");
    const actions = [];
    if (this.act && item.state === "started") {
      if (item.forcible) {
        actions.push(h("button.small", {type: "button", "data-testid": "run-log-force", "aria-label": `Force ${item.name}`,
          onclick: () => this.confirm("force", item)}, "Force"));
      }
      if (item.cancellable) {
        actions.push(h("button.small.danger-outline", {type: "button", "data-testid": "run-log-cancel", "aria-label": `Cancel ${item.name}`,
          onclick: () => this.confirm("cancel", item)}, "Cancel"));
      }
    }
    const badge = state === "started" ? null : h("span.item-state", ` (${state})`);
    clear(row,
      h("td.time", start != null ? formatTime(start) : "—"),
      h("td.time", endCell),
      h("td.instruction", toggle, " ", h("span", item.name), badge, item.line ? h("span.muted", ` line ${item.line}`) : null),
      h("td.actions", actions));
    row.dataset.search = [start != null ? formatTime(start) : "", end != null ? formatTime(end) : "", item.name || ""]
      .join(" ").toLowerCase();
    if (entry.expanded) this.fillDetails(entry);
  }

  fillDetails(entry) {
    const {item} = entry;
    if (!entry.details) {
      entry.details = h("tr.run-log-details", {"data-testid": "run-log-details", "data-item-id": String(item.id)});
      entry.row.after(entry.details);
    }
    const hasValues = item.start_values !== undefined || item.end_values !== undefined;
    clear(entry.details, h("td", {colspan: 4},
      hasValues
        ? h("dl.values-at",
          h("dt", "At start:"), h("dd", valueChips(item.start_values, this.tagOf)),
          h("dt", "At end:"), h("dd", item.end_values ? valueChips(item.end_values, this.tagOf) : h("span.muted", "not ended")))
        : h("span.muted", "No values were recorded for this item.")));
    entry.details.hidden = entry.row.hidden;
  }

  toggle(entry, open = !entry.expanded) {
    entry.expanded = open;
    if (open) this.fillDetails(entry);
    else if (entry.details) {
      entry.details.remove();
      entry.details = null;
    }
    const button = entry.row.querySelector("button.expand");
    if (button) {
      button.setAttribute("aria-expanded", open ? "true" : "false");
      button.textContent = open ? "▾" : "▸";
    }
  }

  expandAll(open) {
    for (const entry of this.items.values()) this.toggle(entry, open);
  }

  async confirm(kind, item) {
    const verb = kind === "force" ? "Force" : "Cancel";
    const detail = kind === "force"
      ? "Forcing ends the wait or condition of this instruction now and goes on with the method."
      : "Cancelling stops this instruction; the method goes on without it.";
    if (await confirmDialog(`${verb} '${item.name}'?`, detail, {ok: verb, danger: kind === "cancel"})) this.act(kind, item);
  }

  applyFilter() {
    let shown = 0;
    for (const entry of this.items.values()) {
      const visible = (!this.runningOnly || entry.item.state === "started") &&
        (!this.filter || entry.row.dataset.search.includes(this.filter));
      entry.row.hidden = !visible;
      if (entry.details) entry.details.hidden = !visible;
      if (visible) shown += 1;
    }
    this.updateStatus(shown);
  }

  updateStatus(shown = 0) {
    this.status.textContent = this.items.size === 0 ? "No run log yet."
      : shown === 0 ? "No item matches the filter." : `${shown} of ${this.items.size} items`;
  }

  /** The instruction of item `id` ("Wait: 60 s"), or null when the log has no such item. */
  itemName(id) {
    const entry = this.items.get(Number(id));
    return entry ? entry.item.name : null;
  }
}

// -- error log ---------------------------------------------------------------------------------------

export class ErrorLogView {
  constructor() {
    this.entries = new Map();
    this.list = h("ol.error-log", {"data-testid": "error-log", "aria-label": "Errors and warnings, newest first"});
    this.status = h("p.table-status", {role: "status"});
    this.element = h("div", this.list, this.status);
    this.render();
  }

  reset(entries) {
    this.entries.clear();
    this.merge(entries || []);
  }

  merge(changed) {
    for (const entry of changed) this.entries.set(entry.id, {...(this.entries.get(entry.id) || {}), ...entry});
    this.render();
  }

  render() {
    const entries = [...this.entries.values()].sort((a, b) => Number(b.id) - Number(a.id));
    clear(this.list, entries.map((entry) => {
      const count = entry.occurrences > 99 ? "99+" : String(entry.occurrences || 1);
      return h("li.error-entry", {class: `severity-${entry.severity}`, "data-testid": "error-log-entry",
        "data-entry-id": String(entry.id), "data-severity": entry.severity},
      h("time", {datetime: entry.time}, formatDate(entry.time, {millis: true})), " ",
      h("span.severity", `[${entry.severity === "warning" ? "warn" : entry.severity}]`), " ",
      h("span.message", entry.message),
      entry.line ? h("span.muted", ` (line ${entry.line})`) : null,
      (entry.occurrences || 1) > 1
        ? h("span.count", {"data-testid": "error-count", title: `Occurred ${entry.occurrences} times, first at ${formatDate(entry.first_time)}`,
          "aria-label": `occurred ${entry.occurrences} times`}, count)
        : null);
    }));
    this.status.textContent = entries.length ? "" : "No errors or warnings.";
  }
}

// -- the page ------------------------------------------------------------------------------------------

export function mount(root, [unitId]) {
  const base = api.unit(unitId);
  document.title = `${unitId} — Pectus`;
  clear(document.getElementById("breadcrumb"), h("a", {href: "/"}, "Dashboard"), " / ", h("span", {"aria-current": "page"}, unitId));

  let unit = null;
  let control = {is_running: false, is_paused: false, is_holding: false};
  let vocabulary = {tags: [], commands: [], instructions: [], base_units: []};
  let vocabularyReady = null;
  const values = new Map(); // name -> process value
  let showAll = false;
  let runId = null; // the unit's active run (the plot shows it)
  let logRun = null; // the run the run log shows
  let errorRun = null; // the run the error log shows (null: the unit between runs)
  let plot = null;
  let plotConfigJson = null;
  let plotRun = null; // the run the plot shows from its record: {start, end} (epoch s; end null while it goes on)
  let editor = null;
  let method = null; // the server's latest {version, lines, line_states, last_author}
  let baseVersion = null; // the version our editor text is based on
  let conflict = null;
  let saving = false;
  let stopTimer = null;
  let destroyed = false;

  // -- header and run controls

  const title = h("h1.unit-name", {"data-testid": "unit-name"}, unitId);
  const facts = h("p.unit-facts");
  const stateSlot = h("span.unit-state-slot");
  const errorBanner = h("div.banner.banner-error", {role: "alert", "data-testid": "unit-error-banner", hidden: true},
    h("strong", "Interrupted by error!"), " The run is paused on an error: ",
    h("button.link-button", {type: "button", "data-testid": "unit-error-link", onclick: () => showNewestError()}, "see the error log"), ".");
  // Updated in place, never rebuilt: the header renders on every change of the unit, and a link
  // replaced while it is being clicked would lose the click.
  const runEndedTime = h("span");
  const runEndedLink = h("a", {"data-testid": "run-ended-link"}, "see the run");
  const runEnded = h("span.run-ended", {"data-testid": "run-ended", hidden: true}, "Run ended ", runEndedTime, " — ", runEndedLink);
  const presence = h("div.presence", {"data-testid": "presence", "aria-live": "polite"});
  const offlineBanner = h("div.banner.banner-offline", {role: "status", "data-testid": "unit-offline-banner", hidden: true},
    h("strong", "The unit is offline."), " Shown is what it last reported; it cannot be controlled until its engine reconnects.");
  const missing = h("div.banner.banner-error", {role: "alert", "data-testid": "unit-missing", hidden: true});

  const controlButton = (id, label, onclick) => h(`button.control#${id}`, {type: "button", "data-testid": id, "aria-pressed": "false", onclick}, label);
  const startButton = controlButton("control-start", "Start", () => sendControl("Start", startButton));
  const pauseButton = controlButton("control-pause", "Pause", () => sendControl(control.is_paused ? "Unpause" : "Pause", pauseButton));
  const holdButton = controlButton("control-hold", "Hold", () => sendControl(control.is_holding ? "Unhold" : "Hold", holdButton));
  const stopButton = h("button.control.danger#control-stop", {type: "button", "data-testid": "control-stop", disabled: true,
    "aria-describedby": "control-stop-hint", onclick: stopClicked}, "Stop");
  const stopLock = h("button.control.lock#control-stop-lock", {type: "button", "data-testid": "control-stop-lock",
    "aria-pressed": "false", onclick: toggleStopLock}, icon(LOCK_CLOSED), "Unlock Stop");
  const controls = h("div.run-controls#run-controls", {role: "group", "aria-label": "Run controls", "data-testid": "run-controls"},
    startButton, pauseButton, holdButton, h("span.stop-pair", stopLock, stopButton),
    h("span#control-stop-hint.visually-hidden", "Stop is locked: unlock it first, then confirm."));

  // One compact band: who and what the unit is doing on the left, the controls on the right.
  const header = h("header.unit-header",
    h("div.unit-heading", h("div.unit-title", title, stateSlot, runEnded), facts),
    controls, presence);
  const banners = h("div.unit-banners", errorBanner, offlineBanner, missing);

  // -- process values

  const tiles = h("div.tiles", {"data-testid": "process-values"});
  const allToggle = h("input#values-all", {type: "checkbox", "data-testid": "values-all", onchange: () => {
    showAll = allToggle.checked;
    renderTiles();
  }});
  const tileElements = new Map(); // name -> {element, valueText, unitText, simulated, editor, open}
  // The open tile editor: a popover in the top layer, anchored under its tile, so opening it
  // moves no tile of the grid. One at a time; Escape, Close or a press outside closes it.
  let openEditor = null; // {name, entry}

  // -- commands

  const exampleList = h("ul.example-list", {"data-testid": "command-examples", "aria-label": "Command examples"});
  const examplePreview = h("div.example-preview", {"data-testid": "command-example-preview", "aria-live": "polite"},
    h("p.muted", "Choose an example to see it here."));
  const injectBox = h("textarea#inject-code", {"data-testid": "inject-code", rows: 5, spellcheck: "false",
    placeholder: "e.g. Mark: Sample taken", onkeydown: (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        inject();
      }
    }});
  const injectError = h("p.field-error", {role: "alert", "data-testid": "inject-error"});
  const injectButton = h("button.primary#inject-run", {type: "button", "data-testid": "inject-run", onclick: () => inject()}, "Run now");

  // -- method

  const editorHost = h("div.editor-host#method-editor", {"data-testid": "method-editor"});
  const saveButton = h("button.primary#method-save", {type: "button", "data-testid": "method-save", onclick: () => save()}, "Save method");
  const methodStatus = h("span.method-status", {"data-testid": "method-status", role: "status"});
  const conflictBanner = h("div.banner.banner-warning", {role: "alert", "data-testid": "method-conflict", hidden: true});

  // -- run log, plot, errors

  const runLog = new RunLogView({act: (kind, item) => runLogAction(kind, item),
    tagOf: (name) => values.get(name) || vocabulary.tags.find((tag) => tag.name === name)});
  const errorLog = new ErrorLogView();
  const plotHost = h("div.plot-host#unit-plot", {"data-testid": "plot"});

  const diagramHost = h("div.diagram-host#unit-diagram", {"data-testid": "process-diagram"});

  // -- layout: the trend as the main area (with the process diagram as its other view), the
  // process values beside it, the method, run log, commands and error log in tabs under it.

  const views = new Tabs({id: "unit-view", label: "Trend or process diagram", className: "unit-views",
    storageKey: `pectus.unit-view:${unitId}`, onShow: () => fitTrend(), tabs: [
      {key: "trend", label: "Trend", testid: "view-trend", content: plotHost},
      {key: "diagram", label: "Process diagram", testid: "view-diagram", content: diagramHost, hidden: true},
    ]});
  // The count as a badge for the eye, and in words for a screen reader (the tab's name).
  const errorTabCount = h("span.tab-count", {"data-testid": "tab-error-count", "aria-hidden": "true", hidden: true});
  const errorTabWords = h("span.visually-hidden");
  const work = new Tabs({id: "unit-work", label: "Method, run log, commands and error log", className: "unit-work",
    storageKey: `pectus.unit-work:${unitId}`, onShow: (key) => {
      if (key === "method" && editor && editor.view) editor.view.requestMeasure(); // measured while hidden: 0 px
    }, tabs: [
      {key: "method", label: "Method", testid: "tab-method", content: h("section#method-panel.work-panel", {"aria-label": "Method"},
        h("div.toolbar.method-toolbar", saveButton, methodStatus), conflictBanner, editorHost)},
      {key: "run-log", label: "Run log", testid: "tab-run-log", content: h("section#run-log-panel.work-panel", {"aria-label": "Run log"},
        runLog.element)},
      {key: "commands", label: "Commands", testid: "tab-commands", content: h("section#commands-panel.work-panel", {"aria-label": "Commands"},
        h("div.commands",
          h("div.commands-examples", h("h3", "Examples"), exampleList),
          h("div.commands-preview", h("h3", "Example"), examplePreview),
          h("div.commands-inject",
            h("label", {for: "inject-code"}, h("h3", "P-code to run now")),
            injectBox, h("div.toolbar", injectButton, h("span.muted", "Ctrl+Enter runs it")), injectError)))},
      {key: "errors", label: ["Error log", errorTabCount, errorTabWords], testid: "tab-error-log",
        content: h("section#error-log-panel.work-panel", {"aria-label": "Error log"}, errorLog.element)},
    ]});
  const valuesPanel = h("section#values-panel.unit-values", {"aria-labelledby": "values-heading"},
    h("div.section-head", h("h2#values-heading", "Process values"), h("label.checkbox", allToggle, " All process values")),
    h("div.values-scroll", tiles));
  const trend = h("section#plot-panel.unit-trend", {"aria-label": "Trend"}, views.element);
  const layout = h("div.unit-layout", trend, valuesPanel, work.element);
  // Between the trend and the tabs: room to write the method, or to watch the trend.
  const split = new Splitter({grid: layout, upper: trend, label: "Height of the trend against the tabs",
    storageKey: "pectus.unit-split"});
  trend.after(split.element);
  root.classList.add("unit-page");
  root.append(header, banners, layout);

  const wide = window.matchMedia(WIDE_LAYOUT);
  const fitter = new ResizeObserver(() => fitTrend());
  fitter.observe(trend);
  fitter.observe(plotHost);
  wide.addEventListener("change", fitTrend);

  /** The plot fills the trend area in the wide layout: the sub plots share the height the
   * toolbar, legends and read-out leave (measured, as they depend on the width). */
  function fitTrend() {
    if (!plot || views.selected !== "trend") return;
    if (!wide.matches) {
      plotHost.style.removeProperty("--plot-height");
    } else {
      const current = parseFloat(getComputedStyle(plotHost).getPropertyValue("--plot-height")) || 420;
      const room = trend.clientHeight - views.tablist.offsetHeight - plotHost.offsetHeight;
      if (Math.abs(room) < 2) return;
      plotHost.style.setProperty("--plot-height", `${Math.max(MIN_PLOT_HEIGHT, Math.round(current + room))}px`);
    }
    plot.resize();
  }

  /** The error banner's link: the Error log tab, its newest entry focused. */
  function showNewestError() {
    work.select("errors");
    const newest = errorLog.list.querySelector('[data-testid="error-log-entry"]');
    if (!newest) {
      work.tab("errors").focus();
      return;
    }
    newest.tabIndex = -1;
    newest.focus();
    newest.scrollIntoView({block: "nearest"});
  }

  /** The others who have this page open (the aggregator's presence of the unit, less this page). */
  function renderPresence({people = [], total = 0}) {
    const me = presenceName(userName());
    let mine = 1;
    const others = [];
    for (const {name, count} of people) {
      const left = name === me ? count - mine : count;
      if (name === me) mine = 0;
      if (left > 0) others.push({name, count: left});
    }
    const unlisted = total - 1 - others.reduce((sum, person) => sum + person.count, 0);
    if (!others.length && unlisted <= 0) {
      clear(presence);
      return;
    }
    clear(presence, h("span", "Also here:"),
      others.map(({name, count}) => h("span.presence-person", {"data-testid": "presence-person", "data-name": name, title: name},
        h("span.presence-initial", {"aria-hidden": "true"}, [...name][0].toUpperCase()),
        h("span.presence-name", name), count > 1 ? h("span.muted", ` ×${count}`) : null)),
      unlisted > 0 ? h("span", `and ${unlisted} more`) : null);
  }

  function renderErrorCount() {
    const count = errorLog.entries.size;
    errorTabCount.hidden = count === 0;
    errorTabCount.textContent = count > 99 ? "99+" : String(count);
    errorTabWords.textContent = count ? ` (${count} ${count === 1 ? "entry" : "entries"})` : "";
  }

  // -- header rendering

  function renderHeader() {
    if (!unit) return;
    title.textContent = unit.name || unit.id;
    document.title = `${unit.name || unit.id} — Pectus`;
    const state = unit.run_state || (unit.state === "offline" ? "offline" : "ready");
    clear(stateSlot, stateBadge(state));
    const author = unit.uod_author_name
      ? [h("span", "UOD by ", unit.uod_author_name), unit.uod_author_email ? [" ", h("a", {href: `mailto:${unit.uod_author_email}`}, `<${unit.uod_author_email}>`)] : null]
      : null;
    clear(facts,
      author, author ? " · " : null,
      unit.location ? [h("span", "Location: ", unit.location), " · "] : null,
      unit.run_id ? h("span", "Run started ", formatDate(unit.run_started)) : h("span", "No run"),
      (unit.contributors || []).length ? [" · ", h("span", "Contributors: ", unit.contributors.map((c) => c.name).join(", "))] : null);
    errorBanner.hidden = state !== "error";
    offlineBanner.hidden = unit.state !== "offline";
    // Between runs: the run that just ended, one step away (its record, plot and logs).
    runEnded.hidden = Boolean(unit.run_id) || !unit.last_run_id;
    if (!runEnded.hidden) {
      runEndedTime.textContent = unit.last_run_completed ? formatDate(unit.last_run_completed) : "";
      runEndedLink.href = `/runs/${encodeURIComponent(unit.last_run_id)}`;
    }
    views.setHidden("diagram", !unit.process_diagram);
    showDiagram(Boolean(unit.process_diagram));
    renderControls();
  }

  function renderControls() {
    const offline = !unit || unit.state === "offline";
    const running = Boolean(control.is_running);
    controls.dataset.state = !running ? "stopped" : control.is_paused ? "paused" : control.is_holding ? "holding" : "running";
    startButton.setAttribute("aria-pressed", String(running));
    startButton.disabled = offline || running;
    pauseButton.textContent = control.is_paused ? "Unpause" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(Boolean(control.is_paused)));
    pauseButton.disabled = offline || !running;
    holdButton.textContent = control.is_holding ? "Unhold" : "Hold";
    holdButton.setAttribute("aria-pressed", String(Boolean(control.is_holding)));
    holdButton.disabled = offline || !running;
    stopButton.setAttribute("aria-pressed", String(!running));
    const unlocked = stopTimer !== null;
    stopLock.disabled = offline || !running;
    stopButton.disabled = offline || !running || !unlocked;
    if ((offline || !running) && unlocked) lockStop();
    for (const button of [startButton, pauseButton, holdButton, stopButton]) button.removeAttribute("aria-busy");
  }

  function toggleStopLock() {
    if (stopTimer !== null) {
      lockStop();
      return;
    }
    stopTimer = setTimeout(lockStop, STOP_UNLOCK_MS);
    stopLock.setAttribute("aria-pressed", "true");
    clear(stopLock, icon(LOCK_OPEN), "Lock Stop");
    renderControls();
    stopButton.focus();
  }

  function lockStop() {
    clearTimeout(stopTimer);
    stopTimer = null;
    stopLock.setAttribute("aria-pressed", "false");
    clear(stopLock, icon(LOCK_CLOSED), "Unlock Stop");
    stopButton.disabled = true;
  }

  async function stopClicked() {
    clearTimeout(stopTimer); // the dialog is the second step: keep unlocked while it is open
    stopTimer = -1;
    const sure = await confirmDialog("Stop the run?", "The method ends now. A stopped run cannot be resumed.", {ok: "Stop the run", danger: true});
    lockStop();
    renderControls();
    if (sure) sendControl("Stop", stopButton);
  }

  async function sendControl(command, button) {
    button.setAttribute("aria-busy", "true");
    try {
      await api.post(`${base}/control`, {command});
    } catch (error) {
      button.removeAttribute("aria-busy");
      toast(`${command}: ${error.message}`, "error");
      return;
    }
    setTimeout(() => button.removeAttribute("aria-busy"), 1500);
  }

  // -- process values

  function visibleValues() {
    const all = [...values.values()];
    if (showAll) return all;
    const readings = all.filter((value) => value.kind || (value.commands && value.commands.length));
    return readings.length ? readings : all;
  }

  function renderTiles() {
    closeTileEditor(); // its tile is made again
    tileElements.clear();
    if (!values.size) {
      clear(tiles, h("p.empty", "No process values yet."));
      return;
    }
    if (!showAll) {
      clear(tiles, h("div.tile-grid", visibleValues().map(tile)));
      return;
    }
    const groups = new Map(DIRECTIONS.map(([key]) => [key, []]));
    for (const value of values.values()) {
      const key = groups.has(value.direction) ? value.direction : "unspecified";
      groups.get(key).push(value);
    }
    clear(tiles, DIRECTIONS.filter(([key]) => groups.get(key).length).map(([key, label]) => h("section.tile-group",
      {"aria-label": label, "data-direction": key},
      h("h3", label),
      h("div.tile-grid", groups.get(key).sort((a, b) => a.name.localeCompare(b.name)).map(tile)))));
  }

  function tile(value) {
    const commands = value.commands || [];
    const valueText = h("span.tile-value", {"data-testid": "tile-value"});
    const unitText = h("span.tile-unit", {"data-testid": "tile-unit-label"});
    const simulated = h("span.badge.simulated", {"data-testid": "tile-simulated", hidden: true, title: "Simulated value"}, "Simulated");
    const nameId = `tile-name-${cssId(value.name)}`;
    const body = h("div.tile-body", h("span.tile-name", {id: nameId}, value.name), h("span.tile-reading", valueText, " ", unitText), simulated);
    const element = h("div.tile", {"data-testid": "tile", "data-tag": value.name, role: "group", "aria-labelledby": nameId});
    const entry = {element, valueText, unitText, simulated, editor: null, open: null};
    tileElements.set(value.name, entry);
    if (commands.length) {
      // Named by what it shows after a word for what it does: a name must contain the visible text.
      entry.open = h("button.tile-open", {type: "button", "aria-expanded": "false", "data-testid": "tile-open",
        onclick: () => (openEditor && openEditor.entry === entry ? closeTileEditor() : openTileEditor(value.name))},
      h("span.visually-hidden", "Change "), body);
      element.classList.add("has-commands");
      element.append(entry.open);
    } else {
      element.tabIndex = -1; // focusable from elsewhere on the page (pectus:open-tag)
      element.append(body);
    }
    updateTile(value.name);
    return element;
  }

  function updateTile(name) {
    const entry = tileElements.get(name);
    const value = values.get(name);
    if (!entry || !value) return;
    // The value as its tag says to show it (format, decimals); the unit is the tile's own label,
    // left out where the format says it (a date and time, a duration as a clock).
    entry.valueText.textContent = valueWithUnit(value.value, {...value, unit: null});
    const formatted = value.format === "date_time" || value.format === "duration";
    entry.unitText.textContent = value.unit && !formatted ? value.unit : "";
    entry.simulated.hidden = !value.simulated;
    entry.element.classList.toggle("simulated", Boolean(value.simulated));
    if (entry.editor && entry.editor.refresh) entry.editor.refresh();
  }

  function openTileEditor(name) {
    closeTileEditor();
    const entry = tileElements.get(name);
    if (!entry || !entry.open) return;
    entry.editor = tileEditor(name, () => {
      closeTileEditor();
      entry.open.focus();
    });
    const popover = entry.editor.element;
    popover.id = `tile-editor-${cssId(name)}`;
    popover.popover = "manual";
    anchorBelow(popover, entry.element, `--tile-${cssId(name)}`);
    popover.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        closeTileEditor();
        entry.open.focus();
      }
    });
    entry.element.append(popover);
    popover.showPopover();
    entry.open.setAttribute("aria-expanded", "true");
    entry.open.setAttribute("aria-controls", popover.id); // only while the editor exists
    openEditor = {name, entry};
    const first = popover.querySelector("input, select, button");
    if (first) first.focus();
  }

  function closeTileEditor() {
    if (!openEditor) return;
    const {entry} = openEditor;
    openEditor = null;
    if (entry.editor) {
      if (entry.editor.element.matches(":popover-open")) entry.editor.element.hidePopover();
      entry.editor.element.remove();
      entry.editor = null;
    }
    entry.open.setAttribute("aria-expanded", "false");
    entry.open.removeAttribute("aria-controls");
  }

  /** Place ``popover`` under ``anchor`` (its left edges aligned, at least as wide), flipped above
   *  or leftwards when there is no room (CSS anchor positioning), framed as a card over the page
   *  instead of the browser's default popover border. */
  function anchorBelow(popover, anchor, anchorName) {
    anchor.style.setProperty("anchor-name", anchorName);
    for (const [property, value] of [["position-anchor", anchorName], ["inset", "auto"], ["margin", "4px 0"],
      ["top", "anchor(bottom)"], ["left", "anchor(left)"], ["min-width", "anchor-size(width)"],
      ["max-width", "min(28rem, calc(100vw - 16px))"], ["position-try-fallbacks", "flip-block, flip-inline"],
      ["border", "1px solid var(--border-strong)"], ["border-radius", "var(--radius)"], ["background", "var(--surface)"],
      ["color", "var(--text)"], ["box-shadow", "0 6px 18px rgb(0 0 0 / 0.18)"]]) {
      popover.style.setProperty(property, value);
    }
  }

  root.addEventListener("pointerdown", (event) => {
    if (openEditor && !openEditor.entry.element.contains(event.target)) closeTileEditor();
  });

  // Elsewhere on the page (the process diagram, ...) asks for a tag's editor: open it, visible and focused.
  root.addEventListener("pectus:open-tag", (event) => {
    const name = event.detail && event.detail.tag;
    if (!values.has(name)) return;
    if (!tileElements.has(name)) { // not among the tiles shown: show them all
      showAll = allToggle.checked = true;
      renderTiles();
    }
    const entry = tileElements.get(name);
    entry.element.scrollIntoView({block: "nearest", inline: "nearest"});
    if (entry.open) openTileEditor(name);
    else entry.element.focus();
  });

  /** Why the entry ``text`` (in ``unit``) is not valid by the command's rules, in the engine's
   *  words ("PU01: 150 % is not a valid value: expected 0 to 100 %."), or null; the engine checks
   *  it again. Without rules (an engine that sends none) only a number is asked for. */
  function entryProblem(command, text, unit) {
    const rules = command.rules;
    const written = `${text}${unit ? ` ${unit}` : ""}`;
    const refused = (what) => `${command.name}: ${what}${rules && rules.expected ? `: expected ${rules.expected}` : ""}.`;
    if (text === "") return rules && rules.optional ? null : refused("a value is needed");
    const number = Number(text.replace(",", "."));
    const wholeOnly = rules ? rules.int_only : command.value_type === "int";
    if (!Number.isFinite(number) || (wholeOnly && !Number.isInteger(number))) {
      return rules && rules.expected ? refused(`${written} is not a valid value`)
        : `Write ${wholeOnly ? "a whole number, e.g. 10" : "a number, e.g. 12.5"}.`;
    }
    const range = rules && (rules.units || []).find((candidate) => candidate.unit === (unit || ""));
    const outside = range && ((range.minimum != null && number < range.minimum) || (range.maximum != null && number > range.maximum));
    return outside ? refused(`${written} is not a valid value`) : null;
  }

  function tileEditor(name, close) {
    const value = values.get(name);
    const command = (value.commands || [])[0];
    const message = h("p.field-error", {role: "alert", "data-testid": "tile-error"});
    const send = async (payload, busy) => {
      message.textContent = "";
      busy.setAttribute("aria-busy", "true");
      try {
        await api.post(`${base}/process_values/${encodeURIComponent(name)}`, payload);
        close();
        toast(`${name}: sent ${payload.value}${payload.unit ? ` ${payload.unit}` : ""}`);
      } catch (error) {
        message.textContent = error.status === 422 || error.status === 409 ? `The unit refused: ${error.message}` : error.message;
      } finally {
        busy.removeAttribute("aria-busy");
      }
    };
    if (command.value_type === "choice") {
      const buttons = (command.options || []).map((option) => h("button.choice", {type: "button", "data-testid": "tile-choice",
        "data-option": option, "aria-pressed": String(String(values.get(name).value) === option),
        onclick: (event) => send({value: option}, event.currentTarget)}, option));
      const element = h("div.tile-editor", {"data-testid": "tile-editor", role: "group", "aria-label": `Choose ${name}`},
        h("div.choices", buttons), message);
      return {element, refresh: () => buttons.forEach((button) => button.setAttribute("aria-pressed",
        String(String(values.get(name).value) === button.dataset.option)))};
    }
    const rules = command.rules;
    const numericType = rules ? rules.type === "number"
      : command.value_type === "float" || command.value_type === "int" || typeof value.value === "number";
    const id = `tile-input-${cssId(name)}`;
    const messageId = `tile-error-${cssId(name)}`;
    message.id = messageId;
    const input = h("input", {id, type: "text", inputmode: numericType ? "decimal" : "text", "data-testid": "tile-input",
      "aria-describedby": messageId, value: value.value === null || value.value === undefined ? "" : String(value.value),
      autocomplete: "off"});
    // The units that fit: the command's (with their ranges); from an engine that sends no rules, the tag's own.
    const validUnits = rules ? (rules.units || []).map((range) => range.unit).filter(Boolean) : value.unit ? [value.unit] : [];
    const unitSelect = validUnits.length
      ? h("select", {"data-testid": "tile-unit", "aria-label": `${name} unit`}, validUnits.map((unitName) => h("option", {value: unitName}, unitName)))
      : null;
    if (unitSelect) unitSelect.value = validUnits.includes(value.unit) ? value.unit : validUnits[0];
    const submit = h("button.primary", {type: "submit", "data-testid": "tile-submit"}, "Set");
    const form = h("form.tile-editor", {"data-testid": "tile-editor", novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!numericType) {
        send({value: text}, submit);
        return;
      }
      const problem = entryProblem(command, text, unitSelect ? unitSelect.value : "");
      if (problem) { // nothing is sent
        message.textContent = problem;
        input.setAttribute("aria-invalid", "true");
        input.focus();
        return;
      }
      input.removeAttribute("aria-invalid");
      const number = Number(text.replace(",", "."));
      send(unitSelect ? {value: number, unit: unitSelect.value} : {value: number}, submit);
    }},
    h("label.visually-hidden", {for: id}, `New value of ${name}`), input, unitSelect, submit,
    h("button", {type: "button", onclick: close}, "Close"), message,
    rules && rules.expected ? h("p.muted.tile-help", {"data-testid": "tile-expected"}, `Valid: ${rules.expected}`)
      : command.help ? h("p.muted.tile-help", command.help.split("\n")[0]) : null);
    input.addEventListener("input", () => {
      input.removeAttribute("aria-invalid");
      message.textContent = "";
    });
    return {element: form};
  }

  /** A values delta: a list of live values, or {tag: {value, time}} from the recorded samples. */
  function applyValues(data) {
    const changes = Array.isArray(data)
      ? data.filter((value) => value && typeof value.name === "string")
      : Object.entries(data || {}).map(([name, value]) => ({name, ...value}));
    let added = false;
    const byTime = new Map();
    for (const change of changes) {
      const known = values.get(change.name);
      const time = toSeconds(change.time);
      if (known && time !== null && toSeconds(known.time) !== null && time < toSeconds(known.time)) continue; // older
      if (!known) added = true;
      values.set(change.name, {...(known || {name: change.name}), ...change});
      if (!added) updateTile(change.name);
      if (time !== null) {
        if (!byTime.has(time)) byTime.set(time, {});
        byTime.get(time)[change.name] = change.value;
      }
    }
    if (added) renderTiles();
    if (diagram) diagram.update(values, changes.map((change) => change.name));
    if (plot && runId) {
      for (const time of [...byTime.keys()].sort((a, b) => a - b)) plot.append(time, byTime.get(time));
    }
  }

  // -- commands

  function renderExamples() {
    // The unit's commands (the vocabulary lists only those: no sensor or engine tag) and P-code instructions.
    const item = (label, help, example, kind) => h("li", h("button.example", {type: "button", "data-testid": "command-example",
      "data-command": label, "data-kind": kind, onclick: (event) => {
        exampleList.querySelectorAll("[aria-current]").forEach((button) => button.removeAttribute("aria-current"));
        event.currentTarget.setAttribute("aria-current", "true");
        showExample(label, help, example, kind);
      }}, label));
    const commands = vocabulary.commands || [];
    clear(exampleList,
      h("li.list-heading", "Unit commands"), // a list item: a list holds nothing else
      commands.length ? commands.map((command) => item(command.name, command.help,
        (command.examples && command.examples.length ? command.examples : [command.name]).join("\n"), "command"))
        : h("li.muted", "None known"),
      h("li.list-heading", "Instructions"),
      (vocabulary.instructions || []).map((instruction) => item(instruction.name, "", instruction.example, "instruction")));
  }

  function showExample(name, help, example, kind) {
    clear(examplePreview,
      h("h4", name, h("span.muted", kind === "command" ? " (unit command)" : " (instruction)")),
      help ? h("p.example-help", help) : null,
      h("pre.example-code", {"data-testid": "command-example-code"}, example),
      h("button", {type: "button", "data-testid": "command-example-use", onclick: () => {
        injectBox.value = injectBox.value.trim() ? `${injectBox.value.replace(/\s+$/, "")}\n${example}` : example;
        injectBox.focus();
      }}, "Copy to the box"));
  }

  async function inject() {
    const code = injectBox.value;
    injectError.textContent = "";
    if (!code.trim()) {
      injectError.textContent = "Write the P-code to run first.";
      return;
    }
    injectButton.setAttribute("aria-busy", "true");
    injectButton.disabled = true;
    try {
      await api.post(`${base}/inject`, {code});
      injectBox.value = "";
      toast("Sent to the unit.");
    } catch (error) {
      injectError.textContent = error.status === 422 || error.status === 409 ? `The unit refused: ${error.message}` : error.message;
    } finally {
      injectButton.removeAttribute("aria-busy");
      injectButton.disabled = false;
    }
  }

  // -- method

  async function lint(text) {
    const result = await api.post(`${base}/analyze`, {text});
    return (result.diagnostics || []).map((d) => ({
      line: d.line,
      severity: d.severity,
      column: d.column > 0 ? d.column - 1 : undefined,
      endColumn: d.column > 0 && d.end_column > 0 ? d.end_column - 1 : undefined,
      message: d.fixes && d.fixes.length && !/Did you mean/.test(d.message) ? `${d.message} Did you mean '${d.fixes[0]}'?` : d.message,
      fixes: d.fixes,
      source: d.id,
    }));
  }

  async function completions() {
    await vocabularyReady;
    return {
      instructions: (vocabulary.commands || []).map((command) => ({label: command.name, detail: "unit command",
        info: command.help || undefined, argument: true})),
      tags: (vocabulary.tags || []).map((tag) => ({label: tag.name, unit: tag.unit || undefined,
        units: tag.valid_units && tag.valid_units.length ? tag.valid_units : undefined, detail: tag.unit || undefined})),
    };
  }

  function renderMethodStatus() {
    const dirty = editor && editor.isDirty();
    saveButton.classList.toggle("attention", Boolean(dirty));
    if (!method) {
      methodStatus.textContent = "";
      return;
    }
    methodStatus.textContent = `${dirty ? "Unsaved changes · " : ""}Version ${baseVersion ?? method.version}` +
      (method.last_author ? ` by ${method.last_author}` : "");
  }

  function applyMethod(next) {
    if (!next) return;
    method = next;
    if (editor) editor.setLineStates(lineStateSets(next.line_states));
    if (!editor || saving) return; // our own save may be the change: decided when it answers
    if (baseVersion === null || (next.version !== baseVersion && !editor.isDirty())) {
      editor.setLines(next.lines || []);
      editor.setLineStates(lineStateSets(next.line_states));
      baseVersion = next.version;
      hideConflict();
    } else if (next.version !== baseVersion && editor.isDirty()) {
      showConflict(next);
    }
    renderMethodStatus();
  }

  function showConflict(latest, reason = "") {
    conflict = latest;
    clear(conflictBanner,
      h("p", h("strong", `${latest.last_author || "Someone"} changed the method`), ` (now version ${latest.version}) while you were editing it. `,
        reason ? h("span", reason, " ") : null,
        "Reload their version (your changes are lost) or keep yours (saving then replaces theirs)."),
      h("div.toolbar",
        h("button", {type: "button", "data-testid": "method-reload", onclick: () => {
          editor.setLines(latest.lines || []);
          editor.setLineStates(lineStateSets(latest.line_states));
          baseVersion = latest.version;
          hideConflict();
          renderMethodStatus();
        }}, "Reload theirs"),
        h("button", {type: "button", "data-testid": "method-keep-mine", onclick: () => {
          baseVersion = latest.version;
          hideConflict();
          renderMethodStatus();
          toast("Keeping your version: save it to replace theirs.");
        }}, "Keep mine")));
    conflictBanner.hidden = false;
  }

  function hideConflict() {
    conflict = null;
    conflictBanner.hidden = true;
  }

  async function save() {
    if (!editor || baseVersion === null) return;
    if (conflict) {
      conflictBanner.querySelector("button")?.focus();
      toast("Choose first: reload their version or keep yours.", "error");
      return;
    }
    const lines = editor.getLines();
    const sentText = editor.getText();
    saveButton.setAttribute("aria-busy", "true");
    saveButton.disabled = true;
    saving = true;
    try {
      const result = await api.post(`${base}/method`, {lines, version: baseVersion});
      baseVersion = result.version;
      if (editor.getText() === sentText) editor.markSaved();
      if (!method || method.version < result.version) {
        method = {...(method || {}), version: result.version, lines, last_author: userName() || "Anonymous"};
      }
      toast(`Method saved (version ${result.version}).`);
    } catch (error) {
      if (error.status === 409) {
        let latest = method;
        try {
          latest = await api.get(`${base}/method`);
        } catch {
          /* keep what we have */
        }
        method = latest;
        showConflict(latest, error.message);
      } else {
        toast(`The method was not saved: ${error.message}`, "error");
      }
    } finally {
      saving = false;
      saveButton.removeAttribute("aria-busy");
      saveButton.disabled = false;
      if (method && !conflict && method.version !== baseVersion) applyMethod(method); // changed meanwhile
      renderMethodStatus();
    }
  }

  const editorReady = loadEditor().then((createEditor) => {
    if (destroyed) return;
    editor = createEditor(editorHost, {
      text: "",
      lint,
      completions,
      onSave: () => save(),
      onChange: () => renderMethodStatus(),
      onDropRejected: (reason) => toast(`The file was not loaded: ${reason}`, "error"),
      label: "Method (P-code)",
    });
    if (method) applyMethod(method);
  });

  // -- run log actions

  async function runLogAction(kind, item) {
    try {
      await api.post(`${base}/run_log/${encodeURIComponent(item.id)}/${kind}`);
      toast(`${kind === "force" ? "Forced" : "Cancelled"}: ${item.name}`);
    } catch (error) {
      toast(`${kind === "force" ? "Force" : "Cancel"} '${item.name}': ${error.message}`, "error");
    }
  }

  // -- process diagram (diagram.js): made once the unit says it has one, fed the values as they change

  let diagram = null;

  function showDiagram(present) {
    if (present && !diagram) {
      diagram = new ProcessDiagram(diagramHost, {url: `${base}/process_diagram`,
        format: (value) => valueWithUnit(value.value, value)});
      diagram.update(values);
    } else if (!present && diagram) {
      diagram.destroy();
      diagram = null;
    }
  }

  // -- plot

  // The plot is the unit's trend - the aggregator's rolling window of its recent values, live
  // also between runs - with the run started, or the one that ended within the window, shown
  // from its record in its place, its start and end marked. Between runs the trend's rows feed it
  // (topic trend); during a run, the live values. Rows older than the window roll off, except
  // those of the run shown.

  function tagUnits() {
    const result = {};
    for (const tag of vocabulary.tags || []) if (tag.unit) result[tag.name] = tag.unit;
    for (const value of values.values()) if (value.unit && !result[value.name]) result[value.name] = value.unit;
    return result;
  }

  function tagDecimals() {
    const result = {};
    for (const value of values.values()) if (Number.isInteger(value.decimals)) result[value.name] = value.decimals;
    return result;
  }

  function ensurePlot(configuration) {
    const json = JSON.stringify(configuration || {});
    if (plot && json === plotConfigJson) return;
    if (plot) plot.destroy();
    plotConfigJson = json;
    plot = new ProcessPlot(plotHost, {configuration, units: tagUnits(), decimals: tagDecimals(), storageKey: `unit:${unitId}`,
      timeFirst: true});
  }

  /** The series to show after a (re)sync of `summary` (the unit): the trend and the run in it. */
  async function plotSeries(summary) {
    const active = summary.run_id || null;
    const ended = active ? null : summary.last_run_id || null;
    const [trendSeries, runSeries, endedRun] = await Promise.all([
      api.get(`${base}/trend`),
      active ? api.get(`${base}/plot_log`) : ended ? api.get(`${api.run(ended)}/plot_log`) : null,
      ended ? api.get(api.run(ended)) : null]);
    const firsts = Object.values(trendSeries || {}).filter((points) => points.length).map((points) => toSeconds(points[0][0]));
    const since = firsts.length ? Math.min(...firsts) : null;
    plotRun = null;
    if (active) plotRun = {start: toSeconds(summary.run_started), end: null};
    else if (endedRun && since !== null && toSeconds(endedRun.completed_date) >= since) {
      plotRun = {start: toSeconds(endedRun.started_date), end: toSeconds(endedRun.completed_date)};
    }
    return plotRun ? joinSeries(trendSeries, runSeries, plotRun.start, plotRun.end) : trendSeries || {};
  }

  function markRun() {
    if (!plot) return;
    plot.setMarkers(plotRun ? [{time: plotRun.start, label: "Run start"},
      plotRun.end !== null ? {time: plotRun.end, label: "Run end"} : null].filter(Boolean) : []);
  }

  /** A run started or ended (a units delta): the plot goes on, marked. */
  function plotRunChanged(summary) {
    if (summary.run_id) plotRun = {start: toSeconds(summary.run_started), end: null};
    else if (plotRun) plotRun.end = toSeconds(summary.last_run_completed) ?? Date.now() / 1000;
    markRun();
  }

  /** A row of the trend: {time, values, since} (since: the oldest time the window holds). */
  function applyTrendRow({time, values: changed, since}) {
    if (!plot) return;
    if (!runId) plot.append(time, changed);
    if (plotRun && plotRun.end !== null && plotRun.end < since) {
      plotRun = null; // the run ended longer ago than the window reaches: it rolls off too
      markRun();
    }
    plot.forget(plotRun ? Math.min(since, plotRun.start) : since);
  }

  // -- live

  const stop = live.watch({
    units: [unitId],
    async resync() {
      let summary;
      try {
        summary = await api.get(base);
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          missing.hidden = false;
          clear(missing, h("strong", `There is no process unit '${unitId}'.`), " ", h("a", {href: "/"}, "Back to the dashboard"));
          layout.hidden = true;
          controls.hidden = true;
          return;
        }
        throw error;
      }
      missing.hidden = true;
      layout.hidden = false;
      controls.hidden = false;
      vocabularyReady = api.get(`${base}/vocabulary`).then((result) => {
        vocabulary = result;
        renderExamples();
      }).catch((error) => console.warn("vocabulary", error));
      const [processValues, controlState, methodNow, runLogItems, errors, configuration, series] = await Promise.all([
        api.get(`${base}/process_values`), api.get(`${base}/control_state`), api.get(`${base}/method`),
        api.get(`${base}/run_log`), api.get(`${base}/error_log`), api.get(`${base}/plot_configuration`),
        plotSeries(summary)]);
      await vocabularyReady;
      unit = summary;
      runId = summary.run_id || null;
      logRun = runId;
      errorRun = runId;
      control = controlState || control;
      values.clear();
      for (const value of processValues || []) values.set(value.name, value);
      renderHeader();
      renderTiles();
      if (diagram) diagram.update(values);
      runLog.reset(runLogItems || []);
      errorLog.reset(errors || []);
      renderErrorCount();
      ensurePlot(configuration);
      plot.setUnits(tagUnits(), tagDecimals());
      plot.setSeries(series);
      markRun();
      await editorReady;
      applyMethod(methodNow);
    },
    delta({topic, data}) {
      if (topic === "units") {
        const newRun = (data.run_id || null) !== runId;
        unit = data;
        if (newRun) {
          runId = data.run_id || null;
          plotRunChanged(data);
        }
        renderHeader();
      } else if (topic === "presence") {
        renderPresence(data);
      } else if (topic === "control_state") {
        control = data;
        renderControls();
      } else if (topic === "values") {
        applyValues(data);
      } else if (topic === "trend") {
        applyTrendRow(data);
      } else if (topic === "method") {
        applyMethod(data);
      } else if (topic === "run_log") {
        if ((data.run || null) !== logRun) {
          logRun = data.run || null;
          runLog.reset([]);
        }
        runLog.merge(data.changed || []);
      } else if (topic === "error_log") {
        if ((data.run || null) !== errorRun) {
          errorRun = data.run || null;
          errorLog.reset([]);
        }
        errorLog.merge(data.changed || []);
        renderErrorCount();
      }
    },
  });
  live.setHere(unitId); // after the subscription: this page gets the unit's presence it changes

  return {
    canLeave: () => !(editor && editor.isDirty()),
    unmount() {
      destroyed = true;
      stop();
      clearTimeout(stopTimer);
      fitter.disconnect();
      wide.removeEventListener("change", fitTrend);
      root.classList.remove("unit-page");
      live.setHere(null);
      if (plot) plot.destroy();
      if (diagram) diagram.destroy();
      if (editor && editor.destroy) editor.destroy();
    },
  };
}

/** A name as the aggregator shows it in a unit's presence (pectus.actors.ui_hub.presence_name). */
function presenceName(name) {
  const trimmed = String(name || "").split(/\s+/).filter(Boolean).join(" ") || "Anonymous";
  return [...trimmed].length <= PRESENCE_NAME_CHARS ? trimmed : `${[...trimmed].slice(0, PRESENCE_NAME_CHARS - 1).join("")}…`;
}

function cssId(name) {
  return String(name).replace(/[^A-Za-z0-9_-]/g, "_");
}
