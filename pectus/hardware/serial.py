r"""Serial ASCII instruments: a balance, a pump, a thermostat on an RS-232 or USB serial port.

Many lab instruments speak a line protocol: the computer sends a command line, the instrument
answers with one line. :class:`SerialHardware` maps each UOD register to one such exchange,
described by the register's options.

A Read register sends a query and parses the reply::

    .with_hardware_register("Weight", RegisterDirection.Read,
                            query="W?", pattern=r"^W\s+(?P<value>[-+0-9.]+)\s*g$")

* ``query``: the command to send (the line ending is added);
* ``pattern``: a regular expression the reply must match (``re.search``, so anchor it with
  ``^...$``), with a named group ``value``;
* ``convert`` (optional, default ``float``): turns the ``value`` text into the register value.

A Write register formats a command from the value::

    .with_hardware_register("Target", RegisterDirection.Write, command="S{value:.1f}", ack=r"^OK$")

* ``command``: a format string whose only field is ``value``, e.g. ``"S{value:.1f}"`` or ``"T"``;
* ``ack`` (optional): a regular expression the reply must match; without it (or with ``None``)
  no reply is read;
* a value of ``None`` is not sent, so a momentary command (a tare) maps its idle state to
  ``None`` with ``from_tag`` and is sent only when the tag asks for it.

Any register may override the driver's ``line_ending`` and ``timeout`` (seconds).

Invariants:

* blocking, one call at a time: the engine's hardware actor calls every method from a worker
  thread and never two at once, so the driver holds no lock and starts no thread;
* bounded: a reply is awaited at most ``timeout`` seconds (a reply trickling in byte by byte at
  most twice that) and a write at most the driver's ``timeout``, so no call blocks forever;
* one exchange = discard stale input, send one line, read one line: a late reply to an earlier
  query is never taken for the answer to this one;
* every failure raises :class:`HardwareError` naming the port, the register, what was sent and
  what came back (``repr``, truncated);
* ``is_connected`` is true exactly while the port is open and usable. An OS-level error (the
  USB adapter unplugged, the device gone) closes the port, clears the flag and raises; only
  ``connect()`` opens it again. A missing or garbled reply leaves the port open: the instrument
  may well answer the next query.
"""

from __future__ import annotations

import codecs
import contextlib
import re
import string
from typing import Any

import serial

from pectus.hardware.base import HardwareError, HardwareLayerBase, Register

try:
    from termios import error as _TermiosError
except ImportError:  # Windows: pyserial reports every port failure as a SerialException there
    _PORT_ERRORS: tuple[type[BaseException], ...] = (OSError,)
else:
    # SerialException is an OSError; flushing a vanished tty raises termios.error, which is not.
    _PORT_ERRORS = (OSError, _TermiosError)

#: Longest repr of a reply shown in an error message.
REPR_LIMIT = 80


def _shown(data: bytes | str) -> str:
    """``repr(data)``, cut to :data:`REPR_LIMIT` characters so one bad reply cannot flood the log."""
    text = repr(data)
    if len(text) <= REPR_LIMIT:
        return text
    return f"{text[:REPR_LIMIT]}... ({len(data)} {'bytes' if isinstance(data, bytes) else 'characters'})"


class SerialHardware(HardwareLayerBase):
    """Instruments on one serial port. ``port`` is a device (``/dev/ttyUSB0``, ``COM3``) or a
    pyserial URL (``socket://host:port``); ``serial_options`` go to ``serial.serial_for_url``
    (``bytesize``, ``parity``, ``stopbits``, ``rtscts``...)."""

    def __init__(self, port: str, baudrate: int = 9600, timeout: float = 1.0, line_ending: str = "\r\n",
                 encoding: str = "ascii", **serial_options: Any) -> None:
        super().__init__()
        # These are mistakes in the UOD file: failing here points the loader at its line.
        if not isinstance(port, str) or not port:
            raise ValueError(f"SerialHardware needs a port such as '/dev/ttyUSB0' or 'COM3', not {port!r}")
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"SerialHardware timeout must be a number of seconds > 0, not {timeout!r}")
        if not isinstance(line_ending, str) or not line_ending:
            raise ValueError(f"SerialHardware line_ending must be a non-empty string, not {line_ending!r}")
        codecs.lookup(encoding)  # LookupError: unknown encoding
        self.port = port
        self.baudrate = baudrate
        self.timeout = float(timeout)
        self.line_ending = line_ending
        self.encoding = encoding
        self.serial_options = serial_options
        self._serial: serial.SerialBase | None = None

    # --- connection

    def connect(self) -> None:
        """Open the port (closing it first if open). Raises HardwareError if it cannot be opened."""
        self._drop_port()
        try:
            self._serial = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=self.timeout,
                                                 write_timeout=self.timeout, **self.serial_options)
        except (ValueError, *_PORT_ERRORS) as error:
            raise HardwareError(f"{self._name}: cannot open the port: {error}") from error
        super().connect()

    def disconnect(self) -> None:
        """Close the port. The driver is disconnected afterwards even if closing fails."""
        try:
            self._close_port()
        except _PORT_ERRORS as error:
            raise HardwareError(f"{self._name}: closing the port failed: {_reason(error)}") from error

    def _close_port(self) -> None:
        super().disconnect()
        port, self._serial = self._serial, None
        if port is not None:
            port.close()

    def _drop_port(self) -> None:
        """Close the port as far as the OS still lets us: it failed, or is about to be reopened."""
        with contextlib.suppress(*_PORT_ERRORS):
            self._close_port()

    # --- I/O

    def read(self, register: Register) -> Any:
        if not register.readable:
            raise HardwareError(f"{self._name}: cannot read register '{register.name}': "
                                f"its direction is {register.direction.name}")
        query = self._option(register, "query")
        pattern = self._regex(register, "pattern")
        raw = self._exchange(register, query, reply_wanted=True)
        match = pattern.search(raw.decode(self.encoding, errors="replace"))
        if match is None:
            raise HardwareError(f"{self._name}: register '{register.name}': the reply {_shown(raw)} to "
                                f"{query!r} does not match pattern {pattern.pattern!r}")
        text = match.groupdict().get("value")
        if text is None:
            raise HardwareError(f"{self._name}: register '{register.name}': pattern {pattern.pattern!r} "
                                f"has no group 'value' that matched in the reply {_shown(raw)} to {query!r}")
        convert = register.options.get("convert", float)
        try:
            return convert(text)
        except Exception as error:  # a UOD's converter may raise anything; say where it failed
            name = getattr(convert, "__name__", repr(convert))
            raise HardwareError(f"{self._name}: register '{register.name}': {name}() cannot convert {text!r} "
                                f"from the reply {_shown(raw)} to {query!r}: {error}") from error

    def write(self, value: Any, register: Register) -> None:
        if not register.writable:
            raise HardwareError(f"{self._name}: cannot write register '{register.name}': "
                                f"its direction is {register.direction.name}")
        if value is None:
            return  # a momentary command at rest: nothing to send
        command = self._option(register, "command")
        try:
            line = command.format(value=value)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            raise HardwareError(f"{self._name}: register '{register.name}': cannot format command "
                                f"{command!r} with value {value!r}: {error}") from error
        ack = self._regex(register, "ack") if register.options.get("ack") is not None else None
        raw = self._exchange(register, line, reply_wanted=ack is not None)
        if ack is not None and ack.search(raw.decode(self.encoding, errors="replace")) is None:
            raise HardwareError(f"{self._name}: register '{register.name}': the reply {_shown(raw)} to "
                                f"{line!r} does not match ack {ack.pattern!r}")

    def _exchange(self, register: Register, line: str, reply_wanted: bool) -> bytes:
        """Send ``line`` and, if wanted, return the reply without its line ending."""
        port = self._serial
        if port is None:
            raise HardwareError(f"{self._name}: cannot send {line!r} for register '{register.name}': "
                                "not connected")
        line_ending = register.options.get("line_ending", self.line_ending)
        timeout = register.options.get("timeout", self.timeout)
        try:
            request = (line + line_ending).encode(self.encoding)
        except UnicodeEncodeError as error:
            raise HardwareError(f"{self._name}: register '{register.name}': cannot encode {line!r} "
                                f"as {self.encoding}: {error}") from error
        end = line_ending.encode(self.encoding)
        try:
            if port.timeout != timeout:  # only on a per-register override: pyserial reconfigures the port
                port.timeout = timeout
            port.reset_input_buffer()
            port.write(request)
            if not reply_wanted:
                return b""
            reply = port.read_until(end)
        except _PORT_ERRORS as error:
            self._drop_port()
            raise HardwareError(f"{self._name}: register '{register.name}': the port failed while sending "
                                f"{line!r}: {_reason(error)}; is the instrument plugged in? The port is closed "
                                "until the next connect()") from error
        if not reply.endswith(end):
            got = "no reply" if not reply else f"an incomplete reply {_shown(reply)} (no {line_ending!r})"
            raise HardwareError(f"{self._name}: register '{register.name}': {got} to {line!r} "
                                f"within {timeout:g} s")
        return reply[:-len(end)]

    def _option(self, register: Register, name: str) -> Any:
        try:
            return register.options[name]
        except KeyError:
            needs = "query= and pattern=" if name in ("query", "pattern") else "command="
            raise HardwareError(f"{self._name}: register '{register.name}' has no option {name}=; "
                                f"a serial register needs {needs}") from None

    def _regex(self, register: Register, name: str) -> re.Pattern[str]:
        pattern = self._option(register, name)
        try:
            return re.compile(pattern)  # re caches compiled patterns, so this costs a lookup per call
        except (re.error, TypeError) as error:
            raise HardwareError(f"{self._name}: register '{register.name}': {name}={pattern!r} is not a "
                                f"regular expression: {error}") from error

    # --- validation

    def validate_offline(self) -> None:
        """Check every register's options; raise one HardwareError listing every problem."""
        problems = [f"register '{register.name}': {problem}"
                    for register in self.registers.values() for problem in self._register_problems(register)]
        if problems:
            raise HardwareError(f"{self._name}: {len(problems)} register problem(s):\n"
                                + "\n".join(f"  {p}" for p in problems))

    def _register_problems(self, register: Register) -> list[str]:
        options = register.options
        problems: list[str] = []
        if register.readable:
            query = options.get("query")
            if not isinstance(query, str) or not query:
                problems.append(f"a Read register needs query= (the command that asks for the value), "
                                f"not {query!r}")
            else:
                problems += self._encoding_problems("query", query)
            problems += _regex_problems("pattern", options.get("pattern"), group="value")
            if "convert" in options and not callable(options["convert"]):
                problems.append(f"convert= must be a function such as float or int, not {options['convert']!r}")
        if register.writable:
            problems += self._command_problems(options.get("command"))
            if options.get("ack") is not None:
                problems += _regex_problems("ack", options["ack"], group=None)
        if "line_ending" in options:
            line_ending = options["line_ending"]
            if not isinstance(line_ending, str) or not line_ending:
                problems.append(f"line_ending= must be a non-empty string, not {line_ending!r}")
            else:
                problems += self._encoding_problems("line_ending", line_ending)
        if "timeout" in options:
            timeout = options["timeout"]
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
                problems.append(f"timeout= must be a number of seconds > 0, not {timeout!r}")
        return problems

    def _command_problems(self, command: Any) -> list[str]:
        if not isinstance(command, str) or not command:
            return [f"a Write register needs command= (a format string such as 'S{{value:.1f}}'), not {command!r}"]
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(command) if field is not None]
        except ValueError as error:
            return [f"command {command!r} is not a valid format string: {error}"]
        # The value is passed by keyword only, so '{}' or '{speed}' would fail at the first write.
        wrong = [field for field in fields if re.split(r"[.\[]", field, maxsplit=1)[0] != "value"]
        problems = [f"command {command!r} uses {{{field}}}; its only field is {{value}}" for field in wrong]
        return problems + self._encoding_problems("command", command)

    def _encoding_problems(self, option: str, text: str) -> list[str]:
        try:
            text.encode(self.encoding)
        except UnicodeEncodeError as error:
            return [f"{option} {text!r} cannot be encoded as {self.encoding}: {error}"]
        return []

    def validate_online(self) -> None:
        """Read every readable register once; raise one HardwareError listing every failure."""
        problems = []
        for register in self.registers.values():
            if not register.readable:
                continue
            try:
                self.read(register)
            except HardwareError as error:
                problems.append(str(error))
            if not self._is_connected:
                break  # not connected, or the port just failed: every other read would fail the same way
        if problems:
            raise HardwareError(f"{self._name}: the online check failed:\n" + "\n".join(f"  {p}" for p in problems))

    # --- description

    @property
    def _name(self) -> str:
        return f"SerialHardware {self.port}"

    @property
    def description(self) -> str:
        return f"{type(self).__name__} on {self.port} at {self.baudrate} baud"

    def __str__(self) -> str:
        return f"SerialHardware(is_connected={self._is_connected}, port={self.port!r}, baudrate={self.baudrate})"


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError):
        return str(error)
    # termios.error carries (errno, message) like an OSError, but prints as a tuple.
    return "[Errno {}] {}".format(*error.args) if len(error.args) == 2 else str(error)


def _pattern_text(pattern: Any) -> str:
    return pattern.pattern if isinstance(pattern, re.Pattern) else str(pattern)


def _regex_problems(option: str, pattern: Any, group: str | None) -> list[str]:
    if pattern is None:
        example = r"'^W\s+(?P<value>[-+0-9.]+)\s*g$'" if group else "'^OK$'"
        return [f"{option}= is required (a regular expression such as {example})"]
    if not isinstance(pattern, (str, re.Pattern)):
        return [f"{option}= must be a regular expression (a string), not {pattern!r}"]
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        return [f"{option} {_pattern_text(pattern)!r} is not a valid regular expression: {error}"]
    if group is not None and group not in compiled.groupindex:
        return [f"{option} {_pattern_text(pattern)!r} needs a named group (?P<{group}>...) around the value"]
    return []
