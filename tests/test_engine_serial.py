"""A running engine with a serial instrument on a real pseudo-terminal: the serial example UOD
against the simulated balance - reads, writes, a garbled reply, the port vanishing and coming back."""

from __future__ import annotations

import trio

from conftest import ROOT, wait_for
from pectus.actors.core import ask
from pectus.actors.engine import EngineProcess
from pectus.actors.scan_cycle import Inject
from pectus.hardware.recovery import RecoveryConfig, State
from pectus.hardware.serial_sim import SimulatedBalance
from pectus.uod import load_uod

FAST = RecoveryConfig(reconnect_timeout_seconds=0.6, error_timeout_seconds=30, retry_after_seconds=(0.2, 0.4))


def test_reads_writes_a_garbled_reply_and_a_vanishing_port(tmp_path, monkeypatch):
    balance = SimulatedBalance(load=120.5, link=tmp_path / "ttyBALANCE")
    balance.start()
    monkeypatch.setenv("PECTUS_SERIAL_PORT", balance.port)
    states: list[State] = []

    async def main():
        process = EngineProcess(load_uod(ROOT / "uods" / "serial_example.py"), recovery=FAST)
        process.hardware[0].on_transition = lambda t: states.append(t.new)
        engine = process.engine
        async with trio.open_nursery() as nursery:
            await nursery.start(process.run)
            await wait_for(lambda: engine.value("Weight") == 120.5)
            assert engine.value("Connection Status") == "Connected"

            # A write: the Tare command, given while no run is started, reaches the balance.
            assert await ask(process.scan, lambda r: Inject("Tare", r), timeout=1)
            await wait_for(lambda: engine.value("Weight") == 0.0)
            balance.load = 130.0
            await wait_for(lambda: engine.value("Weight") == 9.5)

            # Garbled replies: a clear error in the log, the last good value meanwhile, the engine runs on.
            balance.garbled = True
            await wait_for(lambda: State.ISSUE in states)
            balance.load = 140.0
            assert engine.value("Weight") == 9.5 and engine.value("Connection Status") == "Connected"
            balance.garbled = False
            await wait_for(lambda: engine.value("Weight") == 19.5)

            # The port vanishes (the USB adapter is unplugged) and comes back.
            balance.stop()
            await wait_for(lambda: State.RECONNECT in states)
            assert engine.value("Weight") == 19.5
            balance.start()
            balance.load = 150.0
            await wait_for(lambda: engine.value("Weight") == 29.5)
            await process.stop()

    try:
        trio.run(main)
    finally:
        balance.stop()
    assert states == [State.OK, State.ISSUE, State.OK, State.ISSUE, State.RECONNECT, State.OK]


def test_validate_connect_reads_every_register(tmp_path, monkeypatch, capsys):
    from pectus.cli.engine import main

    with SimulatedBalance(load=42.0) as balance:
        monkeypatch.setenv("PECTUS_SERIAL_PORT", balance.port)
        assert main(["validate", "--uod", str(ROOT / "uods" / "serial_example.py"), "--connect"]) == 0
    out = capsys.readouterr().out
    assert "Weight = 42.0 (float)" in out and "connected, 2 registers checked" in out
    monkeypatch.setenv("PECTUS_SERIAL_PORT", str(tmp_path / "no-such-port"))
    assert main(["validate", "--uod", str(ROOT / "uods" / "serial_example.py"), "--connect"]) == 1
    assert "cannot open the port" in capsys.readouterr().err
