"""The engine's outbox and the records the uplink builds from the engine's events."""

from __future__ import annotations

from conftest import DEMO_UOD
from pectus.actors.uplink import Outbox, RecordBuilder
from pectus.testing import Simulator


def test_the_outbox_keeps_records_until_acknowledged_and_never_reuses_a_number(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    assert outbox.append([{"kind": "state", "time": 1.0, "run": None, "data": {"n": i}} for i in range(3)]) == 3
    assert [r["seq"] for r in outbox.pending(0)] == [1, 2, 3]
    assert [r["data"]["n"] for r in outbox.pending(1)] == [1, 2]
    outbox.ack(3)
    assert outbox.pending(0) == [] and outbox.count() == 0
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite3")  # an engine restart
    assert reopened.append([{"kind": "state", "time": 2.0, "run": None, "data": {}}]) == 4
    assert reopened.pending(0)[0]["seq"] == 4


def test_records_follow_the_run_and_sample_tags_once_per_data_log_interval():
    # The Simulator drains the engine's events; the builder is fed each tick's share, as the uplink is.
    sim = Simulator(DEMO_UOD, "Mark: A\nWait: 2.5 s\nMark: B\nStop")
    builder = RecordBuilder(sim.engine)
    sim.start()
    records, live_names = [], set()
    while not any(r["kind"] == "run_stopped" for r in records):
        before = len(sim.events)
        sim.run_ticks(1)
        batch, live = builder.feed(sim.events[before:]) if len(sim.events) > before else ([], [])
        records += batch
        live_names |= {value["name"] for value in live}
        assert sim.time < 10
    kinds = [r["kind"] for r in records]
    started, stopped = kinds.index("run_started"), kinds.index("run_stopped")
    assert kinds[:started] == ["method"]  # the method loaded before Start
    assert kinds[stopped + 1:] == ["state"]  # Stopped: outside the run
    assert {"state", "runlog", "lines", "samples"} <= set(kinds)
    samples = [r for r in records if r["kind"] == "samples"]
    times = [s["data"]["samples"][0]["time"] for s in samples]
    assert all(b - a >= 0.999 for a, b in zip(times, times[1:-1]))  # the demo logs once a second
    assert "FT01" in samples[0]["data"]["samples"][0]["values"]  # the first sample has every tag
    assert {"Process Time", "System State"} <= live_names  # live values go out every tick
    run = records[started]["run"]
    assert run and all(r["run"] == run for r in records[started:stopped + 1]) and records[-1]["run"] is None
    marks = [item["name"] for r in records if r["kind"] == "runlog" for item in r["data"]["items"]
             if item["state"] == "completed" and item["name"].startswith("Mark")]
    assert marks == ["Mark: A", "Mark: B"]


def test_the_uod_description_names_tags_units_readings_and_commands():
    sim = Simulator(DEMO_UOD)
    record = RecordBuilder(sim.engine).describe(0.0)
    data = record["data"]
    assert record["kind"] == "uod" and data["uod_name"] == "DemoUod"
    assert {"name": "FT01", "unit": "L/h", "direction": "input"} in data["tags"]
    assert any(r["tag_name"] == "PU01" and r["kind"] == "reading_with_entry" for r in data["readings"])
    assert any(c["name"] == "Reset" for c in data["commands"])
    assert data["data_log_interval_seconds"] == 1.0
