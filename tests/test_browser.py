"""The UI in a real browser (Debian's Chromium via Playwright) against a real aggregator and a real
demo engine on loopback: an operator's run from the dashboard to the recent run's CSV, two
browsers editing one method, and an aggregator restart while the page is open.

Screenshots are saved under tests/artifacts/ (not committed): dashboard.png, unit-running.png,
recent-run.png.
"""

from __future__ import annotations

import csv
import io
import re

import httpx
from playwright.sync_api import expect

from browser import UNLABELLED, browser, screenshot, system  # noqa: F401 - pytest fixtures

METHOD = """\
Base: s
Mark: Started
VA01: Open
PU01: 40 %
Wait: 60 s
Mark: After the wait
Block: Elute
    1 Mark: Eluting
    2 End block
Mark: Done
"""
T = 20_000  # ms: generous waits for a shared CI machine; every wait ends as soon as its condition holds


def test_an_operators_run_from_the_dashboard_to_the_recent_runs_csv(system, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    # The page runs under its Content-Security-Policy: nothing it does may be refused by it.
    refused = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    page.goto(system.url + "/")
    expect(page.locator(f'[data-testid="unit-card"][data-unit-id="{system.unit}"]')).to_be_visible(timeout=T)
    screenshot(page, "dashboard.png")
    page.locator(f'[data-testid="unit-card"][data-unit-id="{system.unit}"] a').first.click()
    expect(page.get_by_test_id("unit-name")).to_be_visible(timeout=T)

    # Write the method in the editor and save it.
    page.locator("#method-editor .cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(METHOD)
    page.get_by_test_id("method-save").click()
    expect(page.get_by_test_id("method-status")).to_contain_text("Version 1", timeout=T)

    # Start: marks appear in the run log, the plot grows.
    page.get_by_test_id("control-start").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)
    page.get_by_test_id("tab-run-log").click()  # the run log shares the space under the trend with the method
    started = page.locator('[data-testid="run-log-row"]').filter(has_text="Mark: Started")
    expect(started).to_be_visible(timeout=T)
    expect(page.get_by_test_id("plot")).to_be_visible()
    # The live plot grows: a row every half second of the run.
    expect(page.locator("#unit-plot")).to_have_attribute("data-rows", re.compile(r"^([4-9]|[1-9]\d+)$"), timeout=T)

    # Edit a process value: the pump to 60 %.
    tile = page.locator('[data-testid="tile"][data-tag="PU01"]')
    tile.get_by_test_id("tile-open").click()
    tile.get_by_test_id("tile-input").fill("60")
    tile.get_by_test_id("tile-submit").click()
    expect(tile.get_by_test_id("tile-value")).to_contain_text("60", timeout=T)

    # Pause and Unpause.
    page.get_by_test_id("control-pause").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "paused", timeout=T)
    page.get_by_test_id("control-pause").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)

    # Force the 60 s Wait: the method goes on at once.
    wait_row = page.locator('[data-testid="run-log-row"][data-state="started"]').filter(has_text="Wait: 60 s")
    expect(wait_row).to_be_visible(timeout=T)
    wait_row.get_by_test_id("run-log-force").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.locator('[data-testid="run-log-row"]').filter(has_text="Mark: Done")).to_be_visible(timeout=T)
    # A run-log item shows the tag values at its start and end on expand.
    pump_row = page.locator('[data-testid="run-log-row"]').filter(has_text="PU01: 40 %").first
    pump_row.get_by_test_id("run-log-expand").click()
    expect(page.get_by_test_id("run-log-details").first).to_contain_text("PU01", timeout=T)
    screenshot(page, "unit-running.png")

    # Stop: unlock, then confirm.
    page.get_by_test_id("control-stop-lock").click()
    page.get_by_test_id("control-stop").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "stopped", timeout=T)

    # The recent run, and its CSV.
    page.goto(system.url + "/")
    row = page.get_by_test_id("recent-run-row").first
    expect(row).to_be_visible(timeout=T)
    row.locator("a").first.click()
    expect(page.get_by_test_id("run-meta")).to_be_visible(timeout=T)
    expect(page.locator('[data-testid="run-log-row"]').filter(has_text="Mark: Eluting")).to_be_visible(timeout=T)
    screenshot(page, "recent-run.png")
    with page.expect_download() as download_info:
        page.get_by_test_id("download-csv").click()
    content = open(download_info.value.path(), encoding="utf-8").read()
    rows = list(csv.reader(io.StringIO(content)))
    header = next(r for r in rows if r and not r[0].startswith("#"))
    assert "PU01 [%]" in header and "FT01 [L/h]" in header
    pump = header.index("PU01 [%]")
    pump_values = {r[pump] for r in rows[rows.index(header) + 1:] if r and r[pump]}
    assert "60.0" in pump_values  # the operator's change is in the record
    assert any(r and r[0] == "# Contributors" for r in rows)
    assert refused == []


def test_two_browsers_edit_the_same_method_and_the_second_save_gets_the_conflict(system, browser):
    first = browser.new_context().new_page()
    second = browser.new_context().new_page()
    for page in (first, second):
        page.goto(f"{system.url}/units/{system.unit}")
        expect(page.locator("#method-editor .cm-content")).to_be_visible(timeout=T)
    for page, mark in ((first, "first"), (second, "second")):
        page.locator("#method-editor .cm-content").click()
        page.keyboard.insert_text(f"Mark: {mark}\n")
    first.get_by_test_id("method-save").click()
    expect(first.get_by_test_id("method-status")).to_contain_text("Version 1", timeout=T)
    second.get_by_test_id("method-save").click()
    conflict = second.get_by_test_id("method-conflict")
    expect(conflict).to_be_visible(timeout=T)
    expect(conflict).to_contain_text(re.compile("changed the method", re.I))


def test_the_page_reconnects_after_an_aggregator_restart_and_shows_what_it_missed(system, browser):
    api = f"{system.url}/api/process_units/{system.unit}"
    version = httpx.get(f"{api}/method").json()["version"]
    method = [{"id": "1", "text": "Mark: before"}, {"id": "2", "text": "Wait: 2 s"},
              {"id": "3", "text": "Mark: while away"}]
    assert httpx.post(f"{api}/method", json={"lines": method, "version": version}).status_code == 200
    assert httpx.post(f"{api}/control", json={"command": "Start"}).status_code == 200
    page = browser.new_page()
    page.goto(f"{system.url}/units/{system.unit}")
    page.get_by_test_id("tab-run-log").click()
    expect(page.locator('[data-testid="run-log-row"]').filter(has_text="Mark: before")).to_be_visible(timeout=T)
    system.stop_aggregator()
    expect(page.get_by_test_id("connection-banner")).to_be_visible(timeout=T)
    # The run goes on at the engine while the aggregator is away; its records wait in the outbox.
    system.wait_for_outbox("while away")
    system.start_aggregator()
    expect(page.get_by_test_id("connection-banner")).to_be_hidden(timeout=T)
    expect(page.locator('[data-testid="run-log-row"]').filter(has_text="Mark: while away")).to_be_visible(timeout=T)


def test_every_control_has_a_name_and_the_run_controls_work_from_the_keyboard(system, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})  # a 13" laptop
    for path in ("/", f"/units/{system.unit}"):
        page.goto(system.url + path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate(UNLABELLED) == [], path
    page.goto(f"{system.url}/units/{system.unit}")
    expect(page.get_by_test_id("control-start")).to_be_enabled(timeout=T)
    page.get_by_test_id("control-start").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)
    page.keyboard.press("Tab")  # on to Pause, and Space presses it
    page.keyboard.press("Space")
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "paused", timeout=T)


def test_the_editor_shows_diagnostics_completes_names_and_guards_unsaved_changes(system, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{system.url}/units/{system.unit}")
    editor = page.locator("#method-editor .cm-content")
    expect(editor).to_be_visible(timeout=T)
    editor.click()
    page.keyboard.type("Mrak: typo")
    # The aggregator's analyzer answers as you type: an unknown instruction, with a did-you-mean.
    expect(page.locator("#method-editor .cm-lintRange-error, #method-editor .cm-lint-marker-error").first
           ).to_be_visible(timeout=T)
    page.keyboard.press("Enter")
    page.keyboard.type("Wat")
    completion = page.locator(".cm-tooltip-autocomplete")
    expect(completion).to_contain_text("Watch", timeout=T)
    page.keyboard.press("Escape")
    # Leaving with unsaved changes asks first.
    page.locator('a[href="/"]').first.click()
    expect(page.get_by_test_id("confirm-dialog")).to_be_visible(timeout=T)
    page.get_by_test_id("confirm-cancel").click()
    expect(page.get_by_test_id("unit-name")).to_be_visible()
