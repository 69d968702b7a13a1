"""UI benchmark: what an operator waits on, in Debian's Chromium against a real aggregator and a
real demo engine, and what the plot and the trend cost.

    python bench/ui_bench.py [--samples 40] [--load-units N] [--load-browsers M]

Prints, each as p50 / p95 / max over ``--samples`` samples:

* **request -> shown**, for a run control (Pause / Unpause), an injection (``Simulate: FT01 = v``
  typed in the Commands box, *Run now*) and a process value entry (the PU01 tile's editor, *Set*):
  from the moment the page's own ``fetch`` sends the request to the first frame that shows its
  effect (the control's state, the FT01 tile, the PU01 tile), seen by a MutationObserver and
  timed at the next animation frame. The bench clicks and types in the page: what is sent is what
  the page sends. Target p95 <= 250 ms.
* **tag change -> shown**: from the engine's tick that changed FT01 (the tag's time, as the
  aggregator reports it) to that frame. Target p95 <= 250 ms (Open Pectus polls every second).
* **plot frame**: the time to update the plot with 20 series after an hour of data fed as the page
  feeds it (7,200 rows), per update. Target p95 <= 16 ms.
* **trend memory**: the bytes the aggregator's rolling window holds per unit with the demo's
  plotted tags after 30 minutes of the demo method (tracemalloc, over 20 units).

``--load-units N`` runs N emulated running demo engines beside (bench/aggregator_bench.py's, which
send what the demo engine sends); ``--load-browsers M`` opens M more pages of the unit in the same
browser, each following it live. Both compete for the same cores as the measured page.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from aggregator_bench import DEMO_METHOD, LIVE_TICKS, run_emulated  # noqa: E402
from browser import BIN, CHROMIUM, CHROMIUM_ARGS, DEMO_UOD, UNIT, _aggregator, _wait_until_up  # noqa: E402
from measure import percentile  # noqa: E402
from pectus.actors.trend_sampler import PERIOD  # noqa: E402
from pectus.actors.uplink import RecordBuilder  # noqa: E402
from pectus.hardware.opcua_server import free_port  # noqa: E402
from pectus.projections.trend import DEFAULT_WINDOW, Trend  # noqa: E402
from pectus.testing import Simulator  # noqa: E402

T = 20_000  # ms: the longest any one effect may take before the bench gives up

# Before the page's own scripts: its fetch, wrapped to note when each request leaves (the page
# sends every request through fetch), and a probe that resolves with the frame showing a change.
PROBE = """
window.__sent = [];
const pageFetch = window.fetch;
window.fetch = function (input, init) {
  const method = (init && init.method) || (typeof input === "object" && input.method) || "GET";
  if (method !== "GET") {
    window.__sent.push({url: String(typeof input === "object" ? input.url : input), at: performance.timeOrigin + performance.now()});
  }
  return pageFetch.apply(this, arguments);
};
window.__shown = (check) => new Promise((resolve, reject) => {
  const observer = new MutationObserver(() => {
    if (!check()) return;
    observer.disconnect();
    clearTimeout(timer);
    requestAnimationFrame(() => resolve(performance.timeOrigin + performance.now()));
  });
  const timer = setTimeout(() => {
    observer.disconnect();
    reject(new Error("the effect was not shown within 10 s"));
  }, 10000);
  observer.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
});
"""
# A tile's value as a number (its text may carry the unit).
TILE = "parseFloat(document.querySelector('[data-testid=\"tile\"][data-tag=\"{tag}\"] [data-testid=\"tile-value\"]').textContent)"

PLOT_FRAMES = """async () => {
  const {ProcessPlot} = await import('/static/plot.js');
  document.body.innerHTML = '<div id="bench" style="width: 1400px"></div>';
  const names = Array.from({length: 20}, (_, i) => `T${String(i).padStart(2, '0')}`);
  const axes = (list) => list.map((name) => ({label: name, process_value_names: [name], y_min: -1, y_max: 1, color: '#0b57d0'}));
  const configuration = {sub_plots: [{ratio: 1, axes: axes(names.slice(0, 10))}, {ratio: 1, axes: axes(names.slice(10))}],
                         x_axis_process_value_names: [], color_regions: [], process_value_names_to_annotate: []};
  const plot = new ProcessPlot(document.getElementById('bench'), {configuration, timeFirst: true});
  while (!plot.plots.length) await new Promise((resolve) => setTimeout(resolve, 50));
  // An hour of a 10 Hz unit, fed as the page is fed: one append per tick (the plot keeps a row
  // every half second), then the frames of the next updates are timed.
  const start = Date.now() / 1000 - 3600;
  for (let i = 0; i < 36000; i++) {
    const t = start + i / 10;
    plot.append(t, Object.fromEntries(names.map((name, k) => [name, Math.sin(i / 300 + k)])));
  }
  const frames = [];
  for (let i = 0; i < 200; i++) {
    const now = start + 3600 + i / 10;
    const began = performance.now();
    plot.append(now, Object.fromEntries(names.map((name, k) => [name, Math.sin(now + k)])));
    plot.redraw(false);
    await Promise.resolve();  // uPlot draws in a microtask queued by setData: let it run
    frames.push(performance.now() - began);
    await new Promise((resolve) => requestAnimationFrame(resolve));
  }
  return frames;
}"""


@dataclass
class Running:
    url: str
    api: str


@contextmanager
def running(load_units: int) -> Iterator[Running]:
    """An aggregator and the demo engine, the demo unit running a 1 h wait; ``load_units``
    emulated running engines beside."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        data.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        aggregator = _aggregator(port, data)
        engine = workers = None
        try:
            _wait_until_up(url)
            engine = subprocess.Popen([str(BIN / "pectus-engine"), "-uod", str(DEMO_UOD), "-ap", str(port),
                                       "--outbox", str(Path(folder) / "outbox.sqlite3"), "--log-level", "WARNING"])
            api = f"{url}/api/process_units/{UNIT}"
            deadline = time.monotonic() + 30
            while not any(u["id"] == UNIT and u["state"] == "online" for u in httpx.get(f"{url}/api/process_units").json()):
                assert time.monotonic() < deadline, "the demo engine did not come online"
                time.sleep(0.1)
            version = httpx.get(f"{api}/method").json()["version"]
            httpx.post(f"{api}/method", json={"lines": [{"id": "1", "text": "Wait: 1 h"}], "version": version})
            httpx.post(f"{api}/control", json={"command": "Start"})
            if load_units:
                began = time.time()
                workers, _ = run_emulated(port, load_units, (began + 10, began + 3600), ramp=5.0, began=began, prefix="load")
                time.sleep(15)  # connected and warmed up
            yield Running(url, api)
        finally:
            for worker in workers or ():
                worker.terminate()
            for process in (engine, aggregator):
                if process is not None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(10)


def sample(page, request: str, check: str, act) -> tuple[float, float]:
    """Arms the probe for ``check`` (a JS expression), does ``act()``; (request sent, effect shown)
    in epoch ms, the request being the one to a path ending with ``request`` the page sent then."""
    before = page.evaluate("() => window.__sent.length")
    page.evaluate(f"() => {{ window.__wait = window.__shown(() => {check}); }}")
    act()
    shown = page.evaluate("() => window.__wait")
    sent = [item for item in page.evaluate("() => window.__sent")[before:] if item["url"].endswith(request)]
    assert len(sent) == 1, f"the page sent {len(sent)} requests to ...{request}"
    return sent[0]["at"], shown


def operator_waits(page, api: str, samples: int) -> dict[str, list[float]]:
    """Seconds from request to effect (control, injection, entry) and from tag change to effect."""
    waits: dict[str, list[float]] = {"control": [], "injection": [], "entry": [], "tag change": []}
    page.get_by_test_id("tab-commands").click()
    for i in range(samples):
        value = 20 + i
        page.get_by_test_id("inject-code").fill(f"Simulate: FT01 = {value} L/h")
        sent, shown = sample(page, "/inject", f"{TILE.format(tag='FT01')} === {value}",
                             lambda: page.get_by_test_id("inject-run").click())
        waits["injection"].append((shown - sent) / 1000)
        changed = next(v for v in httpx.get(f"{api}/process_values").json() if v["name"] == "FT01")
        tick = datetime.fromisoformat(changed["time"].replace("Z", "+00:00")).timestamp()
        waits["tag change"].append(shown / 1000 - tick)
    tile = page.locator('[data-testid="tile"][data-tag="PU01"]')
    for i in range(samples):
        value = 20 + i

        def enter() -> None:
            tile.get_by_test_id("tile-open").click()
            page.get_by_test_id("tile-input").fill(str(value))
            page.get_by_test_id("tile-submit").click()

        sent, shown = sample(page, "/process_values/PU01", f"{TILE.format(tag='PU01')} === {value}", enter)
        waits["entry"].append((shown - sent) / 1000)
        page.keyboard.press("Escape")  # the editor, if still open
    for i in range(samples):
        state = "paused" if i % 2 == 0 else "running"
        sent, shown = sample(page, "/control", f"document.querySelector('[data-testid=\"run-controls\"]').dataset.state === '{state}'",
                             lambda: page.get_by_test_id("control-pause").click())
        waits["control"].append((shown - sent) / 1000)
    return waits


def plot_frames(browser, url: str) -> list[float]:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{url}/static/index.html")
    frames = page.evaluate(PLOT_FRAMES)
    page.close()
    return frames


def demo_frames(seconds: float) -> tuple[dict[str, Any], list[tuple[float, list[dict[str, Any]]]]]:
    """The demo UOD's description and its engine's live frames over ``seconds`` of virtual time, the
    demo method run again each time it ends, paced as the Uplink paces them."""
    sim = Simulator(DEMO_UOD)
    builder = RecordBuilder(sim.engine)
    description = builder.describe(sim.time)["data"]
    assert sim.save_method(DEMO_METHOD.read_text())
    sim.start()
    frames, pending = [], {}
    for tick in range(round(seconds / sim.tick_length)):
        sim.run_ticks(1)
        events, sim.events = sim.events, []
        records, live = builder.feed(events) if events else ([], [])
        if any(record["kind"] == "run_stopped" for record in records):
            sim.start()
        pending.update((value["name"], value) for value in live)
        if tick % LIVE_TICKS == 0:
            frames.append((sim.time, list(pending.values())))
            pending = {}
    return description, frames


def trend_memory(units: int = 20, window: float = DEFAULT_WINDOW) -> tuple[float, int, int, int]:
    """Bytes per unit of the trend after ``window`` seconds of the demo (tracemalloc), the window's
    own count of its arrays' bytes, its rows and its columns."""
    description, frames = demo_frames(window + 60)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    trend = Trend(window)
    start, end = frames[0][0], frames[-1][0]
    for unit in range(units):
        name = f"bench-{unit}"
        trend.describe(name, description)
        pending = iter(frames)
        frame = next(pending, None)
        for step in range(int((end - start) / PERIOD) + 1):  # the sampler's rounds
            now = start + step * PERIOD
            while frame is not None and frame[0] <= now:  # the frames arrived since the last round
                trend.offer(name, frame[1], frame[0])
                frame = next(pending, None)
            trend.sample(name, now)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / units, trend.size("bench-0"), trend.rows("bench-0"), len(trend.series("bench-0"))


def line(name: str, values: list[float], unit: str = "ms", scale: float = 1000.0, target: str = "") -> str:
    return (f"{name}: p50 {statistics.median(values) * scale:.0f} {unit}, p95 {percentile(values, 95) * scale:.0f} {unit}, "
            f"max {max(values) * scale:.0f} {unit} over {len(values)}{target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40, help="samples of each wait (default 40)")
    parser.add_argument("--load-units", type=int, default=0, help="emulated running demo engines beside")
    parser.add_argument("--load-browsers", type=int, default=0, help="more pages following the unit live")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    load = f"{args.load_units} more running units, {args.load_browsers} more pages"
    with running(args.load_units) as system, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        others = [browser.new_page() for _ in range(args.load_browsers)]
        for other in others:
            other.goto(f"{system.url}/units/{UNIT}")
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.add_init_script(PROBE)
        page.goto(f"{system.url}/units/{UNIT}")
        page.locator('[data-testid="run-controls"][data-state="running"]').wait_for(timeout=T)
        page.locator('[data-testid="tile"][data-tag="FT01"]').wait_for(timeout=T)
        waits = operator_waits(page, system.api, args.samples)
        print(f"Waits in Chromium, 1440x900, with {load} (target p95 <= 250 ms):")
        for name in ("control", "injection", "entry"):
            print("  " + line(f"request -> shown, {name}", waits[name]))
        print("  " + line("tag change -> shown (Simulate: FT01)", waits["tag change"]))
        frames = plot_frames(browser, system.url)
        print(f"  plot, 20 series x 1 h (7,200 rows): update frame p50 {statistics.median(frames):.1f} ms, "
              f"p95 {percentile(frames, 95):.1f} ms, max {max(frames):.1f} ms over {len(frames)} (target p95 <= 16 ms)")
        browser.close()
    per_unit, arrays, rows, columns = trend_memory()
    print(f"trend memory per unit, 30 min of the demo ({rows} rows x {columns} tags): {per_unit / 1024:.0f} KiB "
          f"(tracemalloc; arrays {arrays / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
