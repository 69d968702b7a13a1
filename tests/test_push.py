"""Web Push: subscriptions are events, notifications reach the browsers that chose them (topic,
unit, roles), dead subscriptions are removed, a slow push service holds nobody up, the VAPID
keys are kept.

Each test runs a real aggregator on loopback and a real push service on loopback
(tests/push_endpoint.py) that checks the VAPID signature against the key the aggregator serves
and decrypts every push with the subscriber's keys, as a browser would.
"""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from pectus.actors.aggregator import STORE_FILE
from pectus.actors.push import (VAPID_KEY_FILE, Message, PushSender, PushSettings, Subscriptions, VapidKeys,
                                 subscription_id)
from pectus.events import domain as d
from pectus.events import protocol as p
from pectus.events.store import SQLiteEventStore
from pectus.notifications import Notification
from pectus.web.auth import AuthConfig, ConfigError, Identity

from oidc_provider import OidcProvider
from push_endpoint import PushEndpoint, Subscriber
from test_aggregator import serve

UNITS = {"open_Unit": [], "ops_Unit": ["Operator"]}
T0 = 1_800_000_000.0


def seed(data: Path) -> None:
    """Two units described (ops_Unit requires the role Operator), no run."""
    data.mkdir(parents=True)
    events: list[d.DomainEvent] = []
    for unit, roles in UNITS.items():
        base = {"unit": unit, "actor": d.Actor.engine(unit)}
        events += [
            d.EngineRegistered(time=T0, **base, computer_name="host", uod_name=unit.split("_")[0].title(),
                               engine_version="0.1.0", protocol=p.PROTOCOL_VERSION),
            d.UodDescribed(time=T0, **base, uod_name="Unit", uod_author_name="A", uod_author_email="a@x",
                           uod_filename="unit.py", location="", hardware="", tags=[], readings=[], commands=[],
                           plot_configuration={}, data_log_interval_seconds=1.0, required_roles=roles),
            d.EngineConnected(time=T0, **base),
        ]
    store = SQLiteEventStore(data / STORE_FILE)
    store.append([e.stored() for e in events])
    store.close()


def run(tmp_path: Path, endpoint: PushEndpoint, scenario, *, auth: AuthConfig | None = None, **settings: Any):
    """``scenario(port, aggregator)`` against a seeded aggregator that pushes to ``endpoint``."""
    data = tmp_path / "data"
    if not data.exists():
        seed(data)
    push = PushSettings(services=(endpoint.origin,), **settings)
    return serve(data, scenario, push=push, auth=auth or AuthConfig())


def client(port: int, user: str | None = None, token: str | None = None) -> httpx.AsyncClient:
    headers = {"X-Pectus-User": user} if user else {}
    if token:
        headers["X-Identity"] = token
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30)


async def subscribe(api: httpx.AsyncClient, endpoint: PushEndpoint, subscriber: Subscriber, topics: list[str],
                    units: list[str] | None = None) -> dict[str, Any]:
    endpoint.vapid_key = (await api.get("/api/push/config")).json()["public_key"]
    response = await api.post("/api/push/subscriptions", json=subscriber.subscription(topics, units))
    assert response.status_code == 200, response.text
    return response.json()


async def happen(aggregator, *events: d.DomainEvent) -> None:
    """Records ``events`` as if an engine had reported them (the live path: store, views, notifications)."""
    await aggregator.writer.append(list(events))


def run_started(unit: str, run_id: str) -> d.RunStarted:
    return d.RunStarted(time=time.time(), unit=unit, run=run_id, actor=d.Actor.engine(unit))


def disconnected(unit: str) -> d.EngineDisconnected:
    return d.EngineDisconnected(time=time.time(), unit=unit, actor=d.Actor.engine(unit), reason="the socket closed")


async def arrived(endpoint: PushEndpoint, subscriber: Subscriber, count: int = 1):
    return await trio.to_thread.run_sync(endpoint.wait_for, subscriber, count)


def stored(aggregator, *types: str) -> list[dict[str, Any]]:
    return [record.data for record in aggregator.store.read() if record.type in types]


# -- subscriptions -------------------------------------------------------------------------------

def test_a_subscription_is_an_event_of_its_user_recorded_only_when_something_changed(tmp_path):
    with PushEndpoint() as endpoint:
        ann_browser = endpoint.subscribe()

        async def scenario(port, aggregator):
            async with client(port, "Ann") as ann, client(port, "Bob") as bob:
                first = await subscribe(ann, endpoint, ann_browser, ["run_started", "notify"], ["open_Unit"])
                assert first["id"] == subscription_id(ann_browser.endpoint)
                assert first["topics"] == ["notify", "run_started"]  # in the list's order
                assert first["units"] == ["open_Unit"] and first["push_service"] == endpoint.origin
                assert "endpoint" not in first and "keys" not in first
                await subscribe(ann, endpoint, ann_browser, ["run_started", "notify"], ["open_Unit"])  # a page load
                assert len(stored(aggregator, "PushSubscribed")) == 1
                await subscribe(ann, endpoint, ann_browser, ["connection_lost"])
                events = stored(aggregator, "PushSubscribed")
                assert len(events) == 2
                assert events[-1]["actor"] == {"kind": "user", "id": "Ann", "name": "Ann"}
                assert events[-1]["topics"] == ["connection_lost"] and events[-1]["units"] is None
                assert events[-1]["endpoint"] == ann_browser.endpoint and events[-1]["keys"] == ann_browser.keys

                assert [s["id"] for s in (await ann.get("/api/push/subscriptions")).json()] == [first["id"]]
                assert (await bob.get("/api/push/subscriptions")).json() == []
                path = f"/api/push/subscriptions/{first['id']}/unsubscribe"
                refused = await bob.post(path, json={})
                assert refused.status_code == 404 and "no push subscription" in refused.json()["error"]["message"]
                assert (await ann.post(path, json={})).json() == {"accepted": True}
                assert (await ann.get("/api/push/subscriptions")).json() == []
                assert (await ann.post(path, json={})).status_code == 404
                # the browser itself (it holds the endpoint) ends its subscription, whoever made it
                await subscribe(ann, endpoint, ann_browser, ["notify"])
                assert (await bob.post(path, json={"endpoint": ann_browser.endpoint})).status_code == 200
            return stored(aggregator, "PushUnsubscribed")

        ended = run(tmp_path, endpoint, scenario)
        assert [(event["actor"]["id"], event["reason"]) for event in ended] == [("Ann", "unsubscribed"),
                                                                                ("Bob", "unsubscribed")]
        assert not endpoint.refused


def _bad(subscriber: Subscriber, **changes: Any) -> dict[str, Any]:
    body = subscriber.subscription(["notify"])
    for name, value in changes.items():
        if name.startswith("keys_"):
            body["keys"] = {**body["keys"], name[5:]: value}
        else:
            body[name] = value
    return body


BAD = {
    "another host": ({"endpoint": "https://evil.example/push/1"}, "endpoint", "not one this aggregator pushes to"),
    "not a URL": ({"endpoint": "push me"}, "endpoint", "https URL of a push service"),
    "too long": ({"endpoint": "ENDPOINT" + "x" * 2048}, "endpoint", "longer than 2048"),
    "short key": ({"keys_p256dh": "BAAA"}, "keys.p256dh", "must be 65 bytes"),
    "not base64url": ({"keys_p256dh": "!!!"}, "keys.p256dh", "not base64url"),
    "off the curve": ({"keys_p256dh": "BA" + "A" * 85}, "keys.p256dh", "not a P-256 public key"),
    "short auth": ({"keys_auth": "AAAA"}, "keys.auth", "must be 16 bytes"),
    "unknown topic": ({"topics": ["gossip"]}, "topics[0]", "must be one of notify, run_started"),
    "unknown unit": ({"units": ["nowhere_Unit"]}, "units[0]", "unknown process unit 'nowhere_Unit'"),
    "no topic": ({"topics": []}, "topics", "choose at least one topic"),
    "no unit": ({"units": []}, "units", "choose at least one unit, or null"),
}


def test_a_bad_subscription_is_refused_naming_the_field_and_nothing_is_recorded(tmp_path):
    with PushEndpoint() as endpoint:
        subscriber = endpoint.subscribe()

        async def scenario(port, aggregator):
            answers = {}
            async with client(port, "Ann") as ann:
                for name, (changes, _, _) in BAD.items():
                    if changes.get("endpoint", "").startswith("ENDPOINT"):
                        changes = {"endpoint": subscriber.endpoint + changes["endpoint"][8:]}
                    response = await ann.post("/api/push/subscriptions", json=_bad(subscriber, **changes))
                    answers[name] = (response.status_code, response.json()["error"])
            return answers, stored(aggregator, "PushSubscribed")

        answers, events = run(tmp_path, endpoint, scenario)
    for name, (_, field, message) in BAD.items():
        status, error = answers[name]
        assert (status, error.get("field")) == (422, field), name
        assert message in error["message"], (name, error["message"])
    assert events == []


def test_the_push_services_accepted_are_https_origins_or_those_listed(tmp_path):
    default = PushSettings()
    assert default.refusal("https://fcm.googleapis.com/fcm/send/abc") is None
    assert default.refusal("https://wns2-by3p.notify.windows.com/w/?token=x") is None
    assert default.refusal("https://notify.windows.com.evil.example/w") is not None
    assert default.refusal("http://fcm.googleapis.com/fcm/send/abc") is not None  # not over http
    assert default.refusal("https://fcm.googleapis.com:8443/fcm/send/abc") is not None
    assert default.refusal("https://user@fcm.googleapis.com/fcm/send/abc") is not None
    listed = PushSettings.from_environment({"PECTUS_PUSH_SERVICES": " http://127.0.0.1:9999 ,https://push.example"})
    assert listed.services == ("http://127.0.0.1:9999", "https://push.example")
    assert listed.refusal("http://127.0.0.1:9999/push/1") is None
    assert listed.refusal("http://127.0.0.1:9998/push/1") is not None
    with pytest.raises(ConfigError, match="PECTUS_PUSH_SERVICES: 'push.example' is not an origin"):
        PushSettings.from_environment({"PECTUS_PUSH_SERVICES": "push.example"})
    with pytest.raises(ConfigError, match="PECTUS_PUSH_CONTACT"):
        PushSettings.from_environment({"PECTUS_PUSH_CONTACT": "ops@example.com"})


# -- what reaches whom ---------------------------------------------------------------------------

def test_a_live_notification_reaches_the_subscriptions_that_chose_its_topic_and_unit(tmp_path):
    with PushEndpoint() as endpoint:
        open_starts, all_losses, all_starts = endpoint.subscribe(), endpoint.subscribe(), endpoint.subscribe()

        async def scenario(port, aggregator):
            async with client(port, "Ann") as ann, client(port, "Bob") as bob:
                await subscribe(ann, endpoint, open_starts, ["run_started"], ["open_Unit"])
                await subscribe(ann, endpoint, all_losses, ["connection_lost"])
                await subscribe(bob, endpoint, all_starts, ["run_started", "connection_lost"])
            await happen(aggregator, run_started("open_Unit", "run-1"))
            [first] = await arrived(endpoint, open_starts)
            await arrived(endpoint, all_starts)
            await happen(aggregator, disconnected("open_Unit"))
            [lost] = await arrived(endpoint, all_losses)  # and not the run start before it: it did not choose that
            await arrived(endpoint, all_starts, 2)
            # the other unit: ops_Unit requires a role (Operator) that nobody holds with sign-in off
            await happen(aggregator, run_started("ops_Unit", "run-2"), disconnected("ops_Unit"))
            await happen(aggregator, run_started("open_Unit", "run-3"))
            await arrived(endpoint, all_starts, 3)
            await arrived(endpoint, open_starts, 2)
            return first, lost

        first, lost = run(tmp_path, endpoint, scenario)
    assert first.payload == {"title": "host (Open): run started", "body": first.payload["body"], "unit": "open_Unit",
                             "url": "/units/open_Unit", "topic": "run_started", "time": first.payload["time"]}
    assert first.payload["time"].endswith("Z") and first.urgency == "normal" and first.ttl == 3600
    assert lost.payload["topic"] == "connection_lost" and lost.urgency == "high"
    assert [(r.payload["unit"], r.payload["topic"]) for r in open_starts.received] == [("open_Unit", "run_started")] * 2
    assert [r.payload["topic"] for r in all_starts.received] == ["run_started", "connection_lost", "run_started"]
    assert [r.payload["unit"] for r in all_starts.received] == ["open_Unit"] * 3
    assert len(all_losses.received) == 1
    assert not endpoint.refused


def test_a_unit_is_pushed_only_to_users_holding_a_role_it_requires(tmp_path):
    with PushEndpoint() as endpoint, OidcProvider() as provider:
        operator_browser, other_browser = endpoint.subscribe(), endpoint.subscribe()

        async def scenario(port, aggregator):
            operator, other = provider.mint(roles=["Operator"]), provider.mint(oid="oid-bob", roles=None)
            async with client(port, token=operator) as alice, client(port, token=other) as bob:
                await subscribe(alice, endpoint, operator_browser, ["run_started"])
                await subscribe(bob, endpoint, other_browser, ["run_started"])
                refused = await bob.post("/api/push/subscriptions",
                                         json=other_browser.subscription(["run_started"], ["ops_Unit"]))
                assert refused.status_code == 403 and refused.json()["error"]["missing_roles"] == ["Operator"]
            await happen(aggregator, run_started("ops_Unit", "run-ops"))
            await happen(aggregator, run_started("open_Unit", "run-open"))
            await arrived(endpoint, operator_browser, 2)
            await arrived(endpoint, other_browser)  # the open unit's, and not the one before it
            return stored(aggregator, "PushSubscribed")

        auth = AuthConfig(True, provider.issuer, provider.client_id, provider.tenant)
        events = run(tmp_path, endpoint, scenario, auth=auth)
    assert [r.payload["unit"] for r in operator_browser.received] == ["ops_Unit", "open_Unit"]
    assert [r.payload["unit"] for r in other_browser.received] == ["open_Unit"]
    assert [event["roles"] for event in events] == [["Operator"], []]


@pytest.mark.parametrize("status", [404, 410])
def test_a_subscription_its_push_service_says_is_gone_is_removed_as_an_event(tmp_path, status):
    with PushEndpoint() as endpoint:
        gone, alive = endpoint.subscribe(), endpoint.subscribe()
        gone.status = status

        async def scenario(port, aggregator):
            async with client(port, "Ann") as ann:
                await subscribe(ann, endpoint, gone, ["run_started"])
                await subscribe(ann, endpoint, alive, ["run_started"])
                answer = (await ann.post("/api/push/test", json={})).json()["deliveries"]
                remaining = [s["id"] for s in (await ann.get("/api/push/subscriptions")).json()]
                await happen(aggregator, run_started("open_Unit", "run-1"))
                await arrived(endpoint, alive, 2)  # the test, then the run start
                return answer, remaining, stored(aggregator, "PushUnsubscribed")

        answer, remaining, removed = run(tmp_path, endpoint, scenario)
    outcomes = {delivery["subscription"]: delivery for delivery in answer}
    assert outcomes[subscription_id(gone.endpoint)]["outcome"] == "removed"
    assert outcomes[subscription_id(gone.endpoint)]["detail"] == f"{status} from the push service"
    assert outcomes[subscription_id(alive.endpoint)]["outcome"] == "delivered"
    assert remaining == [subscription_id(alive.endpoint)]
    assert [(e["subscription"], e["actor"]["kind"]) for e in removed] == [(subscription_id(gone.endpoint),
                                                                         "aggregator")]
    assert removed[0]["reason"] == f"the push service answered {status}: the subscription is gone"
    assert gone.posts == 1  # the run start went to the living one only
    assert [r.payload["topic"] for r in alive.received] == ["test", "run_started"]


def test_a_gone_subscription_whose_removal_cannot_be_recorded_is_kept_and_tried_again():
    """The store fails (a full disk): the sender neither crashes nor forgets the subscription."""
    with PushEndpoint() as endpoint:
        gone = endpoint.subscribe()
        gone.status = 410
        subscriptions, disk_full = Subscriptions(), [False]

        async def append(events):
            if disk_full[0]:
                raise OSError(28, "No space left on device")
            for event in events:
                subscriptions.remember(event.type, event.to_data())

        keys = VapidKeys(Vapid(ec.generate_private_key(ec.SECP256R1())))
        sender = PushSender(keys, PushSettings(services=(endpoint.origin,)), subscriptions, append, lambda unit: [])
        endpoint.vapid_key = keys.public_key
        message = Message({"title": "t", "body": "", "unit": None, "url": "/", "topic": "test", "time": ""})

        async def main():
            subscription = await sender.subscribe(Identity(d.Actor.user("ann", "Ann")), gone.endpoint, gone.keys,
                                                  ["notify"], None)
            disk_full[0] = True
            first = await sender.push(subscription, message)
            kept = subscriptions.get(subscription.id)
            disk_full[0] = False
            second = await sender.push(subscription, message)
            return first, kept, second, subscriptions.get(subscription.id)

        first, kept, second, after = trio.run(main)
    assert first.outcome == "failed" and "its removal cannot be recorded now" in first.detail
    assert kept is not None
    assert second.outcome == "removed" and after is None
    assert gone.posts == 2


def test_a_slow_push_service_holds_up_neither_the_others_nor_the_aggregator(tmp_path):
    with PushEndpoint() as endpoint:
        slow, fast = endpoint.subscribe(), endpoint.subscribe()
        slow.hold = threading.Event()  # its push service takes the push and does not answer

        async def scenario(port, aggregator):
            async with client(port, "Ann") as ann:
                await subscribe(ann, endpoint, slow, ["run_started"])
                await subscribe(ann, endpoint, fast, ["run_started"])
                for number in range(3):
                    await happen(aggregator, run_started("open_Unit", f"run-{number}"))
                began = trio.current_time()
                await arrived(endpoint, fast, 3)
                fast_took = trio.current_time() - began
                health = await ann.get("/health")
                assert health.status_code == 200
                assert slow.posts == 1 and slow.received == []  # still waiting on the first
                # the test notification to the slow one gives up at the timeout
                began = trio.current_time()
                answer = (await ann.post("/api/push/test", json={"subscription": subscription_id(slow.endpoint)}))
                gave_up_after = trio.current_time() - began
                slow.hold.set()
                await arrived(endpoint, slow, 1)
                return fast_took, answer.json()["deliveries"], gave_up_after

        fast_took, deliveries, gave_up_after = run(tmp_path, endpoint, scenario, timeout=1.0)
    assert fast_took < 1.0  # all three, while the slow service still sat on its first
    [delivery] = deliveries
    assert delivery["outcome"] == "failed" and delivery["detail"] in ("no answer within 1 s",
                                                                      "the push service cannot be reached: ReadTimeout")
    assert 0.9 < gave_up_after < 3.0


def test_the_vapid_key_is_made_once_readable_by_the_owner_only_and_subscriptions_outlive_a_restart(tmp_path):
    with PushEndpoint() as endpoint:
        subscriber = endpoint.subscribe()

        async def first(port, aggregator):
            async with client(port, "Ann") as ann:
                await subscribe(ann, endpoint, subscriber, ["run_started"])
                await happen(aggregator, run_started("open_Unit", "run-1"))
                await arrived(endpoint, subscriber)
                return endpoint.vapid_key

        async def second(port, aggregator):
            async with client(port, "Ann") as ann:
                key = (await ann.get("/api/push/config")).json()["public_key"]
                listed = (await ann.get("/api/push/subscriptions")).json()
            await happen(aggregator, run_started("open_Unit", "run-2"))  # replay pushed nothing; this does
            await arrived(endpoint, subscriber, 2)
            return key, listed

        key = run(tmp_path, endpoint, first)
        mode = stat.S_IMODE((tmp_path / "data" / VAPID_KEY_FILE).stat().st_mode)
        again, listed = run(tmp_path, endpoint, second)
    assert mode == 0o600
    assert again == key and len(key) == 87  # base64url of a 65-byte uncompressed P-256 point
    assert [s["id"] for s in listed] == [subscription_id(subscriber.endpoint)]
    assert [r.payload["topic"] for r in subscriber.received] == ["run_started", "run_started"]
    first_run, second_run = (r.payload["time"] for r in subscriber.received)
    assert first_run < second_run  # the second is run-2's, not run-1's pushed again by the replay


def test_a_key_file_that_is_not_a_p256_key_stops_the_aggregator_naming_it(tmp_path):
    from pectus.actors.aggregator import AggregatorProcess

    data = tmp_path / "data"
    data.mkdir()
    (data / VAPID_KEY_FILE).write_text("not a key")
    with pytest.raises(ConfigError, match=f"cannot use the Web Push key: .*{VAPID_KEY_FILE} is not"):
        AggregatorProcess(data, port=0, push=PushSettings())


def test_a_push_says_what_the_service_worker_shows_and_how_urgent_it_is():
    def message(body: str, topic: str = "paused_on_error") -> Message:
        return Message.of(Notification(unit="host 1_Unit", topic=topic, title="Unit: paused on error", body=body,
                                       time="2026-01-01T00:00:00.000Z", position=7, run_id="r"))

    assert message("short").payload["body"] == "short" and message("short", "notify").urgency == "normal"
    for long in ("x" * 5000, "\N{TEST TUBE}" * 2000):  # a push carries 4 KiB: 4-byte characters count 4
        cut = message(long)
        assert len(cut.payload["body"].encode()) <= 2000 and cut.payload["body"].endswith("…")
        assert long.startswith(cut.payload["body"][:-1])
    assert message("x" * 2000).payload["body"] == "x" * 2000
    message = message("short")
    assert message.urgency == "high"
    assert message.payload["url"] == "/units/host%201_Unit"
    assert set(message.payload) == {"title", "body", "unit", "url", "topic", "time"}


def test_the_service_worker_is_served_from_the_root_with_a_policy_of_its_own(tmp_path):
    with PushEndpoint() as endpoint:
        async def scenario(port, aggregator):
            async with client(port) as anyone:
                return await anyone.get("/sw.js")

        response = run(tmp_path, endpoint, scenario)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["content-security-policy"] == "default-src 'none'"
    assert "addEventListener(\"push\"" in response.text


def test_a_push_contact_push_services_cannot_use_stops_the_aggregator_saying_which(tmp_path, monkeypatch, capsys):
    from pectus.cli.aggregator import main

    monkeypatch.setenv("PECTUS_PUSH_CONTACT", "mailto:nobody")  # no domain: push services refuse it
    assert main(["--data-dir", str(tmp_path / "data"), "--port", "0"]) == 2
    assert "PECTUS_PUSH_CONTACT: 'mailto:nobody' is not a subject push services take" in capsys.readouterr().err
