"""Notifications: the events people at a unit want to be told of, derived from committed records.

A :class:`Notification` is one such event - ``Notify: text`` ran, a run started or stopped, the
run paused on an error, a Watch fired, a block started, the unit lost its connection - in the
words a person reads, with the store position of the record it comes from (unique, so a browser
or a push sender never tells the same thing twice).

:func:`derive` is the whole rule, with no I/O: given a decoded event, its position, its time and
:class:`Before` (what the views knew of the unit just before the event), it says which
notifications the event makes. The projector (:class:`pectus.projections.views.Projector`) calls
it for live records only - once :attr:`~pectus.projections.views.Projector.notifying` is set,
never in :meth:`~pectus.projections.views.Projector.replay` - and publishes each as a delta
``{unit, topic: "notification", data: <the notification as builtins>}``, which the UI hub sends
to every browser following that unit (with the roles the unit requires).

Listening in the aggregator (Web Push): append a callable to
``AggregatorProcess.projector.listeners`` (:class:`pectus.actors.aggregator.ProjectorActor`);
it is called with each :class:`Notification` in store order, live only, after its delta is
published. It runs in the projector's loop, once per notification: it must not block or await
(hand the notification on, e.g. with ``MemorySendChannel.send_nowait``); an exception it raises
is logged and does not stop the projector.

Invariants: a record makes at most one notification per topic and item, and only on the change
that makes the fact true (an item seen again in the same state, a duplicate run start, a second
stop, a status that stays ``Error`` make none), so folding the log live makes each fact's
notification exactly once; ``title`` and ``body`` are plain text (never markup).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from pectus.events.domain import (DomainEvent, EngineDisconnected, RunInterrupted, RunLogChanged, RunStarted,
                                  RunStopped, StateChanged)

__all__ = ["Before", "Notification", "TOPICS", "ALERTS", "TOPIC", "derive", "from_delta", "may_notify"]

Topic = Literal["notify", "run_started", "run_stopped", "paused_on_error", "watch_fired", "block_started",
                "connection_lost"]
TOPICS: tuple[Topic, ...] = ("notify", "run_started", "run_stopped", "paused_on_error", "watch_fired",
                             "block_started", "connection_lost")
ALERTS: frozenset[Topic] = frozenset({"paused_on_error", "connection_lost"})  # need someone: shown until dismissed
TOPIC = "notification"  # the live delta's topic
_NOTIFYING = frozenset(kind.type for kind in (RunStarted, RunStopped, RunInterrupted, StateChanged, RunLogChanged,
                                              EngineDisconnected))
_TOLD_ITEMS = ("Notify", "Block", "Watch", "Alarm")  # the instructions whose run-log items may notify


class Notification(msgspec.Struct, frozen=True):
    """One thing a person at the unit should know, as the browsers and Web Push show it."""

    unit: str  # the unit id
    topic: Topic
    title: str  # short, for a person: "host-7 (DemoUod): run started"
    body: str  # the Notify text, the block's name, the reason... ("" when the title says it all)
    time: str  # ISO 8601 UTC of the event it comes from
    position: int  # store position of that event (unique: de-duplicates)
    run_id: str | None


@dataclass(frozen=True, slots=True)
class Before:
    """What the views knew of the event's unit just before the event was folded."""

    name: str  # the unit as people know it (the dashboard's name), or its id
    run: str | None = None  # its active run
    known_run: bool = False  # the event's run was recorded already (its start was seen)
    method_status: str | None = None
    last_error: str | None = None  # the newest message of the unit's current error log
    items: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # the event's run's log, by item id


def may_notify(event: DomainEvent) -> bool:
    """False for an event that cannot make a notification, told cheaply: the projector runs per
    record and skips the rest of the work for most events, run-log changes included."""
    if event.type not in _NOTIFYING:
        return False
    return not isinstance(event, RunLogChanged) or any(str(item["name"]).startswith(_TOLD_ITEMS)
                                                       for item in event.items)


def derive(event: DomainEvent, position: int, time: str, before: Before) -> list[Notification]:
    """The notifications ``event`` (stored at ``position``; ``time`` is its time as the views
    write it, ISO 8601 UTC) makes; [] for most events."""

    def note(topic: Topic, what: str, body: str) -> Notification:
        return Notification(unit=event.unit, topic=topic, title=f"{before.name}: {what}", body=body,
                            time=time, position=position, run_id=event.run)

    match event:
        case RunStarted() if event.run is not None and not before.known_run:
            return [note("run_started", "run started", "")]
        case RunStopped() if event.run is not None and event.run == before.run:
            return [note("run_stopped", "run stopped", "")]
        case RunInterrupted() if event.run is not None and event.run == before.run:
            return [note("run_stopped", "run ended", f"It ended without a stop: {event.reason}")]
        case StateChanged() if event.method_status == "Error" and before.method_status != "Error":
            return [note("paused_on_error", "paused on error", before.last_error or "See the unit's error log.")]
        case EngineDisconnected():
            return [note("connection_lost", "lost its connection", f"The engine is offline: {event.reason}")]
        case RunLogChanged():
            return [note(*found) for item in event.items
                    if (found := _run_log_fact(item, before.items.get(str(item["id"])))) is not None]
    return []


def _run_log_fact(item: Mapping[str, Any], earlier: Mapping[str, Any] | None) -> tuple[Topic, str, str] | None:
    """What a run-log item's change means to a person, if anything: (topic, what, body).

    The item's ``name`` is the instruction's run-log name, ``Instruction: argument``. A Notify line
    completes at once; a Block is news when its item first appears; a Watch (or Alarm) is armed
    with a cancellable item and fires when the item, still started or already completed, is no
    longer cancellable (a cancelled Watch never fired)."""
    instruction, _, argument = str(item["name"]).partition(":")
    argument = argument.strip()
    state = item["state"]
    if instruction == "Notify":
        if state == "completed" and (earlier is None or earlier.get("state") != "completed"):
            return "notify", "notification", argument
    elif instruction == "Block":
        if earlier is None:
            return "block_started", "block started", argument
    elif instruction in ("Watch", "Alarm"):
        armed = earlier is None or bool(earlier.get("cancellable"))
        if armed and state in ("started", "completed") and not item["cancellable"]:
            return "watch_fired", f"{instruction.lower()} fired", str(item["name"])
    return None


def from_delta(data: Mapping[str, Any]) -> Notification:
    """The notification a ``notification`` delta carries (its ``data``, which also names the
    roles a browser needs to see it)."""
    return Notification(**{name: data[name] for name in Notification.__struct_fields__})
