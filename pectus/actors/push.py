"""Web Push: the events people care about reach subscribed browsers, even with no page open.

    browser  --POST /api/push/subscriptions-->  PushSubscribed event  -->  Subscriptions (folded from the log)
    Projector --Notification--> PushSender.notify --> a queue per subscription --> a worker thread:
        pywebpush (RFC 8291 encryption, RFC 8292 VAPID) --> the browser's push service --> static/sw.js

The aggregator signs its pushes with a VAPID key pair (P-256) kept in the data directory
(``push-vapid.key``, created on first start, mode 0600); the browser subscribes with the public
key (``GET /api/push/config``), so its push service takes messages from this aggregator only.
Encryption and signing are pywebpush's (http-ece, py-vapid): nothing here is hand-rolled.

Invariants:

* Subscriptions are the log's: :class:`Subscriptions` folds ``PushSubscribed`` and
  ``PushUnsubscribed`` at start-up (replay) and from every committed record after, so they are
  audited and survive restarts. A replay never pushes: only Notifications handed to
  :meth:`PushSender.notify` (live ones) are sent.
* A notification reaches a subscription only when its topic is one the subscription chose, its
  unit is one it chose (or it chose every unit), and the unit requires no role, or one its user
  held when subscribing (the roles are stored with the subscription; a page load refreshes them).
* Sending never blocks the Trio loop: pywebpush (blocking, requests) runs in a worker thread,
  at most :attr:`PushSettings.workers` at once, each within :attr:`PushSettings.timeout`. A
  subscription has at most one push in flight and a bounded queue (the oldest dropped), so a slow
  push service holds one worker for at most the timeout, never the others' pushes.
* A push service that answers 404 or 410 has dropped the subscription: it is removed, as a
  ``PushUnsubscribed`` by the aggregator, once.
* ``notify`` never waits: a full mailbox drops the notification (logged, rate-limited). Push
  is a courtesy on top of the record and of the pages, never a reason to slow them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import requests
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid, VapidException
from py_vapid.utils import b64urlencode
from pywebpush import WebPushException, webpush

from pectus.actors.core import Actor, RateLimitedLog
from pectus.events.domain import AGGREGATOR, Actor as Who, DomainEvent, PushSubscribed, PushUnsubscribed
from pectus.events.signing import write_private_key
from pectus.notifications import ALERTS, TOPICS, Notification
from pectus.projections.views import iso
from pectus.web.auth import ConfigError, Identity

__all__ = ["PUSH_EVENTS", "VAPID_KEY_FILE", "Delivery", "Message", "PushSender", "PushSettings", "Subscription",
           "Subscriptions", "VapidKeys", "load_or_create_vapid_keys", "subscription_id"]

log = logging.getLogger("pectus.aggregator.push")

VAPID_KEY_FILE = "push-vapid.key"  # in the data directory
PUSH_EVENTS = frozenset({PushSubscribed.type, PushUnsubscribed.type})
QUEUE_LIMIT = 20  # pushes waiting per subscription; beyond it the oldest are dropped
# Bytes (UTF-8) of a notification's text in a push: a push carries at most 4 KiB, encrypted, and the
# title, unit and times need some of it.
BODY_LIMIT = 2000
# The push services of the browsers people use: Chrome and Edge-on-Chromium (FCM), Firefox,
# Edge's Windows service, Safari. Endpoints elsewhere are refused (the aggregator must not be
# made to post to any address a client names). PECTUS_PUSH_SERVICES replaces the list.
DEFAULT_SERVICES = ("https://fcm.googleapis.com", "https://updates.push.services.mozilla.com",
                    "https://*.notify.windows.com", "https://web.push.apple.com")
DEFAULT_CONTACT = "mailto:pectus@localhost"
GONE = frozenset({404, 410})


def subscription_id(endpoint: str) -> str:
    """A subscription's id: the first 32 hex digits of the SHA-256 of its endpoint. The page works
    out its own browser's id the same way (WebCrypto), without the endpoint being sent back."""
    return hashlib.sha256(endpoint.encode()).hexdigest()[:32]


# -- settings and keys ---------------------------------------------------------------------------

def _service_pattern(entry: str) -> tuple[str, str, int | None]:
    """``scheme://host[:port]`` (the host may start with ``*.``) as (scheme, host, port); ConfigError else."""
    parts = urlsplit(entry.strip())
    try:
        port = parts.port
    except ValueError:  # a port that is not a number
        port = None
        parts = parts._replace(scheme="")
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(f"PECTUS_PUSH_SERVICES: {entry!r} is not an origin (expected scheme://host[:port], "
                          "e.g. https://fcm.googleapis.com or https://*.notify.windows.com)")
    return parts.scheme, parts.hostname, port


@dataclass(frozen=True)
class PushSettings:
    """How the aggregator pushes. ``contact`` (PECTUS_PUSH_CONTACT) is the VAPID subject, a
    ``mailto:`` or ``https:`` URL where a push service can reach the aggregator's operators;
    ``services`` (PECTUS_PUSH_SERVICES, comma-separated) the origins of the push services whose
    endpoints a browser may subscribe with, a host may start with ``*.``; http is accepted only
    for an origin listed with it (a test's push service on loopback). ``ttl``: seconds a push
    service keeps a message for a browser that is offline."""

    contact: str = DEFAULT_CONTACT
    services: tuple[str, ...] = DEFAULT_SERVICES
    ttl: int = 3600
    timeout: float = 10.0
    workers: int = 8

    def __post_init__(self) -> None:
        for entry in self.services:
            _service_pattern(entry)
        if not self.contact.startswith(("mailto:", "https://")):
            raise ConfigError(f"PECTUS_PUSH_CONTACT: {self.contact!r} must be a mailto: or https: URL "
                              "(e.g. mailto:pectus-ops@example.com), where push services reach the operators")

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> PushSettings:
        services = tuple(filter(None, (entry.strip() for entry in env.get("PECTUS_PUSH_SERVICES", "").split(","))))
        return cls(contact=env.get("PECTUS_PUSH_CONTACT", "").strip() or DEFAULT_CONTACT,
                   services=services or DEFAULT_SERVICES)

    def refusal(self, endpoint: str) -> str | None:
        """Why a browser may not subscribe with ``endpoint``; None when it may."""
        try:
            parts = urlsplit(endpoint)
            port = parts.port
        except ValueError:
            return "the endpoint is not a URL"
        if not parts.hostname or parts.scheme not in ("https", "http") or "@" in parts.netloc:
            return "the endpoint must be an https URL of a push service"
        for scheme, host, allowed_port in map(_service_pattern, self.services):
            matches = (parts.hostname == host or (host.startswith("*.") and parts.hostname.endswith(host[1:])))
            if scheme == parts.scheme and matches and port == allowed_port:
                return None
        return (f"the endpoint's push service {parts.scheme}://{parts.netloc} is not one this aggregator pushes to "
                f"({', '.join(self.services)}; operators extend the list with PECTUS_PUSH_SERVICES)")


@dataclass(frozen=True)
class VapidKeys:
    """The aggregator's VAPID key pair. ``public_key`` is what the browser subscribes with: the
    uncompressed P-256 point, base64url without padding."""

    vapid: Vapid
    created: bool = False

    @property
    def public_key(self) -> str:
        raw = self.vapid.public_key.public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)
        return b64urlencode(raw)

    def check_contact(self, contact: str) -> None:
        """ConfigError unless the push services will take ``contact`` as the VAPID subject."""
        try:
            self.vapid.sign({"sub": contact, "aud": "https://push.example"})
        except VapidException as error:
            raise ConfigError(f"PECTUS_PUSH_CONTACT: {contact!r} is not a subject push services take: {error}") \
                from None

    def __repr__(self) -> str:  # never print the private key, whatever prints this object
        return f"VapidKeys({self.public_key})"


def load_or_create_vapid_keys(path: Path) -> VapidKeys:
    """The VAPID keys in ``path`` (PEM, P-256), created first when the file is missing (mode 0600).
    ValueError, naming the file, when it holds anything else. A new key means every browser must
    subscribe again: back the file up with the data directory."""
    path = Path(path)
    created = False
    if not path.exists():
        fresh = Vapid()
        fresh.generate_keys()
        write_private_key(path, fresh.private_pem())
        created = True
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is not an unencrypted PEM private key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{path} holds a {type(key).__name__}, not a P-256 (SECP256R1) private key")
    keys = VapidKeys(Vapid(private_key=key), created)
    if created:
        log.info("created the Web Push (VAPID) key %s; back it up with the data directory: browsers "
                 "subscribed with its public key get no push from another", path)
    elif os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the Web Push key %s can be read by other users: chmod 600 it", path)
    return keys


# -- subscriptions, folded from the log ----------------------------------------------------------

@dataclass(frozen=True)
class Subscription:
    """One browser's subscription, owned by the user who made it (last)."""

    id: str
    owner: Who
    endpoint: str
    keys: Mapping[str, str]
    topics: frozenset[str]
    units: frozenset[str] | None  # None: every unit the owner may see
    roles: frozenset[str]
    since: float

    @classmethod
    def of(cls, event: PushSubscribed) -> Subscription:
        return cls(event.subscription, event.actor, event.endpoint, dict(event.keys), frozenset(event.topics),
                   frozenset(event.units) if event.units is not None else None, frozenset(event.roles), event.time)

    def wants(self, topic: str, unit: str, required_roles: Iterable[str]) -> bool:
        allowed = Identity(self.owner, self.roles).missing_roles(required_roles) == []
        return topic in self.topics and (self.units is None or unit in self.units) and allowed

    def same_choices(self, event: PushSubscribed) -> bool:
        """Whether ``event`` would change nothing about this subscription."""
        other = Subscription.of(event)
        return (other.owner.id, other.endpoint, other.keys, other.topics, other.units, other.roles) == \
            (self.owner.id, self.endpoint, self.keys, self.topics, self.units, self.roles)

    def view(self) -> dict[str, Any]:
        """What its owner is shown: never the endpoint or keys, which are the browser's."""
        service = urlsplit(self.endpoint)
        return {"id": self.id, "push_service": f"{service.scheme}://{service.netloc}",
                "topics": sorted(self.topics, key=TOPICS.index),
                "units": sorted(self.units) if self.units is not None else None,
                "since": iso(self.since)}


class Subscriptions:
    """The live subscriptions, folded from ``PushSubscribed`` / ``PushUnsubscribed`` records in
    log order (sans-I/O). An unreadable record is skipped with a log line, never fatal."""

    def __init__(self) -> None:
        self._by_id: dict[str, Subscription] = {}

    def remember(self, type_name: str, data: dict[str, Any]) -> None:
        try:
            if type_name == PushSubscribed.type:
                subscription = Subscription.of(PushSubscribed(**{**data, "actor": Who(**data["actor"])}))
                self._by_id[subscription.id] = subscription
            elif type_name == PushUnsubscribed.type:
                self._by_id.pop(data["subscription"], None)
        except (KeyError, TypeError, ValueError) as error:
            log.error("a stored %s event cannot be read (%s: %s); skipped", type_name, type(error).__name__, error)

    def get(self, subscription: str) -> Subscription | None:
        return self._by_id.get(subscription)

    def of_user(self, user_id: str) -> list[Subscription]:
        return [subscription for subscription in self._by_id.values() if subscription.owner.id == user_id]

    def wanting(self, topic: str, unit: str, required_roles: Iterable[str]) -> list[Subscription]:
        required = list(required_roles)
        return [subscription for subscription in self._by_id.values() if subscription.wants(topic, unit, required)]

    def __len__(self) -> int:
        return len(self._by_id)


# -- sending --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    """A push's content (the JSON the service worker reads) and how the push service treats it."""

    payload: dict[str, Any]
    urgency: Literal["normal", "high"] = "normal"

    @classmethod
    def of(cls, notification: Notification) -> Message:
        return cls({"title": notification.title, "body": _cut(notification.body, BODY_LIMIT), "unit": notification.unit,
                    "url": f"/units/{quote(notification.unit, safe='')}", "topic": notification.topic,
                    "time": notification.time},
                   # someone must act now: the push service may wake a sleeping phone for these
                   "high" if notification.topic in ALERTS else "normal")


def _cut(text: str, limit: int) -> str:
    """``text``, or as much of it as fits in ``limit`` UTF-8 bytes with an ellipsis (3 bytes)."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:limit - 3].decode(errors="ignore") + "…"  # a character cut in two is dropped


@dataclass(frozen=True)
class Delivery:
    """What became of one push: ``delivered`` (the push service took it), ``removed`` (the push
    service said the subscription is gone: it was removed) or ``failed`` (``detail`` says why)."""

    subscription: str
    outcome: Literal["delivered", "removed", "failed"]
    detail: str = ""


class PushSender(Actor[Notification]):
    """Pushes live Notifications to the subscriptions that want them; keeps the subscriptions'
    events (subscribe, unsubscribe, removal of the dead) in the log through ``append``."""

    def __init__(self, keys: VapidKeys, settings: PushSettings, subscriptions: Subscriptions,
                 append: Callable[[list[DomainEvent]], Awaitable[Any]],
                 unit_roles: Callable[[str], list[str] | None]) -> None:
        super().__init__("aggregator/push", capacity=1024)
        self.keys = keys
        self.settings = settings
        self.subscriptions = subscriptions
        self._append = append
        self._unit_roles = unit_roles  # a unit's required roles; None for a unit the views do not know
        self._limiter = trio.CapacityLimiter(settings.workers)
        self._queues: dict[str, deque[Message]] = {}
        self._dropped = RateLimitedLog(log, 60.0)

    def notify(self, notification: Notification) -> None:
        """A live notification (the Projector's listener): queued, never waited for."""
        if not self.subscriptions:
            return
        if not self.offer(notification):
            self._dropped(logging.WARNING, "Web Push is behind: a notification was not pushed")

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            async for notification in self.inbox:
                self._fan_out(notification, nursery)

    def _fan_out(self, notification: Notification, nursery: trio.Nursery) -> None:
        required = self._unit_roles(notification.unit)
        if required is None:
            return  # a unit the views do not know: whom it may be shown to cannot be told
        message = Message.of(notification)
        for subscription in self.subscriptions.wanting(notification.topic, notification.unit, required):
            queue = self._queues.get(subscription.id)
            if queue is None:
                queue = self._queues[subscription.id] = deque(maxlen=QUEUE_LIMIT)
                nursery.start_soon(self._drain, subscription.id, queue)
            elif len(queue) == QUEUE_LIMIT:
                self._dropped(logging.WARNING, f"Web Push to subscription {subscription.id} is behind: "
                                               "its oldest waiting notification was dropped")
            queue.append(message)

    async def _drain(self, key: str, queue: deque[Message]) -> None:
        """One subscription's pushes, one at a time, until its queue is empty."""
        try:
            while queue:
                subscription = self.subscriptions.get(key)
                if subscription is None:
                    return  # unsubscribed meanwhile
                await self.push(subscription, queue.popleft())
        finally:
            del self._queues[key]

    async def push(self, subscription: Subscription, message: Message) -> Delivery:
        """Sends one message in a worker thread, within the timeout; removes the subscription
        when its push service says it is gone."""
        headers = {"Urgency": message.urgency}
        text = json.dumps(message.payload, ensure_ascii=False, separators=(",", ":"))
        info = {"endpoint": subscription.endpoint, "keys": dict(subscription.keys)}
        status: int | None = None
        detail = f"no answer within {self.settings.timeout:g} s"
        # The thread is abandoned at the deadline (requests' own timeout ends it soon after): the
        # loop never waits on a push service.
        with trio.move_on_after(self.settings.timeout + 1.0):
            status, detail = await trio.to_thread.run_sync(self._post, info, text, headers, limiter=self._limiter,
                                                           abandon_on_cancel=True)
        if status is not None and 200 <= status < 300:
            return Delivery(subscription.id, "delivered")
        if status in GONE:
            if await self._remove(subscription, f"the push service answered {status}: the subscription is gone"):
                return Delivery(subscription.id, "removed", detail)
            detail += "; the subscription is gone, but its removal cannot be recorded now"
        log.warning("a push to subscription %s failed: %s", subscription.id, detail)
        return Delivery(subscription.id, "failed", detail)

    def _post(self, info: dict[str, Any], text: str, headers: dict[str, str]) -> tuple[int | None, str]:
        """Encrypts, signs and posts one push (blocking: a worker thread's)."""
        try:
            response = webpush(info, text, vapid_private_key=self.keys.vapid,
                               vapid_claims={"sub": self.settings.contact},  # a fresh dict: webpush fills it in
                               ttl=self.settings.ttl, timeout=self.settings.timeout, headers=headers)
        except WebPushException as error:
            status = error.response.status_code if error.response is not None else None
            return status, f"{status} from the push service" if status is not None else str(error)
        except requests.RequestException as error:
            return None, f"the push service cannot be reached: {type(error).__name__}"
        return response.status_code, ""

    async def _remove(self, subscription: Subscription, reason: str) -> bool:
        """Records the end of ``subscription``; False when the store cannot record it now (the
        next push to it tries again). A newer subscription of the same browser (subscribed again
        meanwhile) is left alone."""
        if self.subscriptions.get(subscription.id) is not subscription:
            return True
        try:
            await self._append([PushUnsubscribed(time=time.time(), unit="", actor=AGGREGATOR,
                                                 subscription=subscription.id, reason=reason)])
        except Exception as error:  # noqa: BLE001 - a failing store is the writer's to report (/health)
            log.warning("subscription %s is gone but its removal cannot be recorded now: %s", subscription.id, error)
            return False
        return True

    # -- what users ask (pectus.web.push) ------------------------------------------------------

    async def subscribe(self, identity: Identity, endpoint: str, keys: Mapping[str, str], topics: list[str],
                        units: list[str] | None) -> Subscription:
        """Records the browser's subscription for ``identity`` (a new event only when something
        changed: a page refreshing its subscription on load costs nothing) and returns it."""
        event = PushSubscribed(time=time.time(), unit="", actor=identity.actor, subscription=subscription_id(endpoint),
                               endpoint=endpoint, keys={"p256dh": keys["p256dh"], "auth": keys["auth"]},
                               topics=[topic for topic in TOPICS if topic in topics],
                               units=sorted(set(units)) if units is not None else None, roles=sorted(identity.roles))
        current = self.subscriptions.get(event.subscription)
        if current is None or not current.same_choices(event):
            await self._append([event])
        subscription = self.subscriptions.get(event.subscription)
        assert subscription is not None  # the append folded it in before it returned
        return subscription

    async def unsubscribe(self, subscription: Subscription, who: Who) -> None:
        await self._append([PushUnsubscribed(time=time.time(), unit="", actor=who, subscription=subscription.id,
                                             reason="unsubscribed")])

    async def test(self, subscriptions: list[Subscription], aggregator_name: str) -> list[Delivery]:
        """A test notification to each of ``subscriptions``, at once; what became of each."""
        message = Message({"title": "Pectus: test notification",
                           "body": f"Notifications of the aggregator {aggregator_name} reach this browser.",
                           "unit": None, "url": "/", "topic": "test",
                           "time": iso(time.time())})
        deliveries: list[Delivery] = []

        async def one(subscription: Subscription) -> None:
            deliveries.append(await self.push(subscription, message))

        async with trio.open_nursery() as nursery:
            for subscription in subscriptions:
                nursery.start_soon(one, subscription)
        return sorted(deliveries, key=lambda delivery: delivery.subscription)
