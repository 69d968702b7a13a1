"""A run's downloads (its CSV and its events as JSON Lines), streamed, and the one-time tickets
that let a plain link download them with sign-in on.

The rows are read and formatted in worker threads, a chunk at a time, so a long run's export
never holds up the loop and never sits whole in memory.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import trio
from quart import Response, current_app

from pectus.web.api import ApiError, Backend, Handler, current_identity, current_tickets
from pectus.web.auth import TICKET_LIFETIME

STREAM_BATCH = 1000  # export lines per chunk: each chunk is one worker-thread hop and one send


def export_filename(run: Mapping[str, Any], extension: str) -> str:
    """``<unit>_<start as YYYYmmdd_HHMMSS UTC>.<extension>``, as the reference names its CSVs.

    ``run`` is the Projector's run summary: ``engine_id`` and ``started_date`` (ISO 8601 UTC). The
    unit id is reduced to filename-safe characters so it can sit in a header unquoted.
    """
    unit = re.sub(r"[^A-Za-z0-9._-]", "_", str(run["engine_id"]))
    started = datetime.fromisoformat(run["started_date"].replace("Z", "+00:00"))
    return f"{unit}_{started:%Y%m%d_%H%M%S}.{extension}"


async def _batched(lines: Iterator[str], end_of_line: str) -> AsyncIterator[bytes]:
    """Lines as byte chunks of STREAM_BATCH lines, each line ending in ``end_of_line`` unless the
    backend already ended it. Each chunk is made in a worker thread - reading the store and
    formatting rows is blocking work - so a long export never holds up the loop."""

    def chunk() -> bytes:
        return "".join(line if line.endswith("\n") else line + end_of_line
                       for line in itertools.islice(lines, STREAM_BATCH)).encode()

    while data := await trio.to_thread.run_sync(chunk):
        yield data


EXPORTS = ("csv", "events.jsonl")  # the run's downloads, by the last part of their path


async def download_ticket(backend: Backend, body: dict, run: str) -> dict[str, Any]:
    if backend.views.run(run) is None:
        raise ApiError(404, f"unknown run {run!r}")
    path = f"/api/runs/{run}/{body['export']}"
    ticket = current_tickets().issue(current_identity(), path)
    return {"url": f"{path}?{urlencode({'ticket': ticket})}", "expires_in": TICKET_LIFETIME}


def export(source: str, extension: str, mimetype: str, end_of_line: str) -> Handler:
    """A streamed download of one of the backend's per-run exports (``csv`` or ``events``)."""

    async def handler(backend: Backend, run: str) -> Response:
        summary = backend.views.run(run)
        lines = None if summary is None else getattr(backend, source)(run)
        if inspect.isawaitable(lines):  # the run's views loaded first (pectus.actors.aggregator.Backend.csv)
            lines = await lines
        if lines is None:
            raise ApiError(404, f"unknown run {run!r}")
        response = current_app.response_class(_batched(lines, end_of_line), mimetype=mimetype)
        response.headers["Content-Disposition"] = f'attachment; filename="{export_filename(summary, extension)}"'
        response.timeout = None  # a long run's export may take longer than Quart's response timeout
        return response

    return handler
