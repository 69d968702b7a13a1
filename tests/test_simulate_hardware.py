"""The hardware in `pectus-engine simulate` and `pectus.testing`: a UOD's own driver is connected,
polled and disconnected as the live engine does it, and `--hardware memory` runs any UOD with no
device (OPC-UA, serial, a UOD's own driver) on an in-memory process image."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from pectus.cli.engine import main
from pectus.testing import Simulator
from pectus.uod import UodError, load_uod

# A UOD in Open Pectus' style with a driver of its own: it counts the driver calls, and fails one
# read when told to.
COUNTING_UOD = '''
from pectus.uod import (HardwareLayerBase, HardwareLayerException, Register, RegisterDirection,
                        UodBuilder, UodCommand, tags)


class CountingHardware(HardwareLayerBase):
    def __init__(self):
        super().__init__()
        self.calls = {"connect": 0, "tick": 0, "read": 0, "write": 0, "disconnect": 0}
        self.device = {"FT01": 12.5, "PU01": 0.0}
        self.fail_reads = 0

    def connect(self):
        self.calls["connect"] += 1
        super().connect()

    def disconnect(self):
        self.calls["disconnect"] += 1
        super().disconnect()

    def tick(self):  # Open Pectus' signature
        self.calls["tick"] += 1

    def read(self, r: Register):
        self.calls["read"] += 1
        if self.fail_reads:
            self.fail_reads -= 1
            raise HardwareLayerException("the flow meter did not answer")
        return self.device[r.name]

    def write(self, value, r: Register):
        self.calls["write"] += 1
        self.device[r.name] = value


def set_pump(cmd: UodCommand, value):
    cmd.context.tags["PU01"].set_value(float(value), cmd.tick_time)
    cmd.set_complete()


def create():
    return (
        UodBuilder()
        .with_instrument("Counting")
        .with_author("Test", "test@pectus.example")
        .with_filename(__file__)
        .with_location("test")
        .with_hardware(CountingHardware())
        .with_hardware_register("FT01", RegisterDirection.Read)
        .with_hardware_register("PU01", RegisterDirection.Write, safe_value=0.0)
        .with_tag(tags.ReadingTag("FT01", "L/h"))
        .with_tag(tags.Tag("PU01", value=0.0, unit="%", direction=tags.TagDirection.Output))
        .with_command("PU01", set_pump)
        .build()
    )
'''

# An OPC-UA unit in Open Pectus' style (';' paths), whose inputs declare how they behave in memory:
# the flow follows the pump, the temperature lags behind the heater.
OPCUA_SIMULATED_UOD = '''
from pectus.uod import RegexNumber, RegisterDirection, UodBuilder, UodCommand, tags


def set_percent(cmd: UodCommand, number, number_unit):
    cmd.context.tags[cmd.name].set_value(float(number), cmd.tick_time)
    cmd.set_complete()


def create():
    builder = UodBuilder()
    return (
        builder
        .with_instrument("OpcuaSimulated")
        .with_author("Test", "test@pectus.example")
        .with_filename(__file__)
        .with_location("test")
        .with_hardware_opcua(host="opc.tcp://127.0.0.1:1")  # nothing listens there
        .with_hardware_register("PU01", RegisterDirection.Write, path="Objects;2:System;2:PU01", safe_value=0.0)
        .with_hardware_register("HE01", RegisterDirection.Write, path="Objects;2:System;2:HE01", safe_value=0.0)
        .with_hardware_register("FT01", RegisterDirection.Read, path="Objects;2:System;2:FT01",
                                simulate=lambda hw: 0.5 * hw.get("PU01", 0.0))
        .with_hardware_register("TT01", RegisterDirection.Read, path="Objects;2:System;2:TT01",
                                simulate=lambda hw: hw.get("TT01", 20.0)
                                + hw.dt / 10 * (20.0 + 0.5 * hw.get("HE01", 0.0) - hw.get("TT01", 20.0)))
        .with_tag(tags.Tag("PU01", value=0.0, unit="%", direction=tags.TagDirection.Output))
        .with_tag(tags.Tag("HE01", value=0.0, unit="%", direction=tags.TagDirection.Output))
        .with_tag(tags.ReadingTag("FT01", "L/h"))
        .with_tag(tags.ReadingTag("TT01", "degC"))
        .with_command_regex_arguments("PU01", RegexNumber(units=["%"]), set_percent)
        .with_command_regex_arguments("HE01", RegexNumber(units=["%"]), set_percent)
        .build()
    )
'''


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


# --- a UOD's own driver -----------------------------------------------------------------------


def test_a_uods_own_driver_is_connected_polled_recovered_and_disconnected_as_live(tmp_path):
    """Before: the Simulator never connected it: 'PU01: 40' paused with 'hardware is not available'."""
    sim = Simulator(write(tmp_path, "counting.py", COUNTING_UOD), "PU01: 40\nWait: 1 s\nMark: done")
    device = sim.connections[0].driver
    sim.start()
    sim.run_ticks(1)
    # Connected, ticked and read before the first tick; after it ticked, written and read again.
    assert device.calls == {"connect": 1, "tick": 2, "read": 2, "write": 1, "disconnect": 0}
    assert sim.value("FT01") == 12.5 and sim.value("Connection Status") == "Connected"
    sim.run_until(lambda: device.device["PU01"] == 40.0, max_seconds=1)  # written after the tick

    device.fail_reads = 1
    device.device["FT01"] = 14.0
    sim.run_until(lambda: sim.value("FT01") == 14.0, max_seconds=1)
    assert sim.marks == [] and sim.method_status == "OK"  # one failed read is masked, as live
    assert [line.split(": ", 2)[2] for line in sim.hardware_log] == [
        "connection Disconnected -> OK: connected",
        "the flow meter did not answer",
        "connection OK -> Issue: the flow meter did not answer",
        "connection Issue -> OK: I/O works again"]
    assert any(e.kind == "log" and "OK -> Issue" in e.message for e in sim.events)

    sim.run_until(lambda: sim.marks == ["done"], max_seconds=2)
    sim.close()
    assert device.calls["connect"] == 1 and device.calls["disconnect"] == 1
    assert device.device["PU01"] == 0.0  # the safe value, written out before disconnecting
    assert sim.system_state == "Stopped"


def test_the_live_engine_ticks_a_uods_own_driver_too(tmp_path):
    """Before: the live engine connected and read it but never called its tick()."""
    import trio

    from conftest import wait_for
    from pectus.actors.engine import EngineProcess

    uod = load_uod(write(tmp_path, "counting.py", COUNTING_UOD))
    device = uod.hwl

    async def main() -> None:
        process = EngineProcess(uod)
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            await wait_for(lambda: device.calls["read"] >= 3)
            await process.stop()

    trio.run(main)
    assert device.calls["connect"] == 1 and device.calls["disconnect"] == 1
    assert device.calls["tick"] == device.calls["read"]  # once per exchange, before its read


def test_a_driver_that_cannot_connect_is_retried_on_the_recovery_schedule(tmp_path):
    """Before: the Simulator never tried to connect, so the driver's error was never seen."""
    uod = load_uod(write(tmp_path, "counting.py", COUNTING_UOD))

    def refuse() -> None:
        raise OSError("no route to the device")

    uod.hwl.connect = refuse
    with Simulator(uod, "PU01: 10") as sim:
        sim.start()
        sim.run_ticks(1)
        assert sim.method_status == "Error" and "is disconnected (Disconnected)" in sim.errors[0]
        sim.run_for(3)
        failures = [line for line in sim.hardware_log if "reconnect failed" in line]
        assert failures == ["0.0 s: CountingHardware: reconnect failed: connecting CountingHardware failed: "
                            "OSError: no route to the device"]  # reported once, not once per retry


def test_simulate_connects_a_uods_own_driver(tmp_path, capsys):
    """Before: exit 1, 'The unit's hardware is not available (Disconnected)' on the first command."""
    uod = write(tmp_path, "counting.py", COUNTING_UOD)
    method = write(tmp_path, "m.pcode", "PU01: 40\nMark: done\nStop\n")
    assert main(["simulate", "--uod", str(uod), str(method)]) == 0
    out = capsys.readouterr().out
    assert "System State Stopped, Method Status OK" in out
    assert "Hardware at 0.0 s: CountingHardware: connection Disconnected -> OK: connected" in out


# --- --hardware memory ------------------------------------------------------------------------


def test_the_opcua_example_runs_in_memory_with_no_server():
    """Before: Simulator had no hardware= (TypeError); with the UOD's hardware nothing listens."""
    method = "VA01: Open\nPU01: 40 %\nWatch: FT01 > 30 L/h\n    Mark: flowing\nReset\nMark: reset"
    sim = Simulator(ROOT / "uods" / "opcua_example.py", method, hardware="memory")
    sim.start()
    sim.run_until(lambda: sim.memory.values["RESET"] is True, max_seconds=1)  # Reset holds the signal 1 s
    assert sim.value("VA01") == "Open"  # written (from_tag 1), read back (to_tag "Open")
    assert sim.memory.values["PU01"] == 40.0
    sim.run_until(lambda: sim.memory.values["RESET"] is False, max_seconds=2)
    sim.set_input("FT01", 35.0)
    sim.run_until(lambda: "flowing" in sim.marks, max_seconds=1)
    assert sim.connections == [] and sim.method_status == "OK"


def test_simulate_with_hardware_memory_and_set_runs_an_opcua_uod_with_semicolon_paths(tmp_path, capsys):
    """Before: --hardware and --set were unknown options (exit 2)."""
    uod = write(tmp_path, "opcua_simulated.py", OPCUA_SIMULATED_UOD)
    method = write(tmp_path, "m.pcode", textwrap.dedent("""\
        PU01: 50 %
        HE01: 100 %
        Watch: FT01 > 20 L/h
            Mark: flowing
        Watch: TT01 > 40 degC
            Mark: warm
        Watch: FT01 > 20 L/h
            Watch: TT01 > 40 degC
                Stop
        """))
    assert main(["simulate", "--uod", str(uod), str(method), "--hardware", "memory", "--max-seconds", "120"]) == 0
    out = capsys.readouterr().out
    assert "System State Stopped, Method Status OK" in out
    assert "Hardware simulated in memory in place of OPCUAHardware(host='opc.tcp://127.0.0.1:1'" in out
    assert "no device was contacted" in out and "2 following the UOD's simulation" in out

    # A value given with --set holds: the flow is never above 20 L/h, so the run goes on to --max-seconds.
    assert main(["simulate", "--uod", str(uod), str(method), "--hardware", "memory", "--set", "FT01=3",
                 "--max-seconds", "120"]) == 0
    out = capsys.readouterr().out
    assert "Simulated 120.0 s" in out and "System State Running" in out and "1 given a value" in out


def test_the_serial_example_tares_in_memory_with_no_balance(monkeypatch):
    """Before: Simulator had no hardware= (TypeError); the serial port does not exist."""
    monkeypatch.setenv("PECTUS_SERIAL_PORT", "/dev/no-such-balance")
    sim = Simulator(ROOT / "uods" / "serial_example.py", "Tare\nWatch: Weight < 1 g\n    Mark: tared",
                    hardware="memory")
    sim.set_input("Weight", 12.34)
    sim.start()
    sim.run_until(lambda: sim.memory.values["TARE"] is True, max_seconds=1)  # what the balance would receive
    sim.run_until(lambda: sim.item("Tare").state == "completed", max_seconds=1)
    sim.set_input("Weight", 0.0)  # the balance, tared
    sim.run_until(lambda: sim.marks == ["tared"], max_seconds=1)


def test_a_uods_own_driver_methods_are_recorded_in_memory(tmp_path):
    """Before: Simulator had no hardware= (TypeError)."""
    uod = load_uod(write(tmp_path, "counting.py", COUNTING_UOD))
    uod.commands["PU01"].exec_fn = lambda cmd, value: (cmd.context.hwl.reset_totalizer(int(value)),
                                                       cmd.set_complete())
    type(uod.hwl).reset_totalizer = lambda self, value: None
    sim = Simulator(uod, "PU01: 7", hardware="memory")
    sim.start()
    sim.run_ticks(3)
    assert sim.memory.calls == [("reset_totalizer", (7,), {})] and sim.method_status == "OK"
    assert uod.hwl is sim.memory and sim.memory.replaced.calls["connect"] == 0  # the driver is never used


def test_bad_settings_and_a_failing_simulation_say_what_to_do(tmp_path, capsys):
    """Before: --set was an unknown option and Simulator had no hardware=."""
    uod = write(tmp_path, "opcua_simulated.py", OPCUA_SIMULATED_UOD)
    method = write(tmp_path, "m.pcode", "Mark: a\n")
    assert main(["simulate", "--uod", str(uod), str(method), "--set", "FT01=3"]) == 2
    assert "add --hardware memory" in capsys.readouterr().err
    assert main(["simulate", "--uod", str(uod), str(method), "--hardware", "memory", "--set", "FT99=3"]) == 2
    assert "'FT99' is not a register of this unit; its registers are FT01, HE01, PU01, TT01" in capsys.readouterr().err
    assert main(["simulate", "--uod", str(uod), str(method), "--hardware", "memory", "--set", "PU01=3"]) == 2
    assert "'PU01' is only written by the engine" in capsys.readouterr().err
    assert main(["simulate", "--uod", str(uod), str(method), "--hardware", "memory", "--set", "FT01"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err

    broken = write(tmp_path, "broken.py", OPCUA_SIMULATED_UOD.replace('0.5 * hw.get("PU01", 0.0)', '1 / hw["PU01"]'))
    sim = Simulator(broken, "Mark: a", hardware="memory")
    sim.start()
    sim.run_ticks(2)
    assert sim.method_status == "Error"
    assert "the simulation of register 'FT01' failed: ZeroDivisionError" in sim.errors[0]
    with pytest.raises(ValueError, match="hardware='memory'"):
        Simulator(broken, "Mark: a").set_input("FT01", 1.0)
    with pytest.raises(UodError, match=r"bad.py:\d+: with_hardware_register\('FT01'\): simulate must be a function"):
        Simulator(write(tmp_path, "bad.py", OPCUA_SIMULATED_UOD.replace(
            'simulate=lambda hw: 0.5 * hw.get("PU01", 0.0)', "simulate=3")), hardware="memory")
