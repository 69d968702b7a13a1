"""What the engine core reports: a closed catalogue of typed events.

The core appends events to ``Engine.events`` (when recording is on) in the order they happen;
the caller drains them with ``Engine.take_events()`` after each tick. Every event carries the
tick number and the tick time (clock seconds) and the run's process time in seconds.
``as_dict`` gives the JSON form used by ``pectus-engine simulate --events`` (see docs/simulate.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class EngineEvent:
    kind: ClassVar[str] = ""
    tick: int
    time: float
    process_time: float

    def as_dict(self) -> dict[str, Any]:
        data = {"event": self.kind}
        data.update(asdict(self))
        return data


@dataclass(frozen=True, slots=True)
class TagChanged(EngineEvent):
    kind: ClassVar[str] = "tag"
    name: str
    value: Any
    unit: str | None
    simulated: bool = False


@dataclass(frozen=True, slots=True)
class StateChanged(EngineEvent):
    """System State or Method Status changed."""

    kind: ClassVar[str] = "state"
    system_state: str
    method_status: str


@dataclass(frozen=True, slots=True)
class RunLogChanged(EngineEvent):
    kind: ClassVar[str] = "runlog"
    id: int
    line: int | None
    instruction: str
    arguments: str
    state: str
    progress: float | None
    cancellable: bool
    forcible: bool
    cancelled: bool
    forced: bool
    start: float | None = None
    end: float | None = None
    start_values: dict[str, Any] | None = None  # every tag when the item started
    end_values: dict[str, Any] | None = None  # and when it ended


@dataclass(frozen=True, slots=True)
class LineStateChanged(EngineEvent):
    kind: ClassVar[str] = "line"
    line_id: str
    line: int
    state: str


@dataclass(frozen=True, slots=True)
class ErrorRaised(EngineEvent):
    """The run paused on an error (Method Status Error)."""

    kind: ClassVar[str] = "error"
    line: int | None
    message: str


@dataclass(frozen=True, slots=True)
class LogMessage(EngineEvent):
    """Info/Warning/Error instructions and warnings worth an operator's attention."""

    kind: ClassVar[str] = "log"
    level: str
    message: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Notified(EngineEvent):
    kind: ClassVar[str] = "notify"
    text: str


@dataclass(frozen=True, slots=True)
class RunStarted(EngineEvent):
    kind: ClassVar[str] = "run_started"
    run_id: str


@dataclass(frozen=True, slots=True)
class RunStopped(EngineEvent):
    kind: ClassVar[str] = "run_stopped"
    run_id: str


@dataclass(frozen=True, slots=True)
class MethodEnded(EngineEvent):
    """The main line reached the last line; the run goes on (alarms, appended lines)."""

    kind: ClassVar[str] = "method_end"


@dataclass(frozen=True, slots=True)
class MethodChanged(EngineEvent):
    kind: ClassVar[str] = "method"
    version: int
    live: bool
    lines: int


@dataclass(frozen=True, slots=True)
class DiagnosticReported(EngineEvent):
    """A finding of the static analysis of a method that was loaded."""

    kind: ClassVar[str] = "diagnostic"
    line: int
    severity: str
    id: str
    message: str
