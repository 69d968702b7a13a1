"""The command manager: commands that run beside the method, one step per tick.

Unit (UOD) commands and the engine's run controls (Pause, Hold, Stop, ...) are *scheduled*: the
method goes on with its next line while the command runs in the background, tick by tick, until
it completes, is cancelled or fails.

Invariants:

* at most one running instance per command name: a new request replaces (cancels) the running
  one, and so does a request for a command in the same overlap group of the UOD;
* every instance ends exactly once, and ``finalize`` of a UOD command runs exactly once;
* a failing command puts the engine in the error state (the run pauses) and is marked failed;
* requests scheduled in a tick first run in that same tick, newest first (as Open Pectus).
"""

from __future__ import annotations

from typing import Any

from pectus.pcode.context import RunContext
from pectus.pcode.runlog import ItemState, RunLogItem

#: Run controls the engine implements itself.
CONTROLS = ("Start", "Stop", "Pause", "Unpause", "Hold", "Unhold", "Restart")


class CommandError(Exception):
    """A command could not run; the message is for the operator."""


class Running:
    """One scheduled command instance."""

    __slots__ = ("name", "argument", "item", "uod", "started", "ends_at", "overlaps", "done", "source")

    def __init__(self, name: str, argument: str, item: RunLogItem | None, source: str):
        self.name = name
        self.argument = argument
        self.item = item
        self.source = source
        self.uod: Any = None  # the UodCommand of a unit command
        self.started = False
        # Pause/Hold with a duration: the Run Time (µs) it ends at; Restart: set once it stopped the unit
        self.ends_at: int | None = None
        self.overlaps: frozenset[str] = frozenset()
        self.done = False


class CommandManager:
    __slots__ = ("engine", "queue", "executing", "_overlap")

    def __init__(self, engine: RunContext):
        self.engine = engine
        self.queue: list[Running] = []
        self.executing: list[Running] = []
        overlap: dict[str, frozenset[str]] = {}
        for group in engine.uod.overlapping_command_names_lists:
            for name in group:
                overlap[name] = overlap.get(name, frozenset()) | (frozenset(group) - {name})
        self._overlap = overlap

    def schedule(self, name: str, argument: str, item: RunLogItem | None, source: str = "method") -> Running:
        running = Running(name, argument, item, source)
        running.overlaps = self._overlap.get(name, frozenset())
        self.queue.append(running)
        return running

    def find(self, item_id: int) -> Running | None:
        for running in self.queue + self.executing:
            if running.item is not None and running.item.id == item_id and not running.done:
                return running
        return None

    def tick(self) -> None:
        if self.queue:
            self.queue.reverse()
            self.executing[:0] = self.queue
            self.queue = []
        if not self.executing:
            return
        for running in list(self.executing):
            if running.done:
                continue
            try:
                self._step(running)
            except Exception as error:  # a command's failure must never stop the scan cycle
                self._end(running, ItemState.FAILED)
                self.engine.fail(error, running.item, prefix=f"Command '{running.name}' failed: ")
        self.executing = [r for r in self.executing if not r.done]

    def cancel(self, running: Running) -> None:
        """Cancel a running instance: its own cancel logic runs (unpause, unhold, finalize)."""
        if running.done:
            return
        if running.name == "Pause" and running.started:
            self.engine.unpause()
        elif running.name == "Hold" and running.started:
            self.engine.unhold()
        self._end(running, ItemState.CANCELLED)

    def cancel_all(self, keep: Running | None = None) -> None:
        for running in self.queue + self.executing:
            if running is not keep:
                self.cancel(running)
        self.queue = []

    def _end(self, running: Running, state: ItemState) -> None:
        running.done = True
        if running.uod is not None:
            if state is ItemState.CANCELLED:
                running.uod.cancel()
            try:
                running.uod.finalize()
            finally:
                running.uod = None
        if running.item is not None:
            self.engine.end_item(running.item, state)

    def _step(self, running: Running) -> None:
        engine = self.engine
        name = running.name
        if name in engine.uod.commands:
            self._step_unit_command(running)
            return
        if not running.started:
            running.started = True
            if running.item is not None:
                engine.touch_item(running.item)
        if name == "Pause" or name == "Hold":
            self._step_pause_hold(running)
        elif name == "Unpause":
            engine.unpause()
            self._end(running, ItemState.COMPLETED)
        elif name == "Unhold":
            engine.unhold()
            self._end(running, ItemState.COMPLETED)
        elif name == "Stop":
            self.cancel_all(keep=running)
            self._end(running, ItemState.COMPLETED)
            engine.stop()
        elif name == "Restart":
            self._step_restart(running)
        elif name == "Start":
            engine.start()
            self._end(running, ItemState.COMPLETED)
        else:
            raise CommandError(f"Unknown command '{name}'")

    def _step_pause_hold(self, running: Running) -> None:
        engine = self.engine
        if running.ends_at is None:
            duration = engine.duration_argument(running.name, running.argument)
            if running.name == "Pause":
                engine.pause()
            else:
                engine.hold()
            if duration is None:
                self._end(running, ItemState.COMPLETED)
                return
            # Run Time goes on while paused or on hold, and is exact (unlike the wall clock, which
            # can also jump): the pause lasts the duration written, to the microsecond.
            running.ends_at = engine.run_micros + duration
            return
        if engine.run_micros >= running.ends_at:
            if running.name == "Pause":
                engine.unpause()
            else:
                engine.unhold()
            self._end(running, ItemState.COMPLETED)

    def _step_restart(self, running: Running) -> None:
        engine = self.engine
        if running.ends_at is None:
            running.ends_at = engine.run_micros  # stopped now: start again in the next tick
            self.cancel_all(keep=running)
            engine.stop(restarting=True)
            return
        running.done = True
        engine.start()

    def _step_unit_command(self, running: Running) -> None:
        engine = self.engine
        definition = engine.uod.commands[running.name]
        hardware = engine.uod.hwl
        if not hardware.is_connected:
            raise CommandError(f"The unit's hardware is not available ({hardware.connection_status}); "
                               f"'{running.name}' cannot run until the connection is back")
        if not running.started:
            for other in self.executing:
                if other is not running and not other.done and (
                        other.name == running.name or other.name in running.overlaps):
                    self.cancel(other)
        arguments = definition.parse(running.argument)
        if arguments is None:
            raise CommandError(f"Invalid arguments for command '{running.name}': "
                               f"{definition.problem(running.argument)}")
        if running.uod is None:
            running.uod = definition.create(engine.uod, running.item.id if running.item else 0, clock=engine.now)
            running.uod.initialize()
        if not running.started:
            running.started = True
            if running.item is not None:
                engine.touch_item(running.item)
        command = running.uod
        command.execute(arguments)
        if command.is_complete():
            self._end(running, ItemState.COMPLETED)
        elif running.item is not None:
            progress = command.progress
            if progress != running.item.progress:
                running.item.progress = progress
                engine.touch_item(running.item)
