"""A unit's process diagram, served as SVG.

The engine sanitised the diagram before sending it, but the aggregator trusts no engine: it
sanitises it again (``pectus.diagram.sanitize``) before it leaves, and serves it so that even a
browser opening it on its own runs nothing and loads nothing (a Content-Security-Policy that allows
no source at all, a sandbox, nosniff). Sanitising is done once per diagram text, in a worker thread
(a diagram at the size limit takes some 75 ms of CPU), and kept for the next requests.
"""

from __future__ import annotations

from collections import OrderedDict

import trio
from quart import Response, current_app

from pectus.diagram import DiagramError, sanitize
from pectus.web.api import ApiError, Backend

MEDIA = "image/svg+xml"
# Nothing may load or run; inline presentation (style attributes) may apply.
POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
CACHED = 32  # diagram texts: a few MiB at most

_cache: OrderedDict[str, str | DiagramError] = OrderedDict()


def _sanitized_or_error(svg: str) -> str | DiagramError:
    try:
        return sanitize(svg)
    except DiagramError as error:
        return error


async def _sanitized(svg: str) -> str | DiagramError:
    """The safe text of ``svg`` (or why there is none), from the cache when it was asked before."""
    found = _cache.get(svg)
    if found is None:
        found = await trio.to_thread.run_sync(_sanitized_or_error, svg)
        _cache[svg] = found
        while len(_cache) > CACHED:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(svg)
    return found


async def process_diagram(backend: Backend, unit: str) -> Response:
    svg = backend.views.process_diagram(unit)
    if svg is None:
        raise ApiError(404, f"unknown process unit {unit!r}")
    if not svg:
        raise ApiError(404, f"the process unit {unit!r} has no process diagram")
    safe = await _sanitized(svg)
    if isinstance(safe, DiagramError):
        raise ApiError(502, f"the process diagram the unit's engine sent cannot be shown: {safe}")
    response = current_app.response_class(safe, content_type=f"{MEDIA}; charset=utf-8")
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
