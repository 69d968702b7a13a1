"""An attacker who can write the store file and has the code: a real aggregator's store, changed
with plain sqlite3, then checked with ``pectus-aggregator verify`` and served by a new aggregator.

Invariants shown: the database itself refuses ``INSERT OR REPLACE`` of an event; an event
appended with a correct hash (computed as the store computes it: the chain has no secret) is
caught by verify with the chain signing key's public key; an aggregator started on the tampered
store serves it (the record stays readable) and says in /health that the chain is broken.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
import trio

from attack_harness import PYTHON, Fleet, RawEngine, record, state_data, stored_events, uod_data

# How the store names a stream's rows and seals an event (see pectus/events/store.py), written out.
STREAM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pectus:stream")


def _canonical(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _append_forgery(store: Path, type_name: str, stream: str, data: dict) -> None:
    """Append an event at the next position, chained to the last and hashed as the store does."""
    last = stored_events(store)[-1]
    versions = [e["stream_version"] for e in stored_events(store) if e["stream"] == stream]
    body = _canonical({"position": last["position"] + 1, "stream": stream, "stream_version": len(versions) + 1,
                       "type": type_name, "time": data["time"], "data": data, "prev_hash": last["hash"]})
    digest = hashlib.sha256(body).hexdigest()
    with sqlite3.connect(store) as db:
        db.execute("INSERT INTO pectus_events (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
                   (uuid.uuid5(STREAM_NAMESPACE, stream).hex, len(versions) + 1, type_name,
                    body[:-1] + b',"hash":"' + digest.encode() + b'"}'))


def _verify(data: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "pectus.cli.aggregator", "--data-dir", str(data), "verify", *options],
                          capture_output=True, text=True, timeout=60)


def test_history_cannot_be_replaced_and_an_appended_forgery_is_detected(tmp_path):
    """Finding 8. Without the fix: INSERT OR REPLACE rewrites an event despite the triggers, the
    appended forgery verifies, and the aggregator serves the tampered store with /health ok."""
    async def record_something(aggregator):
        await aggregator.serving()
        ack = await RawEngine(aggregator.port).send([record("uod", uod_data()), record("state", state_data())])
        assert ack["refused"] == []

    with Fleet(tmp_path) as fleet:
        aggregator = fleet.aggregator()
        trio.run(record_something, aggregator)
        aggregator.stop()
        store = aggregator.store
        assert _verify(aggregator.data).returncode == 0

        with sqlite3.connect(store) as db:
            row = db.execute("SELECT rowid, originator_id, originator_version, topic, state FROM pectus_events "
                             "WHERE topic = 'StateChanged'").fetchone()
            rewritten = row[4].replace(b'"Stopped"', b'"Running"')
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute("INSERT OR REPLACE INTO pectus_events (rowid, originator_id, originator_version, topic, "
                           "state) VALUES (?, ?, ?, ?, ?)", (*row[:4], rewritten))
        assert b'"Running"' not in store.read_bytes()

        # Someone with the code enrols an engine of their own, as the aggregator would have.
        enrolled = next(e for e in stored_events(store) if e["type"] == "EngineEnrolled")["data"]
        _append_forgery(store, "EngineEnrolled", "unit:forged_Unit",
                        {**enrolled, "unit": "forged_Unit", "key_sha256": hashlib.sha256(b"mine").hexdigest()})
        assert _verify(aggregator.data).returncode == 0  # the links alone cannot tell: a correct forgery
        checked = _verify(aggregator.data, "--public-key", str(aggregator.data / "chain-signing.pub"))
        assert checked.returncode == 1, checked.stdout
        assert "BROKEN" in checked.stderr

        async def serve_the_tampered_store():
            aggregator.start()
            await aggregator.serving()
            async with aggregator.api() as api:
                health = await api.get("/health")
                assert health.status_code == 503 and health.json()["status"] == "broken", health.text
                assert health.json()["problem"]
                assert (await api.get("/api/process_units/rogue_Unit")).status_code == 200  # still readable

        trio.run(serve_the_tampered_store)
