"""In-memory hardware in place of a unit's equipment: dry-run any UOD on a laptop.

``pectus-engine simulate --hardware memory`` and ``Simulator(..., hardware="memory")`` replace
the UOD's hardware - OPC-UA, serial, a UOD's own driver class, a composite of them, or a
simulation - by a :class:`MemoryHardware` that holds the same registers in a dict. No device is
contacted and the UOD's driver is never connected or called.

What a register reads, each tick (raw values: the register's ``to_tag`` applies after the read,
as it would to the device's answer):

1. a value *held* by the test (:meth:`MemoryHardware.hold`; ``--set NAME=VALUE``;
   ``Simulator.set_input``), until the engine writes the register;
2. else the register's *simulation*: its option ``simulate``, a function called once per tick
   with this hardware, returning the register's new raw value::

       .with_hardware_register("FT01", RegisterDirection.Read, path="...",
                               simulate=lambda hw: 1.2 * (hw["PU01"] or 0.0))
       .with_hardware_register("TT01", RegisterDirection.Read, path="...",   # first-order lag
                               simulate=lambda hw: hw.get("TT01", 20.0) + hw.dt / 30 * (
                                   60.0 * (hw["HE01"] or 0.0) / 100 - hw.get("TT01", 20.0)))

   ``hw[name]`` is a register's current raw value (None when it has none), ``hw.get(name,
   default)`` the same with a default, ``hw.dt`` the tick's length and ``hw.elapsed`` the seconds
   since the first tick. Simulations run in register order, so each sees this tick's values of
   the registers declared before it. The option is ignored by every real driver;
3. else the last value written by the engine (what is written reads back);
4. else the value it started with: the UOD tag's initial value (through ``from_tag`` when the
   register has one; None when only ``to_tag`` is given, as it cannot be inverted).

Invariants: always connected; no I/O (it is a :class:`~pectus.hardware.simulated.SimulatedHardware`,
called inside the tick); deterministic. Methods of the replaced driver that a UOD command calls
(``cmd.context.hwl.reset_FT01()``) are recorded in :attr:`MemoryHardware.calls` and return None:
there is no device for them to act on.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from pectus.hardware.base import HardwareError, HardwareLayerBase, Register
from pectus.hardware.simulated import SimulatedHardware

#: The register option that declares a register's simulation (see the module's docstring).
SIMULATE_OPTION = "simulate"


class MemoryHardware(SimulatedHardware):
    """The registers of ``replaced`` held in memory. ``initial`` maps tag name -> initial tag value."""

    def __init__(self, replaced: HardwareLayerBase, initial: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.replaced = replaced
        self.registers = dict(replaced.registers)
        #: Names whose value the test holds (a write by the engine releases it).
        self.held: set[str] = set()
        #: (method name, args, kwargs) of every call to a method of the replaced driver.
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        #: The length of the current tick in seconds (what a simulation integrates over).
        self.dt = 0.0
        self._simulations: list[tuple[str, Callable[[MemoryHardware], Any]]] = []
        for register in self.registers.values():
            simulate = register.options.get(SIMULATE_OPTION)  # a function: the UOD builder checked it
            if simulate is not None and register.readable:
                self._simulations.append((register.name, simulate))
            elif initial is not None and register.name in initial:
                self.values[register.name] = _raw(register, initial[register.name])

    @classmethod
    def for_unit(cls, uod: Any) -> MemoryHardware:
        """In place of ``uod.hwl``, starting from the initial values of ``uod.tags``."""
        return cls(uod.hwl, {tag.name: tag.value for tag in uod.tags})

    # -- what a test gives --------------------------------------------------------------------

    def hold(self, name: str, value: Any) -> None:
        """Make the input register ``name`` read ``value`` (raw) until the engine writes it."""
        register = self.registers.get(name)
        if register is None:
            raise ValueError(f"'{name}' is not a register of this unit; its registers are "
                           f"{', '.join(sorted(self.registers)) or '(none)'}")
        if not register.readable:
            raise ValueError(f"'{name}' is only written by the engine, never read: give a value to an input "
                           f"(a register with direction Read or Both)")
        self.values[name] = value
        self.held.add(name)

    # -- reading the image --------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        return self.values.get(name)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name)
        return default if value is None else value

    @property
    def simulated(self) -> list[str]:
        """The registers that follow their simulation (not held by the test)."""
        return [name for name, _ in self._simulations if name not in self.held]

    def without_value(self) -> list[str]:
        """The inputs that read None: nothing gives them a value."""
        simulated = set(self.simulated)
        return [r.name for r in self.registers.values()
                if r.readable and self.values.get(r.name) is None and r.name not in simulated]

    def describe(self) -> str:
        """One paragraph for a summary: what replaced what, and where the inputs come from."""
        inputs = sum(1 for r in self.registers.values() if r.readable)
        simulated = len(self.simulated)
        text = (f"Hardware simulated in memory in place of {self.replaced} (no device was contacted): "
                f"{inputs} registers read - {len(self.held)} given a value, {simulated} following the UOD's "
                f"simulation, {inputs - len(self.held) - simulated} holding their initial value or what the "
                f"engine wrote")
        missing = self.without_value()
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            text += f"; without a value: {shown} (give one with --set NAME=VALUE)"
        return text

    # -- the tick -----------------------------------------------------------------------------

    def step(self, dt: float) -> None:
        self.dt = dt
        held, values = self.held, self.values
        for name, simulate in self._simulations:
            if name in held:
                continue
            try:
                values[name] = simulate(self)
            except Exception as error:  # a bug in the UOD's model, reported as a failed read
                raise HardwareError(f"the simulation of register '{name}' failed: "
                                    f"{type(error).__name__}: {error}") from error

    def write_batch(self, values: Any, registers: Any) -> None:
        super().write_batch(values, registers)
        self.held.difference_update(register.name for register in registers)

    def write(self, value: Any, register: Register) -> None:
        self.write_batch([value], [register])

    # -- the replaced driver's own methods ------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only called for names MemoryHardware does not have: a method of the replaced driver.
        replaced = self.__dict__.get("replaced")
        if name.startswith("_") or not callable(getattr(replaced, name, None)):
            raise AttributeError(f"{type(self).__name__} (in place of {replaced}) has no attribute '{name}'")

        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return record

    @property
    def description(self) -> str:
        return f"MemoryHardware (simulated in place of {self.replaced.description})"

    def __str__(self) -> str:
        return f"MemoryHardware(in place of {self.replaced})"


def _raw(register: Register, tag_value: Any) -> Any:
    """The raw value that reads as ``tag_value``; None when it cannot be known."""
    if register.from_tag is not None:
        try:
            return register.from_tag(tag_value)
        except Exception:  # the initial value is no value of the device: the input starts empty
            return None
    return tag_value if register.to_tag is None else None


def parse_value(text: str) -> Any:
    """A ``--set`` value: a number, true/false, or else the text itself (``--set VA01=Open``)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_settings(settings: Iterable[str]) -> dict[str, Any]:
    """``["FT01=12.5", "VA01=Open"]`` -> ``{"FT01": 12.5, "VA01": "Open"}``; ValueError on a bad one."""
    parsed: dict[str, Any] = {}
    for setting in settings:
        name, equals, value = setting.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--set '{setting}': expected NAME=VALUE, e.g. --set FT01=12.5")
        parsed[name.strip()] = parse_value(value.strip())
    return parsed
