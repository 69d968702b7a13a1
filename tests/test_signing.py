"""Chain signing: tamper evidence that holds against someone who has the code but not the key.

Each tampering below is done with raw sqlite3, as an attacker with the code would do it: events
that hash and link correctly, so only the signatures (checked with the public key) give them
away. Then the aggregator's side: the start-up check of the chain's tail and what ``/health``
says about a tampered or a failing store, on a real file behind a real HTTP server.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wait_for
from eventsourcing.persistence import PersistenceError
from test_aggregator import serve
from test_store import canonical, raw, sample

from pectus.actors.aggregator import SIGNING_KEY_FILE, STORE_FILE, AggregatorProcess
from pectus.actors.event_writer import FAILURE_HOLD
from pectus.cli.aggregator import main
from pectus.events.domain import EngineConnected
from pectus.events.signing import ChainSigner, load_or_create_signer, load_public_key, public_key_file
from pectus.events.store import (
    EVENTS_TABLE,
    SIGNATURES_TABLE,
    MemoryEventStore,
    NewEvent,
    SQLiteEventStore,
    StoreConflict,
    stream_id,
    verify,
)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "chain-signing.key"


@pytest.fixture
def signer(key_file: Path) -> ChainSigner:
    return load_or_create_signer(key_file)


@pytest.fixture
def signed(tmp_path: Path, signer: ChainSigner) -> Path:
    """A store of 12 events in 4 batches of 3: signatures on events 3, 6, 9 and 12."""
    path = tmp_path / STORE_FILE
    store = SQLiteEventStore(path, signer)
    for start in range(0, 12, 3):
        store.append(sample(3, start=start))
    assert [s.position for s in store.signatures()] == [3, 6, 9, 12]
    store.close()
    return path


# --- keys -------------------------------------------------------------------------------------


def test_the_key_is_created_private_with_its_public_key_beside_it(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pectus.events.signing"):
        signer = load_or_create_signer(key_file)
    assert signer.created
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert public_key_file(key_file) == key_file.with_name("chain-signing.pub")
    public = load_public_key(public_key_file(key_file))
    assert public.fingerprint == signer.fingerprint and signer.fingerprint.startswith("ed25519:")
    (line,) = [r.getMessage() for r in caplog.records]
    assert signer.fingerprint in line and "keep a copy of its public key" in line
    pem = key_file.read_text()
    assert "PRIVATE KEY" in pem and pem not in line and pem not in repr(signer)

    again = load_or_create_signer(key_file)  # the next start: the same key, not a new one
    assert (again.fingerprint, again.created) == (signer.fingerprint, False)
    assert load_public_key(key_file).fingerprint == signer.fingerprint  # the private file checks too


def test_a_key_file_that_is_not_an_ed25519_key_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="bad.key is not an unencrypted PEM private key"):
        load_or_create_signer(bad)
    with pytest.raises(ValueError, match="bad.key is not a PEM public key"):
        load_public_key(bad)
    with pytest.raises(ValueError, match="cannot read the public key"):
        load_public_key(tmp_path / "missing.pub")


def test_a_signature_checks_only_for_its_position_and_hash(signer: ChainSigner) -> None:
    signature = signer.sign(7, "ab" * 32)
    assert signer.public.verify(7, "ab" * 32, signature)
    assert not signer.public.verify(8, "ab" * 32, signature)
    assert not signer.public.verify(7, "ac" * 32, signature)


# --- signatures are written with their batch --------------------------------------------------


def test_each_batch_signs_its_last_event_and_only_with_a_signer(tmp_path: Path, signer: ChainSigner) -> None:
    memory = MemoryEventStore(signer)
    records = memory.append(sample(3)) + memory.append(sample(2, start=3))
    with pytest.raises(TypeError):  # a batch that cannot be encoded: no events, no signature
        memory.append([NewEvent("aggregator", "Oops", 0.0, {"x": object()})])
    assert [(s.position, s.hash, s.key) for s in memory.signatures()] == [
        (3, records[2].hash, signer.fingerprint), (5, records[4].hash, signer.fingerprint)]
    assert all(signer.public.verify(s.position, s.hash, s.signature) for s in memory.signatures())

    unsigned = SQLiteEventStore(tmp_path / "unsigned.sqlite3")  # tools and most tests
    unsigned.append(sample(3))
    assert unsigned.signatures() == []
    unsigned.close()


def test_a_batch_and_its_signature_commit_together_or_not_at_all(tmp_path: Path, signer: ChainSigner) -> None:
    path = tmp_path / "store.sqlite3"
    store = SQLiteEventStore(path, signer)
    store.append(sample(3))
    # The signature cannot be written (a later one is already there): the events go with it.
    with raw(path) as db:
        db.execute(f"INSERT INTO {SIGNATURES_TABLE} VALUES (1000, 'h', 'k', x'00')")
    with pytest.raises(PersistenceError, match="a new signature goes at the next position"):
        store.append(sample(2, start=3))
    assert store.last_position() == 3
    # The events cannot be written (another writer moved the tip): no signature is.
    other = SQLiteEventStore(path)
    other.append(sample(1, start=10))
    with pytest.raises(StoreConflict):
        store.append(sample(2, start=3))
    assert [s.position for s in store.signatures()] == [3, 1000]
    other.close()
    store.close()


# --- tampering that hashes right, caught by the signatures ------------------------------------


def drop_triggers(db: sqlite3.Connection) -> None:
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")


def forged(position: int, prev_hash: str) -> bytes:
    """A correctly hashed event, as anyone with the code can make one: its stored state."""
    body = canonical({"position": position, "stream": "aggregator", "stream_version": 99, "type": "ControlAction",
                      "time": 0.0, "data": {"unit": "host_DemoUod", "user": "mallory", "command": "Stop"},
                      "prev_hash": prev_hash})
    return body[:-1] + f',"hash":"{hashlib.sha256(body).hexdigest()}"}}'.encode()


def event(db: sqlite3.Connection, position: int) -> dict[str, Any]:
    return json.loads(db.execute(f"SELECT state FROM {EVENTS_TABLE} WHERE rowid = ?", (position,)).fetchone()[0])


def append_a_forged_event(db: sqlite3.Connection) -> None:
    """A plain INSERT at the next position, linked and hashed right: the triggers let it in."""
    state = forged(13, event(db, 12)["hash"])
    db.execute(f"INSERT INTO {EVENTS_TABLE} VALUES (?, 99, 'ControlAction', ?)", (stream_id("aggregator"), state))


def replace_the_last_event(db: sqlite3.Connection) -> None:
    """INSERT OR REPLACE on the last position, once the triggers are dropped: it still links."""
    drop_triggers(db)
    state = forged(12, event(db, 11)["hash"])
    db.execute(f"INSERT OR REPLACE INTO {EVENTS_TABLE} (rowid, originator_id, originator_version, topic, state) "
               "VALUES (12, ?, 99, 'ControlAction', ?)", (stream_id("aggregator"), state))


def rehash_from_event_5(db: sqlite3.Connection) -> None:
    """Every event from 5 on gets other data, and the chain is re-hashed so that it links."""
    drop_triggers(db)
    prev_hash = event(db, 4)["hash"]
    for position in range(5, 13):
        old = event(db, position)
        body = canonical({**{k: v for k, v in old.items() if k != "hash"},
                          "data": {**old["data"], "value": -1.0}, "prev_hash": prev_hash})
        prev_hash = hashlib.sha256(body).hexdigest()
        db.execute(f"UPDATE {EVENTS_TABLE} SET state = ? WHERE rowid = ?",
                   (body[:-1] + f',"hash":"{prev_hash}"}}'.encode(), position))


def rehash_and_fix_the_signed_hashes(db: sqlite3.Connection) -> None:
    rehash_from_event_5(db)
    db.execute(f"UPDATE {SIGNATURES_TABLE} SET hash = (SELECT json_extract(state, '$.hash') "
               f"FROM {EVENTS_TABLE} WHERE rowid = position)")


def rehash_and_sign_with_a_key_of_ones_own(db: sqlite3.Connection, own_key: Path) -> None:
    rehash_from_event_5(db)
    mallory = load_or_create_signer(own_key)
    for position in (6, 9, 12):
        digest = event(db, position)["hash"]
        db.execute(f"UPDATE {SIGNATURES_TABLE} SET hash = ?, key = ?, signature = ? WHERE position = ?",
                   (digest, mallory.fingerprint, mallory.sign(position, digest), position))


def delete_the_newest_signatures(db: sqlite3.Connection) -> None:
    drop_triggers(db)
    db.execute(f"DELETE FROM {SIGNATURES_TABLE} WHERE position > 6")


def cut_off_the_end_but_not_its_signatures(db: sqlite3.Connection) -> None:
    drop_triggers(db)
    db.execute(f"DELETE FROM {EVENTS_TABLE} WHERE rowid > 7")


@pytest.mark.parametrize(
    ("tamper", "position", "words"),
    [
        (append_a_forged_event, 13, "event 13 is not signed: appended without the aggregator's key"),
        (replace_the_last_event, 12, "the signature on event 12 is for another event"),
        # The re-hashed chain links; the first signature after event 5 names the old hash.
        (rehash_from_event_5, 6, "the signature on event 6 is for another event: the chain was rewritten"),
        (rehash_and_fix_the_signed_hashes, 6, "the signature on event 6 is not valid"),
        (rehash_and_sign_with_a_key_of_ones_own, 6, "which is none of the public keys given"),
        (delete_the_newest_signatures, 7, "events 7-12 are not signed"),
        (cut_off_the_end_but_not_its_signatures, 9, "a signature names event 9, but the store ends at event 7"),
    ],
)
def test_verify_with_the_public_key_catches_what_links_alone_cannot(
    signed: Path, signer: ChainSigner, tmp_path: Path, tamper: Callable[..., None], position: int, words: str
) -> None:
    assert verify(signed, public_keys=[signer.public]).ok
    with raw(signed) as db:
        if tamper is rehash_and_sign_with_a_key_of_ones_own:
            tamper(db, tmp_path / "mallory.key")
        else:
            tamper(db)
    assert verify(signed).ok  # every link holds: without the key this passes
    result = verify(signed, public_keys=[signer.public])
    assert (result.ok, result.position) == (False, position), result.problem
    assert words in result.problem


def test_a_rotated_key_verifies_with_both_public_keys(tmp_path: Path, signer: ChainSigner) -> None:
    path = tmp_path / "store.sqlite3"
    store = SQLiteEventStore(path, signer)
    store.append(sample(3))
    store.close()
    successor = load_or_create_signer(tmp_path / "new" / "chain-signing.key")
    store = SQLiteEventStore(path, successor)
    store.append(sample(2, start=3))
    store.close()
    result = verify(path, public_keys=[signer.public, successor.public])
    assert (result.ok, result.checked, result.signatures) == (True, 5, 2)
    result = verify(path, public_keys=[successor.public])
    assert (result.ok, result.position) == (False, 3) and signer.fingerprint in result.problem


def test_verify_from_the_command_line_with_and_without_the_public_key(
    signed: Path, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    public = public_key_file(key_file)
    assert main(["verify", "--file", str(signed)]) == 0
    assert "links only: signatures were not checked" in capsys.readouterr().out
    assert main(["verify", "--file", str(signed), "--public-key", str(public)]) == 0
    assert "intact; signed up to its last event (4 signatures" in capsys.readouterr().out
    with raw(signed) as db:
        append_a_forged_event(db)
    assert main(["verify", "--file", str(signed), "--public-key", str(public)]) == 1
    assert "BROKEN at event 13: event 13 is not signed" in capsys.readouterr().err
    assert main(["verify", "--file", str(signed), "--public-key", str(tmp_path / "nope.pub")]) == 2
    assert "cannot read the public key" in capsys.readouterr().err


# --- the start-up check -----------------------------------------------------------------------


def test_the_tail_check_passes_a_sound_store_and_stops_signing_a_broken_one(signed: Path, key_file: Path) -> None:
    signer = load_or_create_signer(key_file)  # as a later start loads it: not a new key
    store = SQLiteEventStore(signed, signer)
    assert store.check_tail() == "" and store.broken == ""
    store.close()
    with raw(signed) as db:
        append_a_forged_event(db)
    store = SQLiteEventStore(signed, signer)
    assert store.check_tail() == store.broken == "event 13 is not signed: appended without the aggregator's key"
    store.append(sample(1, start=50))  # still recorded, but never vouched for
    assert store.signatures()[-1].position == 12
    store.close()


def test_the_tail_check_walks_the_newest_links(signed: Path, key_file: Path) -> None:
    with raw(signed) as db:
        drop_triggers(db)
        db.execute(f"UPDATE {EVENTS_TABLE} SET state = CAST(replace(CAST(state AS TEXT), '\"value\":5.0', "
                   "'\"value\":6.0') AS BLOB) WHERE rowid = 11")
    store = SQLiteEventStore(signed, load_or_create_signer(key_file))
    assert store.check_tail(events=3) == "hash mismatch at position 11: the event was changed"
    store.close()


def test_a_new_key_on_a_signed_store_checks_links_and_says_so(
    signed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    successor = load_or_create_signer(tmp_path / "rotated.key")
    store = SQLiteEventStore(signed, successor)
    with caplog.at_level(logging.WARNING, logger="pectus.events.store"):
        assert store.check_tail() == ""
    assert any("is new: the 12 events stored so far" in r.getMessage() for r in caplog.records)
    store.close()


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        return await http.get(path)


def signed_data_dir(tmp_path: Path) -> Path:
    """A data directory as the aggregator leaves it: a store signed with the directory's key."""
    data = tmp_path / "data"
    store = SQLiteEventStore(data / STORE_FILE, load_or_create_signer(data / SIGNING_KEY_FILE))
    connected = EngineConnected(time=1.8e9, unit="host_DemoUod")
    store.append([NewEvent(connected.stream, connected.type, connected.time, connected.to_data())] * 12)
    store.close()
    return data


def test_a_sound_store_starts_healthy(tmp_path: Path) -> None:
    async def scenario(port: int, aggregator: AggregatorProcess) -> httpx.Response:
        return await get(port, "/health")

    health = serve(signed_data_dir(tmp_path), scenario)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_a_tampered_store_is_served_but_health_says_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = signed_data_dir(tmp_path)
    with raw(data / STORE_FILE) as db:
        append_a_forged_event(db)

    async def scenario(port: int, aggregator: AggregatorProcess) -> tuple[httpx.Response, httpx.Response]:
        return await get(port, "/health"), await get(port, "/api/process_units")

    with caplog.at_level(logging.ERROR, logger="pectus.aggregator"):
        health, units = serve(data, scenario)
    assert units.status_code == 200  # the record stays readable
    assert health.status_code == 503
    assert health.json()["status"] == "broken"
    assert health.json()["problem"] == "event 13 is not signed: appended without the aggregator's key"
    assert any("chain is broken" in r.getMessage() for r in caplog.records)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, to be filled: a disk that really runs full under SQLite."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_a_full_disk_makes_health_say_failing_until_an_append_succeeds(tiny_disk: Path) -> None:
    async def scenario(port: int, aggregator: AggregatorProcess) -> list[tuple[int, dict[str, Any]]]:
        def connected() -> list[EngineConnected]:
            return [EngineConnected(time=time.time(), unit="host_DemoUod")]

        answers = []
        filler = fill(tiny_disk)
        with pytest.raises(PersistenceError):
            await aggregator.writer.append(connected())
        answer = await get(port, "/health")
        answers.append((answer.status_code, answer.json()))
        filler.unlink()
        await aggregator.writer.append(connected())
        answer = await get(port, "/health")
        answers.append((answer.status_code, answer.json()))  # one success does not make it healthy

        async def healthy() -> httpx.Response | None:
            await aggregator.writer.append(connected())
            answer = await get(port, "/health")
            return answer if answer.status_code == 200 else None

        answer = await wait_for(healthy, timeout=FAILURE_HOLD + 10, step=1.0)
        answers.append((answer.status_code, answer.json()))
        return answers

    (full, just_freed, freed) = serve(tiny_disk / "data", scenario)
    assert full[0] == 503 and full[1]["status"] == "failing"
    assert "full" in full[1]["problem"]
    assert just_freed[0] == 503 and just_freed[1]["status"] == "failing"
    assert freed[0] == 200 and freed[1]["status"] == "ok" and "problem" not in freed[1]
