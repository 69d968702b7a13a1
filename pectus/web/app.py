"""The aggregator's HTTP and WebSocket surface: a JSON REST API plus one live WebSocket.

The browser reads the state of units and runs with plain GETs and acts on a unit with POSTs.
It does not poll: it opens one WebSocket (``/api/ws``), says which units it follows, and gets
every change (a *delta*: unit, topic, data) as it happens. After (re)connecting it subscribes,
waits for the ``{"subscribed": [...]}`` acknowledgement, then refetches over REST; from then on
the deltas keep its copy fresh.

Everything this layer knows about the rest of the aggregator is the ``Backend`` protocol below:
the Projector's query methods (``views``), the freshest tag values, a way to forward a user's
request to a unit, a stream of deltas and the exports. The tests drive it with a fake backend.

One table, ``ROUTES``, lists every route with its summary, parameters, request body schema and
responses. ``create_app`` registers the routes from it, request bodies are validated against
the schemas in it, and ``openapi_document`` describes the API from it, so the document cannot
drift from what the server does.

Who is asking comes from ``pectus.web.auth`` (sign-in on: the ID token; off: what the client
says); every route marked ``signed_in`` checks it, and the roles of the unit or run in its path,
before its handler runs.

Errors are always JSON: ``{"error": {"status", "message", "field"?, "missing_roles"?}}`` with a
status that says what went wrong: 400 body not JSON (or nested deeper than 64 levels), 401 not
signed in, 403 a role is missing or the request comes from another site's page, 404 unknown unit
/ run / route, 409 the unit refused the request in its current state (or the method changed
underneath the editor), 413 body over 1 MiB, 415 a POST not sent as application/json, 422 a bad
argument, named by ``field``.

Every request body goes through ``decode_json`` (bounded nesting, only storable strings) and
its route's schema before anything reaches a unit; every request that acts (any method but GET)
goes through ``refuse_cross_site`` first, so a page of another site cannot act through a
browser, with sign-in on or off.

Nothing here blocks the Trio loop. The backend's queries are expected to be in-memory and cheap
(the Projector keeps its views in memory); exports are read and formatted in worker threads, a
chunk at a time; a slow browser is never waited for (its deltas are coalesced: pectus.web.live).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit
from pathlib import Path
from typing import Any, Protocol

import trio
from quart import Response, current_app, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.security import safe_join

from pectus.actors.ui_hub import Subscription
from pectus.events.domain import Actor
from pectus.projections.views import Delta
from pectus.pcode import units as pcode_units
from pectus.pcode.analyzer import analyze
from pectus.pcode.diagnostics import Diagnostic
from pectus.web.auth import (TICKET_LIFETIME, AuthConfig, ConfigError, DownloadTickets, Identity, SignIn,
                              SignInError)

MAX_BODY_BYTES = 1024 * 1024
STREAM_BATCH = 1000  # export lines per chunk: each chunk is one worker-thread hop and one send
CONTROLS = ("Start", "Stop", "Pause", "Unpause", "Hold", "Unhold", "Restart")


# -- what the web layer needs from the aggregator ---------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """A unit's answer to a user's request.

    ``conflict`` means the request was made against a stale state (e.g. a method version that is
    no longer current) and is always a 409. Otherwise a refusal (``accepted`` False) is a 409 for
    control / cancel / force (not valid in the unit's current state) and a 422 naming the field
    for inject / save_method / process_value (the unit rejected what was sent). ``data`` is
    returned to the client on success (e.g. ``{"version": 4}`` for a saved method).
    """

    accepted: bool
    reason: str = ""
    conflict: bool = False
    data: dict | None = None


class Backend(Protocol):
    views: Any  # the Projector: query methods returning JSON-able values (None = unknown)

    def live_values(self, unit_id: str) -> list[dict] | None:
        """Freshest tag values ``{name, value, unit, time, simulated}``; None for an unknown unit."""
        ...

    async def request(self, unit_id: str, request: str, detail: dict, user: Actor) -> Outcome:
        """Forward a user's request: control {command} | inject {code} | save_method {lines,
        version} | cancel {item} | force {item} | process_value {tag, value, unit?}.
        Raises KeyError for an unknown or offline unit."""
        ...

    def subscribe(self) -> Subscription: ...

    def csv(self, run_id: str) -> Iterator[str] | None:
        """The run's CSV export line by line; None for an unknown run. Called in the loop; the
        lines are pulled in worker threads, one at a time, so they must not read the views."""
        ...

    def events(self, run_id: str) -> Iterator[str] | None:
        """The run's events as JSON Lines; None for an unknown run. Pulled as :meth:`csv`."""
        ...

    def health(self) -> dict:
        """``{"status": "ok" | "degraded" | "broken" | "failing", "problem"?: str, ...}``."""
        ...

    version: str


def current_identity() -> Identity:
    """Who is asking: set for every request of a guarded route before its handler runs."""
    return g.identity


def authorize(views: Any, identity: Identity, params: Mapping[str, str]) -> None:
    """ApiError 403 when the unit or run named in the path requires a role the user lacks (an
    unknown one is left to the handler's 404)."""
    for key, query in (("unit", views.unit), ("run", views.run)):
        if key in params:
            found = query(params[key])
            missing = identity.missing_roles(found.get("required_roles", ())) if found is not None else []
            if missing:
                raise ApiError(403, f"you are missing one of these roles: {', '.join(missing)}",
                               missing_roles=missing)


def visible(identity: Identity, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The units or runs of a list that the user may see."""
    return [item for item in items if not identity.missing_roles(item.get("required_roles", ()))]


# -- errors and validation --------------------------------------------------------------------

class ApiError(Exception):
    """An answer other than success, turned into the JSON error body by the app."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 missing_roles: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.missing_roles = missing_roles

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.missing_roles is not None:
            error["missing_roles"] = self.missing_roles
        return {"error": error}


JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list,
    "null": type(None),
}


def _has_type(value: Any, name: str) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never a number to JSON Schema
        return name == "boolean"
    if name == "integer" and isinstance(value, float):  # JSON Schema: 3.0 is an integer
        return value.is_integer()
    return isinstance(value, JSON_TYPES[name])


def check(schema: Mapping[str, Any], value: Any, field: str = "") -> None:
    """Validate ``value`` against the subset of JSON Schema the route table uses (type, enum,
    minLength, minimum, required, properties, items); ApiError 422 names the first bad field.

    Hand-written on purpose, not msgspec (which checks the engine link's records): here one dict
    per route is both what is checked and what the OpenAPI document says. msgspec checks Struct
    types and would generate the document in its own shape (components, titles), name fields as
    ``$[...][0].id``, refuse ``3.0`` as an integer (JSON Schema takes it) and a lone surrogate as
    malformed JSON (400 naming nothing): the document and the answers clients rely on would change.
    """
    label = field or "the body"
    names = schema.get("type")
    if names is not None:
        names = [names] if isinstance(names, str) else names
        if not any(_has_type(value, name) for name in names):
            raise ApiError(422, f"{label} must be of type {' or '.join(names)}", field or None)
    if "enum" in schema and value not in schema["enum"]:
        raise ApiError(422, f"{label} must be one of {', '.join(map(str, schema['enum']))}", field)
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        raise ApiError(422, f"{label} must not be empty", field)
    if "minimum" in schema and _has_type(value, "number") and value < schema["minimum"]:
        raise ApiError(422, f"{label} must be at least {schema['minimum']}", field)
    if isinstance(value, dict):
        prefix = f"{field}." if field else ""
        for name in schema.get("required", ()):
            if name not in value:
                raise ApiError(422, f"{prefix}{name} is required", prefix + name)
        for name, property_schema in schema.get("properties", {}).items():
            if name in value:
                check(property_schema, value[name], prefix + name)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            check(schema["items"], item, f"{field}[{index}]")


MAX_DEPTH = 64  # levels of arrays and objects in a body; the deepest route schema has three
INLINE_BODY_BYTES = 64 * 1024  # a larger body is decoded and checked in a worker thread
_SURROGATE = re.compile("[\ud800-\udfff]")
# Where a value sits in a body, as a linked list ending with its own key: ((None, "lines"), 0) is
# lines[0]. Cheap to extend for every value; spelled out (``_field``) only for the refused one.
FieldPath = tuple["FieldPath", str | int] | None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # Python's decoder would take NaN and Infinity


def decode_json(raw: bytes) -> Any:
    """A request body as JSON, or ApiError: 400 when it is not UTF-8 JSON (NaN and Infinity are
    not JSON) or nests deeper than MAX_DEPTH levels, 422 naming the field of a string or key that
    cannot be stored.

    Invariant of what it returns: every string is valid Unicode (no lone surrogate, which JSON
    can carry as ``\\ud800`` but no UTF-8 encoder, nor so the store or the engine link, can
    write), and no value is nested deeper than MAX_DEPTH. So whatever a route's handler passes
    on can be recorded, and nothing later fails on it half-way.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text") from None
    try:
        body = json.loads(text, parse_constant=_not_json)
    except RecursionError:  # far deeper than MAX_DEPTH: the decoder itself gave up
        raise ApiError(400, f"the body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise ApiError(400, "the request body is not JSON") from None
    _check_storable(body)
    return body


def _check_storable(body: Any) -> None:
    """The walk behind :func:`decode_json`'s invariant, without recursion (a body is untrusted)."""
    pending: list[tuple[Any, FieldPath, int]] = [(body, None, 1)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                field = _field(path)
                raise ApiError(422, f"{field or 'the body'} holds a lone surrogate (an unpaired \\ud800-\\udfff "
                                    "escape): it is not text and cannot be stored", field or None)
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ApiError(400, f"the body nests deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            children = []
            for key, item in items:
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                    field = _field(path)
                    raise ApiError(422, f"a name in {field or 'the body'} holds a lone surrogate: it is not "
                                        "text and cannot be stored", field or None)
                children.append((item, (path, key), depth + 1))
            pending.extend(reversed(children))  # so the first bad field in document order is named


def _field(path: FieldPath) -> str:
    """``lines[0].text`` for the path ``(((None, "lines"), 0), "text")``: fields named as ``check`` names them."""
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(reversed(parts)).lstrip(".")


def _decoded(raw: bytes, schema: Mapping[str, Any]) -> Any:
    body = decode_json(raw)
    check(schema, body)
    return body


async def _json_body(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The request's JSON body, decoded (:func:`decode_json`) and validated against ``schema``;
    413 (over the limit) is raised by Quart while reading. Every route's body comes through here."""
    raw = await request.get_data(cache=False)
    if len(raw) <= INLINE_BODY_BYTES:
        return _decoded(raw, schema)
    return await trio.to_thread.run_sync(_decoded, raw, schema)


# -- cross-site requests ----------------------------------------------------------------------
# A page of another site can make the browser send a "simple" request (a form or a fetch with
# Content-Type text/plain, form-urlencoded or multipart) to the aggregator without asking it
# first; with sign-in off nothing else stops that request from starting a unit. So every
# state-changing request must be JSON (a page of another site can only send that after a CORS
# preflight, which this server never grants), and one a browser sends on behalf of another site
# (its Origin header) is refused. Clients that are not browsers send no Origin and are not
# concerned.

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # they change nothing (the route table keeps it so)
ALLOWED_ORIGINS_VARIABLE = "PECTUS_ALLOWED_ORIGINS"
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``url`` as a browser writes it in the Origin header (``scheme://host[:port]``, lower case,
    no default port), so two spellings of one origin compare equal; None when it is not an http(s)
    origin (``null``, a path, user info...)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a port that is not a number
        return None
    if (parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or "@" in parts.netloc):
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, DEFAULT_PORTS[parts.scheme]) else "")


def allowed_origins_from(environ: Mapping[str, str]) -> frozenset[str]:
    """The origins listed in PECTUS_ALLOWED_ORIGINS (comma-separated, e.g.
    ``https://pectus.example.com``); ConfigError naming an entry that is not an origin."""
    origins = set()
    for entry in filter(None, (entry.strip() for entry in environ.get(ALLOWED_ORIGINS_VARIABLE, "").split(","))):
        origin = origin_of(entry)
        if origin is None:
            raise ConfigError(f"{ALLOWED_ORIGINS_VARIABLE}: {entry!r} is not an origin "
                              "(expected scheme://host[:port], e.g. https://pectus.example.com)")
        origins.add(origin)
    return frozenset(origins)


def refuse_cross_site(allowed: frozenset[str]) -> None:
    """ApiError for a state-changing request of the current request context that a page of
    another site could have made: 403 when the browser says it comes from an origin that is
    neither this aggregator's own (the scheme and Host it was reached by) nor in ``allowed``; 415
    when it is not sent as application/json. Requests that change nothing, and those no route
    takes (404, 405 follow), pass.

    The own origin is taken as the request arrives: this app honours no X-Forwarded-* header
    (nothing here can tell a trusted proxy's from a client's), so behind a proxy that changes the
    scheme or the host, the public origin is listed in ``allowed``.
    """
    if request.method in SAFE_METHODS or request.routing_exception is not None:
        return
    origin = request.headers.get("Origin")
    if origin is not None:
        own = origin_of(f"{request.scheme}://{request.host}")
        claimed = origin_of(origin)
        if claimed is None or (claimed != own and claimed not in allowed):
            raise ApiError(403, f"a request from the origin {origin!r} is refused: only pages of this aggregator "
                                f"({own}) and of origins listed in {ALLOWED_ORIGINS_VARIABLE} may act")
    if request.mimetype != JSON:
        sent = repr(request.mimetype) if request.mimetype else "no Content-Type"
        raise ApiError(415, f"send {request.method} requests as JSON with Content-Type: {JSON} (got {sent})")


# -- handlers ---------------------------------------------------------------------------------
# Each handler takes the backend, the validated ``body`` when its route has a schema, and the
# path parameters; it returns a JSON value or a ready Response.

Handler = Callable[..., Awaitable[Any]]
NOUNS = {"unit": "process unit", "run": "run"}


def _projection(query: str) -> Handler:
    """A GET answered by one Projector query of the route's single path parameter."""

    async def handler(backend: Backend, **params: str) -> Any:
        ((key, value),) = params.items()
        result = getattr(backend.views, query)(value)
        if result is None:
            raise ApiError(404, f"unknown {NOUNS[key]} {value!r}")
        return result

    return handler


def _listing(query: str) -> Handler:
    """A GET answered by one parameterless Projector query."""

    async def handler(backend: Backend) -> Any:
        return visible(current_identity(), getattr(backend.views, query)())

    return handler


async def _health(backend: Backend) -> Response:
    report = backend.health()
    response = current_app.json.response(report)
    response.status_code = 200 if report.get("status") == "ok" else 503
    return response


async def _version(backend: Backend) -> dict[str, str]:
    return {"version": backend.version}


async def _auth_config(backend: Backend) -> dict[str, Any]:
    return _sign_in().config.browser_config()


def _sign_in() -> SignIn:
    return current_app.extensions["pectus.sign_in"]


def _tickets() -> DownloadTickets:
    return current_app.extensions["pectus.download_tickets"]


async def _openapi(backend: Backend) -> dict[str, Any]:
    return openapi_document(backend.version, _sign_in().config.enabled)


def merge_process_values(recorded: list[dict] | None, live: list[dict] | None) -> list[dict] | None:
    """The projected readings (with their commands) updated by the live values, by tag name.

    The fresher of the two wins (the live one on a tie: it is the feed the projection follows);
    a live tag the projection does not list yet is added. None when neither knows the unit.
    """
    if recorded is None and live is None:
        return None
    merged = {value["name"]: dict(value) for value in recorded or ()}
    for value in live or ():
        known = merged.setdefault(value["name"], {})
        # Times are ISO 8601 UTC strings (the projections' form): they compare in time order.
        if (value.get("time") or "") >= (known.get("time") or ""):
            known.update(value)
    return list(merged.values())


async def _process_values(backend: Backend, unit: str) -> list[dict]:
    merged = merge_process_values(backend.views.process_values(unit), backend.live_values(unit))
    if merged is None:
        raise ApiError(404, f"unknown process unit {unit!r}")
    return merged


async def _ask(backend: Backend, unit: str, kind: str, detail: dict, refused_field: str | None = None) -> dict:
    """Forward a request to the unit and turn its Outcome into a response (see ``Outcome``)."""
    try:
        outcome = await backend.request(unit, kind, detail, current_identity().actor)
    except KeyError:
        raise ApiError(404, f"process unit {unit!r} is unknown or offline") from None
    if outcome.conflict or (not outcome.accepted and refused_field is None):
        raise ApiError(409, outcome.reason or f"{kind} is not possible now")
    if not outcome.accepted:
        raise ApiError(422, outcome.reason or f"{kind} was refused", refused_field)
    return {"accepted": True, **(outcome.data or {})}


async def _control(backend: Backend, body: dict, unit: str) -> dict:
    return await _ask(backend, unit, "control", {"command": body["command"]})


async def _save_method(backend: Backend, body: dict, unit: str) -> dict:
    return await _ask(backend, unit, "save_method", {"lines": body["lines"], "version": int(body["version"])}, "lines")


async def _inject(backend: Backend, body: dict, unit: str) -> dict:
    return await _ask(backend, unit, "inject", {"code": body["code"]}, "code")


async def _set_process_value(backend: Backend, body: dict, unit: str, tag: str) -> dict:
    detail = {"tag": tag, "value": body["value"]} | ({"unit": body["unit"]} if "unit" in body else {})
    return await _ask(backend, unit, "process_value", detail, "value")


def _run_log_item(kind: str) -> Handler:
    """Cancel or force a run-log item: no body, the item is in the path."""

    async def handler(backend: Backend, unit: str, item: str) -> dict:
        return await _ask(backend, unit, kind, {"item": item})

    return handler


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


async def _download_ticket(backend: Backend, body: dict, run: str) -> dict[str, Any]:
    if backend.views.run(run) is None:
        raise ApiError(404, f"unknown run {run!r}")
    path = f"/api/runs/{run}/{body['export']}"
    ticket = _tickets().issue(current_identity(), path)
    return {"url": f"{path}?{urlencode({'ticket': ticket})}", "expires_in": TICKET_LIFETIME}


def _export(source: str, extension: str, mimetype: str, end_of_line: str) -> Handler:
    """A streamed download of one of the backend's per-run exports (``csv`` or ``events``)."""

    async def handler(backend: Backend, run: str) -> Response:
        summary = backend.views.run(run)
        lines = None if summary is None else getattr(backend, source)(run)
        if lines is None:
            raise ApiError(404, f"unknown run {run!r}")
        response = current_app.response_class(_batched(lines, end_of_line), mimetype=mimetype)
        response.headers["Content-Disposition"] = f'attachment; filename="{export_filename(summary, extension)}"'
        response.timeout = None  # a long run's export may take longer than Quart's response timeout
        return response

    return handler


# -- the browser UI: pages and static files ---------------------------------------------------
# The UI is hand-written ES modules and CSS in pectus/web/static (no build step). Every page
# path answers index.html; the router in app.js picks the page from the location.

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


async def _page(backend: Backend, **params: str) -> Response:
    """A page of the UI: always index.html; the page's data comes from the API. The page may run
    only our own scripts, talk only to this aggregator (and to the sign-in provider, when on), and
    never be framed by another site: a control page must not be clickjacked. It sends no
    Referer, so no sign-in code or download ticket in a URL leaves with one."""
    response = await _static_response("index.html")
    config = _sign_in().config
    provider = urlsplit(config.authority) if config.enabled else None
    connect = "'self'" + (f" {provider.scheme}://{provider.netloc}" if provider else "")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        f"connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def _static(backend: Backend, file: str) -> Response:
    return await _static_response(file)


# -- what P-code a unit understands: analysis, completion, command examples --------------------

# The engine's system tags and their units (pectus.pcode.engine): every unit has them.
# The accumulator tags (Accumulated Volume, Block CV...) exist only on some units; they come
# from the unit's own tag list.
SYSTEM_TAGS: dict[str, str | None] = {
    "Base": None, "Run Counter": None, "Block": None, "Process Time": "s", "Run Time": "s",
    "Clock": "s", "System State": None, "Method Status": None, "Connection Status": None,
    "Run Id": None, "Mark": None, "Block Time": "s", "Scope Time": "s", "Batch Name": None,
}
TIME_BASE_UNITS = ("s", "min", "h")
# One example of each built-in instruction, for the commands panel and completion.
INSTRUCTION_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Mark", "Mark: Equilibration done"),
    ("Info", "Info: Sample taken"),
    ("Warning", "Warning: Check the pressure"),
    ("Error", "Error: Column packed wrongly"),
    ("Wait", "Wait: 30 s"),
    ("Block", "Block: Wash\n    Wait: 2 min\n    End block"),
    ("End block", "End block"),
    ("End blocks", "End blocks"),
    ("Watch", "Watch: Block Time > 5 min\n    Mark: Five minutes in the block"),
    ("Alarm", "Alarm: Run Time > 2 h\n    Pause"),
    ("Base", "Base: min"),
    ("Pause", "Pause"),
    ("Unpause", "Unpause"),
    ("Hold", "Hold"),
    ("Unhold", "Unhold"),
    ("Stop", "Stop"),
    ("Restart", "Restart"),
    ("Batch", "Batch: Lot 2024-17"),
    ("Notify", "Notify: Ready for the next step"),
    ("Run counter", "Run counter: 0"),
    ("Increment run counter", "Increment run counter"),
    ("Macro", "Macro: Rinse\n    Wait: 10 s"),
    ("Call macro", "Macro: Rinse\n    Wait: 10 s\nCall macro: Rinse"),
    ("Simulate", "Simulate: Run Time = 10 s"),
    ("Simulate off", "Simulate off: Run Time"),
)


def _accept_any(argument: str | None) -> bool:
    """The aggregator does not have the UOD's argument parsers: any argument may be right."""
    return True


def _vocabulary(backend: Backend, unit: str) -> dict[str, Any]:
    """The tag names with their units, the UOD commands and the Base units of ``unit``.

    The UOD's own description wins when the Projector offers it (query ``uod_description``);
    otherwise the tags are the unit's known process values plus the system tags, and the
    command names are unknown (``commands`` None: the analyzer then does not check them; the
    commands of the process values are still ``listed`` for the commands panel).
    """
    views = backend.views
    if views.unit(unit) is None:
        raise ApiError(404, f"unknown process unit {unit!r}")
    tags: dict[str, str | None] = dict(SYSTEM_TAGS)
    listed: dict[str, dict[str, Any]] = {}
    for value in merge_process_values(views.process_values(unit), backend.live_values(unit)) or ():
        tags[value["name"]] = value.get("unit") or None
        for command in value.get("commands") or ():
            if command.get("name"):
                listed.setdefault(command["name"], {"name": command["name"], "help": command.get("help", ""),
                                                    "reading": True})
    description = views.uod_description(unit)
    commands: dict[str, dict[str, Any]] | None = None
    readings: list[dict[str, Any]] = []
    if description:
        for tag in description.get("tags", ()):
            tags[tag["name"]] = tag.get("unit") or None
        commands = {command["name"]: command for command in description.get("commands", ())}
        readings = list(description.get("readings", ()))
        for reading in readings:
            name = reading.get("execute_command_name") or reading["tag_name"]
            commands.setdefault(name, {"name": name})
            commands[name] = {**commands[name], "reading": True}
        listed = commands
    base_units = list(TIME_BASE_UNITS)
    if "Accumulated Volume" in tags:
        base_units += pcode_units.compatible_units(tags["Accumulated Volume"]) or [tags["Accumulated Volume"] or "L"]
    if "Accumulated CV" in tags:
        base_units.append("CV")
    return {"tags": tags, "commands": commands, "listed": listed, "base_units": list(dict.fromkeys(base_units))}


def diagnostic_json(diagnostic: Diagnostic) -> dict[str, Any]:
    return {"line": diagnostic.line, "end_line": diagnostic.end_line, "column": diagnostic.column,
            "severity": str(diagnostic.severity), "id": diagnostic.id, "message": diagnostic.message,
            "fixes": list(diagnostic.fixes)}


async def _analyze(backend: Backend, body: dict, unit: str) -> dict[str, Any]:
    vocabulary = _vocabulary(backend, unit)
    commands = vocabulary["commands"]
    parsers = {name: _accept_any for name in commands} if commands is not None else None

    def run() -> list[Diagnostic]:
        return analyze(body["text"], tags=vocabulary["tags"], commands=parsers, base_units=vocabulary["base_units"])

    # a few milliseconds for a real method; a megabyte of text must not stall the loop
    diagnostics = await trio.to_thread.run_sync(run) if len(body["text"]) > 20_000 else run()
    return {"diagnostics": [diagnostic_json(diagnostic) for diagnostic in diagnostics]}


async def _vocabulary_route(backend: Backend, unit: str) -> dict[str, Any]:
    vocabulary = _vocabulary(backend, unit)
    return {
        "tags": [{"name": name, "unit": tag_unit,
                  "valid_units": list(dict.fromkeys(
                      ([tag_unit] if tag_unit else []) + pcode_units.compatible_units(tag_unit)))}
                 for name, tag_unit in vocabulary["tags"].items()],
        "commands": [{"name": name, "help": command.get("help", ""),
                      "examples": list(command.get("examples") or []),
                      "reading": bool(command.get("reading"))}
                     for name, command in vocabulary["listed"].items()],
        "instructions": [{"name": name, "example": example} for name, example in INSTRUCTION_EXAMPLES],
        "base_units": vocabulary["base_units"],
    }


# -- the live WebSocket: pectus.web.live (it uses the errors and checks above) ---------------

from pectus.web.live import live_socket as _live  # noqa: E402


# -- the route table --------------------------------------------------------------------------

JSON = "application/json"
OUTCOME = {"type": "object", "required": ["accepted"], "properties": {"accepted": {"const": True}}}
HEALTH = {"type": "object", "required": ["status"],
          "properties": {"status": {"enum": ["ok", "degraded", "broken", "failing"]}, "problem": {"type": "string"}}}
PROCESS_VALUE = {
    "type": "object",
    "required": ["name", "value"],
    "properties": {"name": {"type": "string"}, "value": {}, "unit": {"type": ["string", "null"]},
                   "time": {"type": ["string", "null"], "format": "date-time"}, "simulated": {"type": "boolean"},
                   "commands": {"type": "array"}},
}


@dataclass(frozen=True)
class Route:
    """One route: how it is served and how it is documented.

    ``method`` is GET, POST or WEBSOCKET; a GET changes nothing (``refuse_cross_site`` lets it
    through from anywhere). A request body is read, parsed and checked against ``body`` before
    the handler runs. 404 is implied by path parameters, 400 / 413 / 422 by a body, 401 by
    ``signed_in``, 403 by a unit or run in a signed-in route's path, 403 / 415 by a method other
    than GET; ``errors`` lists the other failure statuses the route can answer. ``ui`` routes
    serve the browser UI (pages, static files); the OpenAPI document leaves them out.
    """

    method: str
    path: str
    summary: str
    handler: Handler
    returns: str = "OK"
    schema: Mapping[str, Any] = field(default_factory=dict)  # of a successful answer; {} = any JSON
    media: str = JSON
    body: Mapping[str, Any] | None = None
    errors: tuple[int, ...] = ()
    ui: bool = False  # a page or file of the browser UI: served, but not part of the API document
    # With sign-in on, the caller must be signed in (checked, with the roles of the unit or run in
    # the path, before the handler runs). Off for what holds no process data, and for the
    # WebSocket, which signs in with its first message.
    signed_in: bool = True
    # A download: a ticket (``?ticket=``, from POST .../download_ticket) may stand in for the
    # sign-in, because a link the browser saves as it streams cannot carry a header.
    ticket: bool = False

    @property
    def endpoint(self) -> str:
        return f"{self.method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', self.path).strip('_')}"

    @property
    def parameters(self) -> list[str]:
        return re.findall(r"<(?:\w+:)?(\w+)>", self.path)


UNIT = "/api/process_units/<unit>"
RUN = "/api/runs/<run>"
ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", "Is the aggregator healthy", _health, "healthy", HEALTH, errors=(503,),
          signed_in=False),
    Route("GET", "/api/version", "The aggregator's version", _version, "the version",
          {"type": "object", "properties": {"version": {"type": "string"}}}, signed_in=False),
    Route("GET", "/api/openapi.json", "This API description (OpenAPI 3.1)", _openapi, "the document",
          signed_in=False),
    Route("GET", "/auth/config", "How the browser signs in (OpenID Connect, Authorization Code + PKCE)",
          _auth_config, "the sign-in settings",
          {"type": "object", "required": ["use_auth", "authority", "client_id", "scope"],
           "properties": {"use_auth": {"type": "boolean"}, "authority": {"type": ["string", "null"]},
                          "client_id": {"type": ["string", "null"]}, "scope": {"type": "string"}}},
          signed_in=False),
    Route("GET", "/api/process_units", "Process units: online, and offline ones seen recently",
          _listing("units"), "the units", {"type": "array"}),
    Route("GET", UNIT, "One process unit", _projection("unit"), "the unit"),
    Route("GET", f"{UNIT}/process_values", "Current tag values; readings carry their commands",
          _process_values, "the values", {"type": "array", "items": PROCESS_VALUE}),
    Route("GET", f"{UNIT}/control_state", "Whether the unit is running, paused, holding",
          _projection("control_state"), "the control state"),
    Route("GET", f"{UNIT}/method", "The unit's method: lines, version, line states",
          _projection("method"), "the method"),
    Route("GET", f"{UNIT}/run_log", "The current run's log", _projection("run_log"), "the run log"),
    Route("GET", f"{UNIT}/error_log", "The current run's errors and warnings",
          _projection("error_log"), "the error log"),
    Route("GET", f"{UNIT}/plot_configuration", "How the unit's plot is laid out",
          _projection("plot_configuration"), "the plot configuration"),
    Route("GET", f"{UNIT}/plot_log", "The current run's plot series", _projection("plot_series"), "the series"),
    Route("POST", f"{UNIT}/control", "Start, stop, pause, hold or restart the unit", _control,
          "accepted", OUTCOME, errors=(409,),
          body={"type": "object", "required": ["command"],
                "properties": {"command": {"type": "string", "enum": list(CONTROLS)}}}),
    Route("POST", f"{UNIT}/method", "Save a new version of the method (optimistic concurrency)",
          _save_method, "saved: the new version",
          {"type": "object", "required": ["accepted", "version"],
           "properties": {"accepted": {"const": True}, "version": {"type": "integer"}}},
          errors=(409,),
          body={"type": "object", "required": ["lines", "version"],
                "properties": {
                    "lines": {"type": "array", "items": {
                        "type": "object", "required": ["id", "text"],
                        "properties": {"id": {"type": "string"}, "text": {"type": "string"}}}},
                    "version": {"type": "integer", "minimum": 0,
                                "description": "the version the edit was based on"}}}),
    Route("POST", f"{UNIT}/inject", "Run P-code now, beside the method", _inject, "accepted", OUTCOME,
          errors=(409,),
          body={"type": "object", "required": ["code"],
                "properties": {"code": {"type": "string", "minLength": 1}}}),
    Route("POST", f"{UNIT}/process_values/<tag>", "Set a process value through its command",
          _set_process_value, "accepted", OUTCOME, errors=(409,),
          body={"type": "object", "required": ["value"],
                "properties": {"value": {"type": ["string", "number"]}, "unit": {"type": "string"}}}),
    Route("POST", f"{UNIT}/run_log/<item>/cancel", "Cancel a run-log item", _run_log_item("cancel"),
          "accepted", OUTCOME, errors=(409,)),
    Route("POST", f"{UNIT}/run_log/<item>/force", "Force a run-log item", _run_log_item("force"),
          "accepted", OUTCOME, errors=(409,)),
    Route("POST", f"{UNIT}/analyze", "Diagnostics of a P-code text for this unit (the method editor's lint)",
          _analyze, "the diagnostics, by line",
          {"type": "object", "required": ["diagnostics"], "properties": {"diagnostics": {"type": "array", "items": {
              "type": "object", "required": ["line", "end_line", "column", "severity", "id", "message", "fixes"],
              "properties": {"line": {"type": "integer"}, "end_line": {"type": "integer"},
                             "column": {"type": "integer"},
                             "severity": {"enum": ["error", "warning", "info"]}, "id": {"type": "string"},
                             "message": {"type": "string"},
                             "fixes": {"type": "array", "items": {"type": "string"}}}}}}},
          body={"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}),
    Route("GET", f"{UNIT}/vocabulary",
          "What P-code the unit understands: tags with units, UOD commands with examples, instructions",
          _vocabulary_route, "the vocabulary"),
    Route("GET", "/api/runs", "Recorded runs", _listing("runs"), "the runs", {"type": "array"}),
    Route("GET", RUN, "One run", _projection("run"), "the run"),
    Route("GET", f"{RUN}/method", "The run's method and its revisions", _projection("run_method"), "the method"),
    Route("GET", f"{RUN}/run_log", "The run's log", _projection("run_log_of"), "the run log"),
    Route("GET", f"{RUN}/error_log", "The run's errors and warnings", _projection("run_error_log"),
          "the error log"),
    Route("GET", f"{RUN}/plot_configuration", "How the run's plot was laid out",
          _projection("plot_configuration"), "the plot configuration"),
    Route("GET", f"{RUN}/plot_log", "The run's plot series", _projection("plot_series"), "the series"),
    Route("GET", f"{RUN}/audit", "Who did what, when, during the run", _projection("audit_trail"),
          "the audit trail"),
    Route("GET", f"{RUN}/csv", "The run's data as CSV (streamed download)",
          _export("csv", "csv", "text/csv", "\r\n"), "the CSV file", {"type": "string"}, "text/csv", ticket=True),
    Route("GET", f"{RUN}/events.jsonl", "The run's recorded events as JSON Lines (streamed download)",
          _export("events", "jsonl", "application/x-ndjson", "\n"), "one event per line",
          {"type": "string"}, "application/x-ndjson", ticket=True),
    Route("POST", f"{RUN}/download_ticket",
          "A link to one of the run's downloads that works once, within a minute, without a sign-in header",
          _download_ticket, "the link",
          {"type": "object", "required": ["url", "expires_in"],
           "properties": {"url": {"type": "string"}, "expires_in": {"type": "number"}}},
          body={"type": "object", "required": ["export"],
                "properties": {"export": {"type": "string", "enum": list(EXPORTS)}}}),
    Route("WEBSOCKET", "/api/ws", "Live deltas of followed units and of the unit and run lists", _live,
          signed_in=False),
    # the browser UI (not in the OpenAPI document); the pages sign in through the API
    Route("GET", "/", "The dashboard page", _page, "index.html", media="text/html", ui=True, signed_in=False),
    Route("GET", "/units/<unit>", "A process unit's page", _page, "index.html", media="text/html", ui=True,
          signed_in=False),
    Route("GET", "/runs/<run>", "A recorded run's page", _page, "index.html", media="text/html", ui=True,
          signed_in=False),
    Route("GET", "/auth-callback", "Where the provider sends the browser back after sign-in", _page,
          "index.html", media="text/html", ui=True, signed_in=False),
    Route("GET", "/static/<path:file>", "A file of the UI (modules, styles, vendored libraries)", _static,
          "the file", media="application/octet-stream", ui=True, signed_in=False),
)

PARAMETERS = {
    "unit": "process unit (engine) id, e.g. host-7_DemoUod",
    "run": "run id",
    "tag": "tag name, e.g. FT01",
    "item": "run-log item id",
    "file": "path of a UI file under /static",
}
STATUSES = {
    400: f"the body is not UTF-8 JSON, or nests deeper than {MAX_DEPTH} levels",
    401: "not signed in: the X-Identity token (sign-in on) or the download ticket is missing, not valid or expired",
    403: "the unit or run requires a role the user does not hold (missing_roles names them), or the request "
         "comes from a page of another site (an Origin that is neither the aggregator's nor in PECTUS_ALLOWED_ORIGINS)",
    404: "unknown process unit, run or route",
    409: "the unit refused the request in its current state, or the method version is stale",
    413: "the body is larger than 1 MiB",
    415: "not sent with Content-Type: application/json, which every request that acts must carry, "
         "with or without a body",
    422: "a bad argument, named by field (also a string that is not valid Unicode, e.g. a lone surrogate)",
    503: "degraded: the same health report, saying what is wrong",
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["status", "message"],
        "properties": {"status": {"type": "integer"}, "message": {"type": "string"}, "field": {"type": "string"}}}},
}


def _operation(route: Route, sign_in: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.endpoint,
        "summary": route.summary,
        "parameters": [{"name": name, "in": "path", "required": True, "description": PARAMETERS[name],
                        "schema": {"type": "string"}} for name in route.parameters],
    }
    if route.ticket:
        operation["parameters"].append({"name": "ticket", "in": "query", "required": False,
                                        "description": "a download ticket, instead of the X-Identity header",
                                        "schema": {"type": "string"}})
    if route.method == "WEBSOCKET":
        operation["description"] = _live.__doc__
        operation["responses"] = {"101": {"description": "switched to the WebSocket protocol"},
                                  "400": {"description": "not a WebSocket upgrade request"}}
        return operation
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": route.body}}}
    responses = {"200": {"description": route.returns, "content": {route.media: {"schema": route.schema}}}}
    guarded = {"unit", "run"} & set(route.parameters)
    # A unit or run requiring a role is refused (403) with sign-in off too: nobody holds a role then.
    failures = (set(route.errors) | ({404} if route.parameters else set()) | ({400, 413, 422} if route.body else set())
                | ({403} if route.signed_in and guarded else set())
                | ({403, 415} if route.method not in SAFE_METHODS else set()))  # refuse_cross_site
    if route.ticket:
        failures.add(401)  # a ticket that is not valid, whether sign-in is on or off
    if route.signed_in and sign_in:
        failures.add(401)
        operation["security"] = [{"identity": []}]
    for status in sorted(failures):
        # a degraded health check still answers with the health report, everything else with an error
        schema = route.schema if status == 503 else {"$ref": "#/components/schemas/Error"}
        responses[str(status)] = {"description": STATUSES[status], "content": {JSON: {"schema": schema}}}
    operation["responses"] = responses
    return operation


def openapi_document(version: str, sign_in: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every API route in ROUTES (the UI's pages are not API), as
    this server answers them: with ``sign_in``, they require the X-Identity token."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        if route.ui:
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.path)
        method = "get" if route.method == "WEBSOCKET" else route.method.lower()
        paths.setdefault(path, {})[method] = _operation(route, sign_in)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Pectus aggregator", "version": version},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"identity": {
                "type": "apiKey", "in": "header", "name": "X-Identity",
                "description": "the OpenID Connect ID token, when sign-in is on (GET /auth/config)"}},
        },
    }


# -- the app ----------------------------------------------------------------------------------

def _view(route: Route, backend: Backend) -> Callable[..., Awaitable[Any]]:
    async def view(**params: Any) -> Any:
        if route.signed_in:
            ticket = request.args.get("ticket") if route.ticket else None
            try:
                g.identity = (_tickets().redeem(ticket, request.path)
                              if ticket else await _sign_in().identify(request.headers))
            except SignInError as error:
                raise ApiError(error.status, str(error)) from None
            authorize(backend.views, g.identity, params)
        if route.body is not None:
            params["body"] = await _json_body(route.body)
        result = await route.handler(backend, **params)
        return result if isinstance(result, Response) or result is None else current_app.json.response(result)

    return view


def _error_response(error: ApiError) -> Response:
    response = current_app.json.response(error.body())
    response.status_code = error.status
    return response


def create_app(backend: Backend, sign_in: SignIn | None = None,
               allowed_origins: frozenset[str] | None = None) -> QuartTrio:
    """The aggregator's web app over ``backend``; serve it with hypercorn's trio worker. Without
    ``sign_in``, sign-in is off. ``allowed_origins`` are the origins, besides the aggregator's own,
    whose pages may act on it (``refuse_cross_site``); None reads them from PECTUS_ALLOWED_ORIGINS
    (``allowed_origins_from``, ConfigError for an entry that is not an origin)."""
    if allowed_origins is None:
        allowed_origins = allowed_origins_from(os.environ)
    app = QuartTrio(__name__, static_folder=None)
    app.extensions["pectus.sign_in"] = sign_in if sign_in is not None else SignIn(AuthConfig())
    app.extensions["pectus.download_tickets"] = DownloadTickets()
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # keep documents in the order they were written (OpenAPI reads better)
    for route in ROUTES:
        if route.method == "WEBSOCKET":
            app.add_websocket(route.path, route.endpoint, _view(route, backend))
        else:
            app.add_url_rule(route.path, route.endpoint, _view(route, backend), methods=[route.method])

    @app.before_request
    async def cross_site() -> None:
        refuse_cross_site(allowed_origins)

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return _error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        response = _error_response(ApiError(error.code or 500, error.description or error.name))
        # keep what the status needs besides the body, e.g. Allow on a 405
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        if error.code == 413:
            # The rest of the oversized body was never read: the connection cannot carry another
            # request (the client's next one would wait on it forever), so it ends here.
            response.headers["Connection"] = "close"
        return response

    @app.after_request
    async def no_store(response: Response) -> Response:
        # live process data: a cached answer is a wrong answer (the UI's files set their own policy)
        if "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response

    return app
