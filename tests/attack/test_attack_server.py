"""The web server against clients that break HTTP itself, not the protocols on top of it.

One client's broken connection must not stop the aggregator: every engine and browser depends on
it. Hypercorn's Trio worker lets a connection's exception end the whole server, so the aggregator
closes such a connection alone (pectus/web/server.py).
"""

from __future__ import annotations

import socket

import httpx
import pytest
import trio

from attack_harness import Fleet, patiently

UPGRADE = (b"GET /engine HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bKdPyn3u98cTfZJSh4TNeQ==\r\n\r\n")


@pytest.mark.parametrize("request_bytes", [
    UPGRADE + b"x",  # bytes after a WebSocket upgrade request
    UPGRADE.replace(b"/engine", b"/api/ws") + b"\x00" * 64,
])
def test_a_client_that_breaks_http_closes_its_own_connection_not_the_aggregator(tmp_path, request_bytes):
    """Without the fix: the aggregator's process ended on the first of these (h11's
    LocalProtocolError out of hypercorn's connection nursery), and with it every engine's link."""
    async def main():
        with Fleet(tmp_path) as fleet:
            aggregator = fleet.aggregator()
            await aggregator.serving()

            def attack() -> None:
                with socket.create_connection(("127.0.0.1", aggregator.port), timeout=5) as client:
                    client.sendall(request_bytes)
                    try:
                        client.recv(65536)
                    except OSError:
                        pass

            await trio.to_thread.run_sync(attack)
            # Done when the server has dealt with it: the connection closed alone, or the process ended.
            await patiently(lambda: "a client connection failed" in aggregator.log() or not aggregator.running)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{aggregator.port}", timeout=5) as api:
                assert (await api.get("/health")).status_code == 200
            assert aggregator.running

    trio.run(main)
