"""The engine <-> aggregator protocol: a closed, versioned catalogue of JSON messages.

Over one WebSocket per engine, one JSON object per text frame, each with a ``type``:

engine -> aggregator
    ``hello``      first frame: protocol version, engine identity, engine version, secret
    ``records``    durable records from the engine's outbox, each with its sequence number
    ``live``       the latest tag values, for the browsers (not stored; newer ones replace them)
    ``reply``      the answer to a ``request``
    ``heartbeat``

aggregator -> engine
    ``welcome``    the handshake succeeded; ``last_seq`` is the last record the aggregator stored
    ``refused``    the handshake failed (protocol version, secret): the reason, then close
    ``ack``        every record up to ``seq`` is stored (committed): the engine may forget them
    ``request``    a user's request (control, method, inject, cancel, force, process value)
    ``heartbeat``

Delivery is at-least-once: the engine keeps records until acknowledged and resends after a
reconnect from ``last_seq``; the aggregator drops records it already has (``seq <= last_seq``).

Invariants of :func:`decode`: it never raises anything but :class:`ProtocolError`, whose message
says what is wrong; it refuses frames over ``MAX_FRAME`` bytes, unknown types, missing or
ill-typed fields. This module does no I/O.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Union, get_type_hints

PROTOCOL_VERSION = 1
MAX_FRAME = 4 * 1024 * 1024


class ProtocolError(ValueError):
    """A frame that is not a valid message of this protocol."""


@dataclass(frozen=True, slots=True)
class Hello:
    type: ClassVar[str] = "hello"
    protocol: int
    engine_id: str
    computer_name: str
    uod_name: str
    engine_version: str
    secret: str = ""


@dataclass(frozen=True, slots=True)
class Records:
    """Outbox records: each {seq: int, kind: str, time: float, run: str | None, data: dict}."""

    type: ClassVar[str] = "records"
    records: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Live:
    type: ClassVar[str] = "live"
    values: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Reply:
    type: ClassVar[str] = "reply"
    request_id: int
    accepted: bool
    reason: str = ""
    conflict: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    type: ClassVar[str] = "heartbeat"


@dataclass(frozen=True, slots=True)
class Welcome:
    type: ClassVar[str] = "welcome"
    protocol: int
    engine_id: str
    last_seq: int


@dataclass(frozen=True, slots=True)
class Refused:
    type: ClassVar[str] = "refused"
    reason: str


@dataclass(frozen=True, slots=True)
class Ack:
    type: ClassVar[str] = "ack"
    seq: int


@dataclass(frozen=True, slots=True)
class Request:
    type: ClassVar[str] = "request"
    request_id: int
    request: str
    detail: dict[str, Any] = field(default_factory=dict)
    user: dict[str, str] = field(default_factory=dict)


Message = Union[Hello, Records, Live, Reply, Heartbeat, Welcome, Refused, Ack, Request]
MESSAGES: dict[str, type] = {cls.type: cls for cls in (Hello, Records, Live, Reply, Heartbeat, Welcome, Refused,
                                                       Ack, Request)}
FROM_ENGINE = frozenset({"hello", "records", "live", "reply", "heartbeat"})
FROM_AGGREGATOR = frozenset({"welcome", "refused", "ack", "request", "heartbeat"})
RECORD_KINDS = frozenset({"uod", "run_started", "run_stopped", "state", "samples", "runlog", "lines", "method",
                          "error"})
_CHECKS = {int: lambda v: isinstance(v, int) and not isinstance(v, bool), str: lambda v: isinstance(v, str),
           bool: lambda v: isinstance(v, bool), list: lambda v: isinstance(v, list),
           dict: lambda v: isinstance(v, dict)}


def encode(message: Message) -> str:
    # Shallow, not dataclasses.asdict: a records frame holds thousands of nested values.
    data = {f.name: getattr(message, f.name) for f in fields(message)}
    data["type"] = message.type
    return json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)


def decode(frame: str | bytes, *, allowed: frozenset[str] | None = None) -> Message:
    """One frame to a message; ProtocolError with the reason when it is not a valid one."""
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(frame)} bytes is over the limit of {MAX_FRAME}")
    try:
        data = json.loads(frame)
    except (ValueError, UnicodeDecodeError) as error:
        raise ProtocolError(f"frame is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ProtocolError("frame is not a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in MESSAGES:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {', '.join(sorted(MESSAGES))}")
    if allowed is not None and kind not in allowed:
        raise ProtocolError(f"message type '{kind}' is not expected here")
    cls = MESSAGES[kind]
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ProtocolError(f"'{kind}' needs the field '{f.name}'")
            continue
        value = data[f.name]
        expected = getattr(hints[f.name], "__origin__", hints[f.name])
        if expected in _CHECKS and not _CHECKS[expected](value):
            raise ProtocolError(f"'{kind}.{f.name}' must be {expected.__name__}, not {type(value).__name__}")
        values[f.name] = value
    if cls is Records:
        for record in values["records"]:
            _check_record(record)
    return cls(**values)


def _check_record(record: Any) -> None:
    if not isinstance(record, dict):
        raise ProtocolError("a record must be an object")
    seq, kind, time, data = record.get("seq"), record.get("kind"), record.get("time"), record.get("data")
    if not _CHECKS[int](seq) or seq < 1:
        raise ProtocolError(f"record seq must be a positive integer, not {seq!r}")
    if kind not in RECORD_KINDS:
        raise ProtocolError(f"record {seq}: unknown kind {kind!r}")
    if not isinstance(time, (int, float)) or isinstance(time, bool):
        raise ProtocolError(f"record {seq}: time must be a number")
    if not isinstance(data, dict):
        raise ProtocolError(f"record {seq}: data must be an object")
    run = record.get("run")
    if run is not None and not isinstance(run, str):
        raise ProtocolError(f"record {seq}: run must be a string or null")



def catalogue_markdown() -> str:
    """The message catalogue as a Markdown table (docs/protocol.md embeds it; a test keeps it current)."""
    rows = ["| message | from | fields |", "|---|---|---|"]
    for name, cls in MESSAGES.items():
        hints = get_type_hints(cls)
        side = " and ".join(s for s, names in (("engine", FROM_ENGINE), ("aggregator", FROM_AGGREGATOR))
                            if name in names)
        described = ", ".join(f"`{f.name}`: {getattr(hints[f.name], '__name__', str(hints[f.name]))}"
                              for f in fields(cls)) or "(none)"
        rows.append(f"| `{name}` | {side} | {described} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(catalogue_markdown())
