"""Checkpoints of the views: loading one and folding the log after it equals a replay from zero.

Logs are written as the aggregator writes them (domain events through a real store): units
register, describe themselves, start, stop and lose runs; samples, run-log changes, line states,
method revisions and errors come in, also late for finished runs; users' requests are stored
before their answers; engines are enrolled and revoked, browsers subscribe to pushes; some stored
events cannot be folded. Hypothesis draws such logs and where the checkpoint falls in them.

The checkpoint store suite runs on SQLite and on a real PostgreSQL server (tests/postgres.py);
the aggregator restarted on a store with a checkpoint serves what one replaying from zero serves.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import msgspec
import psycopg
import pytest
import trio
from conftest import wait_for
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from trio_websocket import open_websocket_url

from pectus.actors.aggregator import STORE_FILE, AggregatorProcess
from pectus.cli.aggregator import main
from pectus.events import domain as d
from pectus.events import protocol as p
from pectus.events.store import MemoryEventStore, NewEvent, SQLiteEventStore, open_store
from pectus.projections import checkpoint
from pectus.projections.checkpoint import (
    CHECKPOINTS_TABLE,
    LIVE,
    Checkpoints,
    CheckpointsUnavailable,
    Memory,
    MemoryCheckpointStore,
    Part,
    PostgreSQLCheckpointStore,
    code_version,
    open_checkpoints,
    run_part,
)
from pectus.projections.views import MethodState, Projector, RunView

T0 = 1_800_000_000.0
UNITS = ["lab-1_Demo", "lab-2_Demo"]
ANN = d.Actor.user("u-ann", "Ann")
TAGS = [{"name": "FT01", "unit": "L/h", "direction": "Input"}, {"name": "PU01", "unit": "%", "direction": "Output"},
        {"name": "Block", "unit": None, "direction": "NA"}]
PLOTS = [{"sub_plots": [{"ratio": 1, "axes": [{"label": "Flow", "process_value_names": ["FT01"], "y_max": 20,
                                               "y_min": 0, "color": "#1F77B4"}]}]},
         {"color_regions": [{"process_value_name": "Block", "value_color_map": {"Load": "#66ff6633"}}]}]


# -- logs as the aggregator writes them -------------------------------------------------------

KINDS = ["register", "describe", "connect", "disconnect", "start", "stop", "interrupt", "state", "samples",
         "late", "runlog", "lines", "method", "error", "request", "answer", "old_request", "refused", "enrol",
         "revoke", "push", "unpush", "garbage"]
STEPS = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, len(UNITS) - 1), st.integers(0, 11)),
                 max_size=70)


class Story:
    """Turns drawn steps into the events an aggregator would store, keeping track of the runs."""

    def __init__(self) -> None:
        self.time = T0
        self.runs = 0  # run ids are numbered over all units
        self.active: dict[str, str | None] = dict.fromkeys(UNITS)
        self.ended: dict[str, list[str]] = {unit: [] for unit in UNITS}
        self.asked: list[tuple[str, str]] = []  # (unit, request id) not answered yet
        self.seq = dict.fromkeys(UNITS, 0)
        self.version = dict.fromkeys(UNITS, 0)

    def events(self, steps: list[tuple[str, int, int]]) -> list[NewEvent]:
        stored = []
        for kind, u, k in steps:
            self.time += 1.0
            made = self._event(kind, UNITS[u], k)
            if made is not None:
                stored.append(made if isinstance(made, NewEvent) else made.stored())
        return stored

    def _engine(self, unit: str, k: int) -> dict[str, Any]:
        """What an engine's record carries: its actor, its outbox and the record's number there."""
        self.seq[unit] += 1
        return {"time": self.time, "unit": unit, "actor": d.Actor.engine(unit), "seq": self.seq[unit],
                "outbox": f"outbox-{k % 2}"}

    def _target(self, unit: str, k: int) -> str | None:
        """The active run, no run, or (a late event) a finished one."""
        choice = k % 3
        if choice == 2 and self.ended[unit]:
            return self.ended[unit][k % len(self.ended[unit])]
        return self.active[unit] if choice == 0 else None

    def _event(self, kind: str, unit: str, k: int) -> d.DomainEvent | NewEvent | None:
        t = self.time
        if kind == "register":
            return d.EngineRegistered(**self._engine(unit, k), computer_name=unit.split("_")[0], uod_name="Demo",
                                      engine_version=f"0.{k % 2}", protocol=1)
        if kind == "describe":
            return d.UodDescribed(**self._engine(unit, k), uod_name="Demo", uod_author_name="Ada",
                                  uod_author_email="ada@example.com", uod_filename="demo.py", location="Lab",
                                  hardware="Simulated", tags=TAGS[:2 + k % 2],
                                  readings=[{"kind": "reading", "tag_name": "PU01"}], commands=[],
                                  plot_configuration=PLOTS[k % 2], data_log_interval_seconds=1.0 + k % 2,
                                  required_roles=["operator"] if k % 4 == 3 else [])
        if kind == "connect":
            return d.EngineConnected(time=t, unit=unit)
        if kind == "disconnect":
            return d.EngineDisconnected(time=t, unit=unit, reason="the network went away")
        if kind == "start":
            run = f"run-{self.runs}"
            self.runs += 1
            if self.active[unit] is not None:  # the projector interrupts it
                self.ended[unit].append(self.active[unit])
            self.active[unit] = run
            return d.RunStarted(**self._engine(unit, k), run=run)
        if kind in ("stop", "interrupt"):
            run = self.active[unit] or (self.ended[unit][-1] if self.ended[unit] else None)
            if run is None:
                return None
            if run == self.active[unit]:
                self.ended[unit].append(run)
                self.active[unit] = None
            if kind == "stop":
                return d.RunStopped(**self._engine(unit, k), run=run)
            return d.RunInterrupted(time=t, unit=unit, run=run, reason="the engine came back without it")
        if kind == "state":
            return d.StateChanged(**self._engine(unit, k), run=self.active[unit],
                                  system_state=["Running", "Paused", "Holding", "Stopped"][k % 4],
                                  method_status=["OK", "Error"][k // 4 % 2])
        if kind == "samples" or kind == "late" and k % 4 == 0:
            run = self._target(unit, k) if kind == "samples" else self._late(unit, k)
            return d.TagSamples(**self._engine(unit, k), run=run, samples=[
                {"time": t - 0.5, "values": {"FT01": k / 3, "Block": ["Load", "Wash"][k % 2]}},
                {"time": t, "values": {"PU01": k, f"Extra{k % 2}": float(k)}}])
        if kind == "runlog" or kind == "late" and k % 4 == 1:
            run = self._target(unit, k) if kind == "runlog" else self._late(unit, k)
            item = {"id": k % 3, "line": k % 3, "name": f"Step {k % 3}", "state": ["started", "completed"][k % 2],
                    "progress": None, "time": t, "start": t, "end": None, "cancellable": True,
                    "forcible": False, "cancelled": False, "forced": False}
            return d.RunLogChanged(**self._engine(unit, k), run=run, items=[item],
                                   progress=[{"id": (k + 1) % 3, "progress": k / 11, "time": t}])
        if kind == "lines":
            return d.LinesChanged(**self._engine(unit, k), run=self._target(unit, k), version=self.version[unit],
                                  states={str(k % 3): ["started", "executed"][k % 2]})
        if kind == "method" or kind == "late" and k % 4 == 2:
            run = self._target(unit, k) if kind == "method" else self._late(unit, k)
            self.version[unit] += 1
            author = {"actor": ANN} if k % 2 else {}
            return d.MethodRevised(**{**self._engine(unit, k), **author}, run=run, version=self.version[unit],
                                   lines=[{"id": str(i), "text": f"Mark: {i}"} for i in range(k % 4)],
                                   base_version=self.version[unit] - 1)
        if kind == "error" or kind == "late":
            run = self._target(unit, k) if kind == "error" else self._late(unit, k)
            return d.ErrorLogged(**self._engine(unit, k), run=run, severity=["error", "warning"][k % 2],
                                 message=f"Valve {k % 2} stuck")
        if kind == "request":
            request_id = f"request-{len(self.asked)}-{t}"
            self.asked.append((unit, request_id))
            return d.UserRequested(time=t, unit=unit, run=self._target(unit, k), actor=ANN, request="control",
                                   detail={"name": "Pause"}, request_id=request_id)
        if kind == "answer":
            waiting = [asked for asked in self.asked if asked[0] == unit]
            if not waiting:
                return None
            asked = waiting[k % len(waiting)]
            self.asked.remove(asked)
            # The answer to a Start names the run it started, which may not be recorded yet.
            run = f"run-{self.runs}" if k % 3 == 2 else self.active[unit]
            return d.RequestAnswered(time=t, unit=unit, run=run, actor=ANN, request_id=asked[1], request="control",
                                     accepted=k % 2 == 0, reason="" if k % 2 == 0 else "not now")
        if kind == "old_request":  # a store from before requests were answered apart
            return d.UserRequested(time=t, unit=unit, run=self._target(unit, k), actor=ANN, request="inject",
                                   detail={"code": "Mark: A"}, accepted=k % 2 == 0)
        if kind == "refused":
            return d.RecordRefused(**self._engine(unit, k), run=self.active[unit], kind="samples",
                                   reason="a value is not a number")
        if kind == "enrol":
            return d.EngineEnrolled(time=t, unit=unit, key_sha256=f"{k:064x}")
        if kind == "revoke":
            return d.EngineRevoked(time=t, unit=unit, reason="lost laptop")
        if kind == "push":
            return d.PushSubscribed(time=t, unit="", actor=ANN, subscription=f"browser-{k % 3}",
                                    endpoint=f"https://push.example/{k % 3}", keys={"p256dh": "key", "auth": "a"},
                                    topics=["alarm"], units=[unit] if k % 2 else None)
        if kind == "unpush":
            return d.PushUnsubscribed(time=t, unit="", actor=ANN, subscription=f"browser-{k % 3}", reason="gone")
        assert kind == "garbage"  # stored by a bug: it cannot be folded, and is skipped
        return NewEvent(f"unit:{unit}", "StateChanged", t, {"unit": unit, "time": t, "system_state": None})

    def _late(self, unit: str, k: int) -> str | None:
        return self.ended[unit][k % len(self.ended[unit])] if self.ended[unit] else None


RICH = [("register", 0, 0), ("describe", 0, 0), ("connect", 0, 0), ("register", 1, 1), ("describe", 1, 3),
        ("enrol", 0, 1), ("push", 0, 1), ("samples", 0, 1), ("request", 0, 1), ("answer", 0, 2), ("start", 0, 0),
        ("state", 0, 0), ("samples", 0, 0), ("runlog", 0, 0), ("lines", 0, 0), ("method", 0, 3), ("request", 0, 0),
        ("error", 0, 0), ("error", 0, 0), ("samples", 1, 1), ("start", 1, 0), ("samples", 1, 3), ("stop", 0, 1),
        ("answer", 0, 0), ("late", 0, 2), ("late", 0, 5), ("late", 0, 8), ("start", 0, 1), ("samples", 0, 3),
        ("garbage", 1, 0), ("old_request", 0, 0), ("request", 0, 3), ("interrupt", 0, 0), ("late", 0, 11),
        ("answer", 0, 1), ("revoke", 0, 1), ("unpush", 0, 1), ("push", 1, 2), ("disconnect", 1, 0)]


def write(store, events: list[NewEvent], batch: int = 3) -> None:
    for i in range(0, len(events), batch):
        store.append(events[i:i + batch])


def replayed(store) -> tuple[Projector, Memory]:
    views, memory = Projector("agg-host", "1.2.3"), Memory()
    for record in store.iter():
        memory.fold(record)
    views.replay(store.iter())
    return views, memory


# -- a checkpoint and the log after it equal a replay -----------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, cut=st.floats(0, 1), every=st.integers(1, 25), resident=st.integers(0, 2),
       per_part=st.integers(1, 3))
# Line states the engine sends without a run, into the method the unit shares with its active run.
@example(steps=[("start", 0, 0), ("lines", 0, 1)], cut=1.0, every=1, resident=0, per_part=1)
@example(steps=[("start", 0, 0), ("lines", 0, 1)], cut=0.0, every=1, resident=0, per_part=1)
# A request asked in a run answered after the run ended and its view left memory.
@example(steps=[("start", 0, 0), ("request", 0, 0), ("stop", 0, 0), ("answer", 0, 0)], cut=0.0, every=1, resident=0,
         per_part=1)
def test_a_checkpoint_and_the_log_after_it_fold_to_what_a_replay_from_zero_gives(steps, cut, every, resident, per_part):
    with mock.patch.object(checkpoint, "RUNS_PER_PART", per_part):  # runs' summaries in several parts
        checkpoint_and_log_after_it(steps, cut, every, resident)


def checkpoint_and_log_after_it(steps, cut, every, resident):
    store = MemoryEventStore()
    write(store, Story().events(steps))
    want, memory = replayed(store)
    position = round(cut * store.last_position())
    saved = MemoryCheckpointStore()
    # The checkpoint at a drawn position, saved every few events on the way (views of finished
    # runs leave memory at each save).
    first = Checkpoints(store, saved, Projector("agg-host", "1.2.3", resident_runs=resident), every=every)
    first.fold(upto=position)
    first.save()
    # Started again: the checkpoint, then the rest as the aggregator folds it live - the views a
    # record needs are loaded first (views.wanted), never in the fold (there is no loader there).
    views = Projector("agg-host", "1.2.3", resident_runs=resident)
    again = Checkpoints(store, saved, views)
    assert again.load() is not None and views.position == position
    views.load_run, views.notifying = None, True
    for record in store.iter(after=position):
        for run_id in views.absent(views.wanted([record])):
            views.admit(run_id, again.load_run(run_id))
        views.apply(record)
        again.memory.fold(record)
        views.trim()
        if record.position % every == 0:
            again.save()
    assert views.unfoldable == want.unfoldable  # nothing failed for want of a view
    views.load_run = again.load_run
    assert views.snapshot() == want.snapshot()
    assert again.memory == memory
    again.save()
    checked = again.check()
    assert checked.position == store.last_position() and checked.differences == []
    assert again.problem == ""


def test_the_queries_answer_the_same_whichever_views_are_in_memory():
    store = MemoryEventStore()
    write(store, Story().events(RICH))
    everything, _ = replayed(store)
    views = Projector("agg-host", "1.2.3", resident_runs=0)
    checkpoints = Checkpoints(store, MemoryCheckpointStore(), views, every=5)
    checkpoints.fold()
    finished = [run["run_id"] for run in everything.runs() if run["completed_date"]]
    assert len(finished) >= 2 and views.absent(finished) == finished  # none of them in memory
    for run_id in finished:
        for query in ("run", "run_method", "run_log_of", "run_error_log", "audit_trail", "plot_series",
                      "plot_configuration", "run_columns"):
            assert getattr(views, query)(run_id) == getattr(everything, query)(run_id), (query, run_id)
    assert views.runs() == everything.runs() and views.units() == everything.units()


# -- never trusted blindly ----------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def log(request, tmp_path) -> Iterator[Any]:
    """A real store with the rich story in it, SQLite file or PostgreSQL database."""
    location = tmp_path / STORE_FILE if request.param == "sqlite" else request.getfixturevalue("postgresql_url")
    store = open_store(location)
    write(store, Story().events(RICH))
    yield store
    store.close()


def checkpointed(log, every: int = 10) -> Checkpoints:
    """The views of ``log`` folded and saved, their finished runs' views out of memory."""
    checkpoints = Checkpoints(log, open_checkpoints(log), Projector("agg-host", "1.2.3", resident_runs=0), every=every)
    checkpoints.store.clear()
    checkpoints.fold()
    return checkpoints


def started(log) -> Checkpoints:
    """An aggregator's start on ``log``: the checkpoint, if it may be used, then the rest of the log."""
    checkpoints = Checkpoints(log, open_checkpoints(log), Projector("agg-host", "1.2.3", resident_runs=0))
    checkpoints.load()
    checkpoints.fold()
    return checkpoints


def tamper(log, name: str, **changes: Any) -> None:
    """Changes a saved part behind the store's back, as a disk fault or a hand would."""
    store = open_checkpoints(log)
    part = store.load(name)
    assert part is not None
    store.save([Part(**{**{f: getattr(part, f) for f in Part.__slots__}, **changes})])
    store.close()


def test_the_store_keeps_parts_replaces_them_and_reads_one_snapshot(log):
    store = open_checkpoints(log)
    store.clear()
    store.save([Part.of(LIVE, 7, b"live at 7"), Part.of(run_part("run-1"), 7, b"run 1")])
    store.save([Part.of(LIVE, 9, b"live at 9")])
    assert store.load(LIVE) == Part.of(LIVE, 9, b"live at 9") and store.load(run_part("run-1")).data == b"run 1"
    assert store.load(run_part("nowhere")) is None
    with store.reading() as snapshot:
        other = open_checkpoints(log)
        other.save([Part.of(LIVE, 11, b"live at 11")])  # another connection writes meanwhile
        assert snapshot.load(LIVE).position == 9 and snapshot.names() == [LIVE, run_part("run-1")]
        other.close()
    assert store.load(LIVE).position == 11
    with pytest.raises((sqlite3.Error, psycopg.Error)):  # one transaction: the second part cannot be stored, so neither is
        store.save([Part.of(LIVE, 12, b"live at 12"), Part(run_part("run-2"), 12, "x", "y", object())])  # type: ignore[arg-type]
    assert store.load(LIVE).position == 11 and store.load(run_part("run-2")) is None
    store.clear()
    with store.reading() as snapshot:
        assert snapshot.names() == []
    store.close()


def test_a_start_from_the_checkpoint_equals_a_replay_and_loads_finished_runs_on_demand(log):
    checkpointed(log)
    want, _ = replayed(log)
    again = started(log)
    finished = [run["run_id"] for run in want.runs() if run["completed_date"]]
    assert again.views.absent(finished) == finished
    assert again.views.run_log_of(finished[0]) == want.run_log_of(finished[0])  # loaded from its part
    assert again.views.snapshot() == want.snapshot() and again.problem == ""
    assert again.check().differences == []


def test_views_the_checkpoint_cannot_encode_are_reported_and_kept_whole_in_memory(log, caplog):
    """The log may hold what JSON can say and the checkpoint's encoding cannot: an integer over 64
    bits, from an engine the record schema let say it. The start reports it and goes on, the views
    whole in memory and equal to a replay; it never stops the aggregator (a fuzzed store did)."""
    log.append([d.TagSamples(time=1_900_000_000.0, unit="host_Huge", actor=d.Actor.engine("host_Huge"),
                             samples=[{"time": 1_900_000_000.0, "values": {"Counter": 2 ** 70}}]).stored()])
    want, _ = replayed(log)
    with caplog.at_level(logging.ERROR, logger="pectus.projections.checkpoint"):
        checkpoints = checkpointed(log)
    assert "the views could not be checkpointed at event" in checkpoints.problem and "they are kept in memory" in caplog.text
    assert checkpoints.views.snapshot() == want.snapshot()


def test_a_checkpoint_of_another_code_version_is_ignored_and_rebuilt(log, caplog):
    checkpointed(log)
    tamper(log, LIVE, code="0123456789abcdef")
    want, _ = replayed(log)
    with caplog.at_level(logging.WARNING, logger="pectus.projections.checkpoint"):
        again = started(log)
    assert "written by another version of the views' code (0123456789abcdef" in caplog.text
    assert again.views.snapshot() == want.snapshot()
    assert again.problem == ""  # expected after an upgrade: told in the log, not a fault
    assert again.store.load(LIVE).code == code_version() and again.check().differences == []


@pytest.mark.parametrize("change, told", [
    ({"data": b"\x81\xa5views\xc0"}, "is damaged: its checksum does not match"),
    ({"position": 3}, "is damaged: its checksum does not match"),
])
def test_a_damaged_live_part_is_reported_and_rebuilt(log, caplog, change, told):
    checkpointed(log)
    tamper(log, LIVE, **change)
    want, _ = replayed(log)
    with caplog.at_level(logging.ERROR, logger="pectus.projections.checkpoint"):
        again = started(log)
    assert f"the checkpoint of the views {told}" in again.problem and told in caplog.text
    assert again.views.snapshot() == want.snapshot() and again.check().differences == []


def test_a_damaged_or_missing_part_of_summaries_is_reported_and_the_views_rebuilt(log):
    checkpointed(log)
    tamper(log, "summaries 0", data=b"\x80")
    again = started(log)
    assert again.problem == ("the checkpoint of the views (its part summaries 0) is damaged: its checksum does not "
                             "match its content: it was rebuilt from the log")
    assert again.views.snapshot() == replayed(log)[0].snapshot()
    with sqlite3.connect(log.location) if isinstance(log.location, Path) else _psycopg(log.location) as db:
        db.execute(f"DELETE FROM {CHECKPOINTS_TABLE} WHERE name = 'summaries 0'")
    assert "the checkpoint of the views lacks its part summaries 0" in started(log).problem


def test_an_undecodable_part_with_a_right_checksum_is_reported_and_rebuilt(log):
    checkpointed(log)
    tamper(log, LIVE, **{f: getattr(Part.of(LIVE, 40, b"\x92\x01"), f) for f in ("position", "checksum", "data")})
    again = started(log)
    assert "the checkpoint of the views cannot be read" in again.problem
    assert again.views.snapshot() == replayed(log)[0].snapshot()


def test_a_checkpoint_of_another_log_is_reported_and_rebuilt(log):
    checkpoints = checkpointed(log)
    shorter = MemoryEventStore()
    write(shorter, Story().events(RICH[:20]))
    other = Checkpoints(shorter, checkpoints.store, Projector("agg-host", "1.2.3"))
    assert other.load() is None and "after the end of the log: it is not of this log" in other.problem
    checkpoints = checkpointed(log)
    rewritten = MemoryEventStore()
    events = Story().events(RICH)
    write(rewritten, events[:5] + [NewEvent(e.stream, e.type, e.time + 1, e.data) for e in events[5:]])
    other = Checkpoints(rewritten, checkpoints.store, Projector("agg-host", "1.2.3"))
    assert other.load() is None and f"event {log.last_position()} is another" in other.problem


def test_a_damaged_or_missing_run_part_is_reported_and_that_run_rebuilt_from_the_log(log):
    checkpoints = checkpointed(log)
    want, _ = replayed(log)
    first, second = [run["run_id"] for run in want.runs() if run["completed_date"]][:2]
    tamper(log, run_part(first), data=b"\x80")
    again = started(log)
    assert again.problem == ""  # nothing read yet: the live part is sound
    assert again.views.audit_trail(first) == want.audit_trail(first)
    assert again.problem == (f"the checkpoint of run {first} is damaged: its checksum does not match its content: "
                             "it was rebuilt from the log")
    with sqlite3.connect(log.location) if isinstance(log.location, Path) else _psycopg(log.location) as db:
        db.execute(f"DELETE FROM {CHECKPOINTS_TABLE} WHERE name = '{run_part(second)}'")
    assert again.views.plot_series(second) == want.plot_series(second)
    assert again.problem.startswith(f"the checkpoint of run {second} is missing")
    assert again.views.snapshot() == want.snapshot()
    del checkpoints


def _psycopg(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


# -- replay --check ---------------------------------------------------------------------------

def cli_store(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    store = SQLiteEventStore(data / STORE_FILE)
    write(store, Story().events(RICH))
    checkpointed(store)
    store.close()
    return data


def test_replay_check_passes_on_a_sound_checkpoint(tmp_path, capsys):
    data = cli_store(tmp_path)
    assert main(["--data-dir", str(data), "replay", "--check"]) == 0
    out = capsys.readouterr().out
    assert "the checkpoint at event" in out and "equals the projections rebuilt from the log, byte for byte" in out


def test_replay_check_names_the_part_and_the_place_that_differ(tmp_path, capsys):
    data = cli_store(tmp_path)
    store = SQLiteEventStore(data / STORE_FILE)
    views, _ = replayed(store)
    run_id = next(run["run_id"] for run in views.runs() if run["completed_date"] and views.run_log_of(run["run_id"]))
    checkpoints = open_checkpoints(store)
    view = msgspec.msgpack.decode(checkpoints.load(run_part(run_id)).data, type=RunView)
    first = next(iter(view.run_log))
    view.run_log[first] = {**view.run_log[first], "state": "forged"}
    # Written as the aggregator writes a part, checksum and all: only a rebuild can tell.
    checkpoints.save([Part.of(run_part(run_id), store.last_position(), msgspec.msgpack.encode(view))])
    tamper(store, LIVE, checksum="0" * 64)
    checkpoints.close()
    store.close()
    assert main(["--data-dir", str(data), "replay", "--check"]) == 1
    err = capsys.readouterr().err
    assert "DIFFERS from the projections rebuilt from the log in 2 of" in err
    assert "the live views is damaged: its checksum does not match its content" in err
    assert f"run {run_id} differs at 'run_log'[{first!r}]['state']: checkpoint 'forged', log " in err


def test_replay_check_without_a_checkpoint_says_so(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    store = SQLiteEventStore(data / STORE_FILE)
    write(store, Story().events(RICH[:5]))
    store.close()
    assert main(["--data-dir", str(data), "replay", "--check"]) == 1
    assert "no checkpoint to check" in capsys.readouterr().err


# -- PostgreSQL privileges ------------------------------------------------------------------------

def test_a_postgresql_role_that_cannot_create_the_table_is_told_and_the_owner_can_grant_it(
        postgresql_server, postgresql_url):
    database = postgresql_url.rsplit("/", 1)[1]
    role, password = "pectus_checkpointer", "s3cret:pass"
    with postgresql_server.connect(database) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    url = postgresql_server.url(database, role, password)
    try:
        with pytest.raises(CheckpointsUnavailable, match="Create it once as the tables' owner") as refused:
            PostgreSQLCheckpointStore(url)
        assert password not in str(refused.value)
        owner = PostgreSQLCheckpointStore(postgresql_url)
        owner.grant(role)
        owner.close()
        store = PostgreSQLCheckpointStore(url)
        store.save([Part.of(LIVE, 1, b"one")])
        store.save([Part.of(LIVE, 2, b"two")])
        store.clear()
        store.close()
    finally:
        with postgresql_server.connect(database) as admin:
            admin.execute(f"DROP OWNED BY {role}")
        with postgresql_server.connect() as admin:
            admin.execute(f"DROP ROLE {role}")


# -- the aggregator on a real SQLite file ---------------------------------------------------------

ENGINE = "lab-7_Demo"
OUTBOX = "fedcba9876543210fedcba9876543210"
KEY = "lab-7-engine-key"
UOD_DATA = {"uod_name": "Demo", "uod_author_name": "Ada", "uod_author_email": "ada@example.com",
            "uod_filename": "demo.py", "location": "Lab 7", "hardware": "Simulated",
            "tags": [{"name": "FT01", "unit": "L/h", "direction": "Input"}, {"name": "PU01", "unit": "%",
                                                                              "direction": "Output"}],
            "readings": [{"kind": "reading", "tag_name": "FT01"}], "commands": [],
            "plot_configuration": PLOTS[0], "data_log_interval_seconds": 1.0}


def records(first: int, *kinds: tuple[str, str | None, dict]) -> list[dict]:
    """Engine records numbered from ``first``: (kind, run, data) each, a second apart."""
    return [{"seq": seq, "kind": kind, "time": T0 + seq, "run": run, "data": data}
            for seq, (kind, run, data) in enumerate(kinds, start=first)]


def samples(seq: int, value: float) -> dict:
    return {"samples": [{"time": T0 + seq, "values": {"FT01": value, "PU01": value * 2}}]}


def item(id: int, state: str, seq: int) -> dict:
    return {"items": [{"id": id, "line": id, "name": f"Step {id}", "state": state, "progress": None,
                       "time": T0 + seq, "start": T0 + seq, "end": None, "cancellable": False, "forcible": False,
                       "cancelled": False, "forced": False}]}


FIRST_RUN = records(1, ("uod", None, UOD_DATA), ("state", None, {"system_state": "Stopped", "method_status": "OK"}),
                    ("method", None, {"version": 1, "lines": [{"id": "1", "text": "Mark: A"}]}),
                    ("run_started", "run-a", {}), ("samples", "run-a", samples(5, 1.0)),
                    ("runlog", "run-a", item(1, "started", 6)), ("lines", "run-a", {"version": 1, "states": {"1": "started"}}),
                    ("error", "run-a", {"severity": "warning", "message": "Valve slow"}),
                    ("samples", "run-a", samples(9, 2.0)), ("run_stopped", "run-a", {}),
                    ("run_started", "run-b", {}), ("samples", "run-b", samples(12, 3.0)))
AFTER = records(11, ("run_started", "run-b", {}), ("samples", "run-b", samples(12, 3.0)),  # resent: stored already
                ("error", "run-a", {"severity": "error", "message": "late: Valve stuck"}),  # late, for the ended run
                ("runlog", "run-a", item(1, "completed", 14)), ("samples", "run-b", samples(15, 4.0)),
                ("run_stopped", "run-b", {}), ("run_started", "run-c", {}), ("samples", "run-c", samples(18, 5.0)))


async def engine_session(port: int, sent: list[dict]) -> int:
    """The engine's connection: hello (its key), its records, their ack; the welcome's last_seq."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/engine") as ws:
        await ws.send_message(p.encode(p.Hello(p.PROTOCOL_VERSION, ENGINE, "lab-7", "Demo", "0.1.0", KEY, OUTBOX)))
        welcome = p.decode(await ws.get_message())
        assert isinstance(welcome, p.Welcome), welcome
        await ws.send_message(p.encode(p.Records(sent)))
        while not isinstance(answer := p.decode(await ws.get_message()), p.Ack) or answer.seq < sent[-1]["seq"]:
            pass
        assert answer.refused == []
        return welcome.last_seq


def serve_on(data: Path, scenario, *, crash: bool = False, **options) -> tuple[AggregatorProcess, Any]:
    """``scenario(port, aggregator, api)`` against a real aggregator on the store in ``data``; then
    a clean stop, or (``crash``) the process's tasks cancelled where they are: no last checkpoint."""
    aggregator = AggregatorProcess(data, port=0, hostname="aggregator-host", **options)

    async def run() -> Any:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(lambda task_status: aggregator.run(shutdown=shutdown, task_status=task_status))
            port = int(bound[0].rsplit(":", 1)[1])
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
                result = await scenario(port, aggregator, api)
            if crash:
                nursery.cancel_scope.cancel()
            else:
                shutdown.set()
        return result

    return aggregator, trio.run(run)


async def answers(api: httpx.AsyncClient) -> dict[str, tuple[int, str]]:
    """Every GET the UI makes of the units and runs, answered (status and body as sent)."""
    unit = f"/api/process_units/{ENGINE}"
    paths = ["/api/process_units", unit, *(f"{unit}/{view}" for view in (
        "process_values", "control_state", "method", "run_log", "error_log", "plot_configuration", "plot_log")),
        "/api/runs"]
    for run in [run["run_id"] for run in (await api.get("/api/runs")).json()]:
        paths += [f"/api/runs/{run}", *(f"/api/runs/{run}/{view}" for view in (
            "method", "run_log", "error_log", "plot_configuration", "plot_log", "audit", "csv"))]
    found = {}
    for path in paths:
        response = await api.get(path)
        found[path] = (response.status_code, response.text)
    return found


def memory_of(aggregator: AggregatorProcess) -> dict[str, Any]:
    """What the aggregator remembers of engines, beside the views."""
    engines = aggregator.engines
    return {"units": {unit: (kept.outboxes, kept.run, kept.state) for unit, kept in sorted(engines.units.items())},
            "enrolments": engines.enrolments, "revoked": engines.revoked, "run_units": engines.run_units}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_restarted_aggregator_serves_from_its_checkpoint_what_a_replay_from_zero_serves(
        tmp_path, caplog, request, backend):
    data = tmp_path / "data"
    url = request.getfixturevalue("postgresql_url") if backend == "postgresql" else None

    def serve(data: Path, scenario, **options) -> tuple[AggregatorProcess, Any]:
        return serve_on(data, scenario, store=url, **options)

    async def first(port, aggregator, api):  # enrolled on first use, a run, a second one left running
        assert await engine_session(port, FIRST_RUN) == 0
        await wait_for(lambda: aggregator.views.position == aggregator.store.last_position())
        return (await api.get("/api/runs/run-a/run_log")).json()

    _, run_a_log = serve(data, first, accept_new_engines=True)

    async def second(port, aggregator, api):
        assert aggregator.views.absent(["run-a"]) == ["run-a"]  # its view stayed on disk
        assert (await api.get("/api/runs/run-a/run_log")).json() == run_a_log  # ... until asked for
        # The enrolment, the outbox's last record and the run's unit came back with the views: the
        # engine is admitted (no new engines accepted), resends are dropped, a late record is taken.
        assert await engine_session(port, AFTER) == len(FIRST_RUN)
        await wait_for(lambda: aggregator.views.position == aggregator.store.last_position())
        return (await api.get("/api/runs/run-a/error_log")).json()

    with caplog.at_level(logging.INFO, logger="pectus.aggregator"):
        _, errors = serve(data, second, crash=True)  # no checkpoint at its end: the next start folds its events
    assert "views from the checkpoint at event" in caplog.text
    assert [entry["message"] for entry in errors] == ["late: Valve stuck", "Valve slow"]
    log = open_store(url or data / STORE_FILE)
    stored = [record.data.get("seq") for record in log.read()]
    assert sorted(seq for seq in stored if seq) == list(range(1, AFTER[-1]["seq"] + 1))  # each record once

    async def both(port, aggregator, api):
        return await answers(api), (await api.get("/health")).json()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pectus.aggregator"):
        from_checkpoint, (served, health) = serve(data, both)
        assert "views from the checkpoint at event" in caplog.text and "and the 1" in caplog.text
        saved = open_checkpoints(log)
        saved.clear()  # the same log, no checkpoint: the next start replays it all
        saved.close()
        from_zero, (replayed_, _) = serve(data, both)
        assert "views rebuilt from the whole log" in caplog.text
    log.close()
    assert served == replayed_ and len(served) == 10 + 3 * 8
    assert "checkpoint" not in health and health["status"] == "ok"
    assert memory_of(from_checkpoint) == memory_of(from_zero)
    assert memory_of(from_checkpoint)["units"][ENGINE][0] == {OUTBOX: AFTER[-1]["seq"]}


def test_a_damaged_checkpoint_is_told_by_health_and_the_views_come_from_the_log(tmp_path):
    data = tmp_path / "data"

    async def first(port, aggregator, api):
        await engine_session(port, FIRST_RUN)

    async def again(port, aggregator, api):
        return await answers(api), (await api.get("/health"))

    serve_on(data, first, accept_new_engines=True)
    _, (before, _) = serve_on(data, again)
    with sqlite3.connect(data / STORE_FILE) as db:  # a hand changed it: now a text, not bytes
        db.execute(f"UPDATE {CHECKPOINTS_TABLE} SET data = data || x'00' WHERE name = '{LIVE}'")
    _, (after, health) = serve_on(data, again)
    assert after == before
    assert health.status_code == 200 and health.json()["checkpoint"] == (
        "the checkpoint of the views is damaged: its checksum does not match its content: it was rebuilt from the log")


def test_a_runs_view_is_encoded_in_slices_to_the_same_bytes(monkeypatch):
    """Long series are encoded a slice at a time (no one call holds the event loop's interpreter
    for long); the bytes are msgspec's own, whatever the sizes (msgpack's short and long headers)."""
    monkeypatch.setattr(checkpoint, "SLICE", 7)
    for tags, points in [(0, 0), (1, 6), (3, 7), (15, 8), (16, 15), (2, 70_000)]:
        view = RunView(MethodState(1, [{"id": "1", "text": "Mark: A"}], "Ann", {"1": "executed"}),
                       {"version": 1, "lines": [], "last_author": None},
                       series={f"T{i:02d}": [(T0 + j, j * 0.5 if j % 3 else f"s{j}") for j in range(points)]
                               for i in range(tags)})
        assert checkpoint.encode_run(view) == msgspec.msgpack.encode(view), (tags, points)


def test_an_idle_aggregator_keeps_few_finished_runs_views_however_many_are_read(tmp_path):
    data = tmp_path / "data"
    more = records(13, ("run_stopped", "run-b", {}), ("run_started", "run-c", {}),
                   ("samples", "run-c", samples(15, 6.0)), ("run_stopped", "run-c", {}), ("run_started", "run-d", {}))

    async def first(port, aggregator, api):
        await engine_session(port, FIRST_RUN + more)
        await wait_for(lambda: aggregator.views.position == aggregator.store.last_position())
        return {run: (await api.get(f"/api/runs/{run}/plot_log")).json() for run in ("run-a", "run-b", "run-c")}

    _, before = serve_on(data, first, accept_new_engines=True)

    async def read(port, aggregator, api):
        aggregator.views.resident_runs = 1
        answers = {run: (await api.get(f"/api/runs/{run}/plot_log")).json() for run in ("run-a", "run-b", "run-c")}
        return answers, aggregator.views.absent(["run-a", "run-b", "run-c"])

    _, (after, absent) = serve_on(data, read)
    assert after == before and after["run-c"]["FT01"] == [[T0 + 15, 6.0]]
    assert absent == ["run-a", "run-b"]  # each read made room first: one finished run's views in memory
