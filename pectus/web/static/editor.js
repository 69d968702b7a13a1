// The P-code editor of the Pectus web UI: CodeMirror 6 (vendored in ./vendor/codemirror.js)
// set up for P-code.
//
//   import { createEditor } from "/static/editor.js";
//   const editor = createEditor(parentElement, {
//     text,                 // initial text (lines get the ids id_1, id_2, ...), or
//     lines,                // initial [{id, text}] (the method as the server has it)
//     readOnlyLines,        // line numbers (1-based) or line ids that are already executed
//     onChange,             // (text, dirty) after every edit by the user (not after setText/setLines)
//     lint,                 // async text => [{line, severity, message, column?, endColumn?, fixes?}]
//     completions,          // () => ({instructions: [...], tags: [...]}) or a promise of it
//     onSave,               // optional: Ctrl/Cmd+S calls it
//     onDropRejected,       // optional: (reason) when a dropped file was not loaded
//     readOnly,             // optional: the whole editor is read-only (a finished run)
//     label,                // optional: accessible name (default "P-code method")
//   });
//
// Lines are numbered from 1. Every line carries a stable id that follows it through edits (the
// server matches lines of a new method version to the running one by id); new lines get fresh ids.
// Executed and started lines are locked: a transaction filter rejects any edit that would change
// their text (new lines may still be added before, between and after them). Failed lines are
// marked but stay editable, so the failing instruction can be corrected.
//
// A diagnostic with `fixes` (did-you-mean replacements of its range, column to endColumn) offers
// each as a quick fix: a button in its tooltip, and a key in the diagnostics panel (Ctrl+Shift+M,
// or Cmd+Shift+M; arrows choose a diagnostic, the key its text names applies the fix).
//
// The editor fills its parent's height (editor.css) and measures itself again whenever the parent
// changes size: a window resized, a tab shown.
//
// Keyboard: Tab / Shift+Tab indent / dedent by 4 spaces. The editor is no focus trap: Escape then
// Tab (within 2 s) moves the focus on, as does Ctrl+M (Shift+Alt+M on macOS), which toggles Tab
// between indenting and moving the focus.

import {
  Compartment, EditorState, MapMode, StateEffect, StateField, RangeSetBuilder, RangeSet,
  Decoration, EditorView, GutterMarker, gutter, highlightActiveLineGutter, highlightSpecialChars,
  keymap, lineNumbers,
  defaultKeymap, history, historyKeymap, indentWithTab,
  StreamLanguage, indentService, indentUnit, syntaxHighlighting,
  tagHighlighter, tags,
  autocompletion, completionKeymap, insertCompletionText, pickedCompletion, startCompletion,
  linter, lintGutter, lintKeymap, forceLinting,
  search, searchKeymap,
} from "./vendor/codemirror.js";

// -- the language ------------------------------------------------------------------------------

/** Instructions built into P-code (pcode spec section 2.4); names are case sensitive. */
export const BUILTIN_INSTRUCTIONS = Object.freeze([
  "Alarm", "Base", "Batch", "Block", "Call macro", "End block", "End blocks", "Error", "Hold",
  "Increment run counter", "Info", "Macro", "Mark", "Notify", "Pause", "Restart", "Run counter",
  "Simulate", "Simulate off", "Stop", "Unhold", "Unpause", "Wait", "Warning", "Watch",
]);
const BUILTIN = new Set(BUILTIN_INSTRUCTIONS);
const STRUCTURE = new Set(["Alarm", "Block", "Call macro", "End block", "End blocks", "Macro", "Watch"]);
const CONTAINERS = new Set(["Alarm", "Block", "Macro", "Watch"]);
const NO_ARGUMENT = new Set(["End block", "End blocks", "Increment run counter", "Restart", "Stop", "Unhold", "Unpause"]);
const CONDITION_OPERATORS = ["<=", ">=", "==", "!=", "<", ">", "="]; // searched in this order
const OPERATOR_LABELS = {
  "<": "less than", "<=": "less than or equal to", ">": "greater than",
  ">=": "greater than or equal to", "==": "equal to", "=": "equal to", "!=": "not equal to",
};

const NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?=[\sa-zA-Z%/*#]|$)/;
const UNIT = /^[a-zA-Z%/23*]+/;
const INDENT = "    ";

/** The first condition operator (in the reference's search order) in `arg`: [index, operator]. */
function findOperator(arg, operators) {
  for (const op of operators) {
    const i = arg.indexOf(op);
    if (i >= 0) return [i, op];
  }
  return [-1, ""];
}

/** Indentation, threshold and instruction name of a line (null for blank and comment lines). */
export function parseHead(text) {
  const m = /^(\s*)(?:(\d+(?:\.\d+)?)\s(?=[A-Za-z0-9_]))?([A-Za-z0-9_][^:#]*)?/.exec(text);
  const rest = text.slice(m[1].length);
  if (rest === "" || rest.startsWith("#")) return null;
  return {
    indent: m[1].replace(/\t/g, " ").length,
    threshold: m[2] === undefined ? null : Number(m[2]),
    name: (m[3] || "").trim(),
  };
}

const START = 0, THRESHOLD = 1, NAME = 2, AFTER_NAME = 3, ARGUMENT = 4, BAD = 5;

function argumentKind(name) {
  if (name === "Watch" || name === "Alarm") return "condition";
  if (name === "Simulate") return "assignment";
  if (name === "Simulate off") return "tag";
  return "value";
}

function tokenValue(stream, state) {
  if (stream.match(NUMBER)) { state.afterNumber = true; return "pcNumber"; }
  if (state.afterNumber && stream.match(UNIT)) { state.afterNumber = false; return "pcUnit"; }
  state.afterNumber = false;
  if (stream.match(/^(?:true|false)(?=[\s#]|$)/i)) return "pcBool";
  stream.match(/^[^\s#]+/);
  return "pcArgument";
}

function tokenName(stream, state) {
  if (!/[A-Za-z0-9_]/.test(stream.peek())) { // not an instruction at all
    stream.match(/^[^#]+/);
    state.phase = BAD;
    return "pcInvalid";
  }
  const raw = stream.match(/^[^:#]*/)[0];
  const name = raw.trimEnd();
  stream.backUp(raw.length - name.length);
  state.name = name;
  state.phase = AFTER_NAME;
  return STRUCTURE.has(name) ? "pcStructure" : BUILTIN.has(name) ? "pcBuiltin" : "pcCommand";
}

function token(stream, state) {
  if (stream.sol()) {
    state.phase = START; state.name = ""; state.kind = ""; state.opFrom = -1; state.opTo = -1;
    state.afterNumber = false;
  }
  if (state.phase !== NAME && state.phase !== THRESHOLD) {
    if (stream.eatSpace()) return null;
    if (stream.peek() === "#") { stream.skipToEnd(); return "pcComment"; }
  }
  switch (state.phase) {
    case START:
      if (stream.match(/^\d+(?:\.\d+)?(?=\s[A-Za-z0-9_])/)) { state.phase = THRESHOLD; return "pcThreshold"; }
      return tokenName(stream, state);
    case THRESHOLD:
      stream.next(); // exactly one whitespace character
      state.phase = NAME;
      return null;
    case NAME:
      return tokenName(stream, state);
    case AFTER_NAME:
      stream.next(); // the ':'
      if (stream.peek() !== " ") { state.phase = BAD; return "pcSeparator"; } // "Mark:a" has no argument
      state.phase = ARGUMENT;
      state.kind = argumentKind(state.name);
      if (state.kind === "condition" || state.kind === "assignment") {
        const start = stream.pos;
        const hash = stream.string.indexOf("#", start);
        const arg = stream.string.slice(start, hash < 0 ? undefined : hash);
        const [i, op] = findOperator(arg, state.kind === "condition" ? CONDITION_OPERATORS : ["="]);
        if (i >= 0) { state.opFrom = start + i; state.opTo = start + i + op.length; }
      }
      return "pcSeparator";
    case ARGUMENT: {
      if (state.kind === "tag" || ((state.kind === "condition" || state.kind === "assignment") && state.opFrom < 0)) {
        stream.match(/^[^#]*[^\s#]/);
        return "pcTag";
      }
      if (state.opFrom >= 0 && stream.pos < state.opFrom) {
        const left = stream.string.slice(stream.pos, state.opFrom).trimEnd();
        if (left) { stream.pos += left.length; return "pcTag"; }
        stream.pos = state.opFrom;
        return null;
      }
      if (stream.pos === state.opFrom) { stream.pos = state.opTo; return "pcOperator"; }
      return tokenValue(stream, state);
    }
    default: // BAD: the rest of an unparsable line, up to a comment
      stream.match(/^[^#]*[^\s#]/) || stream.next();
      return "pcInvalid";
  }
}

const pcodeTags = {
  structure: tags.controlKeyword,
  builtin: tags.keyword,
  command: tags.function(tags.variableName),
  threshold: tags.special(tags.number),
};

/** The P-code StreamLanguage (line-local: every line is tokenized on its own). */
export const pcodeLanguage = StreamLanguage.define({
  name: "pcode",
  startState: () => ({ phase: START, name: "", kind: "", opFrom: -1, opTo: -1, afterNumber: false }),
  copyState: (s) => ({ ...s }),
  token,
  languageData: { commentTokens: { line: "#" } },
  tokenTable: {
    pcThreshold: pcodeTags.threshold,
    pcStructure: pcodeTags.structure,
    pcBuiltin: pcodeTags.builtin,
    pcCommand: pcodeTags.command,
    pcSeparator: tags.separator,
    pcTag: tags.variableName,
    pcOperator: tags.compareOperator,
    pcNumber: tags.number,
    pcUnit: tags.unit,
    pcBool: tags.bool,
    pcArgument: tags.string,
    pcComment: tags.lineComment,
    pcInvalid: tags.invalid,
  },
});

/** Token classes (coloured by editor.css). */
export const pcodeHighlighter = tagHighlighter([
  { tag: pcodeTags.structure, class: "pc-tok-keyword pc-tok-structure" },
  { tag: pcodeTags.builtin, class: "pc-tok-keyword" },
  { tag: pcodeTags.command, class: "pc-tok-command" },
  { tag: pcodeTags.threshold, class: "pc-tok-threshold" },
  { tag: tags.separator, class: "pc-tok-separator" },
  { tag: tags.variableName, class: "pc-tok-tag" },
  { tag: tags.compareOperator, class: "pc-tok-operator" },
  { tag: tags.number, class: "pc-tok-number" },
  { tag: tags.unit, class: "pc-tok-unit" },
  { tag: tags.bool, class: "pc-tok-bool" },
  { tag: tags.string, class: "pc-tok-argument" },
  { tag: tags.comment, class: "pc-tok-comment" },
  { tag: tags.invalid, class: "pc-tok-invalid" },
]);

/** Indentation of a new line: one level deeper after Block/Watch/Alarm/Macro, one less after
 *  End block, none after End blocks, otherwise as the previous instruction. */
const pcodeIndentation = indentService.of((context, pos) => {
  const line = context.lineAt(pos, 1);
  let from = line.from;
  while (from > 0) {
    const prev = context.lineAt(from - 1, -1);
    const head = parseHead(prev.text);
    if (head) {
      if (CONTAINERS.has(head.name)) return head.indent + INDENT.length;
      if (head.name === "End block") return Math.max(0, head.indent - INDENT.length);
      if (head.name === "End blocks") return 0;
      return head.indent;
    }
    if (prev.text.trim()) return prev.text.replace(/\t/g, " ").search(/\S/); // a comment
    from = prev.from;
  }
  return 0;
});

// -- line ids and line states --------------------------------------------------------------------

let idCounter = 0;
const idPrefix = "e" + Math.floor(Math.random() * 36 ** 6).toString(36).padStart(6, "0") + "-";
const freshId = () => idPrefix + (++idCounter).toString(36);

function textIds(n) {
  return Array.from({ length: n }, (_, i) => `id_${i + 1}`);
}

/** The ids of the lines after `tr`: unchanged lines keep theirs; in a changed region, lines equal
 *  at its start and end keep theirs, the rest take the old ids in order, extra lines get new ones. */
function mapIds(ids, tr) {
  const oldDoc = tr.startState.doc, newDoc = tr.newDoc;
  const regions = [];
  tr.changes.iterChanges((fromA, toA, fromB, toB) => {
    const r = {
      a1: oldDoc.lineAt(fromA).number, a2: oldDoc.lineAt(toA).number,
      b1: newDoc.lineAt(fromB).number, b2: newDoc.lineAt(toB).number,
    };
    const last = regions[regions.length - 1];
    if (last && r.a1 <= last.a2) { last.a2 = Math.max(last.a2, r.a2); last.b2 = Math.max(last.b2, r.b2); }
    else regions.push(r);
  });
  const out = [];
  let next = 1; // next old line to copy
  for (const { a1, a2, b1, b2 } of regions) {
    for (; next < a1; next++) out.push(ids[next - 1]);
    const olds = [], news = [];
    for (let i = a1; i <= a2; i++) olds.push(i);
    for (let i = b1; i <= b2; i++) news.push(i);
    const head = [], tail = [];
    while (olds.length && news.length && oldDoc.line(olds[0]).text === newDoc.line(news[0]).text) {
      head.push(ids[olds.shift() - 1]); news.shift();
    }
    while (olds.length && news.length &&
           oldDoc.line(olds[olds.length - 1]).text === newDoc.line(news[news.length - 1]).text) {
      tail.unshift(ids[olds.pop() - 1]); news.pop();
    }
    out.push(...head);
    news.forEach((_, i) => out.push(i < olds.length ? ids[olds[i] - 1] : freshId()));
    out.push(...tail);
    next = a2 + 1;
  }
  for (; next <= oldDoc.lines; next++) out.push(ids[next - 1]);
  if (out.length !== newDoc.lines) return textIds(newDoc.lines).map(freshId); // cannot happen
  return out;
}

class StateMarker extends GutterMarker {
  constructor(kind, glyph, title) { super(); this.kind = kind; this.glyph = glyph; this.title = title; }
  eq(other) { return other.kind === this.kind; }
  toDOM() {
    const span = document.createElement("span");
    span.className = `pc-state-marker pc-state-${this.kind}`;
    span.textContent = this.glyph;
    span.title = this.title;
    return span;
  }
}

const KINDS = ["failed", "started", "executed"]; // a line in several sets shows the first
const MARKERS = {
  executed: new StateMarker("executed", "\u2713", "executed"),
  started: new StateMarker("started", "\u25B6", "running"),
  failed: new StateMarker("failed", "\u2717", "failed"),
};
const LINE_DECOS = Object.fromEntries(KINDS.map((k) => [k, Decoration.line({ class: `pc-line-${k}` })]));
const LOCKING = ["executed", "started"];

const replaceLines = StateEffect.define(); // {ids} after a setText / setLines
const setStates = StateEffect.define(); // {executed, started, failed}: arrays of line numbers or ids

function resolveIds(list, ids) {
  const out = new Set();
  for (const x of list || []) {
    if (typeof x === "number") { if (x >= 1 && x <= ids.length) out.add(ids[x - 1]); }
    else if (x != null) out.add(String(x));
  }
  return out;
}

function decorate(doc, ids, states) {
  const deco = new RangeSetBuilder(), markers = new RangeSetBuilder();
  for (let n = 1; n <= doc.lines; n++) {
    const kind = KINDS.find((k) => states[k].has(ids[n - 1]));
    if (!kind) continue;
    const from = doc.line(n).from;
    deco.add(from, from, LINE_DECOS[kind]);
    markers.add(from, from, MARKERS[kind]);
  }
  return { deco: deco.finish(), markers: markers.finish() };
}

const lineField = StateField.define({
  create: (state) => {
    const ids = textIds(state.doc.lines);
    const states = { executed: new Set(), started: new Set(), failed: new Set() };
    return { ids, states, deco: Decoration.none, markers: RangeSet.empty };
  },
  update(value, tr) {
    let { ids, states } = value;
    let changed = false;
    if (tr.docChanged) { ids = mapIds(ids, tr); changed = true; }
    for (const e of tr.effects) {
      if (e.is(replaceLines)) { ids = e.value.ids; changed = true; }
      else if (e.is(setStates)) {
        states = Object.fromEntries(KINDS.map((k) => [k, resolveIds(e.value[k], ids)]));
        changed = true;
      }
    }
    if (!changed) return value;
    return { ids, states, ...decorate(tr.newDoc, ids, states) };
  },
  provide: (f) => EditorView.decorations.from(f, (v) => v.deco),
});

/** Rejects (as a whole, leaving the selection where it was) any transaction that would alter the
 *  text of an executed or started line. */
const lockFilter = EditorState.transactionFilter.of((tr) => {
  if (!tr.docChanged) return tr;
  const { ids, states } = tr.startState.field(lineField);
  if (!LOCKING.some((k) => states[k].size)) return tr;
  const doc = tr.startState.doc;
  for (let n = 1; n <= doc.lines; n++) {
    if (!LOCKING.some((k) => states[k].has(ids[n - 1]))) continue;
    const line = doc.line(n);
    const from = tr.changes.mapPos(line.from, 1, MapMode.TrackDel);
    const to = tr.changes.mapPos(line.to, -1, MapMode.TrackDel);
    if (from === null || to === null) return [];
    const now = tr.newDoc.lineAt(from);
    if (now.from !== from || now.to !== to || now.text !== line.text) return [];
  }
  return tr;
});

const stateGutter = gutter({
  class: "pc-state-gutter",
  markers: (view) => view.state.field(lineField).markers,
  initialSpacer: () => MARKERS.executed,
});

// -- completion --------------------------------------------------------------------------------

const HEAD = String.raw`^\s*(?:\d+(?:\.\d+)?\s)?`;
const INSTRUCTION_BEFORE = new RegExp(String.raw`^(\s*)(?:\d+(?:\.\d+)?\s)?([A-Za-z0-9_][^:#]*)?$`);
const TAG_ARGUMENT_BEFORE = new RegExp(HEAD + "(Watch|Alarm|Simulate|Simulate off): (.*)$");
const CALL_MACRO_BEFORE = new RegExp(HEAD + "Call macro: (.*)$");
const MACRO_LINE = new RegExp(HEAD + "Macro: ([^#]*)");

function asItem(x) {
  return typeof x === "string" ? { label: x } : { ...x, label: x.label ?? x.name };
}

function instructionOptions(instructions) {
  const seen = new Map();
  for (const name of BUILTIN_INSTRUCTIONS) {
    seen.set(name, {
      label: name, type: STRUCTURE.has(name) ? "keyword" : "function", detail: "built-in",
      argument: !NO_ARGUMENT.has(name) && name !== "Pause" && name !== "Hold",
    });
  }
  for (const x of instructions || []) {
    const item = asItem(x);
    if (item.label && !seen.has(item.label)) seen.set(item.label, { type: "function", ...item });
  }
  return [...seen.values()].map((item) => ({
    label: item.label, type: item.type, detail: item.detail, info: item.info,
    apply: item.argument ? applyThenComplete(`${item.label}: `) : item.label,
  }));
}

/** A completion's apply function that inserts `text` and then opens the next completion list
 *  (tags after "Watch: ", operators after a tag). */
function applyThenComplete(text) {
  return (view, completion, from, to) => {
    view.dispatch({ ...insertCompletionText(view.state, text, from, to), annotations: pickedCompletion.of(completion) });
    setTimeout(() => startCompletion(view), 0);
  };
}

async function pcodeCompletionSource(context, completions) {
  const line = context.state.doc.lineAt(context.pos);
  const before = line.text.slice(0, context.pos - line.from);
  if (before.includes("#")) return null;

  let m = INSTRUCTION_BEFORE.exec(before);
  if (m) {
    const word = m[2] || "";
    if (!word && !context.explicit) return null;
    const data = (await completions()) || {};
    return {
      from: context.pos - word.length,
      options: instructionOptions(data.instructions),
      validFor: /^(?:[A-Za-z0-9_][^:#]*)?$/,
    };
  }

  m = TAG_ARGUMENT_BEFORE.exec(before);
  if (m) {
    const [, name, arg] = m;
    const data = (await completions()) || {};
    const tagItems = (data.tags || []).map(asItem).filter((t) => t.label);
    const operators = name === "Watch" || name === "Alarm" ? CONDITION_OPERATORS : name === "Simulate" ? ["="] : [];
    const [i, op] = findOperator(arg, operators);
    if (i < 0) {
      const tag = arg.trim();
      if (operators.length && /\s$/.test(arg) && tagItems.some((t) => t.label === tag)) {
        return {
          from: context.pos,
          options: operators.map((o) => ({ label: o, type: "operator", detail: OPERATOR_LABELS[o], apply: `${o} ` })),
          validFor: /^[<>=!]*$/,
        };
      }
      const lead = arg.length - arg.trimStart().length;
      return {
        from: context.pos - arg.length + lead,
        options: tagItems.map((t) => ({
          label: t.label, type: "variable", detail: t.detail ?? t.unit, info: t.info,
          apply: operators.length > 1 ? applyThenComplete(`${t.label} `) : operators.length ? `${t.label} = ` : t.label,
        })),
        validFor: /^[^<>=!#]*$/,
      };
    }
    // after "<tag> <op> <number> ": the tag's units, when the server gives them
    const tag = tagItems.find((t) => t.label === arg.slice(0, i).trim());
    const units = tag ? tag.units || (tag.unit ? [tag.unit] : []) : [];
    const value = /^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z%/23*]*)$/.exec(arg.slice(i + op.length));
    if (units.length && value) {
      return {
        from: context.pos - value[1].length,
        options: units.map((u) => ({ label: u, type: "unit" })),
        validFor: /^[a-zA-Z%/23*]*$/,
      };
    }
    return null;
  }

  m = CALL_MACRO_BEFORE.exec(before);
  if (m) {
    const names = new Set();
    for (let n = 1; n < line.number; n++) {
      const macro = MACRO_LINE.exec(context.state.doc.line(n).text);
      if (macro && macro[1].trim()) names.add(macro[1].trim());
    }
    const lead = m[1].length - m[1].trimStart().length;
    return {
      from: context.pos - m[1].length + lead,
      options: [...names].map((label) => ({ label, type: "function", detail: "macro" })),
      validFor: /^[^#]*$/,
    };
  }
  return null;
}

// -- lint ---------------------------------------------------------------------------------------

/** The keys CodeMirror's diagnostics panel gives `actions`: for each, the first letter of its name
 *  not taken by an earlier one ("" for none). The same rule as the panel's, so the text can name them. */
function panelKeys(actions) {
  const taken = [];
  return actions.map(({ name }) => {
    const key = [...name].find((ch) => /[a-z]/i.test(ch) && !taken.includes(ch.toLowerCase())) || "";
    if (key) taken.push(key.toLowerCase());
    return key;
  });
}

/** A diagnostic's message, then which key applies which fix in the diagnostics panel (editor.css
 *  shows that part in the panel only: the options of a listbox may hold no buttons, so the panel
 *  hides them and is used with its keys). */
function messageWithKeys(message, actions) {
  const keys = document.createElement("span");
  keys.className = "pc-fix-keys";
  keys.textContent = panelKeys(actions).map((key, i) => key && ` Press ${key.toUpperCase()}: ${actions[i].name}.`).join("");
  const text = document.createElement("span");
  text.append(message, keys);
  return text;
}

const SEVERITIES = { error: "error", warning: "warning", warn: "warning", info: "info", information: "info", hint: "hint" };

function toDiagnostics(doc, items) {
  const out = [];
  for (const d of items || []) {
    const n = Math.min(Math.max(1, Math.floor(Number(d.line) || 1)), doc.lines);
    const line = doc.line(n);
    let from = line.from + Math.max(0, line.text.search(/\S|$/));
    let to = line.to;
    if (Number.isInteger(d.column)) from = line.from + Math.min(Math.max(0, d.column), line.length);
    if (Number.isInteger(d.endColumn)) to = line.from + Math.min(Math.max(0, d.endColumn), line.length);
    if (to < from) to = from;
    const message = String(d.message ?? "");
    const actions = (d.fixes || []).map(String).map((fix) => ({
      name: `Replace with '${fix}'`,
      apply: (view, fixFrom, fixTo) => view.dispatch({
        changes: { from: fixFrom, to: fixTo, insert: fix }, selection: { anchor: fixFrom + fix.length },
        userEvent: "input.fix", scrollIntoView: true,
      }),
    }));
    out.push({
      from, to, message, actions,
      severity: SEVERITIES[String(d.severity || "error").toLowerCase()] || "info",
      source: d.source,
      ...(actions.length ? { renderMessage: () => messageWithKeys(message, actions) } : {}),
    });
  }
  return out;
}

// -- the editor ----------------------------------------------------------------------------------

const DROP_TYPES = /\.(pcode|txt)$/i;

/**
 * Build a P-code editor inside `parent` (see the comment at the top of this file).
 * Returns an object with the methods below and `view`, the CodeMirror EditorView.
 */
export function createEditor(parent, options = {}) {
  const {
    text = "", lines = null, readOnlyLines = [], onChange = null, lint = null,
    completions = null, onSave = null, onDropRejected = null, readOnly = false,
    label = "P-code method",
  } = options;
  const readOnlyConf = new Compartment();
  let isReadOnly = Boolean(readOnly);
  let saved = null; // the Text last saved or loaded

  const extensions = () => [
    lineNumbers(),
    stateGutter,
    highlightActiveLineGutter(),
    highlightSpecialChars(),
    history(),
    EditorState.tabSize.of(4),
    indentUnit.of(INDENT),
    pcodeLanguage,
    syntaxHighlighting(pcodeHighlighter),
    pcodeIndentation,
    lineField,
    lockFilter,
    search({ top: true }),
    autocompletion({
      override: [(ctx) => pcodeCompletionSource(ctx, completions || (() => ({})))],
      icons: false,
    }),
    lint ? [linter(async (view) => {
      const doc = view.state.doc;
      try {
        return toDiagnostics(doc, await lint(doc.toString()));
      } catch (err) {
        console.warn("P-code lint failed", err);
        return [];
      }
    }, { delay: 300 }), lintGutter()] : [],
    keymap.of([
      ...(onSave ? [{ key: "Mod-s", preventDefault: true, run: () => { onSave(); return true; } }] : []),
      ...completionKeymap,
      ...defaultKeymap,
      ...searchKeymap,
      ...historyKeymap,
      ...lintKeymap,
      indentWithTab,
    ]),
    readOnlyConf.of(EditorState.readOnly.of(isReadOnly)),
    EditorView.editorAttributes.of({ class: "pc-editor" }),
    // Focusable also when read-only (a run's method): the keyboard reaches and scrolls every line.
    EditorView.contentAttributes.of({ "aria-label": label, tabindex: "0" }),
    EditorView.domEventObservers({
      // Escape, then Tab, leaves the editor (also when Escape first closed a popup).
      keydown(event, view) { if (event.key === "Escape") view.setTabFocusMode(2000); },
    }),
    EditorView.domEventHandlers({
      dragover(event) {
        if (event.dataTransfer && [...event.dataTransfer.types].includes("Files")) {
          event.preventDefault();
          return true;
        }
        return false;
      },
      drop(event, view) {
        const files = event.dataTransfer && event.dataTransfer.files;
        if (!files || !files.length) return false; // dragged text: CodeMirror inserts it
        event.preventDefault();
        const file = [...files].find((f) => DROP_TYPES.test(f.name));
        if (!file) { onDropRejected?.("only .pcode and .txt files can be dropped here"); return true; }
        if (view.state.readOnly) { onDropRejected?.("the method is read-only"); return true; }
        file.text().then((content) => {
          const tr = view.state.update({
            changes: { from: 0, to: view.state.doc.length, insert: content.replace(/^\uFEFF/, "") },
            userEvent: "input.drop",
            scrollIntoView: true,
          });
          if (!tr.docChanged && content.replace(/^\uFEFF/, "") !== view.state.doc.toString()) {
            onDropRejected?.("executed lines cannot be replaced");
            return;
          }
          view.dispatch(tr);
        }, (err) => onDropRejected?.(`the file could not be read: ${err}`));
        return true;
      },
    }),
    EditorView.updateListener.of((update) => {
      if (!update.docChanged || !onChange) return;
      if (update.transactions.some((tr) => tr.effects.some((e) => e.is(replaceLines)))) return;
      onChange(update.state.doc.toString(), !update.state.doc.eq(saved));
    }),
  ];

  function makeState(docText, ids, states) {
    const state = EditorState.create({ doc: docText, extensions: extensions() });
    // Every line of the document has an id: an empty method is still one (empty) line.
    const given = ids && ids.length === state.doc.lines ? ids : null;
    const effects = [replaceLines.of({ ids: given || textIds(state.doc.lines) })];
    if (states) effects.push(setStates.of(states));
    return state.update({ effects }).state;
  }

  function currentStates() {
    const { ids, states } = view.state.field(lineField);
    const known = new Set(ids);
    return Object.fromEntries(KINDS.map((k) => [k, [...states[k]].filter((id) => known.has(id))]));
  }

  function load(docText, ids) {
    // Line states are by line id: kept for the server's lines, dropped for plain text.
    const states = view.state.field(lineField).states;
    const keep = ids ? Object.fromEntries(KINDS.map((k) => [k, [...states[k]]])) : null;
    const state = makeState(docText, ids, keep);
    saved = state.doc;
    view.setState(state);
  }

  const initialIds = lines ? lines.map((l) => String(l.id)) : null;
  const initialText = lines ? lines.map((l) => l.text).join("\n") : text;
  const view = new EditorView({
    parent,
    state: makeState(initialText, initialIds, { executed: readOnlyLines }),
  });
  saved = view.state.doc;
  // CodeMirror measures on window resizes; a parent that grows or shrinks alone (a tab shown, a
  // split moved) is followed here.
  const resizes = new ResizeObserver(() => view.requestMeasure());
  resizes.observe(parent);

  return {
    view,
    /** The text, lines joined with "\n". */
    getText: () => view.state.doc.toString(),
    /** Replace the text (e.g. a method loaded from a file); lines get the ids id_1, id_2, ...
     *  Counts as saved; clears the undo history and the line states. */
    setText: (newText) => load(String(newText ?? ""), null),
    /** The lines with their ids: [{id, text}]. */
    getLines: () => {
      const { ids } = view.state.field(lineField);
      return ids.map((id, i) => ({ id, text: view.state.doc.line(i + 1).text }));
    },
    /** Replace the text with the server's lines [{id, text}]; counts as saved; clears the undo
     *  history; line states are kept (they are by line id; call setLineStates to change them). */
    setLines: (newLines) => load(newLines.map((l) => l.text).join("\n"), newLines.map((l) => String(l.id))),
    /** Whether the text differs from the last saved or loaded one. */
    isDirty: () => !view.state.doc.eq(saved),
    /** The current text is now the saved one. */
    markSaved: () => { saved = view.state.doc; },
    /** Mark lines (line numbers from 1, or line ids): executed and started lines are locked. */
    setLineStates: (states = {}) => view.dispatch({ effects: setStates.of(states) }),
    /** The current marks as line ids: {executed, started, failed}. */
    getLineStates: currentStates,
    /** Make the whole editor read-only (true) or editable (false). */
    setReadOnly: (on) => {
      isReadOnly = Boolean(on);
      view.dispatch({ effects: readOnlyConf.reconfigure(EditorState.readOnly.of(isReadOnly)) });
    },
    /** Run the lint callback now instead of after the pause in typing. */
    lintNow: () => forceLinting(view),
    focus: () => view.focus(),
    destroy: () => { resizes.disconnect(); view.destroy(); },
  };
}

/** For tests only (DOM-free parts, checked on an EditorState without a view). */
export const _internals = Object.freeze({
  lineField, lockFilter, pcodeIndentation, replaceLines, setStates, pcodeCompletionSource, toDiagnostics,
});
