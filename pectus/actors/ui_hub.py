"""UiHub: fans live changes out to the browsers' WebSocket subscriptions.

The cost of a change (a :class:`~pectus.projections.views.Delta`) does not grow with the number
of browsers. Publishing puts it in the hub's *open round*, once for everybody; the round is
*sealed* - appended, with a sequence number, to one shared log - at once if the last one was
sealed :data:`PACE` seconds ago or more, else when that much time has passed, so a lone change
goes out at once and a busy plant's changes in at most a few rounds a second (fewer when the
browsers are so many that a round's fan-out would take more than :data:`FANOUT_SHARE` of the
event loop). Sealing wakes the browsers' senders with one broadcast. Each subscription only
holds a *cursor* (the last round it took) and its filter (who is signed in, which units it
follows): when its sender is ready it reads the rounds after its cursor, keeps what it may see
and sends them as ONE frame. So a browser gets at most one frame per round (a few a second),
however fast the units change, and the JSON text of a unit's changes in a round is encoded once
and joined into every frame that carries it. The changes of a unit nobody follows are not kept.

Coalescing, by *key*: a round holds at most one message per key, and a browser that reads more
than one round at a time gets them merged by key as well; a newer change whose key is already
there takes that message's place (at the end, where its newest part arrived):

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

The browser merges ``values`` and the logs by key already, so a merged message gives it the same
picture as the messages it stands for, and so does one that repeats a part it already had (a
merge keeps each field's newest value). Only the plot sees a difference: it gets the latest
value of a coalesced stretch, not each point of it (a refetch has them all).

The log is bounded by keys and time, not by how much was published or by the browsers: the
newest :data:`RECENT` rounds stay apart (a browser that keeps up reads exactly the round it
missed); older ones are merged into *spans* of :data:`SPAN` rounds; a span whose every round is
older than :data:`STALL` seconds is dropped. A browser that lags reads from the span holding the
first round it missed, so it may receive again what it had, merged into the newer changes.

The one rule that ends a subscription: a round has waited for it :data:`STALL` seconds without it
taking anything (its browser stopped reading). It is then closed with ``stalled`` set; everything
else a slow browser costs is bounded by the rounds. A subscription never falls off the log: the
log keeps every round younger than the stall time.

Presence: who has a unit's page open now. A subscription says which unit's page its browser shows
(:meth:`Subscription.be_here`, at most one) and under which name; every change of a unit's
company (a page opened, closed, a name changed, a socket gone) publishes a ``presence`` delta of
that unit: ``{"people": [{"name", "count"}], "total"}``, the names sorted, at most
:data:`PRESENCE_LIST` of them (``total`` counts every page). It is a whole view, so a burst of
changes costs one message per round however fast a browser sends them; a name is cut to
:data:`PRESENCE_NAME_CHARS` characters.

Frames: the changes a subscription takes go out as one text frame, a JSON array: unit by unit,
each unit's changes in order, then the global ones (the order between keys carries no meaning:
the browser merges by key). A reply to the browser's request goes out as a JSON object of its
own, after the changes published before it.
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Hashable, Iterable
from typing import Any, Protocol

import orjson
import trio

from pectus.projections.views import Delta

# Offered to every signed-in subscription, by roles (the ``required_roles`` of their data). A
# notification is one: the dashboard shows every unit's without following their values.
GLOBAL_TOPICS = frozenset({"units", "runs", "notification"})
WHOLE_VIEWS = frozenset({"units", "control_state", "method", "runs", "presence"})
LOGS = frozenset({"run_log", "error_log"})
# The shortest time between two rounds, so between two frames to one browser: a change waits for
# its round at most this long while the fan-out is cheap. Each frame costs the aggregator its
# send path (hypercorn, wsproto, permessage-deflate, the socket: 0.15-0.5 ms, measured with
# bench/live_bench.py), so a round costs a frame per browser following something that changed;
# at 4 rounds a second 1,000 browsers would take the whole event loop. Hence FANOUT_SHARE.
PACE = 0.25
# The largest share of the event loop the fan-out takes: the next round waits at least the last
# fan-out's time (from sealing to the last woken sender taking it) divided by this, so with many
# browsers rounds grow longer (fewer, fuller frames) and engines and the API keep the rest.
FANOUT_SHARE = 0.5
STALL = 30.0  # seconds a round may wait for a subscription that takes nothing before it is closed
RECENT = 8  # the newest rounds kept apart
SPAN = 8  # rounds older than RECENT are merged into spans of this many
CLOSE_GRACE = 10.0  # seconds close() waits for the browsers to be told that the hub is closing
HURRY = 1.0  # seconds after a person's request to a unit during which its changes are not paced (hurry)
PRESENCE_NAME_CHARS = 60  # a longer name is cut (with an ellipsis): it is shown on every page of the unit
PRESENCE_LIST = 50  # the most names a presence delta lists; its total counts every page


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
    """A change: shared by all the subscriptions that take it, with its text encoded once,
    until coalescing with another gives a merged copy (encoded when first needed)."""

    __slots__ = ("unit", "topic", "data", "required", "_text")

    def __init__(self, unit: str | None, topic: str, data: Any, required: frozenset[str] = frozenset()) -> None:
        self.unit, self.topic, self.data, self.required, self._text = unit, topic, data, required, None

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


Changes = dict[Hashable, Message]  # by key, in order: one message per key


def put(changes: Changes, key: Hashable, message: Message) -> None:
    """Add ``message`` at the end of ``changes``, merged with the one its key holds there."""
    older = changes.pop(key, None)
    changes[key] = message if older is None else coalesce(older, message)


class Span:
    """Rounds ``first`` to ``last`` of the log, their changes coalesced by key: the global ones
    apart (each subscription filters them by its viewer's roles), the others by unit."""

    __slots__ = ("first", "last", "globals", "units", "_texts")

    def __init__(self, seq: int, changes: Changes) -> None:
        self.first = self.last = seq
        self.globals: Changes = {}
        self.units: dict[str, Changes] = {}
        for key, message in changes.items():
            if message.topic in GLOBAL_TOPICS:
                self.globals[key] = message
            elif message.unit is not None:  # (a unit's topic without a unit: nobody follows it)
                self.units.setdefault(message.unit, {})[key] = message
        self._texts: dict[str, str] = {}

    def text(self, unit: str) -> str:
        """The unit's changes as the inside of a JSON array, encoded once for every frame."""
        text = self._texts.get(unit)
        if text is None:
            text = self._texts[unit] = ",".join(message.text for message in self.units[unit].values())
        return text

    def absorb(self, newer: Span) -> None:
        """Take the next span's rounds in: this span then stands for both."""
        for key, message in newer.globals.items():
            put(self.globals, key, message)
        for unit, changes in newer.units.items():
            mine = self.units.setdefault(unit, {})
            for key, message in changes.items():
                put(mine, key, message)
        self.last = newer.last
        self._texts.clear()


class Subscription:
    """What one browser receives: async-iterate it for the frames to send (see :meth:`take`).

    ``viewer`` None (not signed in) receives no change; :meth:`follow` / :meth:`unfollow` say
    which units' changes it gets, :meth:`sign_in` changes the viewer, :meth:`reply` queues an
    answer in order with the changes. Both filters apply to everything not taken yet: once the
    viewer or the units change, nothing the new filter rules out is taken any more. ``close()``
    when the browser has left. ``closed`` is set when the subscription ends: by ``close()``, by
    the hub closing, or because it ``stalled`` (see the module docstring).
    """

    def __init__(self, hub: UiHub) -> None:
        self._hub = hub
        self.viewer: Viewer | None = None
        self.units: set[str] = set()
        self.closed = trio.Event()
        self.stalled = False
        self.cursor = hub.head  # the last round taken: a new subscription starts at the newest
        self._replies: deque[tuple[int, str]] = deque()  # (the round it follows, its text)
        self._reply_slot = trio.Semaphore(1)  # one reply waiting at most: requests wait for it
        self._bell = trio.Event()  # rung to wake its sender: a round sealed, a reply, the end
        self.here: str | None = None  # the unit whose page its browser shows (presence)
        self.present_as = ""  # the name it is shown under there

    def follow(self, units: Iterable[str]) -> None:
        """Follow ``units``: their changes published from now on are taken."""
        added = set(units) - self.units
        self.units |= added
        self._hub.followed(added, 1)

    def unfollow(self, units: Iterable[str]) -> None:
        """Stop following ``units``: none of their changes is taken from now on."""
        dropped = set(units) & self.units
        self.units -= dropped
        self._hub.followed(dropped, -1)

    def be_here(self, unit: str | None, name: str) -> None:
        """Its browser shows ``unit``'s page (None: no unit's page) as ``name`` (cut to
        :data:`PRESENCE_NAME_CHARS`; empty: Anonymous). The unit's presence is published when it
        changes. Ignored once the subscription has ended."""
        if not self.closed.is_set():
            self._hub.present(self, unit, presence_name(name))

    def sign_in(self, viewer: Viewer) -> None:
        """Deliver to ``viewer`` from now on: global changes it may not see are not taken.
        (The caller re-checks the followed units: they need the views to know their roles.)"""
        self.viewer = viewer

    async def reply(self, answer: dict[str, Any]) -> None:
        """Queue ``answer`` after the changes published until now: it goes out with the round
        that holds the last of them, once sealed (at once if it is sealed already; changes of
        that round published after the request come before the reply too). Waits while an
        earlier reply is still waiting, so a browser that sends requests without reading cannot
        grow the queue. (A reply never seals a round early: a thousand browsers reconnecting at
        once still get a frame a round, not one per request.)"""
        await self._reply_slot.acquire()
        after = self._hub.last_round()
        self._replies.append((after, encode(answer)))
        if after <= self._hub.head:
            self._hub.wake(self)

    async def take(self) -> list[str]:
        """Once there is something for this subscription, everything there is, as the frames to
        send in order: the changes of the rounds after the cursor as one JSON array (a reply
        in between splits it in two, around the reply's JSON object); [] once closed."""
        hub = self._hub
        while True:
            while not (self.closed.is_set() or self.cursor < hub.head or self._reply_due()):
                await hub.next_round(self)
            if self.closed.is_set():
                return []
            frames: list[str] = []
            while self._reply_due():
                after, reply = self._replies.popleft()
                frames += self._changes(after)
                frames.append(reply)
                self._reply_slot.release()
            frames += self._changes(hub.head)
            hub.taken(self)
            if frames:
                return frames

    def _reply_due(self) -> bool:
        return bool(self._replies) and self._replies[0][0] <= self._hub.head

    def _changes(self, upto: int) -> list[str]:
        """The frame of what this subscription may see in the rounds after its cursor up to
        ``upto`` ([] if nothing); the cursor moves past them."""
        spans = self._hub.spans(self.cursor, upto)
        if not spans:
            return []
        self.cursor = spans[-1].last
        globals_ = [self._visible(span.globals) for span in spans]  # first: they may unfollow a unit
        if len(spans) == 1:  # it keeps up: the texts shared with every other browser
            parts = [spans[0].text(unit) for unit in spans[0].units if unit in self.units]
            parts += [message.text for message in globals_[0].values()]
        else:  # it lags: the rounds merged for it alone
            merged: Changes = {}
            for span in spans:
                for unit, changes in span.units.items():
                    if unit in self.units:
                        for key, message in changes.items():
                            put(merged, key, message)
            for visible in globals_:
                for key, message in visible.items():
                    put(merged, key, message)
            parts = [message.text for message in merged.values()]
        return [f"[{','.join(parts)}]"] if parts else []

    def _visible(self, changes: Changes) -> Changes:
        """The global changes the viewer may see; a unit that comes to require a role the viewer
        lacks is no longer followed."""
        viewer = self.viewer
        if viewer is None:
            return {}
        visible: Changes = {}
        for key, message in changes.items():
            if message.required and viewer.missing_roles(message.required):
                if message.topic == "units" and message.unit is not None:
                    self.unfollow([message.unit])
            else:
                visible[key] = message
        return visible

    def end(self, stalled: bool = False) -> None:
        """End the subscription (the hub's side): its reader gets [] and closes the browser."""
        self.stalled = self.stalled or stalled
        self._hub.present(self, None, "")
        self.unfollow(self.units)
        self._hub.ended(self)
        self.closed.set()
        self._hub.wake(self)

    def close(self) -> None:
        """The browser has left (and been told why, if the subscription ended first)."""
        self.end()
        self._hub.released(self)

    async def __aiter__(self) -> AsyncIterator[list[str]]:
        while frames := await self.take():
            yield frames


class UiHub:
    """The open round, the log of sealed rounds (:class:`Span`), and the subscriptions ordered
    by when they last took (so by cursor): the one that waited longest is first."""

    def __init__(self) -> None:
        self.head = 0  # the newest sealed round
        self._open: Changes = {}
        self._due = 0.0  # when the open round is sealed (trio's clock), once it has a change
        self._last_sealed = -math.inf  # when the newest round was sealed
        self._untaken = 0  # senders woken for the newest round that have not taken it yet
        self._fanout = 0.0  # seconds from the last measured round's sealing to its last taking
        self._opened = trio.Event()  # set when the open round gets its first change
        self._timekeeper: Subscription | None = None  # the sender that seals the open round when due
        self._timekeeping = trio.CancelScope()  # its wait (cancelled to wake it)
        self._waiting: set[Subscription] = set()  # the other senders waiting for the next round
        self._log: deque[Span] = deque()
        self._sealed_at: deque[float] = deque()  # per round of the log, from its first
        self._taking: dict[Subscription, None] = {}  # the open subscriptions, oldest cursor first
        self._followers: dict[str, int] = {}  # unit -> how many open subscriptions follow it
        self._held: set[Subscription] = set()  # handed out and not closed by their reader
        self._present: dict[str, Counter[str]] = {}  # unit -> name -> pages of that unit open under it
        self._released = trio.Event()  # set when a subscription is closed by its reader
        self._hurried: dict[str, float] = {}  # unit -> until when its changes go out at once (hurry)

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        self._taking[subscription] = None
        self._held.add(subscription)
        return subscription

    def publish(self, deltas: Iterable[Delta]) -> None:
        now = trio.current_time()
        for delta in deltas:
            global_ = delta.topic in GLOBAL_TOPICS
            if not (self._taking if global_ else delta.unit in self._followers):
                continue  # nobody would take it (a subscription takes what is published after it follows)
            required = frozenset(delta.data.get("required_roles") or ()) if global_ else frozenset()
            message = Message(delta.unit, delta.topic, delta.data, required)
            key = key_of(message)
            if not self._open:
                self._due = max(now, self._last_sealed + max(PACE, self._fanout / FANOUT_SHARE))
                self._opened.set()
            put(self._open, key if key is not None else object(), message)
        if self._open and now >= self._due:  # after a quiet spell at once; or overdue, no sender keeping the time
            self._seal()
        elif self._open and self._hurried and self._hurrying(deltas, now):  # someone waits for it
            self._seal()
            self._timekeeping.cancel()  # the sender keeping the time sleeps until the round's due time

    def hurry(self, unit: str) -> None:
        """Someone asked ``unit`` for something (a control, a value, an injection) and waits to see
        what it does: for :data:`HURRY` seconds, a round with a change of that unit is sealed at
        once rather than at the rounds' pace. People ask a few times a minute; plants change
        continuously, so this costs a few rounds more per request."""
        self._hurried[unit] = trio.current_time() + HURRY

    def _hurrying(self, deltas: Iterable[Delta], now: float) -> bool:
        for unit, until in list(self._hurried.items()):
            if until < now:
                del self._hurried[unit]
        return any(delta.unit in self._hurried for delta in deltas)

    def last_round(self) -> int:
        """The round that holds the last change published: the open one if it holds any."""
        return self.head + 1 if self._open else self.head

    async def next_round(self, subscription: Subscription) -> None:
        """Wait until a round is sealed, or ``subscription`` is woken (a reply, its end).

        One waiting sender keeps the time: it waits for the open round's first change, sleeps
        until the round is due and seals it, which rings every other waiting sender once (a
        timer and an exception per round, not per sender). Whichever comes back first keeps the
        time for the next round; one that leaves without sealing (woken, or its browser gone)
        rings the others, so that one of them takes over."""
        if self._timekeeper is not None:
            subscription._bell = trio.Event()
            self._waiting.add(subscription)
            try:
                await subscription._bell.wait()
            finally:
                self._waiting.discard(subscription)
            return
        self._timekeeper, head = subscription, self.head
        try:
            with trio.CancelScope() as self._timekeeping:
                while self.head == head:  # (publish seals a lone change itself)
                    if not self._open:
                        await self._opened.wait()
                    elif trio.current_time() < self._due:
                        await trio.sleep_until(self._due)
                    else:
                        self._seal()
        finally:
            self._timekeeper = None
            self._ring()

    def wake(self, subscription: Subscription) -> None:
        """Wake ``subscription``'s sender if it waits for the next round."""
        if subscription is self._timekeeper:
            self._timekeeping.cancel()
        else:
            subscription._bell.set()

    def _ring(self) -> None:
        for subscription in self._waiting:
            subscription._bell.set()
        self._waiting.clear()

    def _seal(self) -> None:
        """Append the open round to the log and wake the senders."""
        now = self._last_sealed = trio.current_time()
        self.head += 1
        self._log.append(Span(self.head, self._open))
        self._sealed_at.append(now)
        self._open, self._opened = {}, trio.Event()
        self._untaken = len(self._waiting) + (self._timekeeper is not None)
        self._ring()
        if len(self._log) > RECENT + 1:  # the oldest of the recent rounds joins the spans
            older, aging = self._log[-RECENT - 2], self._log[-RECENT - 1]
            if older.last - older.first + 1 < SPAN:
                older.absorb(aging)
                del self._log[-RECENT - 1]
        limit = now - STALL
        while self._taking:  # a round that waited too long for its first subscription
            oldest = next(iter(self._taking))
            if oldest.cursor == self.head or self._sealed_at[oldest.cursor + 1 - self._log[0].first] >= limit:
                break
            oldest.end(stalled=True)
        # No subscription's cursor is older than the stall time: older spans are not read again.
        while self._sealed_at[self._log[0].last - self._log[0].first] < limit:
            dropped = self._log.popleft()
            for _ in range(dropped.last - dropped.first + 1):
                self._sealed_at.popleft()

    def spans(self, cursor: int, upto: int) -> list[Span]:
        """The spans holding the rounds after ``cursor`` up to ``upto``, oldest first."""
        found = []
        for span in reversed(self._log):  # from the newest: a browser that keeps up reads one
            if span.last <= cursor:
                break
            if span.first <= upto:
                found.append(span)
        found.reverse()
        return found

    def taken(self, subscription: Subscription) -> None:
        if subscription in self._taking:
            self._taking[subscription] = self._taking.pop(subscription)  # now the newest cursor
        if self._untaken:
            self._untaken -= 1
            if not self._untaken:
                self._fanout = trio.current_time() - self._last_sealed

    def followed(self, units: Iterable[str], change: int) -> None:
        for unit in units:
            count = self._followers.get(unit, 0) + change
            if count:
                self._followers[unit] = count
            else:
                del self._followers[unit]

    def present(self, subscription: Subscription, unit: str | None, name: str) -> None:
        """Move ``subscription`` to ``unit``'s page as ``name``; publish each presence it changes."""
        left, was = subscription.here, subscription.present_as
        if (left, was) == (unit, name):
            return
        subscription.here, subscription.present_as = unit, name
        if left is not None:
            people = self._present[left]
            people[was] -= 1
            if not people[was]:
                del people[was]
            if not people:
                del self._present[left]
        if unit is not None:
            self._present.setdefault(unit, Counter())[name] += 1
        self.publish([Delta(changed, "presence", self.presence(changed)) for changed in dict.fromkeys((left, unit))
                      if changed is not None])

    def presence(self, unit: str) -> dict[str, Any]:
        """Who has ``unit``'s page open: ``{"people": [{"name", "count"}], "total"}`` (see the module docstring)."""
        people = self._present.get(unit, Counter())
        names = sorted(people, key=lambda name: (name.casefold(), name))[:PRESENCE_LIST]
        return {"people": [{"name": name, "count": people[name]} for name in names], "total": sum(people.values())}

    def ended(self, subscription: Subscription) -> None:
        self._taking.pop(subscription, None)

    def released(self, subscription: Subscription) -> None:
        self._held.discard(subscription)
        self._released.set()
        self._released = trio.Event()

    async def close(self) -> None:
        """End every subscription (the aggregator is going away), then wait, at most
        :data:`CLOSE_GRACE` seconds, until their readers have told their browsers and let go."""
        for subscription in list(self._taking):
            subscription.end()
        with trio.move_on_after(CLOSE_GRACE):
            while self._held:
                await self._released.wait()

    @property
    def subscribers(self) -> int:
        return len(self._taking)

    @property
    def held(self) -> int:
        """The messages the log holds: at most one per key per span, whatever the browsers do."""
        return sum(len(span.globals) + sum(map(len, span.units.values())) for span in self._log)


def presence_name(name: str) -> str:
    """The name a page is shown under: trimmed, "Anonymous" when empty, at most
    :data:`PRESENCE_NAME_CHARS` characters (a longer one is cut and ends with an ellipsis)."""
    name = " ".join(name.split()) or "Anonymous"
    return name if len(name) <= PRESENCE_NAME_CHARS else f"{name[:PRESENCE_NAME_CHARS - 1]}…"
