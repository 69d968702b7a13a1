"""Sign-in: a real aggregator with sign-in on, against a real OpenID Connect provider on loopback.

The store is seeded with three units - one open to all, one requiring the role Operator, one
requiring Admin - and a run on each; Alice holds Operator. Every API answer needs a valid ID
token; lists leave out what the user may not see and single resources answer 403 with the
missing roles; the live WebSocket signs in with its first message, filters the same way and
closes when the sign-in expires. Requests are recorded under the token's user, whatever the
client claims.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from oidc_provider import OidcProvider
from pectus.actors.aggregator import STORE_FILE, AggregatorProcess
from pectus.events import domain as d
from pectus.events import protocol as p
from pectus.events.store import NewEvent, SQLiteEventStore
from pectus.web import create_app
from pectus.web.app import ROUTES
from pectus.web.auth import CLOCK_SKEW, AuthConfig, ConfigError, DownloadTickets, Identity, SignIn, SignInError

from test_aggregator import engine_hello, run_against_aggregator, session

UNITS = {"open_Unit": [], "ops_Unit": ["Operator"], "admin_Unit": ["Admin"]}
T0 = 1_800_000_000.0


def seed(data: Path) -> None:
    """Each unit described with its required roles, and one run each."""
    data.mkdir(parents=True)
    events: list[d.DomainEvent] = []
    for unit, roles in UNITS.items():
        base = {"unit": unit, "actor": d.Actor.engine(unit)}
        events += [
            d.EngineRegistered(time=T0, **base, computer_name="host", uod_name="Unit", engine_version="0.1.0",
                               protocol=p.PROTOCOL_VERSION),
            d.UodDescribed(time=T0, **base, uod_name="Unit", uod_author_name="A", uod_author_email="a@x",
                           uod_filename="unit.py", location="", hardware="", tags=[], readings=[], commands=[],
                           plot_configuration={}, data_log_interval_seconds=1.0, required_roles=roles),
            d.RunStarted(time=T0 + 1, run=f"run-{unit}", **base),
        ]
    store = SQLiteEventStore(data / STORE_FILE)
    store.append([NewEvent(e.stream, e.type, e.time, e.to_data()) for e in events])
    store.close()


def run_signed_in(tmp_path: Path, scenario):
    """``scenario(port, provider, aggregator)`` against a seeded aggregator with sign-in on."""
    seed(tmp_path / "data")
    with OidcProvider() as provider:
        auth = AuthConfig(True, provider.issuer, provider.client_id, provider.tenant)
        run_against_aggregator(tmp_path, lambda port, aggregator: scenario(port, provider, aggregator), auth=auth)


def client(port: int, token: str | None = None, **headers: str) -> httpx.AsyncClient:
    if token is not None:
        headers["X-Identity"] = token
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10)


def test_every_api_answer_needs_a_valid_token_and_public_routes_stay_open(tmp_path):
    async def scenario(port, provider, aggregator):
        async with client(port) as anonymous:
            assert (await anonymous.get("/health")).status_code == 200
            assert (await anonymous.get("/api/version")).status_code == 200
            assert (await anonymous.get("/")).status_code == 200
            config = (await anonymous.get("/auth/config")).json()
            assert config == {"use_auth": True, "authority": provider.issuer, "client_id": "pectus-test",
                              "scope": "openid profile offline_access"}
            for path in ("/api/process_units", "/api/runs", "/api/process_units/open_Unit",
                         "/api/runs/run-open_Unit/csv"):
                response = await anonymous.get(path)
                assert response.status_code == 401, path
                assert "X-Identity" in response.json()["error"]["message"]
            # a self-declared name is no sign-in
            response = await anonymous.get("/api/runs", headers={"X-Pectus-User": "Alice"})
            assert response.status_code == 401
        bad_tokens = {
            "forged": provider.mint(key="rogue"),
            "expired": provider.mint(lifetime=-CLOCK_SKEW - 5),
            "another audience": provider.mint(aud="someone-else"),
            "another issuer": provider.mint(iss="https://evil.example/v2.0"),
            "no user": provider.mint(oid=None, sub=None),
            "not a token": "hello",
        }
        for name, token in bad_tokens.items():
            async with client(port, token) as bad:
                response = await bad.get("/api/runs")
                assert response.status_code == 401, name
                assert response.json()["error"]["status"] == 401
        assert stored_requests(aggregator) == []

    run_signed_in(tmp_path, scenario)


def test_users_see_only_units_and_runs_whose_roles_they_hold(tmp_path):
    async def scenario(port, provider, aggregator):
        async with client(port, provider.mint()) as alice:  # holds Operator
            units = (await alice.get("/api/process_units")).json()
            assert [unit["id"] for unit in units] == ["open_Unit", "ops_Unit"]
            runs = (await alice.get("/api/runs")).json()
            assert sorted(run["run_id"] for run in runs) == ["run-open_Unit", "run-ops_Unit"]
            assert (await alice.get("/api/process_units/ops_Unit/method")).status_code == 200
            assert (await alice.get("/api/runs/run-ops_Unit/csv")).status_code == 200
            for path in ("/api/process_units/admin_Unit", "/api/process_units/admin_Unit/run_log",
                         "/api/runs/run-admin_Unit", "/api/runs/run-admin_Unit/csv",
                         "/api/runs/run-admin_Unit/events.jsonl"):
                response = await alice.get(path)
                assert response.status_code == 403, path
                assert response.json()["error"]["missing_roles"] == ["Admin"]
            response = await alice.post("/api/process_units/admin_Unit/control", json={"command": "Start"})
            assert response.status_code == 403
            assert (await alice.get("/api/process_units/nobody_Unit")).status_code == 404
        async with client(port, provider.mint(roles=["Admin"])) as admin:
            units = (await admin.get("/api/process_units")).json()
            assert [unit["id"] for unit in units] == ["open_Unit", "admin_Unit"]
        async with client(port, provider.mint(roles=None)) as nobody:
            assert [unit["id"] for unit in (await nobody.get("/api/process_units")).json()] == ["open_Unit"]
        async with client(port, provider.mint(roles="Operator")) as malformed:  # a string, not a list
            assert [unit["id"] for unit in (await malformed.get("/api/process_units")).json()] == ["open_Unit"]
        assert stored_requests(aggregator) == []  # a refused request reaches no unit and records nothing

    run_signed_in(tmp_path, scenario)


def test_a_download_link_works_once_with_a_ticket_for_that_file_and_that_users_roles(tmp_path):
    async def scenario(port, provider, aggregator):
        async with client(port, provider.mint()) as alice, client(port) as link:
            async def ticket(run: str, export: str) -> str:
                response = await alice.post(f"/api/runs/{run}/download_ticket", json={"export": export})
                assert response.status_code == 200, response.text
                return response.json()["url"]

            url = await ticket("run-ops_Unit", "csv")
            response = await link.get(url)  # no X-Identity: a plain link the browser saves
            assert response.status_code == 200 and response.text.startswith("# Run Id,run-ops_Unit")
            assert (await link.get(url)).status_code == 401  # used up
            url = await ticket("run-ops_Unit", "csv")
            other = url.replace("/csv?", "/events.jsonl?")
            assert (await link.get(other)).status_code == 401  # for another file
            assert (await link.get(url)).status_code == 401  # and that attempt used it up
            assert (await link.get("/api/runs/run-ops_Unit/csv?ticket=made-up")).status_code == 401
            assert (await link.get((await ticket("run-open_Unit", "events.jsonl")))).status_code == 200
            response = await alice.post("/api/runs/run-admin_Unit/download_ticket", json={"export": "csv"})
            assert response.status_code == 403
            response = await alice.post("/api/runs/run-ops_Unit/download_ticket", json={"export": "secrets"})
            assert response.status_code == 422 and response.json()["error"]["field"] == "export"
            # a ticket stands in for the sign-in on downloads only
            url = await ticket("run-ops_Unit", "csv")
            assert (await link.get(url.replace("/csv?", "/audit?"))).status_code == 401

    run_signed_in(tmp_path, scenario)


def test_download_tickets_expire_after_a_minute():
    now = [0.0]
    tickets = DownloadTickets(clock=lambda: now[0])
    alice = Identity(d.Actor.user("oid-alice", "Alice"))
    first = tickets.issue(alice, "/api/runs/r/csv")
    assert tickets.redeem(first, "/api/runs/r/csv") == alice
    late = tickets.issue(alice, "/api/runs/r/csv")
    now[0] += 61
    with pytest.raises(SignInError):
        tickets.redeem(late, "/api/runs/r/csv")


def stored_requests(aggregator: AggregatorProcess) -> list[dict]:
    return [record.data for record in aggregator.store.read() if record.type == "UserRequested"]


def test_requests_are_recorded_under_the_signed_in_user_whatever_the_client_claims(tmp_path):
    async def scenario(port, provider, aggregator):
        # An engine online, and a request it answers: recorded with the token's user.
        async with open_websocket_url(f"ws://127.0.0.1:{port}/engine") as engine:
            await engine.send_message(p.encode(engine_hello("open_Unit")))
            assert isinstance(p.decode(await engine.get_message()), p.Welcome)

            async def answer_the_request():
                while True:
                    message = p.decode(await engine.get_message())
                    if isinstance(message, p.Request):
                        await engine.send_message(p.encode(p.Reply(message.request_id, True)))
                        return

            async with trio.open_nursery() as nursery, \
                    client(port, provider.mint(), **{"X-Pectus-User": "Mallory"}) as alice:
                nursery.start_soon(answer_the_request)
                response = await alice.post("/api/process_units/open_Unit/control", json={"command": "Pause"})
                assert response.status_code == 200, response.text
        (recorded,) = stored_requests(aggregator)
        assert recorded["actor"] == {"kind": "user", "id": "oid-alice", "name": "Alice Smith"}

    run_signed_in(tmp_path, scenario)


async def ws_messages(ws, count: int) -> list[dict]:
    """The messages of the next ``count`` frames: a reply is a frame, deltas come in arrays."""
    messages = []
    for _ in range(count):
        frame = json.loads(await ws.get_message())
        messages += frame if isinstance(frame, list) else [frame]
    return messages


def test_the_live_socket_signs_in_with_its_first_message_and_filters_by_role(tmp_path):
    async def scenario(port, provider, aggregator):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/ws") as ws:
            await ws.send_message(json.dumps({"subscribe": ["open_Unit"]}))
            (refused,) = await ws_messages(ws, 1)
            assert refused["error"]["status"] == 401
            await ws.send_message(json.dumps({"identity": provider.mint(key="rogue")}))
            (refused,) = await ws_messages(ws, 1)
            assert refused["error"]["status"] == 401
            await ws.send_message(json.dumps({"identity": provider.mint(), "subscribe": ["open_Unit"]}))
            assert await ws_messages(ws, 1) == [{"subscribed": ["open_Unit"]}]
            await ws.send_message(json.dumps({"subscribe": ["admin_Unit"]}))
            (refused,) = await ws_messages(ws, 1)
            assert refused["error"]["status"] == 403 and refused["error"]["missing_roles"] == ["Admin"]
            # Engines of a unit Alice may not see and of one she may connect: she hears of the second only.
            await session(port, [], hello=engine_hello("admin_Unit"))
            await session(port, [], hello=engine_hello("open_Unit"))
            seen = set()
            with trio.fail_after(10):
                while "open_Unit" not in seen:
                    seen.update(message.get("unit") for message in await ws_messages(ws, 1))
            assert "admin_Unit" not in seen

    run_signed_in(tmp_path, scenario)


def test_the_live_socket_closes_when_the_sign_in_expires_unless_renewed_on_it(tmp_path):
    async def scenario(port, provider, aggregator):
        # Valid now (within the allowed clock skew), expired three seconds from now.
        expires = time.time() + 3
        token = provider.mint(lifetime=-CLOCK_SKEW + 3)
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/ws") as ws:
            await ws.send_message(json.dumps({"identity": token, "subscribe": ["open_Unit"]}))
            assert await ws_messages(ws, 1) == [{"subscribed": ["open_Unit"]}]
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()  # nothing happens on the unit: the socket closes all the same
            assert closed.value.reason.code == 4401
            assert time.time() >= expires - 1  # and not before it expired

    run_signed_in(tmp_path, scenario)


def test_an_identity_renewed_on_the_live_socket_keeps_it_open(tmp_path):
    async def scenario(port, provider, aggregator):
        expires = time.time() + 3
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/ws") as ws:
            await ws.send_message(json.dumps({"identity": provider.mint(lifetime=-CLOCK_SKEW + 3),
                                              "subscribe": ["open_Unit"]}))
            assert await ws_messages(ws, 1) == [{"subscribed": ["open_Unit"]}]
            await ws.send_message(json.dumps({"identity": provider.mint()}))
            assert await ws_messages(ws, 1) == [{"subscribed": ["open_Unit"]}]
            hello = engine_hello("open_Unit")
            with trio.fail_after(20):
                while time.time() < expires + 1:  # past the first token's end, changes keep arriving
                    await session(port, [], hello=hello)
                    while "open_Unit" not in {message["unit"] for message in await ws_messages(ws, 1)}:
                        pass  # a global delta (the unit's run summary, unit None)
                await ws.send_message(json.dumps({"subscribe": ["open_Unit"]}))
                while not any("subscribed" in message for message in await ws_messages(ws, 1)):
                    pass  # the changes sent meanwhile
            assert ws.closed is None

    run_signed_in(tmp_path, scenario)


def test_an_identity_switched_on_the_live_socket_drops_the_units_the_new_user_may_not_see(tmp_path):
    async def scenario(port, provider, aggregator):
        async def log_error(unit: str, message: str) -> None:  # a change of the unit, through the real writer
            await aggregator.writer.append([d.ErrorLogged(time=time.time(), unit=unit, run=f"run-{unit}",
                                                          actor=d.Actor.engine(unit), severity="error",
                                                          message=message)])

        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/ws") as ws:
            await ws.send_message(json.dumps({"identity": provider.mint(), "subscribe": ["open_Unit", "ops_Unit"]}))
            assert await ws_messages(ws, 1) == [{"subscribed": ["open_Unit", "ops_Unit"]}]
            await log_error("ops_Unit", "for Alice")  # an Operator: she sees it
            (seen,) = await ws_messages(ws, 1)
            assert (seen["unit"], seen["topic"]) == ("ops_Unit", "error_log")

            bob = provider.mint(oid="oid-bob", sub="sub-bob", name="Bob Jones", preferred_username="bob@example.com",
                                roles=[])
            await ws.send_message(json.dumps({"identity": bob}))
            assert await ws_messages(ws, 1) == [{"subscribed": ["open_Unit"], "dropped": {"ops_Unit": ["Operator"]}}]
            await log_error("ops_Unit", "not for Bob")
            await log_error("open_Unit", "for everyone")  # published after the one Bob may not see
            with trio.fail_after(10):
                (seen,) = await ws_messages(ws, 1)
            assert (seen["unit"], seen["topic"], seen["data"]["changed"][0]["message"]) == (
                "open_Unit", "error_log", "for everyone")

    run_signed_in(tmp_path, scenario)


def test_with_sign_in_off_nobody_holds_a_role_so_units_requiring_one_are_shown_to_nobody(tmp_path):
    seed(tmp_path / "data")

    async def scenario(port, aggregator):
        async with client(port, **{"X-Pectus-User": "Alice"}) as alice:
            assert (await alice.get("/auth/config")).json()["use_auth"] is False
            assert [unit["id"] for unit in (await alice.get("/api/process_units")).json()] == ["open_Unit"]
            response = await alice.get("/api/runs/run-ops_Unit")
            assert response.status_code == 403 and response.json()["error"]["missing_roles"] == ["Operator"]

    run_against_aggregator(tmp_path, scenario)


def test_sign_in_settings_come_from_the_deployment_variables():
    assert AuthConfig.from_environment({}) == AuthConfig()
    assert AuthConfig.from_environment({"ENABLE_AZURE_AUTHENTICATION": "false"}).enabled is False
    config = AuthConfig.from_environment({"ENABLE_AZURE_AUTHENTICATION": "TRUE", "AZURE_DIRECTORY_TENANT_ID": "contoso",
                                          "AZURE_APPLICATION_CLIENT_ID": "app-1"})
    assert config == AuthConfig(True, "https://login.microsoftonline.com/contoso/v2.0", "app-1", "contoso")
    with pytest.raises(ConfigError, match="AZURE_DIRECTORY_TENANT_ID"):
        AuthConfig.from_environment({"ENABLE_AZURE_AUTHENTICATION": "true", "AZURE_APPLICATION_CLIENT_ID": "app-1"})


def test_provider_keys_are_fetched_once_and_again_only_for_an_unknown_key_at_most_once_a_minute():
    with OidcProvider() as provider:
        fetched: list[str] = []
        now = [1000.0]

        async def fetch(url: str):
            fetched.append(url)
            async with httpx.AsyncClient() as http:
                return (await http.get(url)).json()

        sign_in = SignIn(AuthConfig(True, provider.issuer, provider.client_id, provider.tenant), fetch,
                         clock=lambda: now[0])

        async def main():
            for _ in range(3):
                assert (await sign_in.identify_token(provider.mint())).actor.name == "Alice Smith"
            assert len(fetched) == 2  # discovery and keys, once
            stranger = jwt.encode({"sub": "x"}, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                  algorithm="RS256", headers={"kid": "unknown"})
            for _ in range(3):
                with pytest.raises(SignInError, match="does not publish"):
                    await sign_in.identify_token(stranger)
            assert len(fetched) == 2  # within the minute: no new fetch
            now[0] += 61
            with pytest.raises(SignInError, match="does not publish"):
                await sign_in.identify_token(stranger)
            assert len(fetched) == 4

        trio.run(main)


def test_a_provider_that_cannot_be_reached_gives_503_until_it_answers_again():
    with OidcProvider() as provider:
        now = [1000.0]
        down = [True]

        async def fetch(url: str):
            if down[0]:
                raise OSError("connection refused")
            async with httpx.AsyncClient() as http:
                return (await http.get(url)).json()

        sign_in = SignIn(AuthConfig(True, provider.issuer, provider.client_id, provider.tenant), fetch,
                         clock=lambda: now[0])

        async def main():
            with pytest.raises(SignInError, match="connection refused") as error:
                await sign_in.identify_token(provider.mint())
            assert error.value.status == 503
            down[0] = False
            with pytest.raises(SignInError) as error:  # not asked again within the minute
                await sign_in.identify_token(provider.mint())
            assert error.value.status == 503
            now[0] += 61
            assert (await sign_in.identify_token(provider.mint())).actor.id == "oid-alice"

        trio.run(main)


@pytest.mark.parametrize("route", [route for route in ROUTES if route.signed_in], ids=lambda route: route.endpoint)
def test_every_signed_in_route_refuses_a_request_without_a_token(route):
    """Driven by the route table, so a route added later cannot slip through unguarded."""
    from test_web import RUN, UNIT, FakeBackend

    app = create_app(FakeBackend(), SignIn(AuthConfig(True, "http://127.0.0.1:9/unused", "app", "tenant")))
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda match: {"unit": UNIT, "run": RUN}.get(match[1], "x"), route.path)

    async def main():
        client = app.test_client()
        response = await (client.get(path) if route.method == "GET" else client.post(path, json={}))
        assert response.status_code == 401, (route.path, response.status_code)
        assert "X-Identity" in (await response.get_json())["error"]["message"]

    trio.run(main)


def test_only_what_holds_no_process_data_is_public():
    public = {route.path for route in ROUTES if not route.signed_in}
    assert public == {"/health", "/api/version", "/api/openapi.json", "/auth/config",
                      "/api/ws",  # signs in with its first message
                      "/", "/units/<unit>", "/runs/<run>", "/auth-callback", "/static/<path:file>",
                      "/sw.js"}  # the push service worker: our code, no data


@pytest.mark.parametrize("signed_in", [False, True])
def test_ops_are_told_when_a_unit_requires_a_role_that_nobody_can_hold(tmp_path, caplog, signed_in):
    uod = {"uod_name": "Unit", "uod_author_name": "A", "uod_author_email": "a@x", "uod_filename": "unit.py",
           "location": "", "hardware": "", "tags": [], "readings": [], "commands": [], "plot_configuration": {},
           "data_log_interval_seconds": 1.0, "required_roles": ["Operator"]}
    frame = p.encode(p.Records([{"seq": 1, "kind": "uod", "time": T0, "run": None, "data": uod}]))
    hello = engine_hello("ops_Unit")
    auth = AuthConfig(True, "http://127.0.0.1:9/unused", "app", "tenant") if signed_in else AuthConfig()

    async def scenario(port, aggregator):
        assert isinstance((await session(port, [frame], hello=hello))[-1], p.Ack)

    with caplog.at_level(logging.WARNING, logger="pectus.aggregator.engines"):
        run_against_aggregator(tmp_path, scenario, auth=auth)
    warned = [record.getMessage() for record in caplog.records if "sign-in is off" in record.getMessage()]
    assert warned == ([] if signed_in else
                      ["unit ops_Unit requires the role(s) Operator, but sign-in is off: nobody holds a role, "
                       "so nobody can see the unit"])


def test_a_headless_clients_app_token_is_accepted_under_azures_app_issuer():
    """Scripts use the client-credentials flow; Azure issues those tokens as sts.windows.net."""
    with OidcProvider() as provider:
        sign_in = SignIn(AuthConfig(True, provider.issuer, provider.client_id, provider.tenant))
        app_token = provider.mint(iss=f"https://sts.windows.net/{provider.tenant}/", idtyp="app", name=None,
                                  preferred_username=None, oid="oid-robot", app_displayname="Nightly export",
                                  roles=["Operator"])
        identity = trio.run(sign_in.identify_token, app_token)
        assert identity.actor == d.Actor.user("oid-robot", "Nightly export")
        assert identity.roles == {"Operator"}
        with pytest.raises(SignInError):  # another tenant's app issuer is not ours
            trio.run(sign_in.identify_token, provider.mint(iss="https://sts.windows.net/someone-else/"))
