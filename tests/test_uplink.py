"""The engine's outbox, the records the uplink builds from the engine's events, and when it sends them."""

from __future__ import annotations

import json

import trio

from conftest import DEMO_UOD, demo_aggregator, demo_unit, wait_for
from pectus.actors.uplink import Outbox, RecordBuilder
from pectus.events.protocol import RefusedRecord
from pectus.events.records import MAX_RECORD, check_record
from pectus.testing import Simulator


def state(time: float, system_state: str = "Running") -> dict:
    return {"kind": "state", "time": time, "run": None, "data": {"system_state": system_state, "method_status": "OK"}}


def seqs(batch: list[tuple[int, str]]) -> list[int]:
    return [seq for seq, _ in batch]


def test_the_outbox_keeps_records_until_acknowledged_and_never_reuses_a_number(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    assert outbox.append([state(1.7e9 + i, f"S{i}") for i in range(3)]) == 3
    assert seqs(outbox.pending(0, 1 << 20)) == [1, 2, 3] and outbox.newest() == 3
    assert [json.loads(text)["data"]["system_state"] for _, text in outbox.pending(1, 1 << 20)] == ["S1", "S2"]
    outbox.ack(3)
    assert outbox.pending(0, 1 << 20) == [] and outbox.count() == 0 and outbox.newest() == 3
    identity = outbox.id
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite3")  # an engine restart: the same outbox
    assert reopened.id == identity and reopened.append([state(1.7e9)]) == 4
    assert seqs(reopened.pending(0, 1 << 20)) == [4]
    assert Outbox(tmp_path / "new.sqlite3").id != identity  # a new file is a new outbox


def test_frames_are_filled_by_bytes_and_always_carry_at_least_one_record(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    wide = {"kind": "samples", "time": 1.7e9, "run": None,
            "data": {"samples": [{"time": 1.7e9, "values": {f"TAG{n:04}": 1.5 * n for n in range(1014)}}]}}
    outbox.append([wide] * 10)
    size = len(outbox.pending(0, 1)[0][1].encode()) + 1
    assert seqs(outbox.pending(0, 1)) == [1]  # one record even when it alone is over the budget
    assert seqs(outbox.pending(0, 3 * size)) == [1, 2, 3]
    assert all(check_record(text) for _, text in outbox.pending(0, 1 << 20))


def test_a_record_that_cannot_be_stored_goes_to_the_dead_letter_file_and_the_rest_go_on(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    surrogate = {"kind": "method", "time": 1.7e9, "run": None, "data": {"version": 1, "lines": [
        {"id": "a", "text": "Mark: \ud800"}]}}
    huge = {"kind": "error", "time": 1.7e9, "run": None,
            "data": {"severity": "error", "message": "x" * (MAX_RECORD + 1), "line": None}}
    outbox.append([state(1.7e9), surrogate, huge, state(1.7e9 + 1)])
    kinds = [json.loads(text)["kind"] for _, text in outbox.pending(0, 1 << 20)]
    assert kinds == ["state", "error", "error", "state"]  # each bad one replaced by an error that says so
    messages = [json.loads(text)["data"]["message"] for _, text in outbox.pending(0, 1 << 20)[1:3]]
    assert "a method record could not be recorded" in messages[0] and "dead-letter" in messages[0]
    assert "over the limit" in messages[1]
    buried = [json.loads(line) for line in outbox.dead_letter.read_text().splitlines()]
    assert [entry["record"]["kind"] for entry in buried] == ["method", "error"]
    outbox.ack(3, [RefusedRecord(4, "run 'x' was not started by this unit")])  # 4 is beyond the ack: kept
    outbox.ack(4, [RefusedRecord(4, "run 'x' was not started by this unit")])
    buried = [json.loads(line) for line in outbox.dead_letter.read_text().splitlines()]
    assert buried[-1]["seq"] == 4 and "refused by the aggregator" in buried[-1]["reason"]
    assert outbox.count() == 0


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
    marks = [item["name"] for r in records if r["kind"] == "runlog" for item in r["data"].get("items", ())
             if item["state"] == "completed" and item["name"].startswith("Mark")]
    assert marks == ["Mark: A", "Mark: B"]
    for seq, record in enumerate([*builder.present(sim.time), *records], start=1):  # what the aggregator checks
        check_record(json.dumps({"seq": seq, **record}))


def test_the_uod_description_names_tags_units_readings_and_commands():
    sim = Simulator(DEMO_UOD)
    record = RecordBuilder(sim.engine).describe(0.0)
    data = record["data"]
    assert record["kind"] == "uod" and data["uod_name"] == "DemoUod"
    assert {"name": "FT01", "unit": "L/h", "direction": "input"} in data["tags"]
    assert any(r["tag_name"] == "PU01" and r["kind"] == "reading_with_entry" for r in data["readings"])
    assert any(c["name"] == "Reset" for c in data["commands"])
    assert data["data_log_interval_seconds"] == 1.0


def test_a_long_wait_is_recorded_by_its_steps_and_its_snapshots_travel_once():
    """A 60 s Wait ticks 600 times; its record: the item whole at start (with every tag) and at the
    end (with every tag), and progress steps of at least 1 %, at most four a second."""
    sim = Simulator(DEMO_UOD, "Wait: 60 s\nStop")
    builder = RecordBuilder(sim.engine)
    sim.start()
    records = []
    while not any(r["kind"] == "run_stopped" for r in records):
        before = len(sim.events)
        sim.run_ticks(1)
        if len(sim.events) > before:
            records += builder.feed(sim.events[before:])[0]
    runlog = [r["data"] for r in records if r["kind"] == "runlog"]
    wait = [item for data in runlog for item in data.get("items", ()) if item["name"] == "Wait: 60 s"]
    steps = [step for data in runlog for step in data.get("progress", ())]
    assert [item["state"] for item in wait] == ["started", "completed"]
    assert "start_values" in wait[0] and "end_values" in wait[1] and "start_values" not in wait[1]
    assert 80 <= len(steps) <= 100  # about one per percent (not one per tick: 600)
    progress = [step["progress"] for step in steps]
    assert all(b - a >= 0.01 - 1e-9 for a, b in zip(progress, progress[1:]))
    times = [step["time"] for step in steps]
    assert all(b - a >= 0.25 - 1e-9 for a, b in zip(times, times[1:]))
    for seq, record in enumerate(records, start=1):
        check_record(json.dumps({"seq": seq, **record}))


def test_what_a_persons_request_did_is_sent_at_once_not_at_the_end_of_an_interval(tmp_path, monkeypatch):
    """The outbox is written every FLUSH_INTERVAL and live values go out every LIVE_INTERVAL; the
    tick after a request was applied is the exception (a person waits for it). With both
    intervals a minute long, a run started from the API is in the aggregator's store, and a pump
    set from the API shows in the unit's values, within seconds: only the exception can have
    sent them."""
    monkeypatch.setattr("pectus.actors.uplink.FLUSH_INTERVAL", 60.0)
    monkeypatch.setattr("pectus.actors.uplink.LIVE_INTERVAL", 60.0)
    aggregator = demo_aggregator(tmp_path)

    def stored(kind: str) -> bool:
        return any(record.type == kind for record in aggregator.store.read())

    async def main() -> None:
        async with demo_unit(tmp_path, aggregator) as unit:
            async def pump_shown() -> bool:
                return any(v["name"] == "PU01" and v["value"] == 30.0 for v in await unit.get("/process_values"))
            with trio.fail_after(50):  # well inside the minute: whatever comes, comes by the exception
                started = await unit.api.post(f"{unit.base}/control", json={"command": "Start"})
                assert started.status_code == 200, started.text
                await wait_for(lambda: stored("RunStarted"), timeout=10)
                pumped = await unit.api.post(f"{unit.base}/process_values/PU01", json={"value": 30, "unit": "%"})
                assert pumped.status_code == 200, pumped.text
                await wait_for(pump_shown, timeout=10)

    trio.run(main)
