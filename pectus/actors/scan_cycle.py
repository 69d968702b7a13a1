"""ScanCycle: the engine's heartbeat - one tick every 0.1 s, on deadlines.

Each tick: apply the requests that arrived since the last tick (run controls, method saves,
injections, cancel/force - in arrival order), advance the engine core one tick (read the
process image, step the method, run commands, write outputs), hand the tick's events to the
event sinks, and ask each hardware actor to exchange the next image.

Timing invariants:

* tick *k* is due at ``start + k * interval`` (``trio.sleep_until``): lateness never accumulates;
* a tick that starts late runs at once (never skipped silently); when the scan fell behind by more
  than a whole interval, the missed deadlines are counted, logged (at most every 10 s), and the
  schedule resumes at the next future deadline instead of running a burst of catch-up ticks;
* the engine's time tags advance by the real time between ticks, so a late tick still counts time
  right; ``stats`` keeps the measured intervals for benchmarks.

The interpreter lives in the engine core and steps inside the tick, so there is no separate
MethodRunner actor: method requests are messages to this actor, applied between ticks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import trio

from pectus.actors.core import Actor, RateLimitedLog, Reply
from pectus.actors.hardware import HardwareActor, Poll
from pectus.pcode.engine import Engine, Outcome
from pectus.pcode.events import EngineEvent

log = logging.getLogger("pectus.engine.scan")


# -- the requests this actor accepts (a closed catalogue) --------------------------------------
# Each knows what it does to the engine (``apply``); the answer goes back through ``reply``.

@dataclass(frozen=True, slots=True)
class Control:
    name: str
    reply: Reply[Outcome]

    def apply(self, engine: Engine) -> Outcome:
        return engine.execute_control(self.name)


@dataclass(frozen=True, slots=True)
class SaveMethod:
    text: str | list[tuple[str, str]]  # the text, or the editor's (line id, text) pairs
    base_version: int | None
    reply: Reply[Outcome]

    def apply(self, engine: Engine) -> Outcome:
        return engine.set_method(self.text, self.base_version)


@dataclass(frozen=True, slots=True)
class Inject:
    code: str
    reply: Reply[Outcome]

    def apply(self, engine: Engine) -> Outcome:
        return engine.inject(self.code)


@dataclass(frozen=True, slots=True)
class Cancel:
    item_id: int
    reply: Reply[Outcome]

    def apply(self, engine: Engine) -> Outcome:
        return engine.cancel(self.item_id)


@dataclass(frozen=True, slots=True)
class Force:
    item_id: int
    reply: Reply[Outcome]

    def apply(self, engine: Engine) -> Outcome:
        return engine.force(self.item_id)


@dataclass(frozen=True, slots=True)
class Inspect:
    """Run ``query(engine)`` between ticks and reply with its result (read-only use)."""

    query: Callable[[Engine], Any]
    reply: Reply[Any]

    def apply(self, engine: Engine) -> Any:
        return self.query(engine)


Request = Union[Control, SaveMethod, Inject, Cancel, Force, Inspect]


@dataclass
class ScanStats:
    """Measured tick intervals (seconds) and tick durations, for benchmarks and health."""

    intervals: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    late_ticks: int = 0
    keep: int = 100_000

    def add(self, interval: float | None, duration: float) -> None:
        if interval is not None:
            self.intervals.append(interval)
        self.durations.append(duration)
        if len(self.durations) > self.keep:
            del self.intervals[: self.keep // 2]
            del self.durations[: self.keep // 2]


class ScanCycle(Actor[Request]):
    def __init__(self, engine: Engine, hardware: list[HardwareActor], *, interval: float = 0.1,
                 sinks: list[Callable[[list[EngineEvent]], None]] | None = None,
                 wall_clock: Callable[[], float] = time.time, path: str = "engine/scan") -> None:
        super().__init__(path, capacity=256)
        self.engine = engine
        self.hardware = hardware
        self.interval = interval
        self.sinks = sinks or []
        self.wall_clock = wall_clock
        self.stats = ScanStats()
        self._late = RateLimitedLog(log)

    async def run(self) -> None:
        interval = self.interval
        start = trio.current_time()
        previous: float | None = None
        k = 0
        while True:
            await trio.sleep_until(start + k * interval)
            began = trio.current_time()
            self._apply_requests()
            self._tick(began, previous)
            self.stats.add(None if previous is None else began - previous, trio.current_time() - began)
            previous = began
            k += 1
            now = trio.current_time()
            missed = int((now - (start + k * interval)) // interval)
            if missed > 0:  # fell behind by whole ticks: resume on schedule, no burst of catch-up ticks
                self.stats.late_ticks += missed
                self._late(logging.WARNING, f"scan cycle overran: {missed} tick deadline(s) missed "
                                            f"(the tick took {(now - began) * 1000:.0f} ms)", now)
                k += missed

    def _tick(self, now: float, previous: float | None) -> None:
        engine = self.engine
        engine.tick(self.wall_clock(), 0.0 if previous is None else now - previous)
        events = engine.take_events()
        if events:
            for sink in self.sinks:
                sink(events)
        for actor in self.hardware:
            actor.offer(Poll(now))  # dropped while the previous exchange still runs

    def _apply_requests(self) -> None:
        engine = self.engine
        while True:
            try:
                request = self.inbox.receive_nowait()
            except trio.WouldBlock:
                return
            try:
                request.reply.set(request.apply(engine))
            except Exception as error:  # a bad request must not stop the scan
                request.reply.fail(error)
