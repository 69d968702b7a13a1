"""Test your UODs and methods on a virtual clock.

:class:`Simulator` runs a method against a UOD - its simulated hardware, or any hardware object
you give it - exactly as the engine does, tick by tick, but as fast as the CPU allows and with
a clock that only moves when you say so. Nothing sleeps; the same test gives the same result
every time::

    from pectus.testing import Simulator

    sim = Simulator("uods/demo_uod.py", '''
    Mark: A
    Wait: 2 s
    Mark: B
    ''')
    sim.start()
    sim.run_until(lambda: sim.marks == ["A", "B"], max_seconds=5)
    assert sim.value("Process Time") >= 2.0

What you can do between ticks: queue run controls (:meth:`start`, :meth:`pause`...), set a
tag as the process or an operator would (:meth:`set_tag`), save a new version of the method
(:meth:`save_method`, a live edit while a run is started), inject code (:meth:`inject`), and
cancel or force a run-log item. What you can read: tag values with units, System State and
Method Status, the run log, the marks, the state of every method line, the tick index, and the
engine's events.

Invariant: tick *k* happens at ``start_time + k * tick`` seconds and each tick advances the
process by exactly ``tick`` seconds, so times in assertions are exact multiples of the tick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pectus.pcode.engine import Engine, Outcome
from pectus.pcode.events import EngineEvent
from pectus.pcode.runlog import LineState, RunLogItem
from pectus.pcode.tags import TagValue

__all__ = ["Simulator", "Outcome", "RunLogItem", "TagValue"]


class Simulator:
    """An engine core on a virtual clock. ``uod`` is a UOD file path or a built definition."""

    def __init__(self, uod: Any, method: str = "", *, tick: float = 0.1,
                 start_time: float = 1_800_000_000.0, record_events: bool = True):
        if isinstance(uod, (str, Path)):
            from pectus.uod import load_uod

            uod = load_uod(uod)
        self.tick_length = tick
        self.start_time = start_time
        self.engine = Engine(uod, record_events=record_events)
        self.events: list[EngineEvent] = []
        self._record = record_events
        if method:
            outcome = self.engine.set_method(method)
            if not outcome:
                raise ValueError(outcome.reason)

    # -- the clock -----------------------------------------------------------------------

    @property
    def tick_index(self) -> int:
        """The number of the last tick run (-1 before the first)."""
        return self.engine.tick_number

    @property
    def time(self) -> float:
        """Seconds of virtual time since the first tick."""
        return max(self.engine.tick_number, 0) * self.tick_length

    def run_ticks(self, count: int = 1) -> None:
        engine = self.engine
        for _ in range(count):
            number = engine.tick_number + 1
            engine.tick(self.start_time + number * self.tick_length, self.tick_length if number else 0.0)
            if self._record:
                self.events.extend(engine.take_events())

    def run_for(self, seconds: float) -> None:
        self.run_ticks(round(seconds / self.tick_length))

    def run_until(self, condition: Callable[[], bool], *, max_seconds: float = 60.0) -> int:
        """Tick until ``condition()`` is true (checked after each tick); return the ticks run.

        Raises TimeoutError, with what the unit was doing, after ``max_seconds`` of virtual time.
        """
        limit = round(max_seconds / self.tick_length)
        for ticks in range(1, limit + 1):
            self.run_ticks(1)
            if condition():
                return ticks
        raise TimeoutError(f"Condition not met within {max_seconds} s of virtual time; System State "
                           f"{self.system_state}, Method Status {self.method_status}, marks {self.marks}, "
                           f"running: {[i.name for i in self.run_log if i.running]}")

    # -- run controls --------------------------------------------------------------------

    def control(self, name: str) -> Outcome:
        """Queue a run control (Start, Stop, Pause, Unpause, Hold, Unhold, Restart) as a user."""
        return self.engine.execute_control(name)

    def start(self) -> Outcome:
        return self.control("Start")

    def stop(self) -> Outcome:
        return self.control("Stop")

    def pause(self) -> Outcome:
        return self.control("Pause")

    def unpause(self) -> Outcome:
        return self.control("Unpause")

    def hold(self) -> Outcome:
        return self.control("Hold")

    def unhold(self) -> Outcome:
        return self.control("Unhold")

    def restart(self) -> Outcome:
        return self.control("Restart")

    # -- changing things -------------------------------------------------------------------

    def set_tag(self, name: str, value: Any, unit: str | None = None) -> None:
        """Set a tag's value now, as the process or an operator would."""
        tag = self.engine.tags[name]
        now = self.engine.clock
        if unit is not None:
            tag.set_value_and_unit(value, unit, now)
        else:
            tag.set_value(value, now)

    def save_method(self, text: str, base_version: int | None = None) -> Outcome:
        """Save a new version of the method; a live edit while a run is started."""
        return self.engine.set_method(text, base_version)

    def inject(self, code: str) -> Outcome:
        return self.engine.inject(code)

    def cancel(self, item: RunLogItem | int) -> Outcome:
        return self.engine.cancel(item if isinstance(item, int) else item.id)

    def force(self, item: RunLogItem | int) -> Outcome:
        return self.engine.force(item if isinstance(item, int) else item.id)

    # -- reading ---------------------------------------------------------------------------

    def value(self, name: str) -> Any:
        return self.engine.tags[name].get_value()

    def tag(self, name: str) -> TagValue:
        """The tag's value with its unit (and whether it is simulated)."""
        return self.engine.tags[name].as_readonly()

    @property
    def system_state(self) -> str:
        return self.engine.system_state

    @property
    def method_status(self) -> str:
        return self.engine.method_status

    @property
    def marks(self) -> list[str]:
        return list(self.engine.marks)

    @property
    def run_log(self) -> list[RunLogItem]:
        return list(self.engine.run_log)

    def items(self, name: str) -> list[RunLogItem]:
        """The run-log items named ``name`` (e.g. ``"Wait: 5 s"``), oldest first; maybe none."""
        return [i for i in self.engine.run_log if i.name == name]

    def item(self, name: str, *, last: bool = True) -> RunLogItem:
        """The run-log item named ``name``; the latest one by default. KeyError when there is none."""
        items = self.items(name)
        if not items:
            raise KeyError(f"No run-log item '{name}'; items are {[i.name for i in self.engine.run_log]}")
        return items[-1] if last else items[0]

    @property
    def method_state(self) -> dict[int, str]:
        """Line number -> 'started' | 'executed' | 'failed' for the lines of the current method."""
        by_id = {node.id: node.line for node in self.engine.method.lines}
        return {by_id[line_id]: state.value for line_id, state in self.engine.line_states.items()
                if line_id in by_id}

    def lines(self, state: str) -> list[int]:
        return sorted(line for line, s in self.method_state.items() if s == LineState(state).value)

    @property
    def errors(self) -> list[str]:
        """Messages of the errors that paused the run, oldest first."""
        return [e.message for e in self.events if e.kind == "error"]
