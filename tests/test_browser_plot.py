"""The plot in Debian's Chromium against a real aggregator and a real demo engine: one aligned time
axis for the stacked sub plots (their plotting areas measured), block and mark labels inside the
plot box, read-outs with units, and the trend - the unit before Start, the run, and after Stop.

Screenshot: tests/artifacts/unit-stopped-trend-1440.png.
"""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import expect

from browser import browser, screenshots, system  # noqa: F401 - pytest fixtures

T = 20_000  # ms: generous waits for a shared machine; every wait ends as soon as its condition holds
METHOD = """\
Mark: Started
PU01: 40 %
Block: Wash
    Wait: 3 s
    Mark: Half way through the wash
    Wait: 3 s
    End block
Mark: Done
"""
OVER_BOXES = """() => [...document.querySelectorAll('#unit-plot .u-over')].map((over) => {
  const box = over.getBoundingClientRect();
  return {left: box.left, right: box.right, top: box.top, bottom: box.bottom};
})"""
LABEL_BOXES = """() => [...document.querySelectorAll('#unit-plot [data-testid="plot-label"]')].map((label) => {
  const box = label.getBoundingClientRect();
  return {kind: label.dataset.kind, text: label.textContent, left: box.left, right: box.right, top: box.top,
          bottom: box.bottom, clipped: label.scrollWidth > label.clientWidth + 1};
})"""
# A number with more than 4 significant digits (26.60028): the read-out and legends never show one.
LONG_NUMBER = re.compile(r"\d*\.\d{4,}|\d{5,}\.\d")


def save_and_start(system, method: str = METHOD) -> None:
    api = f"{system.url}/api/process_units/{system.unit}"
    version = httpx.get(f"{api}/method").json()["version"]
    lines = [{"id": str(number), "text": text} for number, text in enumerate(method.splitlines(), 1)]
    assert httpx.post(f"{api}/method", json={"lines": lines, "version": version}).status_code == 200
    assert httpx.post(f"{api}/control", json={"command": "Start"}).status_code == 200


def rows(page) -> int:
    return int(page.locator("#unit-plot").get_attribute("data-rows") or 0)


def label(page, kind: str, text: str):
    return page.locator(f'#unit-plot [data-testid="plot-label"][data-kind="{kind}"]').filter(has_text=text)


def test_stacked_sub_plots_share_one_aligned_time_axis_and_labels_stay_inside_the_plot(system, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{system.url}/units/{system.unit}")
    save_and_start(system)
    for kind, text in (("run", "Run start"), ("block", "Wash"), ("mark", "Started"), ("mark", "Done")):
        expect(label(page, kind, text)).to_be_visible(timeout=T)

    for width, height in ((1440, 900), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_function(f"() => document.querySelector('#unit-plot .u-over').getBoundingClientRect().width"
                               f" > {width} * 0.4")
        boxes = page.evaluate(OVER_BOXES)
        assert len(boxes) == 2, boxes  # the demo's two sub plots
        # One time axis: every plotting area starts and ends at the same x, so the cursor, the
        # mark lines and the block shading line up from one sub plot to the next.
        assert max(box["left"] for box in boxes) - min(box["left"] for box in boxes) < 0.5, boxes
        assert max(box["right"] for box in boxes) - min(box["right"] for box in boxes) < 0.5, boxes
        # Labels: inside the first plotting area, never cut at its edges, never over one another.
        top = boxes[0]
        labels = page.evaluate(LABEL_BOXES)
        assert {"run", "block", "mark"} <= {item["kind"] for item in labels}, labels
        for item in labels:
            assert top["left"] <= item["left"] and item["right"] <= top["right"] + 0.5, item
            assert top["top"] <= item["top"] and item["bottom"] <= top["bottom"], item
            assert not item["clipped"] or item["kind"] == "block", item  # a block's name may end in "…" in a narrow span
        lines = [item for item in labels if item["kind"] != "block"]
        for one in lines:
            for other in lines:
                overlap = (one is not other and one["top"] == other["top"]
                           and one["left"] < other["right"] and other["left"] < one["right"])
                assert not overlap, (one, other)

    # The axes are titled with their units (the titles are drawn: the figures are named by them).
    figures = page.get_by_test_id("sub-plot")
    expect(figures.nth(0)).to_have_attribute("aria-label", "Flow (L/h), Pump (%) against Time (h:mm:ss)")
    expect(figures.nth(1)).to_have_attribute("aria-label",
                                             "Temperature (degC), Heater (%), UV (mAU) against Time (h:mm:ss)")


def test_the_read_out_and_legends_show_values_with_units_and_times_as_h_mm_ss(system, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{system.url}/units/{system.unit}")
    save_and_start(system, "PU01: 35 %\nMark: Pumping\nWait: 1 h\n")
    expect(label(page, "mark", "Pumping")).to_be_visible(timeout=T)
    expect(page.locator('[data-testid="tile"][data-tag="PU01"] [data-testid="tile-value"]')).to_contain_text("35",
                                                                                                          timeout=T)
    page.wait_for_function(f"() => Number(document.querySelector('#unit-plot').dataset.rows) >= {rows(page) + 2}",
                           timeout=T)
    box = page.locator("#unit-plot .u-over").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)  # the newest row
    readout = page.get_by_test_id("plot-readout")
    expect(readout).to_have_text(re.compile(r"^Time \d{1,2}:\d{2}:\d{2} · Block: .+ · Mark: .+$"), timeout=T)
    legend = page.locator("#unit-plot .u-legend .u-value").all_text_contents()
    assert any(re.fullmatch(r"\d{1,2}:\d{2}:\d{2}", text) for text in legend), legend  # the time
    assert any(re.fullmatch(r"3(5|4\.\d*) %", text) for text in legend), legend  # PU01 with its unit
    assert not [text for text in legend if LONG_NUMBER.search(text)], legend

    # With Process Time on x: its value in seconds, to 4 significant digits, with its unit.
    page.get_by_test_id("plot-x-axis").select_option("Process Time")
    expect(page.get_by_test_id("sub-plot").first).to_have_attribute("aria-label", re.compile(r"against Process Time \(s\)$"))
    box = page.locator("#unit-plot .u-over").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    expect(readout).to_have_text(re.compile(r"^Time \d{1,2}:\d{2}:\d{2} · Process Time \d+(\.\d+)? s · "), timeout=T)
    assert not LONG_NUMBER.search(readout.text_content()), readout.text_content()


def test_the_trend_shows_the_unit_before_start_and_keeps_the_run_in_view_after_stop(system, browser):
    api = f"{system.url}/api/process_units/{system.unit}"
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{system.url}/units/{system.unit}")
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "stopped", timeout=T)
    # The pump run by hand, no run started: the trend shows it.
    assert httpx.post(f"{api}/process_values/PU01", json={"value": 30, "unit": "%"}).status_code == 200
    deadline = time.monotonic() + T / 1000
    while httpx.get(f"{api}/trend").json()["PU01"][-1][1] != 30.0:
        assert time.monotonic() < deadline, "the trend never showed the pump at 30 %"
        time.sleep(0.1)
    page.wait_for_function("() => Number(document.querySelector('#unit-plot').dataset.rows) >= 3", timeout=T)
    assert httpx.get(f"{api}/plot_log").json() == {}  # no run: what the plot shows is the trend
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "stopped")

    save_and_start(system, "Mark: In the run\nWait: 1 h\n")
    expect(label(page, "run", "Run start")).to_be_visible(timeout=T)
    expect(label(page, "mark", "In the run")).to_be_visible(timeout=T)
    before_stop = rows(page)
    assert httpx.post(f"{api}/control", json={"command": "Stop"}).status_code == 200
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "stopped", timeout=T)
    expect(label(page, "run", "Run end")).to_be_visible(timeout=T)
    # After Stop the run stays in view and the trend rolls on.
    page.wait_for_function(f"() => Number(document.querySelector('#unit-plot').dataset.rows) >= {before_stop + 3}",
                           timeout=T)
    expect(label(page, "mark", "In the run")).to_be_visible()
    # A few seconds on the time axis: ticks on whole seconds, each label a different time.
    ticks = page.locator("#unit-plot").get_attribute("data-x-labels").split()
    assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), ticks
    screenshots(page, "unit-stopped-trend")

    # Reopened after Stop: the trend with the run that ended in it, both marked.
    page.reload()
    for kind, text in (("run", "Run start"), ("run", "Run end"), ("mark", "In the run")):
        expect(label(page, kind, text)).to_be_visible(timeout=T)
    assert rows(page) >= before_stop
