"""Fixtures for the browser tests: a real aggregator and a real demo engine, each its own process on
loopback, and Debian's Chromium driven by Playwright (never a downloaded browser).

Screenshots go to tests/artifacts/ (not committed).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import DEMO_UOD, ROOT
from pectus.hardware.opcua_server import free_port
from pectus.uod import load_uod

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
BIN = Path(sys.executable).parent
UNIT = f"{socket.gethostname()}_DemoUod"
# The flags keep Chromium from calling out of this machine, which has no network beyond loopback.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class System:
    url: str
    unit: str
    data: Path
    aggregator: subprocess.Popen
    engines: list[subprocess.Popen]
    port: int

    outbox: Path
    env: dict[str, str] = field(default_factory=dict)  # the aggregator's environment, beyond the test's

    def stop_aggregator(self) -> None:
        self.aggregator.send_signal(signal.SIGTERM)
        self.aggregator.wait(10)

    def start_aggregator(self) -> None:
        self.aggregator = _aggregator(self.port, self.data, self.env)
        _wait_until_up(self.url)

    def wait_for_outbox(self, text: str, timeout: float = 20.0) -> None:
        """Until the engine's outbox holds a record containing ``text`` (not yet delivered)."""
        deadline = time.monotonic() + timeout
        while True:
            with sqlite3.connect(self.outbox) as db:
                if db.execute("SELECT COUNT(*) FROM outbox WHERE record LIKE ?", (f"%{text}%",)).fetchone()[0]:
                    return
            assert time.monotonic() < deadline, f"no record with {text!r} in the engine's outbox"
            time.sleep(0.05)


def _aggregator(port: int, data: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    # The test engines are new to it each time: enrolled on first use, as in a lab.
    return subprocess.Popen([str(BIN / "pectus-aggregator"), "--port", str(port), "--data-dir", str(data),
                             "--log-level", "WARNING", "--accept-new-engines"], stderr=(data.parent / "aggregator.log").open("a"),
                            env={**os.environ, **(env or {})})


def _engine(port: int, uod: Path, folder: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "pectus-engine"), "-uod", str(uod), "-ap", str(port),
                             "--outbox", str(folder / f"engine.{uod.stem}.outbox.sqlite3"), "--log-level", "WARNING"],
                            stderr=(folder / "engine.log").open("a"), env={**os.environ})


def _wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the aggregator at {url} did not come up")


@pytest.fixture
def system(tmp_path) -> Iterator[System]:
    """An aggregator and the demo engine, connected; the unit is online when the test starts."""
    with running_system(tmp_path) as running:
        yield running


@contextmanager
def running_system(folder: Path, env: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                   more_uods: tuple[Path, ...] = ()) -> Iterator[System]:
    """An aggregator (with ``env`` added to its environment), the demo engine and an engine for each of
    ``more_uods``, all connected: every unit is online (as ``GET /api/process_units`` with ``headers``
    lists them) when the block starts. ``System.outbox`` is the demo engine's."""
    port = free_port()
    data = folder / "data"
    data.mkdir()
    url = f"http://127.0.0.1:{port}"
    aggregator = _aggregator(port, data, env or {})
    _wait_until_up(url)
    engines = [_engine(port, uod, folder) for uod in (DEMO_UOD, *more_uods)]
    running = System(url, UNIT, data, aggregator, engines, port, folder / f"engine.{DEMO_UOD.stem}.outbox.sqlite3",
                     env or {})
    units = {f"{socket.gethostname()}_{load_uod(uod).instrument}" for uod in (DEMO_UOD, *more_uods)}
    deadline = time.monotonic() + 30
    try:  # the processes are stopped below also when they do not all come up
        while not units <= {u["id"] for u in httpx.get(f"{url}/api/process_units", headers=headers).json()
                            if u["state"] == "online"}:
            assert time.monotonic() < deadline, f"the engines of {sorted(units)} did not all come online"
            time.sleep(0.1)
        yield running
    finally:
        for process in [*running.engines, running.aggregator]:
            process.send_signal(signal.SIGTERM)
        for process in [*running.engines, running.aggregator]:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# Visible controls without an accessible name (a page evaluates it; [] is the only good answer).
UNLABELLED = """() => [...document.querySelectorAll('button, input, select, textarea, [role="button"]')]
  .filter((el) => el.offsetParent !== null)
  .filter((el) => {
    const named = (el.getAttribute('aria-label') || '').trim() || el.getAttribute('aria-labelledby')
      || (el.labels && el.labels.length) || (el.textContent || '').trim() || el.getAttribute('title');
    return !named;
  })
  .map((el) => el.outerHTML.slice(0, 120))"""


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


SCREEN_SIZES = ((1440, 900), (1920, 1080))  # a laptop at a skid, a control-room screen


def screenshots(page, stem: str) -> None:
    """``<stem>-1440.png`` and ``<stem>-1920.png``: the page at each of SCREEN_SIZES (laid out
    again for each: two animation frames after the resize), then back at its own size."""
    own = page.viewport_size
    for width, height in SCREEN_SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
        screenshot(page, f"{stem}-{width}.png")
    page.set_viewport_size(own)
