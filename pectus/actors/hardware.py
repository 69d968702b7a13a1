"""HardwareActor: one connection to real equipment, kept alive by error recovery.

The connection itself - process image, recovery, what one poll does - is sans-I/O
(:class:`pectus.hardware.connection.Connection`); this actor runs it in the engine process: told
by the scan cycle once per tick (:class:`Poll`), it makes the poll's blocking driver calls in a
worker thread, with the driver's own timeouts. So the scan cycle never waits for the equipment.

Invariants:

* at most one driver call runs at a time (one poll in flight; a poll that arrives while one runs
  is dropped, and that tick reuses the previous image);
* a broken connection is logged at most once per 10 s (with a count), not once per tick;
* the driver is disconnected when the actor stops, also when it is cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import trio

from pectus.actors.core import Actor, RateLimitedLog, Reply
from pectus.hardware.base import HardwareLayerBase
from pectus.hardware.connection import Connection, ProcessImage
from pectus.hardware.recovery import RecoveryConfig, State, Transition

__all__ = ["Flush", "HardwareActor", "Poll", "ProcessImage"]

log = logging.getLogger("pectus.engine.hardware")


@dataclass(frozen=True, slots=True)
class Poll:
    """Write pending outputs, then read the next image. ``now`` is the scan's monotonic time."""

    now: float


@dataclass(frozen=True, slots=True)
class Flush:
    """Write pending outputs now and reply when done (at shutdown: the safe values)."""

    reply: Reply[bool]


class HardwareActor(Actor[Poll | Flush]):
    """Owns one driver's connection. Blocking driver calls run in a worker thread."""

    def __init__(self, driver: HardwareLayerBase, path: str, *, config: RecoveryConfig | None = None,
                 on_transition: Callable[[Transition], None] | None = None) -> None:
        super().__init__(path, capacity=2)  # one poll in flight at most; the scan drops the rest
        self.connection = Connection(driver, config, on_transition=self._note, on_failure=self._failed)
        self.recovery = self.connection.recovery
        self.image = self.connection.image
        self.driver = driver
        self.on_transition = on_transition
        self._broken = RateLimitedLog(log)

    async def run(self) -> None:
        try:
            async for message in self.inbox:
                if isinstance(message, Flush):
                    if self.recovery.does_io:
                        await self._poll(trio.current_time())
                    message.reply.set(not self.image.pending)
                else:
                    await self._poll(message.now)
        finally:
            with trio.CancelScope(shield=True):
                error = await trio.to_thread.run_sync(self.connection.disconnect_quietly)
                if error is not None:
                    log.info("%s: disconnect: %s", self.path, error)

    async def _poll(self, now: float) -> None:
        """Run one poll of the connection, each driver call in a worker thread."""
        steps = self.connection.poll(now, trio.current_time)
        try:
            call = next(steps)
            while True:
                try:
                    result = await trio.to_thread.run_sync(call)
                except Exception as error:
                    call = steps.throw(error)
                else:
                    call = steps.send(result)
        except StopIteration:
            pass

    def _failed(self, message: str, now: float) -> None:
        self._broken(logging.WARNING, f"{self.path}: {message}", now)

    def _note(self, transition: Transition) -> None:
        level = logging.INFO if transition.new is State.OK else logging.WARNING
        log.log(level, "%s: %s", self.path, transition)
        if self.on_transition is not None:
            self.on_transition(transition)
