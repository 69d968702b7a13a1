"""A small but real OpenID Connect provider for tests, on 127.0.0.1 over HTTP.

It speaks the protocol a browser SPA uses with Azure AD / Entra ID: discovery, JWKS, the
Authorization Code flow with PKCE (S256 only), refresh tokens and end-session. Sign-in is automatic:
``/authorize`` approves at once as ``provider.user``, with no login form.

It also speaks the client-credentials grant that engines use (through msal): an application
registered with :meth:`OidcProvider.register_app` gets an access token for the aggregator's API
with its client secret, or with a client assertion signed by the private key of a registered
certificate. The tokens carry the claims Azure gives app tokens (``idtyp: "app"``, ``azp`` in
version 2 tokens, ``appid`` and ``app_displayname`` in version 1 tokens, ``roles``, ``oid`` =
``sub``). msal only talks to an https authority, so ``OidcProvider(tls=True)`` serves https with a
self-signed certificate, written to ``provider.ca_file`` for clients to trust.

Endpoints all live under the issuer's path, like Azure's ``/{tenant}/v2.0`` issuer:

    {issuer}/.well-known/openid-configuration   discovery
    {issuer}/keys                               JWKS: the one published signing key
    {issuer}/authorize                          code + PKCE; 302 back to redirect_uri
    {issuer}/token                              authorization_code, refresh_token, client_credentials
    {issuer}/logout                             302 to post_logout_redirect_uri

Every response allows any origin (CORS), as Azure does for SPA apps, because the browser fetches
discovery and posts to the token endpoint cross-origin.

Usage::

    with OidcProvider(client_id="pectus-test", tenant="test-tenant") as provider:
        token = provider.mint(name="Bob")
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import secrets
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KID = "pectus-test-key"
SCOPES = ["openid", "profile", "email", "offline_access"]
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _default_user() -> dict[str, Any]:
    return {"oid": "oid-alice", "sub": "sub-alice", "name": "Alice Smith",
            "preferred_username": "alice@example.com", "roles": ["Operator"]}


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge for ``verifier``: base64url(sha256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def self_signed_certificate(common_name: str) -> tuple[bytes, bytes]:
    """A new RSA key and a self-signed certificate for it, valid for a day and for the address
    127.0.0.1: (private key PEM, certificate PEM). Serves as the provider's https certificate and as
    an application's client certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def _thumbprint(certificate: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    """A certificate's thumbprint as JWT headers carry it (``x5t``, ``x5t#S256``): base64url, no padding."""
    return base64.urlsafe_b64encode(certificate.fingerprint(algorithm)).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class App:
    """An application registered for the client-credentials grant (an engine, in Entra ID terms an
    app registration with its service principal ``object_id``). It proves itself with ``secret``,
    or with an assertion signed by the private key of ``certificate``."""

    client_id: str
    secret: str | None
    certificate: x509.Certificate | None
    roles: tuple[str, ...]
    display_name: str
    object_id: str


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

    ``client_id`` is the aggregator's application: the audience of ID tokens, and the API that
    applications ask access tokens for, as ``<client_id>/.default`` or ``api://<client_id>/.default``
    (the token's ``aud`` is the resource as asked). ``access_token_version`` is that API's token
    version (Entra ID's ``accessTokenAcceptedVersion``): 2 issues under ``issuer`` with ``azp``, 1
    under Azure's older ``https://sts.windows.net/<tenant>/`` with ``appid`` and ``app_displayname``.

    ``lifetime`` (seconds) is the lifetime of the tokens the token endpoint issues; tests of
    renewal set it short. ``grants`` lists the grant type of every successful token request, in order.
    """

    def __init__(self, client_id: str = "pectus-test", tenant: str = "test-tenant", *, tls: bool = False) -> None:
        self.client_id = client_id
        self.tenant = tenant
        self.user: dict[str, Any] = _default_user()
        self.lifetime: float = 3600
        self.access_token_version = 2
        self.grants: list[str] = []
        self._good = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._lock = threading.Lock()  # the handler threads share the tables below
        self._codes: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}
        self._apps: dict[str, App] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._directory: str | None = None
        self.ca_file: str | None = None  # with tls: the PEM certificate a client must trust
        if tls:
            self._serve_tls()
        scheme = "https" if tls else "http"
        self.issuer = f"{scheme}://127.0.0.1:{self._server.server_address[1]}/{tenant}/v2.0"

    def _serve_tls(self) -> None:
        key_pem, certificate_pem = self_signed_certificate("127.0.0.1")
        self._directory = tempfile.mkdtemp(prefix="oidc-provider-")
        key_file, self.ca_file = Path(self._directory, "key.pem"), str(Path(self._directory, "certificate.pem"))
        key_file.write_bytes(key_pem)
        Path(self.ca_file).write_bytes(certificate_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca_file, key_file)
        # The handshake happens on the first read, in the request's own thread: a client that
        # never completes one cannot stall the accepting loop.
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)

    def register_app(self, client_id: str, *, secret: str | None = None, certificate: bytes | None = None,
                     roles: tuple[str, ...] = ("Engine",), display_name: str | None = None) -> App:
        """Registers an application for the client-credentials grant, with a client secret, a
        certificate (PEM; its private key signs the client assertion) or both."""
        app = App(client_id, secret, x509.load_pem_x509_certificate(certificate) if certificate else None,
                  tuple(roles), display_name or f"App {client_id}", str(uuid.uuid4()))
        with self._lock:
            self._apps[client_id] = app
        return app

    # --- tokens ---------------------------------------------------------------------------------

    def mint(self, *, key: str = "good", lifetime: float = 3600, **claims: Any) -> str:
        """An RS256 ID token for ``self.user``, valid from now for ``lifetime`` seconds.

        ``claims`` override the standard ones and the user's; a claim passed as None is removed.
        ``key="rogue"`` signs with a key that is not published but carries the same kid: a forgery.
        """
        return self._mint(self.user, key=key, lifetime=lifetime, **claims)

    def mint_app(self, client_id: str, *, key: str = "good", lifetime: float = 3600, **claims: Any) -> str:
        """An RS256 access token for the registered application ``client_id``, with the claims Azure
        gives app tokens of ``access_token_version``; ``claims`` and ``key`` as in :meth:`mint`."""
        with self._lock:
            app = self._apps[client_id]
        common = {"idtyp": "app", "oid": app.object_id, "sub": app.object_id, "roles": list(app.roles)}
        if self.access_token_version == 1:
            version = {"iss": f"https://sts.windows.net/{self.tenant}/", "aud": f"api://{self.client_id}",
                       "ver": "1.0", "appid": client_id, "appidacr": "1", "app_displayname": app.display_name}
        else:
            version = {"azp": client_id, "azpacr": "1"}
        return self._sign({**common, **version, **claims}, key=key, lifetime=lifetime)

    def _mint(self, user: dict[str, Any], *, key: str = "good", lifetime: float = 3600, **claims: Any) -> str:
        return self._sign({**user, **claims}, key=key, lifetime=lifetime)

    def _sign(self, claims: dict[str, Any], *, key: str, lifetime: float) -> str:
        if key not in ("good", "rogue"):
            raise ValueError(f"key must be 'good' or 'rogue', not {key!r}")
        now = int(time.time())
        payload: dict[str, Any] = {"iss": self.issuer, "aud": self.client_id, "tid": self.tenant, "ver": "2.0",
                                   "iat": now, "nbf": now, "exp": now + int(lifetime), **claims}
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
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "subject_types_supported": ["pairwise"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256"],
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
        """(200, tokens) or (400 or 401, an OAuth error body)."""
        if form.get("grant_type") == "client_credentials":
            return self._client_credentials(form)
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

    def _client_credentials(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The client-credentials grant: a registered app, its secret or certificate assertion, and a
        scope ``<our API>/.default``. Error texts follow Azure's and never repeat what was sent."""
        client_id = form.get("client_id", "")
        with self._lock:
            app = self._apps.get(client_id)
        if app is None:
            return 400, {"error": "unauthorized_client",
                         "error_description": f"AADSTS700016: application {client_id!r} is not registered"}
        if "client_secret" in form:
            if app.secret is None or not hmac.compare_digest(form["client_secret"].encode(), app.secret.encode()):
                return 401, {"error": "invalid_client",
                             "error_description": "AADSTS7000215: Invalid client secret provided."}
            method = "1"
        elif form.get("client_assertion_type") == JWT_BEARER:
            problem = self._assertion_problem(app, form.get("client_assertion", ""))
            if problem:
                return 401, {"error": "invalid_client", "error_description": problem}
            method = "2"
        else:
            return 400, {"error": "invalid_client",
                         "error_description": "a client_secret or a client_assertion is required"}
        resource = form.get("scope", "").removesuffix("/.default")
        if not form.get("scope", "").endswith("/.default") or resource not in (self.client_id,
                                                                               f"api://{self.client_id}"):
            return 400, {"error": "invalid_scope", "error_description":
                         f"AADSTS500011: no resource for the scope {form.get('scope', '')!r}; "
                         f"ask for {self.client_id}/.default or api://{self.client_id}/.default"}
        token = self.mint_app(client_id, lifetime=self.lifetime, aud=resource,
                              **({"appidacr": method} if self.access_token_version == 1 else {"azpacr": method}))
        with self._lock:
            self.grants.append("client_credentials")
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": int(self.lifetime)}

    def _assertion_problem(self, app: App, assertion: str) -> str:
        """Why a client assertion does not prove ``app`` ("" when it does): signed by the private
        key of the app's certificate (named by its SHA-256 or SHA-1 thumbprint), for our token
        endpoint, issued by and about the app, and not expired."""
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as error:
            return f"AADSTS50027: the client assertion is not a JWT ({error})"
        certificate = app.certificate
        # msal pads its thumbprints with "="; JWS (RFC 7515) does not: compare without.
        named = certificate is not None and (
            str(header.get("x5t#S256", "")).rstrip("=") == _thumbprint(certificate, hashes.SHA256())
            or str(header.get("x5t", "")).rstrip("=") == _thumbprint(certificate, hashes.SHA1()))
        if not named:
            return "AADSTS700027: the client assertion's certificate is not registered for the application"
        try:
            claims = jwt.decode(assertion, certificate.public_key(), algorithms=["RS256", "PS256"],
                                audience=f"{self.issuer}/token", issuer=app.client_id,
                                options={"require": ["exp", "aud", "iss", "sub"]})
        except jwt.PyJWTError as error:
            return f"AADSTS700027: the client assertion is not valid ({error})"
        if claims["sub"] != app.client_id:
            return "AADSTS700023: the client assertion's subject is not the application"
        return ""

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
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


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
