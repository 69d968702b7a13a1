// The recent run page: what a run was (metadata), its plot, its method with the executed lines,
// its run log and error log, who did what (the audit trail), and the downloads (CSV, raw events,
// audit trail as JSON). A run still in progress keeps updating from its unit's deltas.

import {api, clear, download, formatDate, h, live, panel, toSeconds} from "./api.js";
import {ProcessPlot} from "./plot.js";
import {ErrorLogView, RunLogView, lineStateSets, loadEditor, valueWithUnit} from "./unit.js";

// What a user asked a unit for, as the audit trail names it.
const REQUESTS = {
  control: "Run control", process_value: "Process value", save_method: "Method saved", inject: "Code run",
  cancel: "Run-log item cancelled", force: "Run-log item forced",
};

export function mount(root, [runId]) {
  const base = api.run(runId);
  document.title = `Run ${runId} — Pectus`;
  const breadcrumb = document.getElementById("breadcrumb");
  clear(breadcrumb, h("a", {href: "/"}, "Dashboard"), " / ", h("span", {"aria-current": "page"}, `Run ${runId}`));

  let run = null;
  let plot = null;
  let editor = null;
  let audit = [];
  let tags = {}; // tag name -> {name, unit, format, decimals}: how the unit shows its values
  let destroyed = false;
  let stopUnit = null;

  const title = h("h1.page-title", {"data-testid": "run-title"}, "Run");
  const meta = h("dl.run-meta", {"data-testid": "run-meta"});
  const missing = h("div.banner.banner-error", {role: "alert", "data-testid": "run-missing", hidden: true});
  const downloads = h("div.downloads.toolbar", {role: "group", "aria-label": "Downloads"},
    h("a.button", {href: `${base}/csv`, download: "", "data-testid": "download-csv"}, "CSV data"),
    h("a.button", {href: `${base}/events.jsonl`, download: "", "data-testid": "download-events"}, "Raw events (JSON Lines)"),
    h("button", {type: "button", "data-testid": "download-audit", onclick: () => download(`${fileBase()}_audit.json`,
      JSON.stringify(audit, null, 2))}, "Audit trail (JSON)"));
  const plotHost = h("div.plot-host#run-plot", {"data-testid": "plot"});
  const editorHost = h("div.editor-host#run-method", {"data-testid": "method-editor"});
  const revisions = h("div.revisions", {"data-testid": "method-revisions"});
  const runLog = new RunLogView({tagOf: (name) => tags[name]});
  const errorLog = new ErrorLogView();
  const auditTable = h("table.audit-table", {"data-testid": "audit-table"});

  const layout = h("div.run-layout",
    panel("run-plot-panel", "Plot", [plotHost], {className: "area-plot"}),
    panel("run-method-panel", "Method", [editorHost, revisions], {className: "area-method"}),
    panel("run-log-panel", "Run log", [runLog.element], {className: "area-runlog"}),
    panel("run-errors-panel", "Error log", [errorLog.element], {className: "area-errors"}),
    panel("run-audit-panel", "Audit trail", [h("div.table-scroll", auditTable)], {className: "area-audit"}),
  );
  root.append(h("header.run-header", title, meta, downloads), missing, layout);

  function fileBase() {
    const unit = String(run && run.engine_id || "run").replace(/[^A-Za-z0-9._-]/g, "_");
    const started = run && run.started_date ? run.started_date.replace(/[-:]/g, "").replace("T", "_").slice(0, 15) : runId;
    return `${unit}_${started}`;
  }

  function renderMeta() {
    if (!run) return;
    title.textContent = `${run.engine_name || run.engine_id} — run of ${formatDate(run.started_date)}`;
    document.title = `${run.engine_name || run.engine_id} run — Pectus`;
    const row = (label, value) => [h("dt", label), h("dd", value || "—")];
    clear(meta,
      row("Unit", run.engine_id ? h("a", {href: `/units/${encodeURIComponent(run.engine_id)}`}, run.engine_name || run.engine_id) : ""),
      row("Started", formatDate(run.started_date)),
      row("Completed", run.completed_date ? formatDate(run.completed_date) : h("span.badge.running", {"data-testid": "run-in-progress"}, "In progress")),
      ...(run.interrupted ? [row("Interrupted", h("span.refused", {"data-testid": "run-interrupted"}, run.interrupted))] : []),
      row("Contributors", (run.contributors || []).map((c) => c.name).join(", ")),
      row("UOD", [run.uod_name, run.uod_filename ? ` (${run.uod_filename})` : ""].join("")),
      row("UOD author", [run.uod_author_name, run.uod_author_email ? ` <${run.uod_author_email}>` : ""].join("")),
      row("Engine", [run.engine_computer_name, run.engine_version ? ` · version ${run.engine_version}` : ""].join("")),
      row("Hardware", run.engine_hardware_str),
      row("Aggregator", [run.aggregator_computer_name, run.aggregator_version ? ` · version ${run.aggregator_version}` : ""].join("")),
      row("Run id", h("code", run.run_id)));
  }

  function renderRevisions(method) {
    const list = method.revisions || [];
    clear(revisions, list.length
      ? [h("h3", "Revisions during the run"), h("ol", list.map((revision) => h("li",
        `Version ${revision.version}${revision.author && revision.author.name ? ` by ${revision.author.name}` : ""}` +
        ` at ${formatDate(revision.time)}`)))]
      : h("p.muted", method.version ? `The method was not changed during the run (version ${method.version}).`
        : "The method was not changed during the run."));
  }

  /** Who did it: a person by name, the unit (its engine) by the unit's name. */
  function auditWho(actor) {
    if (!actor) return "—";
    if (actor.kind === "engine") return [run.engine_name || actor.name, h("span.muted", " (the unit)")];
    return actor.name || actor.id || "—";
  }

  /** [what, change (old → new), outcome] of an audit entry, each in words and values a person reads. */
  function auditCells(entry) {
    const detail = entry.detail || {};
    const change = (old, now) => (old === null || old === undefined || old === "" ? `now ${now}` : `${old} → ${now}`);
    if (entry.what === "state changed") {
      const old = detail.old || {}, now = detail.new || {};
      const status = old.method_status !== now.method_status && now.method_status
        ? `; method ${change(old.method_status, now.method_status)}` : "";
      return ["State", change(old.system_state, now.system_state) + status, ""];
    }
    if (entry.what === "method revised") {
      return ["Method revised", change(detail.old_version && `version ${detail.old_version}`, `version ${detail.new_version}`), ""];
    }
    if (!("asked" in detail)) return [entry.what, "—", ""];
    const asked = detail.asked || {};
    const answer = detail.accepted === null || detail.accepted === undefined
      ? h("span.muted", "no answer recorded (the unit never replied)")
      : detail.accepted ? h("span.ok", "accepted") : h("span.refused", `refused: ${detail.reason || "no reason given"}`);
    const what = REQUESTS[entry.what] || entry.what;
    switch (entry.what) {
      case "control":
        return [`${what}: ${asked.command}`, "—", answer];
      case "process_value": {
        const tag = {name: asked.tag, ...tags[asked.tag]};
        const now = valueWithUnit(asked.value, asked.unit ? {...tag, unit: asked.unit} : tag);
        return [`${what}: ${asked.tag}`, change(asked.old === undefined ? null : valueWithUnit(asked.old, tag), now), answer];
      }
      case "save_method":
        return [what, change(asked.version && `version ${asked.version}`, `version ${Number(asked.version) + 1}`), answer];
      case "inject":
        return [what, h("code", asked.code), answer];
      case "cancel":
      case "force":
        return [what, runLog.itemName(asked.item) || `item ${asked.item}`, answer];
      default:
        return [what, Object.entries(asked).map(([name, value]) => `${name}: ${value}`).join(", ") || "—", answer];
    }
  }

  function renderAudit() {
    clear(auditTable,
      h("caption.visually-hidden", "Audit trail: who did what, when"),
      h("thead", h("tr", ["Time", "Who", "What", "Change", "Outcome"].map((label) => h("th", {scope: "col"}, label)))),
      h("tbody", audit.length ? audit.map((entry) => {
        const [what, change, outcome] = auditCells(entry);
        return h("tr", {"data-testid": "audit-row"},
          h("td.time", formatDate(entry.time, {millis: true})),
          h("td", {"data-testid": "audit-who"}, auditWho(entry.actor)),
          h("td", {"data-testid": "audit-what"}, what),
          h("td", {"data-testid": "audit-change"}, change),
          h("td", {"data-testid": "audit-outcome"}, outcome));
      }) : h("tr", h("td", {colspan: 5}, "Nothing recorded."))));
  }

  async function load() {
    try {
      run = await api.get(base);
    } catch (error) {
      if (error.status === 404) {
        missing.hidden = false;
        clear(missing, h("strong", `There is no run '${runId}'.`), " ", h("a", {href: "/"}, "Back to the dashboard"));
        layout.hidden = true;
        downloads.hidden = true;
        return;
      }
      throw error;
    }
    const [method, items, errors, series, configuration, trail] = await Promise.all([
      api.get(`${base}/method`), api.get(`${base}/run_log`), api.get(`${base}/error_log`),
      api.get(`${base}/plot_log`), api.get(`${base}/plot_configuration`).catch(() => ({})), api.get(`${base}/audit`)]);
    try {
      const values = await api.get(`${api.unit(run.engine_id)}/process_values`);
      tags = Object.fromEntries((values || []).map((value) => [value.name, value]));
    } catch {
      tags = {}; // a unit no longer known: values show as they are, without units
    }
    const units = {}, decimals = {};
    for (const tag of Object.values(tags)) {
      if (tag.unit) units[tag.name] = tag.unit;
      if (Number.isInteger(tag.decimals)) decimals[tag.name] = tag.decimals;
    }
    if (destroyed) return;
    renderMeta();
    runLog.reset(items || []);
    errorLog.reset(errors || []);
    audit = trail || [];
    renderAudit();
    if (plot) plot.destroy();
    plot = new ProcessPlot(plotHost, {configuration, units, decimals, storageKey: `run:${run.engine_id}`});
    plot.setSeries(series || {});
    const createEditor = await loadEditor();
    if (destroyed) return;
    if (editor && editor.destroy) editor.destroy();
    editorHost.replaceChildren();
    editor = createEditor(editorHost, {lines: method.lines || [], readOnly: true, label: "Method of the run (read-only)"});
    if (editor.setReadOnly) editor.setReadOnly(true);
    editor.setLineStates(lineStateSets(method.line_states));
    renderRevisions(method);
    if (!run.completed_date && !stopUnit) followUnit();
  }

  /** A run still in progress: its unit's deltas that belong to this run. */
  function followUnit() {
    stopUnit = live.watch({
      units: [run.engine_id],
      async resync() {
        const [items, errors, series] = await Promise.all([
          api.get(`${base}/run_log`), api.get(`${base}/error_log`), api.get(`${base}/plot_log`)]);
        runLog.reset(items || []);
        errorLog.reset(errors || []);
        if (plot) plot.setSeries(series || {});
      },
      delta({topic, data}) {
        if (topic === "run_log" && data.run === runId) runLog.merge(data.changed || []);
        else if (topic === "error_log" && data.run === runId) errorLog.merge(data.changed || []);
        else if (topic === "method" && editor) editor.setLineStates(lineStateSets(data.line_states));
        else if (topic === "values" && plot && !run.completed_date) {
          const changes = Array.isArray(data) ? data : Object.entries(data || {}).map(([name, value]) => ({name, ...value}));
          for (const change of changes) {
            const time = toSeconds(change.time);
            if (time !== null) plot.append(time, {[change.name]: change.value});
          }
        }
      },
    });
  }

  const stopGlobal = live.watch({
    globals: true,
    resync: () => load(),
    delta({topic, data}) {
      if (topic === "runs" && data && data.run_id === runId) {
        run = {...run, ...data};
        renderMeta();
        if (run.completed_date && stopUnit) {
          stopUnit();
          stopUnit = null;
          api.get(`${base}/audit`).then((trail) => {
            audit = trail || [];
            renderAudit();
          }).catch(() => {});
        }
      }
    },
  });

  return {
    unmount() {
      destroyed = true;
      stopGlobal();
      if (stopUnit) stopUnit();
      if (plot) plot.destroy();
      if (editor && editor.destroy) editor.destroy();
    },
  };
}
