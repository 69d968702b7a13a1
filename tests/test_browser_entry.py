"""Entries checked before they are sent, in Debian's Chromium against a real aggregator and the real
demo engine: 150 into PU01 (0 to 100 %) is refused under the field - by the page, and by the engine
when the page has no rules - and the run stays Running with nothing in the error log; the unit
dropdown offers only the units that fit; the commands box refuses `PU01: 150 %` with the reason;
the Commands list has only the unit's commands; Clock shows as a date and time; a tile's editor
opens over the grid without moving a tile, also when the page asks for it (pectus:open-tag).

Screenshot: entry-refused.png (tests/artifacts/).
"""

from __future__ import annotations

import json
import re

import httpx
from playwright.sync_api import Page, Route, expect

from browser import browser, screenshot, system  # noqa: F401 - pytest fixtures

T = 20_000  # ms: generous waits for a shared machine; every wait ends as soon as its condition holds
PUMP = "PU01: 150 % is not a valid value: expected 0 to 100 %."


def api(system) -> str:
    return f"{system.url}/api/process_units/{system.unit}"


def start_a_run(system) -> str:
    version = httpx.get(f"{api(system)}/method").json()["version"]
    lines = [{"id": "1", "text": "Mark: A"}, {"id": "2", "text": "Wait: 1 h"}]
    assert httpx.post(f"{api(system)}/method", json={"lines": lines, "version": version}).status_code == 200
    assert httpx.post(f"{api(system)}/control", json={"command": "Start"}).status_code == 200
    return lines


def open_unit(browser, system) -> Page:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{system.url}/units/{system.unit}")
    expect(page.locator('[data-testid="tile"][data-tag="PU01"] [data-testid="tile-open"]')).to_be_visible(timeout=T)
    return page


def requests_of(system, kind: str) -> list[dict]:
    run = httpx.get(api(system)).json()["run_id"]
    return [entry["detail"] for entry in httpx.get(f"{system.url}/api/runs/{run}/audit").json() if entry["what"] == kind]


def set_pump(page: Page, value: str):
    tile = page.locator('[data-testid="tile"][data-tag="PU01"]')
    if tile.get_by_test_id("tile-open").get_attribute("aria-expanded") != "true":
        tile.get_by_test_id("tile-open").click()
    tile.get_by_test_id("tile-input").fill(value)
    tile.get_by_test_id("tile-submit").click()
    return tile


def test_an_out_of_range_entry_is_refused_under_the_field_and_the_run_keeps_running(system, browser):
    start_a_run(system)
    page = open_unit(browser, system)
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)

    # The page refuses it before sending: the error under the field, nothing sent.
    tile = set_pump(page, "150")
    expect(tile.get_by_test_id("tile-error")).to_have_text(PUMP)
    expect(tile.get_by_test_id("tile-input")).to_have_attribute("aria-invalid", "true")
    expect(tile.get_by_test_id("tile-expected")).to_have_text("Valid: 0 to 100 %")
    # Only the units that fit the pump: % (before: %, vol%, wt%, mol%).
    assert tile.locator('[data-testid="tile-unit"] option').all_inner_texts() == ["%"]
    screenshot(page, "entry-refused.png")
    assert requests_of(system, "process_value") == []

    # A valid value goes through and shows.
    set_pump(page, "40")
    expect(tile.get_by_test_id("tile-value")).to_have_text("40", timeout=T)
    expect(tile.get_by_test_id("tile-editor")).to_have_count(0)

    # A page without the rules (an engine that sends none) sends 150: the engine refuses it before
    # anything runs, and its reason shows under the field.
    def without_rules(route: Route) -> None:
        values = route.fetch().json()
        for value in values:
            for command in value.get("commands") or []:
                command["rules"] = None
        route.fulfill(json=values)
    page.route("**/process_values", without_rules)
    page.reload()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)
    tile = set_pump(page, "150")
    expect(tile.get_by_test_id("tile-error")).to_have_text(f"The unit refused: {PUMP}", timeout=T)
    assert requests_of(system, "process_value") == [
        {"asked": {"tag": "PU01", "value": 40, "unit": "%", "old": 0.0}, "accepted": True, "reason": ""},
        {"asked": {"tag": "PU01", "value": 150, "unit": "%", "old": 40.0}, "accepted": False, "reason": PUMP}]

    # The commands box: refused with the reason, the text kept to fix it.
    page.get_by_test_id("tab-commands").click()
    page.get_by_test_id("inject-code").fill("PU01: 150 %")
    page.get_by_test_id("inject-run").click()
    expect(page.get_by_test_id("inject-error")).to_have_text(f"The unit refused: {PUMP}", timeout=T)
    expect(page.get_by_test_id("inject-code")).to_have_value("PU01: 150 %")

    # The run never paused and nothing reached the error log.
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running")
    page.get_by_test_id("tab-error-log").click()
    expect(page.get_by_test_id("error-log-entry")).to_have_count(0)
    expect(page.get_by_test_id("tab-error-count")).to_be_hidden()
    assert httpx.get(f"{api(system)}/error_log").json() == []
    assert httpx.get(f"{api(system)}/control_state").json()["method_status"] == "OK"
    assert tile.get_by_test_id("tile-value").inner_text() == "40"


def boxes(page: Page) -> dict[str, dict]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('[data-testid="tile"]')]
        .map((tile) => { const r = tile.getBoundingClientRect();
                         return [tile.dataset.tag, {x: r.x, y: r.y, width: r.width, height: r.height}]; }))""")


def test_tiles_commands_and_clock(system, browser):
    start_a_run(system)
    page = open_unit(browser, system)
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)

    # The Commands list: the unit's commands, then the P-code instructions; no sensor or engine tag.
    page.get_by_test_id("tab-commands").click()
    commands = page.locator('[data-testid="command-example"][data-kind="command"]')
    expect(commands).to_have_count(6, timeout=T)
    assert [c.get_attribute("data-command") for c in commands.all()] == [
        "PU01", "HE01", "VA01", "Inlet", "Column Volume", "Reset"]
    instructions = [c.get_attribute("data-command")
                    for c in page.locator('[data-testid="command-example"][data-kind="instruction"]').all()]
    assert "Watch" in instructions and not {"TT01", "FT01", "System State"} & set(instructions)

    # Opening an editor moves no tile (before: the editor stretched its row of the grid).
    page.get_by_test_id("tab-method").click()
    before = boxes(page)
    tile = page.locator('[data-testid="tile"][data-tag="Column Volume"]')
    tile.get_by_test_id("tile-open").click()
    editor = tile.get_by_test_id("tile-editor")
    expect(editor).to_be_visible()
    expect(tile.get_by_test_id("tile-input")).to_be_focused()
    assert boxes(page) == before
    assert tile.locator('[data-testid="tile-unit"] option').all_inner_texts() == ["L", "mL"]
    # It sits against its tile - under it, or above it where the window has no room below - inside the window.
    tile_box, editor_box = tile.bounding_box(), editor.bounding_box()
    below = editor_box["y"] >= tile_box["y"] + tile_box["height"] - 1
    above = editor_box["y"] + editor_box["height"] <= tile_box["y"] + 1
    assert abs(editor_box["x"] - tile_box["x"]) < 1 and (below or above), (tile_box, editor_box)
    assert editor_box["y"] >= 0 and editor_box["y"] + editor_box["height"] <= 900
    screenshot(page, "tile-editor-open.png")
    page.keyboard.press("Escape")
    expect(editor).to_have_count(0)
    expect(tile.get_by_test_id("tile-open")).to_be_focused()

    # Another part of the page asks for a tag's editor (contract: pectus:open-tag on the page root).
    page.evaluate("""() => document.querySelector('[data-testid="unit-name"]').dispatchEvent(
        new CustomEvent("pectus:open-tag", {bubbles: true, detail: {tag: "HE01"}}))""")
    heater = page.locator('[data-testid="tile"][data-tag="HE01"]')
    expect(heater.get_by_test_id("tile-editor")).to_be_visible()
    expect(heater.get_by_test_id("tile-input")).to_be_focused()
    assert boxes(page) == before
    page.mouse.click(5, 895)  # a press outside closes it
    expect(heater.get_by_test_id("tile-editor")).to_have_count(0)

    # All process values: Clock as a date and time (before: epoch seconds), durations as a clock.
    page.get_by_test_id("values-all").check()
    clock = page.locator('[data-testid="tile"][data-tag="Clock"]')
    expect(clock.get_by_test_id("tile-value")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"), timeout=T)
    expect(clock.get_by_test_id("tile-unit-label")).to_have_text("")
    run_time = page.locator('[data-testid="tile"][data-tag="Run Time"]')
    expect(run_time.get_by_test_id("tile-value")).to_have_text(re.compile(r"^\d+:\d\d$"))
    assert json.loads(page.evaluate("() => JSON.stringify([...document.querySelectorAll('[popover]')].length)")) == 0
