"""The aggregator against a misbehaving engine, over a real WebSocket, and its command line.

A malformed, oversized, out-of-order or unknown frame is refused with a logged reason and the
session is closed cleanly; nothing of it is stored. A record that fails its schema is refused on
its own (a RecordRefused event in its place, listed in the ack) and the session goes on. The CLI
verifies, backs up and replays a store.
"""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from pectus.actors.aggregator import STORE_FILE, AggregatorProcess
from pectus.cli.aggregator import main
from pectus.events import protocol as p
from pectus.web.auth import AuthConfig

OUTBOX = "0123456789abcdef0123456789abcdef"


def engine_hello(engine_id: str, key: str | None = None, outbox: str = OUTBOX) -> p.Hello:
    """A raw client's hello as engine ``engine_id``, with a key of its own (enrolled on first use)."""
    host, _, uod = engine_id.partition("_")
    return p.Hello(p.PROTOCOL_VERSION, engine_id, host, uod, "0.1.0", key or f"{engine_id}-key", outbox)


HELLO = engine_hello("rogue_Unit")


def record(seq: int, kind: str = "state", **data) -> dict:
    return {"seq": seq, "kind": kind, "time": 1_800_000_000.0 + seq, "run": None,
            "data": data or {"system_state": "Stopped", "method_status": "OK"}}


async def session(port: int, frames: list[str], *, hello: p.Hello = HELLO) -> list[p.Message]:
    """Say hello, send ``frames``, return what the aggregator answered until it closed or went quiet."""
    answers: list[p.Message] = []
    async with open_websocket_url(f"ws://127.0.0.1:{port}/engine", disconnect_timeout=1) as ws:
        await ws.send_message(p.encode(hello))
        try:
            answers.append(p.decode(await ws.get_message()))
            for frame in frames:
                await ws.send_message(frame)
            with trio.move_on_after(1):
                while True:
                    answers.append(p.decode(await ws.get_message()))
        except ConnectionClosed:
            pass
    return answers


def run_against_aggregator(tmp_path, scenario, *, accept_new_engines: bool = True, auth: AuthConfig = AuthConfig()):
    """``scenario(port, aggregator)`` against a real aggregator on a loopback port; its result.
    By default the aggregator enrols engines on first use (each test's engines are new to it)."""
    return serve(tmp_path / "data", scenario, accept_new_engines=accept_new_engines, auth=auth)


def serve(data, scenario, **options):
    """``scenario(port, aggregator)`` against a real aggregator (``options``: AggregatorProcess's)
    on the store in ``data``, on a loopback port; its result."""
    aggregator = AggregatorProcess(data, port=0, **options)

    async def main_():
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(lambda task_status: aggregator.run(shutdown=shutdown, task_status=task_status))
            result = await scenario(int(bound[0].rsplit(":", 1)[1]), aggregator)
            shutdown.set()
        return result

    return trio.run(main_)


def stored_types(aggregator: AggregatorProcess) -> list[str]:
    return [r.type for r in aggregator.store.read()]


@pytest.mark.parametrize("frame, reason", [
    ("{not json", "not valid JSON"),
    (json.dumps({"type": "launch"}), "Invalid value 'launch'"),
    (json.dumps({"type": "records", "records": [record(1), record(3)]}), "record 3 arrived where 2 was due"),
    (json.dumps({"type": "records", "records": [{"kind": "state"}]}), "a record without a readable seq"),
    (json.dumps({"type": "welcome", "protocol": 2, "engine_id": "x", "last_seq": 0}), "not expected here"),
    ("x" * (p.MAX_FRAME + 10), "over the limit"),
])
def test_a_bad_frame_closes_the_session_with_a_logged_reason_and_stores_none_of_it(tmp_path, caplog, frame, reason):
    async def scenario(port, aggregator):
        answers = await session(port, [frame])
        await trio.sleep(0.2)
        return answers, stored_types(aggregator)

    with caplog.at_level(logging.WARNING, logger="pectus.aggregator.engines"):
        answers, types = run_against_aggregator(tmp_path, scenario)
    assert isinstance(answers[0], p.Welcome) and not any(isinstance(a, p.Ack) for a in answers)
    assert types == ["EngineEnrolled", "EngineRegistered", "EngineConnected", "EngineDisconnected"]  # nothing of it
    assert any(reason in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_good_records_are_acknowledged_once_stored_and_resent_ones_are_dropped(tmp_path):
    async def scenario(port, aggregator):
        first = await session(port, [p.encode(p.Records([record(1), record(2)]))])
        again = await session(port, [p.encode(p.Records([record(2), record(3)]))])
        return first, again, stored_types(aggregator)

    first, again, types = run_against_aggregator(tmp_path, scenario)
    assert first[0] == p.Welcome(p.PROTOCOL_VERSION, "rogue_Unit", 0, OUTBOX) and p.Ack(2) in first
    assert again[0].last_seq == 2 and p.Ack(3) in again
    assert types.count("StateChanged") == 3  # 1, 2 and 3: the resent 2 was dropped


@pytest.mark.parametrize("bad, where", [
    (record(2, kind="vibes"), "Invalid value 'vibes' - at `$.kind`"),
    (record(2, kind="samples", samples="1,2,3"), "at `$.data.samples`"),
    ({**record(2), "time": 1e300}, "at `$.time`"),
    (record(2, kind="uod", bad=1), "at `$.data`"),
])
def test_a_bad_record_is_refused_alone_and_the_session_goes_on(tmp_path, bad, where):
    async def scenario(port, aggregator):
        answers = await session(port, [p.encode(p.Records([record(1), bad, record(3)]))])
        return answers, [(r.type, r.data) for r in aggregator.store.read()]

    answers, stored = run_against_aggregator(tmp_path, scenario)
    (ack,) = [a for a in answers if isinstance(a, p.Ack)]
    assert ack.seq == 3 and [r.seq for r in ack.refused] == [2] and where in ack.refused[0].reason
    kinds = [(t, data.get("seq")) for t, data in stored if data.get("seq")]
    assert kinds == [("StateChanged", 1), ("RecordRefused", 2), ("StateChanged", 3)]
    refused = next(data for t, data in stored if t == "RecordRefused")
    assert where in refused["reason"] and "samples" not in json.dumps({k: v for k, v in refused.items()
                                                                        if k not in ("kind", "reason")})


def test_the_handshake_refuses_another_protocol_version_and_a_wrong_key(tmp_path):
    async def scenario(port, aggregator):
        old = await session(port, [], hello=p.Hello(1, "old_Unit", "old", "Unit", "0.0.1", "s3cret"))
        enrolled = await session(port, [], hello=p.Hello(p.PROTOCOL_VERSION, "x_Unit", "x", "Unit", "0.1.0", "right",
                                                         OUTBOX))
        wrong = await session(port, [], hello=p.Hello(p.PROTOCOL_VERSION, "x_Unit", "x", "Unit", "0.1.0", "guess",
                                                      OUTBOX))
        return old, enrolled, wrong

    old, enrolled, wrong = run_against_aggregator(tmp_path, scenario)
    assert isinstance(old[0], p.Refused) and "protocol version 1" in old[0].reason and "version 2" in old[0].reason
    assert isinstance(enrolled[0], p.Welcome)
    assert isinstance(wrong[0], p.Refused) and wrong[0].code == "credential" and "does not match" in wrong[0].reason


def test_an_engine_that_is_not_enrolled_is_refused_by_default(tmp_path):
    async def scenario(port, aggregator):
        return await session(port, []), stored_types(aggregator)

    answers, types = run_against_aggregator(tmp_path, scenario, accept_new_engines=False)
    assert isinstance(answers[0], p.Refused) and answers[0].code == "identity"
    assert "pectus-aggregator engines enroll rogue_Unit" in answers[0].reason
    assert types == []


def test_it_refuses_to_serve_unprotected_when_sign_in_is_asked_for_but_incomplete(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ENABLE_AZURE_AUTHENTICATION", "True")
    monkeypatch.setenv("AZURE_DIRECTORY_TENANT_ID", "contoso")
    monkeypatch.delenv("AZURE_APPLICATION_CLIENT_ID", raising=False)
    assert main(["--data-dir", str(tmp_path / "data"), "--port", "0"]) == 2
    assert "AZURE_APPLICATION_CLIENT_ID is not set: refusing to start" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing was created, nothing served


def test_verify_backup_and_replay_from_the_command_line(tmp_path, capsys):
    async def scenario(port, aggregator):
        await session(port, [p.encode(p.Records([record(n) for n in range(1, 21)]))])

    run_against_aggregator(tmp_path, scenario)
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "verify"]) == 0
    out = capsys.readouterr().out
    assert "chain of 24 events is intact" in out
    anchor = re.search(r"anchor (24:[0-9a-f]{64})", out).group(1)
    assert main(["--data-dir", str(data), "verify", "--anchor", anchor]) == 0
    assert main(["--data-dir", str(data), "verify", "--anchor", "24:" + "0" * 64]) == 1
    assert "event 24 is not the one recorded in the anchor" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["--data-dir", str(data), "verify", "--anchor", "24-abc"])
    assert usage.value.code == 2 and "expected POSITION:HASH" in capsys.readouterr().err
    assert main(["--data-dir", str(data), "backup", str(tmp_path / "copy.sqlite3")]) == 0
    assert main(["verify", "--file", str(tmp_path / "copy.sqlite3")]) == 0
    assert main(["--data-dir", str(data), "replay", "--output", str(tmp_path / "views.json")]) == 0
    out = capsys.readouterr().out
    assert "replayed 24 events" in out and json.loads((tmp_path / "views.json").read_text())

    import sqlite3
    with sqlite3.connect(tmp_path / "copy.sqlite3") as db:  # an attacker without the triggers
        db.execute("DROP TRIGGER IF EXISTS pectus_events_no_update")
        db.execute("UPDATE pectus_events SET state = replace(state, 'Stopped', 'Stoppet') WHERE rowid = 10")
    assert main(["verify", "--file", str(tmp_path / "copy.sqlite3")]) == 1
    assert "BROKEN at event 10" in capsys.readouterr().err


def test_an_engine_enrolled_from_the_command_line_while_the_aggregator_runs_is_admitted(tmp_path, capsys):
    key_file = tmp_path / "lab_Unit.key"

    async def scenario(port, aggregator):
        refused = await session(port, [], hello=engine_hello("lab_Unit"))
        command = ["--data-dir", str(tmp_path / "data"), "engines", "enroll", "lab_Unit", "--key-file", str(key_file)]
        assert await trio.to_thread.run_sync(main, command) == 0
        admitted = await session(port, [p.encode(p.Records([record(1)]))],
                                 hello=engine_hello("lab_Unit", key_file.read_text().strip()))
        return refused, admitted, stored_types(aggregator)

    refused, admitted, types = run_against_aggregator(tmp_path, scenario, accept_new_engines=False)
    assert isinstance(refused[0], p.Refused) and refused[0].code == "identity"
    assert isinstance(admitted[0], p.Welcome) and p.Ack(1) in admitted
    assert types[:4] == ["EngineEnrolled", "EngineRegistered", "EngineConnected", "StateChanged"]
    assert "lab_Unit" in capsys.readouterr().out and key_file.stat().st_mode & 0o077 == 0


def test_a_request_whose_events_cannot_be_stored_fails_alone(tmp_path):
    from pectus.events.domain import ErrorLogged

    async def scenario(port, aggregator):
        writer = aggregator.writer
        good = [ErrorLogged(time=1.0, unit="a_Unit", severity="info", message="fine")]
        bad = [ErrorLogged(time=1.0, unit="a_Unit", severity="info", message="lone \ud800")]
        results: dict[str, object] = {}

        async def append(name, events):
            try:
                results[name] = await writer.append(events)
            except Exception as error:  # noqa: BLE001 - the test looks at what each requester got
                results[name] = error

        async with trio.open_nursery() as nursery:  # one group: queued together, written together
            for name, events in (("first", good), ("bad", bad), ("last", good)):
                nursery.start_soon(append, name, events)
        return results, writer.failure, [r.data.get("message") for r in aggregator.store.read()]

    results, failure, messages = run_against_aggregator(tmp_path, scenario)
    assert isinstance(results["bad"], UnicodeEncodeError)
    assert len(results["first"]) == len(results["last"]) == 1 and messages == ["fine", "fine"]
    assert failure == ""  # the store is fine: the request was not


def test_the_aggregator_starts_and_every_route_answers_on_a_store_with_events_it_cannot_read(tmp_path):
    """Events a bug or an older version might have stored, and a row changed by hand: the views
    skip and list them, the engines' memory skips them, every GET route answers without a 500."""
    import sqlite3

    import httpx

    from pectus.events.store import NewEvent, SQLiteEventStore
    from pectus.web.app import ROUTES

    unit, run = "rogue_Unit", "run-1"
    data = tmp_path / "data"
    data.mkdir()
    store = SQLiteEventStore(data / STORE_FILE)
    envelope = {"unit": unit, "run": run, "actor": {"kind": "engine", "id": unit, "name": unit}, "seq": None}
    store.append([NewEvent(f"unit:{unit}", kind, 1.7e9, {**envelope, "time": 1.7e9, **data_})
                  for kind, data_ in [
                      ("RunStarted", {}),
                      ("RunLogChanged", {"items": "not a list"}),
                      ("TagSamples", {"samples": [{"time": "noon", "values": {"FT01": 1}}]}),
                      ("UodDescribed", {"tags": "FT01"}),
                      ("UserRequested", {"request": "control"}),
                      ("StateChanged", {"seq": "7", "system_state": 5}),
                      ("FromTheFuture", {}),
                      ("ErrorLogged", {"unit": ["a", "list"], "severity": "error", "message": "x"})]])
    store.close()
    with sqlite3.connect(data / STORE_FILE) as db:  # a row that is not a record at all
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
        db.execute("UPDATE pectus_events SET state = CAST('not json' AS BLOB) WHERE rowid = 3")

    async def scenario(port, aggregator):
        statuses = {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            for route in ROUTES:
                if route.method != "GET" or "<file>" in route.path:
                    continue
                path = route.path.replace("<unit>", unit).replace("<run>", run).replace("<item>", "1")
                path = re.sub(r"<[^>]+>", "x", path)
                statuses[path] = (await api.get(path)).status_code
        return statuses, aggregator.views.unfoldable

    statuses, unfoldable = run_against_aggregator(tmp_path, scenario)
    assert statuses and not {path: status for path, status in statuses.items() if status >= 500 and path != "/health"}
    assert statuses[f"/api/runs/{run}"] == 200
    assert {entry["type"] for entry in unfoldable} >= {"Damaged", "FromTheFuture", "UodDescribed"}


def test_verify_lists_intact_events_the_views_cannot_show(tmp_path, capsys, caplog):
    from pectus.events.store import NewEvent, SQLiteEventStore

    store = SQLiteEventStore(tmp_path / STORE_FILE)
    store.append([NewEvent("unit:a_Unit", "FromTheFuture", 1.7e9, {"unit": "a_Unit"})])
    store.close()
    before = (tmp_path / STORE_FILE).read_bytes()
    assert main(["verify", "--file", str(tmp_path / STORE_FILE)]) == 0
    assert "event 1 (FromTheFuture) is intact but cannot be shown" in capsys.readouterr().out
    assert (tmp_path / STORE_FILE).read_bytes() == before  # verifying changes nothing


def test_it_refuses_to_start_when_an_allowed_origin_is_not_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PECTUS_ALLOWED_ORIGINS", "pectus.example.com")
    assert main(["--data-dir", str(tmp_path / "data"), "--port", "0"]) == 2
    assert "'pectus.example.com' is not an origin" in capsys.readouterr().err


def test_an_engine_revoked_from_the_command_line_is_disconnected_and_refused(tmp_path, capsys):
    """Before: a revoked engine kept its live session until it reconnected on its own."""
    async def scenario(port, aggregator):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/engine", disconnect_timeout=1) as ws:
            await ws.send_message(p.encode(HELLO))
            assert isinstance(p.decode(await ws.get_message()), p.Welcome)
            command = ["--data-dir", str(tmp_path / "data"), "engines", "revoke", "rogue_Unit"]
            assert await trio.to_thread.run_sync(main, command) == 0
            with trio.fail_after(15):  # the aggregator reads the store's new tail within seconds
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.get_message()
        again = await session(port, [])
        disconnected = [r.data["reason"] for r in aggregator.store.read() if r.type == "EngineDisconnected"]
        return again, disconnected

    again, disconnected = run_against_aggregator(tmp_path, scenario)
    # Not enrolled again on first use either: a revocation stands until an operator enrols it again.
    assert isinstance(again[0], p.Refused) and again[0].code == "identity" and "was revoked" in again[0].reason
    assert disconnected[0] == "its enrolment was revoked"


def test_a_unit_left_connected_by_a_killed_aggregator_is_recorded_offline_at_the_next_start(tmp_path):
    """An aggregator killed (or failed over) records no disconnection: its store ends with the unit
    connected. The next one records the lost connection before any engine can connect, so the unit
    reads offline (and notifies so) until its engine is back - and a clean start records nothing."""
    from pectus.actors.aggregator import LOST_WITH_LAST_AGGREGATOR
    from pectus.events.domain import EngineConnected, EngineRegistered
    from pectus.events.store import SQLiteEventStore

    data = tmp_path / "data"
    data.mkdir()
    store = SQLiteEventStore(data / STORE_FILE)
    store.append([EngineRegistered(time=1.0, unit="host_Unit", computer_name="host", uod_name="Unit",
                                   engine_version="0.1.0", protocol=p.PROTOCOL_VERSION).stored(),
                  EngineConnected(time=1.0, unit="host_Unit").stored()])
    store.close()

    async def units(port, aggregator):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
            return (await api.get("/api/process_units")).json(), [r for r in aggregator.store.read()
                                                                  if r.type == "EngineDisconnected"]

    listed, recorded = serve(data, units)
    assert [(u["id"], u["state"]) for u in listed] == [("host_Unit", "offline")]
    assert [(r.data["unit"], r.data["reason"]) for r in recorded] == [("host_Unit", LOST_WITH_LAST_AGGREGATOR)]
    _, recorded_again = serve(data, units)
    assert len(recorded_again) == 1  # already offline: nothing more to record
