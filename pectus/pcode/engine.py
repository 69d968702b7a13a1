"""The engine core: one unit's tags, run state, method and commands, advanced one tick at a time.

This is plain Python without I/O: the caller (the scan-cycle actor, the simulator, a test) calls
:meth:`Engine.tick` with the tick's clock time and the time elapsed since the previous tick, and
drains :meth:`Engine.take_events`. A 10-hour method therefore simulates in seconds and every test
is exact.

One tick, in this order (as Open Pectus):

1. hardware housekeeping and the read of the process image (input registers -> tags);
2. derived tags are recalculated;
3. the interpreter advances the method, if a run is started and neither paused nor on hold;
4. time tags advance (Process Time only while Running; Run Time unless Stopped), counted in whole
   microseconds (:mod:`pectus.pcode.timing`), and tags with an ``on_tick`` hook run;
5. the command manager gives every scheduled command one step;
6. changed tags are published; outputs whose value changed are written to the hardware.

Invariants: the scan cycle never raises because of a method, a command or the hardware - any
such error pauses the run with Method Status ``Error`` and an :class:`ErrorRaised` event; a
rejected request (a control in the wrong state, a stale or invalid method) changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from pectus.pcode import events as ev
from pectus.pcode import units
from pectus.pcode.analyzer import analyze
from pectus.pcode.commands import CONTROLS, CommandManager
from pectus.pcode.context import MethodError
from pectus.pcode.diagnostics import Diagnostic, Severity
from pectus.pcode.interpreter import Interpreter
from pectus.pcode.runlog import ItemState, LineState, RunLog, RunLogItem
from pectus.pcode.syntax import Method, Node, parse
from pectus.pcode.tags import (HOOKS, SystemTagName as S, Tag, TagTable, format_time_as_clock,
                               format_time_as_date_time, overridden_hooks)
from pectus.pcode.timing import TIME_UNITS, micros, parse_duration, seconds

RUNNING, PAUSED, HOLDING, STOPPED, RESTARTING = "Running", "Paused", "Holding", "Stopped", "Restarting"
_UNWRITTEN = object()  # differs from every value: the output is written at the next chance
#: A threshold on a measured timeline (a volume: a difference of two float readings) counts as
#: reached this close below it, so float noise never delays a line by a tick. Time timelines are
#: exact (see pectus.pcode.timing) and need none.
MEASURED_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to a request (control, method save, injection, cancel, force)."""

    accepted: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.accepted


ACCEPTED = Outcome(True)

#: The analyzer's findings that refuse injected code before it runs: each would fail when its
#: line runs and pause the run. Structure, thresholds and macros depend on the method the code
#: joins, so those are left to the run.
REFUSED_IN_INJECTION = frozenset({
    "UndefinedCommand", "CommandArgsInvalid", "ArgumentNotExpected", "MissingArgument", "InvalidArgument",
    "UndefinedTag", "UnexpectedUnit", "MissingUnit", "InvalidUnit", "IncompatibleUnits", "NonNumericComparison",
})


def _system_tags() -> list[Tag]:
    clock = format_time_as_clock
    return [
        Tag(S.BASE, value="min"),
        Tag(S.RUN_COUNTER, value=0),
        Tag(S.BLOCK, value=None),
        Tag(S.PROCESS_TIME, value=0.0, unit="s", format_fn=clock),
        Tag(S.RUN_TIME, value=0.0, unit="s", format_fn=clock),
        Tag(S.CLOCK, value=0.0, unit="s", format_fn=format_time_as_date_time),
        Tag(S.SYSTEM_STATE, value=STOPPED),
        Tag(S.METHOD_STATUS, value="OK"),
        Tag(S.CONNECTION_STATUS, value="Disconnected"),
        Tag(S.RUN_ID, value=None),
        Tag(S.MARK, value=None),
        Tag(S.BLOCK_TIME, value=0.0, unit="s", format_fn=clock),
        Tag(S.SCOPE_TIME, value=0.0, unit="s", format_fn=clock),
    ]


class Engine:
    """The core of one unit. Build it from a UnitOperationDefinition, then tick it.

    It is the :class:`~pectus.pcode.context.RunContext` of its interpreter and command manager.
    """

    def __init__(self, uod: Any, *, record_events: bool = False):
        self.uod = uod
        tags = TagTable(_system_tags())
        for tag in uod.tags:
            tags.add(tag)
        if S.BATCH_NAME not in tags:  # Open Pectus requires the UOD to define it (its quirk #15)
            tags.add(Tag(S.BATCH_NAME, value=None))
        uod.system_tags = tags
        self.tags = tags
        self.events: list[ev.EngineEvent] | None = [] if record_events else None
        self.tick_number = -1
        self.clock = 0.0  # the current tick's time
        # Process Time and Run Time in whole microseconds: the exact counts the tags show as seconds
        self.process_micros = 0
        self.run_micros = 0
        self.started = False
        self.paused = False
        self.holding = False
        self.run_log = RunLog()
        self.line_states: dict[str, LineState] = {}
        self.marks: list[str] = []
        self.method = parse("")
        self.method_version = 0
        self._saved_outputs: dict[str, Any] | None = None
        self._state = (STOPPED, "OK")
        self.last_error: str | None = None

        self._t = {name: tags[name] for name in S if name in tags}
        hwl = uod.hwl
        registers = list(hwl.registers.values())
        self._read_registers = [r for r in registers if r.readable and r.name in tags]
        self._read_tags = [tags[r.name] for r in self._read_registers]
        self._read_converters = [r.to_tag for r in self._read_registers]
        self._write_registers = [r for r in registers if r.writable and r.name in tags]
        self._write_tags = [tags[r.name] for r in self._write_registers]
        self._written: list[Any] = [_UNWRITTEN] * len(self._write_registers)
        self._hardware_error: str | None = None
        self._derived = [t for t in tags if hasattr(t, "calculate")]
        self._listeners: dict[str, list[Tag]] = {hook: [] for hook in HOOKS}
        for tag in tags:
            for hook in overridden_hooks(tag):
                self._listeners[hook].append(tag)
        self._timeline_tags = self._build_timelines()
        #: the tags whose values a scope records when it starts (the zero of its timelines)
        self.timeline_names = sorted({name for name, _ in self._timeline_tags.values()})
        self.commands = CommandManager(self)
        self.interpreter = Interpreter(self, self.method)
        self._apply_safe_values()
        self._emit_hook("on_engine_configured")

    # -- queries ---------------------------------------------------------------------------

    @property
    def system_state(self) -> str:
        return self._t[S.SYSTEM_STATE].value

    @property
    def method_status(self) -> str:
        return self._t[S.METHOD_STATUS].value

    @property
    def process_time(self) -> float:
        return self._t[S.PROCESS_TIME].value

    def now(self) -> float:
        """The current tick's clock time (what UOD commands see as ``cmd.tick_time``)."""
        return self.clock

    def value(self, name: str) -> Any:
        return self.tags[name].get_value()

    def take_events(self) -> list[ev.EngineEvent]:
        if self.events is None:
            return []
        taken, self.events = self.events, []
        return taken

    # -- the tick --------------------------------------------------------------------------

    def tick(self, tick_time: float, increment_time: float) -> None:
        """Advance one scan cycle. ``increment_time`` is the real time since the last tick."""
        self.tick_number += 1
        self.clock = tick_time
        hwl = self.uod.hwl
        try:
            hwl.tick(tick_time, increment_time)
            if self._read_registers:
                values = hwl.read_batch(self._read_registers)
                for to_tag, tag, value in zip(self._read_converters, self._read_tags, values):
                    if to_tag is not None:
                        value = to_tag(value)
                    tag.set_value(value, tick_time)
            self._hardware_error = None
        except Exception as error:
            self._hardware_failed("Reading the hardware failed: ", error)
        self._t[S.CONNECTION_STATUS].set_value(hwl.connection_status, tick_time)
        for tag in self._derived:
            tag.calculate(tick_time)
        if self.started and not (self.paused or self.holding):
            self.interpreter.tick()
        if self.started:
            self._advance_time(tick_time, increment_time)
        self.commands.tick()
        self._publish()
        if self._write_registers:  # on change only, so hand-operated equipment is left alone
            self._write_outputs()

    def _advance_time(self, tick_time: float, increment: float) -> None:
        t = self._t
        t[S.CLOCK].set_value(tick_time, tick_time)
        state = t[S.SYSTEM_STATE].value
        step = micros(increment)  # the tick's length is rounded once; the timers add integers
        if state == RUNNING:
            self.process_micros += step
            t[S.PROCESS_TIME].set_value(seconds(self.process_micros), tick_time)
        if state != STOPPED and state != RESTARTING:
            self.run_micros += step
            t[S.RUN_TIME].set_value(seconds(self.run_micros), tick_time)
        now = self.process_micros
        interpreter = self.interpreter
        t[S.BLOCK_TIME].set_value(seconds(now - interpreter.block_start()), tick_time)
        t[S.SCOPE_TIME].set_value(seconds(now - interpreter.scope_start()), tick_time)
        for listener in self._listeners["on_tick"]:
            listener.on_tick(tick_time, increment)

    def _publish(self) -> None:
        changed = self.tags.take_changes()
        events = self.events
        state = (self._t[S.SYSTEM_STATE].value, self._t[S.METHOD_STATUS].value)
        if state != self._state:
            self._state = state
            if events is not None:
                events.append(ev.StateChanged(self.tick_number, self.clock, self.process_time, *state))
        if events is not None:
            base = (self.tick_number, self.clock, self.process_time)
            for tag in changed:
                events.append(ev.TagChanged(*base, tag.name, tag.get_value(), tag.unit, tag.simulated))
        for tag in changed:
            if tag.name == S.CONNECTION_STATUS:
                self._emit_hook("on_connection_status_change", tag.value)

    def _write_outputs(self) -> None:
        """Write the outputs whose value changed since they were last written."""
        registers, values = [], []
        written = self._written
        for i, (register, tag) in enumerate(zip(self._write_registers, self._write_tags)):
            value = tag.get_value()
            if value != written[i]:
                written[i] = value
                registers.append(register)
                values.append(register.from_tag(value) if register.from_tag is not None else value)
        if registers:
            try:
                self.uod.hwl.write_batch(values, registers)
            except Exception as error:
                for register in registers:  # not written: try again next tick
                    written[self._write_registers.index(register)] = _UNWRITTEN
                self._hardware_failed("Writing the hardware failed: ", error)

    def _hardware_failed(self, prefix: str, error: Exception) -> None:
        """A hardware error pauses a run (once); while no run is started it is only logged (once)."""
        message = prefix + str(error)
        if self.started:
            if self.method_status != "Error":
                self.fail(error, None, prefix=prefix)
        elif message != self._hardware_error:
            self.emit_log("error", message)
        self._hardware_error = message

    # -- run control -----------------------------------------------------------------------

    def execute_control(self, name: str) -> Outcome:
        """A user's run control (Start, Stop, Pause, Unpause, Hold, Unhold, Restart).

        Validated against the current state; on acceptance it takes effect in the next tick.
        """
        if name not in CONTROLS:
            return Outcome(False, f"Unknown control '{name}'; expected one of {', '.join(CONTROLS)}")
        state = self.system_state
        stopped = state in (STOPPED, RESTARTING)
        reason = ""
        if name == "Start" and (state != STOPPED or self._control_pending("Start")):
            reason = f"Start is only possible when the unit is Stopped (it is {state})"
        elif name in ("Stop", "Restart") and stopped:
            reason = f"{name} is not possible when the unit is {state}"
        elif name in ("Pause", "Unpause", "Hold", "Unhold") and stopped:
            reason = f"{name} is not possible when the unit is {state}"
        elif name == "Pause" and self.paused:
            reason = "The unit is already paused"
        elif name == "Unpause" and not self.paused:
            reason = "The unit is not paused"
        elif name == "Hold" and self.holding:
            reason = "The unit is already on hold"
        elif name == "Unhold" and not self.holding:
            reason = "The unit is not on hold"
        if reason:
            return Outcome(False, reason)
        self.commands.schedule(name, "", None, source="user")
        return ACCEPTED

    def _control_pending(self, name: str) -> bool:
        return any(r.name == name and not r.done for r in self.commands.queue + self.commands.executing)

    def start(self) -> None:
        t, now = self._t, self.clock
        self.started, self.paused, self.holding = True, False, False
        run_id = str(uuid.uuid4())
        t[S.RUN_ID].set_value(run_id, now)
        t[S.SYSTEM_STATE].set_value(RUNNING, now)
        t[S.METHOD_STATUS].set_value("OK", now)
        self.process_micros = self.run_micros = 0
        t[S.PROCESS_TIME].set_value(0.0, now)
        t[S.RUN_TIME].set_value(0.0, now)
        t[S.BLOCK_TIME].set_value(0.0, now)
        t[S.SCOPE_TIME].set_value(0.0, now)
        t[S.MARK].set_value(None, now)  # a run never starts with the previous run's mark
        self.run_log = RunLog(self.run_log.new_id())
        self.line_states = {}
        self.marks = []
        self.interpreter.restart()
        self._emit_hook("on_start", run_id)
        self._emit(ev.RunStarted, run_id)

    def stop(self, restarting: bool = False) -> None:
        """End the run: safe outputs, simulations off, interpreter back to the first line."""
        t, now = self._t, self.clock
        run_id = t[S.RUN_ID].value
        self.paused = self.holding = False
        self._saved_outputs = None
        if not restarting:
            self._apply_safe_values()
        for tag in self.tags:
            tag.stop_simulation()
        t[S.METHOD_STATUS].set_value("OK", now)
        t[S.SYSTEM_STATE].set_value(RESTARTING if restarting else STOPPED, now)
        t[S.RUN_ID].set_value(None, now)
        t[S.BLOCK].set_value(None, now)
        self.interpreter.stop()
        self._emit_hook("on_stop")
        if run_id is not None:
            self._emit(ev.RunStopped, run_id)
        if not restarting:
            self._write_outputs()
        self.started = False

    def shutdown(self) -> None:
        """The engine process is stopping: end a run, drive outputs to their safe values."""
        if self.started:
            self.commands.cancel_all()
            self.stop()
        else:
            self._apply_safe_values()
            self._write_outputs()
        self._emit_hook("on_engine_shutdown")

    def pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        self._t[S.SYSTEM_STATE].set_value(PAUSED, self.clock)
        self._saved_outputs = {tag.name: tag.value for tag, register in self._safe_outputs()}
        self._apply_safe_values()
        self._emit_hook("on_runstate_change", "Pause")

    def unpause(self) -> None:
        """Resume; an error that paused the run counts as acknowledged (Method Status OK)."""
        if not self.paused:
            return
        self.paused = False
        self._t[S.SYSTEM_STATE].set_value(HOLDING if self.holding else RUNNING, self.clock)
        self._t[S.METHOD_STATUS].set_value("OK", self.clock)
        for name, value in (self._saved_outputs or {}).items():
            self.tags[name].set_value(value, self.clock)
        self._saved_outputs = None
        self._emit_hook("on_runstate_change", "Unpause")

    def hold(self) -> None:
        self.holding = True
        if not self.paused:
            self._t[S.SYSTEM_STATE].set_value(HOLDING, self.clock)

    def unhold(self) -> None:
        self.holding = False
        if not self.paused:
            self._t[S.SYSTEM_STATE].set_value(RUNNING, self.clock)

    def _safe_outputs(self) -> Iterable[tuple[Tag, Any]]:
        for register, tag in zip(self._write_registers, self._write_tags):
            if register.has_safe_value:
                yield tag, register

    def _apply_safe_values(self) -> None:
        for tag, register in self._safe_outputs():
            tag.set_value(register.safe_value, self.clock)

    def fail(self, error: BaseException, item: RunLogItem | None, prefix: str = "") -> None:
        """Pause the run on an error: Method Status Error, System State Paused."""
        node = getattr(error, "node", None)
        message = prefix + str(error) if str(error) else prefix + type(error).__name__
        t, now = self._t, self.clock
        t[S.METHOD_STATUS].set_value("Error", now)
        t[S.SYSTEM_STATE].set_value(PAUSED, now)
        self.paused = True
        if item is not None and item.running:
            self.end_item(item, ItemState.FAILED)
        line = node.line if node is not None else (item.line if item is not None else None)
        self.last_error = f"line {line}: {message}" if line else message
        if node is not None:
            self.set_line_state(node.id, node.line, LineState.FAILED)
        self._emit(ev.ErrorRaised, line, message)
        self._emit_hook("on_method_error", error)

    # -- method, injection, cancel, force ----------------------------------------------------

    def set_method(self, source: str | Iterable[str] | Iterable[tuple[str, str]],
                   base_version: int | None = None) -> Outcome:
        """Load a new method, or a new version of the running one (live edit).

        ``base_version`` is the version the author edited; when another save came in between,
        the save is refused as a conflict instead of merged silently.
        """
        if base_version is not None and base_version != self.method_version:
            return Outcome(False, f"The method was changed by someone else (version {self.method_version}, "
                                  f"you edited version {base_version}); reload it and apply your change again")
        method = parse(source)
        if method.errors:
            listed = "; ".join(str(e) for e in method.errors[:10])
            more = f" (and {len(method.errors) - 10} more)" if len(method.errors) > 10 else ""
            return Outcome(False, f"The method has {len(method.errors)} error(s): {listed}{more}")
        live = self.started
        if live:
            problem = self.interpreter.merge(method)
            if problem:
                return Outcome(False, problem)
            if self.method_status == "Error":
                self._t[S.METHOD_STATUS].set_value("OK", self.clock)
        else:
            self.interpreter = Interpreter(self, method)
        self.method = method
        self.method_version += 1
        self._emit(ev.MethodChanged, self.method_version, live, len(method.lines))
        self._emit_hook("on_method_edited", live)
        return ACCEPTED

    def analyze(self, method: Method | str) -> list[Diagnostic]:
        """The analyzer's findings for ``method`` on this unit: its tags with their units, its
        commands (with whether each takes an argument) and the units ``Base:`` accepts here."""
        return analyze(method, tags={tag.name: tag.unit for tag in self.tags}, commands=self.uod.commands,
                       base_units=list(self.uod.base_unit_provider))

    def inject(self, code: str) -> Outcome:
        """Run a snippet of P-code now, beside the method (e.g. an operator's command or a
        process value's entry). Code that would fail once it runs - an argument a command
        refuses, a value outside its tag's range, an unknown command or tag - is refused here,
        before anything runs, with the reason: it never pauses the run."""
        method = parse(code)
        if method.errors:
            return Outcome(False, "; ".join(str(e) for e in method.errors))
        if not method.program.children:
            return Outcome(False, "Nothing to run: the code has no instruction")
        if not self.started:
            # A unit command while stopped runs on its own, like a button on the unit.
            for node in method.program.children:
                if node.kind.value != "Command" or node.name not in self.uod.commands:
                    return Outcome(False, f"'{node.display_name}' can only run while a run is started; "
                                          "only unit commands run while the unit is Stopped")
        problem = self.refusal_of(method)
        if problem:
            return Outcome(False, problem)
        if not self.started:
            for node in method.program.children:
                self.commands.schedule(node.name, node.arguments, None, source="user")
            return ACCEPTED
        self.interpreter.inject(method)
        return ACCEPTED

    def refusal_of(self, method: Method) -> str | None:
        """Why injected ``method`` would fail once it runs, or None: the analyzer's errors of
        the kinds in :data:`REFUSED_IN_INJECTION` with their did-you-mean, each with its line
        when the code has several ("PU01: 150 % is not a valid value: expected 0 to 100 %.")."""
        several = sum(1 for node in method.lines if node.text.strip()) > 1
        problems = []
        for d in self.analyze(method):
            if d.severity is Severity.ERROR and d.id in REFUSED_IN_INJECTION:
                hint = f" Did you mean '{d.fixes[0]}'?" if d.fixes and "did you mean" not in d.message.lower() else ""
                problems.append((f"line {d.line}: " if several else "") + d.message + hint)
        return " ".join(problems) or None

    def cancel(self, item_id: int) -> Outcome:
        item = self.run_log.get(item_id)
        if item is None:
            return Outcome(False, f"No run-log item {item_id} in this run")
        if not item.cancellable or not item.running:
            return Outcome(False, f"'{item.name}' cannot be cancelled")
        running = self.commands.find(item_id)
        if running is not None:
            self.commands.cancel(running)
        elif not self.interpreter.cancel(item):
            return Outcome(False, f"'{item.name}' cannot be cancelled")
        item.cancelled = True
        if item.running:
            self.end_item(item, ItemState.CANCELLED)
        return ACCEPTED

    def force(self, item_id: int) -> Outcome:
        item = self.run_log.get(item_id)
        if item is None:
            return Outcome(False, f"No run-log item {item_id} in this run")
        if not item.forcible or not item.running:
            return Outcome(False, f"'{item.name}' cannot be forced")
        if not self.interpreter.force(item):
            return Outcome(False, f"'{item.name}' cannot be forced")
        item.forced = True
        item.forcible = False
        item.cancellable = False
        self.touch_item(item)
        return ACCEPTED

    # -- services for the interpreter and the command manager --------------------------------

    def new_item(self, node: Node | None, name: str, *, cancellable: bool = False,
                 forcible: bool = False, instruction: str | None = None, arguments: str = "") -> RunLogItem:
        item = RunLogItem(self.run_log.new_id(), node.id if node else None, node.line if node else None, name,
                          instruction if instruction is not None else (node.name if node else name),
                          node.arguments if node else arguments, self.clock,
                          cancellable=cancellable, forcible=forcible, tag_names=self.tags.names,
                          start_snapshot=self.tags.snapshot())
        self.run_log.add(item)
        self.touch_item(item)
        return item

    def end_item(self, item: RunLogItem, state: ItemState) -> None:
        if not item.running:
            return
        item.state = state
        item.end = self.clock
        if state is ItemState.COMPLETED and item.progress is not None:
            item.progress = 1.0
        item.cancellable = item.forcible = False
        item.cancelled = item.cancelled or state is ItemState.CANCELLED
        item.end_snapshot = self.tags.snapshot()
        self.touch_item(item)
        if item.line_id is not None:  # the line's state follows its latest instance
            self.set_line_state(item.line_id, item.line,
                                LineState.FAILED if state is ItemState.FAILED else LineState.EXECUTED)

    def touch_item(self, item: RunLogItem) -> None:
        if self.events is not None:
            self.events.append(ev.RunLogChanged(
                self.tick_number, self.clock, self.process_time, item.id, item.line, item.instruction,
                item.arguments, item.state.value, item.progress, item.cancellable, item.forcible,
                item.cancelled, item.forced, item.start, item.end, item.start_values, item.end_values))

    def set_line_state(self, line_id: str, line: int, state: LineState) -> None:
        if self.line_states.get(line_id) is state:
            return
        self.line_states[line_id] = state
        if self.events is not None:
            self._emit(ev.LineStateChanged, line_id, line, state.value)

    def emit_log(self, level: str, message: str, line: int | None = None) -> None:
        self._emit(ev.LogMessage, level, message, line)

    def notify(self, text: str) -> None:
        self._emit(ev.Notified, text)
        self._emit_hook("on_notify_command", text)

    def method_ended(self) -> None:
        self._emit(ev.MethodEnded)
        self._emit_hook("on_method_end")

    def block_changed(self, started: str | None, ended: str | None, current: str | None) -> None:
        self._t[S.BLOCK].set_value(current, self.clock)
        if started is not None:
            self._emit_hook("on_block_start", started, self.clock)
        if ended is not None:
            self._emit_hook("on_block_end", ended, current)

    def duration_argument(self, name: str, argument: str) -> int | None:
        """The optional duration of Pause/Hold in microseconds; raises MethodError on anything else."""
        if not argument:
            return None
        duration = parse_duration(argument)
        if duration is None:
            raise MethodError(f"{name}: '{argument}' is not a duration; expected e.g. '{name}: 30 s' "
                              "(units s, min, h)")
        return duration

    def schedule(self, node: Node, item: RunLogItem | None) -> None:
        self.commands.schedule(node.name, node.arguments, item)

    # Thresholds: a line's position on its scope's timeline, in the current Base unit.

    def _build_timelines(self) -> dict[str, tuple[str, Any]]:
        """Base unit -> (monotonic tag whose increase is the timeline, threshold -> position).

        A threshold's line runs once the timeline has increased by at least the position since
        its scope started (see :meth:`position`). Time units measure Process Time in whole
        microseconds; it stands still while paused or on hold, so a threshold never counts time
        in which the method did not run.
        """
        timelines: dict[str, tuple[str, Any]] = {}
        for unit, (main_tag, _block_tag) in self.uod.base_unit_provider.items():
            if unit in TIME_UNITS:
                factor = TIME_UNITS[unit]
                timelines[unit] = (S.PROCESS_TIME, (lambda v, f=factor: micros(v * f)))
            elif main_tag in self.tags:
                tag_unit = self.tags[main_tag].unit
                convert = units.converter(unit, tag_unit) if tag_unit and tag_unit != unit else (lambda v: v)
                timelines[unit] = (main_tag, (lambda v, c=convert: c(v) - MEASURED_TOLERANCE))
        return timelines

    def position(self, timeline: str) -> float:
        """Where the timeline tag ``timeline`` is now: Process Time in microseconds, else its value."""
        if timeline == S.PROCESS_TIME:
            return self.process_micros
        return self.tags[timeline].get_value() or 0.0

    def timeline(self, base: str) -> tuple[str, Any]:
        try:
            return self._timeline_tags[base]
        except KeyError:
            known = ", ".join(self._timeline_tags)
            raise MethodError(f"Base unit '{base}' is not available on this unit; it offers {known}") from None

    # -- internals -------------------------------------------------------------------------

    def _emit(self, cls: type, *fields: Any) -> None:
        if self.events is not None:
            self.events.append(cls(self.tick_number, self.clock, self.process_time, *fields))

    def _emit_hook(self, hook: str, *args: Any) -> None:
        for listener in self._listeners[hook]:
            try:
                getattr(listener, hook)(*args)
            except Exception as error:  # a UOD tag's hook must not break the scan cycle
                self.emit_log("warning", f"Tag '{getattr(listener, 'name', listener)}' failed in {hook}: {error}")


__all__ = ["Engine", "Outcome", "MethodError"]
