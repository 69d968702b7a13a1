"""Web Push over HTTP: the browser's key to subscribe with, its subscription and choices, a test
notification (pectus.actors.push sends; static/sw.js, served by pectus.web.pages, shows).

A subscription is the user's (the signed-in user, or with sign-in off the name the page sends)
and names the browser's endpoint at its push service, the browser's keys, the topics and the
units chosen. What is checked before anything is recorded (422 naming the field otherwise):

* the endpoint is a URL of a push service this aggregator pushes to (https; the list is
  ``PushSettings.services``): a client must not make the aggregator post to any address it names;
* ``keys.p256dh`` is a P-256 public key (65 bytes, uncompressed point, base64url) and
  ``keys.auth`` 16 bytes (base64url), as a browser's PushManager makes them;
* topics are names from the closed list (``GET /api/push/config``), units are units the user may
  see (403 naming the roles otherwise).

Only the owner sees a subscription (never its endpoint or keys: the id is the SHA-256 of the
endpoint, which the page works out itself) and only the owner, or a page holding the endpoint
(the browser itself), ends it.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec

from pectus.notifications import TOPICS
from pectus.web.api import ApiError, Backend, current_identity

if TYPE_CHECKING:  # pectus.actors.push reaches this module through pectus.web's package
    from pectus.actors.push import Delivery, PushSender, Subscription

MAX_ENDPOINT = 2048  # characters: push services' endpoints are a few hundred
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
TOPIC_LABELS = {"notify": "Notify: messages", "run_started": "Run started", "run_stopped": "Run stopped",
                "paused_on_error": "Paused on error", "watch_fired": "Watch fired",
                "block_started": "Block started", "connection_lost": "Connection lost"}

SUBSCRIPTION = {
    "type": "object", "required": ["id", "push_service", "topics", "units", "since"],
    "properties": {"id": {"type": "string"}, "push_service": {"type": "string"},
                   "topics": {"type": "array", "items": {"type": "string", "enum": list(TOPICS)}},
                   "units": {"type": ["array", "null"], "items": {"type": "string"}},
                   "since": {"type": "string", "format": "date-time"}},
}
CONFIG = {
    "type": "object", "required": ["public_key", "topics"],
    "properties": {"public_key": {"type": "string", "description": "the VAPID public key (applicationServerKey)"},
                   "topics": {"type": "array", "items": {
                       "type": "object", "required": ["name", "label"],
                       "properties": {"name": {"type": "string"}, "label": {"type": "string"}}}}},
}
SUBSCRIBE_BODY = {
    "type": "object", "required": ["endpoint", "keys", "topics"],
    "properties": {
        "endpoint": {"type": "string", "minLength": 1, "description": "PushSubscription.endpoint"},
        "keys": {"type": "object", "required": ["p256dh", "auth"],
                 "properties": {"p256dh": {"type": "string"}, "auth": {"type": "string"}}},
        "topics": {"type": "array", "items": {"type": "string", "enum": list(TOPICS)}},
        "units": {"type": ["array", "null"], "items": {"type": "string"},
                  "description": "unit ids; null or absent: every unit the user may see"}},
}
UNSUBSCRIBE_BODY = {
    "type": "object",
    "properties": {"endpoint": {"type": "string", "description": "the browser's endpoint: ends the subscription "
                                                                 "whoever owns it"}},
}
TEST_BODY = {
    "type": "object",
    "properties": {"subscription": {"type": "string", "description": "one of the caller's subscriptions; "
                                                                     "absent: all of them"}},
}
DELIVERIES = {
    "type": "object", "required": ["deliveries"],
    "properties": {"deliveries": {"type": "array", "items": {
        "type": "object", "required": ["subscription", "outcome", "detail"],
        "properties": {"subscription": {"type": "string"},
                       "outcome": {"enum": ["delivered", "removed", "failed"]}, "detail": {"type": "string"}}}}},
}


def _sender(backend: Backend) -> PushSender:
    return backend.push  # type: ignore[attr-defined]  # the aggregator's Backend has one (pectus.actors.aggregator)


def _base64url(text: str, field: str, length: int) -> bytes:
    try:
        if not _BASE64URL.fullmatch(text):
            raise ValueError(text)  # the decoder would skip the characters it does not know
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ApiError(422, f"{field} is not base64url", field) from None
    if len(raw) != length:
        raise ApiError(422, f"{field} must be {length} bytes (got {len(raw)}), as a browser's PushManager makes it",
                       field)
    return raw


def _check_keys(keys: dict[str, str]) -> None:
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _base64url(keys["p256dh"], "keys.p256dh", 65))
    except ValueError:
        raise ApiError(422, "keys.p256dh is not a P-256 public key (an uncompressed point)", "keys.p256dh") from None
    _base64url(keys["auth"], "keys.auth", 16)


def _check_units(backend: Backend, units: list[str] | None) -> None:
    identity = current_identity()
    for index, unit in enumerate(units or ()):
        found = backend.views.unit(unit)
        if found is None:
            raise ApiError(422, f"units[{index}]: unknown process unit {unit!r}", f"units[{index}]")
        missing = identity.missing_roles(found.get("required_roles", ()))
        if missing:
            raise ApiError(403, f"you are missing one of these roles for {unit}: {', '.join(missing)}",
                           missing_roles=missing)


def _own(backend: Backend, subscription: str) -> Subscription:
    found = _sender(backend).subscriptions.get(subscription)
    if found is None or found.owner.id != current_identity().actor.id:
        raise ApiError(404, f"you have no push subscription {subscription!r}")
    return found


# -- handlers ---------------------------------------------------------------------------------

async def config(backend: Backend) -> dict[str, Any]:
    return {"public_key": _sender(backend).keys.public_key,
            "topics": [{"name": topic, "label": TOPIC_LABELS.get(topic, topic)} for topic in TOPICS]}


async def subscriptions(backend: Backend) -> list[dict[str, Any]]:
    return [found.view() for found in _sender(backend).subscriptions.of_user(current_identity().actor.id)]


async def subscribe(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
    endpoint = body["endpoint"]
    if len(endpoint) > MAX_ENDPOINT:
        raise ApiError(422, f"endpoint is longer than {MAX_ENDPOINT} characters", "endpoint")
    refusal = _sender(backend).settings.refusal(endpoint)
    if refusal:
        raise ApiError(422, refusal, "endpoint")
    _check_keys(body["keys"])
    if not body["topics"]:
        raise ApiError(422, "topics: choose at least one topic", "topics")
    units = body.get("units")
    if units == []:
        raise ApiError(422, "units: choose at least one unit, or null for every unit you may see", "units")
    _check_units(backend, units)
    subscribed = await _sender(backend).subscribe(current_identity(), endpoint, body["keys"], body["topics"], units)
    return subscribed.view()


async def unsubscribe(backend: Backend, body: dict[str, Any], subscription: str) -> dict[str, Any]:
    sender = _sender(backend)
    endpoint = body.get("endpoint")
    held = sender.subscriptions.get(subscription)
    if held is None or held.endpoint != endpoint:  # the browser holding the endpoint may, else only the owner
        held = _own(backend, subscription)
    await sender.unsubscribe(held, current_identity().actor)
    return {"accepted": True}


async def test(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
    sender = _sender(backend)
    chosen = body.get("subscription")
    targets = [_own(backend, chosen)] if chosen else sender.subscriptions.of_user(current_identity().actor.id)
    if not targets:
        raise ApiError(404, "you have no push subscription: subscribe this browser first (the bell in the top bar)")
    deliveries: list[Delivery] = await sender.test(targets, backend.views.aggregator_name)
    return {"deliveries": [{"subscription": delivery.subscription, "outcome": delivery.outcome,
                            "detail": delivery.detail} for delivery in deliveries]}
