"""One unit, several devices: a PLC on OPC-UA, a balance on a serial port, a simulated signal.

A UOD has one hardware layer. When its registers live on several devices, that layer is a
:class:`CompositeHardware` and each register names its device in the option ``hardware``::

    balance = SerialHardware("/dev/ttyUSB0")
    plc = SimulatedHardware({"FT01": 0.0})
    builder.with_hardware(CompositeHardware())
    builder.with_hardware_register("Weight", RegisterDirection.Read, hardware=balance, query="W?", pattern=...)
    builder.with_hardware_register("FT01", RegisterDirection.Read, hardware=plc)

Invariants:

* the devices are the distinct ``hardware`` values of the registers, in order of first
  appearance; each device's ``registers`` is set to the registers that name it (on connect and
  validation), so its own checks see them;
* ``read_batch``/``write_batch`` make one batch call per device and give the results back in
  input order; a read that fails on one device fails as a whole (there is no partial result),
  a write is attempted on every device before the failures are raised together, so one broken
  device does not leave the others' outputs stale;
* ``connect`` connects the devices in order and stops at the first failure; ``disconnect``
  disconnects every device even if some fail, then raises; ``is_connected`` is true only while
  the composite and every device are connected;
* composites do not nest, and every register must name a device: ``validate_offline`` reports
  every such problem, then runs each device's ``validate_offline`` (Open Pectus runs their
  ``validate_online`` here, before anything is connected - a quirk not kept);
* ``tick`` is passed on to every device, so simulated devices advance.
"""

from __future__ import annotations

from typing import Any, Sequence

from pectus.hardware.base import HardwareError, HardwareLayerBase, Register


class CompositeHardware(HardwareLayerBase):
    """Hardware made of the devices named by its registers' ``hardware`` option."""

    @property
    def devices(self) -> list[HardwareLayerBase]:
        """The distinct valid devices of the registers, in order of first appearance."""
        devices: dict[int, HardwareLayerBase] = {}  # by id: a device need not be hashable
        for register in self.registers.values():
            device = register.options.get("hardware")
            if _is_device(device):
                devices.setdefault(id(device), device)
        return list(devices.values())

    @property
    def is_connected(self) -> bool:
        return self._is_connected and all(device.is_connected for device in self.devices)

    def connect(self) -> None:
        self.assign_registers()
        for device in self.devices:
            device.connect()
        super().connect()

    def disconnect(self) -> None:
        super().disconnect()
        errors = []
        for device in self.devices:
            try:
                device.disconnect()
            except Exception as error:  # even a buggy device must not keep the others connected
                errors.append(f"{device}: {type(error).__name__}: {error}")
        if errors:
            raise _combined("disconnecting failed", errors)

    def tick(self, tick_time: float, increment_time: float) -> None:
        for device in self.devices:
            device.tick(tick_time, increment_time)

    def read_batch(self, registers: Sequence[Register]) -> list[Any]:
        values: list[Any] = [None] * len(registers)
        for device, indexes in self._by_device(registers):
            results = device.read_batch([registers[i] for i in indexes])
            if len(results) != len(indexes):
                raise HardwareError(f"CompositeHardware: {device} returned {len(results)} values for "
                                    f"{len(indexes)} registers")
            for index, value in zip(indexes, results):
                values[index] = value
        return values

    def write_batch(self, values: Sequence[Any], registers: Sequence[Register]) -> None:
        errors: list[HardwareError] = []
        for device, indexes in self._by_device(registers):
            try:
                device.write_batch([values[i] for i in indexes], [registers[i] for i in indexes])
            except HardwareError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise _combined("writing failed", [str(e) for e in errors]) from errors[0]

    def read(self, register: Register) -> Any:
        return self.read_batch([register])[0]

    def write(self, value: Any, register: Register) -> None:
        self.write_batch([value], [register])

    def _by_device(self, registers: Sequence[Register]) -> list[tuple[HardwareLayerBase, list[int]]]:
        """The registers' indexes grouped by device, devices in order of first appearance."""
        groups: dict[int, tuple[HardwareLayerBase, list[int]]] = {}
        for index, register in enumerate(registers):
            device = register.options.get("hardware")
            if not _is_device(device):
                raise HardwareError(f"CompositeHardware: register '{register.name}': "
                                    + _device_problem(register))
            groups.setdefault(id(device), (device, []))[1].append(index)
        return list(groups.values())

    def assign_registers(self) -> None:
        """Give each device the registers that name it (its own validation and reads use them)."""
        assigned: dict[int, dict[str, Register]] = {id(device): {} for device in self.devices}
        for register in self.registers.values():
            device = register.options.get("hardware")
            if _is_device(device):
                assigned[id(device)][register.name] = register
        for device in self.devices:
            device.registers = assigned[id(device)]

    def validate_offline(self) -> None:
        """Every register names a device that is not a composite, and every device validates."""
        problems = [f"register '{register.name}': {_device_problem(register)}"
                    for register in self.registers.values() if not _is_device(register.options.get("hardware"))]
        self.assign_registers()
        for device in self.devices:
            try:
                device.validate_offline()
            except HardwareError as error:
                problems.append(str(error))
        if problems:
            raise _combined("the offline check failed", problems)

    def validate_online(self) -> None:
        self.assign_registers()
        problems = []
        for device in self.devices:
            try:
                device.validate_online()
            except HardwareError as error:
                problems.append(str(error))
        if problems:
            raise _combined("the online check failed", problems)

    @property
    def description(self) -> str:
        return f"{type(self).__name__} of {', '.join(device.description for device in self.devices) or 'no device'}"

    def __str__(self) -> str:
        devices = ", ".join(str(device) for device in self.devices)
        return f"CompositeHardware(is_connected={self.is_connected}, devices=[{devices}])"


def _is_device(value: Any) -> bool:
    return isinstance(value, HardwareLayerBase) and not isinstance(value, CompositeHardware)


def _device_problem(register: Register) -> str:
    if "hardware" not in register.options:
        return "no option hardware=<the device that holds it>"
    device = register.options["hardware"]
    if isinstance(device, CompositeHardware):
        return "hardware= is a CompositeHardware; composites do not nest, name the device itself"
    return f"hardware={device!r} is not hardware (a HardwareLayerBase)"


def _combined(what: str, problems: list[str]) -> HardwareError:
    return HardwareError(f"CompositeHardware: {what}:\n" + "\n".join(f"  {p}" for p in problems))
