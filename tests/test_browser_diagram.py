"""The process diagram on the unit page, in Debian's Chromium against a real aggregator and real
engines: the diagram view shows the demo unit's SVG, its values follow the live values with their
units, VA01's state (colour, line style and word) follows `VA01: Open` / `VA01: Closed`, PU01 opens
its editor from the mouse and the keyboard, and a hostile engine's diagram runs nothing and loads
nothing.

Screenshots: process-diagram-1440.png, process-diagram-1920.png (tests/artifacts/).
"""

from __future__ import annotations

import re
import socket
import textwrap

import httpx
from playwright.sync_api import Page, expect

from browser import browser, running_system, screenshot, system  # noqa: F401 - pytest fixtures

T = 20_000  # ms: generous waits for a shared machine; every wait ends as soon as its condition holds
SIZES = {1440: (1440, 900), 1920: (1920, 1080)}
ON_FILL = "rgb(26, 127, 55)"
OFF_FILL = "rgb(255, 255, 255)"


def inject(system, code: str, unit: str | None = None) -> None:
    url = f"{system.url}/api/process_units/{unit or system.unit}/inject"
    answer = httpx.post(url, json={"code": code}, timeout=10)
    assert answer.status_code == 200, answer.text


def open_diagram(browser, system, width: int = 1440, unit: str | None = None) -> Page:
    page = browser.new_page(viewport=dict(zip(("width", "height"), SIZES[width])))
    page.goto(f"{system.url}/units/{unit or system.unit}")
    tab = page.get_by_test_id("view-diagram")
    expect(tab).to_be_visible(timeout=T)  # shown because the unit says it has a diagram
    tab.click()
    expect(page.locator('[data-testid="process-diagram"] svg.process-diagram')).to_be_visible(timeout=T)
    return page


def shape(page: Page, tag: str):
    """The state-coloured shape of a tag's data-kind element (the valve's body, the pump's casing)."""
    return page.locator(f'svg.process-diagram [data-tag="{tag}"][data-kind] > :is(path, circle, rect):not([data-fixed])')


def test_the_diagram_shows_live_values_with_units_and_valve_states(system, browser):
    page = open_diagram(browser, system)
    diagram = page.locator("svg.process-diagram")
    assert page.locator('[data-testid="process-diagram"] script').count() == 0
    expect(diagram.locator('[data-tag="PU01"] [data-show="value"]')).to_have_text("0 %", timeout=T)
    expect(diagram.locator('[data-tag="TT01"] [data-show="value"]')).to_have_text(re.compile(r"^\d+(\.\d+)? degC$"),
                                                                                   timeout=T)
    valve = diagram.locator('g[data-tag="VA01"][data-kind="valve"]')
    expect(valve).to_have_attribute("data-state", "off", timeout=T)
    expect(valve.locator('[data-show="state"]')).to_have_text("Closed")
    assert shape(page, "VA01").evaluate("e => getComputedStyle(e).fill") == OFF_FILL
    assert shape(page, "VA01").evaluate("e => getComputedStyle(e).strokeDasharray") != "none"  # drawn dashed

    inject(system, "VA01: Open\nPU01: 40 %")
    expect(valve).to_have_attribute("data-state", "on", timeout=T)
    expect(valve.locator('[data-show="state"]')).to_have_text("Open")
    assert shape(page, "VA01").evaluate("e => getComputedStyle(e).fill") == ON_FILL
    assert shape(page, "VA01").evaluate("e => getComputedStyle(e).strokeDasharray") == "none"
    expect(diagram.locator('[data-tag="PU01"] [data-show="value"]')).to_have_text("40 %", timeout=T)
    expect(diagram.locator('[data-tag="PU01"] [data-show="state"]')).to_have_text("Running")
    # The flow follows the pump through the open valve: 0.6 L/h per percent, about 24 L/h.
    flow = diagram.locator('[data-tag="FT01"] [data-show="value"]')
    expect(flow).to_have_text(re.compile(r"^2[2-5](\.\d+)? L/h$"), timeout=T)
    pump = diagram.locator('g[data-tag="PU01"]')
    expect(pump.locator("title")).to_have_text("PU01: 40 %, Running (select to change)")
    # The inlet selector: the buffer leg is open, the sample leg closed.
    expect(diagram.locator('[data-kind][data-on="Buffer"]')).to_have_attribute("data-state", "on")
    expect(diagram.locator('[data-kind][data-on="Sample"]')).to_have_attribute("data-state", "off")

    inject(system, "VA01: Closed")
    expect(valve).to_have_attribute("data-state", "off", timeout=T)
    expect(valve.locator('[data-show="state"]')).to_have_text("Closed")
    page.close()


def test_pu01_in_the_diagram_opens_its_editor_from_the_mouse_and_the_keyboard(system, browser):
    page = open_diagram(browser, system)
    page.evaluate("""() => { window.openedTags = [];
        document.addEventListener('pectus:open-tag', (event) => window.openedTags.push(event.detail.tag)); }""")
    pump = page.locator('svg.process-diagram g[data-tag="PU01"]')
    expect(pump).to_have_attribute("role", "button", timeout=T)
    expect(pump).to_have_attribute("tabindex", "0")
    editor = page.locator('[data-testid="tile"][data-tag="PU01"] [data-testid="tile-editor"]')
    pump.click()
    assert page.evaluate("window.openedTags") == ["PU01"]
    expect(editor).to_be_visible(timeout=T)  # the tile's editor, open and focused
    expect(editor.get_by_test_id("tile-input")).to_be_focused()
    page.keyboard.press("Escape")
    expect(editor).to_have_count(0, timeout=T)
    # Read-only tags are no buttons and not in the Tab order.
    flow = page.locator('svg.process-diagram g[data-tag="FT01"]')
    expect(flow).to_have_attribute("role", "img")
    assert flow.get_attribute("tabindex") is None
    pump.focus()
    page.keyboard.press("Enter")
    assert page.evaluate("window.openedTags") == ["PU01", "PU01"]
    expect(editor.get_by_test_id("tile-input")).to_be_focused(timeout=T)
    page.close()


HOSTILE_SVG = """\
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 400 200"
     onload="window.pwned = 'onload'">
  <script>window.pwned = 'script'</script>
  <style>@import url(http://evil.example/a.css); body { display: none }</style>
  <image href="http://evil.example/track.png" width="10" height="10" onerror="window.pwned = 'onerror'"/>
  <foreignObject width="100" height="100"><iframe xmlns="http://www.w3.org/1999/xhtml"
      srcdoc="&lt;script&gt;parent.pwned='iframe'&lt;/script&gt;"/></foreignObject>
  <a href="javascript:window.pwned='link'"><text x="10" y="150" data-testid="bait">Click me</text></a>
  <rect width="100" height="40" fill="url(http://evil.example/p.svg#x)" onclick="window.pwned = 'click'"
        style="fill: red; background: url(http://evil.example/b.png)"/>
  <use xlink:href="http://evil.example/sprites.svg#valve"/>
  <g data-tag="PU01"><text x="200" y="100" data-show="value">-</text></g>
</svg>
"""


def test_a_hostile_engines_diagram_runs_nothing_and_loads_nothing(tmp_path, browser):
    """An engine that skips the builder's sanitiser (its UOD sets the SVG itself): the aggregator
    sanitises what it serves, and the page shows the rest of the drawing."""
    (tmp_path / "hostile.svg").write_text(HOSTILE_SVG)
    hostile_uod = tmp_path / "hostile_uod.py"
    hostile_uod.write_text(textwrap.dedent("""\
        from pathlib import Path

        from pectus.uod import UodBuilder, tags
        from pectus.uod.definition import ProcessDiagram


        def create():
            definition = (UodBuilder().with_instrument("HostileUod").with_author("Eve", "eve@example.com")
                          .with_filename(__file__).with_hardware_none()
                          .with_tag(tags.Tag("PU01", value=5.0, unit="%")).with_process_value("PU01").build())
            svg = (Path(__file__).parent / "hostile.svg").read_text()
            definition.process_diagram = ProcessDiagram(svg)  # as a tampered engine would send it
            return definition
        """))
    unit = f"{socket.gethostname()}_HostileUod"
    with running_system(tmp_path, more_uods=(hostile_uod,)) as running:
        served = httpx.get(f"{running.url}/api/process_units/{unit}/process_diagram")
        assert served.status_code == 200 and "pwned" not in served.text and "evil.example" not in served.text
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        dialogs, outside = [], []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.on("request", lambda request: outside.append(request.url) if "127.0.0.1" not in request.url else None)
        page.goto(f"{running.url}/units/{unit}")
        page.get_by_test_id("view-diagram").click(timeout=T)
        diagram = page.locator('[data-testid="process-diagram"] svg.process-diagram')
        expect(diagram.locator('[data-show="value"]')).to_have_text("5 %", timeout=T)  # the rest of it works
        page.mouse.click(*center(diagram.locator("rect").first.bounding_box()))
        assert page.locator("body").is_visible()
        assert diagram.locator("script, foreignObject, image, a, style").count() == 0
        assert page.evaluate("window.pwned") is None and dialogs == [] and outside == []
        page.close()


def center(box: dict) -> tuple[float, float]:
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_screenshots_of_the_process_diagram(system, browser):
    inject(system, "VA01: Open\nInlet: Sample\nPU01: 50 %\nHE01: 40 %")
    for width in SIZES:
        page = open_diagram(browser, system, width)
        diagram = page.locator("svg.process-diagram")
        expect(diagram.locator('[data-tag="HE01"] [data-show="state"]')).to_have_text("On", timeout=T)
        expect(diagram.locator('[data-kind][data-on="Sample"]')).to_have_attribute("data-state", "on", timeout=T)
        box = diagram.bounding_box()
        assert box["width"] >= 0.5 * SIZES[width][0], box  # the drawing uses the room it has
        screenshot(page, f"process-diagram-{width}.png")
        page.close()
