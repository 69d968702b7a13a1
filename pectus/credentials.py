"""How an engine proves who it is to the aggregator: the ``credential`` of its ``hello``.

Two kinds, chosen by the engine's settings (:func:`credential_from_environment`):

* :class:`AppToken` - with user sign-in on at the aggregator, the engine is an application
  registered at the sign-in provider (Entra ID, or any OpenID Connect provider) and presents an
  access token for the aggregator's API, acquired with msal's client-credentials flow with a
  client secret or a certificate.
* :class:`EngineKey` - otherwise, a random per-engine key kept in a file. The aggregator keeps only
  :func:`key_digest` of it.

Invariants:

* A key, a client secret or a private key is never logged, never put in an exception message and
  never shown by ``repr``.
* Nothing blocks the Trio loop: msal's discovery and token requests run in a worker thread, one at
  a time, with a timeout. msal keeps the token in its in-memory cache and asks the provider again
  only when it is near expiry, so :meth:`AppToken.present` is cheap on every reconnect.
* msal talks to https authorities only (it refuses ``http://`` outright). A provider whose
  certificate comes from a private CA is trusted through ``REQUESTS_CA_BUNDLE`` (msal uses requests).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import msal
import requests
import trio
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

__all__ = ["AppToken", "CredentialError", "EngineCredential", "EngineKey", "credential_from_environment",
           "key_digest"]

log = logging.getLogger("pectus.engine.credentials")

PROVIDER_TIMEOUT = 30.0  # seconds for one request to the sign-in provider
APP_TOKEN_VARIABLES = ("PECTUS_ENGINE_CLIENT_ID", "PECTUS_ENGINE_CLIENT_SECRET", "PECTUS_ENGINE_CERTIFICATE",
                       "PECTUS_ENGINE_CERTIFICATE_THUMBPRINT", "PECTUS_AGGREGATOR_API_ID")


class CredentialError(Exception):
    """The engine cannot produce its credential; the message says what to fix (never a secret)."""


class EngineCredential(Protocol):
    """What an engine presents in its ``hello``."""

    async def present(self) -> str:
        """The ``credential`` string for the next ``hello``; :class:`CredentialError` when there is none."""
        ...


def key_digest(key: str) -> str:
    """The SHA-256 (hex) of an engine key: what the aggregator stores instead of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class EngineKey:
    """A per-engine key, kept in a file readable by the engine's user only."""

    def __init__(self, key: str, path: Path | None = None) -> None:
        self._key = key
        self.path = path

    def __repr__(self) -> str:
        return f"EngineKey(path={str(self.path)!r})"

    @classmethod
    def from_file(cls, path: Path | str, create: bool = True) -> EngineKey:
        """The key in ``path``. When the file does not exist and ``create`` is true, a new random key
        is written to it first (mode 0600; two engines racing on one file end up with the same key)."""
        path = Path(path)
        if create and not path.exists():
            _create_key_file(path)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise CredentialError(f"the engine key file {path} does not exist: copy the key that "
                                  "`pectus-aggregator engines enroll` printed into it") from None
        except (OSError, UnicodeDecodeError) as error:
            raise CredentialError(f"cannot read the engine key file {path}: {error}") from None
        if not key or not key.isascii() or not key.isprintable() or any(char.isspace() for char in key):
            raise CredentialError(f"the engine key file {path} must hold one key on one line, as "
                                  "`pectus-aggregator engines enroll` prints it")
        return cls(key, path)

    async def present(self) -> str:
        return self._key


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: never overwrite a key another process has just written.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
        file.flush()
        os.fsync(file.fileno())  # a key lost in a power cut would lock the engine out
    log.info("created a new engine key in %s", path)


class AppToken:
    """An access token for the aggregator's API, acquired by msal with the client-credentials flow.

    ``client_credential`` is what msal's ``ConfidentialClientApplication`` takes: the client secret,
    or a certificate as ``{"private_key": PEM, "public_certificate": PEM}`` (msal sends its SHA-256
    thumbprint) or ``{"private_key": PEM, "thumbprint": SHA-1 hex}``. The provider is an Entra ID
    ``tenant`` (authority ``https://login.microsoftonline.com/<tenant>``) or, for any OpenID Connect
    provider, its issuer URL as ``oidc_authority``. The token is asked for the scope
    ``<api_id>/.default``, ``api_id`` being the aggregator's client id or ``api://<client id>``.
    """

    def __init__(self, client_id: str, client_credential: str | Mapping[str, str], api_id: str, *,
                 tenant: str = "", oidc_authority: str = "") -> None:
        if bool(tenant) == bool(oidc_authority):
            raise ValueError("name the provider by exactly one of tenant and oidc_authority")
        self.client_id = client_id
        self.scope = f"{api_id.rstrip('/')}/.default"
        self.authority = oidc_authority.rstrip("/") or f"https://login.microsoftonline.com/{tenant}"
        self._authority_argument = "oidc_authority" if oidc_authority else "authority"  # msal's names
        self._credential = client_credential
        self._app: msal.ConfidentialClientApplication | None = None  # built on first use: it fetches
        self._asking = trio.Lock()

    def __repr__(self) -> str:
        return f"AppToken(client_id={self.client_id!r}, authority={self.authority!r}, scope={self.scope!r})"

    async def present(self) -> str:
        async with self._asking:
            return await trio.to_thread.run_sync(self._acquire)

    def _acquire(self) -> str:
        """In a worker thread. Builds the msal application on first success (its constructor fetches
        the provider's discovery document, so a provider that is down is asked again next time)."""
        try:
            if self._app is None:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id, client_credential=self._credential, timeout=PROVIDER_TIMEOUT,
                    **{self._authority_argument: self.authority})
            result = self._app.acquire_token_for_client([self.scope])
        except (ValueError, requests.RequestException) as error:
            raise CredentialError(f"cannot get an app token for {self.client_id} from {self.authority}: "
                                  f"{error}") from None
        if "access_token" not in result:
            raise CredentialError(f"the sign-in provider {self.authority} refused an app token to "
                                  f"{self.client_id}: {result.get('error')}: {result.get('error_description')}")
        return result["access_token"]


def credential_from_environment(env: Mapping[str, str], key_file: Path | str) -> EngineCredential:
    """The engine's credential from its settings: an :class:`AppToken` when
    ``PECTUS_ENGINE_CLIENT_ID`` is set, else the :class:`EngineKey` in ``key_file`` (created on
    first use).

    App token settings: ``PECTUS_ENGINE_CLIENT_ID``; ``PECTUS_ENGINE_CLIENT_SECRET``, or
    ``PECTUS_ENGINE_CERTIFICATE`` (a PEM file with the private key and its certificate; with
    ``PECTUS_ENGINE_CERTIFICATE_THUMBPRINT``, the SHA-1 thumbprint, the file may hold the key alone);
    ``PECTUS_AGGREGATOR_API_ID`` (the aggregator's client id or ``api://<client id>``); and the
    provider: ``PECTUS_OIDC_AUTHORITY`` (an issuer URL) or else ``AZURE_DIRECTORY_TENANT_ID``.
    """
    setting = {name: env.get(name, "").strip() for name in
               (*APP_TOKEN_VARIABLES, "PECTUS_OIDC_AUTHORITY", "AZURE_DIRECTORY_TENANT_ID")}
    client_id = setting["PECTUS_ENGINE_CLIENT_ID"]
    if not client_id:
        stray = [name for name in APP_TOKEN_VARIABLES if setting[name]]
        if stray:
            raise CredentialError(f"{', '.join(stray)} set but PECTUS_ENGINE_CLIENT_ID is not: set the "
                                  "engine's client id to use an app token, or unset them to use the key file")
        return EngineKey.from_file(key_file)
    missing = [] if setting["PECTUS_AGGREGATOR_API_ID"] else ["PECTUS_AGGREGATOR_API_ID"]
    if not setting["PECTUS_OIDC_AUTHORITY"] and not setting["AZURE_DIRECTORY_TENANT_ID"]:
        missing.append("AZURE_DIRECTORY_TENANT_ID (or PECTUS_OIDC_AUTHORITY)")
    if bool(setting["PECTUS_ENGINE_CLIENT_SECRET"]) == bool(setting["PECTUS_ENGINE_CERTIFICATE"]):
        missing.append("exactly one of PECTUS_ENGINE_CLIENT_SECRET and PECTUS_ENGINE_CERTIFICATE")
    if missing:
        raise CredentialError(f"PECTUS_ENGINE_CLIENT_ID is set, so the engine signs in with an app token, "
                              f"but this is missing: {'; '.join(missing)}")
    credential: str | dict[str, str] = setting["PECTUS_ENGINE_CLIENT_SECRET"] or _certificate(
        Path(setting["PECTUS_ENGINE_CERTIFICATE"]), setting["PECTUS_ENGINE_CERTIFICATE_THUMBPRINT"])
    return AppToken(client_id, credential, setting["PECTUS_AGGREGATOR_API_ID"],
                    tenant="" if setting["PECTUS_OIDC_AUTHORITY"] else setting["AZURE_DIRECTORY_TENANT_ID"],
                    oidc_authority=setting["PECTUS_OIDC_AUTHORITY"])


def _certificate(path: Path, thumbprint: str) -> dict[str, str]:
    """msal's certificate credential from a PEM file (checked here, where the variable can be named)."""
    try:
        pem = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise CredentialError(f"PECTUS_ENGINE_CERTIFICATE: cannot read {path}: {error}") from None
    try:
        serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise CredentialError(f"PECTUS_ENGINE_CERTIFICATE: {path} holds no usable private key "
                              f"(PEM, not encrypted): {error}") from None
    if thumbprint:
        if len(thumbprint) != 40 or any(char not in string.hexdigits for char in thumbprint):
            raise CredentialError("PECTUS_ENGINE_CERTIFICATE_THUMBPRINT must be the certificate's SHA-1 "
                                  "thumbprint: 40 hex digits, as the app registration shows it")
        return {"private_key": pem, "thumbprint": thumbprint}
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise CredentialError(f"PECTUS_ENGINE_CERTIFICATE: {path} holds no certificate: add it to the file, "
                              "or set PECTUS_ENGINE_CERTIFICATE_THUMBPRINT")
    return {"private_key": pem, "public_certificate": pem}
