"""The browser UI: its pages and its static files.

The UI is hand-written ES modules and CSS in pectus/web/static (no build step). Every page path
answers index.html; the router in app.js picks the page from the location.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import trio
from quart import Response, current_app, request
from werkzeug.security import safe_join

from pectus.web.api import ApiError, Backend, current_sign_in

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}
# Our own files change with every release: the browser revalidates them (ETag) on each load.
# Vendored libraries change only when their file is replaced: a week without asking.
REVALIDATE = "no-cache"
VENDOR_CACHE = "public, max-age=604800"


async def _static_response(name: str) -> Response:
    """A file of STATIC_DIR with its content type, cache policy and ETag (304 when unchanged).

    ``name`` is relative to STATIC_DIR; anything outside it (``..``, absolute paths) is a 404.
    """
    joined = safe_join(str(STATIC_DIR), name)
    path = trio.Path(joined) if joined is not None else None
    if path is None or not await path.is_file():
        raise ApiError(404, f"no file {name!r}")
    stat = await path.stat()
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    cache = VENDOR_CACHE if name.startswith("vendor/") else REVALIDATE
    if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        response = current_app.response_class(b"", status=304)
    else:
        content_type = CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")
        response = current_app.response_class(await path.read_bytes(), content_type=content_type)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = cache
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def page(backend: Backend, **params: str) -> Response:
    """A page of the UI: always index.html; the page's data comes from the API. The page may run
    only our own scripts, talk only to this aggregator (and to the sign-in provider, when on), and
    never be framed by another site: a control page must not be clickjacked. It sends no
    Referer, so no sign-in code or download ticket in a URL leaves with one."""
    response = await _static_response("index.html")
    config = current_sign_in().config
    provider = urlsplit(config.authority) if config.enabled else None
    connect = "'self'" + (f" {provider.scheme}://{provider.netloc}" if provider else "")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        f"connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def static_file(backend: Backend, file: str) -> Response:
    return await _static_response(file)


async def service_worker(backend: Backend) -> Response:
    """static/sw.js (Web Push: pectus.web.push) at the site's root, because a service worker's
    scope is at most the path it is served from, and its notifications open any page. It runs our
    code only and fetches nothing: its own policy allows nothing else."""
    response = await _static_response("sw.js")
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response
