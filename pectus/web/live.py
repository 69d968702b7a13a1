"""The live WebSocket ``/api/ws``: one browser's sign-in, the units it follows, and its deltas.

The fan-out itself is :class:`pectus.actors.ui_hub.UiHub`'s: deltas are collected in rounds,
encoded once for all browsers, and each browser's sender takes what it may see of the rounds
it has not read yet, as one frame, at most once a round (``PACE``); a browser that lags gets
them coalesced (the newest whole view, changes merged by key) instead of a backlog. This module
keeps each subscription's filter right: who is signed in on the socket (its roles) and which
units it follows, re-checked whenever either changes, and it writes the subscription's frames
to the socket in order.

Invariant: once the reply to a request has been sent, no delta the request ruled out follows
it - an unsubscribed unit, or a unit the identity just sent on the socket may not see. The
reply is queued behind the deltas published until then, and the subscription's filter applies
to everything it has not taken yet, so what the request ruled out is never taken again.

A page of another site cannot open the socket through the browser: as for every request that
acts (``pectus.web.api.refuse_cross_site``), a handshake whose Origin is neither the
aggregator's own nor listed in PECTUS_ALLOWED_ORIGINS is refused (403), sign-in on or off.
"""

from __future__ import annotations

import json
import time
from typing import Any

import trio
from quart import Response, current_app, websocket
from quart.wrappers import Websocket

from pectus.actors.ui_hub import STALL, Subscription
from pectus.web.api import ALLOWED_ORIGINS_VARIABLE, INLINE_BODY_BYTES, JSON, decode_json, origin_of
from pectus.web.app import ApiError, Backend, _sign_in, authorize, check
from pectus.web.auth import ANONYMOUS, Identity, SignIn, SignInError

WS_CLOSE_TIMEOUT = 5.0  # a browser that cannot even take the close frame is dropped after this
WS_TOO_SLOW = 1013
WS_GOING_AWAY = 1001
WS_SIGN_IN_EXPIRED = 4401
WS_REQUEST_SCHEMA = {
    "type": "object",
    "properties": {
        "identity": {"type": "string"},
        "subscribe": {"type": "array", "items": {"type": "string"}},
        "unsubscribe": {"type": "array", "items": {"type": "string"}},
        # presence: the unit whose page the browser shows (null: none), and (sign-in off) the name
        "here": {"type": ["string", "null"]},
        "name": {"type": "string"},
    },
}
REQUEST_KEYS = frozenset(WS_REQUEST_SCHEMA["properties"])


class LiveSocket:
    """One browser on ``/api/ws``, served by four tasks: ``read_requests`` applies the
    browser's sign-in and (un)subscriptions to the hub subscription, ``send_outbox`` writes the
    subscription's frames to the socket (at most one a round of the hub, besides replies),
    ``watch`` closes the socket when the subscription ends (1013 when it stalled, 1001 when the
    hub closed), and ``expire`` closes it when the sign-in runs out (4401; a renewed identity
    sent on the socket moves that moment). Only ``send_outbox`` ever waits on the browser; the
    hub never does.
    """

    def __init__(self, socket: Websocket, sign_in: SignIn, views: Any, subscription: Subscription) -> None:
        self.socket = socket
        self.sign_in = sign_in
        self.views = views
        self.subscription = subscription
        self.scope = trio.CancelScope()
        # Browsers cannot set headers on a WebSocket: with sign-in on, the first message signs in.
        self.identity: Identity | None = None
        if not sign_in.config.enabled:
            self.switch_identity(ANONYMOUS)
        self._expiry = trio.CancelScope()  # its deadline is the identity's expiry, in trio's clock
        self.close_code: int | None = None
        self.close_reason = ""
        self.here: str | None = None  # the unit whose page the browser shows (presence)
        self.name = ""  # the name the browser gave (sign-in off: the "Your name" field)

    async def serve(self) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.send_outbox)
                nursery.start_soon(self.watch)
                nursery.start_soon(self.expire)
                await self.read_requests()
        if self.close_code is not None:
            with trio.move_on_after(WS_CLOSE_TIMEOUT):
                await self.socket.close(self.close_code, self.close_reason)

    def end(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        self.scope.cancel()

    async def send_outbox(self) -> None:
        async for frames in self.subscription:
            for frame in frames:
                await self.socket.send(frame)

    async def watch(self) -> None:
        await self.subscription.closed.wait()
        if self.subscription.stalled:
            self.end(WS_TOO_SLOW, f"read nothing for {STALL:g} s: reconnect and refetch")
        else:
            self.end(WS_GOING_AWAY, "the aggregator is shutting down")

    async def expire(self) -> None:
        with self._expiry:
            await trio.sleep_forever()
        self.end(WS_SIGN_IN_EXPIRED, "the sign-in expired: renew it and reconnect")

    async def read_requests(self) -> None:
        while True:
            raw = await self.socket.receive()
            try:
                answer = await self.apply(raw)
            except ApiError as error:
                answer = error.body()
            await self.subscription.reply(answer)

    async def apply(self, raw: str | bytes) -> dict[str, Any]:
        """Apply one request; the reply: ``{"subscribed": [...]}``, with ``"dropped"`` when a
        new identity may not see some of the units followed until then."""
        # decoded as a request body is: bounded nesting, no lone surrogate, 400 / 422 with the reason
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        if len(data) <= INLINE_BODY_BYTES:
            message = decode_json(data)
        else:  # in a worker thread, as a large body is
            message = await trio.to_thread.run_sync(decode_json, data)
        check(WS_REQUEST_SCHEMA, message)
        if not message.keys() & REQUEST_KEYS:
            raise ApiError(422, 'expected {"subscribe": [unit ids]}, {"unsubscribe": [unit ids]} or '
                                '{"here": unit id or null, "name": "your name"}')
        dropped: dict[str, list[str]] = {}
        if "identity" in message:
            try:
                identity = await self.sign_in.identify_token(message["identity"])
            except SignInError as error:
                raise ApiError(error.status, str(error)) from None
            self._expiry.deadline = trio.current_time() + (identity.expires - time.time())
            dropped = self.switch_identity(identity)
        subscribe = message.get("subscribe", ())
        if subscribe and self.identity is None:
            raise ApiError(401, 'sign in first: send {"identity": "<ID token>"}')
        for unit in subscribe:
            authorize(self.views, self.identity, {"unit": unit})
        here = message.get("here", self.here)
        if here is not None:
            if self.identity is None:
                raise ApiError(401, 'sign in first: send {"identity": "<ID token>"}')
            authorize(self.views, self.identity, {"unit": here})
        self.subscription.follow(subscribe)
        self.subscription.unfollow(message.get("unsubscribe", ()))
        self.name = message.get("name", self.name)
        self.here = None if here in dropped else here
        self.subscription.be_here(self.here, self.presence_name())
        answer: dict[str, Any] = {"subscribed": sorted(self.subscription.units)}
        if dropped:
            answer["dropped"] = dropped
        return answer

    def presence_name(self) -> str:
        """Who the browser is shown as to the others on the unit's page: the signed-in user's
        name, or with sign-in off the name it sent."""
        return self.identity.actor.name if self.sign_in.config.enabled and self.identity is not None else self.name

    def switch_identity(self, identity: Identity) -> dict[str, list[str]]:
        """Deliver to ``identity`` from now on; the followed units it may not see are dropped
        (no delta of theirs follows): returned with the roles that would give access."""
        dropped: dict[str, list[str]] = {}
        for unit in self.subscription.units:
            try:
                authorize(self.views, identity, {"unit": unit})
            except ApiError as error:
                dropped[unit] = error.missing_roles or []
        self.identity = identity
        self.subscription.unfollow(dropped)
        self.subscription.sign_in(identity)
        return dropped


WS_SCHEMES = {"ws": "http", "wss": "https"}  # the page's scheme, as its Origin header writes it


def refuse_other_sites(socket: Websocket, allowed: frozenset[str]) -> None:
    """ApiError 403 for a handshake a page of another site made: its Origin is neither the
    aggregator's own (the page's scheme and the Host, or https and the Host behind a proxy that
    ends TLS) nor in ``allowed``. Clients that are not browsers send no Origin and pass."""
    origin = socket.headers.get("Origin")
    if origin is None:
        return
    own = origin_of(f"{WS_SCHEMES.get(socket.scheme, socket.scheme)}://{socket.host}")
    claimed = origin_of(origin)
    if claimed is None or (claimed not in (own, origin_of(f"https://{socket.host}")) and claimed not in allowed):
        raise ApiError(403, f"a live socket from the origin {origin!r} is refused: only pages of this aggregator "
                            f"({own}) and of origins listed in {ALLOWED_ORIGINS_VARIABLE} may open it")


async def live_socket(backend: Backend) -> Response | None:
    """Live deltas. The browser sends ``{"subscribe": [unit ids]}`` or ``{"unsubscribe": [...]}``
    and gets ``{"subscribed": [unit ids]}`` back; a malformed message gets ``{"error": {...}}``
    and the socket stays open. The server sends a delta ``{"unit", "topic", "data"}`` for each
    change of a followed unit and of the global topics ``units`` and ``runs`` (those the user may
    see). Deltas come in frames: each text frame is a JSON array of one or more deltas, in order
    (all that waited for the browser when it was ready for more), at most one frame every 0.25 s
    (the hub's ``PACE``) besides replies; replies are JSON objects.

    With sign-in on, the first message carries the ID token, ``{"identity": "<token>"}`` (alone
    or with a subscribe); without it a subscribe is refused (401), and a unit requiring a role
    the user lacks is refused (403). A later identity (a renewed token, or another user) is
    checked against every unit followed: those it may not see are unfollowed and listed in the
    reply, ``{"subscribed": [...], "dropped": {unit id: [roles that would give access]}}``, and
    no delta of theirs follows that reply.

    A browser that falls behind is not disconnected: while it lags, a newer delta takes the place
    of the waiting one of the same view (``units``, ``control_state``, ``method``; ``runs`` per
    run), and the changes of ``values`` (by tag, separately for live values and recorded
    samples) and of ``run_log`` / ``error_log`` (by item id, per run) are merged, so merging the
    deltas it receives by key still gives the current picture. Close codes: 1013 means the
    browser read nothing for 30 s while deltas waited for it, 1001 that the aggregator is going
    away, 4401 that the sign-in expired: reconnect (with a renewed token), resubscribe and
    refetch. A handshake from a page of another site is refused (403: ``refuse_other_sites``).

    Presence: ``{"here": unit id}`` says the browser shows that unit's page (``null``: none),
    ``{"name": "..."}`` the name it is shown under with sign-in off (with sign-in on it is the
    signed-in user's). Everyone following the unit gets its ``presence`` delta when its company
    changes (``pectus.actors.ui_hub``); a socket that closes leaves."""
    socket = websocket._get_current_object()
    try:
        refuse_other_sites(socket, current_app.extensions["pectus.allowed_origins"])
    except ApiError as error:  # answered instead of the handshake (there is no request to make it JSON)
        return current_app.response_class(json.dumps(error.body()), status=error.status, mimetype=JSON)
    await socket.accept()
    subscription = backend.subscribe()
    try:
        await LiveSocket(socket, _sign_in(), backend.views, subscription).serve()
    finally:
        subscription.close()
