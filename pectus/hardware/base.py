"""The hardware interface the engine core sees: registers, read a batch, write a batch.

A *register* is one value in the equipment (an OPC-UA node, a serial instrument's reading, a
simulated signal). Its name ties it to the UOD tag of the same name: every readable register
feeds that tag each tick, every writable register is written from it.

Two kinds of implementation:

* drivers of real equipment (OPC-UA, serial, ...) do blocking I/O. The engine's hardware actor
  calls them from a worker thread, one call at a time, and the engine core reads and writes a
  process image instead (``pectus.actors.hardware``). Every call must end within its timeout and
  every failure is a :class:`HardwareError`;
* in-memory hardware (simulated, null) does no I/O and is called by the core directly, once per
  tick, so it must return at once.
"""

from __future__ import annotations

from enum import Flag
from typing import Any, Callable, Sequence


class HardwareError(Exception):
    """Reading or writing the equipment failed. The message says which register and why."""


HardwareLayerException = HardwareError  # the Open Pectus name, for ported UODs


class RegisterDirection(Flag):
    Read = 1
    Write = 2
    Both = Read | Write


class Register:
    """A named hardware value. ``options`` are driver-specific (``path`` for OPC-UA...) plus:

    * ``to_tag``: raw value -> tag value, applied after every read;
    * ``from_tag``: tag value -> raw value, applied before every write;
    * ``safe_value``: for writable registers, the value the output takes at engine start, on
      Pause (restored on Unpause) and on Stop.
    """

    __slots__ = ("name", "direction", "options")

    def __init__(self, name: str, direction: RegisterDirection = RegisterDirection.Read, **options: Any):
        if not isinstance(name, str) or not name.strip():
            raise ValueError("A register needs a non-empty name")
        self.name = name
        self.direction = direction
        self.options = options

    @property
    def readable(self) -> bool:
        return bool(self.direction & RegisterDirection.Read)

    @property
    def writable(self) -> bool:
        return bool(self.direction & RegisterDirection.Write)

    @property
    def to_tag(self) -> Callable[[Any], Any] | None:
        return self.options.get("to_tag")

    @property
    def from_tag(self) -> Callable[[Any], Any] | None:
        return self.options.get("from_tag")

    @property
    def has_safe_value(self) -> bool:
        return "safe_value" in self.options

    @property
    def safe_value(self) -> Any:
        return self.options.get("safe_value")

    def __repr__(self) -> str:
        return f"<Register {self.name} {self.direction.name}>"


class HardwareLayerBase:
    """Base of every hardware driver. Subclasses override ``read``/``write`` or the batch calls."""

    def __init__(self) -> None:
        self.registers: dict[str, Register] = {}
        self._is_connected = False

    @property
    def is_connected(self) -> bool:
        return self._is_connected

    @property
    def connection_status(self) -> str:
        """The ``Connection Status`` tag's value: Connected or Disconnected."""
        return "Connected" if self.is_connected else "Disconnected"

    def connect(self) -> None:
        self._is_connected = True

    def disconnect(self) -> None:
        self._is_connected = False

    def tick(self, tick_time: float, increment_time: float) -> None:
        """Housekeeping once per tick, before the read (a simulation advances its model here)."""

    def read(self, register: Register) -> Any:
        raise NotImplementedError(f"{type(self).__name__} cannot read register '{register.name}'")

    def write(self, value: Any, register: Register) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot write register '{register.name}'")

    def read_batch(self, registers: Sequence[Register]) -> list[Any]:
        return [self.read(r) for r in registers]

    def write_batch(self, values: Sequence[Any], registers: Sequence[Register]) -> None:
        for value, register in zip(values, registers):
            self.write(value, register)

    def validate_offline(self) -> None:
        """Check the register options before connecting; raise HardwareError with a clear message."""

    def validate_online(self) -> None:
        """Check the registers against the connected equipment."""

    @property
    def description(self) -> str:
        """The driver as a person reads it on a run's record: its name and what it talks to
        ("OPCUAHardware at opc.tcp://plc:4840"). No live state: the record keeps this text for
        good, and the connection's state has a tag of its own (Connection Status)."""
        return type(self).__name__

    def __str__(self) -> str:
        # Messages name the driver; a UOD's own class without a __str__ is named by its class.
        return type(self).__name__


class NullHardware(HardwareLayerBase):
    """No equipment: reads give None, writes are dropped; always connected. For tests and dry runs."""

    def __init__(self) -> None:
        super().__init__()
        self._is_connected = True

    def read(self, register: Register) -> Any:
        return None

    def write(self, value: Any, register: Register) -> None:
        pass
