"""Web Push in Chromium: the bell subscribes this browser, the aggregator pushes to it, the
service worker shows what was pushed.

One substitution, in this test only: Chromium's own PushManager.subscribe() registers with
Google's push service (FCM), which cannot be reached from here. So the page's
PushManager.prototype.subscribe and getSubscription are replaced (add_init_script) by ones that
return a subscription whose endpoint is the local push service (tests/push_endpoint.py), with
keys made by WebCrypto as the browser makes its own (a P-256 ECDH key pair, a 16-byte auth
secret). Everything else is real: the bell and its menu, the notification permission (granted
to the browser context), the service worker's registration, the aggregator's encryption and
VAPID signature, and the push service's checks and decryption with the browser's private key
(exported from WebCrypto). The push service then hands the decrypted message to the service
worker with the DevTools protocol (ServiceWorker.deliverPushMessage), as Chromium's push client
does once it has decrypted a message, and the test reads the notification the worker displayed
(registration.getNotifications()).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.sync_api import Page, expect

from browser import UNLABELLED, browser, running_system, screenshot  # noqa: F401 - pytest fixtures
from push_endpoint import PushEndpoint, Received, Subscriber, unb64url
from test_browser_a11y import check

T = 20_000  # ms: generous waits for a shared machine; every wait ends as soon as its condition holds
SAVED = "pectus.test.push"  # where the replaced PushManager keeps its subscription (localStorage)
FAKE_PUSH_MANAGER = """(() => {
  const SERVICE = %s;
  const SAVED = %s;
  const b64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const raw = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")),
    (c) => c.charCodeAt(0)).buffer;
  const subscription = (saved) => ({
    endpoint: saved.endpoint, expirationTime: null,
    options: {userVisibleOnly: true, applicationServerKey: raw(saved.serverKey)},
    getKey: (name) => raw(saved.keys[name]),
    toJSON: () => ({endpoint: saved.endpoint, expirationTime: null, keys: saved.keys}),
    unsubscribe: async () => { localStorage.removeItem(SAVED); return true; },
  });
  PushManager.prototype.getSubscription = async function () {
    const saved = localStorage.getItem(SAVED);
    return saved ? subscription(JSON.parse(saved)) : null;
  };
  PushManager.prototype.subscribe = async function (options) {
    const pair = await crypto.subtle.generateKey({name: "ECDH", namedCurve: "P-256"}, true, ["deriveBits"]);
    const saved = {
      endpoint: `${SERVICE}/push/${b64(crypto.getRandomValues(new Uint8Array(16)))}`,
      keys: {p256dh: b64(await crypto.subtle.exportKey("raw", pair.publicKey)),
             auth: b64(crypto.getRandomValues(new Uint8Array(16)))},
      privateKey: await crypto.subtle.exportKey("jwk", pair.privateKey),
      serverKey: b64(options.applicationServerKey),
    };
    localStorage.setItem(SAVED, JSON.stringify(saved));
    return subscription(saved);
  };
})();"""
NOTIFICATIONS = """() => navigator.serviceWorker.ready.then((registration) => registration.getNotifications())
  .then((shown) => shown.map((n) => ({title: n.title, body: n.body, url: n.data && n.data.url})))"""


def browser_subscriber(page: Page, endpoint: PushEndpoint) -> Subscriber:
    """The subscription the page made, with the browser's private key, known to the push service."""
    saved = json.loads(page.evaluate(f"() => localStorage.getItem({json.dumps(SAVED)})"))
    private = ec.derive_private_key(int.from_bytes(unb64url(saved["privateKey"]["d"]), "big"), ec.SECP256R1())
    return endpoint.register(private, unb64url(saved["keys"]["auth"]), token=saved["endpoint"].rsplit("/", 1)[1])


def registration_id(registrations: list[dict[str, Any]], scope: str, page: Page) -> str:
    deadline = time.monotonic() + T / 1000
    while True:
        found = [r for r in registrations if r["scopeURL"] == scope and not r["isDeleted"]]
        if found:
            return found[-1]["registrationId"]
        assert time.monotonic() < deadline, f"no service worker registered for {scope}: {registrations}"
        page.wait_for_timeout(50)  # lets Playwright take the DevTools events


def shown_after(page: Page, cdp, origin: str, registration: str, received: Received, title: str) -> dict[str, Any]:
    """Hands the decrypted push to the service worker; the notification it then shows."""
    cdp.send("ServiceWorker.deliverPushMessage", {"origin": origin, "registrationId": registration,
                                                  "data": received.text})
    deadline = time.monotonic() + T / 1000
    while True:
        shown = [n for n in page.evaluate(NOTIFICATIONS) if n["title"] == title]
        if shown:
            return shown[0]
        assert time.monotonic() < deadline, f"the service worker showed no {title!r}: {page.evaluate(NOTIFICATIONS)}"
        page.wait_for_timeout(50)


@pytest.fixture
def endpoint():
    with PushEndpoint() as service:
        yield service


def test_the_bell_subscribes_and_the_service_worker_shows_what_the_aggregator_pushed(tmp_path, browser, endpoint):
    with running_system(tmp_path, env={"PECTUS_PUSH_SERVICES": endpoint.origin}) as system:
        endpoint.vapid_key = httpx.get(f"{system.url}/api/push/config").json()["public_key"]
        context = browser.new_context(viewport={"width": 1440, "height": 900}, permissions=["notifications"])
        context.add_init_script(FAKE_PUSH_MANAGER % (json.dumps(endpoint.origin), json.dumps(SAVED)))
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        registrations: list[dict[str, Any]] = []
        cdp.on("ServiceWorker.workerRegistrationUpdated", lambda event: registrations.extend(event["registrations"]))
        cdp.send("ServiceWorker.enable")
        page.goto(f"{system.url}/units/{system.unit}")
        page.get_by_test_id("user-name").fill("Olga")
        page.get_by_test_id("user-name").press("Tab")
        bell = page.get_by_test_id("push-bell")
        expect(bell).to_have_attribute("data-state", "off", timeout=T)

        # The menu, by keyboard: the bell opens it and takes the focus inside, Escape gives it back.
        bell.focus()
        page.keyboard.press("Enter")
        menu = page.get_by_test_id("push-menu")
        expect(menu).to_be_visible()
        expect(bell).to_have_attribute("aria-expanded", "true")
        expect(page.get_by_test_id("push-topic-notify")).to_be_checked()
        expect(page.get_by_test_id("push-topic-block_started")).not_to_be_checked()
        expect(page.get_by_test_id("push-units-all")).to_be_checked()
        assert page.evaluate(UNLABELLED) == []
        check(page, "the bell's menu")
        page.keyboard.press("Escape")
        expect(menu).to_be_hidden()
        expect(bell).to_be_focused()

        # Subscribe for this unit only, run start and Notify among the topics.
        bell.click()
        page.get_by_test_id("push-units-some").check()
        page.get_by_test_id(f"push-unit-{system.unit}").check()
        screenshot(page, "push-bell-menu.png")
        page.get_by_test_id("push-subscribe").click()
        expect(bell).to_have_attribute("data-state", "on", timeout=T)
        expect(page.get_by_test_id("push-status")).to_contain_text("On:")
        subscriber = browser_subscriber(page, endpoint)
        [mine] = httpx.get(f"{system.url}/api/push/subscriptions", headers={"X-Pectus-User": "Olga"}).json()
        assert mine["units"] == [system.unit]
        assert "run_started" in mine["topics"] and "block_started" not in mine["topics"]
        registration = registration_id(registrations, f"{system.url}/", page)
        screenshot(page, "push-bell-on.png")

        # The test notification: pushed, decrypted by the push service, shown by the service worker.
        page.get_by_test_id("push-test").click()
        expect(page.get_by_test_id("toast").filter(has_text="Test notification sent")).to_be_visible(timeout=T)
        [test] = endpoint.wait_for(subscriber)
        assert test.payload["topic"] == "test" and test.urgency == "normal"
        shown = shown_after(page, cdp, system.url, registration, test, "Pectus: test notification")
        assert "reach this browser" in shown["body"] and shown["url"] == f"{system.url}/"

        # A run started on the unit, by another user: the engine's record, notified and pushed.
        started = httpx.post(f"{system.url}/api/process_units/{system.unit}/control", json={"command": "Start"},
                             headers={"X-Pectus-User": "Ivan"})
        assert started.status_code == 200, started.text
        pushed = endpoint.wait_for(subscriber, 2)[1]
        assert pushed.payload["topic"] == "run_started" and pushed.payload["unit"] == system.unit
        shown = shown_after(page, cdp, system.url, registration, pushed, pushed.payload["title"])
        assert shown["title"].endswith(": run started") and shown["url"] == f"{system.url}/units/{system.unit}"

        # A page load keeps the subscription as it was (nothing new recorded) and shows the bell on.
        page.reload()
        expect(bell).to_have_attribute("data-state", "on", timeout=T)
        assert len(httpx.get(f"{system.url}/api/push/subscriptions", headers={"X-Pectus-User": "Olga"}).json()) == 1

        # Turned off: the aggregator forgets the browser, the bell says so.
        bell.click()
        page.get_by_test_id("push-unsubscribe").click()
        expect(bell).to_have_attribute("data-state", "off", timeout=T)
        assert httpx.get(f"{system.url}/api/push/subscriptions", headers={"X-Pectus-User": "Olga"}).json() == []
        assert endpoint.refused == []
        context.close()
