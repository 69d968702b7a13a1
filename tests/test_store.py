"""The event store: one contract every backend passes, then what only the SQLite file promises
(WAL, append-only triggers, tamper evidence, online backup).

Hashes are recomputed here from the documented encoding, not with the store's own code, so the
tests pin the on-disk format down as well as the behaviour.
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
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pectus.events.store import (
    EVENTS_TABLE,
    GENESIS_HASH,
    EventStore,
    MemoryEventStore,
    NewEvent,
    Record,
    SQLiteEventStore,
    StoreConflict,
    backup,
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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
new_events = st.builds(
    NewEvent,
    stream=st.sampled_from(["aggregator", "unit:host_DemoUod", "unit:lab_Äkta"]),
    type=st.text(min_size=1, max_size=12),
    time=st.floats(allow_nan=False, allow_infinity=False),
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
)


class EventStoreContract:
    """What every backend promises. A subclass provides ``make_store``."""

    def make_store(self, directory: Path) -> EventStore:
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        store = self.make_store(tmp_path)
        yield store
        store.close()

    def test_a_new_store_is_empty(self, store: EventStore) -> None:
        assert store.last_position() == 0
        assert store.read() == []
        assert list(store.iter()) == []
        assert store.append([]) == []

    def test_positions_are_global_and_stream_versions_per_stream(self, store: EventStore) -> None:
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

    def test_data_round_trips_exactly(self, store: EventStore) -> None:
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

    def test_append_returns_what_read_returns(self, store: EventStore) -> None:
        appended = store.append([NewEvent("aggregator", "T", 0.0, {"pair": (1, 2)})])
        assert appended == store.read()
        assert appended[0].data == {"pair": [1, 2]}  # JSON has no tuples: replay must see the same

    def test_read_after_and_limit(self, store: EventStore) -> None:
        store.append(sample(10))
        assert [r.position for r in store.read(after=7)] == [8, 9, 10]
        assert [r.position for r in store.read(after=2, limit=3)] == [3, 4, 5]
        assert store.read(after=10) == []
        assert store.read(limit=0) == []

    def test_iter_streams_in_batches(self, store: EventStore) -> None:
        for start in range(0, 25, 5):
            store.append(sample(5, start=start))
        assert [r.position for r in store.iter(after=3, batch=4)] == list(range(4, 26))
        assert list(store.iter(batch=5)) == store.read()
        assert list(store.iter(after=25)) == []

    def test_a_batch_is_all_or_nothing(self, store: EventStore) -> None:
        store.append(sample(3))
        bad = sample(2, start=3) + [NewEvent("unit:host_DemoUod", "Oops", 0.0, {"x": object()})]
        with pytest.raises(TypeError):
            store.append(bad)
        assert store.last_position() == 3
        assert len(store.read()) == 3
        more = store.append(sample(2, start=3))
        assert [(r.position, r.stream_version) for r in more] == [(4, 4), (5, 5)]
        assert_valid_chain(store.read())

    # One property, run once per backend: "differing executors" is the point here, and an example
    # saved by one backend is a fair test for the other.
    @settings(
        max_examples=40,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
    )
    @given(batches=st.lists(st.lists(new_events, min_size=1, max_size=8), max_size=5))
    def test_any_batches_read_back_identically_with_a_valid_chain(
        self, batches: list[list[NewEvent]]
    ) -> None:
        with tempfile.TemporaryDirectory() as directory:
            store = self.make_store(Path(directory))
            try:
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
            finally:
                store.close()


class TestMemoryEventStore(EventStoreContract):
    def make_store(self, directory: Path) -> EventStore:
        return MemoryEventStore()


class TestSQLiteEventStore(EventStoreContract):
    def make_store(self, directory: Path) -> EventStore:
        return SQLiteEventStore(directory / "open_pectus_aggregator.sqlite3")

    def test_reopening_keeps_everything_and_continues_the_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "store.sqlite3"
        store = SQLiteEventStore(path)
        before = store.append(sample(3) + [NewEvent("aggregator", "A", 1.0, {})])
        store.close()

        store = SQLiteEventStore(path)
        assert store.read() == before
        after = store.append(sample(2, start=3) + [NewEvent("aggregator", "B", 2.0, {})])
        assert [(r.position, r.stream_version) for r in after] == [(5, 4), (6, 5), (7, 2)]
        assert after[0].prev_hash == before[-1].hash
        assert_valid_chain(store.read())
        store.close()
        assert verify(path).ok

    def test_the_file_is_in_wal_mode(self, tmp_path: Path) -> None:
        path = tmp_path / "store.sqlite3"
        store = SQLiteEventStore(path)
        store.append(sample(1))
        with raw(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        store.close()

    def test_triggers_refuse_update_and_delete(self, tmp_path: Path) -> None:
        path = tmp_path / "store.sqlite3"
        store = SQLiteEventStore(path)
        store.append(sample(3))
        with raw(path) as db:
            with pytest.raises(sqlite3.DatabaseError, match="Pectus event store is append-only"):
                db.execute(f"UPDATE {EVENTS_TABLE} SET topic = 'Forged' WHERE rowid = 2")
            with pytest.raises(sqlite3.DatabaseError, match="Pectus event store is append-only"):
                db.execute(f"DELETE FROM {EVENTS_TABLE} WHERE rowid = 3")
        assert len(store.read()) == 3
        store.close()
        assert verify(path).ok

    @pytest.mark.parametrize(
        ("statement", "words"),
        [
            # The same stream version: REPLACE would delete the old row without a DELETE trigger.
            (f"INSERT OR REPLACE INTO {EVENTS_TABLE} SELECT originator_id, originator_version, "
             f"'Forged', state FROM {EVENTS_TABLE} WHERE rowid = 2", "no event is replaced"),
            # The same position, even the last one, under a new stream version.
            (f"INSERT OR REPLACE INTO {EVENTS_TABLE} (rowid, originator_id, originator_version, topic, state) "
             f"SELECT 3, 'x', 1, 'Forged', state FROM {EVENTS_TABLE} WHERE rowid = 3", "no event is replaced"),
            (f"INSERT INTO {EVENTS_TABLE} (rowid, originator_id, originator_version, topic, state) "
             "VALUES (7, 'x', 1, 'Forged', x'00')", "goes at the next position"),  # a later gap
            (f"INSERT INTO {EVENTS_TABLE} (rowid, originator_id, originator_version, topic, state) "
             "VALUES (0, 'x', 1, 'Forged', x'00')", "goes at the next position"),  # before the first
            (f"INSERT OR IGNORE INTO {EVENTS_TABLE} (rowid, originator_id, originator_version, topic, state) "
             "VALUES (-1, 'x', 1, 'Forged', x'00')", "goes at the next position"),
        ],
    )
    def test_triggers_refuse_inserts_that_replace_or_skip_a_position(
        self, tmp_path: Path, statement: str, words: str
    ) -> None:
        path = tmp_path / "store.sqlite3"
        store = SQLiteEventStore(path)
        before = store.append(sample(3))
        with raw(path) as db:
            with pytest.raises(sqlite3.IntegrityError, match=f"Pectus event store is append-only: .*{words}"):
                db.execute(statement)
        assert store.read() == before
        store.close()
        assert verify(path).ok

    def test_triggers_still_let_a_group_commit_of_1000_events_through(self, tmp_path: Path) -> None:
        path = tmp_path / "store.sqlite3"
        store = SQLiteEventStore(path)
        for start in range(0, 3000, 1000):
            store.append(sample(1000, start=start))
        store.close()
        result = verify(path)
        assert (result.ok, result.checked) == (True, 3000)

    def test_a_second_writer_on_the_file_is_refused_not_interleaved(self, tmp_path: Path) -> None:
        path = tmp_path / "store.sqlite3"
        first, second = SQLiteEventStore(path), SQLiteEventStore(path)
        first.append(sample(2))
        with pytest.raises(StoreConflict):
            second.append([NewEvent("aggregator", "Late", 0.0, {})])
        assert first.last_position() == 2
        (late,) = second.append([NewEvent("aggregator", "Late", 0.0, {})])  # a retry continues
        assert (late.position, late.stream_version) == (3, 1)
        first.close()
        second.close()
        assert verify(path).ok


def raw(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A plain sqlite3 connection in autocommit mode, closed on exit."""
    return contextlib.closing(sqlite3.connect(path, isolation_level=None))


# --- tamper evidence --------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    store = SQLiteEventStore(tmp_path / "open_pectus_aggregator.sqlite3")
    for start in range(0, 10, 5):
        tick = NewEvent("aggregator", "Tick", float(start), {"n": start})
        store.append(sample(5, start=start) + [tick])
    yield store
    store.close()


def tampered_copy(store: SQLiteEventStore, dest: Path) -> contextlib.closing[sqlite3.Connection]:
    """A copy of the store with the append-only triggers dropped, as a tamperer would."""
    backup(store, dest)
    db = sqlite3.connect(dest, isolation_level=None)
    triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    assert len(triggers) == 8  # four on each table: update, delete, replace, next position
    for (name,) in triggers:
        db.execute(f"DROP TRIGGER {name}")
    return contextlib.closing(db)


def state_of(db: sqlite3.Connection, position: int) -> bytes:
    query = f"SELECT state FROM {EVENTS_TABLE} WHERE rowid = ?"
    return db.execute(query, (position,)).fetchone()[0]


def flip_one_byte(db: sqlite3.Connection) -> None:
    state = bytearray(state_of(db, 5))
    state[len(state) // 3] ^= 0x01
    db.execute(f"UPDATE {EVENTS_TABLE} SET state = ? WHERE rowid = 5", (bytes(state),))


def delete_one(db: sqlite3.Connection) -> None:
    db.execute(f"DELETE FROM {EVENTS_TABLE} WHERE rowid = 5")


def swap_a_pair(db: sqlite3.Connection) -> None:
    db.execute(f"UPDATE {EVENTS_TABLE} SET rowid = -1 WHERE rowid = 5")
    db.execute(f"UPDATE {EVENTS_TABLE} SET rowid = 5 WHERE rowid = 6")
    db.execute(f"UPDATE {EVENTS_TABLE} SET rowid = 6 WHERE rowid = -1")


def insert_a_forgery(db: sqlite3.Connection) -> None:
    """Slips a well-forged event in after position 5: its own hash and link are right."""
    last = db.execute(f"SELECT MAX(rowid) FROM {EVENTS_TABLE}").fetchone()[0]
    for rowid in range(last, 5, -1):  # make room, top down so rowids never collide
        db.execute(f"UPDATE {EVENTS_TABLE} SET rowid = rowid + 1 WHERE rowid = ?", (rowid,))
    prev_hash = json.loads(state_of(db, 5))["hash"]
    body = canonical(
        {
            "position": 6,
            "stream": "aggregator",
            "stream_version": 99,
            "type": "ControlAction",
            "time": 0.0,
            "data": {"user": "mallory", "command": "Stop"},
            "prev_hash": prev_hash,
        }
    )
    digest = hashlib.sha256(body).hexdigest()
    state = body[:-1] + f',"hash":"{digest}"}}'.encode()
    db.execute(
        f"INSERT INTO {EVENTS_TABLE} (rowid, originator_id, originator_version, topic, state) "
        "VALUES (6, ?, 99, 'ControlAction', ?)",
        (stream_id("aggregator"), state),
    )


def edit_a_column(db: sqlite3.Connection) -> None:
    db.execute(f"UPDATE {EVENTS_TABLE} SET topic = 'RunStopped' WHERE rowid = 5")


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
    live: SQLiteEventStore, tmp_path: Path, tamper: Any, position: int, words: str
) -> None:
    copy_path = tmp_path / "copy.sqlite3"
    with tampered_copy(live, copy_path) as db:
        tamper(db)
    result = verify(copy_path)
    assert not result.ok
    assert result.position == position
    assert result.checked == position - 1
    assert words in result.problem
    assert verify(live.path).ok  # the original is untouched


def test_a_clean_store_verifies(live: SQLiteEventStore) -> None:
    result = verify(live.path)
    assert (result.ok, result.checked, result.position, result.problem) == (True, 12, None, "")


def test_anchors_catch_a_rewritten_chain_and_a_cut_off_end_that_verify_on_their_own(
    live: SQLiteEventStore, tmp_path: Path
) -> None:
    anchor = verify(live.path)
    assert anchor.last_hash == live.read()[-1].hash
    anchors = {anchor.checked: anchor.last_hash}
    live.append(sample(3, start=50))
    assert verify(live.path, anchors).ok  # the store grew: the anchor is still in it

    # A forger rebuilds a whole chain of the same length with other content: it hashes right.
    rewritten = SQLiteEventStore(tmp_path / "rewritten.sqlite3")
    rewritten.append(sample(12, start=100))
    rewritten.close()
    assert verify(tmp_path / "rewritten.sqlite3").ok
    result = verify(tmp_path / "rewritten.sqlite3", anchors)
    assert (result.ok, result.position) == (False, 12) and "rewritten" in result.problem

    # Events cut off the end: a shorter, sound chain.
    shorter = SQLiteEventStore(tmp_path / "shorter.sqlite3")
    shorter.append(live.read(limit=7))  # same events, same hashes: a true prefix
    shorter.close()
    result = verify(tmp_path / "shorter.sqlite3", anchors)
    assert (result.ok, result.checked, result.position) == (False, 7, 12) and "cut off the end" in result.problem


def test_verify_reports_and_never_raises_on_foreign_or_damaged_files(
    live: SQLiteEventStore, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(os.urandom(8192))
    empty_db = tmp_path / "other.sqlite3"
    with raw(empty_db) as db:
        db.execute("CREATE TABLE notes (x)")
    truncated = tmp_path / "truncated.sqlite3"
    backup(live, truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)

    for path in (garbage, empty_db, truncated, text, tmp_path / "missing.sqlite3"):
        result = verify(path)
        assert not result.ok, path
        assert result.problem, path
    assert "not a Pectus store" in verify(empty_db).problem
    assert "cannot read" in verify(tmp_path / "missing.sqlite3").problem


# --- online backup ----------------------------------------------------------------------------


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


def assert_a_verified_prefix(store: SQLiteEventStore, copy_path: Path, last: int) -> None:
    result = verify(copy_path)
    assert result.ok, result.problem
    assert result.checked == last
    copy = SQLiteEventStore(copy_path)
    assert copy.read() == store.read(limit=last)
    copy.close()


def test_backup_while_appending_is_a_verified_prefix(
    live: SQLiteEventStore, tmp_path: Path
) -> None:
    dest = tmp_path / "backup.sqlite3"
    with Writer(live):
        last = backup(live, dest)
        assert last >= 500
    assert live.last_position() >= last
    assert sorted(p.name for p in tmp_path.glob("backup*")) == ["backup.sqlite3"]  # one file
    assert_a_verified_prefix(live, dest, last)


def test_a_plain_sqlite3_backup_of_a_live_store_verifies(
    live: SQLiteEventStore, tmp_path: Path
) -> None:
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
