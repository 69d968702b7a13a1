"""UiHub: one encoding per change, rounds paced for every browser, per-subscriber filters,
coalescing of a lagging subscriber, a bounded log, and the close at shutdown.

The picture a browser keeps is modelled by :class:`Picture`, which merges deltas as the pages
do (pectus/web/static: whole views replace, values by tag keeping the newest time, logs by
item id within a run, a new run starting its log afresh). Coalescing is right when a subscriber
that reads late ends up with the same picture as one that read every round. Time is Trio's
MockClock: the pace and the stall rule are checked to the tick without waiting for them; the
last test closes a real aggregator under a real browser socket.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from pectus.actors.aggregator import AggregatorProcess
from pectus.actors.ui_hub import CLOSE_GRACE, FANOUT_SHARE, PACE, RECENT, SPAN, STALL, Subscription, UiHub
from pectus.projections.views import Delta
from pectus.web.auth import Identity
from pectus.events.domain import Actor

UNITS = [f"unit-{n}" for n in range(20)]
TAGS = [f"T{n}" for n in range(10)]
OPERATOR = Identity(Actor.user("oid-op", "Operator"), frozenset({"Operator"}))
NOBODY = Identity(Actor.user("oid-nobody", "Nobody"))


def run(test, *args: Any) -> Any:
    return trio.run(test, *args, clock=trio.testing.MockClock(autojump_threshold=0))


async def received(subscription: Subscription) -> list[dict[str, Any]]:
    """What waits for ``subscription``, as the browser parses it: each frame an array of deltas
    or a reply; checks that replies stand alone and deltas come in non-empty arrays."""
    messages: list[dict[str, Any]] = []
    for frame in map(json.loads, await subscription.take()):
        assert frame and isinstance(frame, list | dict), frame
        messages += frame if isinstance(frame, list) else [frame]
    return messages


async def nothing_for(subscription: Subscription) -> bool:
    """Whether ``subscription`` gets nothing for a while (far longer than a round)."""
    with trio.move_on_after(STALL / 2):
        await subscription.take()
        return False
    return True


def follower(hub: UiHub, units: list[str], viewer: Identity = OPERATOR) -> Subscription:
    subscription = hub.subscribe()
    subscription.sign_in(viewer)
    subscription.follow(units)
    return subscription


class Picture:
    """What a browser shows after merging the deltas it received, as the pages merge them."""

    def __init__(self) -> None:
        self.views: dict[tuple, Any] = {}
        self.values: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str], tuple[str | None, dict[Any, dict]]] = {}

    def apply(self, message: dict[str, Any]) -> None:
        unit, topic, data = message["unit"], message["topic"], message["data"]
        if topic == "runs":
            self.views[(topic, data["run_id"])] = data
        elif topic in ("units", "control_state", "method"):
            self.views[(unit, topic)] = data
        elif topic == "values":
            changes = data if isinstance(data, list) else [{"name": tag, **value} for tag, value in data.items()]
            for change in changes:
                known = self.values.get((unit, change["name"]))
                if known is None or change["time"] >= known["time"]:  # an older value is skipped
                    self.values[(unit, change["name"])] = change
        else:
            run_id, items = self.logs.get((unit, topic), (None, {}))
            if data["run"] != run_id:
                run_id, items = data["run"], {}  # a new run: its log starts afresh
            for item in data["changed"]:
                items[item["id"]] = {**items.get(item["id"], {}), **item}
            self.logs[(unit, topic)] = (run_id, items)

    def state(self) -> tuple:
        return self.views, {key: (value["value"], value["time"]) for key, value in self.values.items()}, self.logs


def busy_deltas(count: int, seed: int = 7) -> list[Delta]:
    """``count`` changes of every topic on 20 units, as a busy aggregator publishes them; a new
    run starts on each unit half way through."""
    chance = random.Random(seed)
    deltas = []
    for n in range(count):
        unit = chance.choice(UNITS)
        run_id = f"{unit}-run-{1 if n < count // 2 else 2}"
        topic = chance.choice(["values", "samples", "run_log", "error_log", "units", "control_state", "method",
                               "runs"])
        tags = chance.sample(TAGS, 3)
        if topic == "values":
            data: Any = [{"name": tag, "value": n, "unit": "s", "time": float(n), "simulated": False} for tag in tags]
        elif topic == "samples":
            topic, data = "values", {tag: {"value": -n, "time": n - 0.5} for tag in tags}
        elif topic in ("run_log", "error_log"):
            data = {"run": run_id, "changed": [{"id": chance.randrange(30), "state": f"s{n}"}] if n % 3 else
                    [{"id": chance.randrange(30), "progress": n / count}]}
        elif topic == "runs":
            data = {"run_id": run_id, "seen": n, "required_roles": []}
        else:
            data = {"id": unit, "seen": n, "required_roles": ["Operator"]} if topic == "units" else {"seen": n}
        deltas.append(Delta(unit if topic != "runs" else None, topic, data))
    return deltas


def test_a_subscriber_that_lags_gets_what_it_missed_merged_into_the_latest_of_every_key():
    async def main():
        hub = UiHub()
        eager, lagging = follower(hub, UNITS), follower(hub, UNITS)
        eager_picture, lagging_picture = Picture(), Picture()
        deltas = busy_deltas(10_000)
        rounds = 80  # 20 s: the lagging one is far behind (its rounds merged into spans), not stalled
        for n in range(rounds):
            hub.publish(deltas[n * len(deltas) // rounds:(n + 1) * len(deltas) // rounds])
            for message in await received(eager):  # each round once sealed: the first at once, then PACE apart
                eager_picture.apply(message)
        assert trio.current_time() == (rounds - 1) * PACE
        (frame,) = await lagging.take()  # all it missed, in one frame
        messages = json.loads(frame)
        # per unit: 3 views, values (live, samples), 2 logs x 2 runs; per run: its summary
        assert len(messages) <= len(UNITS) * (3 + 2 + 2 * 2) + len(UNITS) * 2
        for message in messages:
            lagging_picture.apply(message)
        assert lagging_picture.state() == eager_picture.state()
        assert lagging_picture.views and lagging_picture.values and lagging_picture.logs  # all topics seen

    run(main)


class Counted:
    """A value that counts its encodings: orjson refuses it, the fallback writes it with str()."""

    def __init__(self, text: str) -> None:
        self.text, self.count = text, 0

    def __str__(self) -> str:
        self.count += 1
        return self.text


def test_a_change_is_encoded_once_however_many_subscribers_take_it():
    async def main():
        hub = UiHub()
        subscriptions = [follower(hub, ["a"]) for _ in range(1000)]
        encodings = Counted("Ann")
        hub.publish([Delta("a", "method", {"version": 2, "author": encodings})])
        for subscription in subscriptions:
            assert await received(subscription) == [
                {"unit": "a", "topic": "method", "data": {"version": 2, "author": "Ann"}}]
        assert encodings.count == 1

    run(main)


def test_a_subscriber_gets_a_lone_change_at_once_and_a_frame_a_round_however_fast_its_units_change():
    async def main():
        hub = UiHub()
        reader = follower(hub, ["a"])
        frames: list[tuple[float, list[dict]]] = []
        async with trio.open_nursery() as nursery:
            async def read():
                async for taken in reader:
                    frames.extend((trio.current_time(), json.loads(frame)) for frame in taken)
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()  # the reader waits for the first change
            for n in range(1000):  # a change every millisecond for a second
                hub.publish([Delta("a", "values", [{"name": f"T{n % 10}", "value": n, "time": trio.current_time()}])])
                await trio.sleep(0.001)
            with trio.fail_after(10 * PACE):
                while not frames or frames[-1][1][0]["data"][-1]["value"] != 999:
                    await trio.sleep(PACE)
            reader.close()
        assert len(frames) <= 1 / PACE + 2
        assert frames[0] == (0.0, [{"unit": "a", "topic": "values", "data": [{"name": "T0", "value": 0, "time": 0.0}]}])
        for (received_at, deltas), next_at in zip(frames, [at for at, _ in frames[1:]] + [math.inf]):
            assert next_at - received_at >= PACE  # paced
            (delta,) = deltas  # the round's values merged by tag
            assert len(delta["data"]) == 10 or received_at == 0  # all ten tags, after the first change's round
            assert received_at - max(value["time"] for value in delta["data"]) <= PACE  # within a round

    run(main)


def test_the_changes_of_a_unit_someone_waits_for_go_out_at_once_for_a_while_then_paced_again():
    """hurry(unit): a person's request to the unit was applied; what it does must not wait for
    the round's pace (a unit that changes all the time keeps the rounds busy)."""
    async def main():
        hub = UiHub()
        reader = follower(hub, ["a", "b"])
        arrivals: dict[tuple[str, int], float] = {}  # (unit, change) -> when the reader got it
        async with trio.open_nursery() as nursery:
            async def read():
                async for taken in reader:
                    for frame in taken:
                        for delta in json.loads(frame):
                            arrivals.setdefault((delta["unit"], delta["data"][0]["value"]), trio.current_time())
            nursery.start_soon(read)
            for n in range(300):  # both units change every 10 ms for 3 s; someone asks "a" at 1 s
                if n == 100:
                    hub.hurry("a")
                for unit in ("a", "b"):
                    hub.publish([Delta(unit, "values", [{"name": "T0", "value": n, "time": trio.current_time()}])])
                await trio.sleep(0.01)
            await trio.sleep(2 * PACE)
            reader.close()
        paced = [n for n in range(100) if ("a", n) in arrivals]
        assert len(paced) <= 1 / PACE + 2  # before: merged into a few rounds a second
        hurried = [arrivals[("a", n)] - n * 0.01 for n in range(100, 200) if ("a", n) in arrivals]
        assert len(hurried) == 100 and max(hurried) < 0.001  # the hurried second: every change, at once
        again = [n for n in range(230, 300) if ("a", n) in arrivals]
        assert len(again) <= 0.7 / PACE + 2  # after it: paced again

    run(main)


def test_rounds_grow_longer_when_the_fan_out_takes_more_than_its_share_of_the_loop():
    async def main():
        hub = UiHub()
        subscription = follower(hub, ["a"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.next_round, subscription)  # its sender waits for the next round
            await trio.testing.wait_all_tasks_blocked()
            hub.publish([Delta("a", "method", {"version": 1})])  # sealed at once, wakes it
        slow = 3 * PACE
        await trio.sleep(slow)  # a busy loop: the woken sender gets to take the round this late
        await received(subscription)
        hub.publish([Delta("a", "method", {"version": 2})])
        assert await received(subscription) == [{"unit": "a", "topic": "method", "data": {"version": 2}}]
        assert trio.current_time() == pytest.approx(slow / FANOUT_SHARE)  # not PACE after the last round

        hub.publish([Delta("a", "method", {"version": 3})])  # that fan-out was quick: PACE again
        await received(subscription)
        assert trio.current_time() == pytest.approx(slow / FANOUT_SHARE + PACE)

    run(main)


def test_a_round_is_sealed_when_due_though_the_sender_keeping_the_time_leaves():
    async def main():
        hub = UiHub()
        subscriptions = [follower(hub, ["a"]), follower(hub, ["a"])]
        received_at: list[float] = []
        async with trio.open_nursery() as nursery:
            async def read(subscription: Subscription) -> None:
                async for _ in subscription:
                    received_at.append(trio.current_time())
            for subscription in subscriptions:
                nursery.start_soon(read, subscription)
            await trio.testing.wait_all_tasks_blocked()
            hub.publish([Delta("a", "method", {"version": 1})])  # sealed at once
            hub.publish([Delta("a", "method", {"version": 2})])  # due PACE later
            await trio.testing.wait_all_tasks_blocked()
            (staying,) = [subscription for subscription in subscriptions if subscription is not hub._timekeeper]
            hub._timekeeper.close()  # the browser of the sender waiting for the round to be due leaves
            with trio.fail_after(10 * PACE):
                while len(received_at) < 3:
                    await trio.sleep(PACE / 10)
            staying.close()
        assert received_at == [0.0, 0.0, pytest.approx(PACE)]

    run(main)


def test_each_subscriber_gets_the_units_it_follows_and_the_global_changes_its_roles_allow():
    async def main():
        hub = UiHub()
        operator, nobody, anonymous = follower(hub, ["a"]), follower(hub, ["b"], NOBODY), hub.subscribe()
        hub.publish([
            Delta("a", "method", {"version": 1}),
            Delta("b", "method", {"version": 2}),
            Delta(None, "runs", {"run_id": "r-open", "required_roles": []}),
            Delta(None, "runs", {"run_id": "r-ops", "required_roles": ["Operator", "Admin"]}),
        ])
        topics = lambda messages: [(m["unit"], m["topic"], m["data"].get("run_id")) for m in messages]
        assert topics(await received(operator)) == [("a", "method", None), (None, "runs", "r-open"),
                                                 (None, "runs", "r-ops")]
        assert topics(await received(nobody)) == [("b", "method", None), (None, "runs", "r-open")]
        assert await nothing_for(anonymous)  # not signed in: nothing at all

        # A unit that comes to require a role its follower lacks is no longer followed.
        hub.publish([Delta("b", "units", {"id": "b", "required_roles": ["Admin"]}), Delta("b", "method", {})])
        assert await nothing_for(nobody) and nobody.units == set()

    run(main)


def test_the_changes_of_a_unit_nobody_follows_are_not_kept():
    async def main():
        hub = UiHub()
        subscription = follower(hub, ["a"])
        hub.publish([Delta("b", "method", {"version": 1}), Delta("b", "values", [{"name": "T", "value": 1, "time": 0}])])
        assert await nothing_for(subscription) and hub.held == 0
        subscription.follow(["b"])  # from now on
        hub.publish([Delta("b", "method", {"version": 2})])
        assert await received(subscription) == [{"unit": "b", "topic": "method", "data": {"version": 2}}]
        assert hub.held == 1
        subscription.close()
        hub.publish([Delta("b", "method", {"version": 3}), Delta(None, "runs", {"run_id": "r", "required_roles": []})])
        assert hub.last_round() == hub.head  # no subscription at all: nothing is kept, no round opens

    run(main)


def test_a_new_viewer_or_an_unfollow_drops_what_was_not_taken_and_a_reply_comes_after_the_changes_before_it():
    async def main():
        hub = UiHub()
        subscription = follower(hub, ["a", "b"])
        hub.publish([Delta("a", "method", {"version": 1}), Delta("b", "method", {"version": 1}),
                     Delta(None, "runs", {"run_id": "r-ops", "required_roles": ["Operator"]}),
                     Delta(None, "runs", {"run_id": "r-open", "required_roles": []})])
        hub.publish([Delta("b", "control_state", {"running": True})])  # the next round: sealed PACE later
        subscription.unfollow(["a"])
        subscription.sign_in(NOBODY)
        await subscription.reply({"subscribed": ["b"]})
        hub.publish([Delta("a", "method", {"version": 2}), Delta("b", "method", {"version": 2})])
        assert await received(subscription) == [  # the first round, sealed at once
            {"unit": "b", "topic": "method", "data": {"version": 1}},
            {"unit": None, "topic": "runs", "data": {"run_id": "r-open", "required_roles": []}}]
        frames = [json.loads(frame) for frame in await subscription.take()]
        assert frames == [[{"unit": "b", "topic": "control_state", "data": {"running": True}},
                           {"unit": "b", "topic": "method", "data": {"version": 2}}],  # of the reply's round
                          {"subscribed": ["b"]}]
        assert trio.current_time() == PACE  # the reply went with the round it follows, sealed when due

        await subscription.reply({"subscribed": ["b"]})  # nothing published since: it goes at once
        assert await received(subscription) == [{"subscribed": ["b"]}]
        assert trio.current_time() == PACE

    run(main)


def test_only_a_subscriber_that_takes_nothing_for_the_stall_time_is_closed():
    async def main():
        hub = UiHub()
        reading, stuck = follower(hub, ["a"]), follower(hub, ["a"])
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            async def read():
                async for _ in reading:
                    pass
            nursery.start_soon(read)
            while not stuck.closed.is_set():
                hub.publish([Delta("a", "values", [{"name": "T", "value": trio.current_time(), "time": 0.0}])])
                await trio.sleep(1)
            assert stuck.stalled and await stuck.take() == []
            assert STALL < trio.current_time() - began <= STALL + 2
            assert not reading.closed.is_set() and hub.subscribers == 1
            reading.close()

    run(main)


def test_the_log_holds_a_bounded_number_of_messages_however_long_the_units_run():
    async def main():
        hub = UiHub()
        reader = follower(hub, UNITS)
        deltas = busy_deltas(20_000)
        held = []
        rounds = int(4 * STALL / PACE)
        for n in range(rounds):
            hub.publish(deltas[n * len(deltas) // rounds:(n + 1) * len(deltas) // rounds])
            await reader.take()
            held.append(hub.held)
        keys = len(UNITS) * (3 + 2 + 2 * 2) + len(UNITS) * 2
        spans = RECENT + 1 + math.ceil(STALL / PACE / SPAN) + 1
        assert max(held) <= keys * spans < len(deltas)  # not all that was published: one per key and span

    run(main)


def test_close_ends_every_subscription_and_waits_for_their_readers_to_let_go():
    async def main():
        for forgotten in (False, True):
            hub = UiHub()
            subscriptions = [follower(hub, ["a"]) for _ in range(3)]
            async with trio.open_nursery() as nursery:
                async def read(subscription: Subscription) -> None:
                    async for _ in subscription:
                        pass
                    await trio.sleep(1)  # the browser is told, then the reader lets go
                    subscription.close()
                for subscription in subscriptions[forgotten:]:
                    nursery.start_soon(read, subscription)
                began = trio.current_time()
                await hub.close()
                assert trio.current_time() - began == (CLOSE_GRACE if forgotten else 1)
                assert all(s.closed.is_set() and not s.stalled for s in subscriptions) and hub.subscribers == 0

    run(main)


def test_a_live_socket_is_closed_with_1001_when_the_aggregator_shuts_down(tmp_path):
    aggregator = AggregatorProcess(tmp_path / "data", port=0)

    async def main():
        shutdown = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(lambda task_status: aggregator.run(shutdown=shutdown,
                                                                               task_status=task_status))
                port = int(bound[0].rsplit(":", 1)[1])
                async with open_websocket_url(f"ws://127.0.0.1:{port}/api/ws") as ws:
                    await ws.send_message(json.dumps({"subscribe": []}))
                    assert json.loads(await ws.get_message()) == {"subscribed": []}
                    shutdown.set()
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
                    assert closed.value.reason.code == 1001

    trio.run(main)
