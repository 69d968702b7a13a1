"""Checkpoints of the views: start-up folds only the log after them, and memory holds only what is used.

Rebuilding the views from the whole log at every start costs time in proportion to the log (tens
of seconds per million events); a checkpoint keeps them, with the position of the last event
folded into them, in the store's own database (table ``pectus_checkpoints``, beside the log's
tables: one backup, one restore). Start-up loads the checkpoint and folds the events after it.

A checkpoint is parts, each a row (``name``, ``position``, ``code``, ``checksum``, ``data``):

* ``live``: every unit's views (:class:`~pectus.projections.views.LiveViews`), the events that
  could not be folded, how many runs there are, and the :class:`Memory` the aggregator keeps of
  engines beside the views. Small: it grows with the units, not with the runs or the log.
* ``summaries <n>``: the summaries of RUNS_PER_PART runs (the list of runs), in order of start.
* ``run <id>``: the :class:`~pectus.projections.views.RunView` of one run (its logs, method,
  audit trail, plot series...). A finished run's is loaded only when a query or a late event wants
  it, so memory holds a few of them (the projector's ``resident_runs``), never all.

A save writes the live part, and of the runs whose summary or view changed since the last save
(a sample, a late event, a run that ended) their views and their parts of summaries: a save costs
what changed, not what the log holds.

Invariants
    * A save is one transaction, every part in it as the views are at position P (the live
      part's). A part not written again since an earlier save holds what did not change since, so
      every part holds its view as of P, and a crash between saves loses nothing: the next start
      folds the log after P.
    * Nothing is trusted blindly. Each part carries the version of the code that wrote it
      (:func:`code_version`: a hash of the fold's source, so any change to it counts, not only a
      release) and a SHA-256 checksum of its name, position, version and data. A checkpoint of
      another version is ignored, and the views are rebuilt from the whole log (logged); one that
      is damaged (checksum, undecodable, a part missing) or not of this log (its position beyond
      the log's end, or the event there another) is reported (logged, and
      :attr:`Checkpoints.problem` for ``/health``) and rebuilt alike. A finished run's part found so
      when it is loaded is reported and that run rebuilt from the log. The log is the truth:
      nothing is lost either way.
    * The encoding is canonical (msgpack of the dataclasses, fields and map entries in their order,
      floats as 64-bit): equal views give equal bytes, so :meth:`Checkpoints.check` compares a
      checkpoint with a rebuild from the log byte for byte (``pectus-aggregator replay --check``).
    * The aggregator's memory of engines (the last record stored per outbox, each unit's open run
      and state, enrolments, push subscriptions) survives a start from a checkpoint as it would a
      replay: :class:`Memory` folds what the views do not show, and :func:`restore_memory` rebuilds
      the rest from the views.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import itertools
import logging
import math
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

from pectus.events.domain import (
    EngineEnrolled,
    EngineRevoked,
    PushSubscribed,
    PushUnsubscribed,
)
from pectus.events.store import (
    GENESIS_HASH,
    EventStore,
    Record,
    is_database_url,
    redacted,
    shown,
)
from pectus.projections.views import LiveViews, Projector, RunSummary, RunView

__all__ = [
    "CHECKPOINTS_TABLE",
    "RESIDENT_RUNS",
    "SAVE_EVERY_EVENTS",
    "SAVE_EVERY_SECONDS",
    "Capture",
    "Check",
    "CheckpointStore",
    "Checkpoints",
    "CheckpointsUnavailable",
    "Memory",
    "MemoryCheckpointStore",
    "Part",
    "PostgreSQLCheckpointStore",
    "SQLiteCheckpointStore",
    "code_version",
    "open_checkpoints",
    "restore_memory",
]

CHECKPOINTS_TABLE = "pectus_checkpoints"
LIVE = "live"  # the name of the live part; a finished run's is "run <id>"
# A save after this many events folded (while the aggregator runs, or builds its views from the log:
# finished runs' views stay in memory until saved) ...
SAVE_EVERY_EVENTS = 5_000
SAVE_EVERY_SECONDS = 60.0  # ... or, while it runs, this long after the last: a start after a crash folds no more
RESIDENT_RUNS = 16  # views of finished runs kept in memory, the most recently used
RUNS_PER_PART = 1_000  # run summaries per part: a save rewrites those that changed, not every run's

log = logging.getLogger("pectus.projections.checkpoint")


def run_part(run_id: str) -> str:
    return f"run {run_id}"


def summaries_part(number: int) -> str:
    """The part of the summaries of runs ``number * RUNS_PER_PART`` to the next RUNS_PER_PART."""
    return f"summaries {number}"


@functools.cache
def code_version() -> str:
    """A hash of the source of everything that decides what a checkpoint holds: the views' fold,
    the events' decoding, this module, and the parts of the aggregator's memory it restores. A
    change to any of them makes every checkpoint written before it another version's."""
    from pectus.actors import engine_session, push
    from pectus.events import domain
    from pectus.projections import trend, views

    sources = [inspect.getsource(part) for part in (
        views, domain, sys.modules[__name__], engine_session.UnitMemory, engine_session.Enrolment,
        engine_session.Engines._remember, push.Subscriptions.remember, trend.Trend.describe)]
    return hashlib.sha256("\0".join(sources).encode()).hexdigest()[:16]


# -- parts and where they are kept ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Part:
    """One saved part: ``data`` is the fold of the log up to event ``position``, encoded by the
    code of version ``code``; ``checksum`` covers all four and the name."""

    name: str
    position: int
    code: str
    checksum: str
    data: bytes

    @classmethod
    def of(cls, name: str, position: int, data: bytes) -> Part:
        code = code_version()
        return cls(name, position, code, _checksum(name, position, code, data), data)


def _checksum(name: str, position: int, code: str, data: bytes) -> str:
    digest = hashlib.sha256(f"{name}\0{position}\0{code}\0".encode())
    digest.update(data)
    return digest.hexdigest()


class PartReader(Protocol):
    def load(self, name: str) -> Part | None: ...

    def names(self) -> list[str]: ...


class CheckpointStore(Protocol):
    """Where checkpoints are kept: the table ``pectus_checkpoints`` of the store's database (or
    memory). Rows are replaced, never appended: it is no part of the record. Blocking; safe to
    call from any one thread at a time (calls are serialised)."""

    def save(self, parts: Sequence[Part]) -> None:
        """Writes the parts (replacing rows of the same names) in one transaction."""
        ...

    def load(self, name: str) -> Part | None: ...

    def reading(self) -> contextlib.AbstractContextManager[PartReader]:
        """Reads in one consistent snapshot (saves meanwhile are not seen)."""
        ...

    def clear(self) -> None:
        """Removes every part."""
        ...

    def close(self) -> None: ...


class CheckpointsUnavailable(RuntimeError):
    """The checkpoint table cannot be used (the database refuses): the aggregator runs without
    checkpoints, and says why."""


class MemoryCheckpointStore:
    """Parts in this process's memory: for a memory store, tests, and scratch rebuilds."""

    def __init__(self) -> None:
        self._parts: dict[str, Part] = {}
        self._lock = threading.Lock()

    def save(self, parts: Sequence[Part]) -> None:
        with self._lock:
            self._parts.update((part.name, part) for part in parts)

    def load(self, name: str) -> Part | None:
        return self._parts.get(name)

    def names(self) -> list[str]:
        return list(self._parts)

    @contextlib.contextmanager
    def reading(self) -> Iterator[PartReader]:
        with self._lock:
            yield self

    def clear(self) -> None:
        with self._lock:
            self._parts.clear()

    def close(self) -> None:
        """Nothing to release."""


_COLUMNS = "name, position, code, checksum, data"
_UPSERT = (f"INSERT INTO {CHECKPOINTS_TABLE} ({_COLUMNS}) VALUES ({{0}}, {{0}}, {{0}}, {{0}}, {{0}}) "
           "ON CONFLICT (name) DO UPDATE SET position = excluded.position, code = excluded.code, "
           "checksum = excluded.checksum, data = excluded.data")


_PIN = f"SELECT count(*) FROM {CHECKPOINTS_TABLE}"  # a transaction's first read fixes its snapshot


def _create(blob: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} (name TEXT PRIMARY KEY, position BIGINT NOT NULL, "
            f"code TEXT NOT NULL, checksum TEXT NOT NULL, data {blob} NOT NULL)")


class _Rows:
    """Reads parts through a DB-API cursor factory (``execute``) with the given placeholder;
    ``data`` is how the data column is read (as bytes, whatever a hand put there)."""

    def __init__(self, execute: Callable[..., Any], placeholder: str, data: str = "data") -> None:
        self._execute = execute
        self._placeholder = placeholder
        self._data = data

    def load(self, name: str) -> Part | None:
        row = self._execute(f"SELECT name, position, code, checksum, {self._data} FROM {CHECKPOINTS_TABLE} "
                            f"WHERE name = {self._placeholder}", (name,)).fetchone()
        return Part(row[0], row[1], row[2], row[3], bytes(row[4])) if row else None

    def names(self) -> list[str]:
        return [row[0] for row in self._execute(f"SELECT name FROM {CHECKPOINTS_TABLE} ORDER BY name").fetchall()]


class SQLiteCheckpointStore:
    """The table in the store's SQLite file, through a connection of its own (the file is in WAL
    mode: a save waits for the event writer's transaction at most, and readers never wait)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute(_create("BLOB"))
        self._rows = _Rows(self._db.execute, "?", "CAST(data AS BLOB)")

    def save(self, parts: Sequence[Part]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(_UPSERT.format("?"), [_row(part) for part in parts])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def load(self, name: str) -> Part | None:
        with self.reading() as rows:
            return rows.load(name)

    @contextlib.contextmanager
    def reading(self) -> Iterator[PartReader]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(_PIN).fetchone()
                yield self._rows
            finally:
                self._db.execute("COMMIT")

    def clear(self) -> None:
        with self._lock:
            self._db.execute(f"DELETE FROM {CHECKPOINTS_TABLE}")

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgreSQLCheckpointStore:
    """The table in the store's PostgreSQL database, through a connection of its own (made again
    after the server went away). The aggregator's role needs SELECT, INSERT, UPDATE and DELETE on
    it - unlike on the log's tables, rows here are replaced - and creates it when missing if it may;
    else the tables' owner creates it (docs/operations.md)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._url = url
        self._errors: tuple[type[Exception], ...] = (psycopg.Error,)
        self._conn: Any = None
        self._lock = threading.Lock()
        try:
            with self._lock, self._connection() as conn:
                (exists,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CHECKPOINTS_TABLE,)).fetchone()
                if not exists:
                    conn.execute(_create("BYTEA"))
        except psycopg.Error as error:
            self.close()
            raise CheckpointsUnavailable(
                f"cannot use the table {CHECKPOINTS_TABLE} in {shown(url)}: {redacted(str(error).strip(), url)}. "
                "Create it once as the tables' owner and grant the aggregator's role SELECT, INSERT, UPDATE and "
                "DELETE on it (docs/operations.md, Checkpoints)") from None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """The connection (made if there is none, or it broke); one that fails is dropped, so the
        next call connects again."""
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        try:
            yield self._conn
        except psycopg.OperationalError:
            self._conn.close()
            raise

    def save(self, parts: Sequence[Part]) -> None:
        with self._lock, self._connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(_UPSERT.format("%s"), [_row(part) for part in parts])

    def load(self, name: str) -> Part | None:
        with self.reading() as rows:
            return rows.load(name)

    @contextlib.contextmanager
    def reading(self) -> Iterator[PartReader]:
        with self._lock, self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(_PIN).fetchone()
            yield _Rows(conn.execute, "%s")

    def clear(self) -> None:
        with self._lock, self._connection() as conn:
            conn.execute(f"DELETE FROM {CHECKPOINTS_TABLE}")

    def grant(self, role: str) -> None:
        """Lets ``role`` (the aggregator's) read, write and replace checkpoints. Run by the table's
        owner, beside the store's own grant (SELECT and INSERT on the log's tables)."""
        from psycopg.sql import SQL, Identifier

        with self._lock, self._connection() as conn:
            conn.execute(SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                Identifier(CHECKPOINTS_TABLE), Identifier(role)))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _row(part: Part) -> tuple[str, int, str, str, bytes]:
    return part.name, part.position, part.code, part.checksum, part.data


def open_checkpoints(log: EventStore) -> CheckpointStore:
    """The checkpoint store of a log: in its database (a PostgreSQL URL or an SQLite file), or in
    memory for a memory store. Raises :class:`CheckpointsUnavailable` when the database refuses."""
    location = getattr(log, "location", "")
    if is_database_url(location):
        return PostgreSQLCheckpointStore(str(location))
    if isinstance(location, Path):
        try:
            return SQLiteCheckpointStore(location)
        except sqlite3.Error as error:
            raise CheckpointsUnavailable(f"cannot use the table {CHECKPOINTS_TABLE} in {location}: {error}") from None
    return MemoryCheckpointStore()


# -- what is saved ----------------------------------------------------------------------------

_FACTS = frozenset({EngineEnrolled.type, EngineRevoked.type, PushSubscribed.type, PushUnsubscribed.type})


@dataclass
class Memory:
    """What the aggregator remembers of the log beside the views, as far as the views cannot tell
    it again: the last record stored from each engine outbox (so that a resend is not stored
    twice), and the latest fact of each engine's enrolment and of each push subscription (who may
    connect, who is told). ``position`` and ``hash`` are those of the last record folded: the
    place in the log the checkpoint reflects, checked again when it is loaded."""

    position: int = 0
    hash: str = GENESIS_HASH
    outboxes: dict[str, dict[str, int]] = field(default_factory=dict)  # unit -> outbox id -> last seq
    facts: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # key -> (type, data)

    def fold(self, record: Record) -> None:
        """Follows the log as the aggregator's memory does (pectus.actors.engine_session.Engines,
        pectus.actors.push.Subscriptions): every record, in order."""
        self.position, self.hash = record.position, record.hash
        data = record.data
        if not isinstance(data, dict) or not isinstance(unit := data.get("unit"), str):
            return
        seq = data.get("seq")
        if isinstance(seq, int) and seq > 0 and isinstance(outbox := data.get("outbox") or "", str):
            outboxes = self.outboxes.get(unit) or self.outboxes.setdefault(unit, {})
            if seq > outboxes.get(outbox, 0):
                outboxes[outbox] = seq
        if record.type not in _FACTS:
            return
        subscription = data.get("subscription")
        if record.type in (EngineEnrolled.type, EngineRevoked.type):
            self.facts[f"engine {unit}"] = (record.type, data)
        elif record.type == PushSubscribed.type and isinstance(subscription, str):
            self.facts[f"push {subscription}"] = (record.type, data)
        elif record.type == PushUnsubscribed.type and isinstance(subscription, str):
            self.facts.pop(f"push {subscription}", None)


def restore_memory(engines: Any, remember: Callable[[str, dict[str, Any]], None], resumed: Resumed,
                   memory: Memory) -> None:
    """Gives the aggregator's memory what a replay of the log up to a checkpoint would: ``engines``
    (pectus.actors.engine_session.Engines) each unit's open run and state, its trend's plotted
    tags (from the views, which fold them alike), its outboxes' last records, which unit started
    each run; and ``remember`` (the aggregator's) the latest enrolment and push subscription facts."""
    for unit in resumed.views.units.values():
        kept = engines.memory(unit.id)
        kept.run, kept.state = unit.run, (unit.system_state, unit.method_status)
        if unit.description:
            engines.trend.describe(unit.id, unit.description)
    for unit_id, outboxes in memory.outboxes.items():
        engines.memory(unit_id).outboxes.update(outboxes)
    for run in resumed.runs.values():
        engines.run_units.setdefault(run.id, run.unit)
    for type_name, data in memory.facts.values():
        remember(type_name, data)


@dataclass
class LiveCheckpoint:
    """The live part: the live views, the memory beside them, and how many runs there are (their
    summaries are the parts "summaries 0", "summaries 1"..., RUNS_PER_PART runs each)."""

    views: LiveViews
    memory: Memory
    runs: int


@dataclass(frozen=True)
class Resumed:
    """What a start took up from a checkpoint (decoded: the projector's objects now)."""

    views: LiveViews
    runs: dict[str, RunSummary]


class Unusable(Exception):
    """A part that must not be used; the message says why, after the part's name."""


class Stale(Unusable):
    """Written by another version of the code."""


def _checked(part: Part) -> bytes:
    """The part's data, when it may be used."""
    if part.code != code_version():
        raise Stale(f"was written by another version of the views' code ({part.code}, this is {code_version()})")
    if part.checksum != _checksum(part.name, part.position, part.code, part.data):
        raise Unusable("is damaged: its checksum does not match its content")
    return part.data


T = TypeVar("T")
SLICE = 50_000  # points of a series encoded at a time


def encode_run(view: RunView) -> bytes:
    """``msgspec.msgpack.encode(view)``, byte for byte, made in slices: a long run's series hold
    millions of points, and one call would hold the interpreter - the event loop's thread too -
    for as long as it takes to encode them all."""
    encode = msgspec.msgpack.encode
    names = [attribute.name for attribute in dataclasses.fields(RunView)]
    pieces = [_header(len(names), 0x80, 0xDE, 0xDF)]  # a dataclass is a map of its fields, in order
    for name in names:
        pieces.append(encode(name))
        value = getattr(view, name)
        if name != "series":
            pieces.append(encode(value))
            continue
        pieces.append(_header(len(value), 0x80, 0xDE, 0xDF))
        for tag, points in value.items():
            pieces += [encode(tag), _header(len(points), 0x90, 0xDC, 0xDD)]
            pieces += [_items(encode(points[i:i + SLICE])) for i in range(0, len(points), SLICE)]
    return b"".join(pieces)


def _header(length: int, fixed: int, sixteen: int, thirty_two: int) -> bytes:
    """A msgpack map or array header: the fixed form below 16 entries, else 16 or 32 bits."""
    if length < 16:
        return bytes([fixed | length])
    if length < 1 << 16:
        return bytes([sixteen]) + length.to_bytes(2, "big")
    return bytes([thirty_two]) + length.to_bytes(4, "big")


def _items(encoded: bytes) -> bytes:
    """An encoded array's items, without its header."""
    return encoded[{0xDC: 3, 0xDD: 5}.get(encoded[0], 1):]


def _decoded(data: bytes, kind: type[T]) -> T:
    try:
        return msgspec.msgpack.decode(data, type=kind)
    except msgspec.MsgspecError as error:
        raise Unusable(f"cannot be read: {error}") from None


@dataclass(frozen=True)
class Capture:
    """A save, encoded: the parts, and the runs whose views it holds."""

    position: int
    parts: list[Part]
    run_ids: list[str]


@dataclass(frozen=True)
class Check:
    """What :meth:`Checkpoints.check` found: the position of the checkpoint checked (None: there
    is none), the parts compared, and each difference in words ([] when it is sound)."""

    position: int | None
    parts: int
    differences: list[str]


class Checkpoints:
    """The views of one log (``views``, with ``memory`` beside them), saved in ``store``.

    Sets ``views.load_run``: a finished run's view comes from its part (rebuilt from the log when
    the part is missing, damaged or another version's, unless ``rebuilds`` is off). Every method
    blocks; :meth:`capture` and :meth:`write` may run in a worker thread while the views do not
    change; :meth:`saved` runs where the views are changed."""

    def __init__(self, log: EventStore, store: CheckpointStore, views: Projector, memory: Memory | None = None, *,
                 every: int = SAVE_EVERY_EVENTS, rebuilds: bool = True) -> None:
        self.log, self.store, self.views = log, store, views
        self.memory = memory if memory is not None else Memory()
        self.every = every
        self.rebuilds = rebuilds
        self.saved_position = -1  # the position of the live part last saved (-1: none this time)
        self._all_summaries = True  # whether the next save writes every part of summaries (else: those changed)
        self.problem = ""  # the last damage found, in words (for /health)
        views.load_run = self.load_run

    # -- start-up -------------------------------------------------------------------------------

    def load(self) -> Resumed | None:
        """Takes up the saved checkpoint: the views and the memory as they were at its position
        (returned, to restore the rest of the aggregator's memory from: :func:`restore_memory`).
        None when there is none that may be used (why is logged): the checkpoint is cleared, and
        :meth:`fold` builds the views from the whole log."""
        try:
            found = self._saved()
        except Stale as why:
            log.warning("the checkpoint of the views %s: it is ignored, and the views are rebuilt from the whole log "
                        "once", why)
            self.store.clear()
            return None
        except Unusable as why:
            self._report(f"the checkpoint of the views {why}: it was rebuilt from the log")
            self.store.clear()
            return None
        if found is None:
            log.info("no checkpoint of the views yet: they are built from the whole log")
            return None
        part, saved, runs, active = found
        self.views.resume(saved.views, runs, active)
        self.memory = saved.memory
        self.saved_position = part.position
        self._all_summaries = False
        return Resumed(saved.views, runs)

    def _saved(self) -> tuple[Part, LiveCheckpoint, dict[str, RunSummary], dict[str, RunView]] | None:
        """The saved checkpoint (the live part, every run's summary, the views of active runs), in
        one snapshot of the store; None when there is none, Unusable when it must not be used."""
        with self.store.reading() as stored:
            part = stored.load(LIVE)
            if part is None:
                return None
            saved = _decoded(_checked(part), LiveCheckpoint)
            self._of_this_log(saved.memory)
            runs = self._summaries(stored, saved.runs)
            active = {unit.run: _decoded(_checked(self._part(stored, run_part(unit.run))), RunView)
                      for unit in saved.views.units.values() if unit.run is not None}
            return part, saved, runs, active

    @staticmethod
    def _part(stored: PartReader, name: str) -> Part:
        part = stored.load(name)
        if part is None:
            raise Unusable(f"lacks its part {name}")
        return part

    @staticmethod
    def _summaries(stored: PartReader, count: int) -> dict[str, RunSummary]:
        runs: dict[str, RunSummary] = {}
        for number in range(math.ceil(count / RUNS_PER_PART)):
            name = summaries_part(number)
            part = Checkpoints._part(stored, name)
            try:
                runs.update(_decoded(_checked(part), dict[str, RunSummary]))
            except Unusable as why:
                raise type(why)(f"(its part {name}) {why}") from None
        if [run.number for run in runs.values()] != list(range(count)):
            raise Unusable("holds the runs' summaries out of order")
        return runs

    def _of_this_log(self, memory: Memory) -> None:
        if not memory.position:
            return
        found = self.log.read(after=memory.position - 1, limit=1)
        if not found or found[0].position != memory.position:
            raise Unusable(f"is of event {memory.position}, after the end of the log: it is not of this log")
        if found[0].hash != memory.hash:
            raise Unusable(f"is not of this log: event {memory.position} is another")

    def fold(self, remember: Callable[[Record], None] | None = None, upto: int | None = None) -> int:
        """Folds the log after the views' position (up to ``upto``) into the views and the memory,
        ``remember`` hearing each record first, saving every :attr:`every` events; how many."""
        records: Iterator[Record] = self.log.iter(after=self.views.position)
        if upto is not None:
            records = itertools.takewhile(lambda record: record.position <= upto, records)
        count = 0
        while folded := self.views.replay(self._noted(itertools.islice(records, self.every), remember)):
            count += folded
            try:
                self.save()
            except Exception as error:  # noqa: BLE001 - the views stay whole in memory; the log is the record
                self._report(f"the views could not be checkpointed at event {self.views.position} ({error}): "
                             "they are kept in memory, and the next start folds the log from an earlier checkpoint")
        return count

    def _noted(self, records: Iterable[Record], remember: Callable[[Record], None] | None) -> Iterator[Record]:
        for record in records:
            if remember is not None:
                remember(record)
            self.memory.fold(record)
            yield record

    # -- saving ----------------------------------------------------------------------------------

    def capture(self) -> Capture:
        """The save of the views as they are: the live part, and of the runs whose summaries or
        views changed since the last save, their parts of summaries and their views. Reads the
        views (they must not change meanwhile), in pieces: none holds the interpreter for long."""
        views, position = self.views, self.views.position
        assert self.memory.position == position, "the memory follows the views"
        unsaved = views.unsaved_views()
        if self._all_summaries:
            numbers: Iterable[int] = range(math.ceil(views.run_count / RUNS_PER_PART))
        else:
            numbers = sorted({views.number_of(run_id) // RUNS_PER_PART for run_id, _ in unsaved})
        encode = msgspec.msgpack.encode
        parts = [Part.of(LIVE, position, encode(LiveCheckpoint(views.live(), self.memory, views.run_count)))]
        parts += [Part.of(summaries_part(number), position,
                          encode(views.summaries(number * RUNS_PER_PART, RUNS_PER_PART))) for number in numbers]
        parts += [Part.of(run_part(run_id), position, encode_run(view)) for run_id, view in unsaved]
        return Capture(position, parts, [run_id for run_id, _ in unsaved])

    def write(self, capture: Capture) -> None:
        self.store.save(capture.parts)

    def saved(self, capture: Capture) -> None:
        """The capture is written: its runs' views may leave memory (:meth:`Projector.trim`)."""
        self.views.saved(capture.run_ids)
        self.saved_position = capture.position
        self._all_summaries = False

    def save(self) -> None:
        """Captures, writes and trims: where nothing else reads the views meanwhile."""
        capture = self.capture()
        self.write(capture)
        self.saved(capture)
        self.views.trim()

    # -- finished runs ---------------------------------------------------------------------------

    def load_run(self, run_id: str, upto: int | None = None) -> RunView:
        """A finished run's view as last saved; when its part is missing, damaged or another
        version's (reported), rebuilt from the log up to ``upto`` (default: the views' position)."""
        part = self.store.load(run_part(run_id))
        try:
            if part is None:
                raise Unusable("is missing")
            return _decoded(_checked(part), RunView)
        except Unusable as why:
            if not self.rebuilds:
                raise LookupError(f"the view of run {run_id} {why}") from None
            self._report(f"the checkpoint of run {run_id} {why}: it was rebuilt from the log")
        return self._rebuilt(run_id, self.views.position if upto is None else upto)

    def _rebuilt(self, run_id: str, upto: int) -> RunView:
        scratch = self._scratch()
        scratch.fold(upto=upto)
        scratch.save()
        return scratch.load_run(run_id)

    def _scratch(self) -> Checkpoints:
        """A rebuild from the log beside these views: parts in memory (encoded, a fraction of
        the views' size), views in memory as many as these."""
        views = Projector(self.views.aggregator_name, self.views.aggregator_version,
                          resident_runs=self.views.resident_runs)
        return Checkpoints(self.log, MemoryCheckpointStore(), views, every=self.every, rebuilds=False)

    def _report(self, problem: str) -> None:
        log.error("%s", problem)
        self.problem = problem

    # -- the check -------------------------------------------------------------------------------

    def check(self) -> Check:
        """Rebuilds the views from the log up to the saved live part's position and compares every
        part of the checkpoint with the rebuilt one, byte for byte, in one snapshot of the store."""
        with self.store.reading() as saved:
            live = saved.load(LIVE)
            if live is None:
                return Check(None, 0, [])
            scratch = self._scratch()
            scratch.fold(upto=live.position)
            differences = []
            if scratch.views.position != live.position:
                differences.append(f"the log ends at event {scratch.views.position}, before the checkpoint's "
                                   f"position {live.position}")
            scratch.save()
            rebuilt = scratch.store
            assert isinstance(rebuilt, MemoryCheckpointStore)
            names = sorted(set(saved.names()) | set(rebuilt.names()), key=lambda name: (name != LIVE, name))
            for name in names:
                difference = _difference(name, saved.load(name), rebuilt.load(name))
                if difference:
                    differences.append(difference)
        return Check(live.position, len(names), differences)


def _difference(name: str, saved: Part | None, rebuilt: Part | None) -> str:
    """How the saved part differs from the rebuilt one, in words ("" when it does not)."""
    what = "the live views" if name == LIVE else name
    if saved is None:
        return f"{what}: missing from the checkpoint"
    if rebuilt is None:
        return f"{what}: in the checkpoint, but not in the views rebuilt from the log"
    try:
        data = _checked(saved)
    except Unusable as why:
        return f"{what} {why}"
    if data == rebuilt.data:
        return ""
    try:
        found = msgspec.msgpack.decode(data)
    except msgspec.MsgspecError as error:
        return f"{what} cannot be read: {error}"
    where = _first_difference(found, msgspec.msgpack.decode(rebuilt.data), "")
    return f"{what} differs at {where or 'the encoding'}"


def _first_difference(saved: Any, rebuilt: Any, path: str) -> str:
    """Where two decoded parts first differ, with both values ("" when they are equal)."""
    if type(saved) is not type(rebuilt):
        return f"{path or '.'}: checkpoint {_short(saved)}, log {_short(rebuilt)}"
    if isinstance(saved, dict):
        for key in dict.fromkeys([*saved, *rebuilt]):
            inner = f"{path}[{key!r}]" if path else repr(key)
            if key not in saved or key not in rebuilt:
                return f"{inner}: only in the {'log' if key not in saved else 'checkpoint'}"
            found = _first_difference(saved[key], rebuilt[key], inner)
            if found:
                return found
        return "" if list(saved) == list(rebuilt) else f"{path or '.'}: in another order"
    if isinstance(saved, list):
        for i, (a, b) in enumerate(zip(saved, rebuilt)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        if len(saved) != len(rebuilt):
            return f"{path or '.'}: checkpoint {len(saved)} items, log {len(rebuilt)}"
        return ""
    same = saved == rebuilt or isinstance(saved, float) and math.isnan(saved) and math.isnan(rebuilt)
    return "" if same else f"{path or '.'}: checkpoint {_short(saved)}, log {_short(rebuilt)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
