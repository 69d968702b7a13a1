"""The hardware actor and error recovery inside a running engine process.

The driver is an in-memory device that can be told to fail, so each transition is provoked on
purpose; the timings are short versions of the real ones. Tests wait on conditions with
deadlines (real time: the driver runs in a worker thread).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager

import trio

from conftest import make_unit, wait_for
from pectus.actors.core import ask
from pectus.actors.engine import EngineProcess
from pectus.actors.scan_cycle import Control, Inject, SaveMethod
from pectus.hardware.base import HardwareError, HardwareLayerBase, Register, RegisterDirection
from pectus.hardware.recovery import RecoveryConfig, State

FAST = RecoveryConfig(reconnect_timeout_seconds=0.5, error_timeout_seconds=1.5, retry_after_seconds=(0.2, 0.4))


class Device(HardwareLayerBase):
    """Equipment in memory: FT01 to read, PU01 to write; ``broken`` makes every call fail."""

    def __init__(self) -> None:
        super().__init__()
        self.values = {"FT01": 10.0, "PU01": 0.0}
        self.broken = False
        self.connects = 0
        self.registers = {"FT01": Register("FT01", RegisterDirection.Read),
                          "PU01": Register("PU01", RegisterDirection.Write, safe_value=0.0)}

    def _check(self) -> None:
        if self.broken:
            raise HardwareError("no answer from the device")

    def connect(self) -> None:
        self._check()
        self.connects += 1
        super().connect()

    def read_batch(self, registers):
        self._check()
        return [self.values[r.name] for r in registers]

    def write_batch(self, values, registers):
        self._check()
        for value, register in zip(values, registers):
            self.values[register.name] = value

    def __str__(self) -> str:
        return "Device()"


def unit_on(device: Device):
    unit = make_unit()
    unit.hwl = device
    return unit


@asynccontextmanager
async def running_with_a_run(device: Device, states: list[State]):
    """An engine process on ``device``, connected, with a run started; stopped at the end."""
    process = EngineProcess(unit_on(device), recovery=FAST)
    process.hardware[0].on_transition = lambda t: states.append(t.new)
    async with trio.open_nursery() as nursery:
        await nursery.start(process.run)
        await wait_for(lambda: process.engine.value("FT01") == 10.0)  # connected
        await ask(process.scan, lambda r: Control("Start", r), timeout=1)
        yield process
        await process.stop()


def test_values_flow_both_ways_and_a_short_break_is_masked():
    device = Device()
    states: list[State] = []

    async def main():
        process = EngineProcess(unit_on(device), recovery=FAST)
        process.hardware[0].on_transition = lambda t: states.append(t.new)
        engine = process.engine
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            await wait_for(lambda: engine.value("FT01") == 10.0)
            assert engine.value("Connection Status") == "Connected"
            await ask(process.scan, lambda r: SaveMethod("PU01: 40 %", None, r), timeout=1)
            await ask(process.scan, lambda r: Control("Start", r), timeout=1)
            await wait_for(lambda: device.values["PU01"] == 40.0)

            device.broken = True
            device.values["FT01"] = 99.0
            await wait_for(lambda: State.ISSUE in states)
            assert engine.value("FT01") == 10.0  # the last good value, not an error
            assert engine.system_state == "Running" and engine.value("Connection Status") == "Connected"
            device.broken = False
            await wait_for(lambda: engine.value("FT01") == 99.0)
            assert states == [State.OK, State.ISSUE, State.OK]
            await process.stop()

    trio.run(main)


def test_a_longer_break_reconnects_and_commands_fail_meanwhile():
    device = Device()
    states: list[State] = []

    async def main():
        async with running_with_a_run(device, states) as process:
            engine = process.engine
            device.broken = True
            began = trio.current_time()
            await wait_for(lambda: State.RECONNECT in states)
            # reconnect_timeout_seconds counts from the last success, up to one scan before `began`
            assert 0.4 <= trio.current_time() - began < 2.0  # generous: polls may lag on a busy machine
            assert engine.value("Connection Status") == "Connected"  # still masked
            await ask(process.scan, lambda r: Inject("PU01: 10 %", r), timeout=1)
            await wait_for(lambda: engine.method_status == "Error")
            assert "hardware is not available" in engine.last_error
            connects = device.connects
            device.broken = False
            await wait_for(lambda: states[-1] is State.OK)
            assert device.connects == connects + 1  # a fresh connect, not just the next read
            assert states == [State.OK, State.ISSUE, State.RECONNECT, State.OK]

    trio.run(main)


def test_when_the_device_stays_away_recovery_gives_up_and_the_run_pauses_on_error(caplog):
    device = Device()
    states: list[State] = []

    async def main():
        async with running_with_a_run(device, states) as process:
            engine = process.engine
            device.broken = True
            await wait_for(lambda: State.ERROR in states)
            await wait_for(lambda: engine.system_state == "Paused")
            assert engine.method_status == "Error", engine.last_error
            assert engine.value("Connection Status") == "Disconnected", engine.last_error
            assert "disconnected" in engine.last_error
            device.broken = False
            await wait_for(lambda: engine.value("Connection Status") == "Connected")
            assert engine.system_state == "Paused"  # an operator decides when to go on

    with caplog.at_level(logging.WARNING, logger="pectus.engine.hardware"):
        trio.run(main)
    assert states == [State.OK, State.ISSUE, State.RECONNECT, State.ERROR, State.OK]
    failures = [r for r in caplog.records if "no answer" in r.getMessage()]
    assert 1 <= len(failures) <= 3  # rate-limited: the device failed on every tick for ~2 s


def test_the_engine_starts_while_the_device_is_away_and_connects_when_it_comes():
    device = Device()
    device.broken = True
    before = set(threading.enumerate())

    async def main():
        process = EngineProcess(unit_on(device), recovery=FAST)
        engine = process.engine
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            await trio.sleep(0.3)
            assert engine.value("Connection Status") == "Disconnected" and engine.system_state == "Stopped"
            device.broken = False
            await wait_for(lambda: engine.value("FT01") == 10.0)
            assert engine.value("Connection Status") == "Connected"
            await process.stop()

    trio.run(main)
    assert set(threading.enumerate()) <= before


def test_a_run_started_before_the_device_is_connected_pauses_on_error():
    device = Device()
    device.broken = True

    async def main():
        process = EngineProcess(unit_on(device), recovery=FAST)
        engine = process.engine
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            await trio.sleep(0.3)
            await ask(process.scan, lambda r: Control("Start", r), timeout=1)
            await wait_for(lambda: engine.method_status == "Error")
            assert engine.system_state == "Paused"
            assert "hardware failed: Device() is disconnected (Disconnected)" in engine.last_error
            await process.stop()

    trio.run(main)


class SlowDevice(Device):
    """Answers reads after 150 ms (modelled device latency), so an exchange is always under way
    when the engine writes: the image it returns was read before the write."""

    def __init__(self) -> None:
        super().__init__()
        self.values["Valve"] = "Closed"
        self.registers["Valve"] = Register("Valve", RegisterDirection.Both, safe_value="Closed")

    def read_batch(self, registers):
        time.sleep(0.15)
        return super().read_batch(registers)


def test_a_read_back_output_does_not_flip_back_while_its_write_is_under_way():
    device = SlowDevice()
    seen: list[str] = []

    async def main():
        process = EngineProcess(unit_on(device), recovery=FAST)
        engine = process.engine
        process.add_sink(lambda events: seen.extend(e.value for e in events if getattr(e, "name", "") == "Valve"))
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            await wait_for(lambda: engine.value("FT01") == 10.0)
            seen.clear()
            assert await ask(process.scan, lambda r: Inject("Valve: Open", r), timeout=1)
            await wait_for(lambda: device.values["Valve"] == "Open")
            await trio.sleep(0.5)  # several more exchanges, each read back
            assert engine.value("Valve") == "Open"
            await process.stop()

    trio.run(main)
    assert seen == ["Open", "Closed"]  # opened once, closed (safe value) at shutdown, never flipped


def test_each_device_of_a_composite_has_its_own_connection_and_recovery():
    from pectus.hardware.composite import CompositeHardware

    pump, meter = Device(), Device()
    pump.values["TT01"] = 21.0  # the pump's controller also reports a temperature: it is polled
    composite = CompositeHardware()
    composite.registers = {"FT01": Register("FT01", RegisterDirection.Read, hardware=meter),
                           "TT01": Register("TT01", RegisterDirection.Read, hardware=pump),
                           "PU01": Register("PU01", RegisterDirection.Write, hardware=pump, safe_value=0.0)}

    async def main():
        process = EngineProcess(unit_on(composite), recovery=FAST)
        assert [a.path for a in process.hardware] == ["engine/hardware/device", "engine/hardware/device-2"]
        meter_actor, pump_actor = process.hardware  # devices in order of first appearance
        engine = process.engine
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            await wait_for(lambda: engine.value("FT01") == 10.0 and engine.value("Connection Status") == "Connected")
            pump.broken = True
            meter.values["FT01"] = 12.0
            await wait_for(lambda: pump_actor.recovery.state is State.RECONNECT)
            await wait_for(lambda: engine.value("FT01") == 12.0)  # the meter goes on
            assert meter_actor.recovery.state is State.OK
            assert await ask(process.scan, lambda r: Inject("PU01: 10 %", r), timeout=1)
            await wait_for(lambda: engine.method_status == "Error")  # the pump cannot take a command
            pump.broken = False
            await wait_for(lambda: pump_actor.recovery.state is State.OK)
            await process.stop()
        assert pump.values["PU01"] == 0.0

    trio.run(main)
