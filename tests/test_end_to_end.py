"""The whole system on loopback: a real aggregator (hypercorn, SQLite store) and a real demo engine
connected over a real WebSocket, driven through the REST API.

A demo run from Start to Stop is visible through the API, its CSV and audit trail tell what
happened, the live projections equal a replay of the store byte for byte, and the store verifies.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import trio

from conftest import DEMO_UOD, wait_for
from pectus import __version__
from pectus.actors.aggregator import STORE_FILE, AggregatorProcess
from pectus.actors.engine import EngineProcess
from pectus.credentials import EngineKey, key_digest
from pectus.events.domain import EngineEnrolled
from pectus.events.store import SQLiteEventStore, verify
from pectus.projections.views import Projector
from pectus.web.app import ROUTES, check
from pectus.uod import load_uod

METHOD = """\
Base: s
Mark: Started
VA01: Open
PU01: 50 %
Block: Load
    2 Mark: Loaded
    3 End block
Mark: Done
Stop
"""


def engine_for(port: int, tmp_path: Path) -> EngineProcess:
    return EngineProcess(load_uod(DEMO_UOD), uplink={
        "outbox": tmp_path / "engine.outbox.sqlite3", "url": f"ws://127.0.0.1:{port}/engine",
        "engine_id": "testhost_DemoUod", "computer_name": "testhost"})


def test_a_demo_run_from_start_to_stop_through_the_api(tmp_path):
    data = tmp_path / "data"
    aggregator = AggregatorProcess(data, port=0, hostname="aggregator-host")
    unit = "testhost_DemoUod"
    key = EngineKey.from_file(tmp_path / f"{unit}.key").path.read_text().strip()  # made as the engine would
    aggregator.store.append([EngineEnrolled(time=0.0, unit=unit, key_sha256=key_digest(key)).stored()])

    async def main():
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(lambda task_status: aggregator.run(shutdown=shutdown, task_status=task_status))
            port = int(bound[0].rsplit(":", 1)[1])
            engine = engine_for(port, tmp_path)
            await nursery.start(engine.run)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                         headers={"X-Pectus-User": "Ann"}) as api:
                async def online():
                    units = (await api.get("/api/process_units")).json()
                    return [u for u in units if u["id"] == unit and u["state"] != "offline"]
                await wait_for(online, timeout=20)
                method = (await api.get(f"/api/process_units/{unit}/method")).json()
                lines = [{"id": str(i), "text": text} for i, text in enumerate(METHOD.splitlines(), 1)]
                saved = await api.post(f"/api/process_units/{unit}/method",
                                       json={"lines": lines, "version": method["version"]})
                assert saved.status_code == 200, saved.text
                stale = await api.post(f"/api/process_units/{unit}/method",
                                       json={"lines": lines, "version": method["version"]})
                assert stale.status_code == 409 and "someone else" in stale.json()["error"]["message"]
                assert (await api.post(f"/api/process_units/{unit}/control", json={"command": "Start"})).status_code == 200
                refused = await api.post(f"/api/process_units/{unit}/control", json={"command": "Start"})
                assert refused.status_code == 409

                async def running():
                    return (await api.get(f"/api/process_units/{unit}/control_state")).json()["is_running"]
                await wait_for(running, timeout=20)
                changed = await api.post(f"/api/process_units/{unit}/process_values/PU01",
                                         json={"value": 60, "unit": "%"})
                assert changed.status_code == 200, changed.text

                async def finished():
                    runs = (await api.get("/api/runs")).json()
                    return [r for r in runs if r.get("completed_date")]
                runs = await wait_for(finished, timeout=20)
                run = runs[0]["run_id"]
                assert [c["name"] for c in runs[0]["contributors"]] == ["Ann"]
                run_log = (await api.get(f"/api/runs/{run}/run_log")).json()
                names = [item["name"] for item in run_log]
                assert ["Mark: Started", "Mark: Loaded", "Mark: Done"] == [n for n in names if n.startswith("Mark")]
                csv_text = (await api.get(f"/api/runs/{run}/csv")).text
                audit = (await api.get(f"/api/runs/{run}/audit")).json()
                values = (await api.get(f"/api/process_units/{unit}/process_values")).json()
            await engine.stop()
            shutdown.set()
        return csv_text, audit, values

    csv_text, audit, values = trio.run(main)
    # What the API answers is what its document says (check raises ApiError naming the field).
    documented = {route.path: route.schema for route in ROUTES if route.method == "GET"}
    check(documented["/api/process_units/<unit>/process_values"], values)
    rows = list(csv.reader(io.StringIO(csv_text)))
    meta = {row[0]: row[1:] for row in rows if row and row[0].startswith("#")}
    assert any("aggregator-host" in cells for cells in meta.values())
    assert any("Demo Author" in cells for cells in meta.values())
    header = next(row for row in rows if row and not row[0].startswith("#"))
    assert "FT01 [L/h]" in header and "PU01 [%]" in header
    assert len(rows) > 5  # one row per data-log sample (1 s) over a ~6 s run
    by_ann = {entry["what"]: entry["detail"] for entry in audit if entry["actor"]["name"] == "Ann"}
    assert by_ann["process_value"]["asked"] == {"tag": "PU01", "value": 60, "unit": "%", "old": 0.0}
    assert by_ann["control"]["accepted"] is False and "only possible when" in by_ann["control"]["reason"]
    assert any(v["name"] == "FT01" and v.get("unit") == "L/h" for v in values)

    store_file = data / STORE_FILE
    assert verify(store_file).ok
    live = aggregator.views.snapshot()
    replayed = Projector(aggregator_name="aggregator-host", aggregator_version=__version__)
    store = SQLiteEventStore(store_file)
    replayed.replay(store.iter())  # the fast path of a rebuild, against the live one record by record
    store.close()
    assert replayed.snapshot() == live
