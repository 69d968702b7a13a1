"""The PostgreSQL store's commands: create its tables for the aggregator's role, and move the
record from the SQLite file into it.

    pectus-aggregator --store postgresql://OWNER:PASSWORD@HOST/DB init [--grant ROLE]
    pectus-aggregator migrate --from DATA_DIR --to postgresql://USER:PASSWORD@HOST/DB [--public-key FILE ...]

``init``, run as the role that is to own the tables, creates them (with their triggers) when
missing, and with ``--grant`` lets the aggregator's role SELECT and INSERT - and only that - so
that the aggregator, connecting as that role, cannot UPDATE, DELETE or TRUNCATE, nor drop or
disable the triggers.

``migrate`` copies every event and every chain signature of the SQLite store, byte for byte and at the same
positions, into an empty PostgreSQL store, in one transaction (all of it or, on any error,
nothing), then verifies the copy's chain read back from the database, and checks that it ends
in the source's last event. The source is read in one snapshot and never changed: stop the
aggregator first, or what it appends after the snapshot stays behind in the file.

Exit codes: 0 done (copied and verified), 1 a problem (nothing copied, or a copy that does not
verify; a database that refuses us), 2 wrong usage.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

from eventsourcing.persistence import PersistenceError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
STORE_FILE = "open_pectus_aggregator.sqlite3"


def add_parser(commands: argparse._SubParsersAction) -> None:
    init = commands.add_parser("init", help="create the PostgreSQL store's tables (as their owner, with --store) "
                                            "and let the aggregator's role append to them")
    init.add_argument("--grant", metavar="ROLE", help="the aggregator's role: may SELECT and INSERT, nothing else")
    migrate = commands.add_parser("migrate", help="copy the SQLite store into an empty PostgreSQL store, "
                                                  "then verify the copy")
    migrate.add_argument("--from", dest="source", type=Path, required=True, metavar="DATA_DIR",
                         help=f"the data directory holding {STORE_FILE} (or that file itself)")
    migrate.add_argument("--to", dest="target", type=database_url, required=True, metavar="postgresql://USER:PASSWORD@HOST/DB",
                         help="the PostgreSQL database to copy into: its store must be empty (its tables are "
                              "created if missing)")
    migrate.add_argument("--public-key", type=Path, action="append", default=[], metavar="FILE",
                         help="also check the copy's signatures with this public key (chain-signing.pub); "
                              "repeatable, for the keys used before a key rotation")


def database_url(text: str) -> str:
    """A PostgreSQL URL given on the command line (argparse's type: it says what is wrong)."""
    import importlib.util

    from pectus.events.store import is_database_url

    if not is_database_url(text):
        raise argparse.ArgumentTypeError("expected a PostgreSQL URL, postgresql://USER:PASSWORD@HOST[:PORT]/DATABASE "
                                         "(the SQLite store is chosen with --data-dir)")
    if importlib.util.find_spec("psycopg") is None:
        raise argparse.ArgumentTypeError("PostgreSQL support is not installed: pip install 'pectus[postgresql]'")
    return text


def init(store: str | None, role: str | None) -> int:
    import psycopg

    from pectus.events.postgres import PostgreSQLEventStore
    from pectus.events.store import redacted, shown
    from pectus.projections.checkpoint import CheckpointsUnavailable, PostgreSQLCheckpointStore

    if store is None:
        print("init creates a PostgreSQL store: give it with --store postgresql://OWNER:PASSWORD@HOST/DB "
              "(or PECTUS_DATABASE_URL) before the command", file=sys.stderr)
        return EXIT_USAGE
    try:
        opened = PostgreSQLEventStore(store)
    except (ConnectionError, PermissionError) as error:
        print(error, file=sys.stderr)
        return EXIT_PROBLEMS
    checkpoints = None
    try:
        events = opened.last_position()
        # The checkpoints' table too, made here by the owner: an aggregator whose role may not
        # create tables would otherwise replay the whole log at every start.
        checkpoints = PostgreSQLCheckpointStore(store)
        if role is not None:
            opened.grant(role)
            checkpoints.grant(role)
    except (PersistenceError, ValueError, CheckpointsUnavailable, psycopg.Error) as error:
        print(f"cannot grant {role} its privileges in {shown(store)}: {redacted(str(error), store)}", file=sys.stderr)
        return EXIT_PROBLEMS
    finally:
        opened.close()
        if checkpoints is not None:
            checkpoints.close()
    granted = f"; {role} may SELECT and INSERT on the log, and replace checkpoints, nothing else" if role else ""
    print(f"{shown(store)}: the event store is ready ({events} events){granted}")
    return EXIT_OK


def migrate(args: argparse.Namespace) -> int:
    from pectus.events.signing import load_public_key
    from pectus.events.store import redacted, shown, verify

    source: Path = args.source / STORE_FILE if args.source.is_dir() else args.source
    if not source.is_file():
        print(f"no store at {source}", file=sys.stderr)
        return EXIT_PROBLEMS
    try:
        public_keys = [load_public_key(file) for file in args.public_key]
    except ValueError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    target = shown(args.target)
    sound = verify(source)  # a broken chain is not moved: it is evidence, and stays where it is
    if not sound.ok:
        print(f"{source}: BROKEN at event {sound.position}: {sound.problem}; nothing was copied "
              "(see docs/operations.md, A broken chain)", file=sys.stderr)
        return EXIT_PROBLEMS
    began = time.perf_counter()
    try:
        copied = _copy(source, args.target)
    except (ValueError, OSError, PersistenceError, sqlite3.Error) as error:  # one transaction: rolled back
        print(f"migrate {source} -> {target} failed, nothing was copied: {redacted(str(error), args.target)}",
              file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"copied {copied} events from {source} to {target} in {time.perf_counter() - began:.1f} s")
    # Read back from the database: every link, the source's last event at its place, the signatures.
    result = verify(args.target, {sound.checked: sound.last_hash} if sound.checked else {}, public_keys)
    if not result.ok:
        print(f"{target}: the copy does NOT verify: event {result.position}: {result.problem}", file=sys.stderr)
        return EXIT_PROBLEMS
    signed = (f"; {result.signatures} signatures checked" if public_keys
              else "; links only (add --public-key chain-signing.pub to check the signatures too)")
    print(f"{target}: the chain of {result.checked} events is intact and holds the source's "
          f"{sound.checked}{signed}; anchor {result.checked}:{result.last_hash}")
    return EXIT_OK


def _copy(source: Path, url: str) -> int:
    from pectus.events.postgres import PostgreSQLEventStore
    from pectus.events.store import open_chain

    store = PostgreSQLEventStore(url)
    try:
        with open_chain(source) as chain:
            return store.copy_from(chain)
    finally:
        store.close()
