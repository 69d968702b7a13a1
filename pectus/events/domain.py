"""The domain events: every fact the aggregator records, as a closed catalogue.

Each event is a frozen dataclass. What every event has (the envelope) is stored beside its own
fields: ``time`` (UTC epoch seconds), ``unit`` (the engine id, e.g. ``host-7_DemoUod``), ``run``
(the run id, or None outside a run), ``actor`` (who: an engine, a user with id and name, or
the aggregator itself) and, for facts an engine reported, ``seq`` and ``outbox``: the record's
sequence number in the engine's outbox that numbered it, by which the aggregator knows what it
already stored (numbers are per outbox: a reinstalled engine starts a new outbox at 1). ``to_data`` gives the JSON payload stored in the event store; ``decode``
turns a stored record back into the event.

Invariants: the catalogue is closed (``EVENT_TYPES``); a payload holds only JSON values; an event
never changes once stored - a correction is a new event.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from pectus.events.store import NewEvent


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused an event: ``kind`` is ``engine``, ``user`` or ``aggregator``."""

    kind: str
    id: str
    name: str

    @classmethod
    def engine(cls, unit: str) -> "Actor":
        return cls("engine", unit, unit)

    @classmethod
    def user(cls, id: str, name: str) -> "Actor":
        return cls("user", id, name)


AGGREGATOR = Actor("aggregator", "aggregator", "aggregator")


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainEvent:
    type: ClassVar[str] = ""
    time: float
    unit: str
    run: str | None = None
    actor: Actor = AGGREGATOR
    seq: int | None = None  # the engine's sequence number of the record this event came from
    outbox: str | None = None  # the engine outbox that numbered it (None: before outboxes had ids)

    def to_data(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies every sample and run-log item, and this
        # runs for every event the aggregator stores.
        data = {name: getattr(self, name) for name in _field_names(type(self))}
        data["actor"] = {"kind": self.actor.kind, "id": self.actor.id, "name": self.actor.name}
        return data

    @property
    def stream(self) -> str:
        return f"unit:{self.unit}"

    def stored(self) -> NewEvent:
        """The event as the store appends it."""
        return NewEvent(self.stream, self.type, self.time, self.to_data())


# -- engines ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class EngineRegistered(DomainEvent):
    type: ClassVar[str] = "EngineRegistered"
    computer_name: str
    uod_name: str
    engine_version: str
    protocol: int
    credential: str = ""  # how it proved who it is: "key", "app <client id>", "" (before enrolment)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineEnrolled(DomainEvent):
    """An engine may connect: with a key whose SHA-256 is ``key_sha256`` (the key itself is never
    stored), or with an OpenID Connect application token of the app ``client_id``. ``how`` says
    who decided: ``enrolled`` (an operator) or ``first use`` (an aggregator that accepts new
    engines). A later enrolment of the same engine replaces the earlier one."""

    type: ClassVar[str] = "EngineEnrolled"
    key_sha256: str | None = None
    client_id: str | None = None
    how: str = "enrolled"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineRevoked(DomainEvent):
    """The engine's credential no longer admits it (until it is enrolled again)."""

    type: ClassVar[str] = "EngineRevoked"
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordRefused(DomainEvent):
    """A record the engine sent that was not stored, and why (its ``seq`` and ``outbox`` are in
    the envelope, so the sequence stays gap-free; its content is not kept)."""

    type: ClassVar[str] = "RecordRefused"
    kind: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInterrupted(DomainEvent):
    """A run that ended without the engine stopping it (the engine crashed, or came back without
    it); recorded by the aggregator when it learns so."""

    type: ClassVar[str] = "RunInterrupted"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConnected(DomainEvent):
    type: ClassVar[str] = "EngineConnected"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineDisconnected(DomainEvent):
    type: ClassVar[str] = "EngineDisconnected"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UodDescribed(DomainEvent):
    """The unit as its UOD defines it: identity, tags with units, process values, commands, plot."""

    type: ClassVar[str] = "UodDescribed"
    uod_name: str
    uod_author_name: str
    uod_author_email: str
    uod_filename: str
    location: str
    hardware: str
    tags: list[dict[str, Any]]  # {name, unit, direction}
    readings: list[dict[str, Any]]  # {kind, tag_name, entry_data_type, execute_command_name, command_options}
    commands: list[dict[str, Any]]  # {name, help, examples}
    plot_configuration: dict[str, Any]
    data_log_interval_seconds: float
    required_roles: list[str] = field(default_factory=list)
    process_diagram: str | None = None  # the SVG as the engine sent it; served only sanitised again


# -- runs ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(DomainEvent):
    type: ClassVar[str] = "RunStarted"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStopped(DomainEvent):
    type: ClassVar[str] = "RunStopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged(DomainEvent):
    """System State / Method Status of the unit changed (old -> new)."""

    type: ClassVar[str] = "StateChanged"
    system_state: str
    method_status: str
    old_system_state: str | None = None
    old_method_status: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TagSamples(DomainEvent):
    """Tag values sampled once per data-log interval: ``samples`` is [{time, values: {tag: value}}],
    each with the values that changed since the previous sample (the first one: all tags)."""

    type: ClassVar[str] = "TagSamples"
    samples: list[dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunLogChanged(DomainEvent):
    """Run-log items that started or changed state: ``items`` [{id, line, name, state, progress,
    time, start, end, cancellable, forcible, cancelled, forced, start_values?, end_values?}], each
    merged into the item of that id (a snapshot not sent is kept); and items whose progress moved:
    ``progress`` [{id, progress, time}]."""

    type: ClassVar[str] = "RunLogChanged"
    items: list[dict[str, Any]] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinesChanged(DomainEvent):
    """Method lines that became started / executed / failed: {line_id: state}."""

    type: ClassVar[str] = "LinesChanged"
    version: int
    states: dict[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodRevised(DomainEvent):
    """A new version of the unit's method, by a user (saved) or the engine (loaded)."""

    type: ClassVar[str] = "MethodRevised"
    version: int
    lines: list[dict[str, str]]  # [{id, text}]
    base_version: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorLogged(DomainEvent):
    type: ClassVar[str] = "ErrorLogged"
    severity: str  # error | warning | info
    message: str
    line: int | None = None


# -- what users asked for (each with its outcome) ----------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class UserRequested(DomainEvent):
    """A user's request to a unit, stored before the unit is asked; ``RequestAnswered`` follows
    with the answer. (Stores from before that rule hold the answer here: ``accepted`` and
    ``reason``; ``accepted`` is None for a request not yet answered.)

    ``request`` is control | inject | save_method | cancel | force | process_value; ``detail``
    holds what was asked (the control name, the code, the item id, the tag with old and new value).
    """

    type: ClassVar[str] = "UserRequested"
    request: str
    detail: dict[str, Any]
    accepted: bool | None = None
    reason: str = ""
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestAnswered(DomainEvent):
    """The unit's answer to the ``UserRequested`` with the same ``request_id``."""

    type: ClassVar[str] = "RequestAnswered"
    request_id: str
    request: str
    accepted: bool
    reason: str = ""


# -- Web Push subscriptions (pectus.actors.push) ------------------------------------------------
# A browser's subscription belongs to no unit: ``unit`` is "" and the events form the stream "push".

@dataclass(frozen=True, slots=True, kw_only=True)
class PushSubscribed(DomainEvent):
    """A browser subscribed to push notifications, or its user changed what it gets. The ``actor``
    owns it; a later event with the same ``subscription`` (the id of the endpoint) replaces this
    one. ``keys`` are the browser's {p256dh, auth}; ``topics`` the notification topics chosen;
    ``units`` the unit ids chosen (None: every unit the user may see); ``roles`` those the user
    held when subscribing (a unit requiring another role is never pushed)."""

    type: ClassVar[str] = "PushSubscribed"
    subscription: str
    endpoint: str
    keys: dict[str, str]
    topics: list[str]
    units: list[str] | None = None
    roles: list[str] = field(default_factory=list)

    @property
    def stream(self) -> str:
        return "push"


@dataclass(frozen=True, slots=True, kw_only=True)
class PushUnsubscribed(DomainEvent):
    """The subscription ends: its user unsubscribed, or the push service said it is gone."""

    type: ClassVar[str] = "PushUnsubscribed"
    subscription: str
    reason: str

    @property
    def stream(self) -> str:
        return "push"


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.type: cls for cls in (EngineRegistered, EngineEnrolled, EngineRevoked, EngineConnected, EngineDisconnected,
                              UodDescribed, RunStarted, RunStopped, RunInterrupted, StateChanged, TagSamples,
                              RunLogChanged, LinesChanged, MethodRevised, ErrorLogged, RecordRefused, UserRequested,
                              RequestAnswered, PushSubscribed, PushUnsubscribed)
}


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def decode(type_name: str, data: dict[str, Any]) -> DomainEvent:
    """A stored payload back to its event; KeyError for a type outside the catalogue."""
    cls = EVENT_TYPES[type_name]
    values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
    if isinstance(values.get("actor"), dict):
        values["actor"] = Actor(**values["actor"])
    return cls(**values)
