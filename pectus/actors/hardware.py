"""HardwareActor: one connection to real equipment, kept alive by error recovery.

The engine core reads and writes hardware synchronously, once per tick; real equipment answers
in milliseconds or not at all. The two meet in a :class:`ProcessImage`: the core reads the last
values the actor read and leaves its writes there; the actor, told by the scan cycle once per
tick (:class:`Poll`), writes what changed and reads the next image in a worker thread, with the
driver's own timeouts. So the scan cycle never waits for the equipment, and the values a tick
sees are those of the previous scan - as in a PLC.

Invariants:

* at most one driver call runs at a time (one poll in flight; a poll that arrives while one runs
  is dropped, and that tick reuses the previous image);
* writes are kept until the equipment took them: a failed write is retried on the next poll, the
  latest value per register wins;
* a broken connection is logged at most once per 10 s (with a count), not once per tick;
* the driver is disconnected when the actor stops, also when it is cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import trio

from pectus.actors.core import Actor, RateLimitedLog, Reply
from pectus.hardware.base import HardwareError, HardwareLayerBase, Register
from pectus.hardware.recovery import Recovery, RecoveryConfig, State, Transition

log = logging.getLogger("pectus.engine.hardware")


@dataclass(frozen=True, slots=True)
class Poll:
    """Write pending outputs, then read the next image. ``now`` is the scan's monotonic time."""

    now: float


@dataclass(frozen=True, slots=True)
class Flush:
    """Write pending outputs now and reply when done (at shutdown: the safe values)."""

    reply: Reply[bool]


class ProcessImage(HardwareLayerBase):
    """What the engine core sees of a connection: the last values read, writes to be done.

    Custom methods of the driver (``hwl.reset_FT01()`` in a UOD command) are forwarded to it;
    they run in the scan cycle, so they must return at once.
    """

    def __init__(self, driver: HardwareLayerBase, recovery: Recovery) -> None:
        super().__init__()
        self.driver = driver
        self.registers = driver.registers
        self.recovery = recovery
        self.values: dict[str, Any] = {}
        self.pending: dict[str, tuple[Register, Any]] = {}

    @property
    def is_connected(self) -> bool:
        return self.recovery.does_io

    @property
    def connection_status(self) -> str:
        return self.recovery.connection_status

    def _check(self) -> None:
        if self.recovery.state in (State.ERROR, State.DISCONNECTED):
            raise HardwareError(f"{self.driver} is disconnected ({self.recovery.state})")

    def read_batch(self, registers: Sequence[Register]) -> list[Any]:
        self._check()
        values, pending = self.values, self.pending
        if not pending:
            return [values.get(register.name) for register in registers]
        # A register that is also written reads back what the engine wrote until the write is
        # done: the image was read before the write, and its old value would flip the tag back.
        return [pending[r.name][1] if r.name in pending else values.get(r.name) for r in registers]

    def write_batch(self, values: Sequence[Any], registers: Sequence[Register]) -> None:
        self._check()
        for value, register in zip(values, registers):
            self.pending[register.name] = (register, value)

    def __getattr__(self, name: str) -> Any:
        # Only called for names ProcessImage does not have: the driver's own methods.
        return getattr(self.__dict__["driver"], name)

    def __str__(self) -> str:
        return f"{self.driver} [{self.recovery.state}]"


class HardwareActor(Actor[Poll | Flush]):
    """Owns one driver and its recovery. Blocking driver calls run in a worker thread."""

    def __init__(self, driver: HardwareLayerBase, path: str, *, config: RecoveryConfig | None = None,
                 on_transition: Callable[[Transition], None] | None = None) -> None:
        super().__init__(path, capacity=2)  # one poll in flight at most; the scan drops the rest
        # Disconnected until the first poll connects: a unit can start while its equipment is away.
        self.recovery = Recovery(config, now=0.0, connected=False)
        self.image = ProcessImage(driver, self.recovery)
        self.driver = driver
        self.on_transition = on_transition
        self._broken = RateLimitedLog(log)
        self._readable = [r for r in driver.registers.values() if r.readable]

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
                await trio.to_thread.run_sync(self._disconnect_quietly)

    async def _poll(self, now: float) -> None:
        recovery = self.recovery
        self._note(recovery.tick(now))
        if recovery.reconnect_due(now):
            await self._reconnect(now)
            return
        if not recovery.does_io:
            return
        pending = dict(self.image.pending)
        try:
            values = await trio.to_thread.run_sync(self._exchange, list(pending.values()))
        except HardwareError as error:
            self._broken(logging.WARNING, f"{self.path}: {error}", now)
            self._note(recovery.failed(trio.current_time(), str(error)))
            return
        for name, entry in pending.items():
            if self.image.pending.get(name) is entry:
                del self.image.pending[name]  # written, and not changed again meanwhile
        self.image.values = dict(zip((r.name for r in self._readable), values))
        self._note(recovery.succeeded(trio.current_time()))

    def _exchange(self, writes: list[tuple[Register, Any]]) -> list[Any]:
        """Worker thread: write the outputs (already converted by from_tag), then read the inputs."""
        if writes:
            self.driver.write_batch([value for _, value in writes], [register for register, _ in writes])
        return self.driver.read_batch(self._readable) if self._readable else []

    async def _reconnect(self, now: float) -> None:
        try:
            await trio.to_thread.run_sync(self._connect)
        except HardwareError as error:
            self._broken(logging.WARNING, f"{self.path}: reconnect failed: {error}", now)
            self.recovery.reconnect_failed(trio.current_time())
            return
        self._note(self.recovery.reconnected(trio.current_time()))

    def _connect(self) -> None:
        self._disconnect_quietly()
        try:
            self.driver.connect()
        except HardwareError:
            raise
        except Exception as error:  # a driver's own exception types are its business
            raise HardwareError(f"connecting {self.driver} failed: {error}") from error

    def _disconnect_quietly(self) -> None:
        try:
            if self.driver.is_connected:
                self.driver.disconnect()
        except Exception as error:  # disconnecting a broken connection may fail; it is gone anyway
            log.info("%s: disconnect: %s", self.path, error)

    def _note(self, transition: Transition | None) -> None:
        if transition is None:
            return
        level = logging.INFO if transition.new is State.OK else logging.WARNING
        log.log(level, "%s: %s", self.path, transition)
        if self.on_transition is not None:
            self.on_transition(transition)

