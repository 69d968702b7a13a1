"""The standby aggregator: several aggregators on one PostgreSQL store, exactly one of them active.

    standby ──(takes the active lock)──> starting ──(GRACE; the views)──> active
       ^                                                                    │ the lock is lost
       └──────── a new process: its supervisor starts it again <─── the process ends at once

The active aggregator is the one that holds the store's **active lock**: a PostgreSQL
session-level advisory lock (:data:`ACTIVE_LOCK`; pectus.events.postgres's appends use another
key) held on a connection of its own (:class:`ActiveLock`). Every other aggregator on the store is
a **standby** (:class:`StandbyApp`): it serves nothing but ``GET /health`` - 503 with
``{"status": "standby"}``, so that a load balancer keeps it out of rotation - and answers every
other request 503, an engine's WebSocket handshake with the protocol's ``refused`` message of code
``standby`` as the body (the engine tries its next address at once); and it asks for the lock
every :data:`POLL` seconds. When the active aggregator goes (stopped, crashed, killed: its
connection closes and PostgreSQL frees the lock), one standby takes the lock, waits
:data:`GRACE`, opens the store, loads its views (the checkpoint and the log after it) and serves
everything. Engines reconnect to it and its welcome tells each what it has stored from its
outbox: nothing is lost, nothing is stored twice.

**Never two actives.** The active aggregator checks its lock connection every
:data:`CHECK_EVERY` seconds; when a check fails, or is not answered within :data:`CHECK_TIMEOUT`
(the database or the network is away), the process ends at once (:func:`end_process`), for the
lock may be another's already. Why that is soon enough:

* a lock connection the server closed (``pg_terminate_backend``, a server restart) fails the next
  check, so the old active ends within CHECK_EVERY (plus its loop's latency); a new active opens
  the store only GRACE after it took the lock;
* in a network partition the server frees the lock only once it finds the client gone: the lock
  connection has it probe the client (TCP keep-alive) and give up on unanswered data after
  :data:`SERVER_GIVES_UP` seconds - later than the old active ends (CHECK_EVERY + CHECK_TIMEOUT).

Beneath that, the store refuses an append hashed after an event that is no longer the last
(StoreConflict): two writers could not fork the chain anyway.

The lock needs a session of its own: connect the aggregators to PostgreSQL directly, or through a
pooler in session mode (a transaction-mode pooler hands the session to other clients).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from hashlib import sha256
from typing import Any, Protocol, TypeVar

import psycopg
import trio

from pectus import __version__
from pectus.actors.core import RateLimitedLog
from pectus.events import protocol as p
from pectus.events.store import redacted

__all__ = ["ACTIVE_LOCK", "ActiveLock", "LockLost", "StandbyApp", "end_process", "serve"]

log = logging.getLogger("pectus.aggregator.standby")

# The first 8 bytes of SHA-256("pectus:active"), as PostgreSQL's signed bigint (locks are per database).
ACTIVE_LOCK = int.from_bytes(sha256(b"pectus:active").digest()[:8], "big", signed=True)
POLL = 0.5  # seconds between a standby's requests for the lock
CHECK_EVERY = 0.5  # seconds between the active aggregator's checks of its lock connection
CHECK_TIMEOUT = 3.0  # a check not answered within this many seconds: the lock counts as lost
GRACE = 2.0  # seconds from taking the lock to opening the store: a former active has ended by then
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 4, 2, 3  # the server's probes of the lock's client
SERVER_GIVES_UP = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT  # seconds: then the lock is free
CONNECT_TIMEOUT = 5
EXIT_LOCK_LOST = 1
assert CHECK_EVERY + CHECK_TIMEOUT < SERVER_GIVES_UP and GRACE > CHECK_EVERY, "see the module's docstring"

WAITING = "another aggregator is active on this store; this one takes over when it goes"
REFUSAL = ("this aggregator is a standby: another aggregator is active on its store (this one takes over when "
           "that one goes); use the next aggregator address")
# A held lock as pg_locks shows it: a bigint key is split into classid (high half) and objid.
_HELD = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
         "AND pid = pg_backend_pid() AND ((classid::bigint << 32) | objid::bigint) = %s)")

T = TypeVar("T")


class LockLost(Exception):
    """This aggregator no longer holds the store's active lock, or cannot tell that it does."""


class ActiveLock:
    """The store's active lock, on a PostgreSQL connection of its own. Blocking: call it from one
    worker thread at a time. ``name`` is the connection's ``application_name``: ``pg_stat_activity``
    shows which aggregator is active. The lock is held from a :meth:`try_take` that returned True
    until the connection closes (:meth:`close`, or the process's end)."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self._conn: psycopg.Connection[Any] | None = None

    def try_take(self) -> bool:
        """Takes the lock unless another session holds it; ConnectionError, saying why, when the
        database cannot be reached (the next call connects anew)."""
        try:
            taken = self._connection().execute("SELECT pg_try_advisory_lock(%s)", (ACTIVE_LOCK,)).fetchone()
            return bool(taken and taken[0])
        except psycopg.Error as error:
            self.close()
            raise ConnectionError(f"cannot reach the store's database: {redacted(str(error), self.url)}") from None

    def check(self) -> None:
        """Returns while this connection holds the lock; LockLost otherwise."""
        conn = self._conn
        if conn is None:
            raise LockLost("the lock's connection is closed")
        try:
            held = conn.execute(_HELD, (ACTIVE_LOCK,)).fetchone()
        except psycopg.Error as error:
            self.close()
            raise LockLost(f"the lock's connection failed: {redacted(str(error), self.url).strip()}") from None
        if not (held and held[0]):
            raise LockLost("the lock's session no longer holds it")

    def pid(self) -> int | None:
        """The server process of the lock's session (what pg_terminate_backend takes), if connected."""
        return self._conn.info.backend_pid if self._conn is not None else None

    def close(self) -> None:
        """Closes the connection: a held lock is free for a standby."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   application_name=self.name, keepalives=1, keepalives_idle=KEEPALIVE_IDLE,
                                   keepalives_interval=KEEPALIVE_INTERVAL, keepalives_count=KEEPALIVE_COUNT)
            # The server's side of the same: it frees the lock of a client it cannot reach, in time.
            for setting, value in (("tcp_keepalives_idle", KEEPALIVE_IDLE),
                                   ("tcp_keepalives_interval", KEEPALIVE_INTERVAL),
                                   ("tcp_keepalives_count", KEEPALIVE_COUNT),
                                   ("tcp_user_timeout", SERVER_GIVES_UP * 1000)):
                conn.execute("SELECT set_config(%s, %s, false)", (setting, str(value)))
            self._conn = conn
        return self._conn


class StandbyApp:
    """What a standby serves, as an ASGI application: ``/health`` and refusals, nothing of the
    record. Every answer is 503 with ``Retry-After``; ``detail`` says what the standby waits for."""

    def __init__(self) -> None:
        self.detail = "asking for the store's active lock"

    def health(self) -> dict[str, Any]:
        return {"status": "standby", "version": __version__, "detail": self.detail}

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            report = self.health() if scope["path"] == "/health" else {"status": "standby", "error": REFUSAL}
            await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": json.dumps(report).encode()})
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect
            if "websocket.http.response" in scope.get("extensions", {}):
                # Refused before the upgrade: nginx (proxy_next_upstream http_503) tries its next upstream.
                await send({"type": "websocket.http.response.start", "status": 503, "headers": _HEADERS})
                await send({"type": "websocket.http.response.body",
                            "body": p.encode(p.Refused(REFUSAL, p.STANDBY)).encode()})
            else:
                await send({"type": "websocket.close", "code": 1013})  # try again later


_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"), (b"retry-after", b"2"),
            (b"x-content-type-options", b"nosniff")]


class Active(Protocol):
    """The active aggregator (pectus.actors.aggregator.AggregatorProcess): ``run`` loads its views,
    awaits ``before_serving`` and serves until ``shutdown``."""

    async def run(self, *, shutdown: trio.Event, before_serving: Callable[[], Awaitable[None]]) -> None: ...


def end_process(problem: str) -> None:
    """What the active aggregator does when it lost the lock: it ends at once, as if killed, so
    that nothing of it - a connection, an append about to start - goes on beside a new active.
    The engines' outboxes keep what it had not acknowledged; its supervisor starts it again, and
    it waits as a standby."""
    log.critical("this aggregator lost the store's active lock (%s): it stops at once, so that two aggregators "
                 "never serve one store. Started again (by its supervisor), it waits as a standby", problem)
    os._exit(EXIT_LOCK_LOST)


async def serve(lock: ActiveLock, host: str, port: int, start: Callable[[], Active], shutdown: trio.Event, *,
                lost: Callable[[str], None] = end_process, grace: float = GRACE,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serves ``host:port`` as a standby until this aggregator takes the store's active lock, then
    as the active aggregator (``start()`` makes it, in a worker thread, ``grace`` seconds after the
    lock was taken), until ``shutdown`` is set. From the lock's taking on, ``lost`` is called if
    it is lost (by default the process ends). ``task_status``: the standby's addresses, once bound."""
    app = StandbyApp()
    stop, stopped = trio.Event(), trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(_serve_standby, app, host, port, stop, stopped)
            task_status.started(bound)
            taken = await _unless(shutdown, partial(_take, lock, app, bound))
            if taken:
                began = time.monotonic()
                nursery.start_soon(_keep, lock, lost)
                app.detail = "took the store's active lock: starting as the active aggregator"
                log.warning("this aggregator took the store's active lock: it opens the store in %g s (by then a "
                            "former active aggregator has certainly stopped) and serves as the active one", grace)
                await _unless(shutdown, partial(trio.sleep, grace))
            if taken and not shutdown.is_set():
                process = await trio.to_thread.run_sync(start)
                log.info("the store is open, %.2f s after taking the lock; loading the views", time.monotonic() - began)

                async def make_way() -> None:
                    """The standby's server gives the address to the active one's, once the views are
                    loaded: until then /health says standby and engines are sent on."""
                    stop.set()
                    await stopped.wait()

                await process.run(shutdown=shutdown, before_serving=make_way)
            stop.set()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):  # a held lock goes with its connection, also on the way out
            await trio.to_thread.run_sync(lock.close)


async def _serve_standby(app: StandbyApp, host: str, port: int, stop: trio.Event, stopped: trio.Event, *,
                         task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    from hypercorn.config import Config

    from pectus.web.server import serve as serve_app

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 1.0  # a client's kept-alive connection must not hold the address for long
    try:
        await serve_app(app, config, shutdown_trigger=stop.wait, task_status=task_status)
    finally:
        stopped.set()


async def _take(lock: ActiveLock, app: StandbyApp, bound: list[str]) -> bool:
    """Returns once this aggregator holds the lock (True); asks every :data:`POLL` seconds. A
    database that cannot be reached at the first request raises its ConnectionError (a wrong URL
    or password stops the aggregator at start, saying why); later, it is asked again."""
    problems = RateLimitedLog(log, interval=60.0)
    told = False
    while True:
        try:
            if await trio.to_thread.run_sync(lock.try_take):
                return True
            app.detail = WAITING
            if not told:
                told = True
                log.warning("another aggregator is active on this store: this one waits as a standby on %s "
                            "(GET /health answers 503, status standby) and takes over when that one goes",
                            ", ".join(bound))
        except ConnectionError as error:
            if not told:
                raise
            app.detail = f"{error}; asking again"
            problems(logging.ERROR, f"{error}; the standby asks again every {POLL:g} s")
        await trio.sleep(POLL)


async def _keep(lock: ActiveLock, lost: Callable[[str], None]) -> None:
    """Checks the lock every :data:`CHECK_EVERY` seconds; calls ``lost`` once it is lost."""
    while True:
        await trio.sleep(CHECK_EVERY)
        problem = ""
        with trio.move_on_after(CHECK_TIMEOUT) as waited:
            try:
                # Abandoned if it hangs (a partition): the process ends without waiting for it.
                await trio.to_thread.run_sync(lock.check, abandon_on_cancel=True)
            except LockLost as error:
                problem = str(error)
        if waited.cancelled_caught:
            problem = f"the store's database did not answer the lock's check within {CHECK_TIMEOUT:g} s"
        if problem:
            lost(problem)
            return


async def _unless(event: trio.Event, work: Callable[[], Awaitable[T]]) -> T | None:
    """``work()``'s result, or None once ``event`` is set first (``work`` is cancelled)."""
    result: T | None = None
    async with trio.open_nursery() as nursery:
        async def cancel_on_event() -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_on_event)
        result = await work()
        nursery.cancel_scope.cancel()
    return result
