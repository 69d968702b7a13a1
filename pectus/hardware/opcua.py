"""OPC-UA driver: each register is a variable node of an OPC-UA server, polled every scan.

A register names its node by a browse path from the Objects folder, one element per level,
each written ``<namespace index>:<browse name>``::

    .with_hardware_opcua("opc.tcp://192.168.0.10:4840")
    .with_hardware_register("FT01", RegisterDirection.Read, path="Objects/2:System/2:FT01")
    .with_hardware_register("PU01", RegisterDirection.Write, path="Objects/2:System/2:PU01",
                            type=ua.VariantType.Float)

The optional ``type`` (an ``asyncua.ua.VariantType``) is the node's data type; written values
are converted to it (:func:`convert_value`), and ``validate_online`` checks it against the
server's. Without it the driver asks the server for the type before the first write, and
``validate_online`` stores it into the register's options.

Threading model
---------------
asyncua is an asyncio library; the engine is Trio and calls this driver's blocking methods from a
worker thread, one call at a time. Between the two sits one asyncio event loop per connection, run
by its own daemon thread (:class:`LoopThread`)::

    engine worker thread                      loop thread "opcua <host>"
    read_batch(registers)  --coroutine-->     _Connection.read(registers)  <-->  server
                           <--result/error--  (at most `timeout` s later)

Invariants:

* one connection = one loop thread + one fresh asyncua ``Client`` + empty node and type caches.
  ``connect()`` makes a new one (after closing any old one); ``disconnect()`` says goodbye to the
  server, stops the loop and joins its thread. Nothing of an old connection - thread, socket,
  cached node, half-done request - survives into the next;
* the client, its nodes and the caches are touched only by coroutines on the loop thread. The
  calling thread only submits coroutines and waits for their result, so nothing needs a lock;
* no call waits more than ``timeout`` seconds for the server: a late coroutine is cancelled and
  the call raises (``disconnect()`` then also waits for the thread to end);
* every failure is a :class:`HardwareError` naming the server, the registers or path and the
  cause: an asyncua ``BadXxx`` status code, a timeout, a refused or lost connection;
* ``is_connected`` is true while the session is usable. A lost connection (the socket closed, the
  session gone) is torn down at once - its thread too - clears the flag and raises; only
  ``connect()`` makes a new one. A request that merely timed out keeps the connection: the server
  may answer the next one (asyncua's watchdog declares a silent server lost within seconds);
* reads and writes are split into requests of at most the server's ``MaxNodesPerRead`` /
  ``MaxNodesPerWrite`` nodes (1000 when the server does not say);
* a write batch is converted completely before anything is sent: a value that does not fit
  writes nothing of its batch.

Deviations from Open Pectus (spec 10.2): a float written to an integer type is rounded to the
nearest integer, halves away from zero, not truncated (2.9999999 from arithmetic must write 3);
text written to a number or Boolean is refused rather than converted (``bool("False")`` is true).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import socket
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NamedTuple, TypeVar

from asyncua import Client, Node, ua
from asyncua.common.ua_utils import data_type_to_variant_type

from pectus.hardware.base import HardwareError, HardwareLayerBase, Register

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Nodes per request when the server does not publish its OperationLimits (spec 10.2).
DEFAULT_MAX_NODES = 1000
#: At most this many children are listed in a "path cannot be found" message.
CHILDREN_SHOWN = 50
#: The session lifetime asked of the server, in milliseconds.
SESSION_TIMEOUT_MS = 60_000
#: Seconds the loop thread gives cancelled tasks to finish when it stops.
_CLEANUP_SECONDS = 1.0

VariantType = ua.VariantType

_INTEGER_RANGES: dict[VariantType, tuple[int, int]] = {
    VariantType.SByte: (-2 ** 7, 2 ** 7 - 1), VariantType.Byte: (0, 2 ** 8 - 1),
    VariantType.Int16: (-2 ** 15, 2 ** 15 - 1), VariantType.UInt16: (0, 2 ** 16 - 1),
    VariantType.Int32: (-2 ** 31, 2 ** 31 - 1), VariantType.UInt32: (0, 2 ** 32 - 1),
    VariantType.Int64: (-2 ** 63, 2 ** 63 - 1), VariantType.UInt64: (0, 2 ** 64 - 1),
}
# The spec clamps negative values to 0 for these; Byte is unsigned too, but the spec treats it as Int*.
_CLAMPED = frozenset({VariantType.UInt16, VariantType.UInt32, VariantType.UInt64})
_FLOAT32_MAX = 3.4028234663852886e38
_CONVERTED = frozenset({VariantType.Boolean, VariantType.Float, VariantType.Double, *_INTEGER_RANGES})

# Status codes that mean the session is gone for good: only a new connection helps.
_LOST_STATUSES = frozenset(getattr(ua.StatusCodes, name) for name in (
    "BadSessionIdInvalid", "BadSessionClosed", "BadSecureChannelIdInvalid", "BadSecureChannelClosed",
    "BadConnectionClosed", "BadNotConnected", "BadServerNotConnected", "BadShutdown", "BadServerHalted",
    "BadCommunicationError"))

_LIMIT_NODES = (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
                ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite)


# --- register options (no I/O) ------------------------------------------------------------------


def path_problem(path: Any) -> str | None:
    """What is wrong with a register's ``path`` option, or None when it is a valid browse path."""
    example = "e.g. path='Objects/2:System/2:FT01'"
    if not isinstance(path, str):
        return f"the path must be text, {example}, not {path!r}"
    elements = path.split("/")
    if elements[0] not in ("Objects", "0:Objects"):
        hint = "; separate the elements with '/', not ';'" if ";" in path else ""
        return f"path {path!r} must start at the Objects folder, {example}{hint}"
    for element in elements[1:]:
        index, _, name = element.partition(":")
        if element.count(":") != 1 or not index.isdigit() or not name:
            return (f"path {path!r}: element {element!r} must be <namespace index>:<browse name>, "
                    "e.g. '2:FT01'")
    return None


def register_problems(register: Register) -> list[str]:
    """The problems of one register's OPC-UA options (``path``, ``type``)."""
    problems = []
    if "path" not in register.options:
        problems.append("needs a path option, e.g. path='Objects/2:System/2:FT01'")
    else:
        problem = path_problem(register.options["path"])
        if problem is not None:
            problems.append(problem)
    if "type" in register.options and not isinstance(register.options["type"], VariantType):
        problems.append(f"the type option must be an asyncua.ua.VariantType such as ua.VariantType.Double, "
                        f"not {register.options['type']!r}")
    return problems


def convert_value(value: Any, variant_type: VariantType) -> Any:
    """``value`` as a node of ``variant_type`` takes it (spec 10.2's table).

    Boolean -> ``bool``; Byte and Int* -> ``int`` (floats rounded); UInt* -> ``int`` with negative
    values clamped to 0; Float, Double -> ``float``; other types are sent as they are. Raises
    ValueError (or OverflowError) for a value that is not a number or does not fit the type.
    """
    if variant_type not in _CONVERTED:
        return value
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{value!r} is not a number; map it to a number with the register's from_tag")
    if variant_type is VariantType.Boolean:
        return bool(value)
    if variant_type in (VariantType.Float, VariantType.Double):
        number = float(value)
        if variant_type is VariantType.Float and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
            raise ValueError(f"{value!r} is out of range for Float (at most {_FLOAT32_MAX:.7g} in size)")
        return number
    integer = int(value) if isinstance(value, int) else _round_half_away(float(value))
    if variant_type in _CLAMPED:
        integer = max(integer, 0)
    low, high = _INTEGER_RANGES[variant_type]
    if not low <= integer <= high:
        raise ValueError(f"{value!r} is out of range for {variant_type.name} ({low} to {high})")
    return integer


def _round_half_away(number: float) -> int:
    rounded = math.floor(abs(number) + 0.5)
    return rounded if number >= 0 else -rounded


# --- the loop thread ----------------------------------------------------------------------------


class LoopThread:
    """An asyncio event loop run by its own daemon thread until :meth:`stop`.

    Other threads hand it coroutines with :meth:`run`. Everything those coroutines touch belongs
    to the loop thread, so they need no locks. Daemon, so a forgotten loop cannot keep the process
    alive; but :meth:`stop` joins it, so nobody should need that.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            # Cancel what timed-out calls and the library left running, then release the resolver
            # threads (getaddrinfo runs in the default executor) before the loop closes.
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self._loop.run_until_complete(asyncio.wait(tasks, timeout=_CLEANUP_SECONDS))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coroutine`` on the loop; its result or exception, or TimeoutError after
        ``timeout`` seconds (the coroutine is then cancelled)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self, timeout: float) -> None:
        """Stop the loop and join the thread; RuntimeError if it is still alive after ``timeout``
        seconds (plus the time the loop gives cancelled tasks to finish)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout + _CLEANUP_SECONDS)
        if self._thread.is_alive():
            raise RuntimeError(f"thread {self.name!r} did not stop")


# --- one connection (everything async runs on its loop thread) ---------------------------------


class _NodeFacts(NamedTuple):
    """What validate_online needs to know about a register's node."""

    variant_type: VariantType | None  # None: the node takes any type (BaseDataType, Number...)
    access: set[ua.AccessLevel]
    problem: str | None  # set when the node has no data type or access level: not a variable


class _Connection:
    """One session with the server: the loop thread, a fresh asyncua Client and its caches."""

    def __init__(self, host: str, timeout: float) -> None:
        self.host = host
        self.timeout = timeout
        self.max_nodes_per_read = DEFAULT_MAX_NODES
        self.max_nodes_per_write = DEFAULT_MAX_NODES
        #: Set when a call found the session gone: the owner must drop this connection.
        self.lost = False
        self._client: Client | None = None
        self._opened = False
        self._nodes: dict[str, Node] = {}
        self._types: dict[str, VariantType | None] = {}
        self._thread = LoopThread(f"opcua {host}")

    def run(self, coroutine: Coroutine[Any, Any, T], what: str) -> T:
        """Run ``coroutine`` on the loop thread; any failure becomes a HardwareError."""
        try:
            return self._thread.run(coroutine, self.timeout)
        except HardwareError:
            raise
        except Exception as error:
            self.lost = self.lost or _is_lost(error)
            raise HardwareError(f"OPC-UA {self.host}: {what} failed: {self._reason(error)}") from error

    def close(self) -> None:
        """Say goodbye to the server if it listens, then stop the loop thread. Never raises."""
        try:
            self._thread.run(self._goodbye(), self.timeout)
        except Exception as error:  # the server may be gone already: the connection is dropped anyway
            logger.info("OPC-UA %s: closing the session failed: %s", self.host, self._reason(error))
        try:
            self._thread.stop(self.timeout)
        except RuntimeError as error:
            logger.error("OPC-UA %s: %s; it is a daemon thread, so it cannot block the process exit",
                         self.host, error)

    def _reason(self, error: BaseException) -> str:
        if isinstance(error, TimeoutError):
            return f"no answer within {self.timeout:g} s"
        if isinstance(error, ConnectionRefusedError):
            return "connection refused: is the server running, and is the port right?"
        if isinstance(error, socket.gaierror):
            return f"cannot resolve the host name ({error})"
        if isinstance(error, ConnectionError):
            return f"connection lost ({error})"
        if isinstance(error, concurrent.futures.CancelledError):
            return "cancelled, the connection was closed"
        return f"{type(error).__name__}: {error}"

    # --- coroutines, run on the loop thread

    @property
    def client(self) -> Client:
        assert self._client is not None, "open() first"
        return self._client

    async def open(self) -> None:
        self._client = Client(self.host, timeout=self.timeout)
        # Polling and asyncua's watchdog keep the session alive; a short timeout frees a PLC's
        # session slot soon after a crashed engine (asyncua asks for an hour).
        self._client.session_timeout = SESSION_TIMEOUT_MS
        await self._client.connect()
        self._opened = True
        limits = await self.client.read_attributes([self.client.get_node(n) for n in _LIMIT_NODES])
        self.max_nodes_per_read, self.max_nodes_per_write = (_limit(value) for value in limits)

    async def _goodbye(self) -> None:
        if self._client is None:
            return
        try:
            if self._opened:
                await self._client.disconnect()
        finally:
            self._client.disconnect_socket()  # also when the goodbye failed or was cancelled

    async def read(self, registers: Sequence[Register]) -> list[Any]:
        nodes = await self._resolve(registers)
        datavalues: list[ua.DataValue] = []
        for chunk in _chunks(nodes, self.max_nodes_per_read):
            datavalues += await self.client.read_attributes(chunk, ua.AttributeIds.Value)
        failures = [f"'{r.name}' ({r.options['path']}): {_status(dv.StatusCode)}"
                    for r, dv in zip(registers, datavalues) if dv.StatusCode.is_bad()]
        if failures:
            raise HardwareError(f"OPC-UA {self.host}: reading failed for " + "; ".join(failures))
        return [dv.Value.Value if dv.Value is not None else None for dv in datavalues]

    async def write(self, values: Sequence[Any], registers: Sequence[Register]) -> None:
        nodes = await self._resolve(registers)
        types = await self._write_types(registers, nodes)
        datavalues = [ua.DataValue(self._variant(value, register, variant_type))
                      for value, register, variant_type in zip(values, registers, types, strict=True)]
        results: list[ua.StatusCode] = []
        for start in range(0, len(nodes), self.max_nodes_per_write):
            end = start + self.max_nodes_per_write
            # Plain DataValues without timestamps: some PLCs refuse writes that carry a timestamp.
            results += await self.client.uaclient.write_attributes(
                [node.nodeid for node in nodes[start:end]], datavalues[start:end], ua.AttributeIds.Value)
        failures = [f"'{r.name}' ({r.options['path']}): {_status(status)}"
                    for r, status in zip(registers, results) if not status.is_good()]
        if failures:
            raise HardwareError(f"OPC-UA {self.host}: the server refused the write of " + "; ".join(failures))

    async def facts(self, registers: Sequence[Register]) -> list[_NodeFacts]:
        nodes = await self._resolve(registers)
        data_types: list[ua.DataValue] = []
        access_levels: list[ua.DataValue] = []
        for chunk in _chunks(nodes, self.max_nodes_per_read):
            data_types += await self.client.read_attributes(chunk, ua.AttributeIds.DataType)
            access_levels += await self.client.read_attributes(chunk, ua.AttributeIds.AccessLevel)
        facts = []
        for data_type, access in zip(data_types, access_levels):
            if not data_type.StatusCode.is_good() or not access.StatusCode.is_good():
                status = access.StatusCode if data_type.StatusCode.is_good() else data_type.StatusCode
                facts.append(_NodeFacts(None, set(), f"it is not a variable ({_status(status)})"))
            else:
                facts.append(_NodeFacts(await self._variant_type(data_type),
                                        ua.AccessLevel.parse_bitfield(access.Value.Value), None))
        return facts

    async def _resolve(self, registers: Sequence[Register]) -> list[Node]:
        """The node of every register, translating the browse paths not yet in the cache."""
        missing = [r for r in registers if r.name not in self._nodes]
        bad = [f"register '{r.name}': {problem}" for r in missing
               if (problem := path_problem(r.options.get("path"))) is not None]
        if bad:
            raise HardwareError(f"OPC-UA {self.host}: " + "\n".join(bad))
        not_found = []
        root = self.client.nodes.root
        for chunk in _chunks(missing, self.max_nodes_per_read):
            results = await root.get_children_by_path([r.options["path"].split("/") for r in chunk],
                                                      raise_on_partial_error=False)
            for register, targets in zip(chunk, results):
                if targets:
                    self._nodes[register.name] = targets[0]
                else:
                    not_found.append(await self._not_found(register))
        if not_found:
            raise HardwareError("\n".join(not_found))
        return [self._nodes[r.name] for r in registers]

    async def _not_found(self, register: Register) -> str:
        """Why ``register``'s path cannot be found: its deepest existing parent and that one's children."""
        path: str = register.options["path"]
        elements = path.split("/")
        prefixes = [elements[:n] for n in range(len(elements) - 1, 0, -1)]  # the longest first
        results = await self.client.nodes.root.get_children_by_path(prefixes, raise_on_partial_error=False)
        parent, depth = self.client.nodes.root, 0
        for prefix, targets in zip(prefixes, results):
            if targets:
                parent, depth = targets[0], len(prefix)
                break
        children = sorted(d.BrowseName.to_string() for d in await parent.get_children_descriptions())
        shown = ", ".join(children[:CHILDREN_SHOWN]) + (
            f" and {len(children) - CHILDREN_SHOWN} more" if len(children) > CHILDREN_SHOWN else "")
        parent_path = "/".join(elements[:depth]) or "the root folder"
        return (f"OPC-UA {self.host}: register '{register.name}': path '{path}' cannot be found: "
                f"'{parent_path}' has no child '{elements[depth]}'; its children are: {shown or '(none)'}")

    async def _write_types(self, registers: Sequence[Register], nodes: Sequence[Node]) -> list[VariantType | None]:
        """Each register's type: its ``type`` option, else the node's data type (asked once per connection)."""
        unknown = [(r, n) for r, n in zip(registers, nodes) if "type" not in r.options and r.name not in self._types]
        for chunk in _chunks(unknown, self.max_nodes_per_read):
            data_types = await self.client.read_attributes([node for _, node in chunk], ua.AttributeIds.DataType)
            for (register, _), data_type in zip(chunk, data_types):
                if data_type.StatusCode.is_bad():
                    raise HardwareError(f"OPC-UA {self.host}: register '{register.name}' ({register.options['path']}) "
                                        f"is not a variable: {_status(data_type.StatusCode)}")
                self._types[register.name] = await self._variant_type(data_type)
        return [r.options["type"] if "type" in r.options else self._types[r.name] for r in registers]

    async def _variant_type(self, data_type: ua.DataValue) -> VariantType | None:
        assert data_type.Value is not None
        variant_type = await data_type_to_variant_type(self.client.get_node(data_type.Value.Value))
        return None if variant_type is VariantType.Variant else variant_type

    def _variant(self, value: Any, register: Register, variant_type: VariantType | None) -> ua.Variant:
        if variant_type is None:
            return ua.Variant(value)
        try:
            converted = convert_value(value, variant_type)
        except (ValueError, TypeError, OverflowError) as error:
            raise HardwareError(f"OPC-UA {self.host}: cannot write {value!r} to register '{register.name}' "
                                f"({register.options['path']}, {variant_type.name}): {error}") from error
        if converted != value:
            logger.warning("OPC-UA register '%s': writing %r as %r (%s)", register.name, value, converted,
                           variant_type.name)
        return ua.Variant(converted, variant_type)


def _limit(datavalue: ua.DataValue) -> int:
    value = datavalue.Value.Value if datavalue.StatusCode.is_good() and datavalue.Value is not None else None
    # 0 means "no limit" in OPC-UA; stay at the default, which every server takes.
    return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_NODES


def _status(status: ua.StatusCode) -> str:
    return f"{status.name} ({status.doc})" if status.doc else status.name


def _is_lost(error: BaseException) -> bool:
    if isinstance(error, ua.UaStatusCodeError):
        return error.code in _LOST_STATUSES
    return isinstance(error, (ConnectionError, OSError)) and not isinstance(error, TimeoutError)


def _chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


def _names(registers: Sequence[Register], shown: int = 5) -> str:
    names = ", ".join(r.name for r in registers[:shown])
    return names + (f" and {len(registers) - shown} more" if len(registers) > shown else "")


# --- the driver ---------------------------------------------------------------------------------


class OPCUAHardware(HardwareLayerBase):
    """Registers on the OPC-UA server at ``host`` (``opc.tcp://host:port``). ``timeout``: seconds
    any call waits for the server at most."""

    def __init__(self, host: str, timeout: float = 2.0) -> None:
        super().__init__()
        if not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        self.host = host
        self.timeout = timeout
        self._connection: _Connection | None = None

    @property
    def max_nodes_per_read(self) -> int:
        """The server's MaxNodesPerRead as read on connect (the default while disconnected)."""
        return self._connection.max_nodes_per_read if self._connection else DEFAULT_MAX_NODES

    @property
    def max_nodes_per_write(self) -> int:
        return self._connection.max_nodes_per_write if self._connection else DEFAULT_MAX_NODES

    def connect(self) -> None:
        """Open a new session with a fresh client (closing any old one first)."""
        self.disconnect()
        connection = _Connection(self.host, self.timeout)
        try:
            connection.run(connection.open(), "connect")
        except HardwareError:
            connection.close()
            raise
        self._connection = connection
        super().connect()

    def disconnect(self) -> None:
        """Close the session and stop its thread. Never raises: the connection is gone either way."""
        connection, self._connection = self._connection, None
        super().disconnect()
        if connection is not None:
            connection.close()

    def read(self, register: Register) -> Any:
        return self.read_batch([register])[0]

    def write(self, value: Any, register: Register) -> None:
        self.write_batch([value], [register])

    def read_batch(self, registers: Sequence[Register]) -> list[Any]:
        if not registers:
            return []
        self._check_direction(registers, "read")
        return self._run(lambda c: c.read(registers), f"read {_names(registers)}")

    def write_batch(self, values: Sequence[Any], registers: Sequence[Register]) -> None:
        if len(values) != len(registers):
            raise ValueError(f"write_batch got {len(values)} values for {len(registers)} registers")
        if not registers:
            return
        self._check_direction(registers, "write")
        self._run(lambda c: c.write(values, registers), f"write {_names(registers)}")

    def validate_offline(self) -> None:
        """Check the host URL and every register's ``path`` and ``type`` options."""
        problems = []
        if not isinstance(self.host, str) or not self.host.startswith("opc.tcp://"):
            problems.append(f"the host must be an OPC-UA URL such as 'opc.tcp://192.168.0.10:4840', not {self.host!r}")
        problems += [f"register '{r.name}': {problem}"
                     for r in self.registers.values() for problem in register_problems(r)]
        if problems:
            raise HardwareError(f"{self}: " + "\n".join(problems))

    def validate_online(self) -> None:
        """Check every register's node on the server: it exists, is a variable of the ``type``
        option's type (stored into the options when none was given), and may be read (Read
        registers) and written (Write registers)."""
        registers = list(self.registers.values())
        if not registers:
            return
        facts = self._run(lambda c: c.facts(registers), "validate the registers")
        problems = []
        for register, fact in zip(registers, facts):
            where = f"register '{register.name}' ({register.options['path']})"
            if fact.problem is not None:
                problems.append(f"{where}: {fact.problem}")
                continue
            wanted = register.options.get("type")
            if wanted is None and fact.variant_type is not None:
                register.options["type"] = fact.variant_type
            elif wanted is not None and fact.variant_type is not None and wanted != fact.variant_type:
                problems.append(f"{where}: the type option is {wanted.name} but the server's node is "
                                f"{fact.variant_type.name}")
            for needed, access in ((register.readable, ua.AccessLevel.CurrentRead),
                                   (register.writable, ua.AccessLevel.CurrentWrite)):
                if needed and access not in fact.access:
                    allowed = ", ".join(sorted(a.name for a in fact.access)) or "nothing"
                    problems.append(f"{where}: the direction is {register.direction.name} but the server's "
                                    f"node lacks {access.name} access (it allows {allowed})")
        if problems:
            raise HardwareError(f"OPC-UA {self.host}: " + "\n".join(problems))

    def _check_direction(self, registers: Sequence[Register], verb: str) -> None:
        wrong = [r for r in registers if not (r.readable if verb == "read" else r.writable)]
        if wrong:
            raise HardwareError(f"{self}: cannot {verb} " + ", ".join(
                f"register '{r.name}' (its direction is {r.direction.name})" for r in wrong))

    def _run(self, call: Callable[[_Connection], Coroutine[Any, Any, T]], what: str) -> T:
        connection = self._connection
        if connection is None:
            raise HardwareError(f"{self}: cannot {what}: not connected")
        try:
            return connection.run(call(connection), what)
        except HardwareError:
            if connection.lost:
                # The session will not come back: free its thread now; connect() makes a new one.
                self.disconnect()
            raise

    @property
    def description(self) -> str:
        return f"{type(self).__name__} at {self.host}"

    def __str__(self) -> str:
        return f"{type(self).__name__}(host={self.host!r}, connected={self.is_connected})"
