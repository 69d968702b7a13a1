"""The unit page laid out for the process, in Debian's Chromium against a real aggregator and demo
engine: at 1440x900 and 1920x1080 the header (state, run controls), the trend and the process
values are inside the window without scrolling; the tabs (Method, Run log, Commands, Error log)
work from the keyboard; the error banner leads to the error; after Stop the header links to the run;
two browsers see each other (presence); the name field is readable and the state icons are drawn.

Screenshots: unit-running-1440.png, unit-running-1920.png, unit-stopped-1440.png,
unit-paused-on-error-1440.png, dashboard-1440.png, dashboard-1920.png (tests/artifacts/).
"""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from browser import browser, screenshot, system  # noqa: F401 - pytest fixtures

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
