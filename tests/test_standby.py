"""The standby aggregator and the engines' several addresses, piece by piece (the whole, with
processes killed, is tests/test_failover.py).

* the engine's addresses from ``-ahn``/``-ap``, and the order and waits of its tries (sans-I/O);
* the active lock on a real PostgreSQL server: one holder at a time, lost with its session;
* a standby on loopback: ``/health`` says standby (503), the API and an engine's handshake are
  refused (503, the protocol's ``standby`` refusal); an engine moves past it to the active
  aggregator; when the active one stops, the standby takes over and the engine follows;
* an active aggregator whose lock session is killed is told at once;
* SQLite has no standby: a second aggregator on one data directory is refused.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from conftest import DEMO_UNIT, DEMO_UOD, ROOT, demo_aggregator, wait_for
from pectus.actors import standby
from pectus.actors.aggregator import SIGNING_KEY_FILE, AggregatorProcess
from pectus.actors.core import first_failure
from pectus.actors.engine import EngineProcess
from pectus.actors.uplink import RETRY_FIRST, RETRY_MAX, STANDBY_RETRY, Addresses
from pectus.cli.engine import aggregator_urls
from pectus.events import protocol as p
from pectus.events.signing import load_or_create_signer
from pectus.hardware.opcua_server import free_port
from pectus.uod import load_uod
from postgres import PostgreSQLServer

BIN = Path(sys.executable).parent


# -- the engine's addresses ------------------------------------------------------------------------

def test_the_engine_takes_one_or_several_aggregator_addresses_with_their_ports():
    assert aggregator_urls("127.0.0.1", None, False) == ["ws://127.0.0.1:8300/engine"]  # Open Pectus' flags
    assert aggregator_urls("pectus.plant.example", None, True) == ["wss://pectus.plant.example:443/engine"]
    assert aggregator_urls("agg1", "9000", False) == ["ws://agg1:9000/engine"]
    assert aggregator_urls("agg1,agg2", None, False) == ["ws://agg1:8300/engine", "ws://agg2:8300/engine"]
    assert aggregator_urls("agg1, agg2", "8300,8301", False) == ["ws://agg1:8300/engine", "ws://agg2:8301/engine"]
    assert aggregator_urls("agg1:8300,[::1]:8301,::1", "7000", True) == [
        "wss://agg1:8300/engine", "wss://[::1]:8301/engine", "wss://[::1]:7000/engine"]
    for hosts, ports, problem in [("agg1,,agg2", None, "a host name is empty"),
                                  ("agg1,agg2", "1,2,3", "3 ports for the 2 hosts"),
                                  ("agg1:x", None, "'x' is not a port"), ("agg1", "70000", "is not a port"),
                                  ("[::1", None, "write an IPv6 address as")]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            aggregator_urls(hosts, ports, False)


def test_bad_addresses_are_refused_before_the_engine_starts(tmp_path):
    done = subprocess.run([str(BIN / "pectus-engine"), "-uod", str(DEMO_UOD), "-ahn", "agg1,agg2", "-ap", "1,2,3",
                           "--outbox", str(tmp_path / "outbox.sqlite3")], capture_output=True, text=True, check=False,
                          timeout=60)
    assert done.returncode == 2 and "3 ports for the 2 hosts" in done.stderr


def test_addresses_are_tried_in_turn_and_a_standby_sends_the_engine_on_at_once():
    addresses = Addresses(["ws://a/engine", "ws://b/engine"])
    tries = iter(addresses)
    assert [next(tries) for _ in range(3)] == ["ws://a/engine", "ws://b/engine", "ws://a/engine"]
    # A dead aggregator: the back-off doubles, up to its most.
    assert [addresses.after_failure() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, RETRY_MAX, RETRY_MAX]
    # A takeover under way (a dead one, a standby): the standby moves on at once, the dead one waits briefly.
    assert addresses.after_standby() == 0.0
    assert addresses.after_failure() == STANDBY_RETRY
    assert addresses.after_session() == RETRY_FIRST and addresses.after_failure() == RETRY_FIRST
    # Every address a standby (no active one yet): a pause after each round, not a busy loop.
    assert [addresses.after_standby() for _ in range(4)] == [0.0, STANDBY_RETRY, 0.0, STANDBY_RETRY]
    alone = Addresses(["ws://a/engine"])  # one address: its standby is asked again after a pause
    assert alone.after_standby() == STANDBY_RETRY
    with pytest.raises(ValueError):
        Addresses([])


def test_a_standby_refusal_is_read_from_the_answer_to_the_handshake():
    body = p.encode(p.Refused("standby here", p.STANDBY)).encode()
    assert p.standby_refusal(503, body) == p.Refused("standby here", p.STANDBY)
    assert p.standby_refusal(502, body) is None  # a proxy's error, not a standby
    assert p.standby_refusal(503, b"<html>503 Service Temporarily Unavailable</html>") is None
    assert p.standby_refusal(503, p.encode(p.Refused("no", "identity")).encode()) is None
    assert p.standby_refusal(503, None) is None


def test_the_protocol_page_names_every_refusal_code():
    handshake = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8").split("## The handshake")[1]
    assert all(f"`{code}`" in handshake for code in p.REFUSAL_CODES)


# -- the active lock ----------------------------------------------------------------------------------

def _terminate(server: PostgreSQLServer, url: str, name: str) -> int:
    """Ends the sessions named ``name`` (as a partition the server noticed, or an operator, would)."""
    database = url.rsplit("/", 1)[1]
    with server.connect(database) as admin:
        return len(admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                                 "WHERE application_name = %s", (name,)).fetchall())


def test_one_aggregator_holds_the_active_lock_until_its_session_ends(postgresql_server, postgresql_url):
    first, second = standby.ActiveLock(postgresql_url, "aggregator one"), standby.ActiveLock(postgresql_url,
                                                                                             "aggregator two")
    try:
        assert first.try_take() and not second.try_take()
        first.check()
        with pytest.raises(standby.LockLost, match="no longer holds it"):
            second.check()  # connected, not holding
        assert not second.try_take()
        assert _terminate(postgresql_server, postgresql_url, "aggregator one") == 1
        with pytest.raises(standby.LockLost, match="the lock's connection failed"):
            first.check()
        assert second.try_take()  # the killed session's lock is free
        second.check()
        assert not first.try_take()  # connects anew; the lock is the other's
        second.close()
        assert first.try_take()
    finally:
        first.close()
        second.close()


def test_a_database_out_of_reach_is_said_with_its_password_masked():
    lock = standby.ActiveLock(f"postgresql://pectus:s3cret-word@127.0.0.1:{free_port()}/store", "aggregator")
    with pytest.raises(ConnectionError, match="cannot reach the store's database") as refused:
        lock.try_take()
    assert "s3cret-word" not in str(refused.value)
    with pytest.raises(standby.LockLost):
        lock.check()


# -- a standby on loopback -----------------------------------------------------------------------------

def test_a_standby_refuses_all_but_health_sends_engines_on_and_takes_over(tmp_path, postgresql_url, caplog):
    """Two aggregators on one PostgreSQL store, each through standby.serve; the demo engine is given the
    standby's address first. It moves past the standby to the active aggregator; when that one
    stops, the standby takes the lock, starts, and the engine reconnects to it."""
    caplog.set_level(logging.INFO, "pectus.engine.uplink")
    first = demo_aggregator(tmp_path, store=postgresql_url)  # enrols the demo engine
    first.port = free_port()  # where the standby in front of it binds first
    key = load_or_create_signer(tmp_path / "data" / SIGNING_KEY_FILE)
    second_port = free_port()

    def start_second() -> AggregatorProcess:
        return AggregatorProcess(tmp_path / "second", port=second_port, hostname="second-host", store=postgresql_url,
                                 signer=key)

    async def main() -> None:
        stop_first, stop_second = trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as http:
            await nursery.start(partial(standby.serve, standby.ActiveLock(postgresql_url, "first"), "127.0.0.1",
                                        first.port, lambda: first, stop_first, grace=0.2))
            await wait_for(lambda: _health(http, first.port, "ok"), timeout=20, ignore=(httpx.HTTPError,))
            await nursery.start(partial(standby.serve, standby.ActiveLock(postgresql_url, "second"), "127.0.0.1",
                                        second_port, start_second, stop_second, grace=0.2))
            second = f"http://127.0.0.1:{second_port}"
            health = await wait_for(lambda: _health(http, second_port, "standby", standby.WAITING), timeout=10)
            assert health.status_code == 503
            refused = await http.get(f"{second}/api/process_units")
            assert refused.status_code == 503 and refused.json()["status"] == "standby"
            assert (await http.post(f"{second}/api/process_units/{DEMO_UNIT}/control",
                                    json={"command": "Start"})).status_code == 503
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(f"ws://127.0.0.1:{second_port}/engine"):
                    pass
            assert p.standby_refusal(rejected.value.status_code, rejected.value.body).code == p.STANDBY

            engine = EngineProcess(load_uod(DEMO_UOD), uplink={
                "outbox": tmp_path / "engine.outbox.sqlite3", "engine_id": DEMO_UNIT, "computer_name": "testhost",
                "url": [f"ws://127.0.0.1:{second_port}/engine", f"ws://127.0.0.1:{first.port}/engine"]})
            await nursery.start(engine.run)
            await wait_for(lambda: _connected(http, first.port), timeout=20)
            assert any("is a standby, trying the next address" in r.getMessage() for r in caplog.records)

            stop_first.set()  # the active aggregator stops; its lock goes with its connection
            await wait_for(lambda: _health(http, second_port, "ok"), timeout=20, ignore=(httpx.HTTPError,))
            await wait_for(lambda: _connected(http, second_port), timeout=20)
            await engine.stop()
            stop_second.set()

    trio.run(main)


async def _health(http: httpx.AsyncClient, port: int, status: str, detail: str | None = None) -> httpx.Response | None:
    """The answer of /health once it has that status (and detail)."""
    answer = await http.get(f"http://127.0.0.1:{port}/health")
    report = answer.json()
    return answer if report["status"] == status and detail in (None, report.get("detail")) else None


async def _connected(http: httpx.AsyncClient, port: int) -> bool:
    """The engine has a session with the aggregator on ``port`` (the views' "online" is what the log
    says, which after a takeover is the former active one's word until the engine reconnects)."""
    return (await http.get(f"http://127.0.0.1:{port}/health")).json().get("engines") == 1


def test_a_standby_that_loses_its_database_says_so_and_waits_on(postgresql_server, postgresql_url):
    """A database that cannot be reached at start stops the aggregator, saying why; one that goes
    away later is a standby's problem to report (/health, password masked) and to wait out."""
    port, name = free_port(), f"standby_{os.getpid()}"
    database = postgresql_url.rsplit("/", 1)[1]
    holder = standby.ActiveLock(postgresql_url, "the active one")
    assert holder.try_take()
    with postgresql_server.connect(database) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 's3cret-word'")
    url = postgresql_server.url(database, user=name, password="s3cret-word")

    def start() -> AggregatorProcess:
        raise AssertionError("a standby that never held the lock started")

    async def detail(http: httpx.AsyncClient, text: str) -> httpx.Response | None:
        answer = await http.get(f"http://127.0.0.1:{port}/health")
        return answer if text in answer.json()["detail"] else None

    async def main() -> None:
        wrong = standby.ActiveLock(postgresql_server.url(database, user=name, password="wrong"), "aggregator")
        with pytest.raises(ExceptionGroup) as refused:  # from the nurseries around it
            await standby.serve(wrong, "127.0.0.1", port, start, trio.Event())
        failure = first_failure(refused.value)
        assert isinstance(failure, ConnectionError) and "cannot reach the store's database" in str(failure)
        shutdown = trio.Event()
        with trio.fail_after(30):  # the standby ends when told, its address free again
            async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as http:
                await nursery.start(partial(standby.serve, standby.ActiveLock(url, name), "127.0.0.1", port, start,
                                            shutdown))
                await wait_for(partial(detail, http, standby.WAITING), timeout=10)
                with postgresql_server.connect(database) as admin:
                    admin.execute(f"ALTER ROLE {name} NOLOGIN")
                    admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s",
                                  (name,))
                answer = await wait_for(partial(detail, http, "cannot reach the store's database"), timeout=10)
                assert answer.status_code == 503 and answer.json()["status"] == "standby"
                assert "s3cret-word" not in answer.text
                with postgresql_server.connect(database) as admin:
                    admin.execute(f"ALTER ROLE {name} LOGIN")
                await wait_for(partial(detail, http, standby.WAITING), timeout=10)
                shutdown.set()
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(standby.serve, holder, "127.0.0.1", port, start, trio.Event()))
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        holder.close()
        with postgresql_server.connect(database) as admin:
            admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", (name,))
            admin.execute(f"DROP ROLE {name}")


class _Serving:
    """An active aggregator's stand-in: serves until told to stop."""

    async def run(self, *, shutdown: trio.Event, before_serving: Callable[[], Awaitable[None]]) -> None:
        await before_serving()
        await shutdown.wait()


def test_the_active_aggregator_is_told_at_once_when_its_lock_session_is_killed(postgresql_server,
                                                                                postgresql_url):
    lost: list[tuple[float, str]] = []

    async def main() -> None:
        shutdown = trio.Event()
        lock = standby.ActiveLock(postgresql_url, "the active one")

        def told(problem: str) -> None:
            lost.append((trio.current_time(), problem))
            shutdown.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(partial(standby.serve, lock, "127.0.0.1", free_port(), _Serving, shutdown,
                                        lost=told, grace=0.1))
            await wait_for(lambda: lock.pid() is not None, timeout=10)
            killed = trio.current_time()
            assert await trio.to_thread.run_sync(_terminate, postgresql_server, postgresql_url, "the active one") == 1
            with trio.fail_after(10):
                await shutdown.wait()
        (when, problem), = lost
        assert when - killed < standby.CHECK_EVERY + 1.0 and "the lock's connection failed" in problem

    trio.run(main)


# -- SQLite: no standby ------------------------------------------------------------------------------

def test_a_second_aggregator_on_one_sqlite_store_is_refused(tmp_path):
    data, port = tmp_path / "data", free_port()
    first = subprocess.Popen([str(BIN / "pectus-aggregator"), "--port", str(port), "--data-dir", str(data)],
                             stderr=subprocess.DEVNULL)
    try:
        async def up() -> bool:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200

        trio.run(partial(wait_for, up, timeout=30, ignore=(httpx.HTTPError,)))
        second = subprocess.run([str(BIN / "pectus-aggregator"), "--port", str(free_port()), "--data-dir", str(data)],
                                capture_output=True, text=True, check=False, timeout=60)
        assert second.returncode == 1
        assert f"another aggregator (process {first.pid} on " in second.stderr
        assert "one aggregator per SQLite store" in second.stderr and "PostgreSQL" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(20)
    restarted = subprocess.Popen([str(BIN / "pectus-aggregator"), "--port", str(port), "--data-dir", str(data)],
                                 stderr=subprocess.DEVNULL)  # the lock went with the process that held it
    try:
        trio.run(partial(wait_for, up, timeout=30, ignore=(httpx.HTTPError,)))
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(20)
