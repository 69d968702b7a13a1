"""The run log and the method state: what happened to each instruction of a run.

Each time an instruction runs it gets an *instance* with a unique id; an Alarm that fires three
times or a macro called twice gives three or two instances of the same lines. The run log shows
one item per instance; the method state shows, per line, the state of its latest instance.

Invariants:

* an item is created when its instruction starts; an instruction that is only waiting for its
  threshold has no item yet (it is not shown, as in Open Pectus);
* an item ends exactly once: ``completed``, ``cancelled`` or ``failed``; ``forced`` marks an item
  that a user forced (it then completes); after the end it is neither cancellable nor forcible;
* items are in start order (instance ids increase with time).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ItemState(StrEnum):
    STARTED = "started"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class LineState(StrEnum):
    STARTED = "started"
    EXECUTED = "executed"
    FAILED = "failed"


@dataclass(slots=True, eq=False)
class RunLogItem:
    """One execution of one instruction (or one user command)."""

    id: int
    line_id: str | None
    line: int | None
    name: str
    instruction: str
    arguments: str
    start: float
    state: ItemState = ItemState.STARTED
    end: float | None = None
    progress: float | None = None
    cancellable: bool = False
    forcible: bool = False
    cancelled: bool = False
    forced: bool = False
    tag_names: tuple[str, ...] = ()
    start_snapshot: tuple[Any, ...] = ()
    end_snapshot: tuple[Any, ...] | None = None

    @property
    def start_values(self) -> dict[str, Any]:
        """Tag name -> value when the item started (snapshots are tuples: cheap to take)."""
        return dict(zip(self.tag_names, self.start_snapshot))

    @property
    def end_values(self) -> dict[str, Any] | None:
        return None if self.end_snapshot is None else dict(zip(self.tag_names, self.end_snapshot))

    @property
    def running(self) -> bool:
        return self.state is ItemState.STARTED

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "line_id": self.line_id, "line": self.line, "name": self.name,
            "instruction": self.instruction, "arguments": self.arguments, "state": self.state.value,
            "start": self.start, "end": self.end, "progress": self.progress,
            "cancellable": self.cancellable, "forcible": self.forcible,
            "cancelled": self.cancelled, "forced": self.forced,
        }


class RunLog:
    """The items of the current run, by instance id, in start order."""

    __slots__ = ("items", "_next_id")

    def __init__(self, first_id: int = 1) -> None:
        self.items: dict[int, RunLogItem] = {}
        self._next_id = first_id

    def new_id(self) -> int:
        instance_id = self._next_id
        self._next_id += 1
        return instance_id

    def add(self, item: RunLogItem) -> RunLogItem:
        self.items[item.id] = item
        return item

    def get(self, instance_id: int) -> RunLogItem | None:
        return self.items.get(instance_id)

    def __iter__(self):
        return iter(self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def running(self) -> list[RunLogItem]:
        return [item for item in self.items.values() if item.running]
