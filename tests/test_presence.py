"""Presence: who has a unit's page open now. The hub's logic under Trio's MockClock (pages
arriving, leaving, renaming, moving to another unit, a flood of renames, a long name), then the
live socket of a real aggregator on loopback: the request is validated, a socket that closes
leaves."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing
from trio_websocket import open_websocket_url

from oidc_provider import OidcProvider
from pectus.actors.aggregator import AggregatorProcess
from pectus.actors.ui_hub import PACE, PRESENCE_LIST, PRESENCE_NAME_CHARS, Subscription, UiHub, presence_name
from pectus.events.domain import Actor
from pectus.web.auth import AuthConfig, Identity

OPERATOR = Identity(Actor.user("oid-op", "Operator"))


def run(test: Any) -> Any:
    return trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def page(hub: UiHub, unit: str, name: str) -> Subscription:
    """A browser showing ``unit``'s page as ``name``: it follows the unit, then says it is there."""
    subscription = hub.subscribe()
    subscription.sign_in(OPERATOR)
    subscription.follow([unit])
    subscription.be_here(unit, name)
    return subscription


async def presences(subscription: Subscription) -> list[dict[str, Any]]:
    """The presence deltas waiting for ``subscription`` (one frame), oldest first."""
    messages = [delta for frame in map(json.loads, await subscription.take()) for delta in frame]
    return [message for message in messages if message["topic"] == "presence"]


async def settled(subscription: Subscription) -> dict[str, Any]:
    """The newest presence ``subscription`` receives once no more rounds come (virtual time)."""
    latest = (await presences(subscription))[-1]["data"]
    while True:
        with trio.move_on_after(4 * PACE):
            found = await presences(subscription)
            latest = found[-1]["data"] if found else latest
            continue
        return latest


def people(data: dict[str, Any]) -> dict[str, int]:
    return {person["name"]: person["count"] for person in data["people"]}


def test_pages_see_who_arrives_renames_and_leaves():
    async def main():
        hub = UiHub()
        ann = page(hub, "u1", "Ann")
        watcher = hub.subscribe()  # e.g. the dashboard: follows the unit, has no unit page open
        watcher.sign_in(OPERATOR)
        watcher.follow(["u1"])
        bob = page(hub, "u1", "Bob")
        [latest] = await presences(watcher)  # one round: the two arrivals in one message
        assert latest == {"unit": "u1", "topic": "presence",
                          "data": {"people": [{"name": "Ann", "count": 1}, {"name": "Bob", "count": 1}], "total": 2}}
        assert people(await settled(ann)) == {"Ann": 1, "Bob": 1}
        second_ann = page(hub, "u1", "Ann")  # the same person in a second tab
        assert people(await settled(watcher)) == {"Ann": 2, "Bob": 1}
        bob.be_here("u1", "Robert")
        assert people(await settled(watcher)) == {"Ann": 2, "Robert": 1}
        bob.close()  # the socket closed
        assert await settled(watcher) == {"people": [{"name": "Ann", "count": 2}], "total": 2}
        second_ann.be_here(None, "Ann")  # went back to the dashboard
        assert await settled(watcher) == {"people": [{"name": "Ann", "count": 1}], "total": 1}
        ann.be_here("u2", "Ann")  # opened another unit's page
        assert await settled(watcher) == {"people": [], "total": 0}

    run(main)


def test_names_are_trimmed_cut_and_anonymous_when_empty():
    assert presence_name("  Ann   Lee ") == "Ann Lee"
    assert presence_name("") == presence_name("   ") == "Anonymous"
    long = presence_name("x" * 10_000)
    assert len(long) == PRESENCE_NAME_CHARS and long.endswith("…")

    async def main():
        hub = UiHub()
        watcher = page(hub, "u1", "")
        page(hub, "u1", "y" * 500)
        assert people(await settled(watcher)) == {"Anonymous": 1, "y" * (PRESENCE_NAME_CHARS - 1) + "…": 1}

    run(main)


def test_a_flood_of_renames_costs_one_message_a_round_and_the_list_is_bounded():
    async def main():
        hub = UiHub()
        watcher = page(hub, "u1", "Watcher")
        flooder = page(hub, "u1", "F")
        await presences(watcher)
        for n in range(10_000):
            flooder.be_here("u1", f"F{n}")
        assert hub.held <= 2  # the open round is not in the log yet; the log keeps one per key
        [latest] = await presences(watcher)
        assert people(latest["data"]) == {"F9999": 1, "Watcher": 1}
        crowd = [page(hub, "u1", f"P{n:03}") for n in range(PRESENCE_LIST + 30)]
        [latest] = await presences(watcher)
        assert len(latest["data"]["people"]) == PRESENCE_LIST and latest["data"]["total"] == len(crowd) + 2
        for subscription in crowd:
            subscription.close()
        assert (await settled(watcher))["total"] == 2

    run(main)


def test_an_ended_subscription_is_nowhere_and_stays_so():
    async def main():
        hub = UiHub()
        watcher = page(hub, "u1", "Watcher")
        gone = page(hub, "u1", "Gone")
        await presences(watcher)
        gone.end()  # e.g. it stalled: the hub ended it before its reader closed it
        gone.be_here("u1", "Gone")  # a request that raced the end changes nothing
        gone.close()
        assert hub.presence("u1") == {"people": [{"name": "Watcher", "count": 1}], "total": 1}

    run(main)


class Socket:
    """A live socket of a test, as a browser uses it: requests with their replies, presence deltas."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []  # presence deltas read on the way to a reply

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message``; its reply (the presence deltas before it are kept)."""
        await self.ws.send_message(json.dumps(message))
        while isinstance(answer := json.loads(await self.ws.get_message()), list):
            self.seen.extend(delta["data"] for delta in answer if delta["topic"] == "presence")
        return answer

    async def presence(self) -> dict[str, Any]:
        """The next presence delta."""
        while not self.seen:
            frame = json.loads(await self.ws.get_message())
            if isinstance(frame, list):
                self.seen.extend(delta["data"] for delta in frame if delta["topic"] == "presence")
        return self.seen.pop(0)


async def serving(aggregator: AggregatorProcess, nursery: trio.Nursery, shutdown: trio.Event) -> str:
    """Start ``aggregator`` on a free port; its live socket's URL."""
    bound = await nursery.start(lambda task_status: aggregator.run(shutdown=shutdown, task_status=task_status))
    return f"ws://127.0.0.1:{int(bound[0].rsplit(':', 1)[1])}/api/ws"


def test_the_live_socket_validates_presence_and_a_closed_socket_leaves(tmp_path):
    aggregator = AggregatorProcess(tmp_path / "data", port=0)

    async def main():
        shutdown = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                url = await serving(aggregator, nursery, shutdown)
                async with open_websocket_url(url) as ws:
                    ann = Socket(ws)
                    assert await ann.request({"subscribe": ["u1"], "here": "u1", "name": "Ann"}) == {"subscribed": ["u1"]}
                    assert await ann.presence() == {"people": [{"name": "Ann", "count": 1}], "total": 1}
                    refused = await ann.request({"here": 5})
                    assert refused["error"]["status"] == 422 and "here" in refused["error"]["message"]
                    async with open_websocket_url(url) as other:
                        await Socket(other).request({"subscribe": ["u1"], "here": "u1", "name": "Bob"})
                        assert people(await ann.presence()) == {"Ann": 1, "Bob": 1}
                    assert await ann.presence() == {"people": [{"name": "Ann", "count": 1}], "total": 1}
                shutdown.set()

    trio.run(main)


def test_with_sign_in_on_the_signed_in_name_is_shown_and_a_stranger_cannot_be_anywhere(tmp_path):
    with OidcProvider() as provider:
        aggregator = AggregatorProcess(tmp_path / "data", port=0,
                                       auth=AuthConfig(True, provider.issuer, provider.client_id, provider.tenant))

        async def main():
            shutdown = trio.Event()
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    url = await serving(aggregator, nursery, shutdown)
                    async with open_websocket_url(url) as ws:
                        stranger = Socket(ws)
                        refused = await stranger.request({"here": "u1", "name": "Mallory"})
                        assert refused["error"]["status"] == 401
                        # Signed in, the name sent is not the one shown: the token's is.
                        token = provider.mint(name="Ann Lee")
                        assert await stranger.request({"identity": token, "subscribe": ["u1"], "here": "u1",
                                                       "name": "Mallory"}) == {"subscribed": ["u1"]}
                        assert await stranger.presence() == {"people": [{"name": "Ann Lee", "count": 1}], "total": 1}
                    shutdown.set()

        trio.run(main)
