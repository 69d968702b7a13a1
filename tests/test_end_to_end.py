"""The whole system on loopback: a real aggregator (hypercorn, SQLite store) and a real demo engine
connected over a real WebSocket, driven through the REST API.

A demo run from Start to Stop is visible through the API, its CSV and audit trail tell what
happened, the live projections equal a replay of the store byte for byte, and the store verifies.
"""

from __future__ import annotations

import csv
import io

import trio

from conftest import DEMO_UNIT, demo_aggregator, demo_unit, wait_for
from pectus import __version__
from pectus.actors.aggregator import STORE_FILE
from pectus.events.store import SQLiteEventStore, verify
from pectus.projections.views import Projector
from pectus.web.app import ROUTES, check

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


def test_a_demo_run_from_start_to_stop_through_the_api(tmp_path):
    aggregator = demo_aggregator(tmp_path)
    unit = DEMO_UNIT

    async def main():
        async with demo_unit(tmp_path, aggregator) as demo:
            api = demo.api
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
    # The old value is the pump's when the request was applied: before or after the method's PU01: 50 %.
    asked = by_ann["process_value"]["asked"]
    assert {**asked, "old": None} == {"tag": "PU01", "value": 60, "unit": "%", "old": None} and asked["old"] in (0.0, 50.0)
    assert by_ann["control"]["accepted"] is False and "only possible when" in by_ann["control"]["reason"]
    assert any(v["name"] == "FT01" and v.get("unit") == "L/h" for v in values)

    store_file = tmp_path / "data" / STORE_FILE
    assert verify(store_file).ok
    live = aggregator.views.snapshot()
    replayed = Projector(aggregator_name="aggregator-host", aggregator_version=__version__)
    store = SQLiteEventStore(store_file)
    replayed.replay(store.iter())  # the fast path of a rebuild, against the live one record by record
    store.close()
    assert replayed.snapshot() == live
