"""A real OPC-UA server on loopback, in a background thread: for tests, examples and the demo.

::

    server = OpcuaTestServer({"FT01": (0.0, ua.VariantType.Double),
                              "PU01": (0.0, ua.VariantType.Double)})
    server.start()
    server.url                 # 'opc.tcp://127.0.0.1:<port>'
    server.path("FT01")        # 'Objects/2:System/2:FT01', the register's path option
    server.set("FT01", 12.5)   # as the equipment would
    server.get("PU01")         # what a client wrote
    server.stop()              # closes the listening socket and every client's connection
    server.start()             # again, on the same port, with the values it had when stopped

``python -m pectus.hardware.opcua_server`` serves the variables of ``uods/opcua_example.py`` on
port 48400 until Ctrl-C; there FT01 follows PU01 while VA01 is open.

Invariants:

* the server runs on its own :class:`~pectus.hardware.opcua.LoopThread`: ``start()`` returns once it
  listens, ``stop()`` once its socket is closed and its thread has ended, so a client sees the
  server vanish exactly as when a PLC goes away;
* every start builds a new asyncua ``Server`` on the same port, so no state of a stopped server
  (sessions, subscriptions) leaks into the next, except the variables' values;
* the variables are ``Objects/2:System/2:<name>``, writable by clients unless ``writable`` names
  which are; ``get`` and ``set`` bypass that, as the equipment itself does;
* with ``max_nodes_per_request``, the server publishes it as its MaxNodesPerRead and
  MaxNodesPerWrite and refuses bigger requests with BadTooManyOperations, as a PLC does.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from asyncua import Node, Server, ua
from asyncua.common.callback import CallbackService, CallbackType, ServerItemCallback

from pectus.hardware.opcua import LoopThread

#: Seconds ``start()`` waits: building the standard address space takes about a second.
START_TIMEOUT = 30.0
#: Seconds ``stop()``, ``get()`` and ``set()`` wait.
TIMEOUT = 5.0
NAMESPACE_URI = "urn:pectus:opcua-test-server"
#: The first namespace a fresh server registers; the paths rely on it.
NAMESPACE_INDEX = 2

_LIMIT_NODES = (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
                ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OpcuaTestServer:
    """An OPC-UA server with ``variables`` (name -> (initial value, VariantType)) under
    ``Objects/2:System``, on 127.0.0.1:``port`` (a free port when 0)."""

    def __init__(self, variables: Mapping[str, tuple[Any, ua.VariantType]], port: int = 0,
                 writable: Iterable[str] | None = None, max_nodes_per_request: int | None = None) -> None:
        self._types = {name: variant_type for name, (_, variant_type) in variables.items()}
        self._values = {name: value for name, (value, _) in variables.items()}
        self.writable = frozenset(variables if writable is None else writable)
        if not self.writable <= self._types.keys():
            raise ValueError(f"writable names unknown variables: {sorted(self.writable - self._types.keys())}")
        self.port = port or free_port()
        self.max_nodes_per_request = max_nodes_per_request
        self._thread: LoopThread | None = None
        self._server: Server | None = None  # touched on the loop thread only
        self._nodes: dict[str, Node] = {}

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    @staticmethod
    def path(name: str) -> str:
        """The browse path of variable ``name``: a register's ``path`` option."""
        return f"Objects/{NAMESPACE_INDEX}:System/{NAMESPACE_INDEX}:{name}"

    def start(self) -> None:
        """Listen on the port; returns when clients can connect."""
        if self._thread is not None:
            raise RuntimeError(f"the OPC-UA test server on {self.url} is already running")
        thread = LoopThread(f"opcua-test-server :{self.port}")
        try:
            thread.run(self._start(), START_TIMEOUT)
        except BaseException:
            # Nothing listens yet (a failed bind opens no socket): ending the loop cancels the rest.
            thread.stop(TIMEOUT)
            raise
        self._thread = thread

    def stop(self) -> None:
        """Close the socket and every client connection, and end the server's thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._values = thread.run(self._snapshot(), TIMEOUT)
            thread.run(self._stop(), TIMEOUT)
        finally:
            thread.stop(TIMEOUT)

    def get(self, name: str) -> Any:
        """The current value of variable ``name``."""
        return self._running().run(self._nodes[name].read_value(), TIMEOUT)

    def set(self, name: str, value: Any) -> None:
        """Set variable ``name`` as the equipment would (also when clients may not write it)."""
        variant = ua.Variant(value, self._types[name])
        self._running().run(self._nodes[name].write_value(variant), TIMEOUT)

    def _running(self) -> LoopThread:
        if self._thread is None:
            raise RuntimeError(f"the OPC-UA test server on {self.url} is not running; start() it")
        return self._thread

    # --- coroutines, run on the server's loop thread

    async def _start(self) -> None:
        server = Server()
        self._server = server
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("Pectus OPC-UA test server")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        server.disable_clock()  # its task ticks once a second, and stop() would wait for it
        namespace = await server.register_namespace(NAMESPACE_URI)
        assert namespace == NAMESPACE_INDEX, f"namespace {NAMESPACE_URI} got index {namespace}"
        system = await server.nodes.objects.add_object(namespace, "System")
        self._nodes = {}
        for name, variant_type in self._types.items():
            node = await system.add_variable(namespace, name, ua.Variant(self._values[name], variant_type))
            if name in self.writable:
                await node.set_writable()
            self._nodes[name] = node
        if self.max_nodes_per_request is not None:
            await self._limit_requests(server, self.max_nodes_per_request)
        await server.start()

    async def _limit_requests(self, server: Server, limit: int) -> None:
        for node_id in _LIMIT_NODES:
            await server.get_node(node_id).write_value(ua.Variant(limit, ua.VariantType.UInt32))

        def refuse_big_requests(event: ServerItemCallback, _: CallbackService) -> None:
            params = event.request_params
            nodes = params.NodesToRead if isinstance(params, ua.ReadParameters) else params.NodesToWrite
            if event.is_external and len(nodes) > limit:
                raise ua.uaerrors.BadTooManyOperations()

        server.subscribe_server_callback(CallbackType.PreRead, refuse_big_requests)
        server.subscribe_server_callback(CallbackType.PreWrite, refuse_big_requests)

    async def _snapshot(self) -> dict[str, Any]:
        return {name: await node.read_value() for name, node in self._nodes.items()}

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()


#: The variables of ``uods/opcua_example.py``.
EXAMPLE_VARIABLES: dict[str, tuple[Any, ua.VariantType]] = {
    "FT01": (0.0, ua.VariantType.Double),
    "PU01": (0.0, ua.VariantType.Double),
    "VA01": (0, ua.VariantType.Int32),
    "RESET": (False, ua.VariantType.Boolean),
}
EXAMPLE_PORT = 48400
FLOW_PER_PERCENT = 0.6  # L/h per pump percent


def main() -> None:
    """Serve :data:`EXAMPLE_VARIABLES` on port 48400 until Ctrl-C; FT01 follows PU01 while VA01 is open."""
    logging.basicConfig(level=logging.WARNING)
    server = OpcuaTestServer(EXAMPLE_VARIABLES, port=EXAMPLE_PORT, writable={"PU01", "VA01", "RESET"})
    server.start()
    print(f"Serving {', '.join(server.path(name) for name in EXAMPLE_VARIABLES)} on {server.url}; Ctrl-C stops.")
    idle = threading.Event()
    try:
        while not idle.wait(0.5):
            server.set("FT01", FLOW_PER_PERCENT * server.get("PU01") if server.get("VA01") else 0.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
