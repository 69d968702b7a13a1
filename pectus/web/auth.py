"""Who is asking: user sign-in with OpenID Connect, and the roles a unit requires.

Sign-in is off unless ``ENABLE_AZURE_AUTHENTICATION`` is ``true`` (the variables of Open Pectus'
deployment guide): then the browser signs the user in at the provider (Azure AD / Entra ID, or
any OpenID Connect provider named by ``PECTUS_OIDC_AUTHORITY``) with Authorization Code + PKCE,
and sends the ID token it got in the ``X-Identity`` header of every API request. The server
checks the token's signature against the keys the provider publishes, its audience (our client
id), its issuer and its lifetime, and takes from it who the user is (``oid``, else ``sub``; the
``name``) and the roles the user holds (``roles``).

Invariants:

* With sign-in on, no API answer is given to a request without a valid token (401), and a unit
  or run whose UOD requires roles is only shown to a user holding at least one of them (403,
  naming the missing roles; lists leave it out). The UI's own files, ``/health``, the version,
  the API document and ``/auth/config`` are public: they hold no process data.
* With sign-in off, users are who the client says (``X-Pectus-User``) and hold no roles: a unit
  that requires a role is then shown to nobody. That is Open Pectus' rule, and the safe one.
* The signing keys are fetched in a worker thread, cached, and fetched again only when a token
  names a key id that is not known - at most once a minute, so forged key ids cannot turn into a
  flood of requests to the provider.
* A download is a plain link the browser saves as it streams, and a link carries no header: a
  signed-in user asks for a :class:`DownloadTickets` ticket first, good once, for one path, for
  a minute, and for that user's roles only.
* Engines, with sign-in on, present an application's access token (client-credentials flow), which
  :meth:`SignIn.identify_app` checks as a user's token is checked (same keys, same fetch limit), for
  our API (the client id, or ``api://<client id>``) - and only as an application's: a user's token
  never passes as an engine.
"""

from __future__ import annotations

import json
import math
import secrets
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
import trio

from pectus.events.domain import Actor

__all__ = ["ANONYMOUS", "AppIdentity", "AuthConfig", "ConfigError", "DownloadTickets", "Identity", "SignIn",
           "SignInError"]

SCOPE = "openid profile offline_access"
KEY_REFRESH_INTERVAL = 60.0  # seconds between two fetches of the provider's keys
CLOCK_SKEW = 60.0  # seconds of leeway on a token's times: the provider's clock is not ours
FETCH_TIMEOUT = 10.0
TICKET_LIFETIME = 60.0  # seconds from asking for a download to starting it


class ConfigError(ValueError):
    """The sign-in settings are incomplete; the message names the variable."""


class SignInError(Exception):
    """A request without a valid sign-in (401), or one that cannot be checked now (503)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AuthConfig:
    """The sign-in settings. ``authority`` is the provider's issuer URL; its discovery document
    is at ``{authority}/.well-known/openid-configuration``."""

    enabled: bool = False
    authority: str = ""
    client_id: str = ""
    tenant: str = ""

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> AuthConfig:
        if env.get("ENABLE_AZURE_AUTHENTICATION", "").strip().lower() != "true":
            return cls()
        tenant = env.get("AZURE_DIRECTORY_TENANT_ID", "").strip()
        client_id = env.get("AZURE_APPLICATION_CLIENT_ID", "").strip()
        for name, value in (("AZURE_DIRECTORY_TENANT_ID", tenant), ("AZURE_APPLICATION_CLIENT_ID", client_id)):
            if not value:
                raise ConfigError(f"ENABLE_AZURE_AUTHENTICATION is true but {name} is not set")
        authority = env.get("PECTUS_OIDC_AUTHORITY", "").strip().rstrip("/")
        return cls(True, authority or f"https://login.microsoftonline.com/{tenant}/v2.0", client_id, tenant)

    def browser_config(self) -> dict[str, Any]:
        """What the browser needs to sign in (``GET /auth/config``)."""
        return {"use_auth": self.enabled, "authority": self.authority or None,
                "client_id": self.client_id or None, "scope": SCOPE}


@dataclass(frozen=True)
class Identity:
    """A signed-in (or, with sign-in off, self-declared) user, the roles held, and until when
    (epoch seconds) the sign-in is good."""

    actor: Actor
    roles: frozenset[str] = frozenset()
    expires: float = math.inf

    def missing_roles(self, required: Iterable[str]) -> list[str]:
        """[] when the user may see a resource requiring ``required`` (none, or any one held);
        else the roles that would give access."""
        required = set(required)
        return [] if not required or required & self.roles else sorted(required)


ANONYMOUS = Identity(Actor.user("anonymous", "Anonymous"))


@dataclass(frozen=True)
class AppIdentity:
    """An application signed in with the client-credentials flow (an engine): its client id, its
    display name (the client id when the token carries none), the app roles it holds, and until when
    (epoch seconds) the token is good."""

    client_id: str
    name: str
    roles: frozenset[str]
    expires: float


def _is_app_token(claims: Mapping[str, Any], client_id: str) -> bool:
    """Whether a token speaks for an application alone, with no user behind it. Entra ID says so in
    the optional claim ``idtyp``; without it, an app's token has the application itself as its
    subject: its service principal (``oid`` = ``sub``, Entra ID) or its client id (RFC 9068, other
    providers). A user's token, ID or access, has the user as its subject."""
    if "idtyp" in claims:
        return claims["idtyp"] == "app"
    subject = claims.get("sub")
    return bool(subject) and subject in (claims.get("oid"), client_id)


def claimed_identity(headers: Mapping[str, str]) -> Identity:
    """Sign-in off: whoever the client says it is. ``X-Pectus-User: <name>`` (and optionally
    ``X-Pectus-User-Id``) names the user; without it the request is anonymous."""
    name = headers.get("X-Pectus-User", "").strip()
    if not name:
        return ANONYMOUS
    return Identity(Actor.user(headers.get("X-Pectus-User-Id", "").strip() or name, name))


async def _fetch_json(url: str) -> Any:
    def get() -> Any:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
            return json.load(response)

    return await trio.to_thread.run_sync(get)


class SignIn:
    """Turns a request's credentials into an :class:`Identity`, or raises :class:`SignInError`."""

    def __init__(self, config: AuthConfig, fetch_json: Callable[[str], Awaitable[Any]] = _fetch_json,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._fetch_json = fetch_json
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._issuers: tuple[str, ...] = ()
        self._fetched_at = -math.inf
        self._unavailable = ""  # why the last fetch of the keys failed ("" when it did not)
        self._fetching = trio.Lock()

    async def identify(self, headers: Mapping[str, str]) -> Identity:
        """The user of an HTTP request."""
        if not self.config.enabled:
            return claimed_identity(headers)
        return await self.identify_token(headers.get("X-Identity"))

    async def identify_token(self, token: str | None) -> Identity:
        """The user an ID token names (sign-in on); anonymous without one when sign-in is off."""
        if not self.config.enabled:
            return ANONYMOUS
        if not token:
            raise SignInError("sign in first: the request has no X-Identity token")
        claims = await self._verified_claims(token, "the X-Identity token", [self.config.client_id])
        user_id = str(claims.get("oid") or claims.get("sub") or "")
        if not user_id:
            raise SignInError("the X-Identity token names no user (no oid or sub claim)")
        name = str(claims.get("name") or claims.get("preferred_username") or claims.get("app_displayname") or user_id)
        roles = claims.get("roles")
        roles = roles if isinstance(roles, list) else []  # a malformed claim grants nothing
        return Identity(Actor.user(user_id, name), frozenset(map(str, roles)), float(claims["exp"]) + CLOCK_SKEW)

    async def identify_app(self, token: str) -> AppIdentity:
        """The application an engine's access token names (sign-in on). :class:`SignInError` (its
        message says what to fix) unless the token is signed by the provider, issued by it, for our
        API (the client id or ``api://<client id>``), within its lifetime, and an application's."""
        if not self.config.enabled:
            raise SignInError("app tokens are checked only with sign-in on (ENABLE_AZURE_AUTHENTICATION=true)")
        if not token:
            raise SignInError("the engine presented no app token: with sign-in on, an engine signs in with "
                              "its own app registration (PECTUS_ENGINE_CLIENT_ID)")
        ours = self.config.client_id
        claims = await self._verified_claims(token, "the engine's app token", [ours, f"api://{ours}"], {
            jwt.InvalidAudienceError: f"it must be for this aggregator's API: the engine asks for the scope "
                                      f"api://{ours}/.default or {ours}/.default (PECTUS_AGGREGATOR_API_ID)",
            jwt.InvalidIssuerError: "it must come from the sign-in provider and tenant this aggregator uses",
            jwt.ExpiredSignatureError: "the engine must acquire a new one; check the engine's clock",
        })
        client_id = str(claims.get("appid") or claims.get("azp") or claims.get("client_id") or "")
        if not _is_app_token(claims, client_id):
            raise SignInError("the engine's token is a user's, not an application's: the engine must "
                              "acquire it with its own client id and secret or certificate (client credentials)")
        if not client_id:
            raise SignInError("the engine's app token names no application (no appid or azp claim)")
        roles = claims.get("roles")
        roles = roles if isinstance(roles, list) else []  # a malformed claim grants nothing
        return AppIdentity(client_id, str(claims.get("app_displayname") or client_id), frozenset(map(str, roles)),
                           float(claims["exp"]) + CLOCK_SKEW)

    async def _verified_claims(self, token: str, named: str, audiences: Sequence[str],
                               advice: Mapping[type[jwt.PyJWTError], str] | None = None) -> dict[str, Any]:
        """The claims of ``token`` once its signature (the provider's published keys), issuer,
        audience (one of ``audiences``) and lifetime are checked; else :class:`SignInError` naming
        the token as ``named``, with the ``advice`` for the kind of failure, if any."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as error:
            raise SignInError(f"{named} is not a JWT: {error}") from None
        key = self._keys.get(kid) if kid else None
        if key is None:
            await self._refresh_keys()
            key = self._keys.get(kid) if kid else None
        if key is None and self._unavailable:
            raise SignInError(self._unavailable, 503)
        if key is None:
            raise SignInError(f"{named} is signed with a key the provider does not publish")
        try:
            return jwt.decode(token, key, algorithms=["RS256"], audience=list(audiences),
                              issuer=self._issuers, leeway=CLOCK_SKEW,
                              options={"require": ["exp", "iat", "aud", "iss"]})
        except jwt.PyJWTError as error:
            hint = next((text for kind, text in (advice or {}).items() if isinstance(error, kind)), "")
            raise SignInError(f"{named} is not valid: {error}" + (f" ({hint})" if hint else "")) from None

    async def _refresh_keys(self) -> None:
        async with self._fetching:
            if self._clock() - self._fetched_at < KEY_REFRESH_INTERVAL:
                return
            self._fetched_at = self._clock()
            try:
                discovery = await self._fetch_json(f"{self.config.authority}/.well-known/openid-configuration")
                keys = jwt.PyJWKSet.from_dict(await self._fetch_json(discovery["jwks_uri"]))
            except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError) as error:
                self._unavailable = f"cannot check sign-ins now: the provider's keys are unavailable ({error})"
                return
            self._unavailable = ""
            self._keys = {key.key_id: key for key in keys.keys if key.key_id}
            # Azure issues app (client-credentials) tokens under its older issuer name.
            self._issuers = (discovery["issuer"], f"https://sts.windows.net/{self.config.tenant}/")


class DownloadTickets:
    """One-time tickets that stand in for the sign-in on one download link."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tickets: dict[str, tuple[str, Identity, float]] = {}  # ticket -> (path, identity, deadline)

    def issue(self, identity: Identity, path: str) -> str:
        now = self._clock()
        self._tickets = {ticket: held for ticket, held in self._tickets.items() if held[2] > now}
        ticket = secrets.token_urlsafe(32)
        self._tickets[ticket] = (path, identity, now + TICKET_LIFETIME)
        return ticket

    def redeem(self, ticket: str, path: str) -> Identity:
        """The identity the ticket was issued to; SignInError when it is unknown, used, expired or
        for another path. Any attempt uses it up."""
        held = self._tickets.pop(ticket, None)
        if held is None or held[0] != path or held[2] <= self._clock():
            raise SignInError("the download ticket is not valid (unknown, used, expired or for another file)")
        return held[1]
