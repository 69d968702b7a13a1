"""The OPC-UA driver against a real asyncua server on loopback (spec 10.2).

The module's server refuses requests of more than 4 nodes (as a PLC with small OperationLimits
does), so every batch test also shows that the driver splits its requests.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st

from pectus.hardware.base import HardwareError, Register, RegisterDirection
from pectus.hardware.opcua import OPCUAHardware, convert_value
from pectus.hardware.opcua_server import EXAMPLE_VARIABLES, OpcuaTestServer
from pectus.uod import load_uod

EXAMPLE_UOD = Path(__file__).resolve().parent.parent / "uods" / "opcua_example.py"
VT = ua.VariantType
TIMEOUT = 1.0
LIMIT = 4
TEN = [f"V{i}" for i in range(10)]

VARIABLES = {
    **EXAMPLE_VARIABLES,
    **{name: (float(i), VT.Double) for i, name in enumerate(TEN)},
    "I16": (0, VT.Int16),
    "U16": (7, VT.UInt16),
    "FLAG": (False, VT.Boolean),
    "RO": (3, VT.Int16),
}
READ_ONLY = {"FT01", "RO"}

path = OpcuaTestServer.path
Both, Read, Write = RegisterDirection.Both, RegisterDirection.Read, RegisterDirection.Write


@pytest.fixture(scope="module")
def server() -> Iterator[OpcuaTestServer]:
    server = OpcuaTestServer(VARIABLES, writable=set(VARIABLES) - READ_ONLY, max_nodes_per_request=LIMIT)
    server.start()
    yield server
    server.stop()


def make_hardware(host: str, *registers: Register, timeout: float = TIMEOUT) -> OPCUAHardware:
    hardware = OPCUAHardware(host, timeout=timeout)
    for register in registers:
        hardware.registers[register.name] = register
    return hardware


def register(name: str, direction: RegisterDirection = Both, **options) -> Register:
    return Register(name, direction, **{"path": path(name), **options})


@pytest.fixture
def hardware(server) -> Iterator[OPCUAHardware]:
    hardware = make_hardware(server.url, *(register(name) for name in TEN), register("FT01", Read),
                             register("PU01", Write), register("I16", Write, type=VT.Int16),
                             register("U16", Write, type=VT.UInt16), register("FLAG", Write, type=VT.Boolean),
                             register("RO", Read))
    hardware.connect()
    yield hardware
    hardware.disconnect()


def new_threads(before: set[threading.Thread]) -> list[str]:
    return [thread.name for thread in set(threading.enumerate()) - before]


# --- connect, read, write ------------------------------------------------------------------------


def test_connect_reads_the_server_limits(hardware, server):
    assert hardware.is_connected
    assert str(hardware) == f"OPCUAHardware(host='{server.url}', connected=True)"
    assert (hardware.max_nodes_per_read, hardware.max_nodes_per_write) == (LIMIT, LIMIT)


def test_read_batch_keeps_the_order_and_splits_by_the_server_limit(hardware):
    registers = [hardware.registers[name] for name in reversed(TEN)]
    assert hardware.read_batch(registers) == [float(i) for i in reversed(range(10))]
    assert hardware.read(hardware.registers["RO"]) == 3


def test_write_batch_reaches_the_server(hardware, server):
    registers = [hardware.registers[name] for name in TEN] + [hardware.registers["PU01"]]
    hardware.write_batch([100.0 + i for i in range(11)], registers)
    assert [server.get(name) for name in TEN] == [100.0 + i for i in range(10)]
    assert server.get("PU01") == 110.0


def test_values_are_converted_to_the_type(hardware, server, caplog):
    r = hardware.registers
    with caplog.at_level(logging.WARNING, "pectus.hardware.opcua"):
        # PU01 has no type option: the driver asks the server (Double) before writing an int.
        hardware.write_batch([2.6, -5, 1, 7], [r["I16"], r["U16"], r["FLAG"], r["PU01"]])
    assert (server.get("I16"), server.get("U16"), server.get("FLAG"), server.get("PU01")) == (3, 0, True, 7.0)
    assert isinstance(server.get("PU01"), float)
    assert "writing 2.6 as 3 (Int16)" in caplog.text and "writing -5 as 0 (UInt16)" in caplog.text


def test_a_value_out_of_range_raises_and_writes_nothing_of_its_batch(hardware, server):
    r = hardware.registers
    server.set("PU01", 1.0)
    with pytest.raises(HardwareError, match=r"register 'I16'.*1000000.0 is out of range for Int16 \(-32768 to 32767\)"):
        hardware.write_batch([55.0, 1e6], [r["PU01"], r["I16"]])
    assert server.get("PU01") == 1.0
    with pytest.raises(HardwareError, match="'Open' is not a number"):
        hardware.write("Open", r["FLAG"])


@pytest.mark.parametrize("value, variant_type, expected", [
    (1, VT.Boolean, True), (0.0, VT.Boolean, False),
    (2.5, VT.Int32, 3), (-2.5, VT.Int32, -3), (2.4999, VT.Int16, 2), (True, VT.Int16, 1),
    (-1, VT.UInt32, 0), (-0.4, VT.UInt64, 0), (255, VT.Byte, 255),
    (3, VT.Double, 3.0), (1.5, VT.Float, 1.5), ("text", VT.String, "text"),
])
def test_convert_value(value, variant_type, expected):
    converted = convert_value(value, variant_type)
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize("value, variant_type", [
    (256, VT.Byte), (-1, VT.Byte), (128, VT.SByte), (2 ** 63, VT.Int64), (70000, VT.UInt16), (1e39, VT.Float),
    (float("nan"), VT.Int32), (float("inf"), VT.Int64), ("1", VT.Double), ("False", VT.Boolean), (None, VT.Int16),
])
def test_convert_value_refuses(value, variant_type):
    with pytest.raises((ValueError, OverflowError)):
        convert_value(value, variant_type)


@given(st.floats(min_value=-32768.4, max_value=32767.4))
def test_a_float_becomes_the_nearest_integer(number):
    assert abs(convert_value(number, VT.Int16) - number) <= 0.5


# --- errors that name what to fix ----------------------------------------------------------------


def test_a_wrong_path_names_the_deepest_parent_and_lists_its_children(hardware):
    typo = Register("FT99", Read, path="Objects/2:System/2:FT99")
    with pytest.raises(HardwareError) as error:
        hardware.read_batch([typo])
    message = str(error.value)
    assert "register 'FT99': path 'Objects/2:System/2:FT99' cannot be found" in message
    assert "'Objects/2:System' has no child '2:FT99'; its children are: 2:FLAG, 2:FT01, 2:I16" in message
    with pytest.raises(HardwareError, match="'Objects' has no child '2:Sys'; its children are: .*2:System"):
        hardware.read_batch([Register("X", Read, path="Objects/2:Sys/2:FT01")])
    assert hardware.is_connected  # a typo is no reason to drop the connection


def test_validate_offline_lists_every_problem():
    hardware = make_hardware("localhost:4840", register("FT01", Read),
                             Register("A", Read), Register("B", Read, path="Objects;2:System;2:FT01"),
                             Register("C", Read, path="Objects/System/2:FT01"),
                             Register("D", Read, path=path("FT01"), type="Double"))
    with pytest.raises(HardwareError) as error:
        hardware.validate_offline()
    message = str(error.value)
    assert "the host must be an OPC-UA URL such as 'opc.tcp://" in message
    assert "register 'A': needs a path option" in message
    assert "register 'B': path 'Objects;2:System;2:FT01' must start at the Objects folder" in message
    assert "separate the elements with '/', not ';'" in message
    assert ("register 'C': path 'Objects/System/2:FT01': element 'System' must be "
            "<namespace index>:<browse name>") in message
    assert "register 'D': the type option must be an asyncua.ua.VariantType" in message
    assert "register 'FT01'" not in message
    make_hardware("opc.tcp://127.0.0.1:4840", register("FT01", Read), Register("O", Read, path="Objects"),
                  register("PU01", Write, type=VT.Double)).validate_offline()


def test_validate_online_checks_types_and_access_levels(server):
    good = make_hardware(server.url, register("FT01", Read), register("PU01", Both),
                         register("I16", Write, type=VT.Int16))
    good.connect()
    try:
        good.validate_online()
    finally:
        good.disconnect()
    assert good.registers["FT01"].options["type"] is VT.Double  # stored, as the spec says

    bad = make_hardware(server.url, register("RO", Both), register("FT01", Write),
                        register("I16", Write, type=VT.Double), Register("System", Read, path="Objects/2:System"))
    bad.connect()
    try:
        with pytest.raises(HardwareError) as error:
            bad.validate_online()
    finally:
        bad.disconnect()
    message = str(error.value)
    assert "register 'RO' (Objects/2:System/2:RO): the direction is Both but the server's node lacks CurrentWrite " \
           "access (it allows CurrentRead)" in message
    assert "register 'FT01' (Objects/2:System/2:FT01): the direction is Write but" in message
    assert ("register 'I16' (Objects/2:System/2:I16): the type option is Double but the server's node "
            "is Int16") in message
    assert "register 'System' (Objects/2:System): it is not a variable" in message


def test_the_server_refuses_a_write_to_a_read_only_node(hardware):
    refused = r"refused the write of 'RO' \(Objects/2:System/2:RO\): BadUserAccessDenied"
    with pytest.raises(HardwareError, match=refused):
        hardware.write_batch([4], [register("RO", Write)])
    assert hardware.is_connected


def test_reading_a_write_register_or_while_disconnected_raises(hardware, server):
    with pytest.raises(HardwareError, match=r"cannot read register 'PU01' \(its direction is Write\)"):
        hardware.read_batch([hardware.registers["PU01"]])
    hardware.disconnect()
    with pytest.raises(HardwareError, match="cannot read V0: not connected"):
        hardware.read_batch([hardware.registers["V0"]])


# --- no call blocks forever, no thread outlives its connection -----------------------------------


def test_connection_refused():
    before = set(threading.enumerate())
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        hardware = make_hardware(f"opc.tcp://127.0.0.1:{probe.getsockname()[1]}")
        with pytest.raises(HardwareError, match="connect failed: connection refused"):
            hardware.connect()
    assert not hardware.is_connected
    assert new_threads(before) == []


def test_a_silent_server_times_out():
    before = set(threading.enumerate())
    with socket.socket() as silent:  # accepts TCP connections (in the backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hardware = make_hardware(f"opc.tcp://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        start = time.monotonic()
        with pytest.raises(HardwareError, match="connect failed: no answer within 0.5 s"):
            hardware.connect()
        assert time.monotonic() - start < 0.5 + 1.0
    assert new_threads(before) == []


def test_disconnect_leaves_no_thread_behind(server):
    before = set(threading.enumerate())
    # "localhost" is resolved by asyncio's executor threads: those must go too.
    hardware = make_hardware(server.url.replace("127.0.0.1", "localhost"), register("FT01", Read))
    hardware.connect()
    assert new_threads(before) != []
    hardware.read_batch([hardware.registers["FT01"]])
    hardware.disconnect()
    assert not hardware.is_connected
    assert new_threads(before) == []


def test_a_vanished_server_is_detected_and_a_restarted_one_reconnects():
    server = OpcuaTestServer({"FT01": (1.5, VT.Double)})
    server.start()
    try:
        before = set(threading.enumerate())
        hardware = make_hardware(server.url, register("FT01", Read))
        hardware.connect()
        old_client = hardware._connection._client  # private: to show the next connect makes a new one
        assert hardware.read_batch([hardware.registers["FT01"]]) == [1.5]

        server.stop()
        start = time.monotonic()
        with pytest.raises(HardwareError, match=f"OPC-UA {server.url}: read FT01 failed"):
            hardware.read_batch([hardware.registers["FT01"]])
        assert time.monotonic() - start < TIMEOUT + 1.0
        # The session is gone: the driver dropped it, thread included.
        assert not hardware.is_connected and new_threads(before) == []
        with pytest.raises(HardwareError, match="connect failed: connection refused"):
            hardware.connect()

        server.start()  # the same port
        before = set(threading.enumerate())  # now with the new server's threads
        hardware.connect()
        assert hardware._connection._client is not old_client
        assert hardware.read_batch([hardware.registers["FT01"]]) == [1.5]
        hardware.disconnect()
        assert new_threads(before) == []
    finally:
        server.stop()


# --- the example unit ----------------------------------------------------------------------------


def test_the_example_uod_loads_and_validates_against_the_server(server, monkeypatch):
    monkeypatch.setenv("PECTUS_OPCUA_HOST", server.url)
    uod = load_uod(EXAMPLE_UOD)
    assert uod.validate() == []
    hardware = uod.hwl
    assert isinstance(hardware, OPCUAHardware) and hardware.host == server.url
    hardware.validate_offline()
    hardware.connect()
    try:
        hardware.validate_online()
        server.set("VA01", 1)
        va01 = hardware.registers["VA01"]
        assert va01.to_tag(hardware.read(va01)) == "Open"
        reset = hardware.registers["RESET"]
        hardware.write(reset.from_tag("Reset"), reset)
        assert server.get("RESET") is True
    finally:
        hardware.disconnect()
