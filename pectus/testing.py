"""Test your UODs and methods on a virtual clock.

:class:`Simulator` runs a method against a UOD exactly as the engine does, tick by tick, but as
fast as the CPU allows and with a clock that only moves when you say so. Nothing sleeps; the same
test gives the same result every time::

    from pectus.testing import Simulator

    sim = Simulator("uods/demo_uod.py", '''
    Mark: A
    Wait: 2 s
    Mark: B
    ''')
    sim.start()
    sim.run_until(lambda: sim.marks == ["A", "B"], max_seconds=5)
    assert sim.value("Process Time") >= 2.0

The hardware is the UOD's own, driven as the live engine drives it: a simulation runs inside the
tick; any other driver (a UOD's own ``HardwareLayerBase`` subclass, OPC-UA, serial, each device
of a composite) is a :class:`~pectus.hardware.connection.Connection` with error recovery,
connected before the first tick, ticked, written and read between ticks, and disconnected by
:meth:`Simulator.close`. With ``hardware="memory"`` no device is needed: an in-memory process
image (:class:`~pectus.hardware.memory.MemoryHardware`) takes the hardware's place.

What you can do between ticks: queue run controls (:meth:`start`, :meth:`pause`...), set a
tag as the process or an operator would (:meth:`set_tag`), give an input of the in-memory
hardware (:meth:`set_input`), save a new version of the method (:meth:`save_method`, a live edit
while a run is started), inject code (:meth:`inject`), and cancel or force a run-log item. What
you can read: tag values with units, System State and Method Status, the run log, the marks
(of this run, and of every run with their tick and time), the state of every method line by
number and by line id, the analyzer's findings, the tick index, the hardware's recovery log and
the engine's events.

Invariants: tick *k* happens at ``start_time + k * tick`` seconds and each tick advances the
process by exactly ``tick`` seconds, so times in assertions are exact multiples of the tick; a
method the engine refuses is never half-loaded: the constructor raises :class:`MethodRefused`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from pectus.hardware.base import HardwareLayerBase
from pectus.hardware.connection import Connection, per_connection, poll_inline
from pectus.hardware.memory import MemoryHardware
from pectus.hardware.recovery import State, Transition
from pectus.pcode.diagnostics import Diagnostic
from pectus.pcode.engine import Engine, Outcome
from pectus.pcode.events import EngineEvent
from pectus.pcode.runlog import LineState, RunLogItem
from pectus.pcode.syntax import parse
from pectus.pcode.tags import SystemTagName, TagValue

__all__ = ["Diagnostic", "Mark", "MethodRefused", "Simulator", "Outcome", "RunLogItem", "TagValue"]

#: A method: its text, or (line id, line text) pairs as the editor saves them.
MethodSource = str | Iterable[tuple[str, str]]


class MethodRefused(ValueError):
    """The engine refused the method given to :class:`Simulator` (syntax errors); ``outcome.reason`` says why."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class Mark:
    """A mark as it was made: its text, the tick and virtual time, and the run (1 = the first Start)."""

    text: str
    tick: int
    time: float
    run: int


class Simulator:
    """An engine core on a virtual clock. ``uod`` is a UOD file path or a built definition.

    ``hardware``: ``"uod"`` (the UOD's own, connected as the live engine connects it) or
    ``"memory"`` (an in-memory process image in its place: no device needed). Raises
    :class:`MethodRefused` when the engine refuses ``method``.
    """

    def __init__(self, uod: Any, method: MethodSource = "", *, tick: float = 0.1,
                 start_time: float = 1_800_000_000.0, record_events: bool = True,
                 hardware: Literal["uod", "memory"] = "uod"):
        if isinstance(uod, (str, Path)):
            from pectus.uod import load_uod

            uod = load_uod(uod)
        if hardware not in ("uod", "memory"):
            raise ValueError(f"hardware must be 'uod' (the UOD's own) or 'memory' (in memory), not {hardware!r}")
        self.tick_length = tick
        self.start_time = start_time
        #: The in-memory hardware in place of the UOD's (``hardware="memory"``), else None.
        self.memory = MemoryHardware.for_unit(uod) if hardware == "memory" else None
        #: The connections of the UOD's drivers (none for in-memory hardware), as the live engine's.
        self.connections: list[Connection] = []
        #: Recovery transitions and failures of the connections: "0.3 s: Driver: connection OK -> Issue: ...".
        self.hardware_log: list[str] = []
        uod.hwl = per_connection(self.memory if self.memory is not None else uod.hwl, self._connection)
        self.engine = Engine(uod, record_events=record_events)
        self.events: list[EngineEvent] = []
        #: Every mark made since the simulator was created, across runs, oldest first.
        self.all_marks: list[Mark] = []
        self._record = record_events
        self._runs = 0
        self._run_id: str | None = None
        self._last_item = 0  # the newest run-log item id looked at for marks
        self._closed = False
        if method:
            outcome = self.engine.set_method(method)
            if not outcome:
                raise MethodRefused(outcome)

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the clock -----------------------------------------------------------------------

    @property
    def tick_index(self) -> int:
        """The number of the last tick run (-1 before the first)."""
        return self.engine.tick_number

    @property
    def time(self) -> float:
        """Seconds of virtual time since the first tick."""
        return self._seconds(max(self.engine.tick_number, 0))

    def _seconds(self, ticks: int) -> float:
        # Rounded so that tick 3 of 0.1 s is 0.3 s, not 0.30000000000000004, as the tests write it.
        return round(ticks * self.tick_length, 9)

    def run_ticks(self, count: int = 1) -> None:
        engine = self.engine
        connections = self.connections
        for _ in range(count):
            number = engine.tick_number + 1
            now = self._seconds(number)
            if number == 0:
                for connection in connections:  # connect, then read the first image
                    self._poll(connection, now)
                    self._poll(connection, now)
            engine.tick(self.start_time + now, self.tick_length if number else 0.0)
            for connection in connections:  # write this tick's outputs, read the next tick's inputs
                self._poll(connection, now)
            self._note_marks(number, now)
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

    def close(self) -> None:
        """End as the engine process does: a run is stopped, the outputs go to their safe values
        and are written out, and the UOD's drivers are disconnected. Closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        self.engine.shutdown()
        for connection in self.connections:
            if connection.recovery.does_io:
                self._poll(connection, self.time)
            error = connection.disconnect_quietly()
            if error is not None:
                self._report(connection.driver, f"disconnect failed: {error}", "warning")
        if self._record:
            self.events.extend(self.engine.take_events())

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

    def save_method(self, text: MethodSource, base_version: int | None = None) -> Outcome:
        """Save a new version of the method; a live edit while a run is started.

        ``text`` may be (line id, line text) pairs, as the editor saves: lines keep their identity
        (and their state, :attr:`line_states`) when lines are inserted above them.
        """
        return self.engine.set_method(text, base_version)

    def set_input(self, name: str, value: Any) -> None:
        """Make the in-memory hardware's register ``name`` read ``value`` (raw, before ``to_tag``).

        Only with ``hardware="memory"``; the value holds until the engine writes the register.
        """
        if self.memory is None:
            raise ValueError("set_input() gives inputs of the in-memory hardware: create the Simulator with "
                             "hardware='memory' (with the UOD's own hardware, set_tag() sets a tag)")
        self.memory.hold(name, value)

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
        """The marks of the current run (or of the last one, once stopped), in order."""
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

    @property
    def line_states(self) -> dict[str, str]:
        """Line id -> 'started' | 'executed' | 'failed' for the lines of the current method.

        Line ids are those of the (line id, text) pairs given, else the line numbers as text.
        """
        ids = {node.id for node in self.engine.method.lines}
        return {line_id: state.value for line_id, state in self.engine.line_states.items() if line_id in ids}

    def lines(self, state: str) -> list[int]:
        return sorted(line for line, s in self.method_state.items() if s == LineState(state).value)

    def analyze(self, method: MethodSource | None = None) -> list[Diagnostic]:
        """The analyzer's findings for ``method`` (default: the current method) on this unit.

        The same findings as ``pectus-engine validate --uod UOD METHOD``, with the unit's tags,
        commands and base units; a list of :class:`~pectus.pcode.diagnostics.Diagnostic`
        (``line``, ``severity``, ``id``, ``message``, ``fixes``), by line.
        """
        return self.engine.analyze(self.engine.method if method is None else parse(method))

    def take_events(self) -> list[EngineEvent]:
        """The engine's events recorded since the last call (and no longer in :attr:`events`)."""
        taken, self.events = self.events, []
        return taken

    @property
    def errors(self) -> list[str]:
        """Messages of the errors that paused the run, oldest first."""
        return [e.message for e in self.events if e.kind == "error"]

    # -- internals -------------------------------------------------------------------------

    def _connection(self, driver: HardwareLayerBase) -> Connection:
        """A connection to one of the UOD's drivers, reporting what recovery does."""
        last_failure: list[str] = []  # reported once until it changes

        def failed(message: str, now: float) -> None:
            if last_failure != [message]:
                last_failure[:] = [message]
                self._report(driver, message, "warning")

        def noted(transition: Transition) -> None:
            if transition.new is State.OK:
                last_failure.clear()
            self._report(driver, str(transition), "info" if transition.new is State.OK else "warning")

        connection = Connection(driver, on_transition=noted, on_failure=failed)
        self.connections.append(connection)
        return connection

    def _poll(self, connection: Connection, now: float) -> None:
        poll_inline(connection.poll(now, lambda: now))

    def _report(self, driver: HardwareLayerBase, message: str, level: str) -> None:
        """A hardware message: in :attr:`hardware_log` and, as a ``log`` event, in the engine's events."""
        text = f"{type(driver).__name__}: {message}"
        self.hardware_log.append(f"{self.time:.1f} s: {text}")
        self.engine.emit_log(level, text)

    def _note_marks(self, tick: int, now: float) -> None:
        """Add the marks made in this tick to :attr:`all_marks` (from the run log: its ids only grow)."""
        run_id = self.engine.tags[SystemTagName.RUN_ID].value
        if run_id is not None and run_id != self._run_id:
            self._run_id = run_id
            self._runs += 1
        items = self.engine.run_log.items
        if not items or next(reversed(items)) <= self._last_item:
            return
        new = []
        for item_id in reversed(items):
            if item_id <= self._last_item:
                break
            item = items[item_id]
            if item.instruction == "Mark":
                new.append(Mark(item.arguments, tick, now, self._runs))
        self._last_item = next(reversed(items))
        self.all_marks.extend(reversed(new))
