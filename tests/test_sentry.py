"""Sentry: off without SENTRY_DSN; with it, events reach a (local) Sentry endpoint that speaks the
real envelope protocol, tagged to locate the problem, without personal data."""

from __future__ import annotations

import gzip
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sentry_sdk

from pectus.sentry import flush, init_sentry, report_crash


class Envelopes(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        lines = body.decode().splitlines()
        # An envelope: a header line, then (item header, item payload) pairs.
        for header, payload in zip(lines[1::2], lines[2::2]):
            if json.loads(header).get("type") == "event":
                self.received.append(json.loads(payload))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def sentry_server(monkeypatch):
    Envelopes.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Envelopes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SENTRY_DSN", f"http://publickey@127.0.0.1:{server.server_port}/1")
    yield Envelopes.received
    sentry_sdk.get_client().close()
    sentry_sdk.init(dsn=None)
    server.shutdown()
    thread.join()


def test_sentry_is_off_without_a_dsn(monkeypatch):
    monkeypatch.delenv("SENTRY_DSN", raising=False)
    assert init_sentry("engine") is False
    assert not sentry_sdk.get_client().is_active()
    report_crash("engine/scan", RuntimeError("nothing is sent"))  # a no-op, no error


def test_errors_and_crashes_are_reported_with_tags_and_no_personal_data(sentry_server):
    assert init_sentry("engine", "WARNING", {"engine_id": "host-7_DemoUod", "uod_location": "Lab 2"})
    logging.getLogger("pectus.engine").info("only a breadcrumb")
    logging.getLogger("pectus.engine").error("pump PU01 did not respond")
    try:
        raise RuntimeError("tick failed")
    except RuntimeError as error:
        report_crash("engine/scan", error)
    flush()
    events = sentry_server
    assert len(events) == 2
    logged, crash = events
    assert logged["logentry"]["message"] == "pump PU01 did not respond"
    assert logged["tags"]["component"] == "engine" and logged["tags"]["engine_id"] == "host-7_DemoUod"
    assert crash["tags"]["actor"] == "engine/scan" and crash["tags"]["uod_location"] == "Lab 2"
    assert crash["exception"]["values"][0]["value"] == "tick failed"
    for event in events:
        assert "user" not in event and not event.get("server_name")
        frames = [f for v in event.get("exception", {}).get("values", [])
                  for f in v.get("stacktrace", {}).get("frames", [])]
        assert all("vars" not in frame for frame in frames)
