"""UI benchmark in Debian's Chromium: live latency and plot frame time.

    python bench/ui_bench.py [--changes 40]

Prints:
* the time from an engine's tag change (the tick that changed it) to its display in the unit page
  (target p95 <= 250 ms; Open Pectus polls every second), measured with a real aggregator and a
  real demo engine, the change made by ``Simulate: TT01 = ...`` injections;
* the frame time of the live plot with 20 series after 1 h of 10 Hz data fed as the page feeds
  it (a row every half second: 7,200 rows), per update (target under 16 ms).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser import CHROMIUM, CHROMIUM_ARGS, UNIT, _aggregator, _wait_until_up, BIN, DEMO_UOD  # noqa: E402
from measure import percentile  # noqa: E402
from pectus.hardware.opcua_server import free_port  # noqa: E402

WATCH_TILE = """() => {
  window.__seen = [];
  const target = document.querySelector('[data-tag="TT01"] [data-testid="tile-value"]');
  new MutationObserver(() => window.__seen.push({text: target.textContent, at: Date.now()}))
    .observe(target, {childList: true, characterData: true, subtree: true});
}"""

PLOT_FRAMES = """async () => {
  const {ProcessPlot} = await import('/static/plot.js');
  document.body.innerHTML = '<div id="bench" style="width: 1400px"></div>';
  const names = Array.from({length: 20}, (_, i) => `T${String(i).padStart(2, '0')}`);
  const axes = (list) => list.map((name) => ({label: name, process_value_names: [name]}));
  const configuration = {sub_plots: [{ratio: 1, axes: axes(names.slice(0, 10))}, {ratio: 1, axes: axes(names.slice(10))}],
                         x_axis_process_value_names: [], color_regions: [], process_value_names_to_annotate: []};
  const plot = new ProcessPlot(document.getElementById('bench'), {configuration});
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


def live_latency(changes: int) -> list[float]:
    import signal
    import subprocess
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        data.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        aggregator = _aggregator(port, data)
        engine = None
        try:
            _wait_until_up(url)
            engine = subprocess.Popen([str(BIN / "pectus-engine"), "-uod", str(DEMO_UOD), "-ap", str(port),
                                       "--outbox", str(Path(folder) / "outbox.sqlite3"), "--log-level", "WARNING"])
            api = f"{url}/api/process_units/{UNIT}"
            deadline = time.monotonic() + 30
            while not any(u["id"] == UNIT and u["state"] == "online" for u in httpx.get(f"{url}/api/process_units").json()):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            version = httpx.get(f"{api}/method").json()["version"]
            httpx.post(f"{api}/method", json={"lines": [{"id": "1", "text": "Wait: 1 h"}], "version": version})
            httpx.post(f"{api}/control", json={"command": "Start"})
            latencies = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(bypass_csp=True)  # the probe polls with an evaluated expression
                page.goto(f"{url}/units/{UNIT}")
                page.wait_for_selector('[data-tag="TT01"] [data-testid="tile-value"]')
                page.evaluate(WATCH_TILE)
                for i in range(changes):
                    value = 30 + i
                    httpx.post(f"{api}/inject", json={"code": f"Simulate: TT01 = {value} degC"})
                    page.wait_for_function(f"window.__seen.some((s) => s.text.includes('{value}'))")
                    seen = page.evaluate(f"window.__seen.find((s) => s.text.includes('{value}')).at") / 1000
                    changed = next(v for v in httpx.get(f"{api}/process_values").json() if v["name"] == "TT01")
                    tick = datetime.fromisoformat(changed["time"].replace("Z", "+00:00")).timestamp()
                    latencies.append(seen - tick)
                browser.close()
            return latencies
        finally:
            for process in (engine, aggregator):
                if process is not None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(10)


def plot_frames() -> list[float]:
    import signal
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        data.mkdir()
        port = free_port()
        aggregator = _aggregator(port, data)
        try:
            _wait_until_up(f"http://127.0.0.1:{port}")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/static/index.html")
                frames = page.evaluate(PLOT_FRAMES)
                browser.close()
            return frames
        finally:
            aggregator.send_signal(signal.SIGTERM)
            aggregator.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=40)
    args = parser.parse_args()
    latencies = live_latency(args.changes)
    print(f"engine tag change -> display: p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {percentile(latencies, 95) * 1000:.0f} ms over {len(latencies)} changes (target p95 <= 250 ms)")
    frames = plot_frames()
    print(f"plot, 20 series x 1 h at 10 Hz: update frame p50 {statistics.median(frames):.1f} ms, "
          f"p95 {percentile(frames, 95):.1f} ms, max {max(frames):.1f} ms (target < 16 ms)")


if __name__ == "__main__":
    main()
