"""The recent run page in a real browser (Debian's Chromium) against a real aggregator and demo
engine: what a run was reads as names and values (no Python reprs), the audit trail says who did
what, from which old value to which new one (never '?'), and the run log's values carry their units.

Screenshots: tests/artifacts/run-page-1440x900.png and run-page-1920x1080.png.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

import httpx
from playwright.sync_api import expect

from browser import browser, screenshot, system  # noqa: F401 - pytest fixtures

T = 20_000  # ms: generous waits for a shared machine; every wait ends as soon as its condition holds
WHO = {"X-Pectus-User": "Ada Operator"}
METHOD = ["Mark: Started", "PU01: 40 %", "Wait: 60 s", "Mark: Done"]


def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """``check()``'s first truthy answer, polled until a deadline."""
    deadline = time.monotonic() + timeout
    while not (answer := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return answer


def item(unit_api: str, name: str, state: str | None = None) -> dict | None:
    """The run-log item of the unit's active run named ``name`` (in ``state``), or None."""
    for entry in httpx.get(f"{unit_api}/run_log").json():
        if entry["name"] == name and (state is None or entry["state"] == state):
            return entry
    return None


def a_run_with_people_in_it(system) -> str:
    """A run in which Ada set the pump, revised the method, paused, forced the wait and stopped: its id."""
    unit = f"{system.url}/api/process_units/{system.unit}"
    lines = [{"id": f"l{number}", "text": text} for number, text in enumerate(METHOD, start=1)]
    assert httpx.post(f"{unit}/method", json={"lines": lines, "version": 0}, headers=WHO).status_code == 200
    assert httpx.post(f"{unit}/control", json={"command": "Start"}, headers=WHO).status_code == 200
    wait = until(lambda: item(unit, "Wait: 60 s", "started"), "the Wait to start")
    answer = httpx.post(f"{unit}/process_values/PU01", json={"value": 60, "unit": "%"}, headers=WHO)
    assert answer.status_code == 200, answer.text
    revised = [*lines, {"id": "l5", "text": "Mark: Added during the run"}]
    assert httpx.post(f"{unit}/method", json={"lines": revised, "version": 1}, headers=WHO).status_code == 200
    for command in ("Pause", "Unpause"):
        assert httpx.post(f"{unit}/control", json={"command": command}, headers=WHO).status_code == 200
    assert httpx.post(f"{unit}/run_log/{wait['id']}/force", json={}, headers=WHO).status_code == 200
    until(lambda: item(unit, "Mark: Added during the run"), "the method to go on after the forced Wait")
    run_id = httpx.get(unit).json()["run_id"]
    assert httpx.post(f"{unit}/control", json={"command": "Stop"}, headers=WHO).status_code == 200
    until(lambda: httpx.get(f"{system.url}/api/runs/{run_id}").json()["completed_date"], "the run to end")
    return run_id


def audit_row(page, what: str):
    return page.get_by_test_id("audit-row").filter(has=page.get_by_test_id("audit-what").get_by_text(what, exact=True))


def test_a_recent_run_reads_as_names_and_values(system, browser):
    run_id = a_run_with_people_in_it(system)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{system.url}/runs/{run_id}")
    meta = page.get_by_test_id("run-meta")
    expect(meta).to_contain_text("DemoHardware (simulated)", timeout=T)
    expect(page.get_by_test_id("audit-row").first).to_be_visible(timeout=T)
    # No Python repr, no unknown value anywhere in what the run was and who did what.
    for text in (meta.inner_text(), page.get_by_test_id("audit-table").inner_text()):
        assert not re.search(r"\w+\(\w+=|is_connected|\?|\bNone\b|\bnull\b|\{|\}", text), text

    # The run began Stopped -> Running, by the unit; Ada's requests carry her name, old and new values.
    first_state = audit_row(page, "State").first
    expect(first_state.get_by_test_id("audit-change")).to_have_text("Stopped → Running")
    expect(first_state.get_by_test_id("audit-who")).to_contain_text("(DemoUod)")
    pump = audit_row(page, "Process value: PU01")
    expect(pump.get_by_test_id("audit-who")).to_have_text("Ada Operator")
    expect(pump.get_by_test_id("audit-change")).to_have_text("40 % → 60 %")
    expect(pump.get_by_test_id("audit-outcome")).to_have_text("accepted")
    expect(audit_row(page, "Method saved").get_by_test_id("audit-change")).to_have_text("version 1 → version 2")
    expect(audit_row(page, "Method revised").get_by_test_id("audit-change")).to_have_text("version 1 → version 2")
    expect(audit_row(page, "Run control: Pause")).to_have_count(1)
    expect(audit_row(page, "State").filter(has_text="Running → Paused")).to_have_count(1)
    expect(audit_row(page, "Run-log item forced").get_by_test_id("audit-change")).to_have_text("Wait: 60 s")
    expect(audit_row(page, "Run control: Stop").get_by_test_id("audit-who")).to_have_text("Ada Operator")

    # The run log's values at an item's start and end carry their units.
    row = page.get_by_test_id("run-log-row").filter(has_text="PU01: 40 %")
    row.get_by_test_id("run-log-expand").click()
    details = page.get_by_test_id("run-log-details")
    expect(details.locator('dd:nth-of-type(2) .chip[data-tag="PU01"]')).to_have_text("PU01 40 %")
    expect(details.locator('dd:nth-of-type(1) .chip[data-tag="PU01"]')).to_have_text("PU01 0 %")
    expect(details.locator('dd:nth-of-type(1) .chip[data-tag="FT01"]')).to_contain_text(" L/h")
    expect(details.locator('dd:nth-of-type(1) .chip[data-tag="VA01"]')).to_have_text(re.compile(r"^VA01 (Open|Closed)$"))
    # Clock as a date and time, a duration as a clock, as the UOD says to show them.
    expect(details.locator('dd:nth-of-type(1) .chip[data-tag="Clock"]')).to_have_text(
        re.compile(r"^Clock \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    expect(details.locator('dd:nth-of-type(1) .chip[data-tag="Run Time"]')).to_have_text(re.compile(r"^Run Time \d+:\d\d"))
    screenshot(page, "run-page-1440x900.png")
    page.set_viewport_size({"width": 1920, "height": 1080})
    screenshot(page, "run-page-1920x1080.png")


def test_the_unit_pages_run_log_values_carry_their_units(system, browser):
    unit = f"{system.url}/api/process_units/{system.unit}"
    lines = [{"id": f"l{number}", "text": text} for number, text in enumerate(METHOD, start=1)]
    assert httpx.post(f"{unit}/method", json={"lines": lines, "version": 0}).status_code == 200
    assert httpx.post(f"{unit}/control", json={"command": "Start"}).status_code == 200
    until(lambda: item(unit, "PU01: 40 %", "completed"), "the pump to be set")
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{system.url}/units/{system.unit}")
    page.get_by_test_id("tab-run-log").click()
    row = page.get_by_test_id("run-log-row").filter(has_text="PU01: 40 %")
    row.get_by_test_id("run-log-expand").click()
    details = page.get_by_test_id("run-log-details")
    expect(details.locator('dd:nth-of-type(2) .chip[data-tag="PU01"]')).to_have_text("PU01 40 %", timeout=T)
    expect(details.locator('dd:nth-of-type(2) .chip[data-tag="TT01"]')).to_contain_text(" degC")
    expect(details.locator('dd:nth-of-type(2) .chip[data-tag="Clock"]')).to_have_text(
        re.compile(r"^Clock \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
