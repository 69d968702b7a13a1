"""The browser UI as the aggregator serves it, and the method editor's analysis route.

Quart's test client against the fake backend of test_web: the pages answer index.html, the UI's
files come with the right content types and cache policy, every module the page loads (and
every module those import) exists, and ``POST /api/process_units/<unit>/analyze`` returns the
analyzer's diagnostics for the unit's tags and commands.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from pectus.pcode.engine import _system_tags
from pectus.web import create_app
from pectus.web.app import ROUTES, STATIC_DIR, SYSTEM_TAGS
from pectus.web.auth import AuthConfig, SignIn
from test_web import RUN, UNIT, FakeBackend, assert_error, trio_test

DESCRIPTION = {
    "tags": [{"name": "FT01", "unit": "L/h", "direction": "input"},
             {"name": "Valve", "unit": None, "direction": "output"},
             {"name": "PU01", "unit": "%", "direction": "output"}],
    "readings": [{"kind": "reading_with_entry", "tag_name": "PU01", "entry_data_type": "float",
                  "execute_command_name": "PU01", "command_options": None},
                 {"kind": "reading_with_choice", "tag_name": "Valve", "entry_data_type": None,
                  "execute_command_name": None, "command_options": {"Open": "Valve: Open", "Closed": "Valve: Closed"}}],
    "commands": [{"name": "Reset", "help": "Resets the unit.\n\nReset", "examples": ["Reset"], "takes_argument": False},
                 {"name": "PU01", "help": "PU01: 50 %", "examples": ["PU01: 50 %", "PU01: 0.5 %"]}],
}


class DescribedBackend(FakeBackend):
    """The fake backend whose Projector also offers the UOD description of the unit."""

    def __init__(self) -> None:
        super().__init__()
        self.views.answers["uod_description"] = {UNIT: DESCRIPTION}
        self.views.answers["plot_configuration"][RUN] = {"sub_plots": []}


@pytest.fixture
def backend() -> FakeBackend:
    return DescribedBackend()


# -- pages and files --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", f"/units/{UNIT}", f"/runs/{RUN}", "/units/unknown-unit"])
@trio_test
async def test_every_page_path_answers_index_html(backend: FakeBackend, path: str) -> None:
    response = await create_app(backend).test_client().get(path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    body = (await response.get_data()).decode()
    assert '<script type="module" src="/static/app.js"></script>' in body
    assert body == (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy and "connect-src 'self';" in policy
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Referrer-Policy"] == "no-referrer"


@trio_test
async def test_with_sign_in_on_the_page_may_also_talk_to_the_provider(backend: FakeBackend) -> None:
    sign_in = SignIn(AuthConfig(True, "https://login.example.com/tenant/v2.0", "app", "tenant"))
    response = await create_app(backend, sign_in).test_client().get("/")
    assert "connect-src 'self' https://login.example.com;" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(("name", "content_type"), [
    ("app.js", "text/javascript; charset=utf-8"),
    ("api.js", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("index.html", "text/html; charset=utf-8"),
])
@trio_test
async def test_static_files_have_their_content_type_and_are_revalidated(
        backend: FakeBackend, name: str, content_type: str) -> None:
    client = create_app(backend).test_client()
    response = await client.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert await response.get_data() == (STATIC_DIR / name).read_bytes()

    etag = response.headers["ETag"]
    again = await client.get(f"/static/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["ETag"] == etag
    assert await again.get_data() == b""


@trio_test
async def test_vendored_files_are_cached_long(backend: FakeBackend) -> None:
    vendored = sorted(path for path in (STATIC_DIR / "vendor").glob("*") if path.suffix in {".js", ".css"})
    if not vendored:
        pytest.skip("no vendored library yet")
    client = create_app(backend).test_client()
    for path in vendored:
        response = await client.get(f"/static/vendor/{path.name}")
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "public, max-age=604800"
        expected = "text/css; charset=utf-8" if path.suffix == ".css" else "text/javascript; charset=utf-8"
        assert response.headers["Content-Type"] == expected


@pytest.mark.parametrize("path", ["/static/nothing.js", "/static/../app.py", "/static/%2e%2e/app.py",
                                  "/static/vendor/../../app.py", "/static/", "/static/vendor"])
@trio_test
async def test_missing_files_and_paths_outside_the_static_folder_are_404(backend: FakeBackend, path: str) -> None:
    response = await create_app(backend).test_client().get(path)
    assert response.status_code == 404


_STATIC_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^"'`;]*?\bfrom\s*["']([^"']+)["']""", re.M)
_BARE_IMPORT = re.compile(r"""^\s*import\s*["']([^"']+)["']""", re.M)
_DYNAMIC_IMPORT = re.compile(r"""\bimport\(\s*["']([^"']+)["']\s*\)""")


def _module_references(text: str) -> set[str]:
    return {*_STATIC_IMPORT.findall(text), *_BARE_IMPORT.findall(text), *_DYNAMIC_IMPORT.findall(text)}


@trio_test
async def test_every_module_the_page_loads_exists(backend: FakeBackend) -> None:
    """index.html's scripts and styles, then every module they import, transitively."""
    client = create_app(backend).test_client()
    index = (await (await client.get("/")).get_data()).decode()
    referenced = set(re.findall(r"""(?:src|href)="(/static/[^"]+)\"""", index))
    assert {"/static/app.js", "/static/style.css", "/static/editor.css"} <= referenced

    seen: set[str] = set()
    pending = sorted(referenced)
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        response = await client.get(url)
        assert response.status_code == 200, f"{url} is referenced but not served"
        if url.endswith(".js"):
            base = url.rsplit("/", 1)[0]
            for reference in _module_references((await response.get_data()).decode()):
                assert reference.startswith(("./", "../", "/static/")), f"{url} imports {reference!r}: not a file"
                resolved = reference if reference.startswith("/") else _join(base, reference)
                pending.append(resolved)
    # the pages, the plot and the editor are all reached from index.html
    for module in ("app.js", "api.js", "dashboard.js", "unit.js", "run.js", "plot.js"):
        assert f"/static/{module}" in seen


def _join(base: str, reference: str) -> str:
    parts = base.split("/")
    for part in reference.split("/"):
        if part == "..":
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def test_the_ui_elements_the_browser_tests_address_exist() -> None:
    """The stable hooks promised in docs/ui.md are in the sources."""
    sources = "".join((STATIC_DIR / name).read_text(encoding="utf-8")
                      for name in ("index.html", "app.js", "api.js", "dashboard.js", "unit.js", "run.js", "plot.js"))
    for hook in ("connection-banner", "control-start", "control-pause", "control-hold", "control-stop",
                 "control-stop-lock", "confirm-ok", "confirm-cancel", "tile", "tile-input", "tile-unit", "tile-submit",
                 "tile-choice", "tile-error", "method-editor", "method-save", "method-conflict", "run-log-row",
                 "run-log-force", "run-log-cancel", "plot", "error-log-entry", "inject-code", "inject-run",
                 "download-csv", "download-events", "download-audit", "audit-table", "unit-card", "recent-run-row",
                 "runs-filter"):
        assert f'"{hook}"' in sources, hook


# -- the routes are in the table, the UI ones outside the API document ---------------------------

@trio_test
async def test_the_openapi_document_has_the_analysis_but_not_the_pages(backend: FakeBackend) -> None:
    document = await (await create_app(backend).test_client().get("/api/openapi.json")).get_json()
    paths = document["paths"]
    assert "post" in paths["/api/process_units/{unit}/analyze"]
    assert "get" in paths["/api/process_units/{unit}/vocabulary"]
    assert "get" in paths["/api/runs/{run}/plot_configuration"]
    assert not [path for path in paths if not (path.startswith("/api/") or path in ("/health", "/auth/config"))]
    assert {route.path for route in ROUTES if route.ui} == {"/", "/units/<unit>", "/runs/<run>", "/auth-callback",
                                                            "/static/<path:file>", "/sw.js"}


def test_the_system_tags_are_the_engines() -> None:
    engine = {tag.name: tag.unit for tag in _system_tags()}
    assert SYSTEM_TAGS == {**engine, "Batch Name": None}


# -- analysis ---------------------------------------------------------------------------------

async def analyze(backend: FakeBackend, text: Any, unit: str = UNIT) -> tuple[Any, Any]:
    response = await create_app(backend).test_client().post(f"/api/process_units/{unit}/analyze", json={"text": text})
    return response, await response.get_json()


@trio_test
async def test_analyze_finds_unknown_instructions_and_tags_with_a_did_you_mean(backend: FakeBackend) -> None:
    text = ("Mark: A\nFrobnicate: 3\nWatch: FT0 > 5 L/h\n    Mark: B\n"
            "Reset\nPU01: 20 %\nWatch: Run Time > 10 s\n    Stop\n")
    response, body = await analyze(backend, text)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    diagnostics = body["diagnostics"]
    for diagnostic in diagnostics:
        assert set(diagnostic) == {"line", "end_line", "column", "end_column", "severity", "id", "message", "fixes"}
        assert 1 <= diagnostic["line"] <= diagnostic["end_line"] <= text.count("\n") + 1
    found = {(d["line"], d["id"]) for d in diagnostics}
    assert (2, "UndefinedCommand") in found
    unknown_tag = next(d for d in diagnostics if d["id"] == "UndefinedTag")
    assert unknown_tag["line"] == 3
    assert unknown_tag["severity"] == "error"
    assert unknown_tag["fixes"][0] == "FT01"
    assert unknown_tag["column"] == len("Watch: ") + 1
    assert unknown_tag["end_column"] == len("Watch: FT0") + 1  # the fix replaces 'FT0', no more
    # the UOD's commands (Reset, PU01) and the system tags (Run Time, in s) are known
    assert not [d for d in diagnostics if d["line"] in (5, 6, 7)]


@trio_test
async def test_analyze_without_the_uod_description_checks_tags_but_not_command_names() -> None:
    backend = FakeBackend()  # the Projector knows no description of the unit: tags come from the values
    backend.views.answers["uod_description"] = {}
    text = "Frobnicate: 3\nWatch: TT1 > 20 degC\n    Mark: Warm\nWatch: TT01 > 20 degC\n    Mark: B"
    response, body = await analyze(backend, text)
    assert response.status_code == 200
    found = [(d["line"], d["id"], d["fixes"]) for d in body["diagnostics"]]
    assert (2, "UndefinedTag", ["TT01"]) in found  # TT01 only known from the live values
    assert not [line for line, id, _ in found if id == "UndefinedCommand" or line == 4]

    # the commands panel still lists the commands of the process values
    vocabulary = await (await create_app(backend).test_client().get(f"/api/process_units/{UNIT}/vocabulary")).get_json()
    assert vocabulary["commands"] == [{"name": "FT01", "help": "", "examples": [], "reading": True}]


@trio_test
async def test_analyze_says_a_unit_command_takes_no_argument_when_its_uod_says_so(backend: FakeBackend) -> None:
    """Before the UOD's description said so, the editor accepted any argument of any unit command."""
    response, body = await analyze(backend, "Reset: now\nReset\nPU01: 20 %\n")
    assert response.status_code == 200
    assert [(d["line"], d["id"]) for d in body["diagnostics"]] == [(1, "ArgumentNotExpected")]


@trio_test
async def test_analyze_reports_syntax_errors_by_line(backend: FakeBackend) -> None:
    response, body = await analyze(backend, "Mark: A\n  Mark: badly indented\n")
    assert response.status_code == 200
    assert [d["line"] for d in body["diagnostics"] if d["severity"] == "error"] == [2]


@trio_test
async def test_analyze_of_an_empty_method_has_no_diagnostics(backend: FakeBackend) -> None:
    response, body = await analyze(backend, "")
    assert (response.status_code, body) == (200, {"diagnostics": []})


@trio_test
async def test_analyze_errors(backend: FakeBackend) -> None:
    response, body = await analyze(backend, "Mark: A", unit="nope")
    assert "'nope'" in assert_error(response, body, 404)

    client = create_app(backend).test_client()
    path = f"/api/process_units/{UNIT}/analyze"
    missing = await client.post(path, json={"code": "Mark: A"})
    assert_error(missing, await missing.get_json(), 422, "text")
    wrong = await client.post(path, json={"text": 3})
    assert_error(wrong, await wrong.get_json(), 422, "text")
    garbled = await client.post(path, data=b"{text", headers={"Content-Type": "application/json"})
    assert_error(garbled, await garbled.get_json(), 400)
    assert backend.requests == []  # analysis never reaches the unit


# -- vocabulary and the run's plot configuration ------------------------------------------------

@trio_test
async def test_vocabulary_lists_tags_with_valid_units_commands_and_instructions(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    body = await (await client.get(f"/api/process_units/{UNIT}/vocabulary")).get_json()
    tags = {tag["name"]: tag for tag in body["tags"]}
    assert tags["FT01"]["unit"] == "L/h"
    assert tags["FT01"]["valid_units"][0] == "L/h" and "L/min" in tags["FT01"]["valid_units"]
    assert tags["Valve"] == {"name": "Valve", "unit": None, "valid_units": []}
    assert tags["Run Time"]["unit"] == "s"
    commands = {command["name"]: command for command in body["commands"]}
    assert commands["Reset"]["examples"] == ["Reset"] and commands["Reset"]["help"].startswith("Resets")
    assert commands["PU01"]["reading"] is True and commands["Reset"]["reading"] is False
    instructions = {instruction["name"]: instruction["example"] for instruction in body["instructions"]}
    assert instructions["Watch"].startswith("Watch: ")
    assert body["base_units"] == ["s", "min", "h"]

    unknown = await client.get("/api/process_units/nope/vocabulary")
    assert_error(unknown, await unknown.get_json(), 404)


@trio_test
async def test_the_instruction_examples_have_no_syntax_error(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    body = await (await client.get(f"/api/process_units/{UNIT}/vocabulary")).get_json()
    for instruction in body["instructions"]:
        response, result = await analyze(backend, instruction["example"])
        errors = [d for d in result["diagnostics"] if d["severity"] == "error"]
        assert errors == [], instruction


@trio_test
async def test_a_runs_plot_configuration(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    response = await client.get(f"/api/runs/{RUN}/plot_configuration")
    assert (response.status_code, await response.get_json()) == (200, {"sub_plots": []})
    unknown = await client.get("/api/runs/nope/plot_configuration")
    assert_error(unknown, await unknown.get_json(), 404)
