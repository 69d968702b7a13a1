"""A small but real OpenID Connect provider for tests, on 127.0.0.1 over HTTP.

It speaks the protocol a browser SPA uses with Azure AD / Entra ID: discovery, JWKS, the
Authorization Code flow with PKCE (S256 only), refresh tokens and end-session. Sign-in is automatic:
``/authorize`` approves at once as ``provider.user``, with no login form.

Endpoints all live under the issuer's path, like Azure's ``/{tenant}/v2.0`` issuer:

    {issuer}/.well-known/openid-configuration   discovery
    {issuer}/keys                               JWKS: the one published signing key
    {issuer}/authorize                          code + PKCE; 302 back to redirect_uri
    {issuer}/token                              authorization_code and refresh_token grants
    {issuer}/logout                             302 to post_logout_redirect_uri

Every response allows any origin (CORS), as Azure does for SPA apps, because the browser fetches
discovery and posts to the token endpoint cross-origin.

Usage::

    with OidcProvider(client_id="pectus-test", tenant="test-tenant") as provider:
        token = provider.mint(name="Bob")
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

KID = "pectus-test-key"
SCOPES = ["openid", "profile", "email", "offline_access"]


def _default_user() -> dict[str, Any]:
    return {"oid": "oid-alice", "sub": "sub-alice", "name": "Alice Smith",
            "preferred_username": "alice@example.com", "roles": ["Operator"]}


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge for ``verifier``: base64url(sha256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class _Grant:
    """What an issued authorization code stands for; the user is fixed when the code is issued."""

    redirect_uri: str
    code_challenge: str
    nonce: str | None
    user: dict[str, Any]


class OidcProvider:
    """A local OIDC provider. Use as a context manager:
    ``with OidcProvider(client_id="pectus-test", tenant="test-tenant") as provider:``

    Invariants: only the "good" key is published in the JWKS, under ``KID``; an authorization code
    is redeemed at most once (any attempt, failed or not, uses it up); a refresh token keeps the user
    it was issued for, even if ``user`` is reassigned later (as a real directory's session would).

    ``lifetime`` (seconds) is the lifetime of the ID tokens the token endpoint issues; tests of
    renewal set it short. ``grants`` lists the grant type of every successful token request, in order.
    """

    def __init__(self, client_id: str = "pectus-test", tenant: str = "test-tenant") -> None:
        self.client_id = client_id
        self.tenant = tenant
        self.user: dict[str, Any] = _default_user()
        self.lifetime: float = 3600
        self.grants: list[str] = []
        self._good = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._lock = threading.Lock()  # the handler threads share the two tables below
        self._codes: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}/{tenant}/v2.0"

    # --- tokens ---------------------------------------------------------------------------------

    def mint(self, *, key: str = "good", lifetime: float = 3600, **claims: Any) -> str:
        """An RS256 ID token for ``self.user``, valid from now for ``lifetime`` seconds.

        ``claims`` override the standard ones and the user's; a claim passed as None is removed.
        ``key="rogue"`` signs with a key that is not published but carries the same kid: a forgery.
        """
        return self._mint(self.user, key=key, lifetime=lifetime, **claims)

    def _mint(self, user: dict[str, Any], *, key: str = "good", lifetime: float = 3600, **claims: Any) -> str:
        if key not in ("good", "rogue"):
            raise ValueError(f"key must be 'good' or 'rogue', not {key!r}")
        now = int(time.time())
        payload: dict[str, Any] = {"iss": self.issuer, "aud": self.client_id, "tid": self.tenant, "ver": "2.0",
                                   "iat": now, "nbf": now, "exp": now + int(lifetime), **user, **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        signer = self._good if key == "good" else self._rogue
        return jwt.encode(payload, signer, algorithm="RS256", headers={"kid": KID})

    def jwks(self) -> dict[str, Any]:
        """The published key set: the good key only."""
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._good.public_key()))
        return {"keys": [{**public, "kid": KID, "use": "sig", "alg": "RS256"}]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/keys",
            "end_session_endpoint": f"{self.issuer}/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["pairwise"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": SCOPES,
        }

    # --- protocol steps (called by the handler) --------------------------------------------------

    def _authorize(self, query: dict[str, str]) -> tuple[int, str]:
        """(302, redirect location) on success, else (400, a plain message)."""
        problems = []
        if query.get("response_type") != "code":
            problems.append("response_type must be 'code'")
        if query.get("client_id") != self.client_id:
            problems.append(f"unknown client_id {query.get('client_id')!r}")
        redirect_uri = query.get("redirect_uri", "")
        if urlsplit(redirect_uri).scheme not in ("http", "https") or not urlsplit(redirect_uri).netloc:
            problems.append("redirect_uri must be an absolute http(s) URL")
        if "openid" not in query.get("scope", "").split():
            problems.append("scope must include 'openid'")
        if not query.get("state"):
            problems.append("state is required")
        if not query.get("code_challenge"):
            problems.append("code_challenge is required (PKCE)")
        if query.get("code_challenge_method") != "S256":
            problems.append("code_challenge_method must be 'S256'")
        if problems:
            return 400, "; ".join(problems)
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _Grant(redirect_uri, query["code_challenge"], query.get("nonce"), dict(self.user))
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return 302, redirect_uri + separator + urlencode({"code": code, "state": query["state"]})

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """(200, tokens) or (400, an OAuth error body)."""
        if form.get("client_id") != self.client_id:
            return 400, {"error": "invalid_client", "error_description": "unknown client_id"}
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            with self._lock:
                grant = self._codes.pop(form.get("code", ""), None)  # single use, even when refused below
            if grant is None:
                return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
            if form.get("redirect_uri") != grant.redirect_uri:
                return 400, {"error": "invalid_grant", "error_description": "redirect_uri does not match"}
            if pkce_challenge(form.get("code_verifier", "")) != grant.code_challenge:
                return 400, {"error": "invalid_grant", "error_description": "code_verifier does not match"}
            id_token = self._mint(grant.user, lifetime=self.lifetime, nonce=grant.nonce)
        elif grant_type == "refresh_token":
            with self._lock:
                grant = self._refresh.get(form.get("refresh_token", ""))
            if grant is None:
                return 400, {"error": "invalid_grant", "error_description": "unknown refresh_token"}
            # A refreshed ID token carries no nonce, as Azure's do (OIDC Core 12.2).
            id_token = self._mint(grant.user, lifetime=self.lifetime)
        else:
            return 400, {"error": "unsupported_grant_type", "error_description": f"grant_type {grant_type!r}"}
        refresh_token = secrets.token_urlsafe(32)
        with self._lock:
            self._refresh[refresh_token] = grant
            self.grants.append(grant_type)
        return 200, {"id_token": id_token, "access_token": secrets.token_urlsafe(32),
                     "refresh_token": refresh_token, "token_type": "Bearer", "expires_in": int(self.lifetime),
                     "scope": " ".join(SCOPES)}

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> OidcProvider:
        # A short poll interval: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="oidc-provider", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)


def _handler_for(provider: OidcProvider) -> type[BaseHTTPRequestHandler]:
    prefix = f"/{provider.tenant}/v2.0"  # the issuer's path; the issuer itself waits on the port

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # quiet: tests read their own output

        def do_OPTIONS(self) -> None:
            self._send(204, b"", extra={"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                                        "Access-Control-Allow-Headers": "*",
                                        "Access-Control-Max-Age": "600"})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {name: values[0] for name, values in parse_qs(url.query).items()}
            route = url.path.removeprefix(prefix) if url.path.startswith(prefix) else None
            if route == "/.well-known/openid-configuration":
                self._json(200, provider.discovery())
            elif route == "/keys":
                self._json(200, provider.jwks())
            elif route == "/authorize":
                status, text = provider._authorize(query)
                if status == 302:
                    self._send(302, b"", extra={"Location": text})
                else:
                    self._send(status, text.encode(), "text/plain; charset=utf-8")
            elif route == "/logout":
                target = query.get("post_logout_redirect_uri")
                if target:
                    self._send(302, b"", extra={"Location": target})
                else:
                    self._send(200, b"Signed out.", "text/plain; charset=utf-8")
            else:
                self._send(404, b"Not found.", "text/plain; charset=utf-8")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if url.path != prefix + "/token":
                self._send(404, b"Not found.", "text/plain; charset=utf-8")
                return
            if not self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                self._json(400, {"error": "invalid_request",
                                 "error_description": "the body must be application/x-www-form-urlencoded"})
                return
            form = {name: values[0] for name, values in parse_qs(body).items()}
            self._json(*provider._token(form))

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json",
                       extra={"Cache-Control": "no-store"})

        def _send(self, status: int, body: bytes, content_type: str | None = None,
                  extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Access-Control-Allow-Origin", "*")
            if content_type:
                self.send_header("Content-Type", content_type)
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
