"""The unit page laid out for the process, in Debian's Chromium against a real aggregator and demo
engine: at 1440x900 and 1920x1080 the header (state, run controls), the trend and the process
values are inside the window without scrolling; the tabs (Method, Run log, Commands, Error log)
work from the keyboard; the error banner leads to the error; after Stop the header links to the run;
two browsers see each other (presence); the name field is readable and the state icons are drawn.

Screenshots: unit-running-1440.png, unit-running-1920.png, unit-stopped-1440.png,
unit-paused-on-error-1440.png, dashboard-1440.png, dashboard-1920.png (tests/artifacts/).
"""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import Page, expect

from browser import browser, screenshot, screenshots, system  # noqa: F401 - pytest fixtures

T = 20_000  # ms: generous waits for a shared machine; every wait ends as soon as its condition holds
SIZES = {1440: (1440, 900), 1920: (1920, 1080)}
# What must be in view without scrolling: the header's state, the run controls, the trend, the values.
IN_VIEW = ["unit-state", "run-controls", "plot", "process-values"]


def api(system) -> str:
    return f"{system.url}/api/process_units/{system.unit}"


def save_method(system, text: str) -> None:
    version = httpx.get(f"{api(system)}/method").json()["version"]
    lines = [{"id": str(number), "text": line} for number, line in enumerate(text.splitlines(), 1)]
    assert httpx.post(f"{api(system)}/method", json={"lines": lines, "version": version}).status_code == 200


def control(system, command: str) -> None:
    assert httpx.post(f"{api(system)}/control", json={"command": command}).status_code == 200


def open_unit(browser, system, width: int) -> Page:
    page = browser.new_page(viewport=dict(zip(("width", "height"), SIZES[width])))
    page.goto(f"{system.url}/units/{system.unit}")
    expect(page.get_by_test_id("unit-name")).to_be_visible(timeout=T)
    return page


def assert_in_view(page: Page, testids: list[str]) -> None:
    """Each element's box lies inside the viewport, and the page itself does not scroll."""
    view = page.viewport_size
    for testid in testids:
        box = page.get_by_test_id(testid).first.bounding_box()
        assert box is not None, f"{testid} is not rendered"
        assert box["width"] > 0 and box["height"] > 0, f"{testid} has no size: {box}"
        assert box["x"] >= 0 and box["y"] >= 0, f"{testid} starts outside the window: {box}"
        assert box["x"] + box["width"] <= view["width"] + 0.5, f"{testid} ends right of the window: {box}, {view}"
        assert box["y"] + box["height"] <= view["height"] + 0.5, f"{testid} ends below the window: {box}, {view}"
    assert page.evaluate("window.scrollY") == 0


def test_a_running_unit_shows_state_controls_trend_and_values_without_scrolling(system, browser):
    save_method(system, "Mark: Started\nPU01: 40 %\nWait: 600 s")
    control(system, "Start")
    for width in SIZES:
        page = open_unit(browser, system, width)
        expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)
        expect(page.locator('[data-testid="tile"][data-tag="PU01"]')).to_be_visible(timeout=T)
        expect(page.locator("#unit-plot canvas").first).to_be_visible(timeout=T)
        assert_in_view(page, IN_VIEW)
        # The plot fills most of the trend area: at least 40 % of the window's height.
        assert page.get_by_test_id("plot").bounding_box()["height"] >= 0.4 * SIZES[width][1]
        screenshot(page, f"unit-running-{width}.png")
        page.close()


def contrast(foreground: str, background: str) -> float:
    """The WCAG contrast ratio of two CSS colours given as rgb(...) / rgba(...) (opaque)."""
    def luminance(colour: str) -> float:
        channels = [float(part) / 255 for part in colour[colour.index("(") + 1:-1].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    lighter, darker = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def icon_box(page: Page) -> dict:
    """The state badge's icon: its text (none: it is drawn) and its SVG's rendered size."""
    return page.get_by_test_id("unit-state").evaluate("""(badge) => {
        const icon = badge.querySelector('.state-icon');
        const svg = icon.querySelector('svg');
        const box = svg.getBBox(), rect = svg.getBoundingClientRect();
        return {text: icon.textContent, state: badge.dataset.state, drawn: box.width * box.height, shown: rect.width * rect.height};
    }""")


def test_the_tabs_work_from_the_keyboard_and_the_editor_measures_itself_when_shown(system, browser):
    page = open_unit(browser, system, 1440)
    method = page.get_by_test_id("tab-method")
    expect(method).to_have_attribute("aria-selected", "true", timeout=T)
    expect(page.get_by_role("tablist", name="Method, run log, commands and error log")).to_be_visible()
    method.focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_test_id("tab-run-log")).to_be_focused()
    expect(page.get_by_test_id("tab-run-log")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("run-log")).to_be_visible()
    expect(page.get_by_test_id("method-editor")).to_be_hidden()
    page.keyboard.press("End")
    expect(page.get_by_test_id("tab-error-log")).to_be_focused()
    expect(page.locator("#unit-work-panel-errors")).to_contain_text("No errors or warnings.")
    page.keyboard.press("ArrowRight")  # round to the first
    expect(method).to_be_focused()
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_test_id("tab-error-log")).to_be_focused()
    page.keyboard.press("Home")
    expect(method).to_have_attribute("aria-selected", "true")
    # Only the selected tab is in the Tab order; the panel is labelled by its tab.
    assert page.locator('[role="tab"][tabindex="0"]').count() == 2  # one per tab list (views, work)
    panel = page.locator("#unit-work-panel-method")
    expect(panel).to_have_attribute("aria-labelledby", "unit-work-tab-method")
    # The editor, shown again, has its full size and takes typing.
    editor = page.locator("#method-editor .cm-content")
    expect(editor).to_be_visible()
    assert page.locator("#method-editor .cm-editor").bounding_box()["height"] > 150
    editor.click()
    page.keyboard.type("Mark: typed")
    expect(editor).to_contain_text("Mark: typed")
    # The choice is kept: reloaded, the page shows the tab last chosen.
    page.get_by_test_id("tab-commands").click()
    page.reload()
    expect(page.get_by_test_id("tab-commands")).to_have_attribute("aria-selected", "true", timeout=T)
    expect(page.get_by_test_id("inject-code")).to_be_visible()


def test_the_error_banner_opens_the_error_log_at_the_newest_error(system, browser):
    # An instruction the unit does not know: the run pauses on it when it comes to it.
    save_method(system, "Mark: before the error\nFrobnicate: 3\nMark: after")
    page = open_unit(browser, system, 1440)
    page.get_by_test_id("tab-run-log").click()  # away from the Method tab
    control(system, "Start")
    banner = page.get_by_test_id("unit-error-banner")
    expect(banner).to_be_visible(timeout=T)
    expect(page.get_by_test_id("unit-state")).to_have_attribute("data-state", "error")
    expect(page.get_by_test_id("tab-error-count")).to_have_text("1", timeout=T)
    expect(page.get_by_role("tab", name="Error log (1 entry)")).to_be_visible()
    assert_in_view(page, IN_VIEW + ["unit-error-banner"])
    screenshots(page, "unit-paused-on-error")
    banner.get_by_test_id("unit-error-link").click()
    expect(page.get_by_test_id("tab-error-log")).to_have_attribute("aria-selected", "true")
    newest = page.get_by_test_id("error-log-entry").first
    expect(newest).to_be_focused()
    expect(newest).to_contain_text("Frobnicate")
    assert_in_view(page, ["error-log-entry"])
    info = icon_box(page)
    assert info["state"] == "error" and info["text"] == "" and info["drawn"] > 0 and info["shown"] > 0


def test_after_stop_the_header_links_to_the_run_that_ended(system, browser):
    page = open_unit(browser, system, 1440)
    expect(page.get_by_test_id("unit-state")).to_have_attribute("data-state", "ready", timeout=T)
    expect(page.get_by_test_id("run-ended")).to_be_hidden()
    save_method(system, "Mark: one\nWait: 600 s")
    control(system, "Start")
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)
    run_id = httpx.get(api(system)).json()["run_id"]
    for command, state in (("Pause", "paused"), ("Unpause", "running"), ("Hold", "holding"), ("Unhold", "running")):
        control(system, command)
        expect(page.get_by_test_id("unit-state")).to_have_attribute("data-state", state, timeout=T)
        info = icon_box(page)  # drawn, not a character the fonts may lack (U+23F8, U+270B)
        assert info["text"] == "" and info["drawn"] > 0 and info["shown"] > 0, info
    control(system, "Stop")
    ended = page.get_by_test_id("run-ended")
    expect(ended).to_be_visible(timeout=T)
    expect(ended).to_contain_text("Run ended")
    link = ended.get_by_test_id("run-ended-link")
    expect(link).to_have_attribute("href", f"/runs/{run_id}")
    expect(page.get_by_test_id("unit-state")).to_have_attribute("data-state", "ready")
    assert_in_view(page, IN_VIEW + ["run-ended"])
    screenshots(page, "unit-stopped")
    link.click()
    expect(page).to_have_url(f"{system.url}/runs/{run_id}", timeout=T)
    expect(page.get_by_test_id("run-meta")).to_be_visible(timeout=T)


def test_the_name_field_is_readable_once_filled(system, browser):
    page = open_unit(browser, system, 1440)
    field = page.get_by_test_id("user-name")
    field.fill("Ann Operator")
    colours = field.evaluate("(el) => { const s = getComputedStyle(el); return [s.color, s.backgroundColor]; }")
    assert contrast(*colours) >= 4.5, colours
    placeholder = page.evaluate("""() => { const input = document.getElementById('user-name');
        return [getComputedStyle(input, '::placeholder').color, getComputedStyle(input).backgroundColor]; }""")
    assert contrast(*placeholder) >= 4.5, placeholder


def test_two_browsers_see_each_other_on_the_unit_page_and_one_leaving(system, browser):
    pages = {}
    for name in ("Ann", "Bob"):
        page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        page.goto(f"{system.url}/")
        page.get_by_test_id("user-name").fill(name)
        page.get_by_test_id("user-name").press("Enter")  # a change event: the name is kept
        page.goto(f"{system.url}/units/{system.unit}")
        pages[name] = page
    ann, bob = pages["Ann"], pages["Bob"]
    expect(ann.locator('[data-testid="presence-person"][data-name="Bob"]')).to_be_visible(timeout=T)
    expect(bob.locator('[data-testid="presence-person"][data-name="Ann"]')).to_be_visible(timeout=T)
    expect(ann.get_by_test_id("presence-person")).to_have_count(1)  # not oneself
    # A new name reaches the other page.
    bob.get_by_test_id("user-name").fill("Robert")
    bob.get_by_test_id("user-name").press("Enter")
    expect(ann.locator('[data-testid="presence-person"][data-name="Robert"]')).to_be_visible(timeout=T)
    expect(ann.locator('[data-testid="presence-person"][data-name="Bob"]')).to_have_count(0)
    # Leaving the page (to the dashboard), then closing the browser: gone from the other page.
    bob.get_by_test_id("home-link").click()
    expect(ann.get_by_test_id("presence-person")).to_have_count(0, timeout=T)
    bob.goto(f"{system.url}/units/{system.unit}")
    expect(ann.locator('[data-testid="presence-person"][data-name="Robert"]')).to_be_visible(timeout=T)
    bob.context.close()
    expect(ann.get_by_test_id("presence-person")).to_have_count(0, timeout=T)


def test_dashboard_screenshots(system, browser):
    save_method(system, "Mark: one\nWait: 600 s")
    for command in ("Start", "Stop", "Start"):  # a recent run, and a unit running
        control(system, command)
        state = "running" if command == "Start" else "ready"
        deadline = time.monotonic() + T / 1000
        while httpx.get(api(system)).json()["run_state"] != state:
            assert time.monotonic() < deadline, f"the unit did not become {state}"
            time.sleep(0.05)
    for width in SIZES:
        page = browser.new_page(viewport=dict(zip(("width", "height"), SIZES[width])))
        page.goto(f"{system.url}/")
        card = page.locator(f'[data-testid="unit-card"][data-unit-id="{system.unit}"]')
        expect(card).to_have_attribute("data-state", "running", timeout=T)
        expect(page.get_by_test_id("recent-run-row")).to_have_count(2, timeout=T)
        info = card.get_by_test_id("unit-state").evaluate("""(badge) => {
            const box = badge.querySelector('.state-icon svg').getBBox(); return box.width * box.height; }""")
        assert info > 0
        mark = page.locator('th[aria-sort="descending"] .sort-mark')  # the sort direction, drawn
        assert mark.inner_text() == "" and mark.bounding_box()["width"] * mark.bounding_box()["height"] > 0
        screenshot(page, f"dashboard-{width}.png")
        page.close()


def test_a_narrow_window_stacks_the_parts_and_the_page_scrolls(system, browser):
    page = browser.new_page(viewport={"width": 900, "height": 1000})
    page.goto(f"{system.url}/units/{system.unit}")
    expect(page.locator('[data-testid="tile"][data-tag="PU01"]')).to_be_visible(timeout=T)
    boxes = [page.locator(selector).bounding_box() for selector in ("#plot-panel", "#values-panel", ".unit-work")]
    assert len({round(box["x"]) for box in boxes}) == 1, boxes  # one column
    assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"], boxes  # trend, values, then the tabs
    assert page.evaluate("document.scrollingElement.scrollHeight > window.innerHeight")
    page.get_by_test_id("tab-method").scroll_into_view_if_needed()
    expect(page.locator("#method-editor .cm-content")).to_be_visible()


def test_the_bar_between_trend_and_tabs_gives_the_editor_room_and_is_kept(system, browser):
    page = open_unit(browser, system, 1440)
    editor = page.locator("#method-editor .cm-editor")
    expect(editor).to_be_visible(timeout=T)
    before = editor.bounding_box()["height"]
    bar = page.get_by_test_id("splitter")
    expect(bar).to_have_attribute("aria-valuenow", "64")
    # From the keyboard: each Up gives the tabs 5 % more of the height.
    bar.focus()
    for _ in range(4):
        page.keyboard.press("ArrowUp")
    expect(bar).to_have_attribute("aria-valuenow", "44")
    page.wait_for_function(f"document.querySelector('#method-editor .cm-editor').getBoundingClientRect().height > {before + 100}")
    assert_in_view(page, ["unit-state", "run-controls", "plot", "process-values", "method-editor"])
    # Never less than the least share: the trend stays in view.
    page.keyboard.press("Home")
    expect(bar).to_have_attribute("aria-valuenow", "30")
    # By mouse: dragged to 3/4 of the way down.
    layout = page.locator(".unit-layout").bounding_box()
    box = bar.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, layout["y"] + layout["height"] * 0.75, steps=5)
    page.mouse.up()
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^7[4-8]$"))
    # Kept in this browser; Enter goes back to the start share.
    page.reload()
    expect(page.get_by_test_id("splitter")).to_have_attribute("aria-valuenow", re.compile(r"^7[4-8]$"), timeout=T)
    page.get_by_test_id("splitter").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("splitter")).to_have_attribute("aria-valuenow", "64")
