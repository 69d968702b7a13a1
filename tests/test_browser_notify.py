"""In-page notifications in Debian's Chromium against a real aggregator and a real demo engine: two
pages of the unit and the dashboard, each its own browser, are told that the run started, that a
block started and what an injected `Notify:` says; when the engine process is killed, that the unit
lost its connection (an alert, which stays). A notice leads to its unit, can be dismissed, is shown
once however often it arrives, and hides after a while unless it is an alert.

Screenshot: notification-1440.png (the dashboard with its notices, tests/artifacts/).
"""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from browser import browser, screenshot, system  # noqa: F401 - pytest fixtures

T = 20_000  # ms: generous waits for a shared machine; every wait ends as soon as its condition holds
METHOD = "Base: s\nBlock: Collect\n    Wait: 600 s\n    End block"
USER = {"X-Pectus-User": "Nadia"}


def open_page(browser, url: str, problems: list[str], *, fake_clock: bool = False) -> Page:
    """A page at ``url``, live; its script errors and Content-Security-Policy refusals go to ``problems``."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text)
            if "Content Security Policy" in message.text else None)
    if fake_clock:
        page.clock.install()  # time flows as usual until the test moves it on
    page.goto(url)
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live", timeout=T)
    return page


def notice(page: Page, topic: str):
    return page.locator(f'[data-testid="notification"][data-topic="{topic}"]')


def test_notifications_reach_every_open_page_of_the_unit_and_the_dashboard(system, browser):
    unit_url = f"{system.url}/units/{system.unit}"
    api = f"{system.url}/api/process_units/{system.unit}"
    problems: list[str] = []
    first = open_page(browser, unit_url, problems)
    second = open_page(browser, unit_url, problems, fake_clock=True)
    dashboard = open_page(browser, system.url + "/", problems)
    pages = [first, second, dashboard]
    for page in (first, second):
        expect(page.get_by_test_id("unit-name")).to_be_visible(timeout=T)
    expect(dashboard.locator(f'[data-testid="unit-card"][data-unit-id="{system.unit}"]')).to_be_visible(timeout=T)
    # The dashboard follows no unit's values: notifications are a global topic, by roles.

    version = httpx.get(f"{api}/method").json()["version"]
    lines = [{"id": str(number), "text": line} for number, line in enumerate(METHOD.splitlines(), 1)]
    assert httpx.post(f"{api}/method", json={"lines": lines, "version": version}, headers=USER).status_code == 200
    assert httpx.post(f"{api}/control", json={"command": "Start"}, headers=USER).status_code == 200
    for page in pages:
        expect(notice(page, "run_started")).to_contain_text("run started", timeout=T)
        expect(notice(page, "block_started")).to_contain_text("Collect", timeout=T)
    # The stack leaves the run controls free to use.
    stack, controls = first.get_by_test_id("notification").first.bounding_box(), first.get_by_test_id("run-controls").bounding_box()
    assert stack["y"] >= controls["y"] + controls["height"] or stack["x"] >= controls["x"] + controls["width"], (stack, controls)

    injected = httpx.post(f"{api}/inject", json={"code": "Notify: Sample the fraction"}, headers=USER)
    assert injected.status_code == 200, injected.text
    for page in pages:
        told = notice(page, "notify")
        expect(told).to_have_count(1, timeout=T)
        expect(told).to_contain_text("Sample the fraction")
        expect(told).to_have_attribute("role", "status")
        expect(told.get_by_test_id("notification-link")).to_have_attribute("href", f"/units/{system.unit}")
    # Newest on top.
    expect(first.get_by_test_id("notification").first).to_have_attribute("data-topic", "notify")

    # The same notification again (as a browser that lagged may get it): still shown once.
    position = first.get_by_test_id("notification").first.get_attribute("data-position")
    first.evaluate("""async (position) => {
        const {live} = await import("/static/api.js");
        const shown = document.querySelector(`[data-testid="notification"][data-position="${position}"]`);
        live.dispatch({unit: shown.dataset.unit, topic: "notification", data: {
            unit: shown.dataset.unit, topic: "notify", title: "again", body: "again", time: new Date().toISOString(),
            position: Number(position), run_id: null}});
    }""", position)
    expect(notice(first, "notify")).to_have_count(1)
    expect(first.get_by_text("again")).to_have_count(0)

    # Dismissed: gone from that page only.
    notice(first, "notify").get_by_test_id("notification-dismiss").click()
    expect(notice(first, "notify")).to_have_count(0)
    expect(notice(dashboard, "notify")).to_have_count(1)

    # The engine process dies: the unit lost its connection, an alert on every page that follows it.
    system.engines[0].kill()
    for page in pages:
        lost = notice(page, "connection_lost")
        expect(lost).to_contain_text("lost its connection", timeout=T)
        expect(lost).to_have_attribute("role", "alert")
    expect(dashboard.get_by_test_id("notification").first).to_have_attribute("data-topic", "connection_lost")
    screenshot(dashboard, "notification-1440.png")

    # After a while the notices that need nobody hide; the alert stays until dismissed.
    second.clock.fast_forward(20_000)
    expect(notice(second, "notify")).to_have_count(0, timeout=T)
    expect(notice(second, "run_started")).to_have_count(0)
    expect(notice(second, "connection_lost")).to_have_count(1)

    # A click on a notice leads to its unit's page.
    notice(dashboard, "connection_lost").locator(".notice-body").click()
    expect(dashboard).to_have_url(re.compile(re.escape(unit_url) + "/?$"), timeout=T)
    expect(dashboard.get_by_test_id("unit-name")).to_be_visible(timeout=T)
    assert problems == []
