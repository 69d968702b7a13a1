"""The aggregator process: the actors that keep the record, and the web server in front of them.

    aggregator/engines/<id>   EngineSession per connected engine (pectus.actors.engine_session)
    aggregator/writer         EventWriter: the single writer of the event store, group commit
    aggregator/projector      Projector: follows the log, keeps the views, publishes their changes
    UiHub                     fan-out of live changes to the browsers' WebSocket subscriptions
    aggregator/trend          TrendSampler: a row of each connected unit's trend per data-log interval
    aggregator/push           PushSender: live notifications to subscribed browsers (pectus.actors.push)

At start the projections are loaded from their checkpoint and the store's events after it are
folded in (the whole store is replayed when there is no checkpoint that may be used: see
pectus.projections.checkpoint), in a worker thread; then the web server (Quart on hypercorn, Trio
worker) opens: engines connect to ``/engine``, browsers use the REST API under ``/api`` and the
WebSocket ``/api/ws``.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator

import trio

from pectus import __version__
from pectus.actors.core import ALWAYS, Actor, Restart, supervise
from pectus.actors.engine_session import Engines, EngineSession
from pectus.actors.event_writer import EventWriter
from pectus.actors.trend_sampler import TrendSampler
from pectus.actors.push import (PUSH_EVENTS, VAPID_KEY_FILE, PushSender, PushSettings, Subscriptions,
                                 load_or_create_vapid_keys)
from pectus.actors.ui_hub import UiHub
from pectus.events.domain import Actor as Who, EngineDisconnected, RequestAnswered, UserRequested
from pectus.events.signing import ChainSigner, load_or_create_signer
from pectus.events.store import ChainedStore, Record, open_store
from pectus.notifications import TOPIC as NOTIFICATION, Notification, from_delta
from pectus.projections.checkpoint import (RESIDENT_RUNS, SAVE_EVERY_EVENTS, SAVE_EVERY_SECONDS, Capture,
                                          Checkpoints, CheckpointsUnavailable, open_checkpoints, restore_memory)
from pectus.projections.export import csv_rows, jsonl_lines
from pectus.projections.trend import DEFAULT_WINDOW, Trend
from pectus.projections.views import Projector, iso
from pectus.web.app import Outcome, create_app
from pectus.web.auth import AuthConfig, ConfigError, SignIn

log = logging.getLogger("pectus.aggregator")

STORE_FILE = "open_pectus_aggregator.sqlite3"
ENGINE_PATH = "/engine"  # the engines' WebSocket
SIGNING_KEY_FILE = "chain-signing.key"  # in the data directory, unless the key is given elsewhere
GC_THRESHOLDS = (20_000, 50, 1000)  # the collector's, while serving (see run)


class RunLoads:
    """Brings views of finished runs back into memory for the loop, and lets them go again: each
    loaded in a worker thread (from its checkpoint, or rebuilt from the log), once however many
    tasks want it meanwhile, and none let go while a task holds it."""

    def __init__(self, views: Projector, checkpoints: Checkpoints) -> None:
        self.views = views
        self.checkpoints = checkpoints
        self._loading: dict[str, trio.Event] = {}
        self._held: collections.Counter[str] = collections.Counter()

    @contextlib.asynccontextmanager
    async def held(self, ids: Iterable[object]) -> AsyncIterator[None]:
        """The views of the runs among ``ids`` (anything: unit ids, None...) in memory for the
        block (loaded first where need be); after it, the least recently used may go."""
        runs = [run_id for run_id in ids if isinstance(run_id, str)]
        self._held.update(runs)
        try:
            for run_id in runs:
                while self.views.absent([run_id]):
                    await self._load(run_id)
            yield
        finally:
            self._held -= collections.Counter(runs)
            self.trim()

    async def _load(self, run_id: str) -> None:
        loading = self._loading.get(run_id)
        if loading is not None:
            await loading.wait()
            return
        loading = self._loading[run_id] = trio.Event()
        try:
            view = await trio.to_thread.run_sync(self.checkpoints.load_run, run_id, self.views.position)
        finally:
            del self._loading[run_id]
            loading.set()
        self.views.admit(run_id, view)

    def trim(self) -> None:
        """Lets the least recently used views of finished runs go, but those held."""
        self.views.trim(keep=self._held)


def _loaded(query: str) -> Callable[..., Awaitable[Any]]:
    async def answer(self: Views, run_id: str) -> Any:
        async with self.loads.held([run_id]):
            return getattr(self.projector, query)(run_id)

    answer.__name__ = query
    return answer


class Views:
    """The projector as the web API asks it: the queries that read a finished run's views load
    them first (awaitable); every other query is the projector's own."""

    def __init__(self, projector: Projector, loads: RunLoads) -> None:
        self.projector = projector
        self.loads = loads

    def __getattr__(self, name: str) -> Any:
        return getattr(self.projector, name)

    plot_configuration = _loaded("plot_configuration")
    plot_series = _loaded("plot_series")
    run_method = _loaded("run_method")
    run_log_of = _loaded("run_log_of")
    run_error_log = _loaded("run_error_log")
    audit_trail = _loaded("audit_trail")


class ProjectorActor(Actor[list[Record]]):
    """Applies committed records to the views in order and publishes what changed.

    ``listeners`` are called with each live :class:`~pectus.notifications.Notification`, in store
    order, after its delta is published (Web Push registers its sender here). A listener must not
    block (it runs in this loop); one that raises is logged and the others still hear it.

    With ``checkpoints``, the views of finished runs a batch needs are brought back first
    (``loads``), and the views are saved every ``every_events`` events or ``every_seconds``: encoded
    and written in a worker thread while this actor folds nothing, so the views the loop reads
    meanwhile are those being saved."""

    def __init__(self, views: Projector, hub: UiHub, checkpoints: Checkpoints | None = None,
                 loads: RunLoads | None = None) -> None:
        super().__init__("aggregator/projector", capacity=4096)
        self.views = views
        self.hub = hub
        self.checkpoints = checkpoints
        self.loads = loads
        self.listeners: list[Callable[[Notification], None]] = []
        self.every_events, self.every_seconds = SAVE_EVERY_EVENTS, SAVE_EVERY_SECONDS
        self._saved_at = time.monotonic()
        self._retry_at = 0.0  # after a failed save: not before this

    async def run(self) -> None:
        async for records in self.inbox:
            if self.loads is None:
                self._apply(records)
                continue
            async with self.loads.held(self.views.wanted(records)):
                self._apply(records)
            if self._due():
                await self.checkpoint()

    def _apply(self, records: list[Record]) -> None:
        for record in records:
            deltas = self.views.apply(record)
            if self.checkpoints is not None:
                self.checkpoints.memory.fold(record)
            self.hub.publish(deltas)
            if self.listeners:
                self._tell([from_delta(delta.data) for delta in deltas if delta.topic == NOTIFICATION])

    def _due(self) -> bool:
        assert self.checkpoints is not None
        pending = self.views.position - self.checkpoints.saved_position
        now = time.monotonic()
        return pending > 0 and now >= self._retry_at and (
            pending >= self.every_events or now - self._saved_at >= self.every_seconds)

    async def checkpoint(self) -> None:
        """Saves the views as they are, unless they are saved already. Only this actor's task (or,
        once it stopped, its owner) calls it: the views must not change while it runs."""
        checkpoints = self.checkpoints
        if checkpoints is None or checkpoints.saved_position == self.views.position:
            return
        try:
            capture = await trio.to_thread.run_sync(self._write, checkpoints)
        except Exception:  # the log keeps everything; the next start folds more of it
            log.exception("the views could not be checkpointed at event %d; trying again in %.0f s",
                          self.views.position, self.every_seconds)
            self._retry_at = time.monotonic() + self.every_seconds
            return
        checkpoints.saved(capture)
        if self.loads is not None:
            self.loads.trim()
        self._saved_at = time.monotonic()

    @staticmethod
    def _write(checkpoints: Checkpoints) -> Capture:
        capture = checkpoints.capture()
        checkpoints.write(capture)
        return capture

    def _tell(self, notifications: list[Notification]) -> None:
        for notification in notifications:
            for listener in self.listeners:
                try:
                    listener(notification)
                except Exception:  # noqa: BLE001 - one listener's fault must not stop the record's views
                    log.exception("a notification listener failed on %s", notification)


class EngineSockets:
    """The ASGI application served: engine WebSockets on ``/engine`` go straight to an
    :class:`EngineSession`, everything else to the web app.

    Why not a route of the web app: an engine sends a dozen frames a second, and Quart hands
    each frame on through a task of its own, a signal and a queue before the handler sees it.
    The session reads the server's events directly instead: one task switch per frame, not three.
    The engine's hello and every other frame still go through the same session and checks."""

    def __init__(self, app: Any, engines: Engines) -> None:
        self.app = app
        self.engines = engines

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or scope["path"] != ENGINE_PATH:
            await self.app(scope, receive, send)
            return
        if (await receive())["type"] != "websocket.connect":
            return

        async def frame() -> str | bytes:
            event = await receive()
            if event["type"] == "websocket.receive":
                text = event.get("text")
                return text if text is not None else event.get("bytes") or b""
            raise ConnectionError("the engine closed the connection")  # websocket.disconnect

        async def send_text(text: str) -> None:
            await send({"type": "websocket.send", "text": text})

        await send({"type": "websocket.accept"})
        client = scope.get("client")
        session = EngineSession(self.engines, send_text, frame, address=client[0] if client else "")
        try:
            await session.serve(time.time)
        except ConnectionError:
            return  # gone during the handshake: nothing was admitted, nothing to record
        await send({"type": "websocket.close", "code": 1000})


class Backend:
    """What the web API uses (pectus.web.app.Backend): views, live values, requests, exports."""

    def __init__(self, store: ChainedStore, views: Projector, engines: Engines, hub: UiHub,
                 push: PushSender, checkpoints: Checkpoints | None = None, loads: RunLoads | None = None) -> None:
        self.store = store
        self.projector = views
        self.views = Views(views, loads) if loads is not None else views  # what the web API asks
        self.checkpoints = checkpoints
        self.loads = loads
        self.engines = engines
        self.hub = hub
        self.push = push  # Web Push: subscriptions and sending (pectus.web.push)
        self.version = __version__

    def live_values(self, unit_id: str) -> list[dict] | None:
        memory = self.engines.units.get(unit_id)
        if memory is None:
            return None
        # Times as the projections give them (ISO UTC), so the freshest value can be picked.
        return [{**value, "time": iso(value.get("time"))} for value in memory.live.values()]

    def trend(self, unit_id: str) -> dict[str, list[list]] | None:
        return self.engines.trend.series(unit_id)

    async def request(self, unit_id: str, request: str, detail: dict, user: Who) -> Outcome:
        """Audit before action: the request is stored before the unit is asked, and its answer after.
        A request that cannot be stored (the store fails) never reaches the unit."""
        session = self.engines.sessions.get(unit_id)
        if session is None:
            if self.views.unit(unit_id) is None:
                raise KeyError(unit_id)
            return Outcome(False, f"unit '{unit_id}' is offline")
        if request == "process_value":
            old = self.engines.memory(unit_id).live.get(str(detail.get("tag")), {}).get("value")
            detail = {**detail, "old": old}
        memory = self.engines.memory(unit_id)
        run = memory.live.get("Run Id", {}).get("value") or memory.run  # the freshest the aggregator knows
        request_id = uuid.uuid4().hex
        await self.engines.writer.append([UserRequested(time=time.time(), unit=unit_id, run=run, actor=user,
                                                        request=request, detail=detail, request_id=request_id)])
        reply = await session.request(request, detail, user)
        await self.engines.writer.append([RequestAnswered(time=time.time(), unit=unit_id, run=reply.run, actor=user,
                                                          request_id=request_id, request=request,
                                                          accepted=reply.accepted, reason=reply.reason)])
        data = {"version": int(detail["version"]) + 1} if request == "save_method" and reply.accepted else None
        return Outcome(reply.accepted, reply.reason, reply.conflict, data)

    def subscribe(self):
        return self.hub.subscribe()

    async def csv(self, run_id: str) -> Iterator[str] | None:
        if self.projector.run(run_id) is None:
            return None
        if self.loads is None:
            return csv_rows(self.store.iter(), run_id, self.projector)
        async with self.loads.held([run_id]):  # its columns are in its views
            return csv_rows(self.store.iter(), run_id, self.projector)

    def events(self, run_id: str) -> Iterator[str] | None:
        if self.views.run(run_id) is None:
            return None
        return jsonl_lines(self.store.iter(), run_id)

    def health(self) -> dict[str, Any]:
        # Public (the health check cannot sign in): counts only, no unit names. Not ok (503, with
        # the problem) while appends fail - the disk is full, the file read-only - or when the
        # start-up check found the chain's tail broken (tampered). The events counted are those the
        # store knows of without asking the database: a PostgreSQL server away must not hold the loop.
        report: dict[str, Any] = {"status": "ok", "version": __version__, "events": self.store.tip,
                                  "engines": len(self.engines.sessions)}
        if self.engines.writer.failure:
            report.update(status="failing", problem=self.engines.writer.failure)
        elif self.store.broken:
            report.update(status="broken", problem=self.store.broken)
        if self.checkpoints is not None and self.checkpoints.problem:  # rebuilt from the log: told, not failing
            report["checkpoint"] = self.checkpoints.problem
        return report


# Why a unit connected to the aggregator before this one is recorded as disconnected at the start.
LOST_WITH_LAST_AGGREGATOR = "its connection ended with the aggregator before this one, which could not record it"


class AggregatorProcess:
    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int = 8300, accept_new_engines: bool = False,
                 hostname: str | None = None, auth: AuthConfig = AuthConfig(),
                 signer: ChainSigner | None = None, store: Path | str | None = None,
                 trend_window: float = DEFAULT_WINDOW,
                 push: PushSettings | None = None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, port
        # The store: a PostgreSQL URL given, else the data directory's SQLite file. Every batch is
        # signed: with the key given, else the data directory's (created on first start).
        self.store = open_store(store or data_dir / STORE_FILE,
                                signer or load_or_create_signer(data_dir / SIGNING_KEY_FILE))
        self.hub = UiHub()
        self.views = Projector(aggregator_name=hostname or socket.gethostname(), aggregator_version=__version__)
        self.checkpoints = self._checkpoints()
        self.loads = RunLoads(self.views, self.checkpoints) if self.checkpoints is not None else None
        self.projector = ProjectorActor(self.views, self.hub, self.checkpoints, self.loads)
        self.writer = EventWriter(self.store, self._committed)
        sign_in = SignIn(auth)
        self.engines = Engines(self.writer, self.hub, sign_in=sign_in, accept_new=accept_new_engines,
                               trend=Trend(trend_window))
        self.trend_sampler = TrendSampler(self.engines)
        self.push = self._push_sender(data_dir, push or PushSettings.from_environment(os.environ))
        self.projector.listeners.append(self.push.notify)
        self.backend = Backend(self.store, self.views, self.engines, self.hub, self.push, self.checkpoints, self.loads)
        self.app = create_app(self.backend, sign_in)
        self.asgi = EngineSockets(self.app, self.engines)  # what the server serves: engines, then the app
        self.bound: list[str] = []

    def _checkpoints(self) -> Checkpoints | None:
        """The views' checkpoints, in the store's database; None when it refuses (said why)."""
        try:
            store = open_checkpoints(self.store)
        except CheckpointsUnavailable as error:
            log.warning("%s. The views are not checkpointed: every start replays the whole log", error)
            return None
        self.views.resident_runs = RESIDENT_RUNS
        return Checkpoints(self.store, store, self.views)

    def _push_sender(self, data_dir: Path, settings: PushSettings) -> PushSender:
        """Web Push, with the data directory's VAPID keys (created on first start); ConfigError
        for a key file that is not a key, or a contact push services refuse."""
        try:
            keys = load_or_create_vapid_keys(data_dir / VAPID_KEY_FILE)
        except (ValueError, OSError) as error:
            raise ConfigError(f"cannot use the Web Push key: {error}") from None
        keys.check_contact(settings.contact)

        def unit_roles(unit_id: str) -> list[str] | None:
            unit = self.views.unit(unit_id)
            return unit["required_roles"] if unit is not None else None

        return PushSender(keys, settings, Subscriptions(), self.writer.append, unit_roles)

    async def _committed(self, records: list[Record]) -> None:
        """What the writer committed: the engines' memory (or the push subscriptions) first (a
        session's next check must see it), then the views, in the projector's own time."""
        for record in records:
            self._remember(record.type, record.data)
        await self.projector.send(records)

    def _remember(self, type_name: str, data: dict[str, Any]) -> None:
        if type_name in PUSH_EVENTS:
            self.push.subscriptions.remember(type_name, data)
        else:
            self.engines.remember(type_name, data)

    def _remember_record(self, record: Record) -> None:
        self._remember(record.type, record.data)

    def start_views(self) -> str:
        """The views and the engines' memory at start (blocking): from the checkpoint and the
        store's events after it, else from the whole store; what it took, in words."""
        checkpoints = self.checkpoints
        if checkpoints is None:
            count = self.views.replay(self._remembered(self.store.iter()))
            return f"views rebuilt from the whole log ({count} events)"
        resumed = checkpoints.load()
        if resumed is None:
            return f"views rebuilt from the whole log ({checkpoints.fold(self._remember_record)} events)"
        restore_memory(self.engines, self._remember, resumed, checkpoints.memory)
        count = checkpoints.fold(self._remember_record)
        return f"views from the checkpoint at event {resumed.views.position} and the {count} events after it"

    def _remembered(self, records: Iterator[Record]) -> Iterator[Record]:
        for record in records:
            self._remember_record(record)
            yield record

    async def record_lost_connections(self) -> None:
        """Before any engine can connect: a unit the record shows connected lost its connection
        with the aggregator before this one (killed, crashed, or the active one of a standby pair),
        which could not record it. Recorded now, so the unit reads offline until its engine is back."""
        connected = [summary["id"] for summary in self.views.units() if summary["state"] == "online"]
        if connected:
            await self.writer.append([EngineDisconnected(time=time.time(), unit=unit, reason=LOST_WITH_LAST_AGGREGATOR)
                                      for unit in connected])

    async def run(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
                  shutdown: trio.Event | None = None,
                  before_serving: Callable[[], Awaitable[None]] | None = None) -> None:
        """Loads the views, then serves until ``shutdown``. ``before_serving`` is awaited once the
        views are loaded, just before the server binds its address (a standby's server makes way
        for it there: pectus.actors.standby)."""
        from hypercorn.config import Config
        from pectus.web.server import serve

        # Before serving, a tampered tail is looked for (the newest links, the newest signature): a
        # broken one does not stop the aggregator - the record must stay readable - but /health
        # reports it, and the store stops signing so as never to vouch for what it could not check.
        problem = await trio.to_thread.run_sync(self.store.check_tail)
        if problem:
            log.error("the event store's chain is broken: %s. Serving it so that the record stays readable; "
                      "/health answers 503 and new events are recorded unsigned until the store is checked "
                      "(see docs/operations.md, A broken chain)", problem)
        began = time.perf_counter()
        started = await trio.to_thread.run_sync(self.start_views)
        log.info("%s, in %.2f s", started, time.perf_counter() - began)
        self.views.notifying = True  # from now on what is appended is news
        # The views rebuilt at start live as long as the process: out of the collector's sight,
        # its full passes no longer rescan them (a pause that would grow with the store).
        gc.freeze()
        # Ingest allocates a few dicts per frame and keeps few (almost no cycles): with the default
        # thresholds the collector ran every 700 allocations and its older passes held the loop for
        # 10-140 ms, which readers of the API waited out. Collecting rarely costs some memory.
        gc.set_threshold(*GC_THRESHOLDS)
        if before_serving is not None:
            await before_serving()
        config = Config()
        config.bind = [f"{self.host}:{self.port}"]
        config.accesslog = None
        config.websocket_ping_interval = 20
        shutdown = shutdown if shutdown is not None else trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(supervise, [(self.writer, Restart(limit=3)), (self.projector, Restart(limit=3)),
                                               (self.push, ALWAYS)])  # push is a courtesy: never the process's end
                nursery.start_soon(supervise, [(self.trend_sampler, Restart(limit=3))])
                await self.record_lost_connections()
                self.bound = await nursery.start(lambda task_status: serve(
                    self.asgi, config, shutdown_trigger=shutdown.wait, task_status=task_status))
                log.info("serving on %s", ", ".join(self.bound))
                task_status.started(self.bound)
                await shutdown.wait()
                await self.hub.close()  # the browsers are told the aggregator is going away (1001) before it goes
                nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):  # a clean stop: the next start folds nothing
                await self.projector.checkpoint()
        finally:
            if self.checkpoints is not None:
                self.checkpoints.store.close()
            self.store.close()
