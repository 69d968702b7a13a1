// The dashboard: a live card per process unit and the table of recent runs.
// Live: the global topics `units` (one unit's summary) and `runs` (one run's summary), merged
// by id; nothing is polled. Run times tick locally between updates while a unit runs.

import {api, clear, formatDate, formatDuration, h, live, panel, stateBadge, toSeconds} from "./api.js";

const SORT_KEY = "pectus.dashboard.sort";
const COLUMNS = [
  {key: "unit", label: "Unit", value: (run) => run.engine_name || run.engine_id || ""},
  {key: "started", label: "Started", value: (run) => run.started_date || ""},
  {key: "completed", label: "Completed", value: (run) => run.completed_date || "9999"},
  {key: "contributors", label: "Contributors", value: (run) => contributorNames(run)},
];

function contributorNames(item) {
  return (item.contributors || []).map((c) => c.name).join(", ");
}

export function mount(root) {
  document.title = "Dashboard — Pectus";
  const units = new Map(); // id -> {summary, received}
  const runs = new Map(); // run_id -> summary
  let sort = JSON.parse(localStorage.getItem(SORT_KEY) || "null") || {key: "completed", descending: true};
  let filter = "";

  const cards = h("div.unit-grid", {"data-testid": "unit-cards", role: "list"});
  const filterInput = h("input#runs-filter", {type: "search", "data-testid": "runs-filter", placeholder: "Unit, date or name",
    oninput: () => {
      filter = filterInput.value.trim().toLowerCase();
      renderRuns();
    }});
  const table = h("table.runs-table", {"data-testid": "recent-runs"});
  const runsStatus = h("p.table-status", {role: "status"});

  root.append(
    h("h1.page-title", "Process units"),
    cards,
    panel("recent-runs", "Recent runs", [
      h("div.toolbar", h("label", {for: "runs-filter"}, "Filter recent runs"), filterInput),
      h("div.table-scroll", table),
      runsStatus,
    ]),
  );

  function renderCards() {
    const list = [...units.values()];
    if (!list.length) {
      clear(cards, h("p.empty", "No process units yet. A unit appears here when its engine connects."));
      return;
    }
    clear(cards, list.map(({summary}) => card(summary)));
    tickRunTimes();
  }

  function card(unit) {
    const state = unit.run_state || (unit.state === "offline" ? "offline" : "ready");
    return h("article.unit-card", {class: `state-${state}`, role: "listitem", "data-testid": "unit-card",
      "data-unit-id": unit.id, "data-state": state},
    h("h2.unit-card-title", h("a", {href: `/units/${encodeURIComponent(unit.id)}`}, unit.name || unit.id)),
    h("div.unit-card-state", stateBadge(state)),
    h("dl.unit-card-facts",
      h("dt", "Location"), h("dd", unit.location || "—"),
      h("dt", "Run time"), h("dd", {"data-testid": "run-time", "data-run-time": unit.id}, "—"),
      h("dt", "Contributors"), h("dd", contributorNames(unit) || "—")));
  }

  function tickRunTimes() {
    const now = Date.now() / 1000;
    for (const {summary, received} of units.values()) {
      const cell = cards.querySelector(`[data-run-time="${CSS.escape(summary.id)}"]`);
      if (!cell) continue;
      let seconds = summary.run_time;
      if (summary.run_id && summary.run_state === "running") {
        seconds = seconds != null ? seconds + (now - received) : now - (toSeconds(summary.run_started) || now);
      }
      cell.textContent = summary.run_id && seconds != null ? formatDuration(seconds) : "—";
    }
  }

  function renderRuns() {
    const column = COLUMNS.find((c) => c.key === sort.key) || COLUMNS[2];
    const rows = [...runs.values()]
      .map((run) => ({run, cells: [run.engine_name || run.engine_id || "", formatDate(run.started_date),
        run.completed_date ? formatDate(run.completed_date) + (run.interrupted ? " (interrupted)" : "") : "running",
        contributorNames(run)]}))
      .filter(({cells}) => !filter || cells.some((cell) => cell.toLowerCase().includes(filter)));
    rows.sort((a, b) => {
      const x = column.value(a.run);
      const y = column.value(b.run);
      return (x < y ? -1 : x > y ? 1 : 0) * (sort.descending ? -1 : 1);
    });
    const head = h("tr", COLUMNS.map((c) => h("th", {scope: "col",
      "aria-sort": c.key === sort.key ? (sort.descending ? "descending" : "ascending") : "none"},
    h("button.sort-button", {type: "button", "data-testid": `sort-${c.key}`, onclick: () => {
      sort = {key: c.key, descending: c.key === sort.key ? !sort.descending : c.key !== "unit"};
      localStorage.setItem(SORT_KEY, JSON.stringify(sort));
      renderRuns();
    }}, c.label, c.key === sort.key ? h("span.sort-mark", {class: sort.descending ? "descending" : "ascending", "aria-hidden": "true"}) : null))));
    const body = rows.map(({run, cells}) => {
      const href = `/runs/${encodeURIComponent(run.run_id)}`;
      const row = h("tr.clickable", {"data-testid": "recent-run-row", "data-run-id": run.run_id},
        h("td", h("a", {href}, cells[0])), h("td", cells[1]), h("td", cells[2]), h("td", cells[3]));
      row.addEventListener("click", (event) => {
        if (event.target.closest("a")) return;
        row.querySelector("a").click();
      });
      return row;
    });
    clear(table, h("caption.visually-hidden", "Recent runs; select a column header to sort"), h("thead", head), h("tbody", body));
    runsStatus.textContent = runs.size === 0 ? "No recent runs yet."
      : rows.length === 0 ? "No run matches the filter." : `${rows.length} of ${runs.size} runs`;
  }

  const stop = live.watch({
    globals: true,
    async resync() {
      const [unitList, runList] = await Promise.all([api.get("/api/process_units"), api.get("/api/runs")]);
      const received = Date.now() / 1000;
      units.clear();
      for (const summary of unitList) units.set(summary.id, {summary, received});
      runs.clear();
      for (const run of runList) runs.set(run.run_id, run);
      renderCards();
      renderRuns();
    },
    delta({topic, data}) {
      if (topic === "units" && data && data.id) {
        const known = units.has(data.id);
        units.set(data.id, {summary: data, received: Date.now() / 1000});
        const shown = known && cards.querySelector(`[data-unit-id="${CSS.escape(data.id)}"]`);
        if (shown) {
          shown.replaceWith(card(data)); // only this card changes
          tickRunTimes();
        } else {
          renderCards();
        }
      } else if (topic === "runs" && data && data.run_id) {
        runs.set(data.run_id, data);
        renderRuns();
      }
    },
  });
  renderCards();
  renderRuns();
  const ticker = setInterval(tickRunTimes, 1000);

  return {
    unmount() {
      stop();
      clearInterval(ticker);
    },
  };
}
