"""``pectus-aggregator``: the central server that keeps the record of every run.

    pectus-aggregator [--host 127.0.0.1] [--port 8300] [--data-dir ./data] [--accept-new-engines] [--trend-window 30m]
    pectus-aggregator verify [--data-dir DIR | --file STORE] [--public-key FILE ...] [--anchor POSITION:HASH ...]
    pectus-aggregator backup DEST [--data-dir DIR]
    pectus-aggregator replay [--data-dir DIR] [--output FILE | --check]
    pectus-aggregator engines enroll ENGINE_ID [--client-id APP] | list | revoke ENGINE_ID
    pectus-aggregator migrate --from DATA_DIR --to postgresql://... [--public-key FILE ...]
    pectus-aggregator --store postgresql://... init [--grant ROLE]

The store is the SQLite file in the data directory, or the PostgreSQL database named by
``--store postgresql://...`` (or ``$PECTUS_DATABASE_URL``) before the command, for every command
but backup (PostgreSQL's own tools back it up); a password in the URL is never printed or logged.
Several aggregators may serve one PostgreSQL store: the one holding its active lock serves, the
others wait as standbys and take over when it goes (pectus.actors.standby). An SQLite store has
one aggregator: a second one on the same data directory is refused.

Exit codes: 0 success, 1 a problem (a broken chain, a failed backup), 2 wrong usage.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Sequence

from pectus.cli import database, engines
from pectus.projections.trend import DEFAULT_WINDOW

if TYPE_CHECKING:
    from pectus.events.signing import ChainSigner
    from pectus.events.store import ChainedStore
    from pectus.projections.views import Projector

log = logging.getLogger("pectus.aggregator")
EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
STORE_FILE = "open_pectus_aggregator.sqlite3"  # the SQLite store, in the data directory


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pectus-aggregator",
                                     description="Pectus aggregator: engines report to it, operators use its UI, "
                                                 "and it keeps the permanent, verifiable record of every run.")
    parser.add_argument("-host", "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, default=8300, help="port (default 8300)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="directory of the event store open_pectus_aggregator.sqlite3 (default ./data)")
    parser.add_argument("--store", type=database.database_url, default=os.environ.get("PECTUS_DATABASE_URL") or None,
                        metavar="postgresql://USER:PASSWORD@HOST/DB",
                        help="keep the event store in this PostgreSQL database instead of the SQLite file in "
                             "--data-dir (default: $PECTUS_DATABASE_URL); the signing key stays a file. Another "
                             "aggregator already serving it makes this one its standby")
    parser.add_argument("--signing-key", type=Path, default=os.environ.get("PECTUS_SIGNING_KEY_FILE") or None,
                        help="the Ed25519 private key (PEM) that signs the event chain, created with its public key "
                             "beside it if missing; keep it outside the data directory and back it up apart from "
                             "the store (default: $PECTUS_SIGNING_KEY_FILE, else DATA_DIR/chain-signing.key)")
    parser.add_argument("-secret", "--secret", default="",
                        help="Open Pectus' shared secret: accepted so deployment scripts keep working, and ignored "
                             "(each engine has a credential of its own)")
    parser.add_argument("--accept-new-engines", action=argparse.BooleanOptionalAction,
                        default=os.environ.get("PECTUS_ACCEPT_NEW_ENGINES", "").strip().lower() == "true",
                        help="enrol an engine that is not enrolled yet with the key it presents on first use "
                             "(trust on first use, for labs; default: $PECTUS_ACCEPT_NEW_ENGINES, else off: "
                             "only enrolled engines connect)")
    parser.add_argument("--trend-window", type=_duration, default=DEFAULT_WINDOW, metavar="DURATION",
                        help="how much of each unit's recent values to keep in memory for its live plot, also "
                             "between runs: seconds, or a number with s, min (or m) or h, e.g. 30m, 1h "
                             "(default 30m)")
    parser.add_argument("-sev", "--sentry_event_level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="lowest log level sent to Sentry as an event; Sentry is on only when SENTRY_DSN is set")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="console log level (default INFO)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    verify = commands.add_parser("verify", help="walk the hash chain of a store; exit 1 at the first broken link")
    verify.add_argument("--file", type=Path, help="a store file (default: --store's database, else the file in "
                                                  "--data-dir)")
    verify.add_argument("--anchor", type=_anchor, action="append", default=[], metavar="POSITION:HASH",
                        help="an anchor an earlier verify printed: the event there must still have that hash "
                             "(catches a chain rewritten from some event on, or cut off at the end); repeatable")
    verify.add_argument("--public-key", type=Path, action="append", default=[], metavar="FILE",
                        help="the public key of the chain signing key (chain-signing.pub): every signature must "
                             "be valid and the last event signed (catches events appended or re-hashed by someone "
                             "without the private key); repeatable, for the keys used before a key rotation")
    backup = commands.add_parser("backup", help="a consistent copy of the store, also while the aggregator runs")
    backup.add_argument("dest", type=Path, help="the file to write")
    engines.add_parser(commands)
    database.add_parser(commands)
    replay = commands.add_parser("replay", help="rebuild every projection from the event log, from zero")
    replay.add_argument("--output", type=Path, help="write the rebuilt projections (canonical JSON) to this file")
    replay.add_argument("--check", action="store_true",
                        help="rebuild the projections up to the checkpoint the aggregator saved and compare the two "
                             "byte for byte, part by part; exit 1 on a difference (printed) or without a checkpoint")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s:%(name)s:%(message)s")
    store = args.store or args.data_dir / STORE_FILE
    if args.command == "verify":
        return _verify(args.file or store, dict(args.anchor), args.public_key)
    if args.command == "backup":
        return _backup(store, args.dest)
    if args.command == "engines":
        return _engines(args, store)
    if args.command == "replay":
        return _replay(store, args.output, args.check)
    if args.command == "migrate":
        return database.migrate(args)
    if args.command == "init":
        return database.init(args.store, args.grant)
    return _serve(args)


def _exists(store: Path | str) -> bool:
    """Whether there is a store to read (a database is asked when it is opened: it says why not)."""
    if isinstance(store, Path) and not store.exists():
        print(f"no store at {store}", file=sys.stderr)
        return False
    return True


def _open(location: Path | str, signer: ChainSigner | None = None) -> ChainedStore | None:
    """The store at ``location``, or None once the reason it cannot be opened is printed."""
    from pectus.events.store import open_store

    try:
        return open_store(location, signer)
    except (ConnectionError, PermissionError) as error:  # a database that refuses us says why
        print(error, file=sys.stderr)
        return None


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*")
_SECONDS = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def _duration(text: str) -> float:
    """'1800', '90s', '30m', '30min', '1.5h' -> seconds (a second to a day)."""
    match = _DURATION.fullmatch(text)
    seconds = float(match.group(1)) * _SECONDS[match.group(2)] if match else None
    if seconds is None or not 1 <= seconds <= 86_400:
        raise argparse.ArgumentTypeError(f"expected a duration from 1s to 24h: seconds, or a number with s, min "
                                         f"(or m) or h such as 30m or 1h; got {text!r}")
    return seconds


def _anchor(text: str) -> tuple[int, str]:
    position, _, digest = text.partition(":")
    if not (position.isdigit() and int(position) > 0 and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise argparse.ArgumentTypeError(f"expected POSITION:HASH (a positive number, a colon, 64 hex digits), "
                                         f"got {text!r}")
    return int(position), digest


def _verify(path: Path | str, anchors: dict[int, str], public_key_files: list[Path]) -> int:
    from pectus.events.signing import load_public_key
    from pectus.events.store import shown, verify

    try:
        public_keys = [load_public_key(file) for file in public_key_files]
    except ValueError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    result = verify(path, anchors, public_keys)
    if result.ok:
        checked = f", including {len(anchors)} anchor(s)" if anchors else ""
        if public_keys:
            keys = ", ".join(key.fingerprint for key in public_keys)
            signed = f"; signed up to its last event ({result.signatures} signatures by {keys} checked)"
        else:
            signed = ("; links only: signatures were not checked "
                      "(to check them: verify --public-key chain-signing.pub, a copy kept apart from the store)")
        print(f"{shown(path)}: the chain of {result.checked} events is intact{checked}{signed}; "
              f"anchor {result.checked}:{result.last_hash} (keep it apart from the store; later: verify --anchor)")
        _list_unshown(path)
        return EXIT_OK
    print(f"{shown(path)}: BROKEN at event {result.position}: {result.problem} ({result.checked} events checked)",
          file=sys.stderr)
    return EXIT_PROBLEMS


def _list_unshown(path: Path | str) -> None:
    """Intact events the views cannot show (written by an older version or a bug): the record
    keeps them, the UI skips them, and the auditor should know which they are."""
    import socket

    from pectus import __version__
    from pectus.events.store import read_store, shown
    from pectus.projections.views import Projector

    views = Projector(aggregator_name=socket.gethostname(), aggregator_version=__version__)
    views.replay(read_store(path))
    for entry in views.unfoldable:
        print(f"{shown(path)}: event {entry['position']} ({entry['type']}) is intact but cannot be shown: {entry['reason']}")


def _backup(store_file: Path | str, dest: Path) -> int:
    from pectus.events.store import SQLiteEventStore, backup

    if not isinstance(store_file, Path):
        print("a PostgreSQL store is backed up with PostgreSQL's tools: pg_dump, or continuous archiving "
              "(docs/operations.md, Backup)", file=sys.stderr)
        return EXIT_USAGE
    if not _exists(store_file):
        return EXIT_PROBLEMS
    store = SQLiteEventStore(store_file)
    try:
        last = backup(store, dest)
    except Exception as error:
        print(f"backup failed: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    finally:
        store.close()
    print(f"{dest}: {last} events copied")
    return EXIT_OK


def _replay(store_file: Path | str, output: Path | None, check: bool = False) -> int:
    import socket

    from pectus import __version__
    from pectus.projections.views import Projector

    if not _exists(store_file):
        return EXIT_PROBLEMS
    store = _open(store_file)
    if store is None:
        return EXIT_PROBLEMS
    views = Projector(aggregator_name=socket.gethostname(), aggregator_version=__version__)
    if check:
        try:
            return _check_checkpoint(store, views)
        finally:
            store.close()
    began = time.perf_counter()
    try:
        count = views.replay(store.iter())
    finally:
        store.close()
    elapsed = time.perf_counter() - began
    snapshot = views.snapshot()
    if output is not None:
        output.write_bytes(snapshot)
    print(f"replayed {count} events in {elapsed:.2f} s ({count / max(elapsed, 1e-9):,.0f} events/s); "
          f"projections sha256 {hashlib.sha256(snapshot).hexdigest()}")
    return EXIT_OK


def _check_checkpoint(store: ChainedStore, views: Projector) -> int:
    """``replay --check``: the saved checkpoint against the projections rebuilt from the log."""
    from pectus.events.store import shown
    from pectus.projections.checkpoint import Checkpoints, CheckpointsUnavailable, open_checkpoints

    name = shown(store.location)
    try:
        saved = open_checkpoints(store)
    except CheckpointsUnavailable as error:
        print(error, file=sys.stderr)
        return EXIT_PROBLEMS
    began = time.perf_counter()
    try:
        result = Checkpoints(store, saved, views).check()
    finally:
        saved.close()
    elapsed = time.perf_counter() - began
    if result.position is None:
        print(f"{name}: no checkpoint to check (the aggregator saves one while it runs and when it stops)",
              file=sys.stderr)
        return EXIT_PROBLEMS
    if not result.differences:
        print(f"{name}: the checkpoint at event {result.position} ({result.parts} parts) equals the projections "
              f"rebuilt from the log, byte for byte ({elapsed:.2f} s)")
        return EXIT_OK
    print(f"{name}: the checkpoint at event {result.position} DIFFERS from the projections rebuilt from the log "
          f"in {len(result.differences)} of {result.parts} parts. The log is the record; to serve projections "
          f"rebuilt from it, stop the aggregator, empty the table pectus_checkpoints (DELETE FROM "
          f"pectus_checkpoints) and start it (docs/operations.md, Checkpoints):", file=sys.stderr)
    for difference in result.differences:
        print(f"  {difference}", file=sys.stderr)
    return EXIT_PROBLEMS


def _engines(args: argparse.Namespace, store_file: Path | str) -> int:
    from pectus.actors.aggregator import SIGNING_KEY_FILE
    from pectus.events.signing import load_or_create_signer

    if args.engines_command != "enroll" and not _exists(store_file):
        return EXIT_PROBLEMS
    if isinstance(store_file, Path):
        store_file.parent.mkdir(parents=True, exist_ok=True)
    # What this command appends is signed like the aggregator's own appends.
    store = _open(store_file, load_or_create_signer(args.signing_key or args.data_dir / SIGNING_KEY_FILE))
    if store is None:
        return EXIT_PROBLEMS
    try:
        return engines.run(args, store)
    finally:
        store.close()


def _serve(args: argparse.Namespace) -> int:
    import trio

    from pectus.actors.aggregator import SIGNING_KEY_FILE, AggregatorProcess
    from pectus.actors.core import first_failure
    from pectus.cli.ports import is_port_in_use, port_in_use_message
    from pectus.events.signing import load_or_create_signer
    from pectus.events.store import shown
    from pectus.sentry import flush, init_sentry
    from pectus.web.auth import AuthConfig, ConfigError

    try:
        auth = AuthConfig.from_environment(os.environ)
    except ConfigError as error:  # never serve unprotected while ops believe sign-in is on
        print(f"{error}: refusing to start", file=sys.stderr)
        return EXIT_USAGE
    if init_sentry("aggregator", args.sentry_event_level):
        log.info("Sentry error reporting is on")
    if auth.enabled:
        log.info("user sign-in is on (provider %s)", auth.authority)
    if args.secret or os.environ.get("PECTUS_SECRET"):
        log.warning("a shared secret is set but no longer used: engines now have credentials of their own "
                    "(see 'pectus-aggregator engines enroll')")
    try:
        signer = load_or_create_signer(args.signing_key or args.data_dir / SIGNING_KEY_FILE)
    except (ValueError, OSError) as error:
        print(f"cannot use the chain signing key: {error}: refusing to start", file=sys.stderr)
        return EXIT_USAGE
    # What keeps it from starting: PECTUS_ALLOWED_ORIGINS or PECTUS_PUSH_*, or the Web Push key file, is
    # wrong (ConfigError), or the store's database refuses it, and says why.
    refusals = (ConfigError, ConnectionError, PermissionError)

    def refuse(error: BaseException) -> int:
        print(f"{error}: refusing to start", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, ConfigError) else EXIT_PROBLEMS

    def start() -> AggregatorProcess:
        return AggregatorProcess(args.data_dir, host=args.host, port=args.port,
                                 accept_new_engines=args.accept_new_engines, auth=auth, signer=signer,
                                 trend_window=args.trend_window, store=args.store)

    if args.store:
        # PostgreSQL: the aggregator that holds the store's active lock serves it; any other waits as
        # its standby, and takes over when it goes (pectus.actors.standby, docs/operations.md).
        from pectus.actors import standby

        log.info("the event store is the PostgreSQL database %s", shown(args.store))
        lock = standby.ActiveLock(args.store, f"pectus-aggregator {socket.gethostname()} {args.host}:{args.port}")

        async def serve(shutdown: trio.Event) -> None:
            await standby.serve(lock, args.host, args.port, start, shutdown)
    else:
        # SQLite: the store is a file on this machine, with one aggregator and no standby.
        held = _hold_data_dir(args.data_dir)
        if held is None:
            return EXIT_PROBLEMS
        try:
            process = start()
        except refusals as error:
            return refuse(error)

        async def serve(shutdown: trio.Event) -> None:
            await process.run(shutdown=shutdown)

    async def run() -> None:
        import signal

        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, shutdown)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    log.info("stopping the aggregator")
                    shutdown.set()
                    break

    try:
        trio.run(run)
    except BaseExceptionGroup as error:
        if is_port_in_use(error):
            print(port_in_use_message(args.host, args.port, "-p PORT"), file=sys.stderr)
            return EXIT_PROBLEMS
        refused, _ = error.split(refusals)  # a standby that took over could not start
        if refused is None:
            raise
        return refuse(first_failure(refused))
    finally:
        flush()
    return EXIT_OK


LOCK_FILE = "aggregator.lock"  # in the data directory: held by the aggregator that serves its SQLite store


def _hold_data_dir(data_dir: Path) -> IO[str] | None:
    """An exclusive lock on the data directory's lock file, held until the process ends (the
    system frees it however the process ends); None once the reason another aggregator holds it
    is printed. Two aggregators on one SQLite file would each append to the chain and show only
    their own engines live."""
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    held = (data_dir / LOCK_FILE).open("a+", encoding="utf-8")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.seek(0)
        holder = held.read().strip() or "another process"
        held.close()
        print(f"another aggregator ({holder}) serves the store in {data_dir}: one aggregator per SQLite store. "
              f"Stop that one first; to run a standby aggregator beside an active one, keep the store in "
              f"PostgreSQL (docs/operations.md, A standby aggregator)", file=sys.stderr)
        return None
    held.truncate(0)
    held.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    held.flush()
    return held


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
