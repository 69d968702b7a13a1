"""Simulated hardware: registers held in a dict, advanced by a physics model.

Subclass :class:`SimulatedHardware` and override :meth:`~SimulatedHardware.step` to model a
unit: read the outputs the engine wrote (``self.values["PU01"]``) and update the inputs it will
read (``self.values["FT01"]``). The demo UOD (``uods/demo_uod.py``) is an example.

Invariants:

* deterministic: the model advances only by the ``increment_time`` the engine passes to
  :meth:`~SimulatedHardware.tick`, never by reading a clock, so a simulated run is repeatable
  and a 10-hour method can run in seconds;
* reads return the current values (``None`` for a value never set), writes store them; reading a
  register that is not readable, writing one that is not writable, or any I/O while disconnected
  raises :class:`~pectus.hardware.base.HardwareError`, as a real driver would;
* connected from the start (there is nothing to connect to); ``disconnect()`` simulates a lost
  connection until ``connect()``;
* cheap: the batch calls cost one set lookup and one dict access per register.
"""

from __future__ import annotations

from typing import Any, Sequence

from pectus.hardware.base import HardwareError, HardwareLayerBase, Register, RegisterDirection


class SimulatedHardware(HardwareLayerBase):
    """A unit simulated in memory. ``values`` maps register name -> current raw value."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._is_connected = True
        self.values: dict[str, Any] = dict(values or {})
        #: Simulated seconds: the sum of every tick's increment_time.
        self.elapsed = 0.0
        # Register names already checked for each kind of access; cleared on disconnect.
        self._readable: set[str] = set()
        self._writable: set[str] = set()

    def disconnect(self) -> None:
        super().disconnect()
        self._readable.clear()
        self._writable.clear()

    def tick(self, tick_time: float, increment_time: float) -> None:
        """Advance the model by ``increment_time`` seconds (0 on the engine's first tick)."""
        self.elapsed += increment_time
        self.step(increment_time)

    def step(self, dt: float) -> None:
        """The physics of one tick: update ``self.values`` for ``dt`` seconds. Override this."""

    def read(self, register: Register) -> Any:
        if register.name not in self._readable:
            self._allow(register, RegisterDirection.Read)
        return self.values.get(register.name)

    def write(self, value: Any, register: Register) -> None:
        if register.name not in self._writable:
            self._allow(register, RegisterDirection.Write)
        self.values[register.name] = value

    def read_batch(self, registers: Sequence[Register]) -> list[Any]:
        readable, values = self._readable, self.values
        for register in registers:
            if register.name not in readable:
                self._allow(register, RegisterDirection.Read)
        return [values.get(register.name) for register in registers]

    def write_batch(self, values: Sequence[Any], registers: Sequence[Register]) -> None:
        writable = self._writable
        for value, register in zip(values, registers):
            if register.name not in writable:
                self._allow(register, RegisterDirection.Write)
            self.values[register.name] = value

    def _allow(self, register: Register, access: RegisterDirection) -> None:
        """Check an access the first time it is made (the checks cost more than the I/O)."""
        verb = "read" if access is RegisterDirection.Read else "write"
        if not self._is_connected:
            raise HardwareError(f"{type(self).__name__}: cannot {verb} '{register.name}': not connected")
        if not register.direction & access:
            raise HardwareError(f"{type(self).__name__}: cannot {verb} register '{register.name}': "
                                f"its direction is {register.direction.name}")
        (self._readable if access is RegisterDirection.Read else self._writable).add(register.name)

    @property
    def description(self) -> str:
        return f"{type(self).__name__} (simulated)"

    def __str__(self) -> str:
        return f"{type(self).__name__}(is_connected={self._is_connected}, elapsed={self.elapsed:.1f} s)"
