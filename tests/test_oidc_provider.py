"""The test OIDC provider (tests/oidc_provider.py) over real HTTP: what the aggregator and the
browser rely on it for. Fast: no browser, no aggregator."""

from __future__ import annotations

import secrets
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from oidc_provider import OidcProvider, pkce_challenge

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
