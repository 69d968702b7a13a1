"""The aggregator's event store: the system of record.

Everything Pectus knows about past runs is a sequence of events in one log. Writers hand the
store :class:`NewEvent` objects; readers get :class:`Record` objects back, in the order they were
appended. Three backends keep the same promises: :class:`MemoryEventStore` (tests, tools),
:class:`SQLiteEventStore` (the aggregator's file, ``open_pectus_aggregator.sqlite3``) and
:class:`~pectus.events.postgres.PostgreSQLEventStore` (a PostgreSQL database, for a site that
outgrows one machine; :func:`open_store` picks by location). All are :class:`ChainedStore` on
the ``eventsourcing`` library's *application recorders*, which already give what a log needs: a
global, ordered notification id and a per-originator version that must be unique. The chain -
sealing, positions, stream versions, the checks - is :class:`ChainedStore`'s, once for all of
them; a backend adds only its transaction and a read-only :class:`Chain` view of its rows.

The invariants, which :func:`verify` checks and the tests in ``tests/test_store.py`` pin down:

* **Append-only.** An event, once committed, is never changed or removed. In SQLite (and in
  PostgreSQL, see :mod:`pectus.events.postgres`), triggers enforce it for every connection, a
  hand-typed statement included: ``UPDATE`` and ``DELETE`` are refused, and so is any ``INSERT``
  that would replace an event (``INSERT OR REPLACE`` on an existing stream version or position)
  or that does not land at the next position (a later gap, an old or negative position). What
  triggers cannot do: stop someone who can write the file (or own the tables) from dropping them,
  or from editing the bytes directly. That is what the chain and its signatures are for - they do
  not prevent a rewrite, they make it evident.
* **Gap-free positions.** Each event has a global ``position``: 1, 2, 3, ... in append order,
  with no holes. It is the recorder's notification id (the SQLite ``rowid``; PostgreSQL's
  ``notification_id``, given explicitly). Each event also has a ``stream_version``: 1, 2, 3, ...
  within its stream (``"unit:host_DemoUod"``, ``"aggregator"``).
* **The chain.** Each event carries ``prev_hash``, the hash of the event before it (``"0" * 64``
  for the first), and ``hash``, the SHA-256 of its own canonical encoding::

      json.dumps({position, stream, stream_version, type, time, data, prev_hash},
                 sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

  So every event vouches for all the events before it. Position and hash are computed together,
  under a lock, from the last committed event, and the transaction that inserts the batch
  refuses to commit if the positions it got are not the ones that were hashed (another process
  wrote to the store meanwhile); :class:`StoreConflict` is raised and nothing is written.
* **Signatures.** A store opened with a :class:`~pectus.events.signing.ChainSigner` signs the
  last event of every batch - its position and hash - and writes the signature in the same
  transaction as the batch, into the append-only table ``pectus_chain_signatures`` (position,
  hash, key fingerprint, signature). One signature covers every event up to it. A store opened
  without a signer (tools, most tests) writes none.
* **One transaction per batch.** :meth:`EventStore.append` takes a whole batch (a tick's tag
  samples, say) and commits it at once - group commit, so 1,000 events cost one disk sync, not
  1,000. It is all or nothing: if any event cannot be encoded (a value JSON cannot represent) or
  stored, no event of the batch - and no signature - is.

What :func:`verify` proves about a store (a file, or a database): every event is byte for byte as it was written,
sits at the position it was written at, and follows the event it was written after - so no event
was changed, removed from the middle, moved, or slipped in between two others. The hash has no
secret, so on its own that cannot show that nobody with the code rewrote the chain from some
event on, or appended correctly hashed events. Given the public key(s), verify also proves that
the holder of the private key vouched for the whole chain up to its last event: every signature
is valid and names its event's hash, and the last event is signed. What even that cannot show:
events cut off the end back to a signed event (compare with an anchor kept elsewhere, or a
:func:`backup`), or a forgery by someone who could read the private key file.

Storage layout - the ``eventsourcing`` application-recorder table, named ``pectus_events``:

    =====================  ==============================================================
    ``rowid``              position (the recorder's notification id; ``notification_id``
                           in PostgreSQL)
    ``originator_id``      ``uuid5(stream namespace, stream).hex``
    ``originator_version`` stream_version
    ``topic``              type
    ``state``              the canonical encoding above, with ``"hash":"<hex>"`` added as the
                           last member: ``{...,"type":"RunStarted","hash":"9f2c..."}``
    =====================  ==============================================================

and ``pectus_chain_signatures`` (``position`` integer primary key, ``hash``, ``key``: the
signing key's fingerprint, ``signature``: 64 bytes of Ed25519 over ``position`` and ``hash``, see
:mod:`pectus.events.signing`).

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
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore

from pectus.events.signing import ChainSigner, PublicKey

__all__ = [
    "EVENTS_TABLE",
    "GENESIS_HASH",
    "SIGNATURES_TABLE",
    "Chain",
    "ChainSignature",
    "ChainedStore",
    "EventStore",
    "MemoryEventStore",
    "NewEvent",
    "Record",
    "SQLiteEventStore",
    "StoreConflict",
    "Verification",
    "backup",
    "is_database_url",
    "open_chain",
    "open_store",
    "read_store",
    "shown",
    "stream_id",
    "verify",
]

EVENTS_TABLE = "pectus_events"
SIGNATURES_TABLE = "pectus_chain_signatures"
GENESIS_HASH = "0" * 64
APPEND_ONLY = "Pectus event store is append-only"
TAIL_EVENTS = 1000  # the start-up check walks this many of the newest links

log = logging.getLogger("pectus.events.store")

_STREAM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pectus:stream")
_HASH_OPEN = b',"hash":"'
_HASH_CLOSE = b'"}'
_TAIL_LENGTH = len(_HASH_OPEN) + 64 + len(_HASH_CLOSE)
_FIELDS = frozenset(
    ("position", "stream", "stream_version", "type", "time", "data", "prev_hash", "hash")
)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """What a writer appends. ``data`` must be JSON: str keys, lists (tuples come back as lists);
    ``type`` a name (no NUL character: every backend refuses one alike)."""

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
class ChainSignature:
    """The signing key (by fingerprint) vouches for the chain up to ``position``, ending in ``hash``."""

    position: int
    hash: str
    key: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of :func:`verify`. ``checked`` events passed; ``position`` is the first broken
    one (None when ok, or when the file could not be walked at all); ``last_hash`` is the hash of
    the last event that passed (the genesis hash for none): with ``checked``, the anchor to keep
    for later verifications. ``signatures`` were checked (0 when no public key was given)."""

    ok: bool
    checked: int
    position: int | None
    problem: str
    last_hash: str = GENESIS_HASH
    signatures: int = 0


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

    def refresh(self) -> None:
        """Continue from the store's end as it is now (another process may have appended)."""
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
    if "\x00" in event.type:  # the type is a column of its own too, and PostgreSQL's text holds no NUL
        raise ValueError(f"an event type is a name, and {event.type!r} holds a NUL character")
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


DAMAGED = "Damaged"  # the type readers see for a stored row that is not a record (verify says why)


def _record(state: bytes, position: int | None = None) -> Record:
    """The record a row holds. Reading the log must go on past a row that is not one (a store
    changed by hand): with its ``position`` known, such a row reads as a record of type
    :data:`DAMAGED` with no data, for readers to skip and report."""
    try:
        return Record(**_decode(state))
    except (ValueError, TypeError, RecursionError):
        if position is None:
            raise
        return Record(position, "", 0, DAMAGED, 0.0, {}, "", "")


class ChainedStore:
    """The chain, the positions and the signatures, over any ``eventsourcing`` application recorder.

    A backend provides ``_insert`` (the batch and its signature in one transaction, refusing with
    :class:`StoreConflict` when the positions moved) and ``_chain`` (a read-only view of its rows
    for the checks); everything else - sealing, positions, stream versions, the tail check - is
    this class's, the same for every backend. ``broken`` is "" until :meth:`check_tail` finds a
    problem, then that problem."""

    _read_errors: tuple[type[Exception], ...] = ()  # what reading the backend's rows may raise
    location: Path | str = ""  # where a durable store is: what verify and read_store take

    def __init__(self, recorder: ApplicationRecorder, signer: ChainSigner | None) -> None:
        self._recorder = recorder
        self._signer = signer
        self.broken = ""
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

    def _insert(
        self, stored: list[StoredEvent], first_position: int, signature: ChainSignature | None
    ) -> None:
        """Inserts the batch and its signature (if any) in one transaction."""
        raise NotImplementedError

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
            signature = None
            if self._signer is not None:
                signature = ChainSignature(position, prev_hash, self._signer.fingerprint,
                                           self._signer.sign(position, prev_hash))
            try:
                self._insert(stored, self._last_position + 1, signature)
            except StoreConflict:
                self._load_tip()  # another writer moved the tip: continue from there next time
                raise
            # Any other failure wrote nothing (the transaction rolled back): the tip is as it was. One
            # whose commit was lost on the way back is found by the next append's position check.
            self._versions.update(versions)
            self._last_position, self._last_hash = position, prev_hash
        return [_record(s.state) for s in stored]

    def read(self, after: int = 0, limit: int | None = None) -> list[Record]:
        """Events with position > ``after``, ascending; at most ``limit`` of them."""
        if limit is None:
            return list(self.iter(after))
        if limit < 1:
            return []
        return [_record(state, position) for position, state in self._select_states(after, limit)]

    def iter(self, after: int = 0, batch: int = 10_000) -> Iterator[Record]:
        """Streams events with position > ``after``, ``batch`` rows per query: flat memory.
        Each row is decoded only when it is asked for, so a reader that drops each record
        before the next keeps reusing the same few kilobytes."""
        while True:
            states = self._select_states(after, batch)
            for position, state in states:
                record = _record(state, position)
                yield record
            if len(states) < batch:
                return
            after = record.position

    def last_position(self) -> int:
        return self._recorder.max_notification_id() or 0

    @property
    def tip(self) -> int:
        """The position of the newest event this store appended, or found at its last refresh,
        without asking the database: cheap enough for a health check in the event loop, also
        while a database server is away."""
        return self._last_position

    def refresh(self) -> None:
        """Take up the chain where it ends now: after another process (an operator's command)
        appended to the same store file."""
        with self._lock:
            self._load_tip()

    def _select_states(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        notifications = self._recorder.select_notifications(after, limit, inclusive_of_start=False)
        return [(n.id, n.state) for n in notifications]

    def _chain(self) -> contextlib.AbstractContextManager[Chain]:
        """A read-only view of this store's rows, in one consistent snapshot."""
        raise NotImplementedError

    def signatures(self) -> list[ChainSignature]:
        """The signatures written, in position order."""
        with self._chain() as chain:
            return list(chain.signatures(0))

    def check_tail(self, events: int = TAIL_EVENTS) -> str:
        """Checks the newest ``events`` links of the chain and, with a signer, that the last event
        is signed with its key; the problem, or "" when the tail is sound. Cheap (one signature,
        at most ``events`` hashes) but blocking: run it in a worker thread, before appending.

        A found problem is kept in :attr:`broken`, and the store stops signing: it must never
        vouch for events it could not check - a later signature would cover them. A key created
        by this start (``signer.created``) cannot check earlier signatures: that is logged, and
        only the links are checked.
        """
        try:
            with self._chain() as chain:
                last = chain.last()
                after = max(0, last - events)
                prev_hash = GENESIS_HASH
                if after:  # the window starts from the stored hash; a damaged one fails the first link
                    state = chain.state(after)
                    prev_hash = _stored_hash(state).decode(errors="replace") if isinstance(state, bytes) else ""
                links = _walk(chain, after, prev_hash, {}, ())
                problem = links.problem or self._newest_signature_problem(chain, last, links.last_hash)
        except self._read_errors as error:
            problem = f"cannot read the chain's tail: {redacted(str(error), self.location)}"
        if problem:
            with self._lock:
                self._signer = None
                self.broken = problem
        return problem

    def _newest_signature_problem(self, chain: Chain, last: int, last_hash: str) -> str:
        signer = self._signer
        if signer is None:
            return ""
        if signer.created:
            if last:
                log.warning("the chain signing key %s is new: the %d events stored so far were signed by "
                            "another key or not at all; check them with verify and the earlier public key",
                            signer.fingerprint, last)
            return ""
        newest = chain.newest_signature()
        signed = newest.position if newest else 0
        if signed > last:
            return _cut_off(signed, last)
        if signed < last:
            return _unsigned(signed + 1, last)
        if newest is None:
            return ""
        return _signature_problem(newest, last, last_hash, {signer.fingerprint: signer.public})


class Chain(Protocol):
    """A read-only view of one store's rows in one consistent snapshot: what :func:`verify` and
    :meth:`ChainedStore.check_tail` walk, whatever the backend. Rows are
    ``(position, originator_id, originator_version, topic, state)`` as stored, unchecked."""

    name: str  # the store in messages: a file's path, or a database URL with its password masked
    errors: tuple[type[Exception], ...]  # what reading may raise (reported, never raised by verify)

    def has_events(self) -> bool: ...

    def last(self) -> int: ...

    def rows(self, after: int) -> Iterator[tuple[object, object, object, object, object]]: ...

    def state(self, position: int) -> object: ...

    def signatures(self, after: int) -> Iterator[ChainSignature]: ...

    def newest_signature(self) -> ChainSignature | None: ...


class _MemoryChain:
    """The rows of a :class:`MemoryEventStore`: nothing else can write them, so nothing can be
    tampered with, but the checks run all the same (the same code as the other backends')."""

    name = "the memory store"
    errors: tuple[type[Exception], ...] = ()

    def __init__(self, recorder: ApplicationRecorder, signatures: list[ChainSignature]) -> None:
        self._recorder = recorder
        self._signatures = signatures

    def has_events(self) -> bool:
        return True

    def last(self) -> int:
        return self._recorder.max_notification_id() or 0

    def rows(self, after: int) -> Iterator[tuple[object, object, object, object, object]]:
        for n in self._recorder.select_notifications(after, self.last() + 1, inclusive_of_start=False):
            yield n.id, n.originator_id, n.originator_version, n.topic, n.state

    def state(self, position: int) -> object:
        found = self._recorder.select_notifications(position, 1)
        return found[0].state if found and found[0].id == position else None

    def signatures(self, after: int) -> Iterator[ChainSignature]:
        return (s for s in list(self._signatures) if s.position > after)

    def newest_signature(self) -> ChainSignature | None:
        return self._signatures[-1] if self._signatures else None


class MemoryEventStore(ChainedStore):
    """The log in this process's memory, on ``eventsourcing``'s POPO recorder."""

    def __init__(self, signer: ChainSigner | None = None) -> None:
        self._signatures: list[ChainSignature] = []
        super().__init__(POPOApplicationRecorder(), signer)

    def _insert(
        self, stored: list[StoredEvent], first_position: int, signature: ChainSignature | None
    ) -> None:
        # Positions cannot move under us: only this object holds the recorder. The signature is
        # kept only once the insert succeeded, under the append lock: the same all or nothing.
        self._recorder.insert_events(stored)
        if signature is not None:
            self._signatures.append(signature)

    @contextlib.contextmanager
    def _chain(self) -> Iterator[Chain]:
        yield _MemoryChain(self._recorder, self._signatures)

    def close(self) -> None:
        """Nothing to release: the events live as long as the object."""


def _trigger(name: str, when: str, table: str, condition: str, reason: str) -> str:
    return (f"CREATE TRIGGER IF NOT EXISTS {table}_{name} {when} ON {table} "
            f"WHEN {condition} BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: {reason}'); END")


def _append_only(table: str, noun: str, key: str, next_position: str) -> list[str]:
    """Triggers that keep ``table`` append-only: no UPDATE, no DELETE, no INSERT that replaces a
    row (an ``INSERT OR REPLACE`` removes the old row without firing DELETE triggers), and -
    ``next_position`` - no INSERT whose row is out of order. Each is an index lookup, never a
    scan. ``key`` is the condition of a row that the new one would replace."""
    return [
        _trigger("no_update", "BEFORE UPDATE", table, "1", f"no {noun} is changed"),
        _trigger("no_delete", "BEFORE DELETE", table, "1", f"no {noun} is removed"),
        _trigger("no_replace", "BEFORE INSERT", table, f"EXISTS (SELECT 1 FROM {table} WHERE {key})",
                 f"no {noun} is replaced"),
        _trigger("next_position", "AFTER INSERT", table, next_position, f"a new {noun} goes at the next position"),
    ]


class _ChainedSQLiteRecorder(SQLiteApplicationRecorder):
    """The SQLite application recorder, plus append-only triggers, the signatures table, and a
    position check that runs inside the insert's transaction (a failed check writes nothing)."""

    def construct_create_table_statements(self) -> list[str]:
        events, signatures = self.events_table_name, SIGNATURES_TABLE
        return super().construct_create_table_statements() + _append_only(
            events,
            "event",
            # In a BEFORE INSERT trigger NEW.rowid is the rowid the statement names, or -1 when
            # SQLite is to choose it (a normal append); so this refuses a named position in use.
            key="rowid = NEW.rowid OR (originator_id = NEW.originator_id "
                "AND originator_version = NEW.originator_version)",
            # After the insert: nothing above it, and the position below it taken (or it is 1).
            next_position=f"EXISTS (SELECT 1 FROM {events} WHERE rowid > NEW.rowid) OR (NEW.rowid <> 1 "
                          f"AND NOT EXISTS (SELECT 1 FROM {events} WHERE rowid = NEW.rowid - 1))",
        ) + [
            f"CREATE TABLE IF NOT EXISTS {signatures} (position INTEGER PRIMARY KEY, "
            "hash TEXT NOT NULL, key TEXT NOT NULL, signature BLOB NOT NULL)",
            *_append_only(
                signatures,
                "signature",
                key="position = NEW.position",
                # Signatures go in ascending positions (gaps are normal: one per batch).
                next_position=f"EXISTS (SELECT 1 FROM {signatures} WHERE position > NEW.position)",
            ),
        ]

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        first_position: int,
        signature: ChainSignature | None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        # The first insert takes the write lock (waiting for another writer's transaction), so the
        # check comes after it; another writer's events in the same stream make the insert fail on
        # a stream version first - a conflict all the same.
        try:
            positions = super()._insert_events(c, stored_events, **kwargs)
        except sqlite3.IntegrityError:
            c.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {self.events_table_name}")
            self._check_position(first_position, c.fetchone()[0] + 1)
            raise
        if positions:
            self._check_position(first_position, positions[0])
        if signature is not None:
            c.execute(
                f"INSERT INTO {SIGNATURES_TABLE} (position, hash, key, signature) VALUES (?, ?, ?, ?)",
                (signature.position, signature.hash, signature.key, signature.signature),
            )
        return positions

    @staticmethod
    def _check_position(hashed: int, found: int) -> None:
        if found != hashed:
            raise StoreConflict(f"another writer appended to the store: the batch hashed for position {hashed} "
                                f"would have landed at {found}; nothing was written")


class SQLiteEventStore(ChainedStore):
    """The log in an SQLite file (WAL mode), created if missing. One writer process per file."""

    _read_errors = (sqlite3.Error, OSError)

    def __init__(self, path: Path, signer: ChainSigner | None = None) -> None:
        self.path = Path(path)
        # Originator ids go in as uuid hex, which is what the recorder stores for a UUID anyway;
        # "text" hands them back as they are instead of parsing a UUID per row.
        self._datastore = SQLiteDatastore(str(self.path), originator_id_type="text")
        recorder = _ChainedSQLiteRecorder(self._datastore, events_table_name=EVENTS_TABLE)
        recorder.create_table()
        super().__init__(recorder, signer)

    @property
    def location(self) -> Path:
        """Where the store is: what :func:`verify` and :func:`read_store` take."""
        return self.path

    def _insert(
        self, stored: list[StoredEvent], first_position: int, signature: ChainSignature | None
    ) -> None:
        self._recorder.insert_events(stored, first_position=first_position, signature=signature)

    def _select_states(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        # The recorder's select_notifications builds a Notification per row from all columns;
        # the position and ``state`` hold the record, and selecting just them reads half again as fast.
        with self._datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT rowid, state FROM {EVENTS_TABLE} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, limit),
            )
            return [(row[0], row[1]) for row in c.fetchall()]

    def _chain(self) -> contextlib.AbstractContextManager[Chain]:
        return _sqlite_chain(self.path)

    def close(self) -> None:
        self._datastore.close()


class _SQLiteChain:
    """The rows of a store file, through a read-only connection (reading never changes it)."""

    errors = (sqlite3.Error, OSError)

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.name = str(path)

    def has_events(self) -> bool:
        return self._has_table(EVENTS_TABLE)

    def last(self) -> int:
        return self._db.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {EVENTS_TABLE}").fetchone()[0]

    def rows(self, after: int) -> Iterator[tuple[object, object, object, object, object]]:
        return self._db.execute(
            "SELECT rowid, originator_id, originator_version, topic, state "
            f"FROM {EVENTS_TABLE} WHERE rowid > ? ORDER BY rowid",
            (after,),
        )

    def state(self, position: int) -> object:
        row = self._db.execute(f"SELECT state FROM {EVENTS_TABLE} WHERE rowid = ?", (position,)).fetchone()
        return row[0] if row else None

    def signatures(self, after: int) -> Iterator[ChainSignature]:
        """The signatures after position ``after``, ascending; none in a store from before signing."""
        if not self._has_table(SIGNATURES_TABLE):
            return iter(())
        rows = self._db.execute(
            f"SELECT position, hash, key, signature FROM {SIGNATURES_TABLE} WHERE position > ? ORDER BY position",
            (after,),
        )
        return (ChainSignature(*row) for row in rows)

    def newest_signature(self) -> ChainSignature | None:
        if not self._has_table(SIGNATURES_TABLE):
            return None
        row = self._db.execute(
            f"SELECT position, hash, key, signature FROM {SIGNATURES_TABLE} ORDER BY position DESC LIMIT 1"
        ).fetchone()
        return ChainSignature(*row) if row else None

    def _has_table(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return bool(self._db.execute(query, (name,)).fetchall())


@contextlib.contextmanager
def _sqlite_chain(path: Path) -> Iterator[Chain]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError("no such file")
    with _read_only(path) as db:
        db.execute("BEGIN")  # one snapshot for every read: a live store's events and signatures agree
        yield _SQLiteChain(db, path)


def verify(
    location: Path | str, anchors: Mapping[int, str] | None = None, public_keys: Sequence[PublicKey] = ()
) -> Verification:
    """Walks the chain of a store - a file, opened read-only, or a PostgreSQL database (a
    ``postgresql://`` URL), read in one read-only snapshot - and reports the first broken link.

    ``anchors`` are {position: hash} recorded by earlier verifications (or backups) and kept
    elsewhere: the event at each of those positions must still have that hash, and the store must
    reach it. That catches events cut off the end, and - without signatures - a chain rewritten
    from some event on.

    With ``public_keys`` (the aggregator's, and those of keys it used before a rotation), every
    signature must be made by one of them, be valid, and name the hash of the event at its
    position; and the last event must be signed. That catches what someone with the code but
    without the private key can do: an event appended with a correct hash ("events 1201-1203 are
    not signed"), a chain re-hashed from some event on (the first signature after that point
    names the old hash), signatures removed from the end. It cannot catch events cut off back to
    a signed event (anchors and backups can), nor forgeries by someone holding the private key.
    Without keys, signatures are not read: the links alone are checked.

    Never raises for a damaged, foreign or unreadable store: that is reported as the problem.
    """
    try:
        with open_chain(location) as chain:
            if not chain.has_events():
                return Verification(False, 0, None, f"not a Pectus store: no {EVENTS_TABLE} table")
            return _walk(chain, 0, GENESIS_HASH, dict(anchors or {}), public_keys)
    except _errors_of(location) as e:
        return Verification(False, 0, None, f"cannot read {shown(location)}: {redacted(str(e).strip(), location)}")


def _walk(
    chain: Chain,
    after: int,
    prev_hash: str,
    anchors: Mapping[int, str],
    public_keys: Sequence[PublicKey],
) -> Verification:
    """Checks the events after position ``after``, whose hash is ``prev_hash``; with
    ``public_keys`` also the signatures after it, and that the last event is signed."""
    keys = {key.fingerprint: key for key in public_keys}
    checked = signed_count = 0
    signed, signed_hash = after, prev_hash
    try:
        signatures = chain.signatures(after) if keys else iter(())
        pending = next(signatures, None)
        for rowid, originator_id, version, topic, state in chain.rows(after):
            position = after + checked + 1
            if rowid != position:
                problem = f"missing event at position {position} (the next stored is {rowid})"
            else:
                problem = _check(position, originator_id, version, topic, state, prev_hash)
            event_hash = "" if problem else _stored_hash(state).decode()
            if not problem and position in anchors and anchors[position] != event_hash:
                problem = (f"event {position} is not the one recorded in the anchor: the chain was "
                           f"rewritten from there or before")
            if not problem and pending is not None and pending.position == position:
                problem = _signature_problem(pending, position, event_hash, keys)
                if not problem:
                    signed, signed_hash, signed_count = position, event_hash, signed_count + 1
                    pending = next(signatures, None)
            if problem:
                return Verification(False, checked, position, problem, prev_hash, signed_count)
            prev_hash = event_hash
            checked += 1
    except chain.errors as e:
        return Verification(False, checked, None, f"cannot read {chain.name}: {e}", prev_hash, signed_count)
    last = after + checked
    beyond = [position for position in anchors if position > last]
    if beyond:
        return Verification(False, checked, min(beyond),
                            f"the store ends at event {last}, before the recorded event {min(beyond)}: "
                            "events were cut off the end", prev_hash, signed_count)
    if pending is not None:
        return Verification(False, checked, pending.position, _cut_off(pending.position, last), prev_hash,
                            signed_count)
    if keys and signed < last:
        return Verification(False, signed - after, signed + 1, _unsigned(signed + 1, last), signed_hash,
                            signed_count)
    return Verification(True, checked, None, "", prev_hash, signed_count)


def read_store(location: Path | str) -> Iterator[Record]:
    """Every record of a store - a file, opened read-only (an auditor's copy is never changed by
    reading it), or a PostgreSQL database in one read-only snapshot; a row that is not a record
    reads as :data:`DAMAGED`."""
    with open_chain(location) as chain:
        for position, _, _, _, state in chain.rows(0):
            yield _record(state, position)  # type: ignore[arg-type]


def is_database_url(location: Path | str) -> bool:
    """True for a PostgreSQL URL (``postgresql://`` or ``postgres://``), False for a file's path."""
    return isinstance(location, str) and location.lower().startswith(("postgresql://", "postgres://"))


def shown(location: Path | str) -> str:
    """The store as messages and logs name it: a path, or a URL with its password masked."""
    if not is_database_url(location):
        return str(location)
    parts = urlsplit(str(location))
    netloc = parts.netloc
    if parts.password is not None:
        credentials, _, host = netloc.rpartition("@")
        netloc = f"{credentials.partition(':')[0]}:***@{host}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else f"{name}={value}" if value else name
        for name, _, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redacted(text: str, location: Path | str) -> str:
    """``text`` (an error message, say) with the password of a database URL masked wherever it
    appears: a driver may quote the URL it could not use."""
    if not is_database_url(location):
        return text
    parts = urlsplit(str(location))
    secrets = {parts.password, *(value for name, _, value in (item.partition("=") for item in parts.query.split("&"))
                                 if name.lower() == "password")}
    for secret in secrets - {None, ""}:
        text = text.replace(secret, "***").replace(unquote(secret), "***")  # type: ignore[arg-type]
    return text


def open_store(location: Path | str, signer: ChainSigner | None = None) -> ChainedStore:
    """The store at ``location``: a PostgreSQL database for a ``postgresql://`` URL, else the
    SQLite file at that path (both created if missing)."""
    if is_database_url(location):
        from pectus.events.postgres import PostgreSQLEventStore

        return PostgreSQLEventStore(str(location), signer)
    return SQLiteEventStore(Path(location), signer)


def open_chain(location: Path | str) -> contextlib.AbstractContextManager[Chain]:
    """A read-only view of the store at ``location`` (raising one of :func:`_errors_of`)."""
    if is_database_url(location):
        from pectus.events.postgres import database_chain

        return database_chain(str(location))
    return _sqlite_chain(Path(location))


def _errors_of(location: Path | str) -> tuple[type[Exception], ...]:
    if is_database_url(location):
        from pectus.events.postgres import READ_ERRORS

        return READ_ERRORS
    return _SQLiteChain.errors


def _read_only(path: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True))


def _signature_problem(
    signature: ChainSignature, position: int, event_hash: str, keys: Mapping[str, PublicKey]
) -> str:
    """The problem with the signature on the event at ``position``, or "" when it vouches for it."""
    key = keys.get(signature.key)
    if key is None:
        return (f"event {position} is signed by key {signature.key}, which is none of the public keys given: "
                "a forgery, or the public key of a key used earlier is missing")
    if signature.hash != event_hash:
        return (f"the signature on event {position} is for another event: the chain was rewritten at or "
                f"before event {position}")
    if not isinstance(signature.signature, bytes) or not key.verify(position, event_hash, signature.signature):
        return f"the signature on event {position} is not valid: it was forged or changed"
    return ""


def _unsigned(first: int, last: int) -> str:
    events = f"event {first} is" if first == last else f"events {first}-{last} are"
    return f"{events} not signed: appended without the aggregator's key"


def _cut_off(signed: int, last: int) -> str:
    return f"a signature names event {signed}, but the store ends at event {last}: events were cut off the end"


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
