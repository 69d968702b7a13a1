"""Sign-in in a real browser (Debian's Chromium via Playwright): a real local OpenID Connect provider
(tests/oidc_provider.py), a real aggregator with sign-in on and real engines on loopback.

The user signs in with Authorization Code + PKCE and comes back to the page she asked for; her
actions are recorded under her signed-in identity; sign-out goes through the provider and the app
then asks for a sign-in again; tokens are renewed with the refresh token before they run out, when
the aggregator refuses one and when it closes the live socket because one ran out (4401); a unit
that requires a role she lacks says which; a sign-in answer this tab did not ask for is refused.
With sign-in off, the name typed in the top bar is still who acts.

Screenshots are saved under tests/artifacts/ (not committed): signed-in.png, missing-roles.png.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from browser import UNLABELLED, System, browser, running_system, screenshot, system  # noqa: F401 - pytest fixtures
from conftest import DEMO_UOD
from oidc_provider import OidcProvider

T = 20_000  # ms: generous waits for a shared CI machine; every wait ends as soon as its condition holds
GUARDED = "GuardedUod"  # a unit only holders of the Admin role may see


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with OidcProvider(client_id="pectus-test", tenant="test-tenant") as running:
        yield running


@pytest.fixture
def signed_in_system(tmp_path: Path, provider: OidcProvider) -> Iterator[System]:
    """The aggregator with sign-in at ``provider``, the demo engine, and an engine whose unit
    requires the Admin role (the demo UOD under another name)."""
    guarded = tmp_path / "guarded_uod.py"
    demo = DEMO_UOD.read_text(encoding="utf-8")
    assert '.with_instrument("DemoUod")' in demo
    guarded.write_text(demo.replace('.with_instrument("DemoUod")',
                                    f'.with_instrument("{GUARDED}").with_required_roles(["Admin"])'), encoding="utf-8")
    shutil.copy(DEMO_UOD.with_name("demo_diagram.svg"), tmp_path)  # its process diagram, beside it
    env = {"ENABLE_AZURE_AUTHENTICATION": "true", "AZURE_DIRECTORY_TENANT_ID": provider.tenant,
           "AZURE_APPLICATION_CLIENT_ID": provider.client_id, "PECTUS_OIDC_AUTHORITY": provider.issuer}
    # An administrator's token sees every unit come online.
    admin = {"X-Identity": provider.mint(roles=["Operator", "Admin"])}
    with running_system(tmp_path, env, admin, (guarded,)) as running:
        yield running


def stored_token(page: Page) -> str | None:
    """The ID token the page holds (in sessionStorage), or None."""
    stored = page.evaluate("sessionStorage.getItem('pectus.auth.session')")
    return json.loads(stored)["idToken"] if stored else None


def wait_for(condition: Callable[[], bool], what: str, page: Page, timeout: float = 30.0) -> None:
    """Until ``condition()`` holds; the page's events are handled meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(50)  # a poll interval, not a settling time: the loop ends on the condition


def test_an_operator_signs_in_runs_the_unit_and_signs_out(signed_in_system, provider, browser):
    system = signed_in_system
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))

    # Opening the unit page signs in at the provider, then comes back to the unit page.
    page.goto(f"{system.url}/units/{system.unit}")
    expect(page.get_by_test_id("signed-in-user")).to_have_text("Alice Smith", timeout=T)
    expect(page.get_by_test_id("unit-name")).to_be_visible(timeout=T)
    assert page.url == f"{system.url}/units/{system.unit}"
    authorize = next(url for url in urls if url.startswith(f"{provider.issuer}/authorize"))
    assert "code_challenge_method=S256" in authorize and "nonce=" in authorize
    assert provider.grants == ["authorization_code"]
    expect(page.get_by_test_id("user-name")).to_be_hidden()  # the free-text name is for sign-in off
    expect(page.get_by_test_id("sign-out")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert page.evaluate(UNLABELLED) == []

    # Control actions are recorded under the signed-in identity (a run's audit trail starts with
    # the run, so the Pause is the first action in it).
    page.get_by_test_id("control-start").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)
    page.get_by_test_id("control-pause").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "paused", timeout=T)
    token = stored_token(page)
    assert token
    unit = f"{system.url}/api/process_units/{system.unit}"
    assert httpx.get(unit).status_code == 401  # no token, no answer
    run = httpx.get(unit, headers={"X-Identity": token}).json()["run_id"]
    trail = httpx.get(f"{system.url}/api/runs/{run}/audit", headers={"X-Identity": token}).json()
    alice = {"kind": "user", "id": "oid-alice", "name": "Alice Smith"}
    assert any(entry["actor"] == alice and entry["what"] == "control" for entry in trail), trail

    # The dashboard lists the demo unit, not the one requiring Admin; the run page shows the trail,
    # and its CSV link (a plain link, no header of its own) downloads with the sign-in.
    page.goto(f"{system.url}/")
    expect(page.locator(f'[data-testid="unit-card"][data-unit-id="{system.unit}"]')).to_be_visible(timeout=T)
    expect(page.locator(f'[data-testid="unit-card"][data-unit-id$="_{GUARDED}"]')).to_have_count(0)
    screenshot(page, "signed-in.png")
    page.goto(f"{system.url}/runs/{run}")
    expect(page.get_by_test_id("audit-table")).to_contain_text("Alice Smith", timeout=T)
    with page.expect_download() as download:
        page.get_by_test_id("download-csv").click()
    assert "Alice Smith" in Path(download.value.path()).read_text(encoding="utf-8")  # a contributor
    assert provider.grants == ["authorization_code"]  # the reloads kept the sign-in of this tab

    # Sign out: through the provider's end-session endpoint back to the app, signed out, which
    # then signs in again (the test provider approves at once).
    signed_out_at = len(urls)
    page.get_by_test_id("sign-out").click()
    wait_for(lambda: provider.grants.count("authorization_code") == 2, "the sign-in after the sign-out", page)
    expect(page.get_by_test_id("signed-in-user")).to_have_text("Alice Smith", timeout=T)
    after = urls[signed_out_at:]
    logout = next(i for i, url in enumerate(after) if url.startswith(f"{provider.issuer}/logout"))
    assert "post_logout_redirect_uri=" in after[logout]
    back = after.index(f"{system.url}/", logout)
    again = next(i for i, url in enumerate(after) if i > back and url.startswith(f"{provider.issuer}/authorize"))
    assert not [url for url in after[back:again] if "/api/" in url], "the signed-out app asked the API"
    assert stored_token(page) not in (None, token)


def test_tokens_are_renewed_before_they_run_out_and_when_refused(signed_in_system, provider, browser):
    system = signed_in_system
    provider.lifetime = 10  # seconds: the page renews about 2.5 s before the end
    page = browser.new_page()
    page.goto(f"{system.url}/units/{system.unit}")
    expect(page.get_by_test_id("signed-in-user")).to_have_text("Alice Smith", timeout=T)
    first = stored_token(page)

    wait_for(lambda: "refresh_token" in provider.grants, "a renewal before the token runs out", page)
    wait_for(lambda: stored_token(page) != first, "the renewed token in the page", page)

    # A token the aggregator refuses (a forgery, as if the provider's key had changed): the page
    # renews it with the refresh token, not with a new sign-in, and goes on.
    refreshes = provider.grants.count("refresh_token")
    hold(page, provider.mint(key="rogue"))
    page.reload()
    expect(page.get_by_test_id("unit-name")).to_be_visible(timeout=T)
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live", timeout=T)
    page.get_by_test_id("control-start").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)
    assert provider.grants.count("refresh_token") > refreshes

    # A token that runs out at the aggregator while the page still trusts it (its exp is 55 s ago:
    # the aggregator's 60 s of clock leeway end in 5 s): the aggregator closes the live socket with
    # 4401, and the page renews the token and connects again.
    sockets: list[object] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    refreshes = provider.grants.count("refresh_token")
    hold(page, provider.mint(lifetime=-55))
    page.reload()
    wait_for(lambda: len(sockets) >= 2, "a new live socket after the sign-in ran out", page)
    assert provider.grants.count("refresh_token") > refreshes
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live", timeout=T)
    assert provider.grants.count("authorization_code") == 1  # renewals all along, never a new sign-in


def hold(page: Page, token: str) -> None:
    """Make the page hold ``token`` as its ID token, which it believes good for an hour."""
    page.evaluate("""(token) => {
        const session = JSON.parse(sessionStorage.getItem('pectus.auth.session'));
        session.idToken = token;
        session.expiresAt = session.renewAt = Date.now() + 3600000;
        sessionStorage.setItem('pectus.auth.session', JSON.stringify(session));
    }""", token)


def test_a_unit_requiring_a_role_the_user_lacks_says_which(signed_in_system, provider, browser):
    system = signed_in_system
    page = browser.new_page()
    guarded = system.unit.removesuffix("_DemoUod") + f"_{GUARDED}"
    page.goto(f"{system.url}/units/{guarded}")
    expect(page.get_by_test_id("signed-in-user")).to_have_text("Alice Smith", timeout=T)
    expect(page.get_by_test_id("missing-roles")).to_contain_text("You are missing one of these roles: Admin",
                                                                 timeout=T)
    expect(page.get_by_test_id("control-start")).to_be_hidden()  # no page of controls that cannot work
    screenshot(page, "missing-roles.png")
    page.get_by_test_id("missing-roles").get_by_role("link", name="Back to the dashboard").click()
    expect(page.locator(f'[data-testid="unit-card"][data-unit-id="{system.unit}"]')).to_be_visible(timeout=T)
    expect(page.get_by_test_id("missing-roles")).to_be_hidden()


def test_a_sign_in_answer_this_tab_did_not_ask_for_is_refused(signed_in_system, provider, browser):
    system = signed_in_system
    page = browser.new_page()
    page.goto(f"{system.url}/auth-callback?code=stolen&state=not-mine")
    expect(page.get_by_test_id("sign-in-failed")).to_contain_text("does not belong", timeout=T)
    assert provider.grants == [] and stored_token(page) is None  # the code was never redeemed
    page.get_by_test_id("sign-in-again").click()
    expect(page.get_by_test_id("signed-in-user")).to_have_text("Alice Smith", timeout=T)
    assert page.url == f"{system.url}/"


def test_with_sign_in_off_the_name_typed_in_is_recorded(system, browser):
    page = browser.new_page()
    page.goto(f"{system.url}/units/{system.unit}")
    expect(page.get_by_test_id("control-start")).to_be_enabled(timeout=T)
    expect(page.get_by_test_id("sign-out")).to_be_hidden()
    page.get_by_test_id("user-name").fill("Bob")
    page.get_by_test_id("user-name").press("Tab")  # the change event stores the name
    page.get_by_test_id("control-start").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "running", timeout=T)
    page.get_by_test_id("control-pause").click()
    expect(page.get_by_test_id("run-controls")).to_have_attribute("data-state", "paused", timeout=T)
    unit = httpx.get(f"{system.url}/api/process_units/{system.unit}").json()
    trail = httpx.get(f"{system.url}/api/runs/{unit['run_id']}/audit").json()
    assert any(entry["actor"] == {"kind": "user", "id": "Bob", "name": "Bob"} for entry in trail), trail
