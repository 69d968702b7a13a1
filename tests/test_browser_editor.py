"""The method editor in a real browser (Debian's Chromium) against a real aggregator and demo engine:
it grows with the window, on the unit page and on a run's page, and a diagnostic's did-you-mean is a
quick fix that applies from the keyboard or the mouse.
"""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from browser import browser, system  # noqa: F401 - pytest fixtures

T = 20_000  # ms: generous waits for a shared machine; every wait ends as soon as its condition holds
METHOD = "\n".join(f"Mark: Step {number}" for number in range(1, 81))

# The editor's height, its host's, and how many of its lines are in sight (inside the scroller).
MEASURE = """(host) => {
  const box = (element) => element.getBoundingClientRect();
  const editor = host.querySelector('.cm-editor'), scroller = box(host.querySelector('.cm-scroller'));
  const shown = [...host.querySelectorAll('.cm-line')].filter((line) => {
    const rect = box(line);
    return rect.top >= scroller.top - 1 && rect.bottom <= scroller.bottom + 1;
  });
  return {editor: box(editor).height, host: box(host).height, lines: shown.length};
}"""


def grows(page, host, sizes=((1440, 900), (1440, 1080))) -> list[dict]:
    """The editor's measures at each window size, once its lines are drawn for that size."""
    measures = []
    for width, height in sizes:
        page.set_viewport_size({"width": width, "height": height})
        # CodeMirror draws the lines in view after it measured: wait until they fill the scroller.
        page.wait_for_function("""([host, height]) => {
          const bottom = host.querySelector('.cm-scroller').getBoundingClientRect().bottom;
          return window.innerHeight === height &&
            [...host.querySelectorAll('.cm-line')].some((line) => line.getBoundingClientRect().bottom >= bottom);
        }""", arg=[host.element_handle(), height], timeout=T)
        measures.append(host.evaluate(MEASURE))
    small, large = measures
    assert abs(small["editor"] - small["host"]) <= 1 and abs(large["editor"] - large["host"]) <= 1, measures
    assert large["editor"] >= small["editor"] + 60, measures  # a taller window, a taller editor
    assert large["lines"] >= small["lines"] + 3, measures  # ... showing more lines
    return measures


def test_the_editor_grows_with_the_window_on_the_unit_page_and_the_run_page(system, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{system.url}/units/{system.unit}")
    page.get_by_test_id("tab-method").click()
    editor = page.locator("#method-editor .cm-content")
    expect(editor).to_be_visible(timeout=T)
    editor.click()
    page.keyboard.insert_text(METHOD)
    page.keyboard.press("Control+Home")  # the first lines in sight
    page.get_by_test_id("method-save").click()
    expect(page.get_by_test_id("method-status")).to_contain_text("Version 1", timeout=T)
    grows(page, page.locator("#method-editor"))

    page.get_by_test_id("control-start").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)
    unit = f"{system.url}/api/process_units/{system.unit}"
    run_id = httpx.get(unit).json()["run_id"]
    assert httpx.post(f"{unit}/control", json={"command": "Stop"}).status_code == 200
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{system.url}/runs/{run_id}")
    expect(page.locator("#run-method .cm-content")).to_contain_text("Mark: Step 1", timeout=T)
    grows(page, page.locator("#run-method"))


def lint_errors(page):
    return page.locator("#method-editor .cm-lintRange-error")


def test_a_did_you_mean_is_a_quick_fix_from_the_keyboard_or_the_mouse(system, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{system.url}/units/{system.unit}")
    page.get_by_test_id("tab-method").click()
    content = page.locator("#method-editor .cm-content")
    expect(content).to_be_visible(timeout=T)
    content.click()
    page.keyboard.insert_text("Mrak: Started\nWatch: FT01 > 5 L/hh\n    Mark: Flowing")
    expect(lint_errors(page)).to_have_count(2, timeout=T)
    expect(lint_errors(page).first).to_have_text("Mrak")  # the range the fix replaces, not the whole line

    # Keyboard: the diagnostics panel (Ctrl+Shift+M) lists them; R (the underlined letter) applies the fix.
    page.keyboard.press("Control+Home")
    page.keyboard.press("Control+Shift+M")
    panel = page.locator("#method-editor .cm-panel-lint")
    expect(panel.locator("ul")).to_be_focused(timeout=T)
    expect(panel.locator('[aria-selected="true"]')).to_contain_text("Did you mean 'Mark'?")
    expect(panel.locator('[aria-selected="true"]')).to_contain_text("Press R: Replace with 'Mark'.")
    page.keyboard.press("r")
    expect(content).to_contain_text("Mark: Started")
    expect(lint_errors(page)).to_have_count(1, timeout=T)
    page.keyboard.press("Escape")  # closes the panel; the focus is back in the editor
    expect(panel).to_have_count(0)

    # Mouse: the fix is a button in the diagnostic's tooltip.
    lint_errors(page).first.hover()
    fix = page.locator(".cm-tooltip-lint .cm-diagnosticAction")
    expect(fix).to_have_text("Replace with 'L/h'", timeout=T)
    fix.click()
    expect(content.locator(".cm-line").nth(1)).to_have_text("Watch: FT01 > 5 L/h")
    expect(lint_errors(page)).to_have_count(0, timeout=T)
    assert content.inner_text().splitlines() == ["Mrak: Started".replace("Mrak", "Mark"), "Watch: FT01 > 5 L/h",
                                                 "    Mark: Flowing"]
