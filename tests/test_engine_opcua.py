"""A running engine against a real asyncua OPC-UA server on loopback: the OPC-UA example UOD reads
and writes registers through to_tag/from_tag, a method drives the outputs, and the server stops
mid-run - and comes back (OK, Issue, Reconnect, OK with the last good values meanwhile), or stays
away (Error: the run pauses). Timings are short versions of the real ones."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from conftest import ROOT, wait_for
from pectus.actors.core import ask
from pectus.actors.engine import EngineProcess
from pectus.actors.scan_cycle import Control, SaveMethod
from pectus.hardware.opcua_server import EXAMPLE_VARIABLES, OpcuaTestServer, free_port
from pectus.hardware.recovery import RecoveryConfig, State
from pectus.uod import load_uod

FAST = RecoveryConfig(reconnect_timeout_seconds=1.0, error_timeout_seconds=3.0, retry_after_seconds=(0.3, 0.6))
METHOD = """\
Base: s
VA01: Open
PU01: 40 %
Watch: FT01 > 10 L/h
    Mark: flowing
Wait: 1 h
"""


@pytest.fixture
def server(monkeypatch):
    server = OpcuaTestServer(EXAMPLE_VARIABLES, port=free_port(), writable={"PU01", "VA01", "RESET"})
    server.start()
    monkeypatch.setenv("PECTUS_OPCUA_HOST", server.url)
    yield server
    server.stop()


@asynccontextmanager
async def running_method(server: OpcuaTestServer, transitions: list) -> AsyncIterator[EngineProcess]:
    """The example engine on ``server`` (its recovery transitions into ``transitions``): connected,
    method loaded and started, the outputs at the PLC, the flow read back. Stopped on exit."""
    process = EngineProcess(load_uod(ROOT / "uods" / "opcua_example.py"), recovery=FAST)
    process.hardware[0].on_transition = transitions.append
    engine = process.engine
    async with trio.open_nursery() as nursery:
        await nursery.start(process.run)
        await wait_for(lambda: engine.value("Connection Status") == "Connected")
        assert await ask(process.scan, lambda r: SaveMethod(METHOD, None, r), timeout=1)
        assert await ask(process.scan, lambda r: Control("Start", r), timeout=1)
        await wait_for(lambda: server.get("PU01") == 40.0 and server.get("VA01") == 1)
        assert engine.value("VA01") == "Open"  # read back through to_tag
        server.set("FT01", 24.0)  # the PLC's flow meter
        await wait_for(lambda: engine.marks == ["flowing"])
        assert engine.value("FT01") == 24.0
        yield process
        await process.stop()


def test_a_method_drives_the_plc_and_a_server_restart_is_masked_and_recovered(server):
    transitions = []

    async def main():
        async with running_method(server, transitions) as process:
            engine = process.engine
            stopped = trio.current_time()
            await trio.to_thread.run_sync(server.stop)  # not in the Trio loop: it takes a while
            await wait_for(lambda: transitions[-1].new is State.RECONNECT)
            assert engine.value("FT01") == 24.0  # the last good value, all along
            assert engine.system_state == "Running" and engine.value("Connection Status") == "Connected"
            issue, reconnect = transitions[-2:]
            assert issue.new is State.ISSUE and issue.time - stopped < 2.5  # within the driver's timeout
            assert reconnect.time - issue.time <= 1.0 + 2.5  # reconnect_timeout (+ one slow read)

            await trio.to_thread.run_sync(server.start)
            server.set("FT01", 30.0)
            await wait_for(lambda: engine.value("FT01") == 30.0)
            assert transitions[-1].new is State.OK
            assert engine.system_state == "Running" and engine.method_status == "OK"
            # The outputs are written again to the restarted PLC (it lost them).
            await wait_for(lambda: server.get("PU01") == 40.0)
        assert server.get("PU01") == 0.0 and server.get("VA01") == 0  # safe values at shutdown

    trio.run(main)
    assert [t.new for t in transitions] == [State.OK, State.ISSUE, State.RECONNECT, State.OK]


def test_a_server_that_stays_away_pauses_the_run_on_error(server):
    transitions = []
    before = set(threading.enumerate())

    async def main():
        async with running_method(server, transitions) as process:
            engine = process.engine
            await trio.to_thread.run_sync(server.stop)
            await wait_for(lambda: engine.method_status == "Error", timeout=15)
            assert engine.system_state == "Paused" and engine.value("Connection Status") == "Disconnected"
            assert "disconnected (Error)" in engine.last_error
            error = transitions[-1]
            reconnect = transitions[-2]
            assert (reconnect.new, error.new) == (State.RECONNECT, State.ERROR)
            # error_timeout_seconds; the transition comes with the first poll after it (a busy CI machine
            # may delay polls, never advance them)
            assert 3.0 <= error.time - reconnect.time < 4.5

    trio.run(main)
    assert set(threading.enumerate()) <= before  # the driver's loop thread is gone


def test_validate_connect_reads_the_plc(server, capsys):
    from pectus.cli.engine import main

    server.set("VA01", 1)
    assert main(["validate", "--uod", str(ROOT / "uods" / "opcua_example.py"), "--connect"]) == 0
    out = capsys.readouterr().out
    assert "VA01 = 1 (int) -> 'Open'" in out and "connected, 4 registers checked" in out
