"""A connection to equipment as the engine keeps it: driver, error recovery and process image.

The engine core reads and writes hardware synchronously, once per tick; real equipment answers
in milliseconds or not at all. The two meet in a :class:`ProcessImage`: the core reads the last
values that were read and leaves its writes there; once per tick, after the core's tick,
:meth:`Connection.poll` writes what changed and reads the next image - or, when the recovery
state machine (``pectus.hardware.recovery``) says so, (re)connects. So the values a tick sees are
those of the previous scan, as in a PLC.

This module does no I/O itself (sans-I/O, as the recovery state machine): :meth:`Connection.poll`
is a generator that *yields* each blocking driver call instead of making it. Whoever runs it
makes the call and sends the result back (or throws the call's exception in):

* the engine's hardware actor (``pectus.actors.hardware``) runs each call in a worker thread;
* the simulator (``pectus.testing``, ``pectus-engine simulate``) runs it inline with
  :func:`poll_inline`, on a virtual clock.

So a UOD's own hardware class is connected, polled and recovered the same way in both.

Invariants:

* a driver is connected by the first poll (the image is Disconnected until then, and reads and
  writes of the core fail); after that, one poll makes at most one driver exchange: the
  driver's ``tick(now, seconds since the previous exchange)`` (its housekeeping, once per
  exchange), then write the pending outputs, then read every readable register;
* writes are kept until the equipment took them: a failed write is retried on the next poll,
  the latest value per register wins;
* any exception of a driver call is a :class:`~pectus.hardware.base.HardwareError` to recovery
  (a driver's own exception types are its business): it is reported with the recovery meaning
  (OK -> Issue: the last good values are used; Reconnect; Error: the run pauses), never raised
  into the scan.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Generator, Iterator, Sequence

from pectus.hardware.base import HardwareError, HardwareLayerBase, NullHardware, Register
from pectus.hardware.composite import CompositeHardware
from pectus.hardware.recovery import Recovery, RecoveryConfig, State, Transition
from pectus.hardware.simulated import SimulatedHardware

#: One blocking driver call, made by whoever runs a poll.
DriverCall = Callable[[], Any]
PollSteps = Generator[DriverCall, Any, None]


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

    @property
    def description(self) -> str:
        return self.driver.description

    def __str__(self) -> str:
        return f"{self.driver} [{self.recovery.state}]"


class Connection:
    """One driver kept alive by error recovery; the core reads and writes its :attr:`image`.

    ``on_transition`` hears every recovery transition; ``on_failure(message, now)`` every failed
    driver call (the caller decides how often to log them).
    """

    def __init__(self, driver: HardwareLayerBase, config: RecoveryConfig | None = None, *,
                 on_transition: Callable[[Transition], None] | None = None,
                 on_failure: Callable[[str, float], None] | None = None) -> None:
        self.driver = driver
        # Disconnected until the first poll connects: a unit can start while its equipment is away.
        self.recovery = Recovery(config, now=0.0, connected=False)
        self.image = ProcessImage(driver, self.recovery)
        self.on_transition = on_transition
        self.on_failure = on_failure
        self._readable = [r for r in driver.registers.values() if r.readable]
        self._last_exchange: float | None = None

    def poll(self, now: float, clock: Callable[[], float]) -> PollSteps:
        """Write the pending outputs and read the next image, or (re)connect when that is due.

        ``now`` is the scan's time, ``clock`` gives the time after a driver call (both in
        monotonic seconds). Yields the driver calls to make; see the module's docstring.
        """
        recovery = self.recovery
        self._note(recovery.tick(now))
        if recovery.reconnect_due(now):
            try:
                yield self._connect
            except HardwareError as error:
                self._fail(f"reconnect failed: {error}", now)
                recovery.reconnect_failed(clock())
                return
            self._note(recovery.reconnected(clock()))
            return
        if not recovery.does_io:
            return
        pending = dict(self.image.pending)
        increment = 0.0 if self._last_exchange is None else now - self._last_exchange
        self._last_exchange = now
        try:
            values = yield partial(self._exchange, list(pending.values()), now, increment)
        except HardwareError as error:
            self._fail(str(error), now)
            self._note(recovery.failed(clock(), str(error)))
            return
        for name, entry in pending.items():
            if self.image.pending.get(name) is entry:
                del self.image.pending[name]  # written, and not changed again meanwhile
        self.image.values = dict(zip((r.name for r in self._readable), values))
        self._note(recovery.succeeded(clock()))

    def _exchange(self, writes: list[tuple[Register, Any]], now: float, increment: float) -> list[Any]:
        """A driver call: tick, write the outputs (already converted by from_tag), read the inputs."""
        with _as_hardware_error(f"{self.driver}"):
            self.driver.tick(now, increment)
            if writes:
                self.driver.write_batch([value for _, value in writes], [register for register, _ in writes])
            return self.driver.read_batch(self._readable) if self._readable else []

    def _connect(self) -> None:
        """A driver call: connect afresh."""
        self.disconnect_quietly()
        with _as_hardware_error(f"connecting {self.driver} failed"):
            self.driver.connect()

    def disconnect_quietly(self) -> str | None:
        """A driver call: disconnect if connected. Returns the error, if any: the link is gone anyway."""
        try:
            if self.driver.is_connected:
                self.driver.disconnect()
        except Exception as error:  # disconnecting a broken connection may fail
            return f"{type(error).__name__}: {error}"
        return None

    def _fail(self, message: str, now: float) -> None:
        if self.on_failure is not None:
            self.on_failure(message, now)

    def _note(self, transition: Transition | None) -> None:
        if transition is not None and self.on_transition is not None:
            self.on_transition(transition)


@contextmanager
def _as_hardware_error(where: str) -> Iterator[None]:
    """Turn a driver's own exception into a HardwareError that says where it came from."""
    try:
        yield
    except HardwareError:
        raise
    except Exception as error:
        raise HardwareError(f"{where}: {type(error).__name__}: {error}") from error


def poll_inline(steps: PollSteps) -> None:
    """Run a poll's driver calls here and now (the simulator; in-memory drivers)."""
    try:
        call = next(steps)
        while True:
            try:
                result = call()
            except Exception as error:
                call = steps.throw(error)
            else:
                call = steps.send(result)
    except StopIteration:
        pass


def runs_inline(driver: HardwareLayerBase) -> bool:
    """Simulated and null hardware do no I/O: the core calls them inside the tick, no connection."""
    return isinstance(driver, (SimulatedHardware, NullHardware))


def per_connection(driver: HardwareLayerBase,
                   connect: Callable[[HardwareLayerBase], Connection]) -> HardwareLayerBase:
    """What the core uses instead of ``driver``: the image of a connection per device.

    ``connect(device)`` makes the connection of one device. A composite keeps its shape, but each
    of its devices gets a connection of its own, so one device that fails does not take the
    others' values (or recovery) with it. In-memory devices stay as they are.
    """
    if runs_inline(driver):
        return driver
    if not isinstance(driver, CompositeHardware):
        return connect(driver).image
    driver.assign_registers()
    replaced = {id(device): per_connection(device, connect) for device in driver.devices}
    composite = CompositeHardware()
    for name, register in driver.registers.items():
        device = replaced[id(register.options["hardware"])]
        composite.registers[name] = Register(name, register.direction, **{**register.options, "hardware": device})
    composite.connect()  # connects nothing: its devices are images and in-memory hardware
    return composite
