"""Engine identity: the engine's key file, and app tokens acquired by the real msal from a real
OpenID Connect provider on loopback, checked by the aggregator's SignIn.identify_app.

msal talks to https authorities only, so the provider serves https with a self-signed certificate,
trusted as ops trust a private CA: REQUESTS_CA_BUNDLE for the engine (msal uses requests) and
SSL_CERT_FILE for the aggregator (Python's ssl).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import ssl
import stat
import sys
from typing import Iterator

import httpx
import jwt
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from oidc_provider import OidcProvider, self_signed_certificate
from pectus.credentials import (AppToken, CredentialError, EngineKey, credential_from_environment,
                                key_digest)
from pectus.web.auth import CLOCK_SKEW, AppIdentity, AuthConfig, SignIn, SignInError

ENGINE_APP = "engine-column-3"
SECRET = secrets.token_urlsafe(24)  # made per run: no secret lives in the code


@pytest.fixture
def provider(monkeypatch) -> Iterator[OidcProvider]:
    with OidcProvider(tls=True) as running:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", running.ca_file)
        monkeypatch.setenv("SSL_CERT_FILE", running.ca_file)
        running.register_app(ENGINE_APP, secret=SECRET, roles=("Engine",), display_name="Column 3")
        yield running


def engine_env(provider: OidcProvider, **settings: str) -> dict[str, str]:
    """An engine's environment for an app token from ``provider``; ``settings`` add or override."""
    return {"PECTUS_ENGINE_CLIENT_ID": ENGINE_APP, "PECTUS_OIDC_AUTHORITY": provider.issuer,
            "PECTUS_AGGREGATOR_API_ID": f"api://{provider.client_id}", **settings}


def signed_in(provider: OidcProvider) -> SignIn:
    return SignIn(AuthConfig(True, provider.issuer, provider.client_id, provider.tenant))


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


# --- the engine key ------------------------------------------------------------------------------


def test_a_key_file_is_created_once_private_and_its_key_is_presented(tmp_path, caplog):
    path = tmp_path / "outbox" / "engine.key"
    with caplog.at_level(logging.DEBUG):
        first = EngineKey.from_file(path)
    key = trio.run(first.present)
    assert len(key) >= 43 and path.read_text() == key + "\n"
    if sys.platform != "win32":
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert trio.run(EngineKey.from_file(path).present) == key  # not replaced on the next start
    assert key not in caplog.text and key not in repr(first) and str(path) in caplog.text
    assert key_digest(key) == hashlib.sha256(key.encode()).hexdigest()


def test_a_missing_or_malformed_key_file_is_a_clear_error(tmp_path):
    with pytest.raises(CredentialError, match="does not exist.*engines enroll"):
        EngineKey.from_file(tmp_path / "engine.key", create=False)
    assert not (tmp_path / "engine.key").exists()
    for content in ("", "two words\n", "a\nb\n"):
        (tmp_path / "engine.key").write_text(content)
        with pytest.raises(CredentialError, match="one key on one line"):
            EngineKey.from_file(tmp_path / "engine.key")
    (tmp_path / "engine.key").write_text("  pasted-with-spaces  \n")
    assert trio.run(EngineKey.from_file(tmp_path / "engine.key").present) == "pasted-with-spaces"


# --- choosing the credential ---------------------------------------------------------------------


def test_without_a_client_id_the_engine_uses_its_key_file(tmp_path):
    credential = credential_from_environment({}, tmp_path / "engine.key")
    assert isinstance(credential, EngineKey) and (tmp_path / "engine.key").exists()
    with pytest.raises(CredentialError, match="PECTUS_ENGINE_CLIENT_SECRET set but PECTUS_ENGINE_CLIENT_ID"):
        credential_from_environment({"PECTUS_ENGINE_CLIENT_SECRET": SECRET}, tmp_path / "engine.key")


def test_app_token_settings_are_checked_and_name_what_is_missing(tmp_path):
    key_file = tmp_path / "engine.key"
    with pytest.raises(CredentialError) as error:
        credential_from_environment({"PECTUS_ENGINE_CLIENT_ID": ENGINE_APP}, key_file)
    assert all(name in str(error.value) for name in ("PECTUS_AGGREGATOR_API_ID", "AZURE_DIRECTORY_TENANT_ID",
                                                     "PECTUS_ENGINE_CLIENT_SECRET", "PECTUS_ENGINE_CERTIFICATE"))
    assert not key_file.exists()  # an app token was asked for: no key is made behind ops' back

    azure = credential_from_environment({"PECTUS_ENGINE_CLIENT_ID": ENGINE_APP, "PECTUS_ENGINE_CLIENT_SECRET": SECRET,
                                         "AZURE_DIRECTORY_TENANT_ID": "contoso-tenant",
                                         "PECTUS_AGGREGATOR_API_ID": "api://aggregator-app/"}, key_file)
    assert isinstance(azure, AppToken)
    assert azure.authority == "https://login.microsoftonline.com/contoso-tenant"
    assert azure.scope == "api://aggregator-app/.default" and SECRET not in repr(azure)

    key_pem, _ = self_signed_certificate(ENGINE_APP)
    (tmp_path / "key.pem").write_bytes(key_pem)
    env = {"PECTUS_ENGINE_CLIENT_ID": ENGINE_APP, "PECTUS_ENGINE_CERTIFICATE": str(tmp_path / "key.pem"),
           "AZURE_DIRECTORY_TENANT_ID": "t", "PECTUS_AGGREGATOR_API_ID": "aggregator-app"}
    with pytest.raises(CredentialError, match="holds no certificate.*PECTUS_ENGINE_CERTIFICATE_THUMBPRINT"):
        credential_from_environment(env, key_file)
    with pytest.raises(CredentialError, match="40 hex digits"):
        credential_from_environment({**env, "PECTUS_ENGINE_CERTIFICATE_THUMBPRINT": "not-hex"}, key_file)
    with pytest.raises(CredentialError, match="cannot read"):
        credential_from_environment({**env, "PECTUS_ENGINE_CERTIFICATE": str(tmp_path / "absent.pem")}, key_file)
    (tmp_path / "damaged.pem").write_bytes(key_pem.replace(b"MII", b"XXX"))
    with pytest.raises(CredentialError, match="damaged.pem holds no usable private key"):
        credential_from_environment({**env, "PECTUS_ENGINE_CERTIFICATE": str(tmp_path / "damaged.pem")}, key_file)


# --- app tokens from the provider, checked by the aggregator -------------------------------------


def test_an_engine_signs_in_with_a_client_secret_and_reuses_its_token(provider):
    credential = credential_from_environment(engine_env(provider, PECTUS_ENGINE_CLIENT_SECRET=SECRET), "unused")

    async def main():
        token = await credential.present()
        assert await credential.present() == token  # from msal's cache
        return token, await signed_in(provider).identify_app(token)

    token, app = trio.run(main)
    assert app == AppIdentity(ENGINE_APP, ENGINE_APP, frozenset({"Engine"}), claims_of(token)["exp"] + CLOCK_SKEW)
    assert provider.grants == ["client_credentials"]


def test_version_1_tokens_for_the_bare_client_id_name_the_app_and_its_display_name(provider):
    """Azure's v1 app tokens: issuer sts.windows.net/<tenant>/, appid, app_displayname."""
    provider.access_token_version = 1
    credential = credential_from_environment(
        engine_env(provider, PECTUS_ENGINE_CLIENT_SECRET=SECRET, PECTUS_AGGREGATOR_API_ID=provider.client_id),
        "unused")

    async def main():
        token = await credential.present()
        assert claims_of(token)["iss"] == f"https://sts.windows.net/{provider.tenant}/"
        return await signed_in(provider).identify_app(token)

    app = trio.run(main)
    assert (app.client_id, app.name, app.roles) == (ENGINE_APP, "Column 3", {"Engine"})


@pytest.mark.parametrize("with_thumbprint", [False, True], ids=["certificate in the file", "sha1 thumbprint"])
def test_an_engine_signs_in_with_a_certificate(provider, tmp_path, with_thumbprint):
    key_pem, certificate_pem = self_signed_certificate("engine-cert")
    provider.register_app("engine-cert", certificate=certificate_pem, roles=("Engine",))
    pem = tmp_path / "engine.pem"
    pem.write_bytes(key_pem if with_thumbprint else key_pem + certificate_pem)
    thumbprint = x509.load_pem_x509_certificate(certificate_pem).fingerprint(hashes.SHA1()).hex().upper()
    credential = credential_from_environment(engine_env(
        provider, PECTUS_ENGINE_CLIENT_ID="engine-cert", PECTUS_ENGINE_CERTIFICATE=str(pem),
        PECTUS_ENGINE_CERTIFICATE_THUMBPRINT=thumbprint if with_thumbprint else ""), "unused")

    async def main():
        token = await credential.present()
        assert claims_of(token)["azpacr"] == "2"  # the provider saw a certificate, not a secret
        return await signed_in(provider).identify_app(token)

    assert trio.run(main).client_id == "engine-cert"


def test_a_certificate_the_app_does_not_have_is_refused_at_the_engine(provider, tmp_path):
    _, registered = self_signed_certificate("engine-cert")
    provider.register_app("engine-cert", certificate=registered)
    other_key, other_certificate = self_signed_certificate("engine-cert")
    (tmp_path / "engine.pem").write_bytes(other_key + other_certificate)
    credential = credential_from_environment(engine_env(
        provider, PECTUS_ENGINE_CLIENT_ID="engine-cert", PECTUS_ENGINE_CERTIFICATE=str(tmp_path / "engine.pem")),
        "unused")
    with pytest.raises(CredentialError, match="invalid_client: AADSTS700027"):
        trio.run(credential.present)


def test_a_wrong_secret_is_a_clear_error_at_the_engine_that_never_shows_the_secret(provider, caplog):
    wrong = secrets.token_urlsafe(24)
    credential = credential_from_environment(engine_env(provider, PECTUS_ENGINE_CLIENT_SECRET=wrong), "unused")
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialError) as error:
        trio.run(credential.present)
    message = str(error.value)
    assert message.startswith(f"the sign-in provider {provider.issuer} refused an app token to {ENGINE_APP}: "
                              "invalid_client: AADSTS7000215")
    assert caplog.records  # msal and requests did log at DEBUG: the check below saw their output
    assert wrong not in message and wrong not in caplog.text and wrong not in repr(credential)


def test_a_provider_out_of_reach_is_a_clear_error_at_the_engine():
    with OidcProvider(tls=True) as gone:
        credential = AppToken(ENGINE_APP, SECRET, gone.client_id, oidc_authority=gone.issuer)
    with pytest.raises(CredentialError, match=f"cannot get an app token for {ENGINE_APP} from {gone.issuer}"):
        trio.run(credential.present)


def _user_token_with_delegated_scope(provider: OidcProvider) -> str:
    """A user's access token for our API (a browser's, say): oid and sub differ, scp names scopes."""
    return provider.mint(aud=f"api://{provider.client_id}", scp="access_as_user", azp="pectus-browser")


@pytest.mark.parametrize("make, reason", [
    (lambda provider: provider.mint(), "a user's, not an application's"),
    (lambda provider: provider.mint_app(ENGINE_APP, idtyp="user"), "a user's, not an application's"),
    (_user_token_with_delegated_scope, "a user's, not an application's"),
    (lambda provider: provider.mint_app(ENGINE_APP, aud="api://another-api"),
     "Audience doesn't match.*api://pectus-test/.default"),
    (lambda provider: provider.mint_app(ENGINE_APP, iss="https://sts.windows.net/another-tenant/"),
     "Invalid issuer.*provider and tenant"),
    (lambda provider: provider.mint_app(ENGINE_APP, lifetime=-CLOCK_SKEW - 60), "expired.*engine's clock"),
    (lambda provider: provider.mint_app(ENGINE_APP, key="rogue"), "Signature verification failed"),
    (lambda provider: provider.mint_app(ENGINE_APP, azp=None), "names no application"),
], ids=["user ID token", "idtyp user", "user access token", "wrong audience", "foreign issuer", "expired",
        "forged signature", "no app id"])
def test_identify_app_refuses_with_a_reason(provider, make, reason):
    with pytest.raises(SignInError, match=reason) as error:
        trio.run(signed_in(provider).identify_app, make(provider))
    assert error.value.status == 401


@pytest.mark.parametrize("claims", [{"idtyp": None}, {"idtyp": None, "oid": None, "sub": ENGINE_APP}],
                         ids=["entra: oid is sub", "rfc 9068: sub is the client id"])
def test_an_app_token_without_the_optional_idtyp_claim_is_known_by_its_subject(provider, claims):
    """idtyp is an optional claim in Entra ID, and other providers do not have it."""
    app = trio.run(signed_in(provider).identify_app, provider.mint_app(ENGINE_APP, **claims))
    assert app.client_id == ENGINE_APP


def test_app_tokens_share_the_users_key_cache_and_fetch_limit(provider):
    fetched: list[str] = []

    async def fetch(url: str):
        fetched.append(url)
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=provider.ca_file)) as http:
            return (await http.get(url)).json()

    sign_in = SignIn(AuthConfig(True, provider.issuer, provider.client_id, provider.tenant), fetch)
    stranger = jwt.encode(claims_of(provider.mint_app(ENGINE_APP)),
                          rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
                          headers={"kid": "unknown"})

    async def main():
        await sign_in.identify_token(provider.mint())
        await sign_in.identify_app(provider.mint_app(ENGINE_APP))
        for _ in range(3):
            with pytest.raises(SignInError, match="engine's app token is signed with a key the provider does not"):
                await sign_in.identify_app(stranger)

    trio.run(main)
    assert len(fetched) == 2  # discovery and keys, once: unknown key ids do not make the server ask again


def test_with_sign_in_off_no_app_token_is_accepted(provider):
    with pytest.raises(SignInError, match="only with sign-in on"):
        trio.run(SignIn(AuthConfig()).identify_app, provider.mint_app(ENGINE_APP))
    with pytest.raises(SignInError, match="presented no app token"):
        trio.run(signed_in(provider).identify_app, "")


def test_msal_refuses_a_plain_http_authority(provider):
    """msal refuses a plain-http authority outright: why the provider above serves https."""
    plain = AppToken(ENGINE_APP, SECRET, provider.client_id,
                     oidc_authority=provider.issuer.replace("https://", "http://"))
    with pytest.raises(CredentialError, match="https url"):
        trio.run(plain.present)


# --- an engine signing in to an aggregator with sign-in on --------------------------------------


def test_an_engine_enrolled_for_its_app_connects_with_its_app_token_and_no_other_app_can(tmp_path, provider):
    """A real engine process takes an app token from the provider with msal and says hello with
    it; the aggregator checks it (keys, issuer, audience, an app's) and that the app is the one
    enrolled for that engine id. Another app's token, a user's ID token and a key are refused."""
    from conftest import DEMO_UOD, wait_for
    from test_aggregator import engine_hello, serve, session

    from pectus.actors.aggregator import STORE_FILE
    from pectus.actors.engine import EngineProcess
    from pectus.events import protocol as p
    from pectus.events.domain import EngineEnrolled
    from pectus.events.store import SQLiteEventStore
    from pectus.uod import load_uod

    unit = "column-3_DemoUod"
    provider.register_app("intruder-app", secret=SECRET)
    data = tmp_path / "data"
    data.mkdir()
    store = SQLiteEventStore(data / STORE_FILE)
    store.append([EngineEnrolled(time=0.0, unit=unit, client_id=ENGINE_APP).stored()])  # engines enroll --client-id
    store.close()

    async def scenario(port, aggregator):
        credential = credential_from_environment(engine_env(provider, PECTUS_ENGINE_CLIENT_SECRET=SECRET),
                                                 tmp_path / "unused.key")
        engine = EngineProcess(load_uod(DEMO_UOD), uplink={
            "outbox": tmp_path / "engine.outbox.sqlite3", "url": f"ws://127.0.0.1:{port}/engine",
            "engine_id": unit, "computer_name": "column-3", "credential": credential})
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await wait_for(lambda: unit in aggregator.engines.sessions, timeout=20)
            await engine.stop()
        await wait_for(lambda: unit not in aggregator.engines.sessions, timeout=20)
        intruder = AppToken("intruder-app", SECRET, f"api://{provider.client_id}", oidc_authority=provider.issuer)
        answers = {}
        for name, credential in (("another app", await intruder.present()), ("a user", provider.mint()),
                                 ("a key", "some-key")):
            answers[name] = (await session(port, [], hello=engine_hello(unit, credential)))[0]
        return answers, [r.data for r in aggregator.store.read() if r.type == "EngineRegistered"]

    answers, registered = serve(data, scenario, auth=signed_in(provider).config)
    assert [r["credential"] for r in registered] == [f"app {ENGINE_APP}"]
    for name, answer in answers.items():
        assert isinstance(answer, p.Refused) and answer.code == "credential", (name, answer)
    assert "not the app enrolled" in answers["another app"].reason
    assert not list((tmp_path).glob("unused.key"))  # an app-token engine makes no key file
