"""The test OIDC provider (tests/oidc_provider.py) over real HTTP: what the aggregator, the
browser and the engines (client credentials) rely on it for. Fast: no browser, no aggregator, no msal."""

from __future__ import annotations

import base64
import secrets
import ssl
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from oidc_provider import JWT_BEARER, OidcProvider, pkce_challenge, self_signed_certificate

REDIRECT = "http://127.0.0.1:9/auth-callback"


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with OidcProvider(client_id="pectus-test", tenant="test-tenant") as running:
        yield running


def discover(provider: OidcProvider) -> dict:
    return httpx.get(f"{provider.issuer}/.well-known/openid-configuration").raise_for_status().json()


def authorize(provider: OidcProvider, verifier: str, nonce: str = "n-1", **overrides: str) -> httpx.Response:
    params = {"response_type": "code", "client_id": provider.client_id, "redirect_uri": REDIRECT,
              "scope": "openid profile offline_access", "state": "s-1", "nonce": nonce,
              "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256", **overrides}
    return httpx.get(discover(provider)["authorization_endpoint"], params=params)


def code_from(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["s-1"]
    return query["code"][0]


def redeem(provider: OidcProvider, code: str, verifier: str) -> httpx.Response:
    return httpx.post(discover(provider)["token_endpoint"],
                      data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                            "client_id": provider.client_id, "code_verifier": verifier})


def verify(provider: OidcProvider, token: str) -> dict:
    """Verifies ``token`` as a relying party would: keys from the discovered JWKS, issuer, audience."""
    keys = jwt.PyJWKClient(discover(provider)["jwks_uri"])
    return jwt.decode(token, keys.get_signing_key_from_jwt(token).key, algorithms=["RS256"],
                      audience=provider.client_id, issuer=provider.issuer)


def test_discovery_and_jwks_verify_a_minted_token_and_refuse_a_forgery(provider):
    config = discover(provider)
    assert config["issuer"] == provider.issuer == f"{urlsplit(provider.issuer).scheme}://127.0.0.1:" \
        f"{urlsplit(provider.issuer).port}/test-tenant/v2.0"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    claims = verify(provider, provider.mint(roles=["Admin"], preferred_username=None))
    assert claims["name"] == "Alice Smith" and claims["oid"] == "oid-alice" and claims["roles"] == ["Admin"]
    assert "preferred_username" not in claims and claims["exp"] > claims["iat"]
    with pytest.raises(jwt.InvalidSignatureError):
        verify(provider, provider.mint(key="rogue"))
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(provider, provider.mint(lifetime=-60))
    # CORS, as the browser needs for discovery and the token endpoint.
    assert httpx.get(config["jwks_uri"]).headers["access-control-allow-origin"] == "*"
    preflight = httpx.options(config["token_endpoint"], headers={"Origin": "http://127.0.0.1:9",
                                                                 "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and "POST" in preflight.headers["access-control-allow-methods"]


def test_the_code_flow_with_pkce_and_a_refresh(provider):
    verifier = secrets.token_urlsafe(48)
    code = code_from(authorize(provider, verifier, nonce="the-nonce"))
    response = redeem(provider, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["access_token"] and tokens["expires_in"] > 0
    claims = verify(provider, tokens["id_token"])
    assert claims["nonce"] == "the-nonce" and claims["name"] == "Alice Smith"

    refreshed = httpx.post(discover(provider)["token_endpoint"],
                           data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                 "client_id": provider.client_id})
    assert refreshed.status_code == 200, refreshed.text
    assert verify(provider, refreshed.json()["id_token"])["oid"] == "oid-alice"
    assert provider.grants == ["authorization_code", "refresh_token"]


def test_a_wrong_verifier_is_refused(provider):
    code = code_from(authorize(provider, secrets.token_urlsafe(48)))
    response = redeem(provider, code, secrets.token_urlsafe(48))
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_a_code_is_single_use(provider):
    verifier = secrets.token_urlsafe(48)
    code = code_from(authorize(provider, verifier))
    assert redeem(provider, code, verifier).status_code == 200
    again = redeem(provider, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_bad_authorization_requests_are_refused_in_plain_words(provider):
    verifier = secrets.token_urlsafe(48)
    assert authorize(provider, verifier, client_id="someone-else").status_code == 400
    wrong_method = authorize(provider, verifier, code_challenge_method="plain")
    assert wrong_method.status_code == 400 and "S256" in wrong_method.text
    logout = httpx.get(discover(provider)["end_session_endpoint"],
                       params={"post_logout_redirect_uri": "http://127.0.0.1:9/"})
    assert logout.status_code == 302 and logout.headers["location"] == "http://127.0.0.1:9/"


# --- the client-credentials grant (engines) ------------------------------------------------------

APP_SECRET = secrets.token_urlsafe(24)


def client_credentials(provider: OidcProvider, **form: str) -> httpx.Response:
    return httpx.post(discover(provider)["token_endpoint"],
                      data={"grant_type": "client_credentials", "client_id": "engine-app",
                            "scope": f"api://{provider.client_id}/.default", **form})


def assertion(provider: OidcProvider, key_pem: bytes, certificate_pem: bytes, **claims) -> str:
    """A client assertion as msal makes one: signed with the key, the certificate named by its
    SHA-256 thumbprint, for the token endpoint, issued by and about the app."""
    digest = x509.load_pem_x509_certificate(certificate_pem).fingerprint(hashes.SHA256())
    now = int(time.time())
    payload = {"aud": discover(provider)["token_endpoint"], "iss": "engine-app", "sub": "engine-app",
               "jti": secrets.token_hex(8), "nbf": now, "exp": now + 600, **claims}
    return jwt.encode(payload, serialization.load_pem_private_key(key_pem, None), algorithm="PS256",
                      headers={"x5t#S256": base64.urlsafe_b64encode(digest).decode()})


def test_an_app_gets_a_token_for_our_api_with_its_secret(provider):
    app = provider.register_app("engine-app", secret=APP_SECRET, roles=("Engine",))
    assert "client_credentials" in discover(provider)["grant_types_supported"]
    response = client_credentials(provider, client_secret=APP_SECRET)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0 and "refresh_token" not in tokens
    keys = jwt.PyJWKClient(discover(provider)["jwks_uri"])
    claims = jwt.decode(tokens["access_token"], keys.get_signing_key_from_jwt(tokens["access_token"]).key,
                        algorithms=["RS256"], audience=f"api://{provider.client_id}", issuer=provider.issuer)
    assert claims["idtyp"] == "app" and claims["azp"] == "engine-app" and claims["azpacr"] == "1"
    assert claims["oid"] == claims["sub"] == app.object_id and claims["roles"] == ["Engine"]
    assert provider.grants == ["client_credentials"]
    # The bare client id is a resource name too; the token's audience is the resource asked for.
    bare = client_credentials(provider, client_secret=APP_SECRET, scope=f"{provider.client_id}/.default")
    assert jwt.decode(bare.json()["access_token"], options={"verify_signature": False})["aud"] == provider.client_id


def test_version_1_app_tokens_are_issued_as_azure_issues_them(provider):
    provider.register_app("engine-app", secret=APP_SECRET, display_name="Column 3")
    provider.access_token_version = 1
    token = client_credentials(provider, client_secret=APP_SECRET).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == f"https://sts.windows.net/{provider.tenant}/" and claims["ver"] == "1.0"
    assert (claims["appid"], claims["appidacr"], claims["app_displayname"]) == ("engine-app", "1", "Column 3")
    assert "azp" not in claims


def test_bad_client_credentials_are_refused_without_repeating_the_secret(provider):
    provider.register_app("engine-app", secret=APP_SECRET)
    wrong = secrets.token_urlsafe(24)
    refused = client_credentials(provider, client_secret=wrong)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert wrong not in refused.text
    unknown = client_credentials(provider, client_id="someone-else", client_secret=APP_SECRET)
    assert unknown.status_code == 400 and "not registered" in unknown.json()["error_description"]
    scope = client_credentials(provider, client_secret=APP_SECRET, scope="api://another-api/.default")
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    assert client_credentials(provider).json()["error"] == "invalid_client"  # no secret, no assertion
    assert provider.grants == []


def test_an_app_proves_itself_with_a_certificate_assertion(provider):
    key_pem, certificate_pem = self_signed_certificate("engine-app")
    provider.register_app("engine-app", certificate=certificate_pem)
    other_key, _ = self_signed_certificate("engine-app")
    cases = {
        "good": (assertion(provider, key_pem, certificate_pem), 200),
        "signed by another key": (assertion(provider, other_key, certificate_pem), 401),
        "for another endpoint": (assertion(provider, key_pem, certificate_pem, aud="https://elsewhere/token"), 401),
        "expired": (assertion(provider, key_pem, certificate_pem, exp=int(time.time()) - 60), 401),
        "about another app": (assertion(provider, key_pem, certificate_pem, sub="someone-else"), 401),
    }
    for name, (signed, status) in cases.items():
        response = client_credentials(provider, client_assertion=signed, client_assertion_type=JWT_BEARER)
        assert response.status_code == status, (name, response.text)
    token = client_credentials(provider, client_assertion=cases["good"][0], client_assertion_type=JWT_BEARER)
    assert jwt.decode(token.json()["access_token"], options={"verify_signature": False})["azpacr"] == "2"


def test_with_tls_the_provider_serves_https_under_its_own_certificate():
    with OidcProvider(tls=True) as secure:
        assert secure.issuer.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=secure.ca_file)
        assert httpx.get(f"{secure.issuer}/.well-known/openid-configuration",
                         verify=trusted).json()["issuer"] == secure.issuer
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{secure.issuer}/keys")  # the system's trust store does not know it
        ca_file = Path(secure.ca_file)
    assert not ca_file.exists()
