"""The actor toolkit and the scan cycle, on Trio's MockClock: exact ticks, no real sleeping."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
import trio.testing

from conftest import make_unit
from pectus.actors.core import ALWAYS, Actor, ActorCrashed, ActorTimeout, Reply, Restart, ask, supervise
from pectus.actors.engine import EngineProcess
from pectus.actors.scan_cycle import Control, Inspect, SaveMethod, ScanCycle
from pectus.hardware.base import Register, RegisterDirection
from pectus.hardware.simulated import SimulatedHardware
from pectus.pcode.engine import Engine


def run_mock(fn, *args: Any) -> Any:
    """Run ``fn`` under Trio with a virtual clock that jumps whenever every task is waiting."""
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


# -- the toolkit -------------------------------------------------------------------------------

class Crashing(Actor[Any]):
    def __init__(self, crashes: int) -> None:
        super().__init__("test/crashing")
        self.crashes = crashes
        self.starts: list[float] = []

    async def run(self) -> None:
        self.starts.append(trio.current_time())
        if len(self.starts) <= self.crashes:
            raise RuntimeError(f"crash {len(self.starts)}")


def test_a_crashed_actor_is_reported_with_its_path_and_restarted_with_backoff():
    actor = Crashing(crashes=2)
    reported: list[tuple[str, str]] = []

    async def main():
        await supervise([(actor, Restart(limit=3, backoff=0.5))], lambda path, e: reported.append((path, str(e))))

    run_mock(main)
    assert reported == [("test/crashing", "crash 1"), ("test/crashing", "crash 2")]
    assert [round(t - actor.starts[0], 3) for t in actor.starts] == [0.0, 0.5, 1.5]  # backoff doubles


def test_a_crash_beyond_the_policy_brings_everything_down_cleanly():
    stopped = []

    class Forever(Actor[Any]):
        async def run(self) -> None:
            try:
                await trio.sleep_forever()
            finally:
                stopped.append(self.path)

    async def main():
        await supervise([(Crashing(crashes=5), Restart(limit=1, backoff=0.1)), (Forever("test/forever"), ALWAYS)])

    with pytest.raises(ActorCrashed, match="test/crashing crashed 2 time"):
        run_mock(main)
    assert stopped == ["test/forever"]  # cancellation reached the healthy actor


class Echo(Actor[tuple[str, Reply[str]]]):
    def __init__(self, delay: float) -> None:
        super().__init__("test/echo")
        self.delay = delay

    async def run(self) -> None:
        async for text, reply in self.inbox:
            await trio.sleep(self.delay)
            if text == "boom":
                reply.fail(ValueError("no boom"))
            else:
                reply.set(text.upper())


def test_ask_gets_the_reply_the_error_or_a_timeout():
    async def main():
        echo = Echo(delay=0.2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo.run)
            assert await ask(echo, lambda reply: ("hi", reply), timeout=1) == "HI"
            with pytest.raises(ValueError, match="no boom"):
                await ask(echo, lambda reply: ("boom", reply), timeout=1)
            with pytest.raises(ActorTimeout, match="test/echo did not answer within 0.1 s"):
                await ask(echo, lambda reply: ("slow", reply), timeout=0.1)
            nursery.cancel_scope.cancel()

    run_mock(main)


def test_offer_never_waits():
    async def main():
        echo = Echo(delay=0)
        sent = [echo.offer(("x", Reply())) for _ in range(70)]
        assert sent.count(True) == 64 and sent[-1] is False

    run_mock(main)


# -- the scan cycle ------------------------------------------------------------------------------

class Recorder(SimulatedHardware):
    """Simulated hardware that logs what the engine does with it, tick by tick."""

    def __init__(self, log: list[str]) -> None:
        super().__init__({"FT01": 1.0})
        self.log = log

    def tick(self, tick_time: float, increment_time: float) -> None:
        self.log.append("hardware")

    def read_batch(self, registers):
        self.log.append("read")
        return super().read_batch(registers)

    def write_batch(self, values, registers):
        self.log.append("write")
        super().write_batch(values, registers)


def recording_unit(log: list[str]):
    unit = make_unit()
    hardware = Recorder(log)
    hardware.registers = {"FT01": Register("FT01", RegisterDirection.Read),
                          "PU01": Register("PU01", RegisterDirection.Write, safe_value=0.0)}
    unit.hwl = hardware
    return unit


def test_ticks_are_on_a_fixed_grid_without_drift():
    ticks: list[float] = []

    async def main():
        engine = Engine(make_unit())
        scan = ScanCycle(engine, [], sinks=[lambda events: None], wall_clock=trio.current_time)
        original = engine.tick

        def tick(now, increment):
            ticks.append(now)
            original(now, increment)

        engine.tick = tick
        with trio.move_on_after(10.05):
            await scan.run()

    run_mock(main)
    assert len(ticks) == 101
    assert all(abs(t - ticks[0] - k * 0.1) < 1e-9 for k, t in enumerate(ticks))


def test_an_overrun_is_counted_the_late_tick_still_runs_and_the_grid_is_kept():
    ticks: list[float] = []

    async def main():
        clock_jump = trio.lowlevel.current_clock().jump
        engine = Engine(make_unit())
        original = engine.tick

        def slow_tick(now, increment):
            ticks.append(now)
            original(now, increment)
            if len(ticks) == 5:
                clock_jump(0.35)  # this tick took 350 ms

        engine.tick = slow_tick
        scan = ScanCycle(engine, [], wall_clock=trio.current_time)
        with trio.move_on_after(1.05):
            await scan.run()
        return scan.stats

    stats = run_mock(main)
    start = ticks[0]
    offsets = [round(t - start, 3) for t in ticks]
    # The tick at 0.4 took 350 ms: the deadlines 0.5 and 0.6 were missed (counted), the tick due at
    # 0.7 ran late at 0.75 (not skipped), and the schedule continued on the grid at 0.8.
    assert offsets[:8] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.75, 0.8, 0.9]
    assert stats.late_ticks == 2
    assert max(stats.intervals) == pytest.approx(0.35)


def test_each_tick_applies_requests_then_reads_steps_runs_commands_and_writes_in_order():
    log: list[str] = []

    async def main():
        engine = Engine(recording_unit(log), record_events=True)
        scan = ScanCycle(engine, [], sinks=[lambda events: log.append("events")], wall_clock=trio.current_time)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scan.run)
            assert await ask(scan, lambda r: SaveMethod("PU01: 50 %\nMark: a", None, r), timeout=1)
            assert await ask(scan, lambda r: Control("Start", r), timeout=1)
            await trio.sleep(0.5)
            log.clear()
            assert await ask(scan, lambda r: Control("Pause", r), timeout=1)
            marks = await ask(scan, lambda r: Inspect(lambda e: list(e.marks), r), timeout=1)
            nursery.cancel_scope.cancel()
        return marks

    marks = run_mock(main)
    assert marks == ["a"]
    one_tick = log[:log.index("events") + 1]
    assert one_tick == ["hardware", "read", "write", "events"]  # Pause drives PU01 to its safe value


def test_requests_are_answered_between_ticks_and_bad_ones_fail_alone():
    async def main():
        scan = ScanCycle(Engine(make_unit()), [], wall_clock=trio.current_time)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scan.run)
            refused = await ask(scan, lambda r: Control("Launch", r), timeout=1)
            assert not refused and "Unknown control 'Launch'" in refused.reason
            with pytest.raises(ZeroDivisionError):
                await ask(scan, lambda r: Inspect(lambda e: 1 / 0, r), timeout=1)
            assert (await ask(scan, lambda r: Control("Start", r), timeout=1)).accepted
            await trio.sleep(0.3)
            assert await ask(scan, lambda r: Inspect(lambda e: e.system_state, r), timeout=1) == "Running"
            nursery.cancel_scope.cancel()

    run_mock(main)


# -- the engine process --------------------------------------------------------------------------

def test_the_engine_process_stops_within_two_seconds_with_safe_outputs_and_no_threads_left():
    before = set(threading.enumerate())

    async def main():
        unit = make_unit()
        process = EngineProcess(unit)
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            assert await ask(process.scan, lambda r: SaveMethod("PU01: 80 %\nMark: a", None, r), timeout=1)
            assert await ask(process.scan, lambda r: Control("Start", r), timeout=1)
            await trio.sleep(1)
            assert process.engine.value("PU01") == 80.0
            began = trio.current_time()
            await process.stop()
        return trio.current_time() - began, process.engine

    took, engine = trio.run(main)
    assert took < 2.0
    assert engine.value("PU01") == 0.0 and engine.system_state == "Stopped"
    assert set(threading.enumerate()) <= before
