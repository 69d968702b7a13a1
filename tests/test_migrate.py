"""The record moves from the SQLite file into PostgreSQL, and the aggregator keeps it there.

A real aggregator records a real engine session into its SQLite store; ``pectus-aggregator
migrate`` copies it into a real PostgreSQL database (tests/postgres.py), byte for byte and at the
same positions, signatures included, and verifies the copy; then the aggregator serves from the
database (``--store``), appends to the same chain, and verify, replay and the engines commands
work on it. A password in the URL is never printed.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

import psycopg
import pytest
from postgres import PostgreSQLServer
from test_aggregator import record, serve, session
from postgres import binaries
from test_store import ByHand, flip_one_byte, sample

from pectus.actors.aggregator import STORE_FILE
from pectus.cli.aggregator import main
from pectus.events import protocol as p
from pectus.events.postgres import PostgreSQLEventStore
from pectus.events.store import EVENTS_TABLE, SIGNATURES_TABLE
from pectus.projections.checkpoint import CHECKPOINTS_TABLE, PostgreSQLCheckpointStore


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory whose SQLite store holds a real aggregator's record of a session."""
    async def scenario(port, aggregator):
        answers = await session(port, [p.encode(p.Records([record(n) for n in range(1, 21)]))])
        assert p.Ack(20) in answers

    serve(tmp_path / "data", scenario, accept_new_engines=True)
    return tmp_path / "data"


def sqlite_rows(path: Path) -> tuple[list[tuple], list[tuple]]:
    with sqlite3.connect(path) as db:
        events = db.execute(f"SELECT rowid, originator_id, originator_version, topic, state FROM {EVENTS_TABLE} "
                            "ORDER BY rowid").fetchall()
        signatures = db.execute(f"SELECT * FROM {SIGNATURES_TABLE} ORDER BY position").fetchall()
    return events, signatures


def database_rows(url: str) -> tuple[list[tuple], list[tuple]]:
    with psycopg.connect(url) as db:
        events = db.execute(f"SELECT notification_id, originator_id, originator_version, topic, state "
                            f"FROM {EVENTS_TABLE} ORDER BY notification_id").fetchall()
        signatures = db.execute(f"SELECT * FROM {SIGNATURES_TABLE} ORDER BY position").fetchall()
    return events, signatures


def secret(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["password"]


def test_migrate_copies_every_byte_and_the_copy_verifies(
    data: Path, postgresql_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    public = str(data / "chain-signing.pub")
    assert main(["migrate", "--from", str(data), "--to", postgresql_url, "--public-key", public]) == 0
    out = capsys.readouterr().out
    events, signatures = sqlite_rows(data / STORE_FILE)
    assert f"copied {len(events)} events" in out
    assert re.search(rf"the chain of {len(events)} events is intact and holds the source's {len(events)}; "
                     rf"{len(signatures)} signatures checked; anchor {len(events)}:[0-9a-f]{{64}}", out), out
    assert database_rows(postgresql_url) == (events, signatures)  # positions, ids, topics, states, signatures
    assert len(events) == 24 and signatures

    assert main(["--store", postgresql_url, "verify", "--public-key", public]) == 0
    assert f"the chain of {len(events)} events is intact" in capsys.readouterr().out
    captured = capsys.readouterr()
    assert secret(postgresql_url) not in out + captured.out + captured.err


def test_migrate_refuses_a_store_that_is_not_empty_and_copies_nothing(
    data: Path, postgresql_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--from", str(data), "--to", postgresql_url]) == 0
    before = database_rows(postgresql_url)
    capsys.readouterr()
    assert main(["migrate", "--from", str(data / STORE_FILE), "--to", postgresql_url]) == 1
    err = capsys.readouterr().err
    assert "nothing was copied" in err and "the target store is not empty: it holds 24 events" in err
    assert secret(postgresql_url) not in err and "postgres:***@" in err
    assert database_rows(postgresql_url) == before


def test_migrate_refuses_a_broken_source(data: Path, postgresql_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(data / STORE_FILE, isolation_level=None) as db:
        db.execute(f"DROP TRIGGER {EVENTS_TABLE}_no_update")  # as a tamperer with the file would
        flip_one_byte(ByHand(db, "?", "rowid", (sqlite3.DatabaseError,)))
    assert main(["migrate", "--from", str(data), "--to", postgresql_url]) == 1
    assert "BROKEN at event 5: hash mismatch at position 5" in capsys.readouterr().err
    with psycopg.connect(postgresql_url) as db:
        assert db.execute("SELECT to_regclass(%s)", (EVENTS_TABLE,)).fetchone() == (None,)  # not even created


def test_migrate_usage_errors_are_plain(tmp_path: Path, postgresql_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--from", str(tmp_path), "--to", postgresql_url]) == 1
    assert f"no store at {tmp_path / STORE_FILE}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["migrate", "--from", str(tmp_path), "--to", str(tmp_path / "copy.sqlite3")])
    assert usage.value.code == 2 and "expected a PostgreSQL URL" in capsys.readouterr().err


def test_the_aggregator_serves_from_postgresql_and_continues_the_migrated_chain(
    data: Path, postgresql_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["migrate", "--from", str(data), "--to", postgresql_url]) == 0

    async def scenario(port, aggregator):
        # The engine reconnects where it left off: the aggregator read its last record from the database.
        answers = await session(port, [p.encode(p.Records([record(n) for n in range(21, 31)]))])
        assert answers[0].last_seq == 20 and p.Ack(30) in answers
        return [r.type for r in aggregator.store.read()]

    types = serve(data, scenario, accept_new_engines=True, store=postgresql_url)
    assert types.count("StateChanged") == 30
    (data / STORE_FILE).unlink()  # from now on the file is not the record: the database is
    total = len(database_rows(postgresql_url)[0])  # what it stored until it stopped

    monkeypatch.setenv("PECTUS_DATABASE_URL", postgresql_url)  # as a deployment sets it
    capsys.readouterr()
    assert main(["verify", "--public-key", str(data / "chain-signing.pub")]) == 0
    out = capsys.readouterr().out
    assert f"the chain of {total} events is intact; signed up to its last event" in out
    assert main(["replay"]) == 0
    assert f"replayed {total} events" in capsys.readouterr().out
    assert main(["engines", "list"]) == 0
    assert "rogue_Unit" in capsys.readouterr().out
    assert main(["backup", str(data / "copy.sqlite3")]) == 2
    assert "pg_dump" in capsys.readouterr().err
    assert secret(postgresql_url) not in out


def test_a_store_url_that_is_not_one_or_cannot_connect_is_refused_plainly(
    tmp_path: Path, postgresql_server: PostgreSQLServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["--store", "sqlite:///data/store.sqlite3", "verify"])
    assert usage.value.code == 2 and "expected a PostgreSQL URL" in capsys.readouterr().err
    wrong = postgresql_server.url(password="wrong-password-7f")
    assert main(["--store", wrong, "replay"]) == 1
    err = capsys.readouterr().err
    assert "cannot connect to the event store postgresql://postgres:***@127.0.0.1" in err
    assert "password authentication failed" in err and "wrong-password-7f" not in err
    assert main(["--store", wrong, "--data-dir", str(tmp_path), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "refusing to start" in err and "wrong-password-7f" not in err


OWNER, AGGREGATOR = "pectus_owner", "pectus_aggregator"


def test_init_as_the_owner_lets_the_aggregators_role_append_and_nothing_more(
    postgresql_server: PostgreSQLServer, postgresql_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The deployment of docs/operations.md: one role owns the database and its tables, the
    aggregator connects as another, which init lets SELECT and INSERT only."""
    database = postgresql_url.rsplit("/", 1)[1]
    with postgresql_server.connect(database) as admin:
        for role in (OWNER, AGGREGATOR):
            admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{role}-secret'")
        admin.execute(f"ALTER DATABASE {database} OWNER TO {OWNER}")  # CREATE DATABASE pectus OWNER pectus_owner
    owner, aggregator = (postgresql_server.url(database, role, f"{role}-secret") for role in (OWNER, AGGREGATOR))
    try:
        assert main(["--store", owner, "init", "--grant", AGGREGATOR]) == 0
        out = capsys.readouterr().out
        assert f"postgresql://{OWNER}:***@" in out and f"the event store is ready (0 events); {AGGREGATOR} may " \
            "SELECT and INSERT on the log, and replace checkpoints, nothing else" in out and "-secret" not in out
        PostgreSQLCheckpointStore(aggregator).close()  # made by init: the aggregator's role need not create it
        store = PostgreSQLEventStore(aggregator)
        store.append(sample(3))
        store.close()
        with psycopg.connect(aggregator, autocommit=True) as db:
            db.execute(f"DELETE FROM {CHECKPOINTS_TABLE}")  # checkpoints are replaced, unlike the record
            for statement in (f"UPDATE {EVENTS_TABLE} SET topic = 'x'", f"DELETE FROM {SIGNATURES_TABLE}",
                              f"TRUNCATE {EVENTS_TABLE}", f"ALTER TABLE {EVENTS_TABLE} DISABLE TRIGGER USER"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    db.execute(statement)
        assert main(["--store", aggregator, "verify"]) == 0
        assert main(["--store", owner, "init", "--grant", "nobody_here"]) == 1
        assert 'role "nobody_here" does not exist' in capsys.readouterr().err
    finally:
        with postgresql_server.connect(database) as admin:
            admin.execute(f"DROP OWNED BY {OWNER}, {AGGREGATOR}")
            admin.execute(f"ALTER DATABASE {database} OWNER TO postgres")
            for role in (OWNER, AGGREGATOR):
                admin.execute(f"DROP ROLE {role}")


def test_a_pg_dump_backup_restores_into_a_store_that_verifies(
    data: Path, postgresql_server: PostgreSQLServer, postgresql_url: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """The backup of docs/operations.md: pg_dump, then pg_restore into an empty database."""
    assert main(["migrate", "--from", str(data), "--to", postgresql_url]) == 0
    dump = tmp_path / "pectus.dump"
    subprocess.run([str(binaries() / "pg_dump"), "--format=custom", f"--file={dump}", postgresql_url],
                   check=True, capture_output=True)
    with postgresql_server.database() as restored:
        subprocess.run([str(binaries() / "pg_restore"), "--no-owner", f"--dbname={restored}", str(dump)],
                       check=True, capture_output=True)
        assert database_rows(restored) == database_rows(postgresql_url)
        capsys.readouterr()
        assert main(["--store", restored, "verify", "--public-key", str(data / "chain-signing.pub")]) == 0
        assert "the chain of 24 events is intact; signed up to its last event" in capsys.readouterr().out
        with psycopg.connect(restored, autocommit=True) as db:  # the restored store is append-only too
            with pytest.raises(psycopg.Error, match="append-only"):
                db.execute(f"DELETE FROM {EVENTS_TABLE}")
