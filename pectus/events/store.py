"""The aggregator's event store: the system of record.

Everything Pectus knows about past runs is a sequence of events in one log. Writers hand the
store :class:`NewEvent` objects; readers get :class:`Record` objects back, in the order they were
appended. Two backends keep the same promises: :class:`MemoryEventStore` (tests, tools) and
:class:`SQLiteEventStore` (the aggregator's file, ``open_pectus_aggregator.sqlite3``). Both are
built on the ``eventsourcing`` library's *application recorders*, which already give what a log
needs: a global, ordered notification id and a per-originator version that must be unique.

The invariants, which :func:`verify` checks and the tests in ``tests/test_store.py`` pin down:

* **Append-only.** An event, once committed, is never changed or removed. In SQLite this is not
  just a convention: triggers refuse every ``UPDATE`` and ``DELETE`` on the events table, so even
  a hand-typed SQL statement cannot rewrite history without first dropping them.
* **Gap-free positions.** Each event has a global ``position``: 1, 2, 3, ... in append order,
  with no holes. It is the recorder's notification id (the SQLite ``rowid``). Each event also has
  a ``stream_version``: 1, 2, 3, ... within its stream (``"unit:host_DemoUod"``, ``"aggregator"``).
* **The chain.** Each event carries ``prev_hash``, the hash of the event before it (``"0" * 64``
  for the first), and ``hash``, the SHA-256 of its own canonical encoding::

      json.dumps({position, stream, stream_version, type, time, data, prev_hash},
                 sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

  So every event vouches for all the events before it. Position and hash are computed together,
  under a lock, from the last committed event, and - in SQLite - the transaction that inserts
  the batch refuses to commit if the positions it got are not the ones that were hashed (another
  process wrote to the file meanwhile); :class:`StoreConflict` is raised and nothing is written.
* **One transaction per batch.** :meth:`EventStore.append` takes a whole batch (a tick's tag
  samples, say) and commits it at once - group commit, so 1,000 events cost one disk sync, not
  1,000. It is all or nothing: if any event cannot be encoded (a value JSON cannot represent) or
  stored, no event of the batch is.

What :func:`verify` proves about a store file: every event is byte for byte as it was written,
sits at the position it was written at, and follows the event it was written after - so no event
was changed, removed from the middle, moved, or slipped in between two others. What it cannot
prove on its own: that no event was cut off the *end*, or that nobody rewrote the whole chain
from some point onwards (the hash has no secret key). For that, compare the last position and
hash with a copy kept elsewhere - a :func:`backup`, or a printed audit report.

Storage layout - the ``eventsourcing`` application-recorder table, named ``pectus_events``:

    =====================  ==============================================================
    ``rowid``              position (the recorder's notification id)
    ``originator_id``      ``uuid5(stream namespace, stream).hex``
    ``originator_version`` stream_version
    ``topic``              type
    ``state``              the canonical encoding above, with ``"hash":"<hex>"`` added as the
                           last member: ``{...,"type":"RunStarted","hash":"9f2c..."}``
    =====================  ==============================================================

``state`` is plain JSON that decodes to exactly the fields of :class:`Record`, and the bytes that
were hashed are ``state`` minus its fixed-length tail, so :func:`verify` checks the stored bytes
themselves rather than a re-encoding of what they decode to. The other columns repeat fields of
``state`` for the recorder's indexes; :func:`verify` checks they agree.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore

__all__ = [
    "EVENTS_TABLE",
    "GENESIS_HASH",
    "EventStore",
    "MemoryEventStore",
    "NewEvent",
    "Record",
    "SQLiteEventStore",
    "StoreConflict",
    "Verification",
    "backup",
    "stream_id",
    "verify",
]

EVENTS_TABLE = "pectus_events"
GENESIS_HASH = "0" * 64
APPEND_ONLY = "Pectus event store is append-only"

_STREAM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pectus:stream")
_HASH_OPEN = b',"hash":"'
_HASH_CLOSE = b'"}'
_TAIL_LENGTH = len(_HASH_OPEN) + 64 + len(_HASH_CLOSE)
_FIELDS = frozenset(
    ("position", "stream", "stream_version", "type", "time", "data", "prev_hash", "hash")
)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """What a writer appends. ``data`` must be JSON: str keys, lists (tuples come back as lists)."""

    stream: str
    type: str
    time: float
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Record:
    """What readers get: a committed event with its place in the log and in the chain."""

    position: int
    stream: str
    stream_version: int
    type: str
    time: float
    data: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of :func:`verify`. ``checked`` events passed; ``position`` is the first broken
    one (None when ok, or when the file could not be walked at all); ``last_hash`` is the hash of
    the last event that passed (the genesis hash for none): with ``checked``, the anchor to keep
    for later verifications."""

    ok: bool
    checked: int
    position: int | None
    problem: str
    last_hash: str = GENESIS_HASH


class StoreConflict(RuntimeError):
    """Another writer appended to the same store file; the batch was not written. Retrying
    continues from that writer's last event - but two writers on one store is a deployment bug."""


class EventStore(Protocol):
    """What the aggregator writes to and projections read from, whatever the backend."""

    def append(self, events: Sequence[NewEvent]) -> list[Record]:
        """Commits the batch in one transaction - all or nothing - and returns its records."""
        ...

    def read(self, after: int = 0, limit: int | None = None) -> list[Record]:
        """Records with position > ``after``, ascending; at most ``limit`` of them."""
        ...

    def iter(self, after: int = 0, batch: int = 10_000) -> Iterator[Record]:
        """Like :meth:`read`, streamed ``batch`` records at a time: memory stays flat."""
        ...

    def last_position(self) -> int:
        """The position of the last committed event; 0 for an empty store."""
        ...

    def close(self) -> None: ...


@functools.lru_cache(maxsize=4096)
def stream_id(stream: str) -> str:
    """The recorder's originator id for a stream (a handful of streams, each used constantly)."""
    return uuid.uuid5(_STREAM_NAMESPACE, stream).hex


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _seal(
    event: NewEvent, position: int, stream_version: int, prev_hash: str
) -> tuple[StoredEvent, str]:
    body = _canonical(
        {
            "position": position,
            "stream": event.stream,
            "stream_version": stream_version,
            "type": event.type,
            "time": event.time,
            "data": event.data,
            "prev_hash": prev_hash,
        }
    )
    digest = hashlib.sha256(body).hexdigest()
    stored = StoredEvent(
        originator_id=stream_id(event.stream),
        originator_version=stream_version,
        topic=event.type,
        state=body[:-1] + _HASH_OPEN + digest.encode() + _HASH_CLOSE,
    )
    return stored, digest


def _stored_hash(state: bytes) -> bytes:
    return state[-_TAIL_LENGTH + len(_HASH_OPEN) : -len(_HASH_CLOSE)]


# Digits -> "9", anything else -> " ": a run of 19 digits in the result is a number orjson might
# not read exactly (it turns integers beyond 64 bits into floats, silently).
_DIGITS = bytes(57 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_NUMBER = b"9" * 19


def _decode(state: bytes) -> Any:
    """A stored event's JSON, exactly as ``json.loads`` reads it (ValueError for what it refuses).

    Reading is mostly JSON decoding, so this uses orjson (three times faster) wherever that is
    exact; long numbers, NaN and infinities go to the standard decoder. Only reading: the hashed
    bytes are written by json.dumps, whose exact output the chain depends on.
    """
    if _LONG_NUMBER not in state.translate(_DIGITS):
        try:
            return orjson.loads(state)
        except orjson.JSONDecodeError:
            pass
    return json.loads(state)


def _record(state: bytes) -> Record:
    return Record(**_decode(state))


class _ChainedStore:
    """The chain and the positions, over any ``eventsourcing`` application recorder."""

    def __init__(self, recorder: ApplicationRecorder) -> None:
        self._recorder = recorder
        self._lock = threading.Lock()
        self._last_position = 0
        self._last_hash = GENESIS_HASH
        self._versions: dict[str, int] = {}  # stream -> last committed stream_version
        self._load_tip()

    def _load_tip(self) -> None:
        self._versions.clear()
        self._last_position = self.last_position()
        self._last_hash = GENESIS_HASH
        if self._last_position:
            (last,) = self._recorder.select_notifications(self._last_position, 1)
            self._last_hash = _stored_hash(last.state).decode()

    def _stream_version(self, stream: str) -> int:
        if stream not in self._versions:
            last = self._recorder.select_events(stream_id(stream), desc=True, limit=1)
            self._versions[stream] = last[0].originator_version if last else 0
        return self._versions[stream]

    def _insert(self, stored: list[StoredEvent], first_position: int) -> None:
        # Positions cannot move under us: only this object holds the recorder (see the SQLite
        # override for a shared file).
        self._recorder.insert_events(stored)

    def append(self, events: Sequence[NewEvent]) -> list[Record]:
        """Appends the batch in one transaction; all of it or (raising) none of it."""
        if not events:
            return []
        with self._lock:
            position, prev_hash = self._last_position, self._last_hash
            versions: dict[str, int] = {}
            stored: list[StoredEvent] = []
            for event in events:
                version = versions.get(event.stream) or self._stream_version(event.stream)
                versions[event.stream] = version = version + 1
                position += 1
                sealed, prev_hash = _seal(event, position, version, prev_hash)
                stored.append(sealed)
            try:
                self._insert(stored, self._last_position + 1)
            except Exception:
                self._load_tip()  # the tip may have moved (StoreConflict): start afresh next time
                raise
            self._versions.update(versions)
            self._last_position, self._last_hash = position, prev_hash
        return [_record(s.state) for s in stored]

    def read(self, after: int = 0, limit: int | None = None) -> list[Record]:
        """Events with position > ``after``, ascending; at most ``limit`` of them."""
        if limit is None:
            return list(self.iter(after))
        if limit < 1:
            return []
        return [_record(state) for state in self._select_states(after, limit)]

    def iter(self, after: int = 0, batch: int = 10_000) -> Iterator[Record]:
        """Streams events with position > ``after``, ``batch`` rows per query: flat memory.
        Each row is decoded only when it is asked for, so a reader that drops each record
        before the next keeps reusing the same few kilobytes."""
        while True:
            states = self._select_states(after, batch)
            for state in states:
                record = _record(state)
                yield record
            if len(states) < batch:
                return
            after = record.position

    def last_position(self) -> int:
        return self._recorder.max_notification_id() or 0

    def _select_states(self, after: int, limit: int) -> list[bytes]:
        notifications = self._recorder.select_notifications(after, limit, inclusive_of_start=False)
        return [n.state for n in notifications]


class MemoryEventStore(_ChainedStore):
    """The log in this process's memory, on ``eventsourcing``'s POPO recorder."""

    def __init__(self) -> None:
        super().__init__(POPOApplicationRecorder())

    def close(self) -> None:
        """Nothing to release: the events live as long as the object."""


class _ChainedSQLiteRecorder(SQLiteApplicationRecorder):
    """The SQLite application recorder, plus append-only triggers and a position check that
    runs inside the insert's transaction (so a failed check rolls the batch back)."""

    def construct_create_table_statements(self) -> list[str]:
        return super().construct_create_table_statements() + [
            f"CREATE TRIGGER IF NOT EXISTS {self.events_table_name}_no_{verb} "
            f"BEFORE {verb.upper()} ON {self.events_table_name} "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
            for verb in ("update", "delete")
        ]

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        first_position: int,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        positions = super()._insert_events(c, stored_events, **kwargs)
        if positions and positions[0] != first_position:
            raise StoreConflict(
                f"another writer appended to the store: the batch hashed for position "
                f"{first_position} would have landed at {positions[0]}; nothing was written"
            )
        return positions


class SQLiteEventStore(_ChainedStore):
    """The log in an SQLite file (WAL mode), created if missing. One writer process per file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # Originator ids go in as uuid hex, which is what the recorder stores for a UUID anyway;
        # "text" hands them back as they are instead of parsing a UUID per row.
        self._datastore = SQLiteDatastore(str(self.path), originator_id_type="text")
        recorder = _ChainedSQLiteRecorder(self._datastore, events_table_name=EVENTS_TABLE)
        recorder.create_table()
        super().__init__(recorder)

    def _insert(self, stored: list[StoredEvent], first_position: int) -> None:
        self._recorder.insert_events(stored, first_position=first_position)

    def _select_states(self, after: int, limit: int) -> list[bytes]:
        # The recorder's select_notifications builds a Notification per row from all columns;
        # ``state`` alone holds the record, and selecting just it reads half again as fast.
        with self._datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT state FROM {EVENTS_TABLE} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, limit),
            )
            return [row[0] for row in c.fetchall()]

    def close(self) -> None:
        self._datastore.close()


def verify(path: Path, anchors: Mapping[int, str] | None = None) -> Verification:
    """Walks the chain of a store file, opened read-only, and reports the first broken link.

    ``anchors`` are {position: hash} recorded by earlier verifications (or backups) and kept
    elsewhere: the event at each of those positions must still have that hash, and the store must
    reach it. That catches what the chain alone cannot - a chain rewritten from some event on,
    or events cut off the end.

    Never raises for a damaged, foreign or unreadable file: that is reported as the problem.
    """
    path = Path(path)
    anchors = dict(anchors or {})
    checked = 0
    prev_hash = GENESIS_HASH
    try:
        if not path.is_file():
            return Verification(False, 0, None, f"cannot read {path}: no such file")
        read_only = f"{path.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(read_only, uri=True)) as db:
            tables = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (EVENTS_TABLE,)
            ).fetchall()
            if not tables:
                return Verification(False, 0, None, f"not a Pectus store: no {EVENTS_TABLE} table")
            rows = db.execute(
                "SELECT rowid, originator_id, originator_version, topic, state "
                f"FROM {EVENTS_TABLE} ORDER BY rowid"
            )
            for rowid, originator_id, version, topic, state in rows:
                position = checked + 1
                if rowid != position:
                    problem = f"missing event at position {position} (the next stored is {rowid})"
                else:
                    problem = _check(position, originator_id, version, topic, state, prev_hash)
                if not problem and position in anchors and anchors[position] != _stored_hash(state).decode():
                    problem = (f"event {position} is not the one recorded in the anchor: the chain was "
                               f"rewritten from there or before")
                if problem:
                    return Verification(False, checked, position, problem, prev_hash)
                prev_hash = _stored_hash(state).decode()
                checked += 1
    except (sqlite3.Error, OSError) as e:
        return Verification(False, checked, None, f"cannot read {path}: {e}", prev_hash)
    beyond = [position for position in anchors if position > checked]
    if beyond:
        return Verification(False, checked, min(beyond),
                            f"the store ends at event {checked}, before the recorded event {min(beyond)}: "
                            "events were cut off the end", prev_hash)
    return Verification(True, checked, None, "", prev_hash)


def _check(
    position: int,
    originator_id: object,
    version: object,
    topic: object,
    state: object,
    prev_hash: str,
) -> str:
    """The problem with the event stored at ``position``, or "" when it is sound."""
    malformed = f"malformed event at position {position}"
    if not isinstance(state, bytes) or len(state) <= _TAIL_LENGTH:
        return malformed
    tail = state[-_TAIL_LENGTH:]
    if not (tail.startswith(_HASH_OPEN) and tail.endswith(_HASH_CLOSE)):
        return malformed
    body = state[:-_TAIL_LENGTH] + b"}"
    if hashlib.sha256(body).hexdigest().encode() != _stored_hash(state):
        return f"hash mismatch at position {position}: the event was changed"
    try:  # a forger can hash anything, so what hashes right may still not parse
        event = _decode(state)
    except (ValueError, RecursionError):
        return malformed
    if not isinstance(event, dict) or event.keys() != _FIELDS:
        return malformed
    if not isinstance(event["stream"], str):
        return malformed
    if event["position"] != position:
        return (
            f"event out of place at position {position}: it was written at position "
            f"{event['position']} (events were removed, inserted or reordered)"
        )
    if event["prev_hash"] != prev_hash:
        return (
            f"broken link at position {position}: it does not follow the event stored before it "
            "(an event was removed, inserted or replaced)"
        )
    if (originator_id, version, topic) != (
        stream_id(event["stream"]),
        event["stream_version"],
        event["type"],
    ):
        return f"columns changed at position {position}: they disagree with the hashed event"
    return ""


def backup(store: SQLiteEventStore, dest: Path) -> int:
    """Copies the store to ``dest`` while it is in use; returns the last position copied.

    sqlite3's backup API copies one read snapshot in a single step, so the copy is a consistent
    prefix of the log - appends that commit meanwhile are simply not in it - and the writer is
    never blocked (WAL readers do not block writers). The copy is written beside ``dest`` and
    renamed into place, so ``dest`` is never a half-written file.
    """
    dest = Path(dest)
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(store.path)) as source:
        with contextlib.closing(sqlite3.connect(partial)) as target:
            source.backup(target)
            # A single self-contained file: nothing left in a -wal beside it to lose in the move.
            target.execute("PRAGMA journal_mode=DELETE")
            (last,) = target.execute(
                f"SELECT COALESCE(MAX(rowid), 0) FROM {EVENTS_TABLE}"
            ).fetchone()
    os.replace(partial, dest)
    return last
