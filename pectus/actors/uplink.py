"""Uplink: the engine's durable, ordered connection to the aggregator.

Every tick the scan cycle hands its events to :meth:`Uplink.sink`. A :class:`RecordBuilder` turns
them into *records* - run started/stopped, states, tag samples once per data-log interval, run-log
and line changes, methods, errors - and *live values* (the latest tag values, for the browsers).
Records go into the :class:`Outbox`, a SQLite file next to the engine, and get a sequence number.
They are sent in order, in frames under the aggregator's size limit, and deleted only when the
aggregator acknowledges them as handled.

Invariants:

* nothing is lost: a record is in the outbox before it is sent, and stays there until acknowledged;
  after a network cut, an aggregator restart or an engine restart, sending resumes after the
  aggregator's ``last_seq`` *for this outbox* (an outbox has an id made with its file, so a new
  outbox never trims against an old one's numbers); sequence numbers are never reused (AUTOINCREMENT);
* a record that cannot be stored never blocks the others: one that fails its schema
  (:mod:`pectus.events.records`) is not put in the outbox, and one the aggregator refuses is
  acknowledged as refused; both go to the dead-letter file (JSON Lines beside the outbox) and
  are reported as an error;
* nothing is doubled for the record: the aggregator drops records it already stored;
* order is kept: records are sent in sequence order, one connection at a time;
* the scan cycle never waits for the disk or the network: the sink only queues.

An engine may be given several aggregator addresses (an active aggregator and its standbys on
one PostgreSQL store): it tries them in turn on each reconnect (:class:`Addresses`), and a
standby's refusal sends it on to the next address at once. Whichever aggregator welcomes it says
what it has stored from this outbox, so a takeover loses and doubles nothing either.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import msgspec

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

from pectus import __version__
from pectus.actors.core import Actor, RateLimitedLog, ask, first_failure
from pectus.actors.scan_cycle import Cancel, Control, Force, Inject, SaveMethod, ScanCycle
from pectus.credentials import CredentialError, EngineCredential, EngineKey
from pectus.events import protocol as p
from pectus.events.records import MAX_RECORD, RecordError, check_record
from pectus.pcode import events as ev
from pectus.pcode.engine import Engine, Outcome
from pectus.pcode.tags import display_format

log = logging.getLogger("pectus.engine.uplink")

FRAME_MARGIN = 64 * 1024  # room in a frame for its envelope
FLUSH_INTERVAL = 0.5  # seconds of ticks written to the outbox in one transaction
# Live values go out at most this often (s), the newest of each tag: what browsers are sent anyway
# (the aggregator's fan-out rounds), at a fraction of the frames a frame per tick cost it. Except
# the values of the tick after a user's request was applied: a person waits for them.
LIVE_INTERVAL = 0.25
# A credential that cannot be had now (the provider is down, a wrong secret) is retried like a cut.
_CONNECTION_ERRORS = (OSError, ConnectionClosed, HandshakeError, p.ProtocolError, trio.TooSlowError, CredentialError)
RETRY_FIRST, RETRY_MAX = 0.25, 5.0  # seconds before the next try after a failed one: doubling, up to the most
STANDBY_RETRY = 0.5  # ...but no more than this while a standby answers: it may take over any moment


class Addresses:
    """The aggregator addresses an engine tries, in turn, and how long it waits before each try
    (sans-I/O: the uplink asks, and tells what came of each try).

    Invariants: each try goes to the address after the last one tried (a dead aggregator is not
    asked twice in a row while another may answer); a standby's refusal moves on at once, unless
    every address refused so in a row (no active aggregator yet: a pause of
    :data:`STANDBY_RETRY`); a failure waits the back-off, which doubles up to :data:`RETRY_MAX`
    and starts again from :data:`RETRY_FIRST` after a session, or from :data:`STANDBY_RETRY` once
    a standby answered (a takeover is under way); a single address behaves as before."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("no aggregator address")
        self.urls = list(urls)
        self._next = 0
        self._backoff = RETRY_FIRST
        self._standbys = 0  # refusals by standbys in a row

    def __iter__(self) -> Iterator[str]:
        while True:
            url = self.urls[self._next]
            self._next = (self._next + 1) % len(self.urls)
            yield url

    def after_session(self) -> float:
        """A session ended (or a refusal was waited out): the seconds to wait before the next try."""
        self._backoff, self._standbys = RETRY_FIRST, 0
        return RETRY_FIRST

    def after_standby(self) -> float:
        self._standbys += 1
        self._backoff = STANDBY_RETRY
        return STANDBY_RETRY if self._standbys % len(self.urls) == 0 else 0.0

    def after_failure(self) -> float:
        self._standbys = 0
        wait, self._backoff = self._backoff, min(self._backoff * 2, RETRY_MAX)
        return wait


class Outbox:
    """The records not yet acknowledged, in a SQLite file. Blocking: use from a worker thread.

    The file's ``id`` is made when the file is created and never changes: the aggregator counts
    what it stored per outbox id, so a new file (a reinstalled PC, another ``--outbox``) starts
    afresh instead of being told another file's position. Records that cannot be stored go to
    ``dead_letter`` (JSON Lines: seq, reason, record) so a person can see what was lost and why.
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self.path = Path(path)
        self.dead_letter = self.path.with_name(self.path.name + ".dead-letter.jsonl")
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # Every write appends whole pages to the write-ahead log - two of them (the table, and its
        # sequence) for half a second's few hundred bytes: 1 KiB pages instead of SQLite's 4 KiB cut
        # what reaches the disk by half (bench/engine_bench.py). A new file only; it precedes WAL mode.
        self._db.execute("PRAGMA page_size=1024")
        self._db.execute("PRAGMA journal_mode=WAL")
        # Each write (one per FLUSH_INTERVAL, see Uplink) is on the disk when it returns: a power cut
        # loses at most the records of the interval not yet written.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS identity (id TEXT NOT NULL)")
        # An outbox from before ids (or a new file) gets its id once, in one transaction with the check.
        self._db.execute("BEGIN IMMEDIATE")
        row = self._db.execute("SELECT id FROM identity").fetchone()
        if row is None:
            self._db.execute("INSERT INTO identity (id) VALUES (?)", (uuid.uuid4().hex,))
        self._db.execute("COMMIT")
        self.id: str = self._db.execute("SELECT id FROM identity").fetchone()[0]

    def append(self, records: list[dict[str, Any]]) -> int:
        """Store records (their ``seq`` is assigned here); returns the last seq."""
        return self.write(records)

    def write(self, records: list[dict[str, Any]], acknowledged: int = 0,
              refused: Sequence[p.RefusedRecord] = ()) -> int:
        """One transaction: the refused records to the dead-letter file, every record up to
        ``acknowledged`` forgotten, ``records`` stored (their ``seq`` assigned here). Returns the last
        seq given. A record that fails its schema is not stored: it goes to the dead-letter file and
        an error record takes its place."""
        with self._lock:
            self._db.execute("BEGIN")
            for refusal in refused:
                row = self._db.execute("SELECT record FROM outbox WHERE seq = ?", (refusal.seq,)).fetchone()
                if row is not None:
                    self._bury(refusal.seq, f"refused by the aggregator: {refusal.reason}", json.loads(row[0]))
            if acknowledged:
                self._db.execute("DELETE FROM outbox WHERE seq <= ?", (acknowledged,))
            seq = 0
            for record in records:
                text = self._checked(record)
                seq = self._db.execute("INSERT INTO outbox (record) VALUES (?)", (text,)).lastrowid
            self._db.execute("COMMIT")
            return seq

    def _checked(self, record: dict[str, Any]) -> str:
        try:
            text = _encode(record)
            check_record(f'{{"seq":1,{text[1:]}')
            return text
        except (RecordError, TypeError, ValueError, UnicodeEncodeError) as error:
            self._bury(None, str(error), record)
            return _encode({"kind": "error", "time": record.get("time", time.time()), "run": record.get("run"),
                            "data": {"severity": "error", "line": None,
                                     "message": f"a {record.get('kind')} record could not be recorded: {error}; "
                                                f"it is kept in {self.dead_letter.name}"}})

    def _bury(self, seq: int | None, reason: str, record: Any) -> None:
        log.error("record %s (%s) not stored: %s; kept in %s", seq if seq is not None else "(new)",
                  record.get("kind") if isinstance(record, dict) else "?", reason, self.dead_letter)
        with self.dead_letter.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"seq": seq, "reason": reason, "record": record}, default=repr) + "\n")

    def newest(self) -> int:
        """The last seq this outbox has given (0 for none), acknowledged or not."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return row[0] if row else 0

    def pending(self, after: int, max_bytes: int) -> list[tuple[int, str]]:
        """(seq, JSON with its seq) of the records after ``after``, as many as fit in ``max_bytes``
        (always at least one: no record is larger than :data:`MAX_RECORD`)."""
        batch: list[tuple[int, str]] = []
        size = 0
        with self._lock:
            rows = self._db.execute("SELECT seq, record FROM outbox WHERE seq > ? ORDER BY seq", (after,))
            for seq, text in rows:
                text = f'{{"seq":{seq},{text[1:]}'
                size += len(text.encode()) + 1
                if batch and size > max_bytes:
                    break
                batch.append((seq, text))
        return batch

    def ack(self, seq: int, refused: Sequence[p.RefusedRecord] = ()) -> None:
        """Forget every record up to ``seq``; the refused ones are moved to the dead-letter file first."""
        self.write([], seq, refused)

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _encode(record: dict[str, Any]) -> str:
    text = json.dumps(record, separators=(",", ":"), allow_nan=False)
    if len(text) > MAX_RECORD:
        raise ValueError(f"the record is {len(text):,} bytes, over the limit of {MAX_RECORD:,}")
    return text


PROGRESS_STEP = 0.01  # a change of progress smaller than this is not worth a record...
PROGRESS_INTERVAL = 0.25  # ...nor one sooner than this (s) after the item's last record


class RecordBuilder:
    """Engine events -> records and live values (sans-I/O).

    Records carry what changed, so their size per minute stays the same however long a run goes:
    tag samples hold the values changed since the last sample; a run-log item is recorded whole
    (with its tag snapshot at start) when it appears, again (with the snapshot at its end) when its
    state changes, and in between only as a progress step of at least 1 %, at most four a second
    - what the run log on a page can show.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.interval = float(engine.uod.data_log_interval_seconds)
        self._values: dict[str, Any] = {tag.name: tag.get_value() for tag in engine.tags}
        self._changed: set[str] = set()
        self._last_sample: float | None = None
        self._run: str | None = None
        self._items: dict[int, tuple[tuple[Any, ...], float | None, float]] = {}  # id -> (state, progress, sent)

    @property
    def run(self) -> str | None:
        """The run the records belong to now (None between runs)."""
        return self._run

    def present(self, time: float) -> list[dict[str, Any]]:
        """What the engine is at start: its UOD, its method (the aggregator's view of the unit's
        method is always the engine's, also after the engine restarted with another one) and its
        state, so the first change the engine reports has a known old state (Stopped -> Running
        in the run's audit trail, never an unknown one)."""
        state = {"system_state": self.engine.system_state, "method_status": self.engine.method_status}
        return [self.describe(time), self._record("method", time, self._method()), self._record("state", time, state)]

    def _method(self, version: int | None = None) -> dict[str, Any]:
        return {"version": self.engine.method_version if version is None else version,
                "lines": [{"id": line.id, "text": line.text} for line in self.engine.method.lines]}

    def describe(self, time: float) -> dict[str, Any]:
        uod = self.engine.uod
        # Fields that are not set are left out, so an aggregator that predates them takes the record.
        readings = [{"kind": r.kind, "tag_name": r.tag_name, "entry_data_type": r.entry_data_type,
                     "execute_command_name": r.execute_command_name, "command_options": r.command_options,
                     **_present(entry=uod.entry_rules(r))}
                    for r in uod.readings]
        commands = [{"name": name, "help": c.help, "examples": c.examples(),
                     "takes_argument": None if c.argument_names is None else bool(c.argument_names)}
                    for name, c in uod.commands.items()]
        tags = [{"name": t.name, "unit": t.unit, "direction": str(t.direction),
                 **_present(**dict(zip(("format", "decimals"), display_format(t.format_fn))))}
                for t in self.engine.tags]
        # Without a diagram the field is left out, so an aggregator that predates it takes the record.
        diagram = {"process_diagram": uod.process_diagram.svg} if uod.process_diagram is not None else {}
        return {"kind": "uod", "time": time, "run": self._run, "data": {
            "uod_name": uod.instrument, "uod_author_name": uod.author_name, "uod_author_email": uod.author_email,
            "uod_filename": str(uod.filename), "location": uod.location, "hardware": uod.hwl.description,
            "tags": tags, "readings": readings, "commands": commands,
            "plot_configuration": uod.plot_configuration.to_dict(),
            "data_log_interval_seconds": self.interval, "required_roles": sorted(uod.required_roles),
            **diagram}}

    def feed(self, events: list[ev.EngineEvent]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        records: list[dict[str, Any]] = []
        live: list[dict[str, Any]] = []
        runlog: dict[int, dict[str, Any]] = {}
        progress: dict[int, dict[str, Any]] = {}
        lines: dict[str, str] = {}
        time = events[-1].time

        def flush() -> None:
            """The tick's run-log and line changes, as one record each (before a run starts or ends)."""
            if runlog or progress:
                data: dict[str, Any] = {"items": list(runlog.values())} if runlog else {}
                if progress:
                    data["progress"] = list(progress.values())
                records.append(self._record("runlog", time, data))
                runlog.clear()
                progress.clear()
            if lines:
                records.append(self._record("lines", time, {"version": self.engine.method_version,
                                                            "states": dict(lines)}))
                lines.clear()

        for event in events:
            kind = event.kind
            if kind in ("run_started", "run_stopped"):
                flush()
            if kind == "tag":
                self._values[event.name] = event.value
                self._changed.add(event.name)
                live.append({"name": event.name, "value": _scalar(event.value), "unit": event.unit,
                             "time": event.time, "simulated": event.simulated})
            elif kind == "run_started":
                self._run = event.run_id
                self._last_sample = None
                self._items.clear()
                records.append(self._record("run_started", event.time, {}))
            elif kind == "run_stopped":
                records.extend(self._sample(event.time, force=True))
                records.append(self._record("run_stopped", event.time, {}))
                self._run = None
            elif kind == "state":
                records.append(self._record("state", event.time, {"system_state": event.system_state,
                                                                   "method_status": event.method_status}))
            elif kind == "runlog":
                self._item(event, runlog, progress)
            elif kind == "line":
                lines[event.line_id] = event.state
            elif kind == "error":
                records.append(self._record("error", event.time, {"severity": "error", "message": event.message,
                                                                  "line": event.line}))
            elif kind == "log" and event.level in ("warning", "error"):
                records.append(self._record("error", event.time, {"severity": event.level, "message": event.message,
                                                                  "line": event.line}))
            elif kind == "method":
                records.append(self._record("method", event.time, self._method(event.version)))
        flush()
        records.extend(self._sample(time))
        return records, live

    def _item(self, event: ev.RunLogChanged, items: dict[int, dict[str, Any]],
              progress: dict[int, dict[str, Any]]) -> None:
        """One run-log event: the item whole, a progress step, or nothing worth a record."""
        state = (event.state, event.line, event.instruction, event.arguments, event.start, event.end,
                 event.cancellable, event.forcible, event.cancelled, event.forced)
        known = self._items.get(event.id)
        if known is not None and known[0] == state:
            _, sent, at = known
            if (event.progress is None or event.time - at < PROGRESS_INTERVAL
                    or (sent is not None and abs(event.progress - sent) < PROGRESS_STEP)):
                return
            progress[event.id] = {"id": event.id, "progress": event.progress, "time": event.time}
            self._items[event.id] = (state, event.progress, event.time)
            return
        item = {"id": event.id, "line": event.line,
                "name": f"{event.instruction}: {event.arguments}" if event.arguments else event.instruction,
                "state": event.state, "progress": event.progress, "time": event.time, "start": event.start,
                "end": event.end, "cancellable": event.cancellable, "forcible": event.forcible,
                "cancelled": event.cancelled, "forced": event.forced}
        if known is None:
            item["start_values"] = _json_values(event.start_values)
        if event.end_values is not None:
            item["end_values"] = _json_values(event.end_values)
        items[event.id] = {**items.get(event.id, {}), **item}  # an item may start and end in one tick
        progress.pop(event.id, None)
        self._items[event.id] = (state, event.progress, event.time)

    def _record(self, kind: str, time: float, data: dict[str, Any]) -> dict[str, Any]:
        return {"kind": kind, "time": time, "run": self._run, "data": data}

    def _sample(self, time: float, force: bool = False) -> list[dict[str, Any]]:
        """A sample per data-log interval during a run: the values changed since the last one."""
        if self._run is None:
            return []
        first = self._last_sample is None
        if not (first or force or time - self._last_sample >= self.interval - 1e-6):
            return []
        names = self._values if first else self._changed
        values = {name: _scalar(self._values[name]) for name in names if _json_value(self._values[name])}
        self._changed = set()
        self._last_sample = time
        if not values:
            return []
        return [self._record("samples", time, {"samples": [{"time": time, "values": values}]})]


def _json_value(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _present(**fields: Any) -> dict[str, Any]:
    """The fields that are set (not None)."""
    return {name: value for name, value in fields.items() if value is not None}


def _scalar(value: Any) -> Any:
    """A tag value as a record holds it (a UOD tag may hold anything): a number that is not finite
    (a sensor's NaN) is no reading, an object is its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if _json_value(value) else str(value)


def _json_values(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run-log item's tag snapshot as JSON values."""
    if values is None:
        return None
    return {name: _scalar(value) for name, value in values.items()}


class Uplink(Actor[list[dict[str, Any]]]):
    """Connects to ``url`` (ws://host:port/engine, or several such addresses, tried in turn:
    :class:`Addresses`), sends the outbox, answers requests.

    ``credential`` proves the engine's identity in each hello; by default a key kept in
    ``<engine id>.key`` beside the outbox (made on first start)."""

    def __init__(self, scan: ScanCycle, outbox: Path, url: str | Sequence[str], *, engine_id: str,
                 computer_name: str, credential: EngineCredential | None = None, heartbeat: float = 5.0) -> None:
        super().__init__("engine/uplink", capacity=100_000)
        self.scan = scan
        self.engine = scan.engine
        self.builder = RecordBuilder(scan.engine)
        self.outbox_path = outbox
        self.outbox: Outbox | None = None  # open while the actor runs
        self.addresses = Addresses([url] if isinstance(url, str) else url)
        self.url = self.addresses.urls[0]  # the address tried last
        self.engine_id = engine_id
        self.credential = credential or EngineKey.from_file(Path(outbox).with_name(f"{engine_id}.key"))
        self.hello = p.Hello(p.PROTOCOL_VERSION, engine_id, computer_name, scan.engine.uod.instrument, __version__)
        self.heartbeat = heartbeat
        self.connected = False
        self.last_acked = 0
        self._trimmed = 0  # acknowledged records up to here are gone from the outbox
        self._written = 0  # the newest record in the outbox
        self._refused: list[p.RefusedRecord] = []  # acknowledged as refused, not yet dead-lettered
        self._live: dict[str, dict[str, Any]] = {}
        self._new = trio.Event()
        self._soon = trio.Event()  # set: write the outbox now rather than at the end of the interval
        self._hurry = trio.Event()  # set: send the live values now rather than at the end of the interval
        # A user's request was applied: the next records and live values (what it did) go out at once.
        self._prompt_records = self._prompt_live = False
        self._broken = RateLimitedLog(log)
        self._standby = RateLimitedLog(log)
        self.lost = 0

    def sink(self, events: list[ev.EngineEvent]) -> None:
        """Called by the scan cycle each tick: queue, never wait."""
        records, live = self.builder.feed(events)
        for value in live:
            self._live[value["name"]] = value
        if records and not self.offer(records):
            self.lost += len(records)  # 100,000 ticks behind the disk: report it, do not stall the unit
            log.error("uplink queue full: %d records could not be kept", self.lost)
        if records and self._prompt_records:
            self._prompt_records = False
            self._soon.set()
        if live and self._prompt_live:
            self._prompt_live = False
            self._hurry.set()
        if live or records:
            self._new.set()

    async def run(self) -> None:
        self.outbox = await trio.to_thread.run_sync(Outbox, self.outbox_path)
        try:
            # What the engine is now (its UOD, its method) is in the outbox before any hello, so the
            # aggregator learns it in order: after whatever the outbox still held from before.
            self._written = await trio.to_thread.run_sync(self.outbox.append, self.builder.present(self.engine.clock))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._store)
                nursery.start_soon(self._connect_forever)
        finally:
            with trio.CancelScope(shield=True):  # a clean stop keeps what the last ticks recorded
                await self._flush()
                await trio.to_thread.run_sync(self.outbox.close)

    async def _store(self) -> None:
        """Mailbox -> outbox: every FLUSH_INTERVAL, the ticks' records and the acknowledgements
        since the last write become one transaction in a worker thread.

        The durability rule: a power cut or a killed engine loses at most the records of the last
        interval (half a second of the engine's own records, which no one has seen acknowledged);
        never an acknowledged record, which the aggregator has stored. Writing every tick (ten
        transactions a second, each rewriting whole pages of the file and its log) would cost a
        PC's disk tens of times the bytes for that half second.

        A person who asked for something (Pause, a process value, an injection...) waits for what
        it did: the records of the tick that applied a user's request are written at once, not at
        the end of the interval (a write more per request, which people make a few times a minute)."""
        while True:
            with trio.move_on_after(FLUSH_INTERVAL):
                await self._soon.wait()
            self._soon = trio.Event()
            await self._flush()

    async def _flush(self) -> None:
        records: list[dict[str, Any]] = []
        while True:
            try:
                records += self.inbox.receive_nowait()
            except trio.WouldBlock:
                break
        acknowledged, refused = self.last_acked, self._refused
        if not records and acknowledged == self._trimmed and not refused:
            return
        self._refused = []
        newest = await trio.to_thread.run_sync(self.outbox.write, records, acknowledged, refused)
        self._trimmed = acknowledged
        if records:
            self._written = newest
            self._new.set()

    async def _connect_forever(self) -> None:
        for url in self.addresses:
            self.url = url
            try:
                async with open_websocket_url(self.url, max_message_size=p.MAX_FRAME, connect_timeout=5,
                                              disconnect_timeout=1) as ws:
                    await self._session(ws)
                wait = self.addresses.after_session()
            except* _CONNECTION_ERRORS as group:  # the session's tasks report them in a group
                error = first_failure(group)
                standby = (p.standby_refusal(error.status_code, error.body)
                           if isinstance(error, ConnectionRejected) else None)
                if standby is not None:
                    wait = self.addresses.after_standby()
                    self._standby(logging.INFO, f"aggregator {self.url} is a standby, trying the next address: "
                                                f"{standby.reason}")
                else:
                    wait = self.addresses.after_failure()
                    self._broken(logging.WARNING, f"aggregator {self.url}: {str(error) or type(error).__name__}")
            finally:
                self.connected = False
            await trio.sleep(wait)

    async def _session(self, ws) -> None:
        outbox = self.outbox
        newest = await trio.to_thread.run_sync(outbox.newest)
        hello = msgspec.structs.replace(self.hello, credential=await self.credential.present(), outbox=outbox.id,
                                        outbox_seq=newest, run=self.builder.run)
        await ws.send_message(p.encode(hello))
        with trio.fail_after(10):
            answer = p.decode(await ws.get_message(), allowed=p.FROM_AGGREGATOR)
        if isinstance(answer, p.Refused):
            log.error("the aggregator refused this engine (%s): %s", answer.code or "refused", answer.reason)
            await trio.sleep(30)  # a refusal needs a person; do not hammer the aggregator
            return
        if not isinstance(answer, p.Welcome):
            raise p.ProtocolError(f"expected welcome, got {answer.type}")
        if answer.outbox != outbox.id or answer.last_seq > newest:
            # Trimming on a position that is not this outbox's would delete records never stored.
            raise p.ProtocolError(f"the aggregator's welcome (outbox {answer.outbox}, record {answer.last_seq}) does "
                                  f"not fit this outbox ({outbox.id}, newest record {newest}): nothing trimmed")
        self.last_acked = self._trimmed = answer.last_seq
        await trio.to_thread.run_sync(outbox.ack, answer.last_seq)
        self.connected = True
        log.info("connected to the aggregator %s; resuming after record %d", self.url, answer.last_seq)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._transmit, ws, answer.max_frame - FRAME_MARGIN)
            nursery.start_soon(self._receive, ws, nursery.cancel_scope)
            nursery.start_soon(self._beat, ws)

    async def _transmit(self, ws, max_bytes: int) -> None:
        sent = self.last_acked
        live_sent = -math.inf
        while True:
            self._new = trio.Event()
            if self._live:
                # A change after a quiet spell goes at once; what a person's request did, too.
                with trio.move_on_at(live_sent + LIVE_INTERVAL):
                    await self._hurry.wait()
                self._hurry = trio.Event()
                live, self._live = list(self._live.values()), {}
                live_sent = trio.current_time()
                await ws.send_message(p.encode(p.Live(live)))
            # Live values wake this every tick; the outbox has new records twice a second.
            while sent < self._written:
                records = await trio.to_thread.run_sync(self.outbox.pending, sent, max_bytes)
                if not records:
                    break
                await ws.send_message(p.encode(p.Records([msgspec.Raw(text) for _, text in records])))
                sent = records[-1][0]
            await self._new.wait()

    async def _receive(self, ws, cancel: trio.CancelScope) -> None:
        # The aggregator answers every heartbeat: silence for three beats means the link is dead.
        async for message in _messages(ws, timeout=3 * self.heartbeat):
            if isinstance(message, p.Ack):  # forgotten with the next write to the outbox
                self.last_acked = message.seq
                self._refused += message.refused
            elif isinstance(message, p.Request):
                outcome = await self._answer(message)
                self._prompt_records = self._prompt_live = True  # what its tick does, when it comes
                self._soon.set()  # and what is waiting now
                await ws.send_message(p.encode(p.Reply(message.request_id, outcome.accepted, outcome.reason,
                                                       "changed by someone else" in outcome.reason,
                                                       self.engine.tags["Run Id"].value)))
        cancel.cancel()

    async def _beat(self, ws) -> None:
        while True:
            await trio.sleep(self.heartbeat)
            await ws.send_message(p.encode(p.Heartbeat()))

    async def _answer(self, request: p.Request) -> Outcome:
        """A user's request, applied by the scan cycle between two ticks."""
        detail = request.detail
        make: Callable[[Any], Any] | None
        try:
            if request.request == "control":
                command = str(detail["command"])
                make = lambda reply: Control(command, reply)  # noqa: E731
            elif request.request == "inject":
                code = str(detail["code"])
                make = lambda reply: Inject(code, reply)  # noqa: E731
            elif request.request == "save_method":
                lines = [(str(line["id"]), str(line["text"])) for line in detail["lines"]]
                version = int(detail["version"])
                make = lambda reply: SaveMethod(lines, version, reply)  # noqa: E731
            elif request.request in ("cancel", "force"):
                item, kind = int(detail["item"]), Cancel if request.request == "cancel" else Force
                make = lambda reply: kind(item, reply)  # noqa: E731
            elif request.request == "process_value":
                code = self._process_value_code(detail)
                make = lambda reply: Inject(code, reply)  # noqa: E731
            else:
                return Outcome(False, f"unknown request '{request.request}'")
        except (KeyError, TypeError, ValueError) as error:
            return Outcome(False, f"bad {request.request} request: {error}")
        return await ask(self.scan, make, timeout=5)

    def _process_value_code(self, detail: dict[str, Any]) -> str:
        """The P-code a process value's entry or choice runs (as Open Pectus' aggregator builds it)."""
        tag = str(detail["tag"])
        reading = next((r for r in self.engine.uod.readings if r.tag_name == tag), None)
        if reading is None or reading.kind == "reading":
            raise ValueError(f"'{tag}' is not an editable process value")
        if reading.kind == "reading_with_choice":
            options = reading.command_options or {}
            if detail["value"] not in options:
                raise ValueError(f"'{detail['value']}' is not a choice of '{tag}': {', '.join(options)}")
            return options[detail["value"]]
        unit = detail.get("unit")
        return f"{reading.execute_command_name or tag}: {detail['value']}" + (f" {unit}" if unit else "")


async def _messages(ws, timeout: float):
    while True:
        try:
            with trio.fail_after(timeout):
                frame = await ws.get_message()
        except ConnectionClosed:
            return
        yield p.decode(frame, allowed=p.FROM_AGGREGATOR)
