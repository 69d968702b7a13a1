"""The aggregator's web surface, driven through Quart's test client against a fake backend.

The fake answers the Projector queries from dicts, records every request a user makes, and
fans deltas out through a real UiHub (pectus.actors.ui_hub), as the aggregator does. The last test
serves the app with hypercorn's trio worker on a loopback port and talks to it with a raw HTTP
request and trio-websocket, to prove the real server path.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import httpx
import trio
import trio.testing
import trio_websocket
from hypercorn.config import Config
from hypercorn.trio import serve
from quart.testing.connections import WebsocketDisconnectError, WebsocketResponseError

from pectus.actors.ui_hub import STALL, UiHub
from pectus.events.domain import Actor
from pectus.projections.views import iso
from pectus.web import Delta, Outcome, create_app
from pectus.web.app import MAX_BODY_BYTES, ROUTES, openapi_document
from pectus.web.units import merge_process_values
from push_endpoint import memory_sender

UNIT = "host-7_DemoUod"
RUN = "run-1"
STARTED = 1736453702.9  # 2025-01-09 20:15:02 UTC
AS_JSON = {"Content-Type": "application/json"}  # every POST carries it, with or without a body


def trio_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        trio.run(functools.partial(test, *args, **kwargs))

    return run


class FakeViews:
    """The Projector's queries, each answered from a dict by unit or run id (None otherwise)."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {
            "unit": {UNIT: {"id": UNIT, "name": "host-7 (DemoUod)", "state": "ready"}},
            "process_values": {UNIT: [
                {"name": "FT01", "value": 10.0, "unit": "L/h", "time": iso(100.0), "commands": [{"name": "FT01"}]},
                {"name": "Valve", "value": "Open", "unit": None, "time": iso(300.0), "commands": []},
            ]},
            "control_state": {UNIT: {"is_running": False, "is_holding": False, "is_paused": False}},
            "method": {UNIT: {"lines": [{"id": "a", "text": "Mark: A"}], "version": 3}},
            "run_log": {UNIT: {"lines": []}},
            "error_log": {UNIT: {"entries": []}},
            "plot_configuration": {UNIT: {"axes": []}},
            "plot_series": {UNIT: {"entries": {"FT01": [1, 2]}}, RUN: {"entries": {"FT01": [1]}}},
            "run": {RUN: {"run_id": RUN, "engine_id": UNIT, "started_date": iso(STARTED),
                          "completed_date": iso(STARTED + 60)}},
            "run_method": {RUN: {"lines": [], "version": 1}},
            "run_log_of": {RUN: {"lines": [{"name": "Start"}]}},
            "run_error_log": {RUN: {"entries": [{"message": "Oops"}]}},
            "audit_trail": {RUN: [{"who": "Ann", "what": "Start"}]},
            "uod_description": {},
        }

    def units(self) -> list[dict]:
        return [self.answers["unit"][UNIT]]

    def runs(self) -> list[dict]:
        return [self.answers["run"][RUN]]

    def __getattr__(self, query: str) -> Callable[[str], Any]:
        return self.answers[query].get


class FakeBackend:
    version = "1.2.3"

    def __init__(self) -> None:
        self.views = FakeViews()
        self.live = {UNIT: [
            {"name": "FT01", "value": 12.5, "unit": "L/h", "time": iso(200.0), "simulated": False},
            {"name": "Valve", "value": "Closed", "unit": None, "time": iso(250.0), "simulated": False},
            {"name": "TT01", "value": 21.0, "unit": "degC", "time": iso(200.0), "simulated": True},
        ]}
        self.outcomes: dict[str, Outcome] = {}
        self.requests: list[tuple[str, str, dict, Actor]] = []
        self.hub = UiHub()
        self.health_report: dict[str, Any] = {"status": "ok", "engines": 1}
        self.push = memory_sender(self.views)

    def live_values(self, unit_id: str) -> list[dict] | None:
        return self.live.get(unit_id)

    async def request(self, unit_id: str, request: str, detail: dict, user: Actor) -> Outcome:
        if unit_id != UNIT:
            raise KeyError(unit_id)
        self.requests.append((unit_id, request, detail, user))
        return self.outcomes.get(request, Outcome(True))

    def subscribe(self):
        return self.hub.subscribe()

    def publish(self, delta: Delta) -> None:
        self.hub.publish([delta])

    def csv(self, run_id: str) -> Iterator[str] | None:
        if run_id != RUN:
            return None
        # more lines than one streamed chunk; some already terminated, as csv.writer does
        return iter(["# Run Id,run-1\r\n", "", "FT01 [L/h],Valve"] + [f"{i},Open" for i in range(600)])

    def events(self, run_id: str) -> Iterator[str] | None:
        return iter([json.dumps({"type": "RunStarted"}), json.dumps({"type": "RunStopped"})]) if run_id == RUN else None

    def health(self) -> dict:
        return self.health_report


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def assert_error(response: Any, body: Any, status: int, field: str | None = None) -> str:
    assert response.status_code == status, body
    error = body["error"]
    assert error["status"] == status
    assert error.get("field") == field
    return error["message"]


# -- reading ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "expected"), [
    (f"/api/process_units/{UNIT}", ("unit", UNIT)),
    (f"/api/process_units/{UNIT}/control_state", ("control_state", UNIT)),
    (f"/api/process_units/{UNIT}/method", ("method", UNIT)),
    (f"/api/process_units/{UNIT}/run_log", ("run_log", UNIT)),
    (f"/api/process_units/{UNIT}/error_log", ("error_log", UNIT)),
    (f"/api/process_units/{UNIT}/plot_configuration", ("plot_configuration", UNIT)),
    (f"/api/process_units/{UNIT}/plot_log", ("plot_series", UNIT)),
    (f"/api/runs/{RUN}", ("run", RUN)),
    (f"/api/runs/{RUN}/method", ("run_method", RUN)),
    (f"/api/runs/{RUN}/run_log", ("run_log_of", RUN)),
    (f"/api/runs/{RUN}/error_log", ("run_error_log", RUN)),
    (f"/api/runs/{RUN}/plot_log", ("plot_series", RUN)),
    (f"/api/runs/{RUN}/audit", ("audit_trail", RUN)),
])
@trio_test
async def test_projection_routes_answer_the_projector_query_and_404_for_unknown_ids(
        backend: FakeBackend, path: str, expected: tuple[str, str]) -> None:
    client = create_app(backend).test_client()
    query, key = expected
    response = await client.get(path)
    assert response.status_code == 200
    assert await response.get_json() == backend.views.answers[query][key]
    assert response.headers["Cache-Control"] == "no-store"

    unknown = await client.get(path.replace(key, "nope"))
    message = assert_error(unknown, await unknown.get_json(), 404)
    assert "'nope'" in message


@trio_test
async def test_lists_version_and_health(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    assert await (await client.get("/api/process_units")).get_json() == backend.views.units()
    assert await (await client.get("/api/runs")).get_json() == backend.views.runs()
    assert await (await client.get("/api/version")).get_json() == {"version": "1.2.3"}

    healthy = await client.get("/health")
    assert (healthy.status_code, await healthy.get_json()) == (200, {"status": "ok", "engines": 1})
    backend.health_report = {"status": "degraded", "store": "not writable"}
    degraded = await client.get("/health")
    assert (degraded.status_code, await degraded.get_json()) == (503, backend.health_report)


@trio_test
async def test_process_values_are_live_values_merged_over_the_projection(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    values = await (await client.get(f"/api/process_units/{UNIT}/process_values")).get_json()
    assert values == [
        # live is fresher: its value, the reading's commands kept
        {"name": "FT01", "value": 12.5, "unit": "L/h", "time": iso(200.0), "commands": [{"name": "FT01"}],
         "simulated": False},
        # the projection is fresher: it stays
        {"name": "Valve", "value": "Open", "unit": None, "time": iso(300.0), "commands": []},
        # only live knows it yet
        {"name": "TT01", "value": 21.0, "unit": "degC", "time": iso(200.0), "simulated": True},
    ]
    response = await client.get("/api/process_units/nope/process_values")
    assert_error(response, await response.get_json(), 404)


def test_merge_process_values_needs_one_side_to_know_the_unit() -> None:
    assert merge_process_values(None, None) is None
    assert merge_process_values([], None) == []
    assert merge_process_values(None, [{"name": "A", "value": 1, "time": None}]) == [
        {"name": "A", "value": 1, "time": None}]


@trio_test
async def test_unknown_route_is_a_json_404(backend: FakeBackend) -> None:
    response = await create_app(backend).test_client().get("/api/nothing/here")
    assert_error(response, await response.get_json(), 404)


# -- exports ----------------------------------------------------------------------------------

@trio_test
async def test_csv_is_streamed_as_an_attachment_named_after_unit_and_start(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    response = await client.get(f"/api/runs/{RUN}/csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{UNIT}_20250109_201502.csv"'
    text = (await response.get_data()).decode()
    assert text.startswith("# Run Id,run-1\r\n\r\nFT01 [L/h],Valve\r\n0,Open\r\n")
    assert text.endswith("599,Open\r\n")
    assert text.count("\r\n") == 603

    unknown = await client.get("/api/runs/nope/csv")
    assert_error(unknown, await unknown.get_json(), 404)


@trio_test
async def test_events_are_streamed_as_json_lines(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    response = await client.get(f"/api/runs/{RUN}/events.jsonl")
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    assert response.headers["Content-Disposition"].endswith(f'filename="{UNIT}_20250109_201502.jsonl"')
    lines = (await response.get_data()).decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"type": "RunStarted"}, {"type": "RunStopped"}]

    unknown = await client.get("/api/runs/nope/events.jsonl")
    assert_error(unknown, await unknown.get_json(), 404)


# -- acting -----------------------------------------------------------------------------------

@trio_test
async def test_each_action_reaches_the_backend_with_its_detail_and_the_user(backend: FakeBackend) -> None:
    backend.outcomes["save_method"] = Outcome(True, data={"version": 4})
    client = create_app(backend).test_client()
    user = {"X-Pectus-User": "Ann Operator", "X-Pectus-User-Id": "oid-42"}
    lines = [{"id": "a", "text": "Mark: A"}, {"id": "b", "text": "Stop"}]
    calls = [
        ("control", {"command": "Start"}, {"command": "Start"}),
        ("method", {"lines": lines, "version": 3}, {"lines": lines, "version": 3}),
        ("inject", {"code": "Mark: X"}, {"code": "Mark: X"}),
        ("process_values/FT01", {"value": 5, "unit": "L/h"}, {"tag": "FT01", "value": 5, "unit": "L/h"}),
        ("process_values/Valve", {"value": "Open"}, {"tag": "Valve", "value": "Open"}),
        ("run_log/item-9/cancel", None, {"item": "item-9"}),
        ("run_log/item-9/force", None, {"item": "item-9"}),
    ]
    for path, body, _ in calls:
        response = await client.post(f"/api/process_units/{UNIT}/{path}", json=body, headers=user)
        assert response.status_code == 200, await response.get_data()
        expected = {"accepted": True, "version": 4} if path == "method" else {"accepted": True}
        assert await response.get_json() == expected
    ann = Actor.user("oid-42", "Ann Operator")
    kinds = ["control", "save_method", "inject", "process_value", "process_value", "cancel", "force"]
    assert backend.requests == [(UNIT, kind, detail, ann) for kind, (_, _, detail) in zip(kinds, calls)]


@trio_test
async def test_the_user_header_names_the_actor_else_anonymous(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    path = f"/api/process_units/{UNIT}/control"
    await client.post(path, json={"command": "Stop"}, headers={"X-Pectus-User": "Bob"})
    await client.post(path, json={"command": "Stop"})
    assert [user for *_, user in backend.requests] == [Actor.user("Bob", "Bob"), Actor.user("anonymous", "Anonymous")]


@trio_test
async def test_refusals_and_stale_versions_are_conflicts_with_the_reason(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    backend.outcomes["save_method"] = Outcome(False, "method version 3 is stale: the unit has version 5", conflict=True)
    stale = await client.post(f"/api/process_units/{UNIT}/method", json={"lines": [], "version": 3})
    assert assert_error(stale, await stale.get_json(), 409) == "method version 3 is stale: the unit has version 5"

    backend.outcomes["control"] = Outcome(False, "Unpause is not possible: the unit is not paused")
    refused = await client.post(f"/api/process_units/{UNIT}/control", json={"command": "Unpause"})
    assert assert_error(refused, await refused.get_json(), 409) == "Unpause is not possible: the unit is not paused"

    for kind in ("cancel", "force"):
        backend.outcomes[kind] = Outcome(False, "item-9 has ended")
        response = await client.post(f"/api/process_units/{UNIT}/run_log/item-9/{kind}", headers=AS_JSON)
        assert assert_error(response, await response.get_json(), 409) == "item-9 has ended"


@trio_test
async def test_content_the_unit_rejects_is_a_422_naming_the_field(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    backend.outcomes["inject"] = Outcome(False, "line 1: unknown command 'Frobnicate'")
    response = await client.post(f"/api/process_units/{UNIT}/inject", json={"code": "Frobnicate"})
    assert assert_error(response, await response.get_json(), 422, "code") == "line 1: unknown command 'Frobnicate'"


@trio_test
async def test_acting_on_an_unknown_or_offline_unit_is_a_404(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    response = await client.post("/api/process_units/nope/control", json={"command": "Start"})
    assert "'nope'" in assert_error(response, await response.get_json(), 404)
    response = await client.post("/api/process_units/nope/run_log/1/force", headers=AS_JSON)
    assert_error(response, await response.get_json(), 404)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("control", {}, "command"),
    ("control", {"command": "Explode"}, "command"),
    ("control", {"command": 1}, "command"),
    ("method", {"lines": []}, "version"),
    ("method", {"lines": [], "version": "3"}, "version"),
    ("method", {"lines": [], "version": True}, "version"),
    ("method", {"lines": [], "version": -1}, "version"),
    ("method", {"lines": "Mark: A", "version": 3}, "lines"),
    ("method", {"lines": [{"id": "a"}], "version": 3}, "lines[0].text"),
    ("method", {"lines": [{"id": "a", "text": "x"}, {"id": 2, "text": "y"}], "version": 3}, "lines[1].id"),
    ("inject", {"code": ""}, "code"),
    ("inject", {}, "code"),
    ("process_values/FT01", {"unit": "L/h"}, "value"),
    ("process_values/FT01", {"value": None}, "value"),
    ("process_values/FT01", {"value": 1, "unit": 2}, "unit"),
    ("control", ["Start"], None),
])
@trio_test
async def test_bad_arguments_are_422_with_the_field(backend: FakeBackend, path: str, body: Any, field: str | None) -> None:
    response = await create_app(backend).test_client().post(f"/api/process_units/{UNIT}/{path}", json=body)
    assert_error(response, await response.get_json(), 422, field)
    assert backend.requests == []


@trio_test
async def test_a_body_that_is_not_json_is_a_400(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    for data in (b"{command: Start", b"", b"\xff\xfe"):
        response = await client.post(f"/api/process_units/{UNIT}/control", data=data,
                                     headers={"Content-Type": "application/json"})
        assert_error(response, await response.get_json(), 400)


@trio_test
async def test_a_body_over_one_mebibyte_is_a_413(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    code = "Mark: A\n" * (MAX_BODY_BYTES // 8)
    response = await client.post(f"/api/process_units/{UNIT}/inject", json={"code": code})
    assert_error(response, await response.get_json(), 413)
    assert backend.requests == []


@trio_test
async def test_a_wrong_method_is_a_json_405_with_allow(backend: FakeBackend) -> None:
    response = await create_app(backend).test_client().delete(f"/api/process_units/{UNIT}/control")
    assert_error(response, await response.get_json(), 405)
    assert "POST" in response.headers["Allow"]


# -- OpenAPI ----------------------------------------------------------------------------------

@trio_test
async def test_openapi_lists_exactly_the_registered_routes(backend: FakeBackend) -> None:
    app = create_app(backend)
    document = await (await app.test_client().get("/api/openapi.json")).get_json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["version"] == "1.2.3"

    documented = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    registered = {
        (method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules() for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    # the API (/api, /health, /auth/config) is documented exactly; the browser UI's pages and files are not API
    api = {(method, path) for method, path in registered
           if path.startswith("/api/") or path in ("/health", "/auth/config")}
    assert documented == api
    ui = {(route.method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.path)) for route in ROUTES if route.ui}
    assert ui == {("GET", "/"), ("GET", "/units/{unit}"), ("GET", "/runs/{run}"), ("GET", "/auth-callback"),
                  ("GET", "/static/{file}"), ("GET", "/sw.js")}
    assert registered == api | ui

    for path, operations in document["paths"].items():
        for operation in operations.values():
            names = [parameter["name"] for parameter in operation["parameters"] if parameter["in"] == "path"]
            assert [f"{{{name}}}" for name in names] == [part for part in path.split("/") if part.startswith("{")]
            assert operation["summary"] and operation["responses"]
    control = document["paths"]["/api/process_units/{unit}/control"]["post"]
    assert control["requestBody"]["content"]["application/json"]["schema"]["properties"]["command"]["enum"][0] == "Start"
    assert set(control["responses"]) == {"200", "400", "403", "404", "409", "413", "415", "422"}  # sign-in is off
    assert "security" not in control
    csv = document["paths"]["/api/runs/{run}/csv"]["get"]
    assert [(parameter["name"], parameter["in"]) for parameter in csv["parameters"]] == [("run", "path"), ("ticket", "query")]
    assert set(document["paths"]["/api/ws"]["get"]["responses"]) == {"101", "400"}
    json.dumps(document)

    signed_in = openapi_document("1.2.3", sign_in=True)["paths"]
    control = signed_in["/api/process_units/{unit}/control"]["post"]
    assert set(control["responses"]) == {"200", "400", "401", "403", "404", "409", "413", "415", "422"}
    assert control["security"] == [{"identity": []}]
    assert "security" not in signed_in["/health"]["get"]
    assert set(signed_in["/api/runs"]["get"]["responses"]) == {"200", "401"}  # a list leaves out, never 403


@trio_test
async def test_a_whole_number_is_an_integer_as_json_schema_says(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    response = await client.post(f"/api/process_units/{UNIT}/method", json={"lines": [], "version": 3.0})
    assert response.status_code == 200
    assert backend.requests[-1][2]["version"] == 3 and isinstance(backend.requests[-1][2]["version"], int)
    response = await client.post(f"/api/process_units/{UNIT}/method", json={"lines": [], "version": 3.5})
    assert_error(response, await response.get_json(), 422, "version")


# -- the live WebSocket -----------------------------------------------------------------------

async def receive_deltas(socket: Any, count: int) -> list[dict]:
    """The next ``count`` deltas: they come in frames, each a JSON array of one or more."""
    deltas: list[dict] = []
    while len(deltas) < count:
        frame = await socket.receive_json()
        assert isinstance(frame, list) and frame, frame
        deltas += frame
    assert len(deltas) == count, deltas
    return deltas


@trio_test
async def test_websocket_fans_out_deltas_of_followed_units_and_global_topics(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    with trio.fail_after(5):
        async with client.websocket("/api/ws") as first, client.websocket("/api/ws") as second:
            await first.send_json({"subscribe": [UNIT, "other"]})
            assert await first.receive_json() == {"subscribed": [UNIT, "other"]}
            await second.send_json({"subscribe": ["other"]})
            assert await second.receive_json() == {"subscribed": ["other"]}

            log = {"run": RUN, "changed": [{"id": 1, "state": "started"}]}
            backend.publish(Delta(UNIT, "control_state", {"is_running": True}))
            backend.publish(Delta("other", "run_log", log))
            backend.publish(Delta("third", "method", {}))
            backend.publish(Delta(UNIT, "units", {"id": UNIT, "required_roles": []}))
            assert await receive_deltas(first, 3) == [
                {"unit": UNIT, "topic": "control_state", "data": {"is_running": True}},
                {"unit": "other", "topic": "run_log", "data": log},
                {"unit": UNIT, "topic": "units", "data": {"id": UNIT, "required_roles": []}},
            ]
            assert await receive_deltas(second, 2) == [
                {"unit": "other", "topic": "run_log", "data": log},
                {"unit": UNIT, "topic": "units", "data": {"id": UNIT, "required_roles": []}},
            ]

            await first.send_json({"unsubscribe": [UNIT]})
            assert await first.receive_json() == {"subscribed": ["other"]}
            backend.publish(Delta(UNIT, "method", {"version": 9}))
            backend.publish(Delta(None, "runs", {"run_id": "r1", "required_roles": []}))
            assert await receive_deltas(first, 1) == [{"unit": None, "topic": "runs",
                                                       "data": {"run_id": "r1", "required_roles": []}}]
    assert backend.hub.subscribers == 0  # each socket's subscription is closed with it


@pytest.mark.parametrize("message", [
    "not json",
    json.dumps(["u1"]),
    json.dumps({"subscribe": "u1"}),
    json.dumps({"subscribe": [1]}),
    json.dumps({"hello": []}),
])
@trio_test
async def test_a_malformed_websocket_message_gets_an_error_and_the_socket_stays_open(
        backend: FakeBackend, message: str) -> None:
    client = create_app(backend).test_client()
    with trio.fail_after(5):
        async with client.websocket("/api/ws") as socket:
            await socket.send(message)
            reply = await socket.receive_json()
            assert set(reply) == {"error"} and reply["error"]["message"]
            await socket.send_json({"subscribe": [UNIT]})
            assert await socket.receive_json() == {"subscribed": [UNIT]}


@pytest.mark.parametrize("message, status, reason", [
    ("[" * 100 + "]" * 100, 400, "nests deeper than 64 levels"),
    (json.dumps({"subscribe": ["\ud800"]}), 422, "lone surrogate"),
    ('{"subscribe": [NaN]}', 400, "not JSON"),
])
@trio_test
async def test_a_websocket_message_is_decoded_as_a_request_body_is(
        backend: FakeBackend, message: str, status: int, reason: str) -> None:
    client = create_app(backend).test_client()
    with trio.fail_after(5):
        async with client.websocket("/api/ws") as socket:
            await socket.send(message)
            error = (await socket.receive_json())["error"]
            assert error["status"] == status and reason in error["message"], error
            await socket.send_json({"subscribe": [UNIT]})
            assert await socket.receive_json() == {"subscribed": [UNIT]}


@trio_test
async def test_a_page_of_another_site_cannot_open_the_websocket(backend: FakeBackend) -> None:
    client = create_app(backend, allowed_origins=frozenset({"https://pectus.example.com"})).test_client()
    with trio.fail_after(5):
        for origin in ("http://evil.example", "http://localhost.evil.example", "null"):
            async with client.websocket("/api/ws", headers={"Origin": origin}) as socket:
                with pytest.raises(WebsocketResponseError) as refused:
                    await socket.receive()
            assert refused.value.response.status_code == 403
            assert "PECTUS_ALLOWED_ORIGINS" in (await refused.value.response.get_json())["error"]["message"]
        # the aggregator's own pages (directly, or through a proxy that ends TLS), a listed
        # origin, and clients that are not browsers (no Origin)
        for headers in ({"Origin": "http://localhost"}, {"Origin": "https://localhost"},
                        {"Origin": "https://pectus.example.com"}, {}):
            async with client.websocket("/api/ws", headers=headers) as socket:
                await socket.send_json({"subscribe": [UNIT]})
                assert await socket.receive_json() == {"subscribed": [UNIT]}


def test_a_lagging_websocket_client_gets_coalesced_deltas_and_is_closed_only_when_it_stops_reading(
        backend: FakeBackend) -> None:
    """On Trio's MockClock: the 30 s of the stall rule pass without waiting for them."""
    async def main() -> None:
        client = create_app(backend).test_client()
        async with client.websocket("/api/ws") as lagging, client.websocket("/api/ws") as stopped:
            for socket in (lagging, stopped):
                await socket.send_json({"subscribe": [UNIT]})
                assert await socket.receive_json() == {"subscribed": [UNIT]}

            # Far more changes than the test client's buffer, while neither reads: both hold on.
            began = trio.current_time()
            for second in range(int(STALL) - 1):
                for tick in range(10):
                    backend.publish(Delta(UNIT, "values", [{"name": "FT01", "value": second * 10 + tick,
                                                            "time": iso(began + second + tick / 10)}]))
                    backend.publish(Delta(UNIT, "run_log", {"run": RUN, "changed": [
                        {"id": 1, "progress": tick / 10}, {"id": second + 2, "state": "started"}]}))
                await trio.sleep(1)
            assert backend.hub.subscribers == 2

            # The lagging one reads: a few frames of a few deltas, ending with the latest picture.
            values, items, received = {}, {}, 0
            while len(items) < int(STALL) or values.get("FT01") != (int(STALL) - 2) * 10 + 9:
                for message in await lagging.receive_json():
                    received += 1
                    if message["topic"] == "values":
                        values.update((value["name"], value["value"]) for value in message["data"])
                    else:
                        items.update((item["id"], {**items.get(item["id"], {}), **item})
                                     for item in message["data"]["changed"])
            assert items[1]["progress"] == 0.9
            assert received < 100  # of the 580 published

            # The stopped one never reads: closed with 1013 once it has read nothing for STALL s.
            while backend.hub.subscribers == 2:
                backend.publish(Delta(UNIT, "method", {"version": 1}))
                await trio.sleep(1)
            assert trio.current_time() - began > STALL
            with pytest.raises(WebsocketDisconnectError) as closed:
                while True:
                    await stopped.receive()
            assert closed.value.args[0] == 1013

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@trio_test
async def test_the_websocket_closes_with_1001_when_the_feed_ends(backend: FakeBackend) -> None:
    client = create_app(backend).test_client()
    with trio.fail_after(5):
        async with client.websocket("/api/ws") as socket:
            await socket.send_json({"subscribe": []})
            await socket.receive_json()
            await backend.hub.close()
            with pytest.raises(WebsocketDisconnectError) as closed:
                await socket.receive()
            assert closed.value.args[0] == 1001


# -- the real server --------------------------------------------------------------------------

async def http_get(port: int, path: str) -> tuple[str, dict[str, str], bytes]:
    """One raw HTTP/1.1 GET: status line, headers and the body as sent (chunked framing kept).

    It reads until the message is complete (Content-Length, or the last chunk) rather than
    until the server closes: hypercorn keeps the connection until the client goes away.
    """
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while True:
            received += await stream.receive_some()
            head, separator, body = received.partition(b"\r\n\r\n")
            if not separator:
                continue
            status, *header_lines = head.decode().split("\r\n")
            headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
            if "content-length" in headers and len(body) >= int(headers["content-length"]):
                return status, headers, body
            if headers.get("transfer-encoding") == "chunked" and body.endswith(b"0\r\n\r\n"):
                return status, headers, body


@trio_test
async def test_served_by_hypercorn_trio_on_a_loopback_port(backend: FakeBackend) -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    stop = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(functools.partial(serve, create_app(backend), config, shutdown_trigger=stop.wait))
            port = int(binds[0].rsplit(":", 1)[1])

            status, headers, body = await http_get(port, "/health")
            assert status == "HTTP/1.1 200 "
            assert headers["content-type"] == "application/json"
            assert json.loads(body) == {"status": "ok", "engines": 1}

            status, headers, body = await http_get(port, f"/api/runs/{RUN}/csv")
            assert status == "HTTP/1.1 200 "
            assert headers["transfer-encoding"] == "chunked"  # streamed, not built in memory first
            assert b"599,Open\r\n" in body

            async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/api/ws") as socket:
                await socket.send_message(json.dumps({"subscribe": [UNIT]}))
                assert json.loads(await socket.get_message()) == {"subscribed": [UNIT]}
                backend.publish(Delta(UNIT, "method", {"version": 4}))
                assert json.loads(await socket.get_message()) == [
                    {"unit": UNIT, "topic": "method", "data": {"version": 4}}]
            with pytest.raises(trio_websocket.ConnectionRejected) as refused:  # a page of another site
                async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/api/ws",
                                                             extra_headers=[(b"Origin", b"http://evil.example")]):
                    pass
            assert refused.value.status_code == 403 and b"evil.example" in refused.value.body

            # An oversized body is refused before it is read: that connection is closed, so the
            # client's next request goes on a fresh one instead of waiting forever on this one.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                oversized = {"code": "x" * (MAX_BODY_BYTES + 1)}
                response = await client.post(f"/api/process_units/{UNIT}/inject", json=oversized)
                assert response.status_code == 413 and response.headers["connection"] == "close"
                with trio.fail_after(5):
                    assert (await client.get("/api/version")).status_code == 200
            stop.set()
