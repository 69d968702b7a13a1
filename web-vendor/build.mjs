// Builds the vendored browser libraries of Pectus into pectus/web/static/vendor/.
//
//   cd web-vendor && npm ci && node build.mjs
//
// Outputs (all committed; Pectus never runs Node.js itself):
//   codemirror.js   one minified, tree-shaken ES module re-exporting the CodeMirror 6 API the editor uses
//   uPlot.esm.js    uPlot's ES module build, minified (its copyright header kept)
//   uPlot.min.css   uPlot's stylesheet, as published
//   axe.min.js      axe-core's browser build, as published: the accessibility checker the browser tests
//                   inject into the pages (no page of Pectus loads it)
//   LICENSES.txt    the licence text of every package that ends up in these files, with its version
//
// The versions are pinned in package.json and package-lock.json, and esbuild's output depends only
// on its version and its input, so running this again gives the same files byte for byte.

import { build, transform } from "esbuild";
import { readFile, writeFile, mkdir, copyFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "pectus", "web", "static", "vendor");
const modules = join(here, "node_modules");

// What pectus/web/static/editor.js imports, plus a few pieces its tests use (CompletionContext,
// ensureSyntaxTree, getIndentation, highlightTree) and the usual undo/redo/comment commands.
// Anything not listed is tree-shaken away; add a name here (and rebuild) before importing it.
const EXPORTS = {
  "@codemirror/state": [
    "Compartment", "EditorSelection", "EditorState", "MapMode", "RangeSet", "RangeSetBuilder", "StateEffect",
    "StateField", "Text", "Transaction",
  ],
  "@codemirror/view": [
    "Decoration", "EditorView", "GutterMarker", "gutter", "highlightActiveLineGutter", "highlightSpecialChars",
    "keymap", "lineNumbers",
  ],
  "@codemirror/commands": [
    "defaultKeymap", "history", "historyKeymap", "indentLess", "indentMore", "indentWithTab", "redo",
    "toggleComment", "undo",
  ],
  "@codemirror/language": [
    "StreamLanguage", "ensureSyntaxTree", "getIndentation", "indentService", "indentUnit", "syntaxHighlighting",
  ],
  "@lezer/highlight": ["highlightTree", "tagHighlighter", "tags"],
  "@codemirror/autocomplete": [
    "CompletionContext", "autocompletion", "closeCompletion", "completionKeymap", "insertCompletionText",
    "pickedCompletion", "startCompletion",
  ],
  "@codemirror/lint": ["forceLinting", "lintGutter", "lintKeymap", "linter", "setDiagnostics"],
  "@codemirror/search": ["search", "searchKeymap"],
};

const entry = Object.entries(EXPORTS)
  .map(([pkg, names]) => `export { ${names.join(", ")} } from ${JSON.stringify(pkg)};`)
  .join("\n");

// A package's name, version, licence and licence text (with the notices of the code it bundles, when
// it ships them in a file of their own).
async function pkgInfo(name) {
  const dir = join(modules, name);
  const meta = JSON.parse(await readFile(join(dir, "package.json"), "utf8"));
  const licenceFile = ["LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE"].map((f) => join(dir, f)).find(existsSync);
  if (!licenceFile) throw new Error(`${name}: no licence file`);
  const thirdParty = join(dir, "LICENSE-3RD-PARTY.txt");
  const texts = [await readFile(licenceFile, "utf8"), ...(existsSync(thirdParty) ? [await readFile(thirdParty, "utf8")] : [])];
  return { name, version: meta.version, license: meta.license, text: texts.map((text) => text.trim()).join("\n\n") };
}

// The package a bundled input file belongs to (node_modules/@scope/name/... or node_modules/name/...).
function packageOf(path) {
  const m = path.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  return m ? m[1] : null;
}

await mkdir(out, { recursive: true });

// 1. CodeMirror: one ES module.
const result = await build({
  stdin: { contents: entry, resolveDir: here, sourcefile: "codemirror-entry.js", loader: "js" },
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  minify: true,
  treeShaking: true,
  legalComments: "none",
  metafile: true,
  write: false,
  logLevel: "warning",
});
const bundled = [...new Set(Object.keys(result.metafile.inputs).map(packageOf).filter(Boolean))].sort();
const cmPackages = await Promise.all(bundled.map(pkgInfo));
const cmBanner =
  "/* CodeMirror 6 for Pectus, built by web-vendor/build.mjs from: " +
  cmPackages.map((p) => `${p.name}@${p.version}`).join(", ") +
  ". MIT licensed; see LICENSES.txt. */\n";
await writeFile(join(out, "codemirror.js"), cmBanner + result.outputFiles[0].text);

// 2. uPlot: its ES module build, minified, and its stylesheet.
const uplot = await pkgInfo("uplot");
const uplotSource = await readFile(join(modules, "uplot", "dist", "uPlot.esm.js"), "utf8");
const header = uplotSource.match(/^\/\*\*[\s\S]*?\*\//);
const uplotMin = await transform(uplotSource, {
  loader: "js", format: "esm", target: "es2020", minify: true, legalComments: "none",
});
await writeFile(
  join(out, "uPlot.esm.js"),
  (header ? header[0].replace(/^\/\*\*/, "/*!") + "\n" : "") +
    `/* uplot@${uplot.version} dist/uPlot.esm.js, minified by web-vendor/build.mjs; see LICENSES.txt. */\n` +
    uplotMin.code,
);
await copyFile(join(modules, "uplot", "dist", "uPlot.min.css"), join(out, "uPlot.min.css"));

// 3. axe-core: its minified browser build as published (its MPL-2.0 copyright header first).
const axe = await pkgInfo("axe-core");
await copyFile(join(modules, "axe-core", "axe.min.js"), join(out, "axe.min.js"));

// 4. Licences.
const all = [...cmPackages, uplot, axe];
const sections = all.map(
  (p) => `${"=".repeat(78)}\n${p.name} ${p.version} (${p.license})\n${"=".repeat(78)}\n\n${p.text}\n`,
);
await writeFile(
  join(out, "LICENSES.txt"),
  "Third-party code in this folder (pectus/web/static/vendor/)\n\n" +
    "codemirror.js bundles: " + cmPackages.map((p) => `${p.name} ${p.version}`).join(", ") + "\n" +
    `uPlot.esm.js, uPlot.min.css: uplot ${uplot.version}\n` +
    `axe.min.js: axe-core ${axe.version} (${axe.license}), unmodified; its Source Code Form is the npm package ` +
    `axe-core@${axe.version}, also at https://github.com/dequelabs/axe-core/tree/v${axe.version}\n\n` +
    "Built by web-vendor/build.mjs (see web-vendor/README.md). Licence texts follow.\n\n" +
    sections.join("\n"),
);

for (const f of ["codemirror.js", "uPlot.esm.js", "uPlot.min.css", "axe.min.js", "LICENSES.txt"]) {
  const size = (await readFile(join(out, f))).length;
  console.log(`${f.padEnd(14)} ${String(size).padStart(8)} bytes`);
}
