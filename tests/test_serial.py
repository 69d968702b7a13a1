"""The serial driver against a simulated balance on a real pty, and the composite driver.

Every test talks through a real pseudo-terminal: pyserial opens, configures, flushes, writes
and reads it exactly as it would a USB serial adapter. Nothing sleeps to let things settle:
a test that waits for the instrument polls a condition against a deadline.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from pectus.hardware.base import HardwareError, Register, RegisterDirection
from pectus.hardware.composite import CompositeHardware
from pectus.hardware.serial import SerialHardware
from pectus.hardware.serial_sim import SerialInstrument, SimulatedBalance
from pectus.hardware.simulated import SimulatedHardware
from pectus.testing import Simulator
from pectus.uod import load_uod

ROOT = Path(__file__).resolve().parent.parent
READ, WRITE = RegisterDirection.Read, RegisterDirection.Write
WEIGHT_PATTERN = r"^W\s+(?P<value>[-+0-9.]+)\s*g$"
TIMEOUT = 0.3  # the driver's reply timeout in these tests: short, so failure tests are quick


def wait_for(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def weight(**options: Any) -> Register:
    return Register("Weight", READ, **({"query": "W?", "pattern": WEIGHT_PATTERN} | options))


def target(**options: Any) -> Register:
    return Register("Target", WRITE, **({"command": "S{value:.1f}", "ack": r"^OK$"} | options))


def tare() -> Register:
    return Register("TARE", WRITE, command="T", ack=r"^OK$")


@pytest.fixture
def balance(tmp_path: Path):
    # A stable link, so a test can restart the instrument and reconnect to the same port name.
    instrument = SimulatedBalance(load=12.34, link=tmp_path / "ttyBALANCE")
    instrument.start()
    yield instrument
    instrument.stop()


@pytest.fixture
def hardware(balance: SimulatedBalance):
    hw = SerialHardware(balance.port, timeout=TIMEOUT)
    hw.registers = {r.name: r for r in (weight(), target(), tare())}
    hw.connect()
    yield hw
    hw.disconnect()


# --- reads and writes


def test_read_parses_the_reply_and_converts_the_value(hardware: SerialHardware, balance: SimulatedBalance):
    assert hardware.is_connected
    assert hardware.read_batch([weight()]) == [12.34]
    balance.load = -3.5
    assert hardware.read_batch([weight(), weight(convert=Decimal)]) == [-3.5, Decimal("-3.50")]


def test_write_with_ack(hardware: SerialHardware, balance: SimulatedBalance):
    hardware.write_batch([12.5, True], [target(), tare()])
    # The ack was read, so the instrument has acted: no waiting needed.
    assert balance.target == 12.5
    assert balance.tare_offset == 12.34
    assert hardware.read(weight()) == 0.0


def test_a_none_value_is_not_sent(hardware: SerialHardware, balance: SimulatedBalance):
    hardware.write(None, tare())
    assert hardware.read(weight()) == 12.34  # not tared


def test_write_without_ack_and_its_reply_does_not_leak_into_the_next_read(
        hardware: SerialHardware, balance: SimulatedBalance):
    hardware.write(7.25, Register("Target", WRITE, command="S{value}"))
    wait_for(lambda: balance.target == 7.25)
    # The balance's "OK" to S7.25 is stale input by now: it is flushed before the query.
    assert hardware.read(weight()) == 12.34


def test_a_reply_that_is_not_the_ack_raises(hardware: SerialHardware):
    with pytest.raises(HardwareError) as raised:
        hardware.write("abc", target(command="S{value}"))
    message = str(raised.value)
    assert "register 'Target'" in message and "'Sabc'" in message and "b'ERR'" in message
    assert "'^OK$'" in message
    assert hardware.is_connected


def test_a_garbled_reply_names_the_register_and_shows_the_reply(hardware: SerialHardware, balance: SimulatedBalance):
    balance.garbled = True
    with pytest.raises(HardwareError) as raised:
        hardware.read_batch([weight()])
    message = str(raised.value)
    assert balance.port in message and "register 'Weight'" in message and "'W?'" in message
    assert r"b'\xd7\xa0" in message and "does not match pattern" in message
    assert hardware.is_connected  # the instrument may answer the next query
    balance.garbled = False
    assert hardware.read(weight()) == 12.34


def test_a_value_the_converter_refuses(hardware: SerialHardware):
    with pytest.raises(HardwareError, match=r"int\(\) cannot convert '12.34'.*'W\?'"):
        hardware.read(weight(convert=int))


class Chatterbox(SerialInstrument):
    def reply(self, line: str) -> str | None:
        return "X" * 500


def test_a_long_reply_is_truncated_in_the_message():
    with Chatterbox() as instrument:
        hw = SerialHardware(instrument.port, timeout=TIMEOUT)
        hw.connect()
        with pytest.raises(HardwareError) as raised:
            hw.read(weight())
        hw.disconnect()
    message = str(raised.value)
    assert "XXXX... (500 bytes)" in message and len(message) < 300


def test_no_reply_raises_within_the_timeout(hardware: SerialHardware, balance: SimulatedBalance):
    balance.silent = True
    for register, timeout in ((weight(), TIMEOUT), (weight(timeout=0.1), 0.1)):
        started = time.monotonic()
        with pytest.raises(HardwareError, match=r"register 'Weight': no reply to 'W\?' within"):
            hardware.read(register)
        assert time.monotonic() - started < timeout + 0.5
    assert hardware.is_connected
    balance.silent = False
    assert hardware.read(weight()) == 12.34


def test_the_port_vanishing_disconnects_and_a_reconnect_recovers(hardware: SerialHardware, balance: SimulatedBalance):
    balance.stop()  # the USB adapter is unplugged
    with pytest.raises(HardwareError) as raised:
        hardware.read(weight())
    assert "register 'Weight'" in str(raised.value) and "the port failed while sending 'W?'" in str(raised.value)
    assert not hardware.is_connected
    with pytest.raises(HardwareError, match="not connected"):
        hardware.read(weight())
    with pytest.raises(HardwareError, match="cannot open the port"):
        hardware.connect()
    assert not hardware.is_connected

    balance.start()  # plugged in again: a new pty behind the same link
    hardware.connect()
    assert hardware.is_connected
    assert hardware.read(weight()) == 12.34


def test_disconnect_leaves_no_thread_behind(balance: SimulatedBalance):
    before = set(threading.enumerate())
    hw = SerialHardware(balance.port, timeout=TIMEOUT)
    hw.connect()
    hw.read(weight())
    hw.write(1.0, target())
    hw.disconnect()
    assert not hw.is_connected
    assert set(threading.enumerate()) == before
    balance.stop()  # the instrument's own thread ends too
    assert not [t for t in threading.enumerate() if t.name.startswith("SimulatedBalance")]


def test_wrong_direction_and_missing_options(hardware: SerialHardware):
    with pytest.raises(HardwareError, match="cannot read register 'Target': its direction is Write"):
        hardware.read(target())
    with pytest.raises(HardwareError, match="cannot write register 'Weight'"):
        hardware.write(1, weight())
    with pytest.raises(HardwareError, match="register 'Bare' has no option query="):
        hardware.read(Register("Bare", READ))


def test_bad_driver_arguments_fail_at_construction():
    for kwargs in ({"port": ""}, {"timeout": 0}, {"line_ending": ""}):
        with pytest.raises(ValueError):
            SerialHardware(**({"port": "/dev/ttyUSB0"} | kwargs))


# --- validation


def test_validate_offline_reports_every_problem():
    hw = SerialHardware("/dev/does-not-matter")
    registers = [
        weight(),
        Register("NoQuery", READ, pattern=WEIGHT_PATTERN),
        Register("NoGroup", READ, query="W?", pattern=r"^W\s+([0-9.]+) g$"),
        Register("BadRegex", READ, query="W?", pattern="(?P<value>[0-9"),
        Register("BadConvert", READ, query="W?", pattern=WEIGHT_PATTERN, convert="float"),
        Register("NoCommand", WRITE),
        Register("BadField", WRITE, command="S{speed}"),
        Register("BadAck", WRITE, command="T", ack="(OK"),
        Register("BadTimeout", READ, query="W?", pattern=WEIGHT_PATTERN, timeout=-1),
        Register("NotAscii", WRITE, command="S{value}µ"),
    ]
    hw.registers = {r.name: r for r in registers}
    with pytest.raises(HardwareError) as raised:
        hw.validate_offline()
    message = str(raised.value)
    assert "9 register problem(s)" in message
    for name, hint in [("NoQuery", "needs query="), ("NoGroup", "(?P<value>...)"),
                       ("BadRegex", "not a valid regular expression"), ("BadConvert", "convert= must be a function"),
                       ("NoCommand", "needs command="), ("BadField", "uses {speed}"), ("BadAck", "ack '(OK'"),
                       ("BadTimeout", "timeout= must be"), ("NotAscii", "cannot be encoded as ascii")]:
        assert f"register '{name}': " in message and hint in message, name
    assert "register 'Weight'" not in message

    hw.registers = {"Weight": weight(), "Target": target(), "Both": Register(
        "Both", RegisterDirection.Both, query="S?", pattern=r"(?P<value>.+)", command="S{value:.1f}")}
    hw.validate_offline()  # nothing to report


def test_validate_online_reads_every_readable_register(hardware: SerialHardware, balance: SimulatedBalance):
    hardware.validate_online()
    hardware.registers["Temperature"] = Register("Temperature", READ, query="T?",
                                                 pattern=r"^(?P<value>[0-9.]+) C$")
    with pytest.raises(HardwareError) as raised:
        hardware.validate_online()  # the balance answers ERR to T?
    assert "register 'Temperature'" in str(raised.value) and "b'ERR'" in str(raised.value)
    assert "register 'Weight'" not in str(raised.value)


# --- composite


class CountingHardware(SimulatedHardware):
    """Simulated hardware that records its batch calls and validations."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.calls: list[str] = []

    def read_batch(self, registers: Sequence[Register]) -> list[Any]:
        self.calls.append("read " + " ".join(r.name for r in registers))
        return super().read_batch(registers)

    def write_batch(self, values: Sequence[Any], registers: Sequence[Register]) -> None:
        self.calls.append("write " + " ".join(r.name for r in registers))
        super().write_batch(values, registers)

    def validate_offline(self) -> None:
        self.calls.append("validate_offline " + " ".join(self.registers))

    def validate_online(self) -> None:
        self.calls.append("validate_online " + " ".join(self.registers))


def composite_of(*registers: Register) -> CompositeHardware:
    hw = CompositeHardware()
    hw.registers = {r.name: r for r in registers}
    return hw


def test_composite_groups_by_device_and_keeps_input_order():
    a = CountingHardware({"A1": 1, "A2": 2})
    b = CountingHardware({"B1": 10})
    a1, a2 = Register("A1", READ, hardware=a), Register("A2", RegisterDirection.Both, hardware=a)
    b1 = Register("B1", RegisterDirection.Both, hardware=b)
    hw = composite_of(a1, b1, a2)
    hw.connect()
    assert hw.read_batch([b1, a1, a2]) == [10, 1, 2]
    assert a.calls == ["read A1 A2"] and b.calls == ["read B1"]
    hw.write_batch([20, 30], [a2, b1])
    assert a.values["A2"] == 20 and b.values["B1"] == 30
    assert a.calls[-1] == "write A2" and b.calls[-1] == "write B1"
    assert hw.read(b1) == 30
    assert hw.devices == [a, b]
    assert list(a.registers) == ["A1", "A2"] and list(b.registers) == ["B1"]


def test_composite_with_a_serial_device(balance: SimulatedBalance):
    serial_hw = SerialHardware(balance.port, timeout=TIMEOUT)
    sim = SimulatedHardware({"FT01": 4.5})
    ft01 = Register("FT01", READ, hardware=sim)
    weight_register = weight(hardware=serial_hw)
    hw = composite_of(ft01, weight_register, target(hardware=serial_hw))
    hw.validate_offline()
    hw.connect()
    assert hw.is_connected and serial_hw.is_connected
    hw.validate_online()
    assert hw.read_batch([weight_register, ft01]) == [12.34, 4.5]
    assert str(hw).startswith("CompositeHardware(is_connected=True, devices=[SimulatedHardware(")
    assert f"SerialHardware(is_connected=True, port='{balance.port}'" in str(hw)

    balance.stop()
    with pytest.raises(HardwareError, match="register 'Weight'"):
        hw.read_batch([ft01, weight_register])
    assert not hw.is_connected  # its serial device is not
    hw.disconnect()
    assert not serial_hw.is_connected and not sim.is_connected


def test_composite_validate_offline_reports_every_problem_and_validates_devices_offline():
    device = CountingHardware({})
    bad_serial = SerialHardware("/dev/ttyUSB9")
    hw = composite_of(
        Register("Ok", READ, hardware=device),
        Register("Orphan", READ),
        Register("NotHardware", READ, hardware="plc"),
        Register("Nested", READ, hardware=CompositeHardware()),
        Register("NoQuery", READ, hardware=bad_serial, pattern=WEIGHT_PATTERN),
    )
    with pytest.raises(HardwareError) as raised:
        hw.validate_offline()
    message = str(raised.value)
    assert "register 'Orphan': no option hardware=" in message
    assert "register 'NotHardware': hardware='plc' is not hardware" in message
    assert "register 'Nested': hardware= is a CompositeHardware" in message
    assert "SerialHardware /dev/ttyUSB9: 1 register problem(s)" in message and "'NoQuery'" in message
    # Offline validation runs the devices' offline checks, with their registers, never online ones.
    assert device.calls == ["validate_offline Ok"]
    with pytest.raises(HardwareError, match="register 'Orphan': no option hardware="):
        hw.read_batch([Register("Orphan", READ)])


def test_composite_validate_online_runs_each_device():
    a, b = CountingHardware({}), CountingHardware({})
    hw = composite_of(Register("A", READ, hardware=a), Register("B", READ, hardware=b))
    hw.validate_online()
    assert a.calls == ["validate_online A"] and b.calls == ["validate_online B"]


class Broken(SimulatedHardware):
    def disconnect(self) -> None:
        super().disconnect()
        raise HardwareError("Broken: the bus hung")

    def write_batch(self, values: Sequence[Any], registers: Sequence[Register]) -> None:
        raise HardwareError("Broken: write refused")


def test_composite_disconnects_every_device_and_writes_every_device_despite_failures():
    broken, good = Broken({}), SimulatedHardware({})
    x, y = Register("X", WRITE, hardware=broken), Register("Y", WRITE, hardware=good)
    hw = composite_of(x, y)
    hw.connect()
    with pytest.raises(HardwareError, match="write refused"):
        hw.write_batch([1, 2], [x, y])
    assert good.values["Y"] == 2
    with pytest.raises(HardwareError, match="disconnecting failed:\n.*the bus hung"):
        hw.disconnect()
    assert not good.is_connected and not hw.is_connected


def test_composite_ticks_every_device():
    a, b = SimulatedHardware({}), SimulatedHardware({})
    hw = composite_of(Register("A", READ, hardware=a), Register("B", READ, hardware=b))
    hw.tick(1.0, 0.1)
    assert a.elapsed == b.elapsed == 0.1


# --- the example UOD


def test_the_serial_example_uod_loads_and_validates(monkeypatch: pytest.MonkeyPatch, balance: SimulatedBalance):
    monkeypatch.setenv("PECTUS_SERIAL_PORT", balance.port)
    uod = load_uod(ROOT / "uods" / "serial_example.py")
    hwl = uod.hwl
    assert isinstance(hwl, SerialHardware) and hwl.port == balance.port
    hwl.validate_offline()
    hwl.connect()
    try:
        hwl.validate_online()
        assert hwl.read_batch([hwl.registers["Weight"]]) == [12.34]
        tare_register = hwl.registers["TARE"]
        assert tare_register.from_tag is not None
        hwl.write_batch([tare_register.from_tag("N/A")], [tare_register])
        assert balance.tare_offset == 0.0  # at rest nothing is sent
        hwl.write_batch([tare_register.from_tag("Tare")], [tare_register])
        assert balance.tare_offset == 12.34
        assert hwl.read_batch([hwl.registers["Weight"]]) == [0.0]
    finally:
        hwl.disconnect()


def test_the_serial_example_tares_once_from_a_method(monkeypatch: pytest.MonkeyPatch, balance: SimulatedBalance):
    monkeypatch.setenv("PECTUS_SERIAL_PORT", balance.port)
    uod = load_uod(ROOT / "uods" / "serial_example.py")
    with Simulator(uod, "Tare\n") as sim:  # connects the balance before the first tick, disconnects at the end
        assert sim.start()
        sim.run_until(lambda: balance.tare_offset == 12.34, max_seconds=2)
        balance.load = 20.0
        sim.run_ticks(5)  # the tag is back at rest: no second tare
        assert sim.value("TARE") == "N/A" and sim.value("Weight") == pytest.approx(7.66)
        assert balance.tare_offset == 12.34
