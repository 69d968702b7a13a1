"""Notifications: what the events people care about tell them, derived from committed records.

The rule (pectus.notifications.derive) through the projector as the aggregator runs it: a store
followed live, each topic from the records an engine writes, each fact told once; never during
the start-up replay; the delta reaches every browser that may see the unit (by its roles); and the whole way
from a real engine running a method to a listener of the aggregator (the Web Push hook).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from conftest import DEMO_UNIT, demo_aggregator, demo_unit, wait_for
from pectus.actors.aggregator import AggregatorProcess
from pectus.actors.ui_hub import UiHub
from pectus.events.domain import (Actor, DomainEvent, EngineConnected, EngineDisconnected, EngineRegistered, ErrorLogged, RunInterrupted, RunLogChanged, RunStarted, RunStopped,
                                  StateChanged)
from pectus.events.store import MemoryEventStore, NewEvent
from pectus.notifications import Notification, from_delta
from pectus.projections.views import Delta, Projector

T0 = 1_736_450_000.0  # 2025-01-09T19:13:20Z
UNIT = "host-7_DemoUod"
OTHER = "lab-2_DemoUod"
ENGINE = Actor.engine(UNIT)


def at(seconds: float) -> float:
    return T0 + seconds


def item(id: int, name: str, state: str = "started", *, cancellable: bool = False, **more: Any) -> dict[str, Any]:
    """A run-log item as an engine records it (start_values: the item is new)."""
    return {"id": id, "line": id, "name": name, "state": state, "progress": None, "time": at(id), "start": at(id),
            "end": None if state == "started" else at(id), "cancellable": cancellable, "forcible": cancellable,
            "cancelled": state == "cancelled", "forced": False, **more}


def logged(t: float, *items: dict[str, Any], run: str | None = "run-1") -> RunLogChanged:
    return RunLogChanged(time=at(t), unit=UNIT, run=run, actor=ENGINE, items=list(items))


def state(t: float, system: str, status: str, run: str | None = "run-1") -> StateChanged:
    return StateChanged(time=at(t), unit=UNIT, run=run, actor=ENGINE, system_state=system, method_status=status)


class Log:
    """A store with a live projector following it, as the aggregator runs them."""

    def __init__(self) -> None:
        self.store = MemoryEventStore()
        self.views = Projector("agg-host", "1.2.3")
        self.views.notifying = True

    def emit(self, *events: DomainEvent) -> list[Notification]:
        """The notifications the events make."""
        records = self.store.append([NewEvent(e.stream, e.type, e.time, e.to_data()) for e in events])
        return [from_delta(delta.data) for record in records for delta in self.views.apply(record)
                if delta.topic == "notification"]


@pytest.fixture
def log() -> Log:
    """A unit online, registered as host-7 (DemoUod), with run-1 started (its notice taken)."""
    log = Log()
    log.emit(EngineRegistered(time=at(0), unit=UNIT, actor=ENGINE, computer_name="host-7", uod_name="DemoUod",
                              engine_version="0.1.0", protocol=2),
             EngineConnected(time=at(0), unit=UNIT),
             RunStarted(time=at(1), unit=UNIT, run="run-1", actor=ENGINE), state(1, "Running", "OK"))
    return log


def test_a_run_start_and_stop_are_told_once_with_the_unit_and_the_run():
    log = Log()
    log.emit(EngineRegistered(time=at(0), unit=UNIT, actor=ENGINE, computer_name="host-7", uod_name="DemoUod",
                              engine_version="0.1.0", protocol=2))
    started = log.emit(RunStarted(time=at(1), unit=UNIT, run="run-1", actor=ENGINE))
    position = log.store.last_position()
    assert started == [Notification(unit=UNIT, topic="run_started", title="host-7 (DemoUod): run started",
                                    body="", time="2025-01-09T19:13:21.000Z", position=position,
                                    run_id="run-1")]
    assert log.emit(RunStarted(time=at(1), unit=UNIT, run="run-1", actor=ENGINE)) == []  # a duplicate start
    [stopped] = log.emit(RunStopped(time=at(9), unit=UNIT, run="run-1", actor=ENGINE))
    assert (stopped.topic, stopped.title, stopped.run_id) == ("run_stopped", "host-7 (DemoUod): run stopped", "run-1")
    assert log.emit(RunStopped(time=at(9), unit=UNIT, run="run-1", actor=ENGINE)) == []  # a late repeat


def test_a_run_that_ends_without_a_stop_is_told_with_the_reason(log: Log):
    [ended] = log.emit(RunInterrupted(time=at(5), unit=UNIT, run="run-1", reason="the engine restarted without it"))
    assert ended.topic == "run_stopped" and ended.title == "host-7 (DemoUod): run ended"
    assert "the engine restarted without it" in ended.body


def test_a_unit_not_registered_yet_is_named_by_its_id():
    log = Log()
    [started] = log.emit(RunStarted(time=at(1), unit=OTHER, run="other-run", actor=Actor.engine(OTHER)))
    assert started.title == f"{OTHER}: run started"


def test_notify_is_told_with_its_text_once(log: Log):
    [told] = log.emit(logged(2, item(7, "Notify: Sample the fraction", "completed", start_values={})))
    assert (told.topic, told.title, told.body, told.run_id) == (
        "notify", "host-7 (DemoUod): notification", "Sample the fraction", "run-1")
    assert log.emit(logged(3, item(7, "Notify: Sample the fraction", "completed"))) == []  # the same item again
    [bare] = log.emit(logged(4, item(8, "Notify", "completed", start_values={})))
    assert bare.body == ""


def test_a_block_is_told_when_it_starts_not_when_it_ends(log: Log):
    [told] = log.emit(logged(2, item(3, "Block: Equilibrate", start_values={})))
    assert (told.topic, told.title, told.body) == ("block_started", "host-7 (DemoUod): block started", "Equilibrate")
    assert log.emit(logged(9, item(3, "Block: Equilibrate", "completed", end_values={}))) == []


def test_a_watch_is_told_when_it_fires_not_when_it_is_armed_ends_or_is_cancelled(log: Log):
    watch = "Watch: FT01 < 10 L/h"
    assert log.emit(logged(2, item(4, watch, cancellable=True, start_values={}))) == []  # armed
    [fired] = log.emit(logged(3, item(4, watch)))  # no longer cancellable: its body runs
    assert (fired.topic, fired.title, fired.body) == ("watch_fired", "host-7 (DemoUod): watch fired", watch)
    assert log.emit(logged(4, item(4, watch, "completed"))) == []
    # Armed then cancelled: it never fired.
    log.emit(logged(5, item(5, watch, cancellable=True, start_values={})))
    assert log.emit(logged(6, item(5, watch, "cancelled"))) == []
    # Reached and fired in one record, or fired and done in one: still told once.
    assert [n.topic for n in log.emit(logged(7, item(6, watch, start_values={})))] == ["watch_fired"]
    log.emit(logged(8, item(9, "Alarm: FT01 > 20 L/h", cancellable=True, start_values={})))
    [alarm] = log.emit(logged(9, item(9, "Alarm: FT01 > 20 L/h", "completed")))
    assert alarm.title == "host-7 (DemoUod): alarm fired"


def test_one_record_tells_each_item_in_order(log: Log):
    told = log.emit(logged(2, item(3, "Block: Load", start_values={}), item(4, "Mark: A", "completed"),
                           item(5, "Notify: Loaded", "completed", start_values={})))
    assert [(n.topic, n.body) for n in told] == [("block_started", "Load"), ("notify", "Loaded")]
    assert len({n.position for n in told}) == 1  # one record: they share its position


def test_a_pause_on_error_is_told_with_the_error_once(log: Log):
    log.emit(ErrorLogged(time=at(4), unit=UNIT, run="run-1", actor=ENGINE, severity="error",
                         message="line 6: Invalid instruction 'Nonsense'"))
    [paused] = log.emit(state(4, "Paused", "Error"))
    assert (paused.topic, paused.title, paused.body) == (
        "paused_on_error", "host-7 (DemoUod): paused on error", "line 6: Invalid instruction 'Nonsense'")
    assert log.emit(state(5, "Running", "Error")) == []  # still the same error
    assert log.emit(state(6, "Running", "OK")) == []
    # A pause without an error is no error.
    assert log.emit(state(7, "Paused", "OK")) == []


def test_a_lost_connection_is_told_with_the_reason(log: Log):
    [lost] = log.emit(EngineDisconnected(time=at(5), unit=UNIT, reason="the engine closed the connection"))
    assert (lost.topic, lost.title) == ("connection_lost", "host-7 (DemoUod): lost its connection")
    assert "the engine closed the connection" in lost.body


def test_nothing_else_is_told(log: Log):
    assert log.emit(logged(2, item(3, "Mark: A", "completed", start_values={}), item(4, "PU01: 50 %", "completed")),
                    state(3, "Paused", "OK"), state(4, "Running", "OK"),
                    ErrorLogged(time=at(5), unit=UNIT, run="run-1", actor=ENGINE, severity="warning", message="w"),
                    EngineConnected(time=at(6), unit=UNIT)) == []


def test_the_projector_tells_nothing_until_it_is_live():
    log = Log()
    log.views.notifying = False
    assert log.emit(RunStarted(time=at(1), unit=UNIT, run="run-1", actor=ENGINE)) == []


def test_after_a_replay_only_what_comes_next_is_told_and_the_views_are_the_live_ones(log: Log):
    log.emit(logged(2, item(3, "Block: Load", start_values={})), state(3, "Paused", "Error"))
    rebuilt = Log()
    rebuilt.views.replay(log.store.iter())  # (while notifying: a replay rebuilds, it does not tell)
    assert rebuilt.views.snapshot() == log.views.snapshot()  # telling changes no view
    rebuilt.store = log.store
    assert [n.body for n in rebuilt.emit(logged(4, item(4, "Notify: next", "completed", start_values={})))] == ["next"]


def test_a_notification_goes_to_every_browser_that_may_see_its_unit_following_it_or_not(log: Log):
    hub = UiHub()
    event = logged(2, item(3, "Notify: Sample the fraction", "completed", start_values={}))
    [record] = log.store.append([NewEvent(event.stream, event.type, event.time, event.to_data())])
    [mine] = [delta for delta in log.views.apply(record) if delta.topic == "notification"]
    assert mine.data["required_roles"] == []  # the unit's roles: its UOD requires none
    deltas = [mine, Delta(OTHER, "notification", {**mine.data, "unit": OTHER, "body": "other",
                                                  "required_roles": ["Operator"]})]

    async def main() -> dict[str, list[str]]:
        operator, following_values, dashboard = hub.subscribe(), hub.subscribe(), hub.subscribe()
        following_values.follow([UNIT])
        operator.sign_in(_Holding({"Operator"}))
        following_values.sign_in(_Holding(set()))
        dashboard.sign_in(_Holding(set()))
        hub.publish(deltas)  # one round: each subscription takes what it may see of it at once
        return {"operator": await operator.take(), "following": await following_values.take(),
                "dashboard": await dashboard.take()}

    frames = trio.run(main)

    def bodies(name: str) -> list[list[str]]:
        return [[d["data"]["body"] for d in msgspec.json.decode(f)] for f in frames[name]]
    assert bodies("operator") == [["Sample the fraction", "other"]]
    assert bodies("following") == bodies("dashboard") == [["Sample the fraction"]]  # not the Operator's unit
    assert from_delta(deltas[1].data).unit == OTHER  # the roles stay out of what listeners get


class _Holding:
    def __init__(self, roles: set[str]) -> None:
        self.roles = roles

    def missing_roles(self, required):
        return [] if not required or self.roles & set(required) else sorted(required)


METHOD = """\
Base: s
Watch: Run Time > 0.6 s
    Mark: Watched
Block: Load
    Notify: Sample the fraction
    End block
Wait: 1 s
Nonsense: 1
"""


def test_a_real_engines_run_reaches_a_listener_of_the_aggregator_live_only(tmp_path: Path):
    """The demo engine runs a method with a Watch, a Block, a Notify and a bad line; a listener on
    the aggregator's projector (as Web Push registers) hears each fact once, in store order, and
    nothing of what the store held before the aggregator started."""
    unit = DEMO_UNIT
    earlier = demo_aggregator(tmp_path)
    earlier.store.append([RunStarted(time=1.0, unit=unit, run="an-old-run").stored(),
                          RunStopped(time=1.5, unit=unit, run="an-old-run").stored(),
                          EngineDisconnected(time=2.0, unit=unit, reason="long ago").stored()])
    earlier.store.close()
    aggregator = AggregatorProcess(tmp_path / "data", port=0, hostname="aggregator-host")
    heard: list[Notification] = []
    aggregator.projector.listeners.append(heard.append)
    aggregator.projector.listeners.insert(0, _broken_listener)  # its fault stops nobody

    async def main() -> None:
        async with demo_unit(tmp_path, aggregator) as demo:
            backend = aggregator.backend
            ann = Actor.user("u-ann", "Ann")
            lines = [{"id": str(i), "text": text} for i, text in enumerate(METHOD.splitlines(), 1)]
            version = aggregator.views.method(unit)["version"]
            assert (await backend.request(unit, "save_method", {"lines": lines, "version": version}, ann)).accepted
            assert (await backend.request(unit, "control", {"command": "Start"}, ann)).accepted
            await wait_for(lambda: any(n.topic == "paused_on_error" for n in heard), timeout=20)
            assert (await backend.request(unit, "control", {"command": "Stop"}, ann)).accepted
            await wait_for(lambda: any(n.topic == "run_stopped" for n in heard), timeout=20)
            await demo.engine.stop()
            await wait_for(lambda: any(n.topic == "connection_lost" for n in heard), timeout=20)

    trio.run(main)
    assert [n.topic for n in heard] == ["run_started", "block_started", "notify", "watch_fired", "paused_on_error",
                                        "run_stopped", "connection_lost"]
    assert [n.position for n in heard] == sorted(n.position for n in heard)
    assert all(n.unit == unit and n.title.startswith("testhost (DemoUod): ") for n in heard)
    by_topic = {n.topic: n for n in heard}
    assert by_topic["notify"].body == "Sample the fraction"
    assert by_topic["block_started"].body == "Load"
    assert by_topic["watch_fired"].body == "Watch: Run Time > 0.6 s"
    assert "Nonsense" in by_topic["paused_on_error"].body
    run_id = by_topic["run_started"].run_id
    assert run_id and run_id != "an-old-run" and by_topic["run_stopped"].run_id == run_id


def _broken_listener(notification: Notification) -> None:
    raise RuntimeError("a listener that fails")
