"""Shared test fixtures: a small test unit and a simulator factory.

The test unit is written with the public UOD API, as an engineer would write one, so the tests
read like a user's. Its tags are plain (no hardware reads) so a test sets them with
``sim.set_tag``; its commands cover the command manager's cases: a multi-tick command with
progress, an overlap group, a failing command, commands with parsed arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import trio
from hypothesis import settings

from pectus.actors.aggregator import AggregatorProcess
from pectus.actors.engine import EngineProcess
from pectus.credentials import EngineKey, key_digest
from pectus.events.domain import EngineEnrolled
from pectus.testing import Simulator
from pectus.uod import RegexNumber, RegisterDirection, UodBuilder, UodCommand, load_uod, tags
from postgres import postgresql_server, postgresql_url  # noqa: F401 - fixtures: a throwaway PostgreSQL server

# Property tests check what code does, not how fast: Hypothesis' per-example deadline is a timing
# assertion, and on a loaded machine an example that builds a cache first (a pint registry, say)
# overran it. Speed is measured by bench/.
settings.register_profile("pectus", deadline=None)
settings.load_profile("pectus")

ROOT = Path(__file__).resolve().parent.parent
DEMO_UOD = ROOT / "uods" / "demo_uod.py"


def reset(cmd: UodCommand) -> None:
    """Resets the unit in 10 ticks.

    Reset
    """
    count = cmd.get_iteration_count()
    cmd.set_progress(count / 10)
    if count >= 9:
        cmd.set_complete()


def set_pump(cmd: UodCommand, number: str, number_unit: str) -> None:
    """PU01: 50 %"""
    cmd.context.tags["PU01"].set_value_and_unit(float(number), number_unit, 0.0)
    cmd.set_complete()


def set_valve(cmd: UodCommand, value: str) -> None:
    """Valve: Open"""
    if value not in ("Open", "Closed"):
        raise ValueError(f"Valve can be Open or Closed, not '{value}'")
    cmd.context.tags["Valve"].set_value(value, 0.0)
    cmd.set_complete()


def run_long(cmd: UodCommand, **kwargs) -> None:
    """Runs until cancelled.

    Fill
    """


def fail(cmd: UodCommand, **kwargs) -> None:
    """Always fails.

    Fail
    """
    raise ValueError("the pump did not respond")


def make_unit():
    """Build the test unit (a fresh one each time: tags hold state)."""
    builder = (
        UodBuilder()
        .with_instrument("TestUnit")
        .with_author("Test Author", "test@example.com")
        .with_filename(__file__)
        .with_location("Test lab")
        .with_hardware_none()
        .with_hardware_register("PU01", RegisterDirection.Write, safe_value=0.0)
        .with_hardware_register("Valve", RegisterDirection.Write, safe_value="Closed")
        .with_tag(tags.Tag("PU01", value=0.0, unit="%", direction=tags.TagDirection.Output))
        .with_tag(tags.SelectTag("Valve", value="Closed", unit=None, choices=["Open", "Closed"],
                                 direction=tags.TagDirection.Output))
        .with_tag(tags.Tag("FT01", value=0.0, unit="L/h", direction=tags.TagDirection.Input))
        .with_tag(tags.Tag("TT01", value=20.0, unit="degC", direction=tags.TagDirection.Input))
        .with_tag(tags.Tag("Category", value="Rising"))
        .with_tag(tags.Tag("Counter", value=0))
        .with_tag(tags.Tag("Totalizer", value=0.0, unit="L"))
        .with_tag(tags.Tag("Column Volume", value=2.0, unit="L"))
        .with_accumulated_volume("Totalizer")
        .with_accumulated_cv("Column Volume", "Totalizer")
        .with_command("Reset", reset, arg_parse_fn=None)
        .with_command_regex_arguments("PU01", RegexNumber(units=["%"]), set_pump)
        .with_command("Valve", set_valve)
        .with_command("Fill", run_long)
        .with_command("Drain", run_long)
        .with_command_overlap(["Fill", "Drain"])
        .with_command("Fail", fail, arg_parse_fn=None)
    )
    return builder.build()


@pytest.fixture
def unit():
    return make_unit()


@pytest.fixture
def simulate():
    """``simulate(method, start=True)`` -> a Simulator on a fresh test unit, Start queued."""
    def factory(method: str = "", *, start: bool = True, uod=None) -> Simulator:
        sim = Simulator(uod if uod is not None else make_unit(), method)
        if start:
            assert sim.start()
        return sim
    return factory


async def wait_for(condition: Callable[[], Any], timeout: float = 10.0, step: float = 0.02,
                   ignore: tuple[type[Exception], ...] = ()) -> Any:
    """Wait until ``condition()`` (a function or a coroutine function) is truthy; return its value.

    Fails with trio.TooSlowError after ``timeout`` seconds: tests wait on conditions with a
    deadline, never for a fixed time. Exceptions in ``ignore`` (a server not up yet) count as false.
    """
    with trio.fail_after(timeout):
        while True:
            try:
                result = condition()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return result
            except ignore:
                pass
            await trio.sleep(step)


# -- the demo unit through a real aggregator, both in this process ----------------------------------

DEMO_UNIT = "testhost_DemoUod"  # the demo engine's id on the machine "testhost"


def demo_aggregator(tmp_path: Path, **options: Any) -> AggregatorProcess:
    """An aggregator on ``tmp_path / "data"`` (``options``: AggregatorProcess's) with the demo
    engine of :func:`demo_unit` enrolled: its key made in ``tmp_path`` as the engine would make it."""
    aggregator = AggregatorProcess(tmp_path / "data", port=0, hostname="aggregator-host", **options)
    key = EngineKey.from_file(tmp_path / f"{DEMO_UNIT}.key").path.read_text().strip()
    aggregator.store.append([EngineEnrolled(time=0.0, unit=DEMO_UNIT, key_sha256=key_digest(key)).stored()])
    return aggregator


@dataclass
class DemoUnit:
    aggregator: AggregatorProcess
    engine: EngineProcess
    api: httpx.AsyncClient  # the aggregator's API, as the user Ann (sign-in off)
    base: str  # the unit's API path

    async def get(self, path: str = "") -> Any:
        """The JSON of ``GET <the unit's API path><path>``."""
        return (await self.api.get(self.base + path)).json()


@asynccontextmanager
async def demo_unit(tmp_path: Path, aggregator: AggregatorProcess) -> AsyncIterator[DemoUnit]:
    """``aggregator`` (see :func:`demo_aggregator`) serving on a free loopback port and the demo
    engine connected to it; the block starts once the unit is online, and at its end the engine
    stops (if the test has not stopped it) and then the aggregator."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: aggregator.run(shutdown=shutdown, task_status=task_status))
        port = int(bound[0].rsplit(":", 1)[1])
        engine = EngineProcess(load_uod(DEMO_UOD), uplink={
            "outbox": tmp_path / "engine.outbox.sqlite3", "url": f"ws://127.0.0.1:{port}/engine",
            "engine_id": DEMO_UNIT, "computer_name": "testhost"})
        await nursery.start(engine.run)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                     headers={"X-Pectus-User": "Ann"}) as api:
            async def online() -> bool:
                units = (await api.get("/api/process_units")).json()
                return any(u["id"] == DEMO_UNIT and u["state"] == "online" for u in units)
            try:
                await wait_for(online, timeout=20)
                yield DemoUnit(aggregator, engine, api, f"/api/process_units/{DEMO_UNIT}")
            finally:  # also when the test fails: the nursery ends only once both have stopped
                await engine.stop()
                shutdown.set()
