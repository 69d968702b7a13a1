"""Accessibility measured: axe-core (vendored in pectus/web/static/vendor/axe.min.js) checks every page
of the UI in a real browser (Debian's Chromium) against a real aggregator and demo engine, in the
states people see - the dashboard, the unit page with each tab and view, a run going, paused on an
error and stopped, the dialogs and popups open, the run page, the unit offline, and signed in - and
finds no serious or critical violation, colour contrast included.

axe is added to each page as a script of the page's own origin (/static/vendor/axe.min.js), so it
runs under the page's real Content-Security-Policy; no page of Pectus loads it by itself.
"""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from browser import System, browser, system  # noqa: F401 - pytest fixtures
from test_browser_auth import GUARDED, provider, signed_in_system  # noqa: F401 - pytest fixtures

T = 20_000  # ms: generous waits for a shared machine; every wait ends as soon as its condition holds
AXE = "/static/vendor/axe.min.js"
# A method that runs, notifies, waits, and then pauses on an error (an instruction the unit does not know).
METHOD = ["Mark: Started", "PU01: 40 %", "Notify: Column equilibrated", "Wait: 2 s", "Mrak: typo"]

# The serious and critical violations axe finds on the page, one line each with the elements.
VIOLATIONS = """async () => {
  const {violations} = await axe.run(document, {resultTypes: ["violations"]});
  return violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) =>
    `${v.impact} ${v.id}: ${v.help} (${v.helpUrl}) at ` +
    v.nodes.slice(0, 5).map((node) => `${node.target.join(" ")} [${node.failureSummary.replace(/\\s+/g, " ")}]`).join("; "));
}"""


def check(page: Page, where: str) -> None:
    """No serious or critical violation on ``page`` as it is now."""
    if not page.evaluate("() => typeof axe === 'object'"):
        page.add_script_tag(url=AXE)
    found = page.evaluate(VIOLATIONS)
    assert found == [], f"{where}:\n" + "\n".join(found)


def open_unit(page: Page, system: System) -> None:
    page.goto(f"{system.url}/units/{system.unit}")
    expect(page.get_by_test_id("control-start")).to_be_enabled(timeout=T)


def test_the_dashboard_the_unit_page_and_the_run_page_in_every_state(system, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{system.url}/")
    expect(page.locator(f'[data-testid="unit-card"][data-unit-id="{system.unit}"]')).to_be_visible(timeout=T)
    check(page, "the dashboard")
    page.get_by_test_id("push-bell").click()
    expect(page.get_by_test_id("push-menu")).to_be_visible(timeout=T)
    check(page, "the dashboard, the push notifications menu open")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("push-menu")).to_be_hidden()

    # The unit page, stopped: each tab under the trend (the diagram view has a test of its own).
    open_unit(page, system)
    page.get_by_test_id("user-name").fill("Ada")  # a filled name field, whose contrast was once lost
    for tab in ("tab-method", "tab-run-log", "tab-commands", "tab-error-log"):
        page.get_by_test_id(tab).click()
        check(page, f"the unit page, {tab}")
    page.get_by_test_id("tab-commands").click()
    page.get_by_test_id("command-example").first.click()
    check(page, "the unit page, a command example shown")

    # The editor with a diagnostic, its tooltip, the diagnostics panel and the completion list.
    page.get_by_test_id("tab-method").click()
    content = page.locator("#method-editor .cm-content")
    content.click()
    page.keyboard.insert_text("\n".join(METHOD))
    page.keyboard.press("Control+Home")
    expect(page.locator("#method-editor .cm-lintRange-error")).to_have_count(1, timeout=T)
    page.locator("#method-editor .cm-lintRange-error").hover()
    expect(page.locator(".cm-tooltip-lint")).to_be_visible(timeout=T)
    check(page, "the editor, a diagnostic's tooltip")
    page.mouse.move(0, 0)
    content.focus()
    page.keyboard.press("Control+Shift+M")
    expect(page.locator("#method-editor .cm-panel-lint")).to_be_visible(timeout=T)
    check(page, "the editor, the diagnostics panel")
    page.keyboard.press("Escape")
    page.keyboard.press("Control+End")
    page.keyboard.press("Enter")
    page.keyboard.type("Wat")
    expect(page.locator(".cm-tooltip-autocomplete")).to_be_visible(timeout=T)
    check(page, "the editor, the completion list")
    page.keyboard.press("Escape")
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.get_by_test_id("method-save").click()
    expect(page.get_by_test_id("method-status")).to_contain_text("Version 1", timeout=T)

    # A tile's editor and the plot's axis dialog.
    tile = page.locator('[data-testid="tile"][data-tag="PU01"]')
    tile.get_by_test_id("tile-open").click()
    expect(tile.get_by_test_id("tile-input")).to_be_visible()
    check(page, "the unit page, a tile's editor open")
    tile.get_by_test_id("tile-open").click()
    page.get_by_test_id("plot-axis-limits").first.click()
    expect(page.get_by_test_id("axis-dialog")).to_be_visible()
    check(page, "the plot's axis dialog")
    page.keyboard.press("Escape")

    # Running: the run log with every item's values, a notification; then paused on the error.
    page.get_by_test_id("control-start").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)
    page.get_by_test_id("tab-run-log").click()
    expect(page.get_by_test_id("run-log-row").first).to_be_visible(timeout=T)
    page.get_by_test_id("run-log-expand-all").click()
    expect(page.get_by_test_id("notification").first).to_be_visible(timeout=T)
    check(page, "the unit page, running, the run log expanded, a notification shown")
    expect(page.get_by_test_id("unit-error-banner")).to_be_visible(timeout=T)
    check(page, "the unit page, paused on an error")
    page.get_by_test_id("unit-error-link").click()
    check(page, "the unit page, the error log of the error")

    # Stop: the confirmation, then the page between runs.
    page.get_by_test_id("control-stop-lock").click()
    page.get_by_test_id("control-stop").click()
    expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
    check(page, "the Stop confirmation")
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "stopped", timeout=T)
    expect(page.get_by_test_id("run-ended")).to_be_visible(timeout=T)
    check(page, "the unit page after Stop")

    # The run's page, and the dashboard with the run in its list.
    page.get_by_test_id("run-ended-link").click()
    expect(page.get_by_test_id("audit-row").first).to_be_visible(timeout=T)
    page.get_by_test_id("run-log-expand-all").click()
    check(page, "the run page")
    page.goto(f"{system.url}/")
    expect(page.get_by_test_id("recent-run-row").first).to_be_visible(timeout=T)
    check(page, "the dashboard with a recent run")

    # A run that does not exist, and the unit gone offline.
    page.goto(f"{system.url}/runs/no-such-run")
    expect(page.get_by_test_id("run-missing")).to_be_visible(timeout=T)
    check(page, "a run that does not exist")
    for engine in system.engines:
        engine.terminate()
        engine.wait(10)
    page.goto(f"{system.url}/units/{system.unit}")
    expect(page.get_by_test_id("unit-offline-banner")).to_be_visible(timeout=T)
    check(page, "the unit page, offline")
    page.goto(f"{system.url}/")
    expect(page.locator(f'[data-testid="unit-card"][data-unit-id="{system.unit}"]')).to_have_class(
        "unit-card state-offline", timeout=T)
    check(page, "the dashboard, the unit offline")


def test_the_process_diagram_view(system, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    open_unit(page, system)
    page.get_by_test_id("view-diagram").click()
    expect(page.get_by_test_id("process-diagram").locator("svg")).to_be_visible(timeout=T)
    check(page, "the unit page, the process diagram")


def test_the_pages_of_a_signed_in_user(signed_in_system, provider, browser):
    system = signed_in_system
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    page.goto(f"{system.url}/")
    expect(page.get_by_test_id("signed-in-user")).to_have_text("Alice Smith", timeout=T)
    expect(page.locator(f'[data-testid="unit-card"][data-unit-id="{system.unit}"]')).to_be_visible(timeout=T)
    check(page, "the dashboard, signed in")
    open_unit(page, system)
    check(page, "the unit page, signed in")
    guarded = system.unit.removesuffix("_DemoUod") + f"_{GUARDED}"
    page.goto(f"{system.url}/units/{guarded}")
    expect(page.get_by_test_id("missing-roles")).to_be_visible(timeout=T)
    check(page, "a unit that needs a role the user lacks")
    page.goto(f"{system.url}/auth-callback?code=stolen&state=not-mine")
    expect(page.get_by_test_id("sign-in-failed")).to_be_visible(timeout=T)
    check(page, "a sign-in that failed")
    assert httpx.get(f"{system.url}/health").status_code == 200
