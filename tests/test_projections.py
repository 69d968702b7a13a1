"""Projections: run views folded from a realistic log, their rebuild by replay, and the exports.

The log is written to a real :class:`MemoryEventStore` while a projector follows it live, as the
aggregator runs them. The story: a unit registers and describes itself, loads a method, starts a
run; samples, run-log changes and line states come in; Alice and Bob revise the method, Carol's
pause is refused, errors repeat, the engine drops off and comes back; the run stops and a second
one starts. A second unit runs at the same time, so nothing of it must leak into the first.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import tracemalloc
from collections.abc import Iterator

import pytest

from pectus.events.domain import (Actor, DomainEvent, EngineConnected, EngineDisconnected, EngineRegistered,
                                  ErrorLogged, LinesChanged, MethodRevised, RecordRefused, RequestAnswered,
                                  RunInterrupted, RunLogChanged, RunStarted, RunStopped, StateChanged, TagSamples,
                                  UodDescribed, UserRequested)
from pectus.events.store import MemoryEventStore, NewEvent, Record
from pectus.projections import Delta, Projector, csv_rows, jsonl_lines
from pectus.projections.views import IDLE_ERROR_LIMIT, iso

T0 = 1_736_450_000.0  # 2025-01-09T19:13:20Z
UNIT = "host-7_DemoUod"
OTHER = "lab-2_DemoUod"
ENGINE = Actor.engine(UNIT)
ALICE = Actor.user("u-alice", "Alice")
BOB = Actor.user("u-bob", "Bob")
CAROL = Actor.user("u-carol", "Carol")
TAGS = [{"name": "Run Time", "unit": "s", "direction": "NA"},
        {"name": "System State", "unit": None, "direction": "NA"},
        {"name": "FT01", "unit": "L/h", "direction": "Input"},
        {"name": "PU01", "unit": "%", "direction": "Output"},
        {"name": "Valve", "unit": "", "direction": "Output"},
        {"name": "Block", "unit": None, "direction": "NA"}]
PLOT = {"process_value_names_to_annotate": [], "x_axis_process_value_names": ["Run Time"],
        "color_regions": [{"process_value_name": "Block", "value_color_map": {"Equilibrate": "#66ff6633"}}],
        "sub_plots": [{"ratio": 1, "axes": [{"label": "Flow", "process_value_names": ["FT01"], "y_max": 20,
                                             "y_min": 0, "color": "#1F77B4"}]}]}
LINES_V1 = [{"id": "a", "text": "Block: Equilibrate"}, {"id": "b", "text": "PU01: 50 %"}]
LINES_V2 = [*LINES_V1, {"id": "c", "text": "Wait: 5 s"}]
LINES_V3 = [*LINES_V2, {"id": "d", "text": "Stop"}]


def at(seconds: float) -> float:
    return T0 + seconds


def described(unit: str) -> UodDescribed:
    return UodDescribed(
        time=at(1), unit=unit, actor=Actor.engine(unit), uod_name="DemoUod", uod_author_name="Ada Author",
        uod_author_email="ada@example.com", uod_filename="demo_uod.py", location="Lab 1, bench 3",
        hardware="Simulated", tags=TAGS,
        readings=[{"kind": "reading", "tag_name": "FT01"},
                  {"kind": "reading_with_entry", "tag_name": "PU01", "entry_data_type": "float",
                   "execute_command_name": None, "command_options": None},
                  {"kind": "reading_with_choice", "tag_name": "Valve", "entry_data_type": None,
                   "execute_command_name": None,
                   "command_options": {"Open": "Valve: Open", "Closed": "Valve: Closed"}}],
        commands=[{"name": "PU01", "help": "PU01: 50 %", "examples": []}],
        plot_configuration=PLOT, data_log_interval_seconds=5.0, required_roles=["operator"])


def samples(unit: str, run: str | None, *rows: tuple[float, dict]) -> TagSamples:
    return TagSamples(time=rows[-1][0], unit=unit, run=run, actor=Actor.engine(unit),
                      samples=[{"time": t, "values": values} for t, values in rows])


def item(id: int, name: str, state: str, start: float, end: float | None = None) -> dict:
    return {"id": id, "line": id, "name": name, "state": state, "progress": None, "start": start, "end": end,
            "cancellable": False, "forcible": False, "cancelled": False, "forced": False}


def state(t: float, run: str | None, system: str, status: str = "OK") -> StateChanged:
    return StateChanged(time=at(t), unit=UNIT, run=run, actor=ENGINE, system_state=system, method_status=status)


def error(t: float, run: str | None, severity: str, message: str) -> ErrorLogged:
    return ErrorLogged(time=at(t), unit=UNIT, run=run, actor=ENGINE, severity=severity, message=message)


def request(t: float, run: str | None, who: Actor, what: str, detail: dict, accepted: bool = True,
            reason: str = "") -> UserRequested:
    return UserRequested(time=at(t), unit=UNIT, run=run, actor=who, request=what, detail=detail,
                         accepted=accepted, reason=reason)


class Log:
    """A store with a projector following it live: every append is applied as it commits."""

    def __init__(self) -> None:
        self.store = MemoryEventStore()
        self.live = Projector("agg-host", "1.2.3")

    def emit(self, *events: DomainEvent) -> list[Delta]:
        records = self.store.append([NewEvent(e.stream, e.type, e.time, e.to_data()) for e in events])
        return [delta for record in records for delta in self.live.apply(record)]


def story(log: Log) -> None:
    """Everything up to the second run, which is left running."""
    other_engine = Actor.engine(OTHER)
    log.emit(EngineRegistered(time=at(0), unit=UNIT, actor=ENGINE, computer_name="host-7", uod_name="DemoUod",
                              engine_version="0.1.0", protocol=1),
             EngineConnected(time=at(0.5), unit=UNIT),
             described(UNIT),
             EngineRegistered(time=at(1), unit=OTHER, actor=other_engine, computer_name="lab-2", uod_name="DemoUod",
                              engine_version="0.1.0", protocol=1),
             EngineConnected(time=at(1), unit=OTHER), described(OTHER),
             MethodRevised(time=at(2), unit=UNIT, actor=ENGINE, version=1, lines=LINES_V1),
             state(2, None, "Stopped"),
             samples(UNIT, None, (at(3), {"Run Time": 0.0, "System State": "Stopped", "FT01": 0.0, "PU01": 0.0,
                                          "Valve": "Closed", "Block": None})),
             error(4, None, "info", "Waiting for start"),
             request(9, None, ALICE, "control", {"name": "Start"}),
             RunStarted(time=at(10), unit=UNIT, run="run-1", actor=ENGINE),
             RunStarted(time=at(10), unit=OTHER, run="other-run", actor=other_engine),
             state(10, "run-1", "Running"),
             samples(UNIT, "run-1",
                     (at(10), {"Run Time": 0.0, "System State": "Running", "FT01": 0.0, "PU01": 0.0,
                               "Valve": "Closed", "Block": None}),
                     (at(15), {"Run Time": 5.0, "FT01": 10.5, "Block": "Equilibrate"})),
             samples(OTHER, "other-run", (at(15), {"Run Time": 0.0, "FT01": 99.0})),
             RunLogChanged(time=at(15), unit=UNIT, run="run-1", actor=ENGINE,
                           items=[item(1, "Block", "started", at(10))]),
             LinesChanged(time=at(15), unit=UNIT, run="run-1", actor=ENGINE, version=1, states={"a": "started"}),
             # As an engine records a tick: its run-log changes, then its sample.
             RunLogChanged(time=at(20), unit=UNIT, run="run-1", actor=ENGINE,
                           items=[item(1, "Block", "completed", at(10), at(20)), item(2, "PU01", "started", at(20)),
                                  item(3, "Mark: A, first", "completed", at(20), at(20))]),
             samples(UNIT, "run-1", (at(20), {"Run Time": 10.0, "PU01": 50.0, "Mark": "A, first"})),
             LinesChanged(time=at(20), unit=UNIT, run="run-1", actor=ENGINE, version=1,
                          states={"a": "executed", "b": "executed"}),
             request(30, "run-1", ALICE, "save_method", {"version": 1}),
             MethodRevised(time=at(30), unit=UNIT, run="run-1", actor=ALICE, version=2, base_version=1, lines=LINES_V2),
             request(40, "run-1", BOB, "save_method", {"version": 2}),
             MethodRevised(time=at(40), unit=UNIT, run="run-1", actor=BOB, version=3, base_version=2, lines=LINES_V3),
             request(41, "run-1", ALICE, "inject", {"code": "Mark: B"}),
             request(45, "run-1", CAROL, "control", {"name": "Pause"}, accepted=False,
                     reason="Engine is not in a state to receive that command"),
             *(error(50 + i, "run-1", "warning", "FT01 reading is noisy") for i in range(3)),
             error(53, "run-1", "error", "Valve stuck"),
             state(53, "run-1", "Paused", "Error"))


def finish_first_run(log: Log) -> None:
    log.emit(error(54, "run-1", "warning", "FT01 reading is noisy"),
             EngineDisconnected(time=at(60), unit=UNIT, reason="network cut"),
             EngineConnected(time=at(70), unit=UNIT),
             state(71, "run-1", "Running"),
             samples(UNIT, "run-1", (at(75), {"Run Time": 65.0, "FT01": 12.0, "Valve": "Open"})),
             RunStopped(time=at(100), unit=UNIT, run="run-1", actor=ENGINE),
             state(100, None, "Stopped"),
             RunStarted(time=at(200), unit=UNIT, run="run-2", actor=ENGINE),
             state(200, "run-2", "Running"),
             request(205, "run-2", BOB, "inject", {"code": "Mark: C"}),
             samples(UNIT, "run-2", (at(210), {"Run Time": 10.0, "FT01": 3.0})),
             error(211, "run-2", "error", "Pump PU01 overload"))


@pytest.fixture
def log() -> Log:
    log = Log()
    story(log)
    finish_first_run(log)
    return log


def test_units_show_identity_state_and_the_current_run(log: Log):
    units = {unit["id"]: unit for unit in log.live.units()}
    assert list(units) == [UNIT, OTHER]
    assert units[UNIT] == {
        "id": UNIT, "name": "host-7 (DemoUod)", "computer_name": "host-7", "uod_name": "DemoUod",
        "engine_version": "0.1.0", "location": "Lab 1, bench 3", "uod_author_name": "Ada Author",
        "uod_author_email": "ada@example.com", "state": "online", "run_state": "running",
        "last_seen": "2025-01-09T19:16:51.000Z", "run_id": "run-2", "run_started": "2025-01-09T19:16:40.000Z",
        "run_time": 10.0, "last_run_id": "run-1", "last_run_completed": "2025-01-09T19:15:00.000Z",
        "contributors": [{"id": "u-bob", "name": "Bob"}], "required_roles": ["operator"], "process_diagram": False}
    assert log.live.unit(UNIT) == units[UNIT]
    assert log.live.unit("nobody") is None
    log.emit(EngineDisconnected(time=at(300), unit=UNIT, reason="shutdown"))
    assert log.live.unit(UNIT)["state"] == "offline" and log.live.unit(UNIT)["run_state"] == "offline"


def test_run_state_follows_system_state_and_an_error_interrupts_the_run():
    log = Log()
    story(log)
    assert log.live.unit(UNIT)["run_state"] == "error"
    assert log.live.control_state(UNIT) == {"system_state": "Paused", "method_status": "Error",
                                            "is_running": True, "is_paused": True, "is_holding": False}
    log.emit(state(54, "run-1", "Holding"))
    assert log.live.unit(UNIT)["run_state"] == "holding"
    log.emit(state(55, "run-1", "Paused"))
    assert log.live.unit(UNIT)["run_state"] == "paused"
    log.emit(RunStopped(time=at(56), unit=UNIT, run="run-1", actor=ENGINE), state(56, None, "Stopped"))
    assert log.live.unit(UNIT)["run_state"] == "ready"
    assert log.live.control_state(UNIT)["is_running"] is False


def test_process_values_are_the_latest_samples_with_units_and_commands(log: Log):
    values = {value["name"]: value for value in log.live.process_values(UNIT)}
    assert list(values) == ["Run Time", "System State", "FT01", "PU01", "Valve", "Block", "Mark"]
    assert values["FT01"] == {"name": "FT01", "value": 3.0, "unit": "L/h", "time": "2025-01-09T19:16:50.000Z",
                              "direction": "Input", "kind": "reading", "commands": [], "format": None,
                              "decimals": None}
    assert values["PU01"]["commands"] == [{"name": "PU01", "value_type": "float", "help": "PU01: 50 %",
                                          "rules": None}]  # an engine that sent no rules: the page checks nothing
    # The store encodes with sorted keys, so the choices come back in alphabetical order.
    assert values["Valve"]["commands"] == [{"name": "Valve", "value_type": "choice", "options": ["Closed", "Open"]}]
    assert values["Valve"]["unit"] is None and values["Valve"]["value"] == "Open"
    assert values["Mark"] == {"name": "Mark", "value": "A, first", "unit": None, "time": "2025-01-09T19:13:40.000Z",
                              "direction": None, "kind": None, "commands": [], "format": None, "decimals": None}
    assert log.live.process_values(OTHER)[0] == {**values["Run Time"], "value": 0.0, "time": "2025-01-09T19:13:35.000Z"}


def test_method_line_states_and_revisions():
    log = Log()
    story(log)
    assert log.live.method(UNIT) == {"version": 3, "lines": LINES_V3, "last_author": "Bob",
                                     "line_states": {"a": "executed", "b": "executed"}}
    finish_first_run(log)
    # The next run starts with no line states; the finished one keeps its own.
    assert log.live.method(UNIT)["line_states"] == {}
    method = log.live.run_method("run-1")
    assert {key: method[key] for key in ("version", "lines", "last_author", "line_states")} == {
        "version": 3, "lines": LINES_V3, "last_author": "Bob", "line_states": {"a": "executed", "b": "executed"}}
    assert method["initial"] == {"version": 1, "lines": LINES_V1, "last_author": UNIT}
    assert [(r["version"], r["base_version"], r["author"]["name"], r["time"], len(r["lines"]))
            for r in method["revisions"]] == [(2, 1, "Alice", "2025-01-09T19:13:50.000Z", 3),
                                              (3, 2, "Bob", "2025-01-09T19:14:00.000Z", 4)]
    assert log.live.run_method("run-2")["revisions"] == []
    assert log.live.run_method("nope") is None


def test_run_log_keeps_the_latest_state_of_each_item(log: Log):
    assert log.live.run_log_of("run-1") == [item(1, "Block", "completed", at(10), at(20)),
                                            item(2, "PU01", "started", at(20)),
                                            item(3, "Mark: A, first", "completed", at(20), at(20))]
    assert log.live.run_log(UNIT) == []  # run-2 has no items yet
    assert log.live.run_log_of("other-run") == []


def test_error_log_collapses_consecutive_repeats_newest_first():
    log = Log()
    story(log)
    finish_first_run(log)
    entries = log.live.run_error_log("run-1")
    assert [(e["id"], e["severity"], e["message"], e["occurrences"], e["first_time"], e["time"])
            for e in entries] == [
        (2, "warning", "FT01 reading is noisy", 1, "2025-01-09T19:14:14.000Z", "2025-01-09T19:14:14.000Z"),
        (1, "error", "Valve stuck", 1, "2025-01-09T19:14:13.000Z", "2025-01-09T19:14:13.000Z"),
        (0, "warning", "FT01 reading is noisy", 3, "2025-01-09T19:14:10.000Z", "2025-01-09T19:14:12.000Z")]
    assert [e["message"] for e in log.live.error_log(UNIT)] == ["Pump PU01 overload"]


def test_an_idle_unit_shows_the_errors_since_its_last_run():
    log = Log()
    story(log)
    finish_first_run(log)
    log.emit(RunStopped(time=at(300), unit=UNIT, run="run-2", actor=ENGINE))
    assert log.live.error_log(UNIT) == []
    log.emit(error(301, None, "error", "Sensor lost"), error(302, None, "error", "Sensor lost"))
    assert [(e["message"], e["occurrences"]) for e in log.live.error_log(UNIT)] == [("Sensor lost", 2)]
    # A unit left idle in a fault loop keeps only the newest errors; ids stay as they were.
    log.emit(*(error(303 + i, None, "error", f"Fault {i % 2}") for i in range(IDLE_ERROR_LIMIT + 10)))
    entries = log.live.error_log(UNIT)
    assert len(entries) == IDLE_ERROR_LIMIT and entries[0]["id"] == IDLE_ERROR_LIMIT + 10


def test_plots_keep_one_point_per_change_of_a_plotted_tag(log: Log):
    assert log.live.plot_configuration(UNIT) == PLOT == log.live.plot_configuration("run-1")
    series = log.live.plot_series("run-1")
    assert set(series) == {"Run Time", "Block", "FT01", "PU01", "Valve"}  # plotted, then readings
    assert series["FT01"] == [[at(10), 0.0], [at(15), 10.5], [at(75), 12.0]]
    assert series["Block"] == [[at(10), None], [at(15), "Equilibrate"]]
    assert log.live.plot_series(UNIT) == log.live.plot_series("run-2")
    assert log.live.plot_series(UNIT)["FT01"] == [[at(210), 3.0]]
    assert log.live.plot_series("nope") is None


def test_recent_runs_with_their_metadata_and_contributors(log: Log):
    assert [(r["run_id"], r["engine_id"]) for r in log.live.runs()] == [
        ("run-2", UNIT), ("other-run", OTHER), ("run-1", UNIT)]
    assert log.live.run("run-1") == {
        "run_id": "run-1", "engine_id": UNIT, "engine_name": "host-7 (DemoUod)", "engine_computer_name": "host-7",
        "engine_version": "0.1.0", "engine_hardware_str": "Simulated", "uod_name": "DemoUod",
        "uod_filename": "demo_uod.py", "uod_author_name": "Ada Author", "uod_author_email": "ada@example.com",
        "location": "Lab 1, bench 3", "required_roles": ["operator"], "aggregator_computer_name": "agg-host",
        "aggregator_version": "1.2.3", "started_date": "2025-01-09T19:13:30.000Z",
        "completed_date": "2025-01-09T19:15:00.000Z", "interrupted": None,
        # Carol's request was refused: she changed nothing, so she is not a contributor.
        "contributors": [{"id": "u-alice", "name": "Alice"}, {"id": "u-bob", "name": "Bob"}]}
    assert log.live.run("run-2")["completed_date"] is None
    assert log.live.run("nope") is None


def test_audit_trail_says_who_did_what_when(log: Log):
    trail = log.live.audit_trail("run-1")
    assert [(e["time"][11:19], e["actor"]["name"], e["what"]) for e in trail] == [
        ("19:13:30", UNIT, "state changed"),
        ("19:13:50", "Alice", "save_method"), ("19:13:50", "Alice", "method revised"),
        ("19:14:00", "Bob", "save_method"), ("19:14:00", "Bob", "method revised"),
        ("19:14:01", "Alice", "inject"), ("19:14:05", "Carol", "control"),
        ("19:14:13", UNIT, "state changed"), ("19:14:31", UNIT, "state changed")]
    assert trail[0]["detail"] == {"old": {"system_state": "Stopped", "method_status": "OK"},
                                  "new": {"system_state": "Running", "method_status": "OK"}}
    assert trail[2] == {"time": "2025-01-09T19:13:50.000Z", "actor": {"kind": "user", "id": "u-alice", "name": "Alice"},
                        "what": "method revised", "detail": {"old_version": 1, "new_version": 2, "base_version": 1}}
    assert trail[6]["detail"] == {"asked": {"name": "Pause"}, "accepted": False,
                                  "reason": "Engine is not in a state to receive that command"}
    assert trail[7]["detail"]["new"] == {"system_state": "Paused", "method_status": "Error"}


def test_deltas_say_what_changed_for_live_browsers():
    log = Log()
    story(log)
    deltas = log.emit(samples(UNIT, "run-1", (at(56), {"FT01": 11.0}), (at(57), {"FT01": 11.5, "PU01": 40.0})))
    assert deltas == [Delta(UNIT, "values", {"FT01": {"value": 11.5, "time": "2025-01-09T19:14:17.000Z"},
                                             "PU01": {"value": 40.0, "time": "2025-01-09T19:14:17.000Z"}})]
    # Logs send only what changed, named by run, to be merged by id.
    completed = item(2, "PU01", "completed", at(20), at(58))
    deltas = log.emit(RunLogChanged(time=at(58), unit=UNIT, run="run-1", actor=ENGINE, items=[completed]))
    assert deltas == [Delta(UNIT, "run_log", {"run": "run-1", "changed": [completed]})]
    assert log.live.run_log(UNIT)[1] == completed
    assert log.emit(request(59, "run-1", CAROL, "control", {"name": "Stop"}, accepted=False)) == []
    deltas = log.emit(request(60, "run-1", CAROL, "control", {"name": "Unpause"}))
    assert [(d.unit, d.topic) for d in deltas] == [(UNIT, "units"), (None, "runs")]
    assert deltas[1].data["contributors"][-1] == {"id": "u-carol", "name": "Carol"}
    deltas = log.emit(error(61, "run-1", "error", "Valve stuck"))
    assert deltas == [Delta(UNIT, "error_log", {"run": "run-1", "changed": [log.live.error_log(UNIT)[0]]})]
    assert deltas[0].data["changed"][0]["occurrences"] == 2
    deltas = log.emit(RunStopped(time=at(62), unit=UNIT, run="run-1", actor=ENGINE))
    assert [(d.unit, d.topic) for d in deltas] == [(UNIT, "units"), (UNIT, "control_state"), (UNIT, "method"),
                                                   (UNIT, "run_log"), (UNIT, "error_log"), (None, "runs")]
    assert deltas[3].data == deltas[4].data == {"run": None, "changed": []}
    assert deltas[2].data == log.live.method(UNIT) and deltas[2].data["line_states"] == {}
    # A late error of the finished run lands in that run, and no live view changes.
    assert log.emit(error(63, "run-1", "error", "late")) == []
    assert log.live.run_error_log("run-1")[0]["message"] == "late"


def test_duplicate_and_stray_run_events_change_nothing(log: Log):
    def state_of(projector: Projector) -> dict:
        return {key: value for key, value in json.loads(projector.snapshot()).items() if key != "position"}

    before = state_of(log.live)
    # At the time of the last event, so that not even last_seen moves.
    assert log.emit(RunStarted(time=at(211), unit=UNIT, run="run-2", actor=ENGINE)) == []
    assert log.emit(RunStopped(time=at(211), unit=UNIT, run="run-1", actor=ENGINE)) == []
    assert state_of(log.live) == before


def test_positions_must_increase(log: Log):
    first = next(log.store.iter())
    with pytest.raises(AssertionError):
        log.live.apply(first)


def test_a_projection_rebuilt_from_zero_equals_the_live_one_byte_for_byte(log: Log):
    replayed = Projector("agg-host", "1.2.3")
    assert replayed.replay(log.store.iter()) == log.store.last_position()
    assert replayed.position == log.live.position == log.store.last_position()
    assert replayed.snapshot() == log.live.snapshot()
    snapshot = json.loads(log.live.snapshot())
    assert set(snapshot) == {"position", "units", "runs"} and set(snapshot["runs"]) == {"run-1", "run-2", "other-run"}


def test_the_changes_of_a_busy_log_stay_the_same_size_however_long_the_run():
    """Errors that never repeat back to back, run-log progress, samples and state changes: the
    logs grow all along, and the deltas must not (each carries only what changed)."""
    log = Log()
    story(log)
    finish_first_run(log)

    def busy(i: int) -> DomainEvent:
        t = 300 + i
        match i % 4:
            case 0:
                return error(t, "run-2", "warning", f"Alarm {i % 3}")
            case 1:
                return RunLogChanged(time=at(t), unit=UNIT, run="run-2", actor=ENGINE,
                                     items=[item(i % 50, "Wait", "started", at(t))])
            case 2:
                return samples(UNIT, "run-2", (at(t), {"FT01": float(i), "Mark": str(i)}))
        return state(t, "run-2", "Paused" if i % 8 == 3 else "Running")

    def size(deltas: list[Delta]) -> int:
        return len(json.dumps([delta.data for delta in deltas]))

    early = size(log.emit(*(busy(i) for i in range(1_000))))
    log.emit(*(busy(i) for i in range(1_000, 19_000)))
    late = size(log.emit(*(busy(i) for i in range(19_000, 20_000))))
    # The last thousand changes say as much as the first thousand (a little more: longer numbers),
    # not the whole grown logs.
    assert early <= late < early * 1.2
    replayed = Projector("agg-host", "1.2.3")
    replayed.replay(log.store.iter())
    assert replayed.snapshot() == log.live.snapshot()
    assert len(replayed.run_error_log("run-2")) == 5_001


def parse(rows: list[str]) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(rows), newline="")))


def test_csv_of_a_run_has_metadata_stable_columns_and_forward_filled_rows(log: Log):
    rows = list(csv_rows(log.store.iter(), "run-1", log.live))
    assert all(row.endswith("\r\n") and "\n" not in row[:-2] for row in rows)  # one CRLF row per string
    table = parse(rows)
    assert table[:15] == [
        ["# Run Id", "run-1"], ["# Engine Id", UNIT], ["# Engine Name", "host-7 (DemoUod)"],
        ["# Engine Computer Name", "host-7"], ["# Open Pectus Engine Version", "0.1.0"],
        ["# Engine Hardware string", "Simulated"], ["# UOD Author Name", "Ada Author"],
        ["# UOD Author Email", "ada@example.com"], ["# UOD File Name", "demo_uod.py"],
        ["# Aggregator Computer Name", "agg-host"], ["# Open Pectus Aggregator Version", "1.2.3"],
        ["# Started Date (UTC)", "2025-01-09T19:13:30.000Z"], ["# Completed Date (UTC)", "2025-01-09T19:15:00.000Z"],
        ["# Contributors", "Alice", "Bob"], []]
    # The UOD's tag order, then the tag seen only in samples; no "[]" for an empty unit.
    assert table[15] == ["Time (UTC)", "Run Time [s]", "System State", "FT01 [L/h]", "PU01 [%]", "Valve", "Block",
                         "Mark"]
    assert table[16:] == [
        ["2025-01-09T19:13:30.000Z", "0.0", "Running", "0.0", "0.0", "Closed", "", ""],
        ["2025-01-09T19:13:35.000Z", "5.0", "Running", "10.5", "0.0", "Closed", "Equilibrate", ""],
        ["2025-01-09T19:13:40.000Z", "10.0", "Running", "10.5", "50.0", "Closed", "Equilibrate", "A, first"],
        ["2025-01-09T19:14:35.000Z", "65.0", "Running", "12.0", "50.0", "Open", "Equilibrate", ""]]
    assert '"A, first"' in rows[-2]  # a value with a comma is quoted
    # Marks show in the row where they were made, never forward-filled.
    with pytest.raises(KeyError):
        csv_rows(log.store.iter(), "nope", log.live)


def test_csv_quotes_cells_as_the_csv_module_reads_them(log: Log):
    tricky = {"Block": "a,b", "Valve": "", "PU01": True, "FT01": None, "Mark": "said"}
    log.emit(RunLogChanged(time=at(219), unit=UNIT, run="run-2", actor=ENGINE,
                           items=[item(7, 'Mark: said "stop"\r\nnow', "completed", at(219), at(219))]),
             samples(UNIT, "run-2", (at(220), tricky)))
    table = parse(list(csv_rows(log.store.iter(), "run-2", log.live)))
    assert dict(zip(table[15], table[-1])) == {
        "Time (UTC)": "2025-01-09T19:17:00.000Z", "Run Time [s]": "10.0", "System State": "", "FT01 [L/h]": "",
        "PU01 [%]": "True", "Valve": "", "Block": "a,b", "Mark": 'said "stop"\r\nnow'}


def test_jsonl_holds_the_runs_raw_events_in_order(log: Log):
    lines = list(jsonl_lines(log.store.iter(), "run-1"))
    events = [json.loads(line) for line in lines]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    positions = [event["position"] for event in events]
    assert positions == sorted(positions) and len(positions) == len(set(positions))
    assert {event["data"]["run"] for event in events} == {"run-1"}
    assert events[0]["type"] == "RunStarted" and events[-1]["type"] == "RunStopped"
    stored = {record.position: record for record in log.store.iter()}
    for event in events:
        record = stored[event["position"]]
        assert (event["hash"], event["prev_hash"], event["type"], event["time"], event["data"]) == (
            record.hash, record.prev_hash, record.type, record.time, record.data)


# -- a day of one-second samples of 200 tags -------------------------------------------------------

DAY_TAGS = [f"TAG{i:03d}" for i in range(200)]
DAY_SAMPLES = 24 * 3600
CHANGED_PER_SAMPLE = 20  # a sample carries only what changed: each tag changes every 10 s
PER_EVENT = 10  # samples batched per stored event
PERIOD = 600  # the values repeat every 10 minutes


def day_value(tag: int, second: int) -> float:
    return round((tag * 31 + second % PERIOD) * 0.137, 3)


def day_changes(second: int) -> dict[str, float]:
    changed = range(200) if second == 0 else (
        (second * CHANGED_PER_SAMPLE + k) % 200 for k in range(CHANGED_PER_SAMPLE))
    return {DAY_TAGS[tag]: day_value(tag, second) for tag in changed}


# Made once and shared by the samples that repeat them, so that making the records allocates
# little: tracemalloc then measures the exporter, not the test's own generator.
DAY_CHANGES = [day_changes(second) for second in range(PERIOD)]


def day_records(after: int) -> Iterator[Record]:
    """The run's samples and its stop, made on the fly: the store is not what is measured here."""
    positions = itertools.count(after + 1)
    # One event's payload as the template of all: to_data() deep-copies, too slow for 8,640.
    template = samples(UNIT, "day", (at(0), {})).to_data()
    for first in range(0, DAY_SAMPLES, PER_EVENT):
        rows = [{"time": at(second), "values": day_changes(0) if second == 0 else DAY_CHANGES[second % PERIOD]}
                for second in range(first, first + PER_EVENT)]
        data = {**template, "time": rows[-1]["time"], "samples": rows}
        yield Record(next(positions), f"unit:{UNIT}", 0, TagSamples.type, data["time"], data, "", "")
    stop = RunStopped(time=at(DAY_SAMPLES), unit=UNIT, run="day", actor=ENGINE)
    yield Record(next(positions), stop.stream, 0, stop.type, stop.time, stop.to_data(), "", "")


def test_a_day_of_200_tags_replays_and_exports_with_flat_memory():
    log = Log()
    unit = described(UNIT)
    plot = {**PLOT, "sub_plots": [{"ratio": 1, "axes": [{"label": "Flow", "process_value_names": DAY_TAGS[:3],
                                                         "y_max": 1, "y_min": 0, "color": "#1F77B4"}]}]}
    log.emit(EngineRegistered(time=at(0), unit=UNIT, actor=ENGINE, computer_name="host-7", uod_name="DemoUod",
                              engine_version="0.1.0", protocol=1),
             UodDescribed(**{**unit.to_data(), "actor": ENGINE, "readings": [], "plot_configuration": plot,
                             "tags": [{"name": name, "unit": "bar", "direction": "Input"} for name in DAY_TAGS]}),
             RunStarted(time=at(0), unit=UNIT, run="day", actor=ENGINE),
             request(0, "day", ALICE, "control", {"name": "Start"}))
    header = log.store.last_position()

    def export() -> Iterator[str]:
        return csv_rows(itertools.chain(log.store.iter(), day_records(header)), "day", log.live)

    for record in day_records(header):
        log.live.apply(record)
    count, last = 0, ""
    for row in export():
        count, last = count + 1, row

    tracemalloc.start()
    for _ in export():
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert count == 14 + 1 + 1 + DAY_SAMPLES
    (row,) = parse([last])
    final = DAY_SAMPLES - 1
    # Every tag holds the value of the last sample that changed it (each changes once in 10 s).
    expected = {tag: second for second in range(final - 9, final + 1) for tag in range(200)
                if DAY_TAGS[tag] in DAY_CHANGES[second % PERIOD]}
    assert row == ["2025-01-10T19:13:19.000Z", *(str(day_value(tag, expected[tag])) for tag in range(200))]
    assert log.live.run("day")["contributors"] == [{"id": "u-alice", "name": "Alice"}]
    assert peak < 20e6


def test_a_run_the_engine_came_back_without_ends_where_its_record_ends(log: Log):
    log.emit(RunInterrupted(time=at(900), unit=UNIT, run="run-2", reason="the engine came back without this run"))
    run = log.live.run("run-2")
    assert run["completed_date"] == iso(at(211)) and "came back without" in run["interrupted"]
    assert log.live.unit(UNIT)["run_id"] is None
    assert log.emit(RunInterrupted(time=at(901), unit=UNIT, run="run-1", reason="late")) == []  # ended already


def test_a_new_run_while_one_is_open_interrupts_it_at_its_last_event_not_at_the_new_start(log: Log):
    log.emit(RunStarted(time=at(500), unit=UNIT, run="run-3", actor=ENGINE))
    assert log.live.run("run-2")["completed_date"] == iso(at(211))
    assert log.live.run("run-2")["interrupted"] == "a new run started before it ended"
    assert log.live.unit(UNIT)["run_id"] == "run-3"


def test_the_engines_method_outside_the_open_run_leaves_that_runs_method_alone(log: Log):
    before = log.live.run_method("run-2")
    log.emit(MethodRevised(time=at(300), unit=UNIT, actor=ENGINE, version=0, lines=[]))
    assert log.live.method(UNIT)["version"] == 0  # the unit shows the engine's method
    assert log.live.run_method("run-2")["lines"] == before["lines"]


def test_a_request_is_audited_before_its_answer_and_the_answer_completes_it(log: Log):
    asked = UserRequested(time=at(220), unit=UNIT, run="run-2", actor=CAROL, request="control",
                          detail={"command": "Pause"}, request_id="r1")
    log.emit(asked)
    entry = log.live.audit_trail("run-2")[-1]
    assert entry["detail"] == {"asked": {"command": "Pause"}, "accepted": None, "reason": ""}
    assert "u-carol" not in {c["id"] for c in log.live.run("run-2")["contributors"]}
    log.emit(RequestAnswered(time=at(221), unit=UNIT, run="run-2", actor=CAROL, request_id="r1", request="control",
                             accepted=True))
    assert log.live.audit_trail("run-2")[-1]["detail"]["accepted"] is True
    assert "u-carol" in {c["id"] for c in log.live.run("run-2")["contributors"]}


def test_a_refused_record_shows_in_the_error_log_of_the_open_run(log: Log):
    log.emit(RecordRefused(time=at(230), unit=UNIT, run="run-2", actor=ENGINE, seq=9, kind="samples",
                           reason="Expected `array`, got `str` - at `$.data.samples`"))
    assert "samples record from the engine was refused" in log.live.error_log(UNIT)[0]["message"]


def test_an_event_that_cannot_be_folded_is_skipped_and_listed_and_the_rest_still_show(log: Log):
    poison = [NewEvent(f"unit:{UNIT}", "RunLogChanged", at(240), {**RunLogChanged(
        time=at(240), unit=UNIT, run="run-2", actor=ENGINE, items=[]).to_data(), "items": "not a list"}),
              NewEvent(f"unit:{UNIT}", "TagSamples", at(241), {**samples(UNIT, "run-2", (at(241), {})).to_data(),
                                                                "samples": 7}),
              NewEvent(f"unit:{UNIT}", "NoSuchEvent", at(242), {"unit": UNIT})]
    for record in log.store.append(poison):
        assert log.live.apply(record) == []
    log.emit(error(243, "run-2", "error", "after the poison"))
    assert [entry["type"] for entry in log.live.unfoldable] == ["RunLogChanged", "TagSamples", "NoSuchEvent"]
    assert log.live.error_log(UNIT)[0]["message"] == "after the poison"
    replayed = Projector("agg-host", "1.2.3")
    replayed.replay(log.store.iter())
    assert replayed.unfoldable == log.live.unfoldable


def test_the_csv_mark_column_shows_each_runs_marks_in_the_row_they_were_made(log: Log):
    """Two marks between two rows share the later row; a mark repeated in a later event of the same
    item is not counted again; the next run starts without them."""
    mark = lambda id_, text, t: item(id_, f"Mark: {text}", "completed", at(t), at(t))  # noqa: E731
    log.emit(RunLogChanged(time=at(212), unit=UNIT, run="run-2", actor=ENGINE, items=[mark(8, "x", 212)]),
             RunLogChanged(time=at(213), unit=UNIT, run="run-2", actor=ENGINE, items=[mark(9, "y", 213)]),
             samples(UNIT, "run-2", (at(214), {"FT01": 4.0, "Mark": "y"})),  # the tag: the current mark
             RunLogChanged(time=at(215), unit=UNIT, run="run-2", actor=ENGINE, items=[mark(9, "y", 213)]),
             samples(UNIT, "run-2", (at(216), {"FT01": 5.0})),
             RunStopped(time=at(217), unit=UNIT, run="run-2", actor=ENGINE),
             RunStarted(time=at(300), unit=UNIT, run="run-3", actor=ENGINE),
             samples(UNIT, "run-3", (at(301), {"FT01": 6.0, "Mark": None})))
    marks = lambda run: [row[-1] for row in parse(list(csv_rows(log.store.iter(), run, log.live)))[16:]]  # noqa: E731
    assert marks("run-2") == ["", "x; y", ""] and marks("run-3") == [""]


def test_run_log_changes_merge_into_their_items_and_progress_steps_move_them(log: Log):
    started = {**item(20, "Wait: 60 s", "started", at(220)), "start_values": {"FT01": 1.0}}
    log.emit(RunLogChanged(time=at(220), unit=UNIT, run="run-2", actor=ENGINE, items=[started]))
    deltas = log.emit(RunLogChanged(time=at(221), unit=UNIT, run="run-2", actor=ENGINE,
                                    progress=[{"id": 20, "progress": 0.5, "time": at(221)}, {"id": 99, "progress": 0.1,
                                                                                             "time": at(221)}]))
    (merged,) = [entry for entry in log.live.run_log(UNIT) if entry["id"] == 20]
    assert merged["progress"] == 0.5 and merged["start_values"] == {"FT01": 1.0}
    assert deltas == [Delta(UNIT, "run_log", {"run": "run-2", "changed": [merged]})]  # the unknown id is ignored
    ended = {**item(20, "Wait: 60 s", "completed", at(220), at(280)), "end_values": {"FT01": 2.0}}
    log.emit(RunLogChanged(time=at(280), unit=UNIT, run="run-2", actor=ENGINE, items=[ended]))
    (merged,) = [entry for entry in log.live.run_log(UNIT) if entry["id"] == 20]
    assert merged["start_values"] == {"FT01": 1.0} and merged["end_values"] == {"FT01": 2.0}


def test_the_start_that_began_a_run_is_in_its_audit_even_when_its_answer_comes_before_the_run(log: Log):
    """A Start is asked outside any run; the engine's answer names the new run, which the engine's
    records (sent half a second later) start: the request joins that run's audit when it starts."""
    log.emit(RunStopped(time=at(250), unit=UNIT, run="run-2", actor=ENGINE),
             UserRequested(time=at(260), unit=UNIT, actor=CAROL, request="control", detail={"command": "Start"},
                           request_id="start-3"),
             RequestAnswered(time=at(260.1), unit=UNIT, run="run-3", actor=CAROL, request_id="start-3",
                             request="control", accepted=True))
    assert log.live.run("run-3") is None
    log.emit(RunStarted(time=at(260.05), unit=UNIT, run="run-3", actor=ENGINE))
    (entry,) = log.live.audit_trail("run-3")
    assert entry["actor"]["name"] == "Carol" and entry["detail"]["accepted"] is True
    assert [c["name"] for c in log.live.run("run-3")["contributors"]] == ["Carol"]
