"""The engine <-> aggregator protocol: a closed, versioned catalogue of JSON messages.

Over one WebSocket per engine, one JSON object per text frame, each with a ``type``:

engine -> aggregator
    ``hello``      first frame: protocol version, engine identity and credential, the outbox it
                   sends from (its id and newest sequence number) and the run it has active
    ``records``    durable records from the engine's outbox, each with its sequence number
    ``live``       the latest tag values, for the browsers (not stored; newer ones replace them)
    ``reply``      the answer to a ``request``
    ``heartbeat``

aggregator -> engine
    ``welcome``    the handshake succeeded; ``last_seq`` is the last record the aggregator stored
                   from this outbox (0 for an outbox it has never seen), ``max_frame`` the size
                   of frame it accepts
    ``refused``    the handshake failed: the reason for a person, a ``code`` for the program
                   (one of :data:`REFUSAL_CODES`)
    ``ack``        every record up to ``seq`` is handled (stored, or refused and listed in
                   ``refused`` with the reason): the engine may forget them
    ``request``    a user's request (control, method, inject, cancel, force, process value)
    ``heartbeat``

A standby aggregator (one that waits to take over a PostgreSQL store: pectus.actors.standby)
refuses the WebSocket handshake itself: HTTP 503, with a ``refused`` message of code ``standby``
as the body (:func:`standby_refusal` reads it). An engine given several aggregator addresses
tries the next one at once; nginx in front (``proxy_next_upstream http_503``) tries its next
upstream. An engine that predates the code sees a failed handshake, and backs off and retries.

Delivery is at-least-once: the engine keeps records until acknowledged and resends after a
reconnect from ``last_seq``; the aggregator drops records it already has (``seq <= last_seq`` of
that outbox). The records' own schemas are in :mod:`pectus.events.records`: a frame carries them
undecoded (``msgspec.Raw``), so one bad record is refused on its own, not with its whole frame.

Invariants of :func:`decode`: it never raises anything but :class:`ProtocolError`, whose message
says what is wrong (and where, as a JSON path); it refuses frames over ``MAX_FRAME`` bytes, deep
nesting, unknown types, missing, unknown or ill-typed fields, non-finite numbers and strings that
are not valid Unicode. This module does no I/O.
"""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args

import msgspec

from pectus.events.records import Name, RunId, Scalar, Time, unicode_hint

PROTOCOL_VERSION = 2
MAX_FRAME = 4 * 1024 * 1024
MAX_CREDENTIAL = 16 * 1024  # an Entra ID access token is a few KiB

OutboxId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
Short = Annotated[str, msgspec.Meta(max_length=200)]


class ProtocolError(ValueError):
    """A frame that is not a valid message of this protocol."""


class _Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    @property
    def type(self) -> str:
        return self.__struct_config__.tag  # type: ignore[return-value]


class Hello(_Message, tag="hello"):
    protocol: int
    engine_id: Name
    computer_name: Short
    uod_name: Short
    engine_version: Short
    credential: Annotated[str, msgspec.Meta(max_length=MAX_CREDENTIAL)] = ""
    outbox: OutboxId | None = None
    outbox_seq: Annotated[int, msgspec.Meta(ge=0)] = 0
    run: RunId | None = None


class Records(_Message, tag="records"):
    """Outbox records, each {seq, kind, time, run, data} (see :mod:`pectus.events.records`)."""

    records: list[msgspec.Raw]


class LiveValue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name
    value: Scalar
    time: Time
    unit: Short | None = None
    simulated: bool = False


class Live(_Message, tag="live"):
    values: Annotated[list[LiveValue], msgspec.Meta(max_length=100_000)]


class Reply(_Message, tag="reply"):
    """``run``: the engine's run once it applied the request (a Start's answer names the new run)."""

    request_id: int
    accepted: bool
    reason: Annotated[str, msgspec.Meta(max_length=65_536)] = ""
    conflict: bool = False
    run: RunId | None = None


class Heartbeat(_Message, tag="heartbeat"):
    pass


class Welcome(_Message, tag="welcome"):
    protocol: int
    engine_id: str
    last_seq: int
    outbox: str | None = None
    max_frame: int = MAX_FRAME


class Refused(_Message, tag="refused"):
    reason: str
    code: str = ""


# What a ``refused`` message's ``code`` may be (docs/protocol.md, "The handshake", says when each is sent).
STANDBY = "standby"  # not the active aggregator of its store: try the next address
REFUSAL_CODES = ("protocol", "identity", "credential", "duplicate", "throttled", STANDBY)


class RefusedRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seq: int
    reason: str


class Ack(_Message, tag="ack"):
    seq: int
    refused: list[RefusedRecord] = []


class Request(_Message, tag="request"):
    request_id: int
    request: str
    detail: dict[str, Any] = {}
    user: dict[str, str] = {}


Message = Union[Hello, Records, Live, Reply, Heartbeat, Welcome, Refused, Ack, Request]
MESSAGES: dict[str, type[_Message]] = {cls.__struct_config__.tag: cls for cls in get_args(Message)}
FROM_ENGINE = frozenset({"hello", "records", "live", "reply", "heartbeat"})
FROM_AGGREGATOR = frozenset({"welcome", "refused", "ack", "request", "heartbeat"})

_decoder = msgspec.json.Decoder(Message)
_encoder = msgspec.json.Encoder()


class _Version(msgspec.Struct):
    protocol: Any = None


def encode(message: Message) -> str:
    return _encoder.encode(message).decode()


def protocol_of(frame: str | bytes) -> Any:
    """The ``protocol`` a hello claims, read before the hello is checked against this version's
    schema: an engine of another version is told which versions differ, not which fields."""
    try:
        return msgspec.json.decode(frame, type=_Version).protocol
    except (msgspec.MsgspecError, RecursionError):
        return None


def decode(frame: str | bytes, *, allowed: frozenset[str] | None = None) -> Message:
    """One frame to a message; ProtocolError with the reason when it is not a valid one."""
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(frame)} bytes is over the limit of {MAX_FRAME}")
    try:
        message = _decoder.decode(frame)
    except msgspec.ValidationError as error:
        raise ProtocolError(f"invalid message: {error}") from None
    except msgspec.DecodeError as error:
        raise ProtocolError(f"frame is not valid JSON: {error}{unicode_hint(str(error))}") from None
    except RecursionError:
        raise ProtocolError("frame nests too deeply") from None
    except UnicodeDecodeError as error:
        raise ProtocolError(f"frame is not valid UTF-8: {error}") from None
    if allowed is not None and message.type not in allowed:
        raise ProtocolError(f"message type '{message.type}' is not expected here")
    return message


def standby_refusal(status: int, body: bytes | None) -> Refused | None:
    """The refusal of a standby aggregator, from the HTTP answer to a WebSocket handshake (status
    503, the ``refused`` message as its body); None for any other answer."""
    if status != 503 or not body:
        return None
    try:
        message = decode(body, allowed=frozenset({"refused"}))
    except ProtocolError:
        return None  # a proxy's own error page, say: not a standby
    assert isinstance(message, Refused)
    return message if message.code == STANDBY else None


def _type_name(annotation: Any) -> str:
    while getattr(annotation, "__metadata__", None) is not None:  # Annotated[...]: the type, not the checks
        annotation = get_args(annotation)[0]
    if annotation is type(None):
        return "null"
    if getattr(annotation, "__origin__", None) is Union or type(annotation).__name__ == "UnionType":
        return " or ".join(_type_name(member) for member in get_args(annotation))
    return getattr(annotation, "__origin__", annotation).__name__


def catalogue_markdown() -> str:
    """The message catalogue as a Markdown table (docs/protocol.md embeds it; a test keeps it current)."""
    rows = ["| message | from | fields |", "|---|---|---|"]
    for name, cls in MESSAGES.items():
        side = " and ".join(s for s, names in (("engine", FROM_ENGINE), ("aggregator", FROM_AGGREGATOR))
                            if name in names)
        described = ", ".join(f"`{f.name}`: {_type_name(f.type)}" for f in msgspec.structs.fields(cls)) or "(none)"
        rows.append(f"| `{name}` | {side} | {described} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(catalogue_markdown())
