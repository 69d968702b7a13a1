"""The interpreter: runs a parsed method, one step per tick, in a run context (the engine).

Execution model. A *thread* runs a list of *frames*; a frame is a position in the body of a
container (the program, a Block, a Macro called, the body of a Watch/Alarm that fired, injected
code). The main line is one thread; every Watch/Alarm that fires and every injection gets its own.
Each tick the main thread steps first, then the registered Watches/Alarms and injections in
registration order. A step executes at most one instruction; lines waiting for their threshold,
a running Wait, a Block waiting for the block lock and a Block whose body has run out (it waits
for ``End block``) hold their thread.

Invariants:

* a line runs only when every line before it in its scope has run (or was abandoned by the end of
  its block); a line that has run never runs again, also after a live edit;
* a frame's position refers to the current line by id, so a live edit that keeps every started
  line keeps every thread where it is and picks up appended lines;
* thresholds are positions on the timeline of the innermost scope (program, Block, activated
  Watch/Alarm body, injection), in the current Base unit; time timelines stand still while the
  run is paused or on hold, and times are whole microseconds (:mod:`pectus.pcode.timing`);
* at most one Block (with its enclosing Blocks) is active at a time: a Block in a Watch body
  waits for the main line's Block to end, as in Open Pectus.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

from pectus.pcode import units
from pectus.pcode.context import MethodError, RunContext
from pectus.pcode.diagnostics import closest
from pectus.pcode.runlog import ItemState, LineState, RunLogItem
from pectus.pcode.syntax import Kind, Method, Node
from pectus.pcode.tags import SystemTagName as S, is_number
from pectus.pcode.timing import micros, parse_duration, seconds

_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
            "=": operator.eq, "==": operator.eq, "!=": operator.ne}
_SCHEDULED = frozenset({Kind.PAUSE, Kind.HOLD, Kind.UNPAUSE, Kind.UNHOLD, Kind.STOP, Kind.RESTART})
_NO_ARGUMENT = frozenset({Kind.END_BLOCK, Kind.END_BLOCKS, Kind.STOP, Kind.RESTART, Kind.UNPAUSE,
                          Kind.UNHOLD, Kind.INCREMENT_RUN_COUNTER})
# Run-log flags per kind: (cancellable, forcible). Unit commands are cancellable while running.
_FLAGS = {Kind.WATCH: (True, True), Kind.ALARM: (True, True), Kind.WAIT: (False, True),
          Kind.COMMAND: (True, False)}

# Outcomes of executing one instruction.
DONE, HELD, ENTERED, FREE = range(4)


class Frame:
    __slots__ = ("node", "index", "scope", "starts", "item", "pending", "threshold_ok", "skip", "wait")

    def __init__(self, node: Node, scope: str | None, starts: dict[str, float], item: RunLogItem | None):
        self.node = node  # the container whose body this frame runs
        self.index = 0  # the body line in progress (or next)
        self.scope = scope  # None for a macro body: it runs in its caller's scope
        self.starts = starts  # timeline positions when the scope started (Engine.position)
        self.item = item  # the run-log item of the container's instance
        self.pending: Any = None  # state of the line in progress (Wait start, its item...)
        self.threshold_ok = False
        self.skip: tuple[str, str] | None = None  # (id, text) of a failed line to skip on Unpause
        self.wait: tuple[int, int] | None = None  # (start, duration) of a running Wait, in µs


class Thread:
    __slots__ = ("frames", "interrupt", "alive")

    def __init__(self, frames: list[Frame], interrupt: "Interrupt | None" = None):
        self.frames = frames
        self.interrupt = interrupt
        self.alive = True


class Interrupt:
    """A registered Watch or Alarm: evaluated every tick until it fires."""

    __slots__ = ("node", "item", "thread", "blocks", "forced", "check", "runs", "active")

    def __init__(self, node: Node, item: RunLogItem, blocks: tuple[str, ...]):
        self.node = node
        self.item = item
        self.thread: Thread | None = None
        self.blocks = blocks  # ids of the active blocks when registered: their end unregisters it
        self.forced = False
        self.check: Callable[[], bool] | None = None
        self.runs = 0
        self.active = True


class Interpreter:
    def __init__(self, engine: RunContext, method: Method):
        self.engine = engine
        self.method = method
        self.restart()

    # -- life cycle ----------------------------------------------------------------------

    def restart(self) -> None:
        """Back to the first line, nothing registered (Start)."""
        root = Frame(self.method.program, "Program", self._snapshot(), None)
        self.main = Thread([root])
        self.interrupts: list[Interrupt] = []
        self.injected: list[Thread] = []
        self.blocks: list[tuple[Node, Frame, Thread]] = []
        self.scopes: list[Frame] = [root]
        self.macros: dict[str, Node] = {}
        self.called: set[str] = set()
        self.finished: set[str] = set()  # ids of containers whose body will not run again
        self.ended = False
        self._next_injected = -1
        self._failing_item: RunLogItem | None = None  # the run-log item of a line that failed this tick

    def stop(self) -> None:
        self.restart()

    def block_start(self) -> int:
        """The Process Time (µs) at which the innermost active block (or the program) started."""
        frame = self.blocks[-1][1] if self.blocks else self.main.frames[0]
        return frame.starts.get(S.PROCESS_TIME, 0)

    def scope_start(self) -> int:
        """The Process Time (µs) at which the innermost scope started."""
        return self.scopes[-1].starts.get(S.PROCESS_TIME, 0) if self.scopes else 0

    def _snapshot(self) -> dict[str, float]:
        position = self.engine.position
        return {name: position(name) for name in self.engine.timeline_names}

    # -- the tick ------------------------------------------------------------------------

    def tick(self) -> None:
        engine = self.engine
        try:
            self._step(self.main)
            for interrupt in list(self.interrupts):  # a body may end or unregister others meanwhile
                if engine.paused:
                    break
                if not interrupt.active:
                    continue
                if interrupt.thread is None:
                    self._evaluate(interrupt)
                else:
                    self._step(interrupt.thread)
            for thread in list(self.injected):
                if engine.paused:
                    break
                self._step(thread)
            self.injected = [t for t in self.injected if t.alive]
        except MethodError as error:
            engine.fail(error, self._failing_item)
        self._failing_item = None

    def _step(self, thread: Thread) -> None:
        while thread.alive and not self.engine.paused:
            frame = thread.frames[-1]
            children = frame.node.children
            if frame.index >= len(children):
                if not self._end_of_body(thread, frame):
                    return
                continue
            node = children[frame.index]
            if frame.skip is not None:
                if frame.skip == (node.id, node.text):
                    self._advance(frame)
                    continue
                frame.skip = None
            if node.threshold is not None and not frame.threshold_ok:
                if not self._threshold_reached(node, frame):
                    return
                frame.threshold_ok = True
            try:
                outcome = self._execute(node, frame, thread)
            except (MethodError, units.UnitError) as error:
                frame.skip = (node.id, node.text)
                if not isinstance(error, MethodError):
                    error = MethodError(str(error), node)
                error.node = error.node or node
                # A line that fails before it started still gets its (failed) run-log item.
                pending = frame.pending
                self._failing_item = pending if isinstance(pending, RunLogItem) else self.engine.new_item(
                    node, node.display_name)
                raise error from None
            if outcome == DONE:
                self._advance(frame)
                return
            if outcome == FREE:
                self._advance(frame)
                continue
            return  # HELD or ENTERED: the instruction used this tick's step

    @staticmethod
    def _advance(frame: Frame) -> None:
        frame.index += 1
        frame.pending = None
        frame.wait = None
        frame.threshold_ok = False

    def _threshold_reached(self, node: Node, frame: Frame) -> bool:
        engine = self.engine
        name, position = engine.timeline(engine.tags[S.BASE].value)
        return engine.position(name) - frame.starts.get(name, 0) >= position(node.threshold)

    def _end_of_body(self, thread: Thread, frame: Frame) -> bool:
        """The frame's body ran out. True when the thread goes on in the same step."""
        scope = frame.scope
        if scope == "Program":
            if not self.ended:
                self.ended = True
                self.engine.method_ended()
            return False
        if scope == "Block":
            return False  # a Block ends only by End block / End blocks
        thread.frames.pop()
        self._leave_scope(frame)
        if thread.frames:  # a macro body: its Call macro line is done
            caller = thread.frames[-1]
            self._complete(caller.node.children[caller.index], frame.item)
            self._advance(caller)
            return True
        self._complete(frame.node, frame.item)
        thread.alive = False
        interrupt = thread.interrupt
        if interrupt is not None:
            if interrupt.node.kind is Kind.ALARM:
                interrupt.thread = None  # re-armed: the next invocation is a new instance
                interrupt.item = self.engine.new_item(interrupt.node, interrupt.node.display_name,
                                                      cancellable=True, forcible=True)
                self.engine.set_line_state(interrupt.node.id, interrupt.node.line, LineState.STARTED)
            else:
                self._unregister(interrupt)
                self.finished.add(interrupt.node.id)
        return False

    # -- instructions ----------------------------------------------------------------------

    def _execute(self, node: Node, frame: Frame, thread: Thread) -> int:
        kind = node.kind
        engine = self.engine
        if kind is Kind.WAIT:
            return self._wait(node, frame)
        if kind is Kind.BLOCK:
            return self._block(node, frame, thread)
        if kind is Kind.CALL_MACRO:
            return self._call_macro(node, frame, thread)
        if kind is Kind.COMMAND:
            if node.name not in engine.uod.commands:
                known = list(engine.uod.commands)
                hint = closest(node.name, known + ["Mark", "Block", "Watch", "Wait", "End block"])
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                raise MethodError(f"Invalid instruction '{node.name}'{suggestion}", node)
            engine.schedule(node, self._start_item(node, frame))
            return DONE
        if kind in _SCHEDULED:
            if kind in _NO_ARGUMENT and node.arguments:
                raise MethodError(f"'{node.name}' takes no argument (found '{node.arguments}')", node)
            if kind is Kind.PAUSE or kind is Kind.HOLD:
                engine.duration_argument(node.name, node.arguments)  # reject a bad duration now
                cancellable = bool(node.arguments)
            else:
                cancellable = False
            if kind is Kind.STOP:  # not shown in the run log, as in Open Pectus
                engine.set_line_state(node.id, node.line, LineState.EXECUTED)
                engine.schedule(node, None)
                return DONE
            item = self._start_item(node, frame)
            item.cancellable = cancellable
            engine.schedule(node, item)
            return DONE
        if kind is Kind.WATCH or kind is Kind.ALARM:
            item = self._start_item(node, frame)
            self.interrupts.append(Interrupt(node, item, tuple(b[0].id for b in self.blocks)))
            return DONE
        if kind is Kind.INVALID:
            raise MethodError(f"'{node.text.strip()}' is not an instruction", node)
        # Instructions that complete at once.
        item = self._start_item(node, frame)
        if kind is Kind.END_BLOCK or kind is Kind.END_BLOCKS:
            self._no_argument(node)
            self._complete(node, item)  # before the block's end abandons what is pending in it
            frame.pending = None
            for _ in range(1 if kind is Kind.END_BLOCK else len(self.blocks)):
                if self.blocks:
                    self._end_block(thread)
            return DONE
        frame.pending = item
        self._run_simple(node, kind)
        self._complete(node, item)
        return DONE

    def _start_item(self, node: Node, frame: Frame) -> RunLogItem:
        cancellable, forcible = _FLAGS.get(node.kind, (False, False))
        item = self.engine.new_item(node, node.display_name, cancellable=cancellable, forcible=forcible)
        frame.pending = item
        self.engine.set_line_state(node.id, node.line, LineState.STARTED)
        return item

    def _complete(self, node: Node, item: RunLogItem | None) -> None:
        """The line is done; its state follows its run-log item (see Engine.end_item)."""
        if item is not None:
            self.engine.end_item(item, ItemState.COMPLETED)

    def _run_simple(self, node: Node, kind: Kind) -> None:
        engine = self.engine
        tags = engine.tags
        now = engine.clock
        argument = node.arguments
        if kind is Kind.MARK:
            # The tag holds the current mark; the history is the run log (a tag that grew with every
            # mark made every record that carries it grow with the run).
            tags[S.MARK].set_value(argument, now)
            engine.marks.append(argument)
        elif kind is Kind.BASE:
            engine.timeline(argument)
            tags[S.BASE].set_value(argument, now)
        elif kind is Kind.INCREMENT_RUN_COUNTER:
            self._no_argument(node)
            counter = tags[S.RUN_COUNTER]
            counter.set_value(counter.value + 1, now)
        elif kind is Kind.RUN_COUNTER:
            if not argument.isdigit():
                raise MethodError(f"Run counter: '{argument}' is not a whole number of 0 or more", node)
            tags[S.RUN_COUNTER].set_value(int(argument), now)
        elif kind is Kind.MACRO:
            if not argument:
                raise MethodError("A macro needs a name, e.g. 'Macro: Rinse'", node)
            self.macros[argument] = node
        elif kind is Kind.BATCH:
            tags[S.BATCH_NAME].set_value(argument, now)
        elif kind is Kind.NOTIFY:
            engine.notify(argument)
        elif kind is Kind.INFO or kind is Kind.WARNING or kind is Kind.ERROR:
            engine.emit_log(kind.value.lower(), argument, node.line)
        elif kind is Kind.SIMULATE:
            self._simulate(node)
        elif kind is Kind.SIMULATE_OFF:
            self._tag(argument, node).stop_simulation()
        else:  # pragma: no cover - every kind is handled above
            raise MethodError(f"Cannot run '{node.name}'", node)

    @staticmethod
    def _no_argument(node: Node) -> None:
        if node.arguments:
            raise MethodError(f"'{node.name}' takes no argument (found '{node.arguments}')", node)

    def _tag(self, name: str, node: Node):
        tag = self.engine.tags.get(name)
        if tag is None:
            hint = closest(name, self.engine.tags.names)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
            raise MethodError(f"Unknown tag '{name}'{suggestion}", node)
        return tag

    def _simulate(self, node: Node) -> None:
        condition = node.condition
        tag = self._tag(condition.tag, node)
        now = self.engine.clock
        if condition.is_numeric and (condition.unit or tag.unit):
            try:
                tag.simulate_value_and_unit(condition.value, condition.unit, now)
            except ValueError as error:
                raise MethodError(str(error), node) from None
        elif condition.is_numeric and isinstance(tag.value, int) and condition.value.is_integer():
            tag.simulate_value(int(condition.value), now)
        else:
            tag.simulate_value(condition.value, now)

    def _wait(self, node: Node, frame: Frame) -> int:
        engine = self.engine
        if frame.wait is None:
            duration = parse_duration(node.arguments)
            if duration is None:
                raise MethodError(f"Wait: '{node.arguments}' is not a duration; expected e.g. 'Wait: 30 s' "
                                  "(units s, min, h)", node)
            self._start_item(node, frame)
            frame.wait = (engine.process_micros, duration)
        item = frame.pending
        if item.forced:
            self._complete(node, item)
            return FREE
        start, duration = frame.wait
        elapsed = engine.process_micros - start
        if elapsed >= duration:
            self._complete(node, item)
            return FREE
        progress = round(elapsed / duration, 2)
        if progress != item.progress:
            item.progress = progress
            engine.touch_item(item)
        return HELD

    def _block(self, node: Node, frame: Frame, thread: Thread) -> int:
        ancestors = set()
        parent = node.parent
        while parent is not None:
            ancestors.add(id(parent))
            parent = parent.parent
        if any(id(active) not in ancestors for active, _, _ in self.blocks):
            return HELD  # another block holds the lock; try again next tick
        item = self._start_item(node, frame)
        body = Frame(node, "Block", self._snapshot(), item)
        thread.frames.append(body)
        self.scopes.append(body)
        self.blocks.append((node, body, thread))
        self.engine.block_changed(node.arguments, None, node.arguments)
        return ENTERED

    def _end_block(self, ender: Thread) -> None:
        """End the innermost active block. Work of the thread that ended it (``ender``) counts as
        completed; everything else still going on inside the block is cut short (cancelled)."""
        node, frame, owner = self.blocks.pop()
        position = owner.frames.index(frame)
        for abandoned in owner.frames[position + 1:]:
            self._abandon(abandoned, owner is ender)
        self._abandon_pending(frame)
        del owner.frames[position:]
        self._leave_scope(frame)
        self._complete(node, frame.item)
        self.finished.add(node.id)
        self._advance(owner.frames[-1])
        for interrupt in [i for i in self.interrupts if node.id in i.blocks]:
            self._unregister(interrupt)
            done = interrupt.thread is ender
            if interrupt.thread is not None:
                interrupt.thread.alive = False
                for abandoned in interrupt.thread.frames[1:]:
                    self._abandon(abandoned, done)
                self._leave_scope(interrupt.thread.frames[0])
                self._abandon_pending(interrupt.thread.frames[0])
            self.engine.end_item(interrupt.item, ItemState.COMPLETED if done else ItemState.CANCELLED)
        current = self.blocks[-1][0].arguments if self.blocks else None
        self.engine.block_changed(None, node.arguments, current)

    def _unregister(self, interrupt: Interrupt) -> None:
        interrupt.active = False
        self.interrupts.remove(interrupt)

    def _abandon(self, frame: Frame, completed: bool) -> None:
        """A frame cut short by the end of its block."""
        self._abandon_pending(frame)
        self._leave_scope(frame)
        if frame.item is not None:
            self.engine.end_item(frame.item, ItemState.COMPLETED if completed else ItemState.CANCELLED)

    def _abandon_pending(self, frame: Frame) -> None:
        if isinstance(frame.pending, RunLogItem):
            self.engine.end_item(frame.pending, ItemState.CANCELLED)
        frame.pending = None

    def _leave_scope(self, frame: Frame) -> None:
        if frame.scope is not None and frame in self.scopes:
            self.scopes.remove(frame)

    def _call_macro(self, node: Node, frame: Frame, thread: Thread) -> int:
        name = node.arguments
        macro = self.macros.get(name)
        if macro is None:
            available = ", ".join(f'"{m}"' for m in self.macros) or "none"
            raise MethodError(f'No macro named "{name}" is defined at this point. Defined macros: {available}', node)
        cycle = self._macro_cycle(name)
        if cycle:
            raise MethodError(f'Macro "{name}" calls itself ({" -> ".join(cycle)}); recursion is not allowed',
                              node)
        item = self._start_item(node, frame)
        self.called.add(name)
        thread.frames.append(Frame(macro, None, frame.starts, item))
        return ENTERED

    def _macro_cycle(self, start: str) -> list[str]:
        """The call path from macro ``start`` back to itself, or [] when there is none."""
        def calls(name: str) -> list[str]:
            macro = self.macros.get(name)
            if macro is None:
                return []
            return [n.arguments for n in macro.walk() if n.kind is Kind.CALL_MACRO]

        stack: list[tuple[str, list[str]]] = [(start, [start])]
        seen: set[str] = set()
        while stack:
            name, path = stack.pop()
            for callee in calls(name):
                if callee == start:
                    return path + [callee]
                if callee not in seen:
                    seen.add(callee)
                    stack.append((callee, path + [callee]))
        return []

    # -- watches and alarms ----------------------------------------------------------------

    def _evaluate(self, interrupt: Interrupt) -> None:
        node = interrupt.node
        if not interrupt.forced:
            if interrupt.check is None:
                interrupt.check = self._compile(node)
            try:
                fired = interrupt.check()
            except MethodError:
                raise
            except (TypeError, ValueError) as error:
                raise MethodError(f"Cannot evaluate '{node.display_name}': {error}", node) from None
            if not fired:
                return
        interrupt.forced = False
        interrupt.runs += 1
        item = interrupt.item
        item.cancellable = item.forcible = False
        self.engine.touch_item(item)
        body = Frame(node, node.kind.value, self._snapshot(), item)
        self.scopes.append(body)
        interrupt.thread = Thread([body], interrupt)

    def _compile(self, node: Node) -> Callable[[], bool]:
        """Turn a condition into a fast check; unit conversion is worked out once, here."""
        condition = node.condition
        tag = self._tag(condition.tag, node)
        compare = _COMPARE[condition.op]
        target = condition.value
        if condition.is_numeric:
            if condition.unit or tag.unit:
                try:
                    units.check_comparable(tag.unit, condition.unit)
                except units.UnitError as error:
                    raise MethodError(f"{node.display_name}: {error}", node) from None
                if condition.unit != tag.unit:
                    target = units.convert(target, condition.unit, tag.unit)
                if tag.unit == "s":  # a time: whole microseconds, as the engine counts it
                    target = seconds(micros(target))

            def check() -> bool:
                value = tag.get_value()
                if not is_number(value):
                    if value is None:
                        return False
                    try:
                        value = float(value)
                    except (TypeError, ValueError):
                        raise MethodError(f"{node.display_name}: tag '{tag.name}' has the text value "
                                          f"'{value}', which cannot be compared with a number", node) from None
                return compare(value, target)
            return check
        if condition.op not in ("=", "==", "!="):
            raise MethodError(f"{node.display_name}: '{target}' is text; text can only be compared "
                              "with =, == or !=", node)

        def check_text() -> bool:
            return compare(str(tag.get_value()), target)
        return check_text

    # -- requests from the run log --------------------------------------------------------

    def cancel(self, item: RunLogItem) -> bool:
        for interrupt in self.interrupts:
            if interrupt.item is item and interrupt.thread is None:
                self._unregister(interrupt)
                self.finished.add(interrupt.node.id)
                return True
        return False

    def force(self, item: RunLogItem) -> bool:
        for interrupt in self.interrupts:
            if interrupt.item is item and interrupt.thread is None:
                interrupt.forced = True
                return True
        for thread in self._threads():
            for frame in thread.frames:
                if frame.pending is item and item.instruction == "Wait":
                    return True  # the Wait sees item.forced on its next step
        return False

    def _threads(self) -> list[Thread]:
        threads = [self.main] + self.injected
        threads += [i.thread for i in self.interrupts if i.thread is not None]
        return threads

    # -- injection and live edit ------------------------------------------------------------

    def inject(self, method: Method) -> None:
        """Run injected code in its own thread, beside the main line, from the next tick."""
        program = method.program
        for node in method.lines:
            node.id = str(self._next_injected)
            self._next_injected -= 1
        frame = Frame(program, "Injected", self._snapshot(), None)
        self.scopes.append(frame)
        self.injected.append(Thread([frame]))

    def merge(self, new: Method) -> str | None:
        """Take a new version of the running method; None when merged, else the reason it is refused."""
        engine = self.engine
        old_by_id = {n.id: n for n in self.method.lines}
        new_by_id = {n.id: n for n in new.lines}
        for line_id, state in engine.line_states.items():
            old = old_by_id.get(line_id)
            if old is None or state is LineState.FAILED:
                continue
            changed = new_by_id.get(line_id)
            where = f"Line {old.line} '{old.text.strip()}' has already run"
            if changed is None:
                return f"{where} and cannot be deleted"
            if (changed.kind, changed.instruction, changed.threshold) != (old.kind, old.instruction, old.threshold):
                return f"{where} and cannot be changed"
            if (changed.parent.id if changed.parent else None) != (old.parent.id if old.parent else None):
                return f"{where} and cannot be moved to another block"
        for name in self.called:
            macro = self.macros.get(name)
            changed = new_by_id.get(macro.id) if macro else None
            if changed is None or _body(changed) != _body(macro):
                return f'Macro "{name}" has already been called and cannot be changed or removed'
        new_containers = {n.id: n for n in new.lines if n.children is not None}
        new_containers["root"] = new.program
        frames = [frame for thread in self._threads() for frame in thread.frames]
        positions: list[tuple[Frame, Node, int]] = []
        for frame in frames:
            if frame.scope == "Injected":
                continue
            container = new_containers.get(frame.node.id)
            if container is None:
                return f"Line {frame.node.line} '{frame.node.text.strip()}' is running and cannot be removed"
            index, line = _new_position(frame.node.children, frame.index, container.children)
            if line is not None:
                if any(c.id == line.id for c in frame.node.children):
                    was = old_by_id[line.id].line
                    return (f"Line {was} '{line.text.strip()}' has already run and cannot be moved "
                            f"(the new version has it on line {line.line})")
                return (f"Line {line.line} '{line.text.strip()}' is above the line now running in its block; "
                        "it would never run. Add it below the running line")
            positions.append((frame, container, index))
        for container_id in self.finished:
            old = old_by_id.get(container_id)
            container = new_containers.get(container_id)
            if old is not None and container is not None and old.children is not None:
                old_ids = {c.id for c in old.children}
                added = [c for c in container.children if c.id not in old_ids]
                if added:
                    return (f"Line {added[0].line} '{added[0].text.strip()}' is in '{old.display_name}', "
                            "which has already finished; it would never run")
        # Accepted: rebind every reference to the new nodes; threads keep their places.
        for frame, container, index in positions:
            current = frame.node.children[frame.index] if frame.index < len(frame.node.children) else None
            if current is not None and current.id not in new_by_id:
                frame.pending, frame.wait, frame.threshold_ok = None, None, False
            frame.node = container
            frame.index = index
        for interrupt in self.interrupts:
            interrupt.node = new_by_id.get(interrupt.node.id, interrupt.node)
            interrupt.check = None
        self.blocks = [(new_by_id.get(n.id, n), f, t) for n, f, t in self.blocks]
        self.macros = {name: new_by_id.get(m.id, m) for name, m in self.macros.items()}
        self.method = new
        return None


def _body(node: Node) -> list[tuple[str, str, float | None]]:
    return [(n.id, n.instruction, n.threshold) for n in node.walk()]


def _new_position(old: list[Node], index: int, new: list[Node]) -> tuple[int, Node | None]:
    """Where a frame at ``index`` of ``old`` is in ``new``.

    Returns (position, None), or (0, line) naming a line that makes the edit impossible: a new
    line above the running position (it would never run) or a line that has run and was moved
    (it would run again).
    """
    old_ids = {n.id for n in old}
    where = {n.id: i for i, n in enumerate(new)}
    done = [where[n.id] for n in old[:index] if n.id in where]
    for earlier, later in zip(done, done[1:]):
        if later < earlier:
            return 0, new[earlier]
    current = old[index].id if index < len(old) else None
    position = where[current] if current in where else (done[-1] + 1 if done else 0)
    if done and done[-1] >= position:
        return 0, new[done[-1]]
    for line in new[:position]:
        if line.id not in old_ids:
            return 0, line
    return position, None
