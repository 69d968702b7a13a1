"""``pectus-aggregator engines``: who may connect as which engine.

    pectus-aggregator engines enroll ENGINE_ID [--client-id APP] [--key-file FILE]
    pectus-aggregator engines list
    pectus-aggregator engines revoke ENGINE_ID

Enrolments are events in the store (``EngineEnrolled``, ``EngineRevoked``), so the record says
who admitted which engine and when. A key is made here, printed (or written to ``--key-file``)
once, and never stored: the store keeps its SHA-256. With ``--client-id`` the engine signs in
with an OpenID Connect application token of that app instead of a key.

These commands append to the store (the file, or the ``--store`` database) directly, also while
the aggregator runs: the store's position check keeps the chain whole, and the aggregator reads
what they appended within seconds (and at once before it refuses an engine it does not know); a
revoked engine's live session ends.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
import time
from pathlib import Path

from pectus.credentials import key_digest
from pectus.events import domain as d
from pectus.events.store import ChainedStore
from pectus.projections.views import iso

EXIT_OK, EXIT_PROBLEMS = 0, 1


def add_parser(commands: argparse._SubParsersAction) -> None:
    engines = commands.add_parser("engines", help="enrol, list and revoke the engines that may connect")
    actions = engines.add_subparsers(dest="engines_command", metavar="ACTION", required=True)
    enroll = actions.add_parser("enroll", help="let an engine connect: make its key (printed once), or name its app")
    enroll.add_argument("engine_id", help="the engine's id: <host name>_<UOD instrument>, as its log shows it")
    enroll.add_argument("--client-id", help="the engine signs in with an app token of this app (user sign-in on)")
    enroll.add_argument("--key-file", type=Path, help="write the new key to this file (mode 0600) instead of "
                                                      "printing it")
    actions.add_parser("list", help="the enrolled engines and how each proves who it is")
    revoke = actions.add_parser("revoke", help="stop admitting an engine (a connected one is disconnected "
                                               "within seconds)")
    revoke.add_argument("engine_id")


def run(args: argparse.Namespace, store: ChainedStore) -> int:
    if args.engines_command == "enroll":
        return _enroll(store, args.engine_id, args.client_id, args.key_file)
    if args.engines_command == "list":
        return _list(store)
    return _revoke(store, args.engine_id)


def _operator() -> d.Actor:
    name = getpass.getuser()
    return d.Actor.user(f"local:{name}", name)


def _enroll(store: ChainedStore, engine_id: str, client_id: str | None, key_file: Path | None) -> int:
    from pectus.actors.engine_session import ENGINE_ID

    if not ENGINE_ID.match(engine_id):
        print(f"{engine_id!r} is not an engine id: letters, digits and . - _ ( ) and spaces, up to 200",
              file=sys.stderr)
        return EXIT_PROBLEMS
    key = None if client_id else secrets.token_urlsafe(32)
    event = d.EngineEnrolled(time=time.time(), unit=engine_id, actor=_operator(), client_id=client_id,
                             key_sha256=key_digest(key) if key else None)
    if key is not None and key_file is not None:
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(key + "\n")
    store.append([event.stored()])
    if client_id:
        print(f"engine {engine_id} enrolled: it signs in with an app token of the app {client_id}")
    elif key_file is not None:
        print(f"engine {engine_id} enrolled; its key is in {key_file}: give it to the engine as its --key-file")
    else:
        print(f"engine {engine_id} enrolled. Its key, shown this once (the store keeps only its SHA-256):\n{key}\n"
              f"Put it in the engine's key file (by default {engine_id}.key beside its outbox, or --key-file).")
    return EXIT_OK


def _list(store: ChainedStore) -> int:
    enrolled: dict[str, tuple[str, str]] = {}
    for record in store.iter():
        if record.type == "EngineEnrolled":
            how = f"app {record.data['client_id']}" if record.data.get("client_id") else "key"
            enrolled[record.data["unit"]] = (how, f"{record.data.get('how', 'enrolled')} by "
                                                  f"{record.data['actor']['name']} at {iso(record.time)}")
        elif record.type == "EngineRevoked":
            enrolled.pop(record.data["unit"], None)
    if not enrolled:
        print("no engine is enrolled")
    for engine_id, (how, by) in sorted(enrolled.items()):
        print(f"{engine_id}\t{how}\t{by}")
    return EXIT_OK


def _revoke(store: ChainedStore, engine_id: str) -> int:
    known = any(r.type == "EngineEnrolled" and r.data["unit"] == engine_id for r in store.iter())
    if not known:
        print(f"engine {engine_id} is not enrolled", file=sys.stderr)
        return EXIT_PROBLEMS
    store.append([d.EngineRevoked(time=time.time(), unit=engine_id, actor=_operator(), reason="revoked").stored()])
    print(f"engine {engine_id} revoked: a running aggregator disconnects it within seconds and refuses it from then on")
    return EXIT_OK
