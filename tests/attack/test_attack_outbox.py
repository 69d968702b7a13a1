"""What an engine's life does to the record: a new outbox, a long outage of a wide unit, a crash in
the middle of a run. Real aggregator and engine processes; outboxes read with plain sqlite3.

Invariants shown: a new outbox starts from nothing at the aggregator (nothing of it is trimmed
against an old outbox's numbers); a backlog of any size is delivered in frames the aggregator
accepts; a run whose engine died is closed as interrupted where its record ends, and the method
version the API shows is the engine's.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import trio

from attack_harness import (Aggregator, Engine, Fleet, at_least, completed, method_lines, of_unit, patiently, run_ids)

WIDE_UOD = Path(__file__).with_name("wide_uod.py")
FRAME_LIMIT = 4 * 1024 * 1024  # the aggregator's max_frame


async def _start(api, engine: Engine) -> None:
    response = await api.post(f"/api/process_units/{engine.unit}/control", json={"command": "Start"})
    assert response.status_code == 200, response.text


async def _stop(api, engine: Engine) -> None:
    response = await api.post(f"/api/process_units/{engine.unit}/control", json={"command": "Stop"})
    assert response.status_code == 200, response.text


def _stored_seqs(aggregator: Aggregator, engine: Engine, outbox: str) -> list[int]:
    events = of_unit(aggregator.events(), engine.unit)
    return [e["data"]["seq"] for e in events if e["data"].get("outbox") == outbox and e["data"].get("seq")]


def test_an_engine_with_a_fresh_outbox_delivers_its_first_records(tmp_path):
    """Finding 4. Without the fix: the new outbox is told the old outbox's last_seq and discards
    its records up to it, its RunStarted among them: the new run is not in /api/runs."""
    async def main():
        with Fleet(tmp_path) as fleet:
            async with fleet.a_unit_online() as (aggregator, engine, api):
                await _start(api, engine)
                await patiently(lambda: engine.outbox_state().newest >= 15)  # a sample a second
                await _stop(api, engine)
                (old_run,) = await patiently(lambda: run_ids(api, engine.unit))
                await patiently(lambda: completed(api, old_run))
                old = engine.outbox_state()

                engine.stop()  # a reinstalled PC: the same engine (and key), a new outbox file
                for path in engine.outbox.parent.glob(engine.outbox.name + "*"):
                    path.unlink()
                engine.start()
                await patiently(lambda: len(of_unit(aggregator.events(), engine.unit, "EngineConnected")) == 2)
                await _start(api, engine)
                runs = await patiently(lambda: at_least(run_ids(api, engine.unit), 2))
                new_run = runs[0]
                await _stop(api, engine)
                await patiently(lambda: completed(api, new_run))
                await patiently(lambda: engine.outbox_state().pending == 0)
                new = engine.outbox_state()

            assert new.id != old.id
            started = of_unit(aggregator.events(), engine.unit, "RunStarted")
            assert [e["data"]["run"] for e in started] == [old_run, new_run]
            assert started[1]["data"]["seq"] < old.newest  # a position the old outbox had passed
            assert _stored_seqs(aggregator, engine, new.id) == list(range(1, new.newest + 1))

    trio.run(main)


def test_a_wide_unit_delivers_its_whole_backlog_after_an_outage(tmp_path):
    """Finding 5. Without the fix: the backlog goes out in frames of 500 records, each over the
    4 MiB limit, refused every 5 s forever; the outbox never empties."""
    async def main():
        with Fleet(tmp_path) as fleet:
            async with fleet.a_unit_online("wide", uod=WIDE_UOD, instrument="WideUod") as (aggregator, engine, api):
                await _start(api, engine)
                (run,) = await patiently(lambda: run_ids(api, engine.unit))

                aggregator.kill()  # the outage: the engine runs on, its records wait in the outbox
                await patiently(lambda: engine.outbox_state().pending_bytes > FRAME_LIMIT * 1.25, timeout=60)
                aggregator.start()
                await aggregator.serving()
                await patiently(lambda: engine.outbox_state().pending < 20, timeout=60)  # delivered
                await _stop(api, engine)
                await patiently(lambda: completed(api, run))
                await patiently(lambda: engine.outbox_state().pending == 0)

            outbox = engine.outbox_state()
            events = of_unit(aggregator.events(), engine.unit)
            assert _stored_seqs(aggregator, engine, outbox.id) == list(range(1, outbox.newest + 1))
            assert not [e for e in events if e["type"] == "RecordRefused"]
            assert not (engine.outbox.parent / (engine.outbox.name + ".dead-letter.jsonl")).exists()

    trio.run(main)


def test_a_run_whose_engine_was_killed_is_closed_as_interrupted_and_the_method_version_is_the_engines(tmp_path):
    """Finding 9. Without the fix: the killed run stays running until the next run's start ends
    it, and after the restart the API shows method version 1 while the engine has 0 (409)."""
    async def main():
        with Fleet(tmp_path) as fleet:
            async with fleet.a_unit_online() as (aggregator, engine, api):
                unit = f"/api/process_units/{engine.unit}"
                saved = await api.post(f"{unit}/method", json={"lines": method_lines("Mark: a\nWait: 1 h\n"),
                                                               "version": 0})
                assert saved.status_code == 200 and saved.json()["version"] == 1, saved.text
                await _start(api, engine)
                (run,) = await patiently(lambda: run_ids(api, engine.unit))
                await patiently(lambda: engine.outbox_state().newest >= 20 and engine.outbox_state().pending == 0)

                killed = time.time()
                engine.kill()  # mid-run
                engine.start()
                await patiently(lambda: completed(api, run))
                ended = (await api.get(f"/api/runs/{run}")).json()
                assert ended["interrupted"], ended
                assert _epoch(ended["completed_date"]) <= killed  # ends where its record ends

                method = (await api.get(f"{unit}/method")).json()
                assert method["version"] == 0 and method["lines"] == []  # the restarted engine's method
                saved = await api.post(f"{unit}/method", json={"lines": method_lines("Mark: b\n"),
                                                               "version": method["version"]})
                assert saved.status_code == 200, saved.text

                await _start(api, engine)
                await patiently(lambda: at_least(run_ids(api, engine.unit), 2))
                assert (await api.get(f"/api/runs/{run}")).json() == ended  # the next start changes nothing

    trio.run(main)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
