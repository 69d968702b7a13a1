"""Attacks on an engine's identity: a forger that claims a connected engine's id, and two real
engines with one identity (a cloned PC image), against real aggregator and engine processes.

Invariants shown: a second live connection for an engine id is refused (``duplicate``), never a
takeover, whatever it presents; a hello without the enrolled key is refused (``credential``);
the real engine's session stays, none of its records is lost and nothing of the forger's is stored.
"""

from __future__ import annotations

import trio

from attack_harness import (T0, Fleet, RawEngine, at_least, completed, method_lines, of_unit, online, patiently,
                            record, run_ids, runlog_data)

MARKS = 40
METHOD = "".join(f"Mark: m{i}\nWait: 0.1 s\n" for i in range(MARKS)) + "Stop\n"


async def _marks(api, path: str) -> list[str]:
    items = (await api.get(path)).json()
    return [item["name"] for item in items if item["name"].startswith("Mark") and item["state"] == "completed"]


def test_a_forger_cannot_take_over_a_connected_engine_nor_lose_its_records(tmp_path):
    """Finding 2. Without the fix: the forger with the engine's identity is welcomed with its
    last_seq, closes the real session, and its mark is stored in the real run; the real engine,
    told the forger's higher last_seq, deletes its unsent marks."""
    async def main():
        with Fleet(tmp_path) as fleet:
            async with fleet.a_unit_online() as (aggregator, engine, api):
                unit = f"/api/process_units/{engine.unit}"
                saved = await api.post(f"{unit}/method", json={"lines": method_lines(METHOD), "version": 0})
                assert saved.status_code == 200, saved.text
                assert (await api.post(f"{unit}/control", json={"command": "Start"})).status_code == 200
                await patiently(lambda: at_least(_marks(api, f"{unit}/run_log"), 3))
                (run,) = await run_ids(api, engine.unit)

                # A copied disk: the engine's key and outbox id, and an outbox far ahead of the real one.
                outbox = engine.outbox_state()
                key = engine.key_file.read_text().strip()
                forged = [record("runlog", runlog_data(999, "Mark: FORGED", time=T0), run=run)]
                copied = RawEngine(aggregator.port, engine.unit, key, outbox.id)
                copied.seq = outbox.newest + 100
                async with copied.session() as session:
                    assert session.answer["type"] == "refused" and session.answer["code"] == "duplicate"
                    assert await session.send_records(forged) is None
                for credential in ("", "a-guessed-key"):  # a valid hello shape without the key
                    forger = RawEngine(aggregator.port, engine.unit, credential)
                    async with forger.session() as session:
                        assert session.answer["type"] == "refused" and session.answer["code"] == "credential", \
                            session.answer
                        assert await session.send_records(forged) is None

                await patiently(lambda: completed(api, run), timeout=60)
                marks = await _marks(api, f"/api/runs/{run}/run_log")
                assert marks == [f"Mark: m{i}" for i in range(MARKS)]  # every mark, once, in order
                assert "FORGED" not in (await api.get(f"/api/runs/{run}/csv")).text
                assert await online(api, engine.unit)

            events = of_unit(aggregator.events(), engine.unit)
            assert [e["type"] for e in events].count("EngineConnected") == 1  # its session stayed
            assert "EngineDisconnected" not in [e["type"] for e in events]
            assert "FORGED" not in str(events)

    trio.run(main)


def test_two_engines_with_one_identity_do_not_replace_each_other(tmp_path):
    """Finding 6. Without the fix: the two engines replace each other about four times a
    second, the second one's run is dropped as duplicates, and every Start answers 409."""
    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator()
            # The same host and UOD (one engine id) and one key beside two outboxes: a cloned image.
            first = fleet.engine(aggregator, "first", outbox=tmp_path / "engines" / "first.outbox.sqlite3")
            await aggregator.serving()
            async with aggregator.api() as api:
                await patiently(lambda: online(api, first.unit))
                second = fleet.engine(aggregator, "second", outbox=tmp_path / "engines" / "second.outbox.sqlite3")
                assert second.unit == first.unit and second.key_file == first.key_file
                await patiently(lambda: "refused this engine (duplicate)" in second.log())
                refusal = next(line for line in second.log().splitlines() if "(duplicate)" in line)
                assert "cloned PC image or a copied disk" in refusal

                unit = f"/api/process_units/{first.unit}"
                started = await api.post(f"{unit}/control", json={"command": "Start"})
                assert started.status_code == 200, started.text
                # Ten seconds of real time: the first engine keeps its one session all along.
                with trio.move_on_after(10):
                    while True:
                        connected = of_unit(aggregator.events(), first.unit, "EngineConnected")
                        assert len(connected) == 1 and await online(api, first.unit)
                        await trio.sleep(0.5)
                assert (await api.post(f"{unit}/control", json={"command": "Stop"})).status_code == 200
                (run,) = await run_ids(api, first.unit)
                await patiently(lambda: completed(api, run))
                await patiently(lambda: first.outbox_state().pending == 0)  # its records are all stored

            events = of_unit(aggregator.events(), first.unit)
            assert [e["type"] for e in events].count("EngineConnected") == 1
            assert [e for e in events if e["type"] == "ErrorLogged" and "cloned" in e["data"]["message"]]
            assert [e["data"]["run"] for e in events if e["type"] == "RunStopped"] == [run]

    trio.run(main)
