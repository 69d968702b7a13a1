"""The engine process: the actors of one unit under one supervisor.

    engine/scan                 ScanCycle: the 0.1 s tick, owns the engine core and its method
    engine/hardware/<driver>    HardwareActor per connection to real equipment (none for simulated
                                hardware, which runs inside the tick)
    engine/events               EventsFile: writes the engine's events as JSON Lines (--events)
    engine/uplink               Uplink: the durable connection to the aggregator (an event sink of
                                the scan cycle; it sends the users' requests to it)

Shutdown (Ctrl-C, SIGTERM, or :meth:`EngineProcess.stop`): the run is stopped and every output
goes to its safe value, the hardware actors write that out, then every actor is cancelled and the
connections are closed - within 2 s, leaving no task or thread behind.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any, Callable

import trio

from pectus.actors.core import ALWAYS, Actor, ActorTimeout, Restart, ask, supervise
from pectus.actors.hardware import Flush, HardwareActor
from pectus.actors.scan_cycle import Inspect, ScanCycle
from pectus.actors.uplink import Uplink
from pectus.hardware.base import HardwareLayerBase
from pectus.hardware.connection import per_connection
from pectus.hardware.recovery import RecoveryConfig
from pectus.pcode.engine import Engine
from pectus.pcode.events import EngineEvent

log = logging.getLogger("pectus.engine")

SHUTDOWN_SECONDS = 2.0


class EventsFile(Actor[list[EngineEvent]]):
    """Appends the engine's events to a JSON Lines file, one batch per tick."""

    def __init__(self, path: Path) -> None:
        super().__init__("engine/events", capacity=1024)
        self.file_path = path
        self.dropped = 0

    def sink(self, events: list[EngineEvent]) -> None:
        if not self.offer(events):  # the disk cannot keep up: count it rather than stall the scan
            self.dropped += len(events)

    async def run(self) -> None:
        async with await trio.open_file(self.file_path, "a", encoding="utf-8") as out:
            async for events in self.inbox:
                await out.write("".join(json.dumps(e.as_dict(), default=str) + "\n" for e in events))
                await out.flush()


class EngineProcess:
    """Builds the actors for a loaded UOD; :meth:`run` runs them until :meth:`stop`."""

    def __init__(self, uod: Any, *, interval: float = 0.1, events_path: Path | None = None,
                 recovery: RecoveryConfig | None = None, uplink: dict[str, Any] | None = None,
                 on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        """``uplink``: the keyword arguments of :class:`~pectus.actors.uplink.Uplink` (``outbox``,
        ``url``, ``engine_id``, ``computer_name``, ``secret``), or None to run stand-alone."""
        self.uod = uod
        self.on_crash = on_crash
        self.hardware: list[HardwareActor] = []
        self._recovery = recovery
        uod.hwl = self._per_connection(uod.hwl)  # the core reads and writes process images
        self.engine = Engine(uod, record_events=True)
        self.events = EventsFile(events_path) if events_path is not None else None
        sinks = [self.events.sink] if self.events is not None else []
        self.scan = ScanCycle(self.engine, self.hardware, interval=interval, sinks=sinks)
        self.uplink = Uplink(self.scan, **uplink) if uplink is not None else None
        if self.uplink is not None:
            self.scan.sinks.append(self.uplink.sink)
        self._cancel: trio.CancelScope | None = None
        self._stopping = False

    def _per_connection(self, driver: HardwareLayerBase) -> HardwareLayerBase:
        """What the core uses instead of ``driver``: a hardware actor's process image per connection."""
        return per_connection(driver, lambda device: self._actor(device).connection)

    def _actor(self, driver: HardwareLayerBase) -> HardwareActor:
        name = type(driver).__name__.lower()
        taken = sum(1 for actor in self.hardware if actor.path.startswith(f"engine/hardware/{name}"))
        actor = HardwareActor(driver, f"engine/hardware/{name}" + (f"-{taken + 1}" if taken else ""),
                              config=self._recovery)
        self.hardware.append(actor)
        return actor

    def add_sink(self, sink: Callable[[list[EngineEvent]], None]) -> None:
        self.scan.sinks.append(sink)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        actors: list[tuple[Actor[Any], Restart]] = [(self.scan, Restart(limit=3, window=60))]
        actors += [(actor, ALWAYS) for actor in self.hardware]
        if self.events is not None:
            actors.append((self.events, Restart(limit=3, window=60)))
        if self.uplink is not None:
            actors.append((self.uplink, ALWAYS))
        with trio.CancelScope() as self._cancel:
            task_status.started()
            await supervise(actors, self.on_crash)

    async def stop(self) -> None:
        """Safe outputs, written out, then cancel everything; at most SHUTDOWN_SECONDS."""
        if self._stopping:
            return
        self._stopping = True
        with trio.move_on_after(SHUTDOWN_SECONDS - 0.5):
            try:
                await ask(self.scan, lambda reply: Inspect(lambda engine: engine.shutdown(), reply), timeout=0.5)
                for actor in self.hardware:
                    await ask(actor, Flush, timeout=1.0)
            except ActorTimeout as error:
                log.warning("shutdown: %s; outputs may not have reached their safe values", error)
        if self._cancel is not None:
            self._cancel.cancel()

    async def run_until_signal(self) -> None:
        """Run; SIGINT or SIGTERM stops cleanly."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.run)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("signal %s: stopping the engine", signal.Signals(signum).name)
                    await self.stop()
                    break
            nursery.cancel_scope.cancel()
