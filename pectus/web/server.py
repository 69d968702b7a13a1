"""The web server: hypercorn's Trio worker, made to outlive any one client connection.

Hypercorn's Trio worker serves every connection in one nursery, so an exception that escapes a
connection's handler ends the whole server: a WebSocket upgrade request with bytes after it, or a
client that closes while the server is answering it (two tasks then write on one socket),
stopped the aggregator - every engine and browser with it - from a single TCP connection. Here a
connection that fails is logged and closed, and the server goes on.

Invariant: :func:`serve` behaves as ``hypercorn.trio.serve`` except that no exception of a
connection handler reaches the server's nursery.
"""

from __future__ import annotations

import logging

import hypercorn.trio.run
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer

__all__ = ["serve"]

log = logging.getLogger("pectus.web.server")


class _Connection(TCPServer):
    """One client's connection; its failure is its own."""

    async def run(self) -> None:
        try:
            await super().run()
        except Exception as error:  # noqa: BLE001 - see the module's docs: one client must not stop the server
            while isinstance(error, ExceptionGroup) and error.exceptions:
                error = error.exceptions[0]  # the first failure says more than the groups around it
            log.warning("a client connection failed and was closed: %s: %s", type(error).__name__, error)


# hypercorn.trio.run builds each connection's handler from this name (the worker offers no hook).
hypercorn.trio.run.TCPServer = _Connection  # type: ignore[misc]
