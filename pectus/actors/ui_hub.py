"""UiHub: fans live changes out to the browsers' WebSocket subscriptions.

Cost per change (a :class:`~pectus.projections.views.Delta`): it is encoded to its JSON text
once, whatever the number of browsers, and offered to the subscriptions that may see it - the
followers of its unit, or every signed-in subscription for the global topics ``units`` and
``runs`` - at the cost of a set lookup each (the roles a global change requires are worked out
once, checked against each subscriber's identity). Publishing never waits on a browser.

Coalescing: a subscription holds at most one message per *key*; a change whose key is already
waiting takes that message's place (at the end of the queue, where its newest part arrived).
So a browser that lags gets fewer, fresher messages instead of a growing backlog, and the memory
a subscription holds is bounded by the number of distinct keys, not by how long it lags:

=================================  ==============================  ==========================
topic                              key                             a newer change ...
=================================  ==============================  ==========================
``units``, ``control_state``,      unit, topic                     replaces the older
``method``
``runs``                           run id                          replaces the older
``values``                         unit, and the form: engine      merges, by tag (a tag's
                                   live values (a list) or         newer value replaces its
                                   recorded samples (a dict)       older one)
``run_log``, ``error_log``         unit, topic, run                merges, by item ``id``
                                                                   (fields as the browser
                                                                   merges them)
anything else, and replies         none: never coalesced
=================================  ==============================  ==========================

The browser merges ``values`` and the logs by key already, so the merged message gives it the
same picture as the messages it replaces. Only the plot sees a difference: a lagging browser
plots the latest value of a coalesced stretch, not each point of it (a refetch has them all).

Frames: what waits for a browser when it is ready for more goes out as one text frame, a JSON
array of the changes in order (so a browser that lags pays one frame, not one per change);
replies go out as JSON objects of their own, in order with the changes.

The one rule that ends a subscription: it has held messages for :data:`STALL` seconds without
taking any (its browser stopped reading). It is then closed with ``stalled`` set; everything
else a slow browser costs is bounded by coalescing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Hashable, Iterable
from typing import Any, Protocol

import orjson
import trio

from pectus.projections.views import Delta

GLOBAL_TOPICS = frozenset({"units", "runs"})  # offered to every signed-in subscription, by roles
WHOLE_VIEWS = frozenset({"units", "control_state", "method", "runs"})
LOGS = frozenset({"run_log", "error_log"})
STALL = 30.0  # seconds a subscription may hold messages without taking any before it is closed


class Viewer(Protocol):
    """Who a subscription delivers to (``pectus.web.auth.Identity``)."""

    def missing_roles(self, required: Iterable[str]) -> list[str]: ...


def encode(message: dict[str, Any]) -> str:
    """The JSON text of a message, as the browser receives it."""
    try:
        return orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson refuses (an integer over 64 bits): never lose a change for it
        return json.dumps(message, separators=(",", ":"), default=str)


class Message:
    """A change waiting for a subscriber: shared by all of them, with its text encoded once,
    until coalescing gives one subscriber a merged copy of its own (encoded when taken)."""

    __slots__ = ("unit", "topic", "data", "required", "_text")

    def __init__(self, unit: str | None, topic: str, data: Any, required: frozenset[str] = frozenset(),
                 text: str | None = None) -> None:
        self.unit, self.topic, self.data, self.required, self._text = unit, topic, data, required, text

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = encode({"unit": self.unit, "topic": self.topic, "data": self.data})
        return self._text


def key_of(message: Message) -> Hashable | None:
    """The coalescing key (see the table above); None: never coalesced."""
    topic, data = message.topic, message.data
    if topic == "runs":
        return ("runs", data.get("run_id"))
    if topic in WHOLE_VIEWS:
        return (message.unit, topic)
    if topic == "values":
        return (message.unit, topic, isinstance(data, list))
    if topic in LOGS:
        return (message.unit, topic, data.get("run"))
    return None


def coalesce(older: Message, newer: Message) -> Message:
    """One message standing for ``older`` followed by ``newer`` (same key)."""
    if newer.topic in WHOLE_VIEWS:
        return newer
    if newer.topic == "values":
        if isinstance(newer.data, dict):
            merged: Any = {**older.data, **newer.data}
        else:
            merged = list({value["name"]: value for value in older.data + newer.data}.values())
    else:
        items = {item["id"]: item for item in older.data["changed"]}
        for item in newer.data["changed"]:
            items[item["id"]] = {**items[item["id"]], **item} if item["id"] in items else item
        merged = {**newer.data, "changed": list(items.values())}
    return Message(newer.unit, newer.topic, merged, newer.required)


class _Reply:
    """The key of a queued reply: unique, and known apart from every change's key."""

    __slots__ = ()


class Subscription:
    """What one browser receives: async-iterate it for the frames to send (see :meth:`take`).

    ``viewer`` None (not signed in) receives no change; :meth:`follow` / :meth:`unfollow` say
    which units' changes it gets, :meth:`sign_in` changes the viewer (and forgets what it may no
    longer see), :meth:`reply` queues an answer in order with the changes. ``close()`` when the
    browser leaves. ``closed`` is set when the subscription ends: by ``close()``, by the hub
    closing, or because it ``stalled`` (see the module docstring).
    """

    def __init__(self, hub: UiHub) -> None:
        self._hub = hub
        self.viewer: Viewer | None = None
        self.units: set[str] = set()
        self.closed = trio.Event()
        self.stalled = False
        self._pending: dict[Hashable, Message] = {}
        self._since = 0.0  # when the oldest pending message was queued (trio's clock)
        self._ready = trio.Event()  # set when there is something to take, or the end
        self._reply_slot = trio.Semaphore(1)  # one reply waiting at most: requests wait for it

    def follow(self, units: Iterable[str]) -> None:
        for unit in units:
            self.units.add(unit)
            self._hub._followers.setdefault(unit, set()).add(self)

    def unfollow(self, units: Iterable[str]) -> None:
        """Stop following ``units``; their waiting changes are dropped, none follows."""
        dropped = set(units) & self.units
        for unit in dropped:
            self.units.discard(unit)
            followers = self._hub._followers[unit]
            followers.discard(self)
            if not followers:
                del self._hub._followers[unit]
        if dropped:
            self._forget(lambda message: message.topic not in GLOBAL_TOPICS and message.unit in dropped)

    def sign_in(self, viewer: Viewer) -> None:
        """Deliver to ``viewer`` from now on: waiting global changes it may not see are dropped.
        (The caller re-checks the followed units: they need the views to know their roles.)"""
        self.viewer = viewer
        self._forget(lambda message: message.topic in GLOBAL_TOPICS and bool(viewer.missing_roles(message.required)))

    def _forget(self, unwanted: Any) -> None:
        self._pending = {key: message for key, message in self._pending.items() if not unwanted(message)}

    async def reply(self, answer: dict[str, Any]) -> None:
        """Queue ``answer`` after the changes waiting now; waits while an earlier reply is
        still waiting, so a browser that sends requests without reading cannot grow the queue."""
        await self._reply_slot.acquire()
        self._put(_Reply(), Message(None, "reply", answer, text=encode(answer)))

    def offer(self, message: Message, key: Hashable | None) -> None:
        """Queue a change (the hub has checked that this subscription may see it)."""
        self._put(key if key is not None else object(), message)

    def _put(self, key: Hashable, message: Message) -> None:
        if self.closed.is_set():
            return
        now = trio.current_time()
        if not self._pending:
            self._since = now
            self._ready.set()
        elif now - self._since > STALL:
            self.stalled = True
            self.close()
            return
        older = self._pending.pop(key, None)
        self._pending[key] = message if older is None else coalesce(older, message)

    async def take(self) -> list[str]:
        """Everything waiting, once there is something, as the frames to send in order: each run
        of changes one JSON array (joined from their shared texts), each reply a JSON object of
        its own; [] once closed."""
        await self._ready.wait()
        if self.closed.is_set():
            return []
        taken, self._pending, self._ready = self._pending, {}, trio.Event()
        frames: list[str] = []
        changes: list[str] = []
        for key, message in taken.items():
            if isinstance(key, _Reply):
                self._reply_slot.release()
                if changes:
                    frames.append(f"[{','.join(changes)}]")
                    changes = []
                frames.append(message.text)
            else:
                changes.append(message.text)
        if changes:
            frames.append(f"[{','.join(changes)}]")
        return frames

    def close(self) -> None:
        self._hub._subscriptions.discard(self)
        self.unfollow(list(self.units))
        self._pending = {}
        self.closed.set()
        self._ready.set()

    @property
    def waiting(self) -> int:
        """How many messages wait to be taken: at most one per key."""
        return len(self._pending)

    async def __aiter__(self) -> AsyncIterator[list[str]]:
        while frames := await self.take():
            yield frames


class UiHub:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._followers: dict[str, set[Subscription]] = {}  # unit -> the subscriptions following it

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, deltas: Iterable[Delta]) -> None:
        for delta in deltas:
            if delta.topic in GLOBAL_TOPICS:
                self._publish_global(delta)
            else:
                followers = self._followers.get(delta.unit) if delta.unit is not None else None
                if followers:
                    message = Message(delta.unit, delta.topic, delta.data)
                    key = key_of(message)
                    for subscription in list(followers):  # an offer may close a stalled one
                        subscription.offer(message, key)

    def _publish_global(self, delta: Delta) -> None:
        required = frozenset(delta.data.get("required_roles") or ())
        message = Message(delta.unit, delta.topic, delta.data, required)
        key = key_of(message)
        for subscription in list(self._subscriptions):
            viewer = subscription.viewer
            if viewer is None:
                continue  # not signed in yet
            if required and viewer.missing_roles(required):
                if delta.topic == "units" and delta.unit is not None:
                    subscription.unfollow([delta.unit])  # a unit may come to require a role
                continue
            subscription.offer(message, key)

    def close(self) -> None:
        """End every subscription (the aggregator is going away)."""
        for subscription in list(self._subscriptions):
            subscription.close()

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)
