"""The attack suite's tools: real aggregator and engine processes, and an attacker's raw clients.

Everything here is black-box. The programs run as child processes started with their command
lines (``python -m pectus.cli.aggregator``, ``python -m pectus.cli.engine``), each with its
stderr kept in a file the test can read. The attacker speaks the engine protocol in JSON written
here by hand - not through the project's codec - so it can send what an honest engine never
would. The store is read with plain sqlite3, read-only, never through the project's store code.

(This module is not ``tests/attack/conftest.py`` on purpose: a second ``conftest`` module would
replace ``tests/conftest.py`` in ``sys.modules`` and break the tests that import from it.)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from conftest import DEMO_UOD, wait_for
from pectus.hardware.opcua_server import free_port
from pectus.web.app import ROUTES

PYTHON = sys.executable
PROTOCOL = 2
STORE_FILE = "open_pectus_aggregator.sqlite3"
T0 = 1_800_000_000.0  # a plausible time for hand-made records (2027)

# Processes start and restart during these tests: a refused connection is "not yet", not a failure.
patiently = functools.partial(wait_for, timeout=30, step=0.1, ignore=(httpx.HTTPError, OSError))


class Process:
    """One of our programs as a child process. Its stderr (the log) goes to ``log_file``,
    appended across restarts, so a test can read every line it wrote."""

    def __init__(self, args: list[str], log_file: Path, *, env: dict[str, str] | None = None,
                 preexec: Callable[[], None] | None = None) -> None:
        self.args = args
        self.log_file = log_file
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.preexec = preexec
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, "already running"
        with self.log_file.open("a") as log:
            self.popen = subprocess.Popen(self.args, env=self.env, cwd=self.log_file.parent, stdout=subprocess.DEVNULL,
                                          stderr=log, preexec_fn=self.preexec)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process dies mid-step, as in a power cut."""
        if self.running:
            self.popen.send_signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait()

    def stop(self) -> None:
        """SIGTERM, as ops stop it; SIGKILL if it does not stop within 10 s."""
        if not self.running:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


class Aggregator(Process):
    """``pectus-aggregator`` on a free loopback port, its store in ``data``. By default it enrols
    engines on first use (``--accept-new-engines``): each test's engines are new to it."""

    def __init__(self, data: Path, log_file: Path, *, accept_new: bool = True, **kwargs: Any) -> None:
        self.data = data
        self.port = free_port()
        args = [PYTHON, "-m", "pectus.cli.aggregator", "--data-dir", str(data), "--port", str(self.port)]
        super().__init__(args + (["--accept-new-engines"] if accept_new else []), log_file, **kwargs)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self) -> Path:
        return self.data / STORE_FILE

    def api(self, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    async def serving(self) -> None:
        """Wait until it answers HTTP (/health with any status: a broken store still serves)."""
        async with self.api() as api:
            async def answers() -> bool:
                assert self.running, f"the aggregator exited:\n{self.log()[-3000:]}"
                return (await api.get("/health")).status_code in (200, 503)
            await patiently(answers)

    async def restart(self) -> None:
        """SIGKILL, then start again on the same store and port."""
        self.kill()
        self.start()
        await self.serving()

    def events(self) -> list[dict[str, Any]]:
        """Every stored event (position, type, time, data, ...), read with plain sqlite3."""
        return stored_events(self.store)


class Engine(Process):
    """``pectus-engine`` for ``uod`` against ``aggregator``, its outbox (and key, beside it) at ``outbox``."""

    def __init__(self, aggregator: Aggregator, outbox: Path, log_file: Path, *, uod: Path = DEMO_UOD,
                 instrument: str = "DemoUod") -> None:
        self.outbox = outbox
        self.unit = f"{socket.gethostname()}_{instrument}"
        outbox.parent.mkdir(parents=True, exist_ok=True)
        super().__init__([PYTHON, "-m", "pectus.cli.engine", "-uod", str(uod), "-ahn", "127.0.0.1",
                          "-ap", str(aggregator.port), "--outbox", str(outbox)], log_file)

    @property
    def key_file(self) -> Path:
        return self.outbox.with_name(f"{self.unit}.key")

    def outbox_state(self) -> OutboxState:
        with _read_only(self.outbox) as db:
            (outbox_id,) = db.execute("SELECT id FROM identity").fetchone()
            newest = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            pending, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(record)), 0) FROM outbox").fetchone()
        return OutboxState(outbox_id, newest[0] if newest else 0, pending, size)


class OutboxState(NamedTuple):
    """An engine's outbox as its file holds it: its id, the newest seq it handed out, and the
    records not yet acknowledged (how many, and their bytes)."""

    id: str
    newest: int
    pending: int
    pending_bytes: int


class Fleet:
    """The processes of one test; every one is stopped when the ``with`` block ends, pass or fail."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[Process] = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            process.stop()

    def aggregator(self, name: str = "aggregator", **kwargs: Any) -> Aggregator:
        aggregator = Aggregator(self.directory / f"{name}-data", self.directory / f"{name}.log", **kwargs)
        return self._started(aggregator)

    def engine(self, aggregator: Aggregator, name: str = "engine", *, outbox: Path | None = None,
               **kwargs: Any) -> Engine:
        outbox = outbox or self.directory / name / "outbox.sqlite3"
        return self._started(Engine(aggregator, outbox, self.directory / f"{name}.log", **kwargs))

    @asynccontextmanager
    async def a_unit_online(self, *args: Any, **kwargs: Any) -> AsyncIterator[tuple[Aggregator, Engine,
                                                                                   httpx.AsyncClient]]:
        """An aggregator and one engine (``engine``'s arguments), serving, the engine online:
        (aggregator, engine, a client of the aggregator's API)."""
        aggregator = self.aggregator()
        engine = self.engine(aggregator, *args, **kwargs)
        await aggregator.serving()
        async with aggregator.api() as api:
            await patiently(lambda: online(api, engine.unit))
            yield aggregator, engine, api

    def _started(self, process: Process) -> Any:
        process.start()
        self.processes.append(process)
        return process


# -- the store and the outbox, read-only ----------------------------------------------------------

def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def stored_events(store: Path) -> list[dict[str, Any]]:
    db = _read_only(store)
    try:
        return [json.loads(state) for (state,) in db.execute("SELECT state FROM pectus_events ORDER BY rowid")]
    finally:
        db.close()


def of_unit(events: list[dict[str, Any]], unit: str, type_name: str | None = None) -> list[dict[str, Any]]:
    """The events of ``unit`` (of one type, if given), in order."""
    return [e for e in events if e["data"].get("unit") == unit and type_name in (None, e["type"])]


# -- the attacker's engine: the protocol by hand -------------------------------------------------

def new_outbox_id() -> str:
    return uuid.uuid4().hex


def hello(engine_id: str, credential: str, outbox: str | None, **fields: Any) -> dict[str, Any]:
    """A version 2 hello as an honest engine sends it; ``fields`` override or add anything."""
    computer, _, uod = engine_id.partition("_")
    return {"type": "hello", "protocol": PROTOCOL, "engine_id": engine_id, "computer_name": computer,
            "uod_name": uod or "Unit", "engine_version": "0.1.0", "credential": credential, "outbox": outbox,
            "outbox_seq": 0, "run": None, **fields}


def record(kind: str, data: Any, *, run: str | None = None, time: float = T0, **fields: Any) -> dict[str, Any]:
    """A record without its seq (:meth:`Session.send_records` numbers it); ``fields`` add or override."""
    return {"kind": kind, "time": time, "run": run, "data": data, **fields}


def uod_data(tags: list[tuple[str, str | None]] = (("FT01", "L/h"),), roles: Any = (), **fields: Any) -> dict:
    """Valid ``uod`` record data for a unit with ``tags`` (name, unit) and ``roles`` required."""
    return {"uod_name": "Unit", "uod_author_name": "A", "uod_author_email": "a@example.com",
            "uod_filename": "unit.py", "location": "lab", "hardware": "none",
            "tags": [{"name": name, "unit": unit, "direction": "Input"} for name, unit in tags],
            "readings": [], "commands": [], "plot_configuration": {}, "data_log_interval_seconds": 1.0,
            "required_roles": list(roles), **fields}


def samples_data(values: dict[str, Any], time: float = T0) -> dict:
    return {"samples": [{"time": time, "values": values}]}


def runlog_data(item_id: int, name: str, time: float = T0) -> dict:
    return {"items": [{"id": item_id, "line": None, "name": name, "state": "completed", "progress": None,
                       "time": time, "start": time, "end": time, "start_values": None, "end_values": None,
                       "cancellable": False, "forcible": False, "cancelled": False, "forced": False}]}


def state_data(system_state: str = "Stopped") -> dict:
    return {"system_state": system_state, "method_status": "OK"}


class RawEngine:
    """An attacker's engine: the identity it claims, the key it presents and the outbox it sends
    from. It numbers its records on from the ``last_seq`` each welcome gives it, and names the
    run it started last (until it stops it) in each hello, as an engine does: a hello without the
    unit's open run tells the aggregator that the engine lost it."""

    def __init__(self, port: int, engine_id: str = "rogue_Unit", credential: str = "rogue-key",
                 outbox: str | None = None) -> None:
        self.port = port
        self.engine_id = engine_id
        self.credential = credential
        self.outbox = outbox or new_outbox_id()
        self.seq = 0
        self.run: str | None = None

    @asynccontextmanager
    async def session(self, **fields: Any) -> AsyncIterator[Session]:
        """Say hello (``fields`` change it); the session holds the first answer in ``answer``.

        An error while closing, once the body is done, is ignored: an attacker does not care for a
        clean close, and one that races the aggregator's own close can fail."""
        done = False
        try:
            async with open_websocket_url(f"ws://127.0.0.1:{self.port}/engine", disconnect_timeout=1,
                                          max_message_size=16 * 1024 * 1024) as ws:
                frame = {**hello(self.engine_id, self.credential, self.outbox, outbox_seq=self.seq, run=self.run),
                         **fields}
                with contextlib.suppress(ConnectionClosed):  # a throttled address is refused before its hello
                    await ws.send_message(json.dumps(frame))
                session = Session(self, ws)
                session.answer = await session.receive()
                if session.answer and session.answer["type"] == "welcome":
                    self.seq = session.answer["last_seq"]
                yield session
                done = True
        # trio-websocket lets a close that failed inside it escape as Cancelled; trio cancellation
        # is level-triggered, so a real one is raised again at the next checkpoint.
        except (Exception, trio.Cancelled):
            if not done:
                raise

    async def send(self, records: list[dict[str, Any]], **hello_fields: Any) -> dict[str, Any] | None:
        """One session: hello, ``records`` in one frame, the answer to it (None when closed)."""
        async with self.session(**hello_fields) as session:
            assert session.answer and session.answer["type"] == "welcome", session.answer
            return await session.send_records(records)


class Session:
    def __init__(self, engine: RawEngine, ws: WebSocketConnection) -> None:
        self.engine = engine
        self.ws = ws
        self.answer: dict[str, Any] | None = None

    async def receive(self, timeout: float = 10) -> dict[str, Any] | None:
        """The next message from the aggregator; None when it closed the connection."""
        with trio.fail_after(timeout):
            try:
                return json.loads(await self.ws.get_message())
            except ConnectionClosed:
                return None

    async def send_text(self, frame: str) -> dict[str, Any] | None:
        """Send one frame as given; the aggregator's answer (None when it closed the connection)."""
        try:
            await self.ws.send_message(frame)
        except ConnectionClosed:
            return None
        return await self.receive()

    async def send_records(self, records: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Number ``records`` on from the last seq, send them in one frame; the ack (or None)."""
        numbered = [{"seq": self.engine.seq + n, **r} for n, r in enumerate(records, 1)]
        answer = await self.send_text(json.dumps({"type": "records", "records": numbered}))
        if answer is not None and answer["type"] == "ack":
            self.engine.seq = answer["seq"]
            refused = {refusal["seq"] for refusal in answer["refused"]}
            for sent in numbered:
                if sent["seq"] not in refused and sent.get("kind") in ("run_started", "run_stopped"):
                    self.engine.run = sent["run"] if sent["kind"] == "run_started" else None
        return answer


# -- the HTTP API ---------------------------------------------------------------------------------

def get_paths(unit: str, run: str) -> list[str]:
    """Every GET route of the API and the UI, for this unit and run (from the route table)."""
    values = {"unit": quote(unit, safe=""), "run": quote(run, safe=""), "tag": "FT01", "item": "1",
              "path:file": "app.js"}
    paths = []
    for route in ROUTES:
        if route.method == "GET":
            path = route.path
            for name, value in values.items():
                path = path.replace(f"<{name}>", value)
            paths.append(path)
    return paths


async def failing_gets(api: httpx.AsyncClient, unit: str, run: str) -> dict[str, str]:
    """The GET routes that fail for this unit and run: a 5xx, or an answer cut off mid-stream
    (a CSV export that raised half-way). Empty when every route answers."""
    failures = {}
    for path in get_paths(unit, run):
        try:
            async with api.stream("GET", path) as response:
                await response.aread()
            if response.status_code >= 500 and path != "/health":
                failures[path] = f"{response.status_code}: {response.text[:300]}"
        except httpx.HTTPError as error:
            failures[path] = f"{type(error).__name__}: {error}"
    return failures


async def unit_of(api: httpx.AsyncClient, unit: str) -> dict[str, Any] | None:
    units = (await api.get("/api/process_units")).json()
    return next((u for u in units if u["id"] == unit), None)


async def online(api: httpx.AsyncClient, unit: str) -> bool:
    found = await unit_of(api, unit)
    return found is not None and found["state"] == "online"


async def at_least(query: Awaitable[list[Any]], count: int) -> list[Any] | None:
    """What ``query`` found when it found at least ``count`` things, else None: for ``patiently``."""
    found = await query
    return found if len(found) >= count else None


async def completed(api: httpx.AsyncClient, run: str) -> bool:
    """Whether the run has ended (its engine stopped it, or it was closed as interrupted)."""
    return (await api.get(f"/api/runs/{quote(run, safe='')}")).json()["completed_date"] is not None


async def run_ids(api: httpx.AsyncClient, unit: str) -> list[str]:
    """The unit's runs, newest first."""
    return [r["run_id"] for r in (await api.get("/api/runs")).json() if r["engine_id"] == unit]


def live_messages(frame: str) -> list[dict[str, Any]]:
    """The messages of one live-socket frame: a reply is an object, deltas come as an array."""
    message = json.loads(frame)
    return message if isinstance(message, list) else [message]


def method_lines(text: str) -> list[dict[str, str]]:
    return [{"id": str(n), "text": line} for n, line in enumerate(text.splitlines(), 1)]
