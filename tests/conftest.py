"""Shared test fixtures: a small test unit and a simulator factory.

The test unit is written with the public UOD API, as an engineer would write one, so the tests
read like a user's. Its tags are plain (no hardware reads) so a test sets them with
``sim.set_tag``; its commands cover the command manager's cases: a multi-tick command with
progress, an overlap group, a failing command, commands with parsed arguments.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import pytest
import trio
from hypothesis import settings

from pectus.testing import Simulator
from pectus.uod import RegexNumber, RegisterDirection, UodBuilder, UodCommand, tags
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
