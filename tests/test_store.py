"""The event store: one suite every backend passes - in memory, the SQLite file, PostgreSQL - then
what only one of them has (SQLite: WAL, INSERT OR REPLACE, online backup, damaged files;
PostgreSQL: roles, URLs and passwords, the append lock).

The suite runs each test once per backend (``[memory]``, ``[sqlite]``, ``[postgresql]``); the
durable backends also pass the database-level checks: SQL typed by hand - an UPDATE, a DELETE, an
INSERT out of order - is refused by the database itself, and what a tamperer does with the
append-only triggers out of the way is found by verify. PostgreSQL is a real, throwaway server
(tests/postgres.py).

Hashes are recomputed here from the documented encoding, not with the store's own code, so the
tests pin the stored format down as well as the behaviour.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import PersistenceError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgres import PostgreSQLServer

from pectus.events import postgres as pg
from pectus.events.postgres import PostgreSQLEventStore
from pectus.events.signing import ChainSigner, load_or_create_signer
from pectus.events.store import (
    EVENTS_TABLE,
    GENESIS_HASH,
    SIGNATURES_TABLE,
    ChainedStore,
    MemoryEventStore,
    NewEvent,
    Record,
    SQLiteEventStore,
    StoreConflict,
    backup,
    read_store,
    redacted,
    shown,
    stream_id,
    verify,
)


def canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def expected_hash(r: Record) -> str:
    fields = {
        "position": r.position,
        "stream": r.stream,
        "stream_version": r.stream_version,
        "type": r.type,
        "time": r.time,
        "data": r.data,
        "prev_hash": r.prev_hash,
    }
    return hashlib.sha256(canonical(fields)).hexdigest()


def assert_valid_chain(records: list[Record]) -> None:
    prev = GENESIS_HASH
    for position, r in enumerate(records, start=1):
        assert r.position == position
        assert r.prev_hash == prev
        assert r.hash == expected_hash(r)
        prev = r.hash


def sample(n: int, stream: str = "unit:host_DemoUod", start: int = 0) -> list[NewEvent]:
    return [
        NewEvent(stream, "TagSample", 1.7e9 + i, {"tag": "PU01", "value": i * 0.5, "unit": "%"})
        for i in range(start, start + n)
    ]


def sealed(position: int, prev_hash: str, stream: str = "aggregator", version: int = 99) -> bytes:
    """A correctly hashed and linked event, as anyone with the code can make one: its stored state."""
    body = canonical({"position": position, "stream": stream, "stream_version": version, "type": "ControlAction",
                      "time": 0.0, "data": {"user": "mallory", "command": "Stop"}, "prev_hash": prev_hash})
    return body[:-1] + f',"hash":"{hashlib.sha256(body).hexdigest()}"}}'.encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
new_events = st.builds(
    NewEvent,
    stream=st.sampled_from(["aggregator", "unit:host_DemoUod", "unit:lab_Äkta"]),
    type=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12),
    time=st.floats(allow_nan=False, allow_infinity=False),
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
)


# --- the backends -------------------------------------------------------------------------------


class ByHand:
    """A connection to a store's database as someone typing SQL has it (autocommit). Statements
    are written once for both databases: ``?`` for a parameter, ``{pos}`` for the position column."""

    def __init__(self, connection: Any, placeholder: str, position: str, refused: tuple[type[Exception], ...]) -> None:
        self.connection = connection
        self.placeholder = placeholder
        self.position = position
        self.refused = refused  # what the database raises when it refuses a statement

    def run(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cursor = self.connection.execute(statement.replace("?", self.placeholder).replace("{pos}", self.position),
                                         params)
        return cursor.fetchall() if cursor.description else []

    def state(self, position: int) -> bytes:
        return bytes(self.run(f"SELECT state FROM {EVENTS_TABLE} WHERE {{pos}} = ?", (position,))[0][0])


class Backend:
    """How the suite makes a store of one kind, and reaches its database by hand."""

    name = ""

    def new(self, signer: ChainSigner | None = None) -> contextlib.AbstractContextManager[ChainedStore]:
        """A new, empty store, closed (and removed) afterwards."""
        raise NotImplementedError

    def open(self, location: Path | str, signer: ChainSigner | None = None) -> ChainedStore:
        """Another handle on the store at ``location``, as another process opens it."""
        raise NotImplementedError

    def by_hand(self, store: ChainedStore) -> contextlib.AbstractContextManager[ByHand]:
        """Hand-typed SQL on the store's database, its append-only triggers in force."""
        raise NotImplementedError

    def tampered(self, store: ChainedStore) -> contextlib.AbstractContextManager[tuple[Path | str, ByHand]]:
        """Hand-typed SQL with the append-only triggers out of the way, as a tamperer with the
        file or the database's superuser has it; and the location verify then reads."""
        raise NotImplementedError


class MemoryBackend(Backend):
    name = "memory"

    @contextlib.contextmanager
    def new(self, signer: ChainSigner | None = None) -> Iterator[ChainedStore]:
        yield MemoryEventStore(signer)


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    @contextlib.contextmanager
    def new(self, signer: ChainSigner | None = None) -> Iterator[ChainedStore]:
        self.count += 1
        store = SQLiteEventStore(self.directory / f"store-{self.count}.sqlite3", signer)
        try:
            yield store
        finally:
            store.close()

    def open(self, location: Path | str, signer: ChainSigner | None = None) -> ChainedStore:
        return SQLiteEventStore(Path(location), signer)

    @contextlib.contextmanager
    def by_hand(self, store: ChainedStore) -> Iterator[ByHand]:
        with raw(Path(store.location)) as db:
            yield ByHand(db, "?", "rowid", (sqlite3.DatabaseError,))

    @contextlib.contextmanager
    def tampered(self, store: ChainedStore) -> Iterator[tuple[Path | str, ByHand]]:
        """A copy of the file with the triggers dropped (the original stays as it was)."""
        copy = self.directory / f"tampered-{self.count}.sqlite3"
        backup(store, copy)  # type: ignore[arg-type]
        with raw(copy) as db:
            triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
            assert len(triggers) == 8  # four on each table: update, delete, replace, next position
            for (name,) in triggers:
                db.execute(f"DROP TRIGGER {name}")
            yield copy, ByHand(db, "?", "rowid", (sqlite3.DatabaseError,))


class PostgreSQLBackend(Backend):
    name = "postgresql"

    def __init__(self, server: PostgreSQLServer) -> None:
        self.server = server

    @contextlib.contextmanager
    def new(self, signer: ChainSigner | None = None) -> Iterator[ChainedStore]:
        with self.server.database() as url:
            store = PostgreSQLEventStore(url, signer)
            try:
                yield store
            finally:
                store.close()

    def open(self, location: Path | str, signer: ChainSigner | None = None) -> ChainedStore:
        return PostgreSQLEventStore(str(location), signer)

    @contextlib.contextmanager
    def by_hand(self, store: ChainedStore) -> Iterator[ByHand]:
        with psycopg.connect(str(store.location), autocommit=True) as db:
            yield ByHand(db, "%s", "notification_id", (psycopg.Error,))

    @contextlib.contextmanager
    def tampered(self, store: ChainedStore) -> Iterator[tuple[Path | str, ByHand]]:
        """The superuser's session with triggers off (session_replication_role = replica), on the
        store itself: what the superuser can do, and the aggregator's role cannot."""
        with self.by_hand(store) as db:
            db.run("SET session_replication_role = replica")
            yield store.location, db


def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgresql":
        return PostgreSQLBackend(request.getfixturevalue("postgresql_server"))
    return SQLiteBackend(tmp_path) if request.param == "sqlite" else MemoryBackend()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request, tmp_path)


@pytest.fixture
def store(backend: Backend) -> Iterator[ChainedStore]:
    with backend.new() as store:
        yield store


@pytest.fixture
def kept(durable: Backend, signer: ChainSigner) -> Iterator[ChainedStore]:
    """A durable, signed store of 12 events: two batches of five samples and a tick."""
    with durable.new(signer) as store:
        for start in range(0, 10, 5):
            store.append(sample(5, start=start) + [NewEvent("aggregator", "Tick", float(start), {"n": start})])
        yield store


@pytest.fixture
def signer(tmp_path: Path) -> ChainSigner:
    return load_or_create_signer(tmp_path / "keys" / "chain-signing.key")


def raw(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A plain sqlite3 connection in autocommit mode, closed on exit."""
    return contextlib.closing(sqlite3.connect(path, isolation_level=None))


# --- what every backend promises ----------------------------------------------------------------


def test_a_new_store_is_empty(store: ChainedStore) -> None:
    assert store.last_position() == 0
    assert store.read() == []
    assert list(store.iter()) == []
    assert store.append([]) == []
    assert store.check_tail() == "" and store.signatures() == []


def test_positions_are_global_and_stream_versions_per_stream(store: ChainedStore) -> None:
    first = store.append(
        [
            NewEvent("aggregator", "EngineRegistered", 1.0, {"engine": "host_DemoUod"}),
            NewEvent("unit:host_DemoUod", "RunStarted", 2.0, {"run": "r1"}),
        ]
    )
    second = store.append(
        [
            NewEvent("unit:host_DemoUod", "RunStopped", 3.0, {"run": "r1"}),
            NewEvent("aggregator", "EngineDisconnected", 4.0, {}),
            NewEvent("unit:host_DemoUod", "RunStarted", 5.0, {"run": "r2"}),
        ]
    )
    got = [(r.position, r.stream, r.stream_version, r.type) for r in first + second]
    assert got == [
        (1, "aggregator", 1, "EngineRegistered"),
        (2, "unit:host_DemoUod", 1, "RunStarted"),
        (3, "unit:host_DemoUod", 2, "RunStopped"),
        (4, "aggregator", 2, "EngineDisconnected"),
        (5, "unit:host_DemoUod", 3, "RunStarted"),
    ]
    assert store.last_position() == 5
    assert store.read() == first + second
    assert_valid_chain(store.read())


def test_data_round_trips_exactly(store: ChainedStore) -> None:
    data = {
        "floats": [0.1, 1e-300, 1.7976931348623157e308, -2.5, 1 / 3, math.inf, -math.inf],
        "ints": [0, -1, 2**70],
        "text": "µS/cm · 日本語 · 🧪 · \"quoted\" \\ \n tab\t",
        "nested": {"a": [{"b": None, "c": True}], "": {"ü": []}},
    }
    (appended,) = store.append([NewEvent("unit:ü", "Ünit", 1_700_000_000.123456, data)])
    (read,) = store.read()
    assert read == appended
    assert read.data == data
    assert read.time == 1_700_000_000.123456
    assert read.stream == "unit:ü"


def test_append_returns_what_read_returns(store: ChainedStore) -> None:
    appended = store.append([NewEvent("aggregator", "T", 0.0, {"pair": (1, 2)})])
    assert appended == store.read()
    assert appended[0].data == {"pair": [1, 2]}  # JSON has no tuples: replay must see the same


def test_read_after_and_limit(store: ChainedStore) -> None:
    store.append(sample(10))
    assert [r.position for r in store.read(after=7)] == [8, 9, 10]
    assert [r.position for r in store.read(after=2, limit=3)] == [3, 4, 5]
    assert store.read(after=10) == []
    assert store.read(limit=0) == []


def test_iter_streams_in_batches(store: ChainedStore) -> None:
    for start in range(0, 25, 5):
        store.append(sample(5, start=start))
    assert [r.position for r in store.iter(after=3, batch=4)] == list(range(4, 26))
    assert list(store.iter(batch=5)) == store.read()
    assert list(store.iter(after=25)) == []


def test_a_batch_is_all_or_nothing(store: ChainedStore) -> None:
    store.append(sample(3))
    bad = sample(2, start=3) + [NewEvent("unit:host_DemoUod", "Oops", 0.0, {"x": object()})]
    with pytest.raises(TypeError):
        store.append(bad)
    assert store.last_position() == 3
    assert len(store.read()) == 3
    more = store.append(sample(2, start=3))
    assert [(r.position, r.stream_version) for r in more] == [(4, 4), (5, 5)]
    assert_valid_chain(store.read())


def test_a_type_with_a_nul_character_is_refused_and_nothing_of_its_batch_is_written(store: ChainedStore) -> None:
    store.append(sample(2))
    with pytest.raises(ValueError, match="holds a NUL character"):
        store.append(sample(2, start=2) + [NewEvent("aggregator", "Run\x00Started", 0.0, {})])
    assert [r.position for r in store.read()] == [1, 2]
    assert store.append(sample(1, start=2))[0].position == 3


def test_each_batch_signs_its_last_event_and_the_tail_check_passes(backend: Backend, signer: ChainSigner) -> None:
    with backend.new(signer) as store:
        records = store.append(sample(3)) + store.append(sample(2, start=3))
        with pytest.raises(TypeError):  # a batch that cannot be encoded: no events, no signature
            store.append([NewEvent("aggregator", "Oops", 0.0, {"x": object()})])
        assert [(s.position, s.hash, s.key) for s in store.signatures()] == [
            (3, records[2].hash, signer.fingerprint), (5, records[4].hash, signer.fingerprint)]
        assert all(signer.public.verify(s.position, s.hash, s.signature) for s in store.signatures())
        assert store.check_tail() == "" and store.broken == ""


# One property, run once per backend: "differing executors" is the point here, and an example saved
# by one backend is a fair test for the others. Each example gets a new store from the backend.
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors,
                                                  HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(new_events, min_size=1, max_size=8), max_size=5))
def test_any_batches_read_back_identically_with_a_valid_chain(backend: Backend, batches: list[list[NewEvent]]) -> None:
    with backend.new() as store:
        appended = [r for batch in batches for r in store.append(batch)]
        written = [e for batch in batches for e in batch]
        assert [(r.stream, r.type, r.time, r.data) for r in appended] == [
            (e.stream, e.type, e.time, e.data) for e in written
        ]
        versions: dict[str, int] = {}
        for r in appended:
            versions[r.stream] = versions.get(r.stream, 0) + 1
            assert r.stream_version == versions[r.stream]
        assert store.read() == appended
        assert list(store.iter(batch=3)) == appended
        assert_valid_chain(appended)
        assert store.check_tail() == ""


# --- what every durable backend promises ------------------------------------------------------


def test_reopening_keeps_everything_and_continues_the_chain(durable: Backend) -> None:
    with durable.new() as store:
        before = store.append(sample(3) + [NewEvent("aggregator", "A", 1.0, {})])
        again = durable.open(store.location)
        assert again.read() == before
        after = again.append(sample(2, start=3) + [NewEvent("aggregator", "B", 2.0, {})])
        assert [(r.position, r.stream_version) for r in after] == [(5, 4), (6, 5), (7, 2)]
        assert after[0].prev_hash == before[-1].hash
        assert_valid_chain(again.read())
        again.close()
        assert verify(store.location).ok
        assert list(read_store(store.location)) == before + after


def test_hand_typed_update_delete_and_truncate_are_refused(kept: ChainedStore, durable: Backend) -> None:
    before = kept.read()
    with durable.by_hand(kept) as db:
        for statement, words in [
            (f"UPDATE {EVENTS_TABLE} SET topic = 'Forged' WHERE {{pos}} = 2", "no event is changed"),
            (f"DELETE FROM {EVENTS_TABLE} WHERE {{pos}} = 3", "no event is removed"),
            (f"DELETE FROM {EVENTS_TABLE}", "no event is removed"),  # SQLite's TRUNCATE
            (f"UPDATE {SIGNATURES_TABLE} SET key = 'mine'", "no signature is changed"),
            (f"DELETE FROM {SIGNATURES_TABLE}", "no signature is removed"),
        ]:
            with pytest.raises(db.refused, match=f"Pectus event store is append-only: {words}"):
                db.run(statement)
    assert kept.read() == before
    assert verify(kept.location).ok


@pytest.mark.parametrize("position", [14, 0, -1], ids=["a later gap", "before the first", "negative"])
def test_hand_typed_inserts_out_of_order_are_refused(kept: ChainedStore, durable: Backend, position: int) -> None:
    before = kept.read()
    with durable.by_hand(kept) as db:
        with pytest.raises(db.refused, match="Pectus event store is append-only: a new event goes at the next position"):
            db.run(f"INSERT INTO {EVENTS_TABLE} ({{pos}}, originator_id, originator_version, topic, state) "
                   "VALUES (?, 'x', 1, 'Forged', ?)", (position, b"\x00"))
        with pytest.raises(db.refused):  # a position taken: the unique index, or the trigger
            db.run(f"INSERT INTO {EVENTS_TABLE} ({{pos}}, originator_id, originator_version, topic, state) "
                   "VALUES (12, 'x', 1, 'Forged', ?)", (b"\x00",))
    assert kept.read() == before
    assert verify(kept.location).ok


def test_a_group_commit_of_1000_events_passes_the_triggers(durable: Backend) -> None:
    with durable.new() as store:
        for start in range(0, 3000, 1000):
            store.append(sample(1000, start=start))
        result = verify(store.location)
        assert (result.ok, result.checked) == (True, 3000)


def test_a_batch_and_its_signature_commit_together_or_not_at_all(durable: Backend, signer: ChainSigner) -> None:
    with durable.new(signer) as store:
        store.append(sample(3))
        # The signature cannot be written (a later one is already there): the events go with it.
        with durable.by_hand(store) as db:
            db.run(f"INSERT INTO {SIGNATURES_TABLE} (position, hash, key, signature) VALUES (1000, 'h', 'k', ?)",
                   (b"\x00",))
        with pytest.raises(PersistenceError, match="a new signature goes at the next position"):
            store.append(sample(2, start=3))
        assert store.last_position() == 3
        # The events cannot be written (another writer moved the tip): no signature is.
        other = durable.open(store.location)
        other.append(sample(1, start=10))
        with pytest.raises(StoreConflict):
            store.append(sample(2, start=3))
        assert [s.position for s in store.signatures()] == [3, 1000]
        other.close()


def test_a_second_writer_is_refused_not_interleaved(durable: Backend) -> None:
    with durable.new() as first:
        second = durable.open(first.location)
        first.append(sample(2))
        with pytest.raises(StoreConflict):
            second.append([NewEvent("aggregator", "Late", 0.0, {})])
        assert first.last_position() == 2
        (late,) = second.append([NewEvent("aggregator", "Late", 0.0, {})])  # a retry continues
        assert (late.position, late.stream_version) == (3, 1)
        second.close()
        assert verify(first.location).ok


def test_two_writers_appending_at_once_never_fork_the_chain(durable: Backend) -> None:
    """Each writer retries on StoreConflict, as the aggregator's writer does: every batch lands
    once, whole, and the chain stays one line."""
    with durable.new() as store:
        writers = [store, durable.open(store.location)]
        conflicts = [0, 0]

        def write(index: int) -> None:
            for n in range(30):
                batch = [NewEvent(f"unit:writer{index}", "N", float(n), {"n": n, "i": i}) for i in range(5)]
                while True:
                    try:
                        writers[index].append(batch)
                        break
                    except StoreConflict:
                        conflicts[index] += 1
                        writers[index].refresh()

        threads = [threading.Thread(target=write, args=(index,)) for index in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        writers[1].close()
        records = store.read()
        assert len(records) == 300
        assert_valid_chain(records)
        for index in (0, 1):  # each writer's batches, in its order, each whole
            mine = [(r.data["n"], r.data["i"]) for r in records if r.stream == f"unit:writer{index}"]
            assert mine == [(n, i) for n in range(30) for i in range(5)]
        assert verify(store.location).checked == 300


def flip_one_byte(db: ByHand) -> None:
    state = bytearray(db.state(5))
    state[len(state) // 3] ^= 0x01
    db.run(f"UPDATE {EVENTS_TABLE} SET state = ? WHERE {{pos}} = 5", (bytes(state),))


def delete_one(db: ByHand) -> None:
    db.run(f"DELETE FROM {EVENTS_TABLE} WHERE {{pos}} = 5")


def swap_a_pair(db: ByHand) -> None:
    db.run(f"UPDATE {EVENTS_TABLE} SET {{pos}} = -1 WHERE {{pos}} = 5")
    db.run(f"UPDATE {EVENTS_TABLE} SET {{pos}} = 5 WHERE {{pos}} = 6")
    db.run(f"UPDATE {EVENTS_TABLE} SET {{pos}} = 6 WHERE {{pos}} = -1")


def insert_a_forgery(db: ByHand) -> None:
    """Slips a well-forged event in after position 5: its own hash and link are right."""
    for position in range(12, 5, -1):  # make room, top down so positions never collide
        db.run(f"UPDATE {EVENTS_TABLE} SET {{pos}} = {{pos}} + 1 WHERE {{pos}} = ?", (position,))
    prev_hash = json.loads(db.state(5))["hash"]
    db.run(f"INSERT INTO {EVENTS_TABLE} ({{pos}}, originator_id, originator_version, topic, state) "
           "VALUES (6, ?, 99, 'ControlAction', ?)", (stream_id("aggregator"), sealed(6, prev_hash)))


def edit_a_column(db: ByHand) -> None:
    db.run(f"UPDATE {EVENTS_TABLE} SET topic = 'RunStopped' WHERE {{pos}} = 5")


@pytest.mark.parametrize(
    ("tamper", "position", "words"),
    [
        (flip_one_byte, 5, "hash mismatch"),
        (delete_one, 5, "missing event"),
        (swap_a_pair, 5, "out of place"),
        # The forgery at 6 is self-consistent; the event it pushed aside no longer fits at 7.
        (insert_a_forgery, 7, "out of place"),
        (edit_a_column, 5, "columns changed"),
    ],
)
def test_verify_finds_the_first_broken_link(
    kept: ChainedStore, durable: Backend, tamper: Callable[[ByHand], None], position: int, words: str
) -> None:
    assert verify(kept.location).ok
    with durable.tampered(kept) as (location, db):
        tamper(db)
    result = verify(location)
    assert not result.ok
    assert result.position == position
    assert result.checked == position - 1
    assert words in result.problem


def test_a_clean_store_verifies(kept: ChainedStore) -> None:
    result = verify(kept.location)
    assert (result.ok, result.checked, result.position, result.problem) == (True, 12, None, "")
    assert result.last_hash == kept.read()[-1].hash


def test_anchors_catch_a_rewritten_chain_and_a_cut_off_end_that_verify_on_their_own(
    kept: ChainedStore, durable: Backend
) -> None:
    anchor = verify(kept.location)
    assert anchor.last_hash == kept.read()[-1].hash
    anchors = {anchor.checked: anchor.last_hash}
    kept.append(sample(3, start=50))
    assert verify(kept.location, anchors).ok  # the store grew: the anchor is still in it

    # A forger rebuilds a whole chain of the same length with other content: it hashes right.
    with durable.new() as rewritten:
        rewritten.append(sample(12, start=100))
        assert verify(rewritten.location).ok
        result = verify(rewritten.location, anchors)
        assert (result.ok, result.position) == (False, 12) and "rewritten" in result.problem

    # Events cut off the end: a shorter, sound chain.
    with durable.new() as shorter:
        shorter.append([NewEvent(r.stream, r.type, r.time, r.data) for r in kept.read(limit=7)])
        assert shorter.read() == kept.read(limit=7)  # same events, same hashes: a true prefix
        result = verify(shorter.location, anchors)
        assert (result.ok, result.checked, result.position) == (False, 7, 12)
        assert "cut off the end" in result.problem


def test_an_appended_forgery_is_caught_only_with_the_public_key(
    durable: Backend, signer: ChainSigner, tmp_path: Path
) -> None:
    """Someone with the code, without the key, appends an event as the store would: the database
    takes it (it goes at the next position), the links hold, the signatures give it away."""
    with durable.new(signer) as store:
        store.append(sample(3))
        last = store.read()[-1]
        with durable.by_hand(store) as db:
            db.run(f"INSERT INTO {EVENTS_TABLE} ({{pos}}, originator_id, originator_version, topic, state) "
                   "VALUES (4, ?, 1, 'ControlAction', ?)", (stream_id("aggregator"), sealed(4, last.hash, version=1)))
        assert verify(store.location).ok
        result = verify(store.location, public_keys=[signer.public])
        assert (result.ok, result.position) == (False, 4)
        assert result.problem == "event 4 is not signed: appended without the aggregator's key"

        later = durable.open(store.location, load_or_create_signer(tmp_path / "keys" / "chain-signing.key"))  # a restart
        assert later.check_tail() == later.broken == result.problem
        later.append(sample(1, start=10))  # still recorded, but never vouched for
        assert later.signatures()[-1].position == 3
        later.close()


def test_the_tail_check_walks_the_newest_links(kept: ChainedStore, durable: Backend) -> None:
    with durable.tampered(kept) as (location, db):
        flip_one_byte(db)
    tampered = durable.open(location)
    assert tampered.check_tail(events=3) == ""  # event 5 is older than the newest 3 links
    assert tampered.check_tail(events=10) == tampered.broken == "hash mismatch at position 5: the event was changed"
    tampered.close()


# --- SQLite only ------------------------------------------------------------------------------


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SQLiteEventStore(path)
    store.append(sample(1))
    with raw(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


@pytest.mark.parametrize(
    ("statement", "words"),
    [
        # The same stream version: REPLACE would delete the old row without a DELETE trigger.
        (f"INSERT OR REPLACE INTO {EVENTS_TABLE} SELECT originator_id, originator_version, "
         f"'Forged', state FROM {EVENTS_TABLE} WHERE rowid = 2", "no event is replaced"),
        # The same position, even the last one, under a new stream version.
        (f"INSERT OR REPLACE INTO {EVENTS_TABLE} (rowid, originator_id, originator_version, topic, state) "
         f"SELECT 3, 'x', 1, 'Forged', state FROM {EVENTS_TABLE} WHERE rowid = 3", "no event is replaced"),
        (f"INSERT OR IGNORE INTO {EVENTS_TABLE} (rowid, originator_id, originator_version, topic, state) "
         "VALUES (-1, 'x', 1, 'Forged', x'00')", "goes at the next position"),
    ],
)
def test_sqlite_refuses_inserts_that_replace_an_event(tmp_path: Path, statement: str, words: str) -> None:
    path = tmp_path / "store.sqlite3"
    store = SQLiteEventStore(path)
    before = store.append(sample(3))
    with raw(path) as db:
        with pytest.raises(sqlite3.IntegrityError, match=f"Pectus event store is append-only: .*{words}"):
            db.execute(statement)
    assert store.read() == before
    store.close()
    assert verify(path).ok


def test_verify_reports_and_never_raises_on_foreign_or_damaged_files(tmp_path: Path) -> None:
    live = SQLiteEventStore(tmp_path / "live.sqlite3")
    live.append(sample(12))
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(os.urandom(8192))
    empty_db = tmp_path / "other.sqlite3"
    with raw(empty_db) as db:
        db.execute("CREATE TABLE notes (x)")
    truncated = tmp_path / "truncated.sqlite3"
    backup(live, truncated)
    live.close()
    truncated.write_bytes(truncated.read_bytes()[:5000])
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)

    for path in (garbage, empty_db, truncated, text, tmp_path / "missing.sqlite3"):
        result = verify(path)
        assert not result.ok, path
        assert result.problem, path
    assert "not a Pectus store" in verify(empty_db).problem
    assert "cannot read" in verify(tmp_path / "missing.sqlite3").problem


class Writer:
    """Appends batches from another thread until stopped, as the aggregator does during a backup."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.store = store
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        start = 0
        while not self.stop.is_set():
            self.store.append(sample(50, start=start))
            start += 50

    def __enter__(self) -> Writer:
        self.thread.start()
        while self.store.last_position() < 500 and self.thread.is_alive():
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    store = SQLiteEventStore(tmp_path / "open_pectus_aggregator.sqlite3")
    store.append(sample(12))
    yield store
    store.close()


def assert_a_verified_prefix(store: SQLiteEventStore, copy_path: Path, last: int) -> None:
    result = verify(copy_path)
    assert result.ok, result.problem
    assert result.checked == last
    copy = SQLiteEventStore(copy_path)
    assert copy.read() == store.read(limit=last)
    copy.close()


def test_backup_while_appending_is_a_verified_prefix(live: SQLiteEventStore, tmp_path: Path) -> None:
    dest = tmp_path / "backup.sqlite3"
    with Writer(live):
        last = backup(live, dest)
        assert last >= 500
    assert live.last_position() >= last
    assert sorted(p.name for p in tmp_path.glob("backup*")) == ["backup.sqlite3"]  # one file
    assert_a_verified_prefix(live, dest, last)


def test_a_plain_sqlite3_backup_of_a_live_store_verifies(live: SQLiteEventStore, tmp_path: Path) -> None:
    dest = tmp_path / "cli-backup.sqlite3"
    with Writer(live):
        if shutil.which("sqlite3"):
            subprocess.run(["sqlite3", str(live.path), f".backup '{dest}'"], check=True)
        else:  # the CLI's .backup is sqlite3's backup API, which Python exposes too
            with raw(live.path) as source, raw(dest) as target:
                source.backup(target)
    with raw(dest) as db:
        last = db.execute(f"SELECT MAX(rowid) FROM {EVENTS_TABLE}").fetchone()[0]
    assert last >= 500
    assert_a_verified_prefix(live, dest, last)


# --- PostgreSQL only ----------------------------------------------------------------------------


def test_postgresql_refuses_upserts_truncate_and_the_sequence(postgresql_url: str) -> None:
    store = PostgreSQLEventStore(postgresql_url)
    before = store.append(sample(3))
    with psycopg.connect(postgresql_url, autocommit=True) as db:
        for statement, words in [
            (f"INSERT INTO {EVENTS_TABLE} (notification_id, originator_id, originator_version, topic, state) "
             "VALUES (3, 'x', 1, 'Forged', '\\x00') ON CONFLICT (notification_id) DO UPDATE SET topic = 'Forged'",
             "Pectus event store is append-only: no event is changed"),
            (f"TRUNCATE {EVENTS_TABLE}", "Pectus event store is append-only: no event is removed"),
            (f"TRUNCATE {SIGNATURES_TABLE}", "Pectus event store is append-only: no signature is removed"),
            # Without a position, the sequence's (never used by the store) would give 1: taken.
            (f"INSERT INTO {EVENTS_TABLE} (originator_id, originator_version, topic, state) "
             "VALUES ('x', 1, 'Forged', '\\x00')", "duplicate key"),
        ]:
            with pytest.raises(psycopg.Error, match=words):
                db.execute(statement)
    assert store.read() == before
    store.close()
    assert verify(postgresql_url).ok


AGGREGATOR_ROLE = "pectus_aggregator"
ROLE_PASSWORD = "p@ss:w/rd?&x"  # URL-special characters: percent-encoded in the URL


def test_the_aggregators_role_appends_and_reads_but_cannot_change_or_remove(
    postgresql_server: PostgreSQLServer, postgresql_url: str, signer: ChainSigner
) -> None:
    """The tables' owner (here the superuser) creates them and grants the aggregator's role what
    :meth:`PostgreSQLEventStore.grant` grants (docs/operations.md): SELECT and INSERT, nothing else."""
    database = postgresql_url.rsplit("/", 1)[1]
    owner = PostgreSQLEventStore(postgresql_url)
    with postgresql_server.connect(database) as admin:
        admin.execute(f"CREATE ROLE {AGGREGATOR_ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'")
        admin.execute(f"GRANT ALL ON {EVENTS_TABLE} TO {AGGREGATOR_ROLE}")  # a mistake: grant takes it back
    owner.grant(AGGREGATOR_ROLE)
    owner.close()
    try:
        url = postgresql_server.url(database, AGGREGATOR_ROLE, ROLE_PASSWORD)
        store = PostgreSQLEventStore(url, signer)
        appended = store.append(sample(3))
        assert store.read() == appended and store.check_tail() == ""
        with psycopg.connect(url, autocommit=True) as db:
            for statement in [f"UPDATE {EVENTS_TABLE} SET topic = 'Forged'", f"DELETE FROM {EVENTS_TABLE}",
                              f"TRUNCATE {EVENTS_TABLE}", f"DELETE FROM {SIGNATURES_TABLE}",
                              f"ALTER TABLE {EVENTS_TABLE} DISABLE TRIGGER USER",
                              f"DROP TRIGGER {EVENTS_TABLE}_no_update ON {EVENTS_TABLE}",
                              "SET session_replication_role = replica"]:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    db.execute(statement)
        store.close()
        assert verify(url).ok
    finally:
        with postgresql_server.connect(database) as admin:
            admin.execute(f"DROP OWNED BY {AGGREGATOR_ROLE}")
        with postgresql_server.connect() as admin:
            admin.execute(f"DROP ROLE {AGGREGATOR_ROLE}")


def test_a_role_that_cannot_create_the_tables_is_told_who_can(
    postgresql_server: PostgreSQLServer, postgresql_url: str
) -> None:
    database = postgresql_url.rsplit("/", 1)[1]
    with postgresql_server.connect(database) as admin:
        admin.execute(f"CREATE ROLE {AGGREGATOR_ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'")
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        url = postgresql_server.url(database, AGGREGATOR_ROLE, ROLE_PASSWORD)
        with pytest.raises(PermissionError, match="Create them once as the database's owner") as refused:
            PostgreSQLEventStore(url)
        assert ROLE_PASSWORD not in str(refused.value) and "p%40ss" not in str(refused.value)
    finally:
        with postgresql_server.connect() as admin:
            admin.execute(f"DROP ROLE {AGGREGATOR_ROLE}")


def test_a_wrong_password_is_told_plainly_and_never_shown(postgresql_server: PostgreSQLServer) -> None:
    url = postgresql_server.url(password="not-the-password-x9")
    with pytest.raises(ConnectionError) as refused:
        PostgreSQLEventStore(url)
    message = str(refused.value)
    assert "password authentication failed" in message and "postgres:***@127.0.0.1" in message
    assert "not-the-password-x9" not in message
    result = verify(url)
    assert not result.ok and "not-the-password-x9" not in result.problem and "cannot read" in result.problem


def test_shown_and_redacted_mask_every_password() -> None:
    url = "postgresql://pectus:p%40ss%3Aw@db.example:5433/pectus?sslmode=require&password=other"
    assert shown(url) == "postgresql://pectus:***@db.example:5433/pectus?sslmode=require&password=***"
    assert shown("postgresql://pectus@db/pectus") == "postgresql://pectus@db/pectus"
    assert shown(Path("data/store.sqlite3")) == "data/store.sqlite3"
    assert redacted("could not use p%40ss%3Aw nor p@ss:w nor other", url) == "could not use *** nor *** nor ***"


def test_verify_reports_a_database_that_is_not_a_store(postgresql_url: str) -> None:
    result = verify(postgresql_url)
    assert (result.ok, result.problem) == (False, f"not a Pectus store: no {EVENTS_TABLE} table")


def test_a_writer_waits_for_the_append_lock_then_gives_up_with_nothing_written(
    postgresql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is held by a transaction that never ends (a stuck writer): the append waits
    LOCK_TIMEOUT, then StoreConflict; once the lock is free, the next append goes through."""
    monkeypatch.setattr(pg, "LOCK_TIMEOUT", "200ms")
    store = PostgreSQLEventStore(postgresql_url)
    store.append(sample(2))
    with psycopg.connect(postgresql_url) as stuck:
        stuck.execute("SELECT pg_advisory_xact_lock(%s)", (pg.APPEND_LOCK,))
        began = time.monotonic()
        with pytest.raises(StoreConflict, match="held the store's append lock"):
            store.append(sample(1, start=2))
        assert time.monotonic() - began >= 0.2
        stuck.rollback()
    assert [r.position for r in store.append(sample(1, start=2))] == [3]
    store.close()
    assert verify(postgresql_url).checked == 3


def test_a_database_that_goes_away_and_comes_back_loses_nothing_and_forks_nothing(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops under the store (a restart, a failover): an append fails whole after the
    connection timeout, saying which database; once the server is back, the next append
    continues the chain."""
    monkeypatch.setattr(pg, "CONNECT_TIMEOUT", 2)
    server = PostgreSQLServer()  # a server of its own: this one is stopped
    try:
        server.start()
        url = server.new_database()
        store = PostgreSQLEventStore(url)
        store.append(sample(3))
        server.stop()
        began = time.monotonic()
        with pytest.raises(PersistenceError, match=r"cannot reach the event store's database postgresql://postgres:\*\*\*@"):
            store.append(sample(2, start=3))
        assert time.monotonic() - began < 10 and store.tip == 3
        server.start()
        assert [r.position for r in store.append(sample(2, start=3))] == [4, 5]
        store.close()
        result = verify(url)
        assert (result.ok, result.checked) == (True, 5)
    finally:
        server.remove()
