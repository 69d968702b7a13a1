"""The run context: what the interpreter and the command manager may ask of the engine.

The engine owns the interpreter and the command manager; they act on the run through this
interface, which :class:`~pectus.pcode.engine.Engine` implements. So the engine imports them,
and they import only this module: no import cycle, and each side can be read on its own.

Invariant: the interpreter and the command manager change the run only through these members
(tags, run-log items, line states, run controls, events); everything else of the engine is its
own business.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from pectus.pcode.runlog import ItemState, LineState, RunLogItem
from pectus.pcode.syntax import Node
from pectus.pcode.tags import TagTable


class MethodError(Exception):
    """A run-time error of the method; ``node`` is the failing line."""

    def __init__(self, message: str, node: Node | None = None):
        super().__init__(message)
        self.node = node


class RunContext(Protocol):
    """One unit's run, as the interpreter and the command manager see it."""

    uod: Any  # the UnitOperationDefinition: its commands, hardware and overlap groups
    tags: TagTable
    clock: float  # the current tick's time
    paused: bool
    process_micros: int  # Process Time in whole microseconds (pectus.pcode.timing)
    run_micros: int  # Run Time in whole microseconds
    timeline_names: list[str]  # the tags whose positions a scope records when it starts
    line_states: dict[str, LineState]
    marks: list[str]

    def now(self) -> float: ...

    # Timelines of thresholds (Base units)
    def timeline(self, base: str) -> tuple[str, Callable[[float], float]]: ...
    def position(self, timeline: str) -> float: ...

    # The run log and the method state
    def new_item(self, node: Node | None, name: str, *, cancellable: bool = False,
                 forcible: bool = False, instruction: str | None = None, arguments: str = "") -> RunLogItem: ...
    def end_item(self, item: RunLogItem, state: ItemState) -> None: ...
    def touch_item(self, item: RunLogItem) -> None: ...
    def set_line_state(self, line_id: str, line: int, state: LineState) -> None: ...

    # What a method does to the run
    def schedule(self, node: Node, item: RunLogItem | None) -> None: ...
    def duration_argument(self, name: str, argument: str) -> int | None: ...
    def block_changed(self, started: str | None, ended: str | None, current: str | None) -> None: ...
    def notify(self, text: str) -> None: ...
    def emit_log(self, level: str, message: str, line: int | None = None) -> None: ...
    def method_ended(self) -> None: ...
    def fail(self, error: BaseException, item: RunLogItem | None, prefix: str = "") -> None: ...

    # Run controls, as the command manager carries them out
    def start(self) -> None: ...
    def stop(self, restarting: bool = False) -> None: ...
    def pause(self) -> None: ...
    def unpause(self) -> None: ...
    def hold(self) -> None: ...
    def unhold(self) -> None: ...
