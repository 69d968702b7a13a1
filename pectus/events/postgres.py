"""The event store in PostgreSQL: the same log, chain and promises as the SQLite file, for a site
that outgrows one machine's disk or runs PostgreSQL already.

:class:`PostgreSQLEventStore` is a :class:`~pectus.events.store.ChainedStore` on ``eventsourcing``'s
PostgreSQL application recorder (psycopg 3): the same sealing, positions and stream versions, the
same ``pectus_events`` table (``notification_id`` is the position) and ``pectus_chain_signatures``
table, the same :func:`~pectus.events.store.verify`. What differs, and why:

* **Positions are given, not drawn from the sequence.** A PostgreSQL sequence is not gap-free: a
  rolled-back insert consumes its numbers. So the store inserts each event at the position it
  hashed it for (``notification_id`` explicitly), and the ``bigserial`` default is never used.
* **One writer at a time: a transaction-level advisory lock.** An append - one statement, the
  function ``pectus_append`` - takes ``pg_advisory_xact_lock(APPEND_LOCK)``, then reads the last
  position and inserts the batch only if it is the one the batch was hashed after; otherwise
  another writer appended meanwhile: :class:`StoreConflict`, and nothing is written. The lock is
  released by the commit or rollback, so a crashed writer never holds it. The recorder's own
  ``LOCK TABLE ... IN EXCLUSIVE MODE`` would do the same, but PostgreSQL grants that lock only to
  roles that may UPDATE, DELETE or TRUNCATE the table, which the aggregator's role must not; an
  advisory lock needs no privilege. Readers are never blocked. A writer waits at most
  ``LOCK_TIMEOUT`` for another's transaction, then gets :class:`StoreConflict`.
* **Append-only, in the database, twice over.** Triggers refuse every ``UPDATE`` (also an
  ``INSERT ... ON CONFLICT DO UPDATE``), ``DELETE`` and ``TRUNCATE`` on both tables, whoever
  types them, and refuse an insert whose events do not go, without holes, at the next positions
  (signatures: after the last one). A duplicate position or stream version is refused by the
  unique indexes. And where the deployment sets roles up (docs/operations.md), the aggregator's
  role holds only SELECT and INSERT: it cannot UPDATE, DELETE, TRUNCATE, nor drop or disable the
  triggers (only the tables' owner or a superuser can, and that is what the chain and its
  signatures make evident).

The tables are created, with their triggers, when the database has none yet (by whatever role
connects first: the owner, in a deployment with roles); a store whose tables exist runs no DDL,
so the aggregator's role needs no CREATE privilege.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from pectus.events.signing import ChainSigner
from pectus.events.store import (
    APPEND_ONLY,
    EVENTS_TABLE,
    SIGNATURES_TABLE,
    Chain,
    ChainedStore,
    ChainSignature,
    StoreConflict,
    redacted,
    shown,
)

__all__ = ["APPEND_LOCK", "READ_ERRORS", "PostgreSQLEventStore", "StoreNotEmpty", "database_chain"]

READ_ERRORS: tuple[type[Exception], ...] = (psycopg.Error,)  # a Chain reads with psycopg directly
# The advisory lock key of appends, the same for every Pectus store (locks are per database):
# the first 8 bytes of SHA-256("pectus:append"), as PostgreSQL's signed bigint.
APPEND_LOCK = int.from_bytes(hashlib.sha256(b"pectus:append").digest()[:8], "big", signed=True)
LOCK_TIMEOUT = "10s"
CONNECT_TIMEOUT = 10  # seconds to connect, or to wait for a connection of the pool
SCHEMA = "public"

_EVENTS = f"{SCHEMA}.{EVENTS_TABLE}"
_SIGNATURES = f"{SCHEMA}.{SIGNATURES_TABLE}"
Row = tuple[int, str, int, str, bytes]  # position, originator_id, originator_version, topic, state


class StoreNotEmpty(ValueError):
    """A copy into a store that already holds events (nothing was copied)."""


def _refusal(table: str, name: str, when: str, reason: str) -> str:
    return (f"CREATE TRIGGER {table}_{name} {when} ON {SCHEMA}.{table} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {SCHEMA}.pectus_append_only('{APPEND_ONLY}: {reason}')")


def _append_only(table: str, noun: str, in_order: str) -> list[str]:
    """Triggers that keep ``table`` append-only: no UPDATE, DELETE or TRUNCATE statement (each
    refused before it touches a row, also when it would touch none), and - ``in_order``, a
    function run once per INSERT statement over the rows it inserted - nothing out of order."""
    return [
        _refusal(table, "no_update", "BEFORE UPDATE", f"no {noun} is changed"),
        _refusal(table, "no_delete", "BEFORE DELETE", f"no {noun} is removed"),
        _refusal(table, "no_truncate", "BEFORE TRUNCATE", f"no {noun} is removed"),
        f"CREATE TRIGGER {table}_in_order AFTER INSERT ON {SCHEMA}.{table} REFERENCING NEW TABLE AS inserted "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.{in_order}()",
    ]


def _function(name: str, condition: str, reason: str, declare: str = "", compute: str = "") -> str:
    return (f"CREATE OR REPLACE FUNCTION {SCHEMA}.{name}() RETURNS trigger LANGUAGE plpgsql AS $body$ "
            f"{declare} BEGIN {compute} IF {condition} THEN RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', "
            f"MESSAGE = '{APPEND_ONLY}: {reason}'; END IF; RETURN NULL; END $body$")


_SCHEMA_STATEMENTS = [
    # The message comes as the trigger's argument: one function for every refusal.
    f"CREATE OR REPLACE FUNCTION {SCHEMA}.pectus_append_only() RETURNS trigger LANGUAGE plpgsql AS $body$ "
    "BEGIN RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', MESSAGE = TG_ARGV[0]; END $body$",
    # The inserted events are consecutive, follow the last event before them, and nothing is after
    # them: each check is an index lookup or a pass over the inserted rows, never a scan.
    _function(
        "pectus_events_in_order",
        f"n > 0 AND (last - first + 1 <> n OR (first <> 1 AND NOT EXISTS (SELECT 1 FROM {_EVENTS} "
        f"WHERE notification_id = first - 1)) OR EXISTS (SELECT 1 FROM {_EVENTS} WHERE notification_id > last))",
        "a new event goes at the next position",
        declare="DECLARE first bigint; last bigint; n bigint;",
        compute="SELECT min(notification_id), max(notification_id), count(*) INTO first, last, n FROM inserted;",
    ),
    # Signatures go in ascending positions (gaps are normal: one per batch).
    _function(
        "pectus_signatures_in_order",
        f"EXISTS (SELECT 1 FROM {_SIGNATURES} WHERE position > (SELECT min(position) FROM inserted) "
        "AND position NOT IN (SELECT position FROM inserted))",
        "a new signature goes at the next position",
    ),
    *_append_only(EVENTS_TABLE, "event", "pectus_events_in_order"),
    # An append, in one statement: the lock, then - each statement of a volatile function sees
    # what was committed before it began, so every append committed before the lock was granted -
    # where the store ends, and the events, their signature and the notice (for eventsourcing's
    # LISTEN subscribers) only if it ends where the batch was hashed after. Returns where it ends.
    f"""CREATE OR REPLACE FUNCTION {SCHEMA}.pectus_append(after bigint, lock_key bigint, lock_timeout text,
        event_positions bigint[], originators text[], versions bigint[], topics text[], states bytea[],
        signed bigint[], hashes text[], keys text[], signatures bytea[]) RETURNS bigint
    LANGUAGE plpgsql VOLATILE AS $body$
    #variable_conflict use_column
    DECLARE found bigint;
    BEGIN
        PERFORM set_config('lock_timeout', lock_timeout, true);
        PERFORM pg_advisory_xact_lock(lock_key);
        SELECT COALESCE(MAX(notification_id), 0) INTO found FROM {_EVENTS};
        IF found = after THEN
            INSERT INTO {_EVENTS} (notification_id, originator_id, originator_version, topic, state)
                SELECT * FROM unnest(event_positions, originators, versions, topics, states);
            INSERT INTO {_SIGNATURES} (position, hash, key, signature)
                SELECT * FROM unnest(signed, hashes, keys, signatures);
            PERFORM pg_notify('{EVENTS_TABLE}', '');
        END IF;
        RETURN found;
    END $body$""",
    f"CREATE TABLE IF NOT EXISTS {_SIGNATURES} (position bigint PRIMARY KEY, hash text NOT NULL, "
    "key text NOT NULL, signature bytea NOT NULL)",
    *_append_only(SIGNATURES_TABLE, "signature", "pectus_signatures_in_order"),
]


class _ChainedPostgreSQLRecorder(PostgresApplicationRecorder):
    """The PostgreSQL application recorder, plus the append-only triggers, the signatures table,
    and appends at given positions under the append lock (see the module's docstring)."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        super().__init__(datastore, events_table_name=EVENTS_TABLE)
        self.sql_create_statements += [SQL(statement) for statement in _SCHEMA_STATEMENTS]  # type: ignore[arg-type]

    def insert_chained(self, rows: list[Row], signature: ChainSignature | None) -> None:
        """Inserts the events at their positions, and the signature, in one transaction; raises
        :class:`StoreConflict` (nothing written) when the store does not end just before them.

        One statement, ``pectus_append``, with its values sent in binary: one message to the server
        and one answer. The writer is a thread of a busy process, and each wait for the server costs
        it the interpreter's lock again (a statement at a time, an append waited 14 times)."""
        after = rows[0][0] - 1
        signatures = [signature] if signature is not None else []
        with self._guarded(), self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(_APPEND, [after, APPEND_LOCK, LOCK_TIMEOUT, *map(list, zip(*rows)), *_columns(signatures)])
            last = curs.fetchone()["last"]  # type: ignore[index]
        if last != after:
            raise StoreConflict(f"another writer appended to the store: the batch hashed for position {after + 1} "
                                f"finds the store ending at {last}; nothing was written")

    def copy(self, rows: Iterable[Row], signatures: Iterable[ChainSignature], batch: int) -> int:
        """Copies a whole store's rows and signatures, as they are, into this empty store, in one
        transaction; returns the number of events. Raises :class:`StoreNotEmpty` (nothing copied)
        when it holds events or signatures already."""
        with self._appending() as curs:
            held = self._last(curs)
            curs.execute(f"SELECT count(*) AS signed FROM {_SIGNATURES}")
            signed = curs.fetchone()["signed"]  # type: ignore[index]
            if held or signed:
                raise StoreNotEmpty(f"the target store is not empty: it holds {held} events and {signed} "
                                    "signatures; migrate copies into an empty store only, and nothing was copied")
            count = 0
            for chunk in _chunks(rows, batch):
                _insert_rows(curs, chunk)
                count += len(chunk)
            for chunk in _chunks(signatures, batch):
                _insert_signatures(curs, chunk)
            self._notify_channel(curs)
        return count

    @contextlib.contextmanager
    def _appending(self) -> Iterator[psycopg.Cursor[Any]]:
        """A write transaction holding the append lock, rolled back on any error."""
        with self._guarded(), self.datastore.transaction(commit=True) as curs:
            _take_append_lock(curs)
            yield curs

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """Waiting too long for the append lock is a conflict with the writer that holds it."""
        try:
            yield
        except OperationalError as error:
            if isinstance(error.__cause__, psycopg.errors.LockNotAvailable):
                raise StoreConflict(f"another writer has held the store's append lock for {LOCK_TIMEOUT}; "
                                    "nothing was written") from error
            raise

    def _last(self, curs: psycopg.Cursor[Any]) -> int:
        # A statement of its own, after the lock: in READ COMMITTED it sees every append committed
        # before the lock was granted.
        curs.execute(f"SELECT COALESCE(MAX(notification_id), 0) AS last FROM {_EVENTS}")
        return curs.fetchone()["last"]  # type: ignore[index]


def _take_append_lock(curs: psycopg.Cursor[Any]) -> None:
    curs.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    curs.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))


_APPEND = (f"SELECT {SCHEMA}.pectus_append(%b::bigint, %b::bigint, %b::text, %b::bigint[], %b::text[], "
           "%b::bigint[], %b::text[], %b::bytea[], %b::bigint[], %b::text[], %b::text[], %b::bytea[]) AS last")


def _columns(signatures: Sequence[ChainSignature]) -> list[list[Any]]:
    return [[s.position for s in signatures], [s.hash for s in signatures], [s.key for s in signatures],
            [s.signature for s in signatures]]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _insert_rows(curs: psycopg.Cursor[Any], rows: Iterable[Row]) -> None:
    # COPY in binary: of the ways to send a batch, the cheapest for the client and the server (a
    # third of the time of INSERT ... unnest with text arrays); it fires the same triggers.
    with curs.copy(f"COPY {_EVENTS} (notification_id, originator_id, originator_version, topic, state) "
                   "FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "text", "int8", "text", "bytea"])
        for row in rows:
            copy.write_row(row)


def _insert_signatures(curs: psycopg.Cursor[Any], signatures: Sequence[ChainSignature]) -> None:
    curs.execute(f"INSERT INTO {_SIGNATURES} (position, hash, key, signature) "
                 "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bytea[])", _columns(signatures))


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT)


class PostgreSQLEventStore(ChainedStore):
    """The log in a PostgreSQL database, given by its URL (``postgresql://user:password@host/db``,
    any libpq URL parameter allowed); the tables are created if missing. A password in the URL is
    never shown: messages and logs use :func:`~pectus.events.store.shown`."""

    _read_errors = READ_ERRORS

    def __init__(self, url: str, signer: ChainSigner | None = None) -> None:
        self.url = url
        try:  # a wrong URL or password is told now, and plainly (the pool would only time out)
            with _connect(url) as conn:
                (exists,) = conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL", (_EVENTS, _SIGNATURES)
                ).fetchone()  # type: ignore[misc]
        except psycopg.Error as error:
            raise ConnectionError(f"cannot connect to the event store {shown(url)}: "
                                  f"{redacted(str(error).strip(), url)}") from None
        params = conninfo_to_dict(url)
        self._datastore = PostgresDatastore(
            dbname=params.pop("dbname", None), host=params.pop("host", None), port=params.pop("port", None),
            user=params.pop("user", None), password=params.pop("password", None),  # type: ignore[arg-type]
            originator_id_type="text",  # as in the SQLite file: uuid hex, handed back as it is
            # One writer, and readers (the start-up replay, exports, /health) beside it.
            pool_size=2, max_overflow=6, connect_timeout=CONNECT_TIMEOUT,
            # A connection is checked before use: after a database restart or failover, the first
            # append gets a fresh connection instead of failing on a dead one.
            pre_ping=True,
        )
        self._datastore.pool.kwargs.update(params)  # sslmode, application_name, ...: as the URL says
        recorder = _ChainedPostgreSQLRecorder(self._datastore)
        if not exists:
            try:
                recorder.create_table()
            except PersistenceError as error:
                self._datastore.close()
                raise PermissionError(
                    f"cannot create the event store's tables in {shown(url)}: {redacted(str(error), url)}. "
                    "Create them once as the "
                    "database's owner, then grant the aggregator's role SELECT and INSERT (docs/operations.md)"
                ) from None
        super().__init__(recorder, signer)

    @property
    def location(self) -> str:
        """Where the store is: what :func:`~pectus.events.store.verify` takes."""
        return self.url

    def _insert(
        self, stored: list[StoredEvent], first_position: int, signature: ChainSignature | None
    ) -> None:
        rows = [(first_position + i, str(e.originator_id), e.originator_version, e.topic, e.state)
                for i, e in enumerate(stored)]
        try:
            self._recorder.insert_chained(rows, signature)  # type: ignore[attr-defined]
        except (OperationalError, InterfaceError) as error:  # the server is away: say which
            raise type(error)(f"cannot reach the event store's database {shown(self.url)}: "
                              f"{redacted(str(error), self.url)}") from error

    def _select_states(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        with self._datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row, binary=True) as c:
            c.execute(f"SELECT notification_id, state FROM {_EVENTS} WHERE notification_id > %s "
                      "ORDER BY notification_id LIMIT %s", (after, limit), prepare=True)
            return c.fetchall()

    def _chain(self) -> contextlib.AbstractContextManager[Chain]:
        return database_chain(self.url)

    def grant(self, role: str) -> None:
        """Lets ``role`` (the aggregator's) read and append, and nothing more: whatever it held on
        the tables is revoked, then it gets USAGE on their schema, SELECT and INSERT on both, and
        EXECUTE on ``pectus_append`` (which runs with its caller's privileges). Run by the tables'
        owner (or a superuser)."""
        statements = ["REVOKE ALL ON {events}, {signatures} FROM {role}", "GRANT USAGE ON SCHEMA {schema} TO {role}",
                      "GRANT SELECT, INSERT ON {events}, {signatures} TO {role}",
                      "GRANT EXECUTE ON FUNCTION {append} TO {role}"]
        names = {"events": Identifier(SCHEMA, EVENTS_TABLE), "signatures": Identifier(SCHEMA, SIGNATURES_TABLE),
                 "schema": Identifier(SCHEMA), "role": Identifier(role), "append": Identifier(SCHEMA, "pectus_append")}
        with self._datastore.transaction(commit=True) as curs:
            for statement in statements:
                curs.execute(SQL(statement).format(**names))  # type: ignore[arg-type]

    def copy_from(self, chain: Chain, batch: int = 5000) -> int:
        """Copies every event and signature of another store's chain into this one, byte for byte
        and at the same positions, in one transaction; returns the number of events. The store must
        be empty (:class:`StoreNotEmpty` otherwise, nothing copied); a source with a hole or a
        moved event is refused by the triggers (nothing copied). Check the copy with verify."""
        count = self._recorder.copy(chain.rows(0), chain.signatures(0), batch)  # type: ignore[attr-defined]
        self.refresh()
        return count

    def close(self) -> None:
        self._datastore.close()


class _DatabaseChain:
    """The rows of a store database, in one read-only REPEATABLE READ snapshot, streamed through
    server-side cursors (verify's memory stays flat whatever the log's length)."""

    errors = READ_ERRORS

    def __init__(self, conn: psycopg.Connection[Any], name: str) -> None:
        self._conn = conn
        self.name = name

    def has_events(self) -> bool:
        return self._exists(_EVENTS)

    def last(self) -> int:
        return self._one(f"SELECT COALESCE(MAX(notification_id), 0) FROM {_EVENTS}")[0]

    def rows(self, after: int) -> Iterator[tuple[object, object, object, object, object]]:
        return self._stream("pectus_chain_rows", "SELECT notification_id, originator_id, originator_version, topic, "
                            f"state FROM {_EVENTS} WHERE notification_id > %s ORDER BY notification_id", after)

    def state(self, position: int) -> object:
        row = self._conn.execute(f"SELECT state FROM {_EVENTS} WHERE notification_id = %s", (position,),
                                 binary=True).fetchone()
        return row[0] if row else None

    def signatures(self, after: int) -> Iterator[ChainSignature]:
        if not self._exists(_SIGNATURES):
            return iter(())
        rows = self._stream("pectus_chain_signatures", "SELECT position, hash, key, signature "
                            f"FROM {_SIGNATURES} WHERE position > %s ORDER BY position", after)
        return (ChainSignature(*row) for row in rows)

    def newest_signature(self) -> ChainSignature | None:
        if not self._exists(_SIGNATURES):
            return None
        row = self._conn.execute(f"SELECT position, hash, key, signature FROM {_SIGNATURES} "
                                 "ORDER BY position DESC LIMIT 1", binary=True).fetchone()
        return ChainSignature(*row) if row else None

    def _exists(self, table: str) -> bool:
        return self._one("SELECT to_regclass(%s) IS NOT NULL", table)[0]

    def _one(self, query: str, *params: object) -> tuple[Any, ...]:
        return self._conn.execute(query, params).fetchone()  # type: ignore[return-value]

    def _stream(self, name: str, query: str, after: int) -> Iterator[tuple[Any, ...]]:
        cursor = self._conn.cursor(name, binary=True)
        cursor.itersize = 5000
        cursor.execute(query, (after,))
        return iter(cursor)


@contextlib.contextmanager
def database_chain(url: str) -> Iterator[Chain]:
    """A read-only view of the store database at ``url``: one snapshot, closed on exit."""
    with _connect(url) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        yield _DatabaseChain(conn, shown(url))

