"""A push service on loopback for tests: it takes pushes as Chrome's or Firefox's would, checks
them, and decrypts them as the browser would.

A browser's subscription is an endpoint at its push service plus the browser's keys (a P-256 key
pair and a 16-byte auth secret). :meth:`PushEndpoint.subscribe` makes one as a browser does, or
:meth:`PushEndpoint.register` takes keys a real browser made (WebCrypto). For every POST to an
endpoint the service checks, before answering 201:

* VAPID (RFC 8292): ``Authorization: vapid t=<JWT>,k=<key>``, where ``k`` is the public key the
  aggregator serves (``GET /api/push/config``), and the JWT is ES256-signed by it (checked with
  PyJWT, not with the sender's library), for this service's origin (``aud``), not expired, with a
  ``sub`` contact;
* the body is ``Content-Encoding: aes128gcm`` (RFC 8188) and decrypts with the subscriber's keys
  (RFC 8291): written out here with ``cryptography``'s primitives (ECDH, HKDF, AES-GCM), so what
  the aggregator's library sends is checked against the RFC rather than against itself;
* a ``TTL`` header.

A check that fails is answered 400 and listed in :attr:`PushEndpoint.refused`. A subscriber can be
made to answer another status (404 / 410: the subscription is gone) or to hang until released
(a slow push service).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from py_vapid import Vapid

from pectus.actors.push import PushSender, PushSettings, Subscriptions, VapidKeys

# The push service of a fake backend's sender (memory_sender): subscriptions are taken, no push is sent.
FAKE_SERVICE = "https://push.example"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def browser_keys() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A subscription's keys as a browser's PushManager makes them: P-256, and a 16-byte auth secret."""
    return ec.generate_private_key(ec.SECP256R1()), os.urandom(16)


def memory_sender(views: Any) -> PushSender:
    """A PushSender for a fake backend (the web tests'): its events fold into its subscriptions at
    once, without a store; it takes endpoints at FAKE_SERVICE."""
    subscriptions = Subscriptions()

    async def append(events: list[Any]) -> None:
        for event in events:
            subscriptions.remember(event.type, event.to_data())

    def unit_roles(unit: str) -> list[str] | None:
        found = views.unit(unit)
        return found.get("required_roles", []) if found is not None else None

    return PushSender(VapidKeys(Vapid(ec.generate_private_key(ec.SECP256R1()))),
                      PushSettings(services=(FAKE_SERVICE,)), subscriptions, append, unit_roles)


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def decrypt_aes128gcm(body: bytes, private_key: ec.EllipticCurvePrivateKey, auth: bytes) -> bytes:
    """RFC 8291 message decryption (RFC 8188 aes128gcm content coding); ValueError when it fails."""
    if len(body) < 21:
        raise ValueError("shorter than the aes128gcm header")
    salt, (record_size,), id_length = body[:16], struct.unpack(">I", body[16:20]), body[20]
    sender_public = body[21:21 + id_length]
    records = body[21 + id_length:]
    if id_length != 65 or record_size < 18:
        raise ValueError(f"header: keyid of {id_length} bytes, record size {record_size}")
    receiver_public = private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                            serialization.PublicFormat.UncompressedPoint)
    shared = private_key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                                                           sender_public))
    ikm = _hkdf(auth, shared, b"WebPush: info\x00" + receiver_public + sender_public, 32)
    key = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    plain = b""
    chunks = [records[start:start + record_size] for start in range(0, len(records), record_size)]
    for index, chunk in enumerate(chunks):
        record_nonce = (int.from_bytes(nonce, "big") ^ index).to_bytes(12, "big")
        padded = AESGCM(key).decrypt(record_nonce, chunk, None)  # InvalidTag: not for these keys
        unpadded = padded.rstrip(b"\x00")
        delimiter = b"\x02" if index == len(chunks) - 1 else b"\x01"
        if not unpadded.endswith(delimiter):
            raise ValueError(f"record {index} has no {delimiter!r} padding delimiter")
        plain += unpadded[:-1]
    return plain


@dataclass
class Received:
    """One push as the browser gets it, with the headers the push service saw."""

    payload: dict[str, Any]
    text: str
    urgency: str | None
    ttl: int
    claims: dict[str, Any]


@dataclass
class Subscriber:
    """A browser's side of a subscription: its endpoint and keys, and what reached it."""

    token: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    status: int = 201
    hold: threading.Event | None = None  # set: answer; unset: hang (a slow push service)
    received: list[Received] = field(default_factory=list)
    posts: int = 0

    @property
    def keys(self) -> dict[str, str]:
        public = self.private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                            serialization.PublicFormat.UncompressedPoint)
        return {"p256dh": b64url(public), "auth": b64url(self.auth)}

    def subscription(self, topics: list[str], units: list[str] | None = None) -> dict[str, Any]:
        """The body the page posts to ``/api/push/subscriptions``."""
        return {"endpoint": self.endpoint, "keys": self.keys, "topics": topics, "units": units}


class PushEndpoint:
    """The push service. ``vapid_key`` is the aggregator's public key (base64url), set once known."""

    def __init__(self) -> None:
        self.vapid_key: str | None = None
        self.subscribers: dict[str, Subscriber] = {}
        self.refused: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> PushEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for subscriber in self.subscribers.values():
            if subscriber.hold is not None:
                subscriber.hold.set()
        self._server.shutdown()
        self._server.server_close()

    def subscribe(self) -> Subscriber:
        """A new browser's subscription: keys made as a browser makes them (P-256, 16-byte auth)."""
        return self.register(*browser_keys())

    def register(self, private_key: ec.EllipticCurvePrivateKey, auth: bytes, token: str | None = None) -> Subscriber:
        token = token or secrets.token_urlsafe(16)
        subscriber = Subscriber(token, f"{self.origin}/push/{token}", private_key, auth)
        with self._lock:
            self.subscribers[token] = subscriber
        return subscriber

    def wait_for(self, subscriber: Subscriber, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """What reached ``subscriber`` once it holds ``count`` pushes (AssertionError at the deadline)."""
        deadline = time.monotonic() + timeout
        while len(subscriber.received) < count:
            assert not self.refused, self.refused
            assert time.monotonic() < deadline, f"{len(subscriber.received)} of {count} push(es) arrived"
            time.sleep(0.02)
        return list(subscriber.received)

    # -- the service ---------------------------------------------------------------------------

    def _take(self, token: str, headers: Any, body: bytes) -> int:
        subscriber = self.subscribers.get(token)
        if subscriber is None:
            return 404
        subscriber.posts += 1
        if subscriber.hold is not None:
            subscriber.hold.wait()
        if subscriber.status != 201:
            return subscriber.status
        try:
            claims = self._check_vapid(headers.get("Authorization", ""))
            if headers.get("Content-Encoding") != "aes128gcm":
                raise ValueError(f"Content-Encoding {headers.get('Content-Encoding')!r}, not aes128gcm")
            ttl = int(headers["TTL"])
            text = decrypt_aes128gcm(body, subscriber.private_key, subscriber.auth).decode()
        except Exception as error:  # noqa: BLE001 - every failed check is the test's finding
            self.refused.append(f"{type(error).__name__}: {error}")
            return 400
        subscriber.received.append(Received(json.loads(text), text, headers.get("Urgency"), ttl, claims))
        return 201

    def _check_vapid(self, authorization: str) -> dict[str, Any]:
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"Authorization scheme {scheme!r}, not vapid")
        parts = dict(part.strip().split("=", 1) for part in params.split(","))
        if parts.get("k") != self.vapid_key:
            raise ValueError("the VAPID key is not the one the aggregator serves")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(parts["k"]))
        claims = jwt.decode(parts["t"], public, algorithms=["ES256"], audience=self.origin,
                            options={"require": ["exp", "aud", "sub"]})
        if not 0 < claims["exp"] - time.time() <= 24 * 3600:
            raise ValueError(f"exp is not within 24 hours: {claims['exp']}")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            raise ValueError(f"sub {claims['sub']!r} is no contact")
        return claims

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                prefix = "/push/"
                status = endpoint._take(self.path[len(prefix):], self.headers, body) \
                    if self.path.startswith(prefix) else 404
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
