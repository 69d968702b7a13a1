"""Attacks on the engine socket: frames no honest engine sends, from a raw client, against a real
aggregator process.

Invariants shown: a record that fails its schema, or names a run its unit did not start, is not
stored (a RecordRefused event takes its place and the ack lists it); a frame that is not valid
JSON or nests too deeply closes the session with a logged reason and stores nothing; the
aggregator keeps running and restarts on its store with every route answering; failed
handshakes from one address are throttled; every warning names its reason.
"""

from __future__ import annotations

import json
import re

import trio

from attack_harness import (T0, Fleet, RawEngine, completed, failing_gets, of_unit, patiently, record,
                            run_ids, runlog_data, samples_data, state_data, uod_data)

RUN = "r1"


def _without(data: dict, path: tuple, key: str) -> dict:
    """``data`` with ``key`` removed from the dict found at ``path`` (keys and list indexes)."""
    data = json.loads(json.dumps(data))
    target = data
    for step in path:
        target = target[step]
    del target[key]
    return data


# A valid envelope, content that is not: each is what the issue saw stored, then crash the projector.
BAD_RECORDS = {
    "samples as a string": record("samples", {"samples": "1,2,3"}, run=RUN),
    "samples as a list of numbers": record("samples", {"samples": [1, 2]}, run=RUN),
    "a sample without time": record("samples", _without(samples_data({"FT01": 1.0}), ("samples", 0), "time"), run=RUN),
    "a sample time as a string": record("samples", {"samples": [{"time": "noon", "values": {"FT01": 1.0}}]}, run=RUN),
    "a sample time of 1e300": record("samples", samples_data({"FT01": 1.0}, time=1e300), run=RUN),
    "a run-log item without id": record("runlog", _without(runlog_data(7, "Mark: x"), ("items", 0), "id"), run=RUN),
    "UOD tags as strings": record("uod", {**uod_data(), "tags": ["FT01", "TT01"]}),
    "line states as a list": record("lines", {"version": 0, "states": ["1", "2"]}, run=RUN),
    "method lines as a string": record("method", {"version": 0, "lines": "Mark: a"}),
    "a time of 1e300": record("state", state_data("Running"), run=RUN, time=1e300),
    "a time of -1e300": record("state", state_data("Running"), run=RUN, time=-1e300),
    "required_roles as a string": record("uod", {**uod_data(), "required_roles": "Admin"}),
    "a run started without its id": record("run_started", {}),
}
# Not JSON at all (json.dumps writes NaN, JSON has no such number): the whole frame is refused.
NAN_FRAME = ('{"type":"records","records":[{"seq":%d,"kind":"samples","time":NaN,"run":"r1",'
             '"data":{"samples":[{"time":NaN,"values":{"FT01":NaN}}]}}]}')


def test_records_with_bad_content_are_refused_and_the_aggregator_restarts_on_its_store(tmp_path):
    """Finding 1. Without the fix: the bad records are stored and acknowledged, the projector
    raises on them and the process ends; restarted, replay raises again, /health never answers."""
    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator()
            await aggregator.serving()
            rogue = RawEngine(aggregator.port)
            async with rogue.session() as session:
                good = [record("uod", uod_data()), record("run_started", {}, run=RUN),
                        record("state", state_data("Running"), run=RUN),
                        record("samples", samples_data({"FT01": 2.5}), run=RUN)]
                ack = await session.send_records(good)
                assert ack == {"type": "ack", "seq": 4, "refused": []}
                ack = await session.send_records(list(BAD_RECORDS.values()))
            bad_seqs = list(range(5, 5 + len(BAD_RECORDS)))
            assert ack["type"] == "ack" and ack["seq"] == bad_seqs[-1]
            assert [refusal["seq"] for refusal in ack["refused"]] == bad_seqs, ack
            assert all(refusal["reason"] for refusal in ack["refused"])

            async with rogue.session() as session:
                assert await session.send_text(NAN_FRAME % (rogue.seq + 1)) is None  # closed
            async with rogue.session() as session:
                assert session.answer["last_seq"] == bad_seqs[-1]  # nothing of the NaN frame stored

            assert aggregator.running
            async with aggregator.api() as api:
                assert (await api.get("/health")).status_code == 200
                await aggregator.restart()
                assert (await api.get("/health")).status_code == 200
                assert await failing_gets(api, "rogue_Unit", RUN) == {}
                unit = (await api.get("/api/process_units/rogue_Unit")).json()
                assert unit["required_roles"] == []  # not the roles A, d, m, i, n
                csv = (await api.get(f"/api/runs/{RUN}/csv")).text
                assert "2.5" in csv and "noon" not in csv

            events = of_unit(aggregator.events(), "rogue_Unit")
            refused = [e["data"] for e in events if e["type"] == "RecordRefused"]
            assert [r["seq"] for r in refused] == bad_seqs and all(r["reason"] for r in refused)
            assert not [e for e in events if e["data"].get("seq") in bad_seqs and e["type"] != "RecordRefused"]

    trio.run(main)


def test_records_naming_another_units_run_are_refused_and_never_shown_in_it(tmp_path):
    """Finding 3. Without the fix: the rogue's mark is in the victim's run log and its value in
    the victim's CSV, and its run_stopped ends the victim's run."""
    async def main():
        with Fleet(tmp_path) as fleet:
            async with fleet.a_unit_online() as (aggregator, victim, api):
                control = f"/api/process_units/{victim.unit}/control"
                assert (await api.post(control, json={"command": "Start"})).status_code == 200
                (run,) = await patiently(lambda: run_ids(api, victim.unit))

                rogue = RawEngine(aggregator.port)
                forged = [record("uod", uod_data([("FT01", "L/h")])),
                          record("runlog", runlog_data(1, "Mark: FORGED", time=T0), run=run),
                          record("samples", samples_data({"FT01": "FORGED-VALUE"}), run=run),
                          record("run_started", {}, run=run),  # a run id is started once, by its unit
                          record("run_stopped", {}, run=run)]
                ack = await rogue.send(forged)
                assert [refusal["seq"] for refusal in ack["refused"]] == [2, 3, 4, 5], ack

                assert (await api.post(control, json={"command": "Stop"})).status_code == 200
                await patiently(lambda: completed(api, run))
                run_log = (await api.get(f"/api/runs/{run}/run_log")).text
                csv = (await api.get(f"/api/runs/{run}/csv")).text
                assert "FORGED" not in run_log and "FORGED" not in csv
                assert "FORGED" not in (await api.get(f"/api/runs/{run}/events.jsonl")).text
                assert (await api.get(f"/api/runs/{run}")).json()["engine_id"] == victim.unit

    trio.run(main)


def test_deep_nesting_on_the_engine_socket_closes_the_session_with_a_logged_reason(tmp_path):
    """Finding 10 (nesting, engine side). Without the fix: RecursionError out of the decoder, the
    session dies with an empty reason."""
    deep = 100_000
    frame = '{"type":"records","records":[' + "[" * deep + "]" * deep + "]}"

    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator()
            await aggregator.serving()
            rogue = RawEngine(aggregator.port)
            async with rogue.session() as session:
                assert await session.send_text(frame) is None  # the aggregator closed the session
            assert aggregator.running and rogue.seq == 0
            await patiently(lambda: "closing its session" in aggregator.log())
            (line,) = [line for line in aggregator.log().splitlines() if "closing its session" in line]
            assert re.search(r"engine rogue_Unit: \S.*; closing its session", line), line
            events = of_unit(aggregator.events(), "rogue_Unit")
            assert [e["type"] for e in events] == ["EngineEnrolled", "EngineRegistered", "EngineConnected",
                                                   "EngineDisconnected"]  # nothing of the frame
            assert events[-1]["data"]["reason"]

    trio.run(main)


def test_repeated_bad_handshakes_from_one_address_are_throttled(tmp_path):
    """Finding 10 (rate limit). Without the fix: every guess of a key is checked, forever."""
    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator()
            await aggregator.serving()
            owner = RawEngine(aggregator.port, credential="the-real-key")
            assert (await owner.send([record("state", state_data())]))["type"] == "ack"  # enrolled on first use
            codes = []
            for attempt in range(40):
                guesser = RawEngine(aggregator.port, credential=f"guess-{attempt}")
                async with guesser.session() as session:
                    codes.append(session.answer["code"])
                if codes[-1] == "throttled":
                    break
            assert codes[-1] == "throttled", codes
            assert set(codes[:-1]) == {"credential"} and len(codes) <= 30
            async with owner.session() as session:  # from the same address, even the right key waits
                assert session.answer["type"] == "refused" and session.answer["code"] == "throttled"

    trio.run(main)


def test_every_warning_the_aggregator_logs_names_its_reason(tmp_path):
    """Finding 10 (log). Without the fix: 'engine X: ; closing' lines, with an empty reason."""
    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator()
            await aggregator.serving()
            rogue = RawEngine(aggregator.port)
            async with rogue.session() as session:  # a frame that is not JSON
                await session.send_text("{not json")
            async with rogue.session() as session:  # a record out of order
                await session.send_text(json.dumps({"type": "records", "records": [
                    {"seq": 9, **record("state", state_data())}]}))
            async with rogue.session() as session:  # refused records
                await session.send_records([record("state", {"system_state": 1})])
            async with rogue.session() as session:  # gone without a close frame (the TCP stream closed)
                await session.ws._stream.aclose()
            async with RawEngine(aggregator.port, credential="wrong").session():  # a wrong key
                pass
            async with rogue.session(protocol=1):  # another protocol version
                pass
            async with rogue.session(engine_id="no/such id"):  # an id that is not valid
                pass
            await patiently(lambda: "'no/such id' is not valid" in aggregator.log())  # the last of them
            disconnected = of_unit(aggregator.events(), "rogue_Unit", "EngineDisconnected")

        warnings = [line for line in aggregator.log().splitlines() if line.startswith(("WARNING", "ERROR"))]
        assert len(warnings) >= 6, warnings
        empty = [line for line in warnings if re.search(r":\s*(;|$)", line)]
        assert empty == [], empty
        assert len(disconnected) == 4 and all(e["data"]["reason"].strip() for e in disconnected), disconnected

    trio.run(main)
