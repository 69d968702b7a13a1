"""What every route of the web API shares: the backend it serves, who is asking, errors, request
bodies, cross-site refusal, and the two generic GET handlers.

Everything the web layer knows about the rest of the aggregator is the ``Backend`` protocol: the
Projector's query methods (``views``), the freshest tag values, a way to forward a user's request
to a unit, a stream of deltas and the exports. The tests drive it with a fake backend.

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
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import trio
from quart import current_app, g, request

from pectus.actors.ui_hub import Subscription
from pectus.events.domain import Actor
from pectus.web.auth import ConfigError, DownloadTickets, Identity, SignIn

JSON = "application/json"

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
    # The Projector: query methods returning JSON-able values (None = unknown), or awaitables of
    # them (a finished run's views loaded first: pectus.actors.aggregator.Views).
    views: Any

    def live_values(self, unit_id: str) -> list[dict] | None:
        """Freshest tag values ``{name, value, unit, time, simulated}``; None for an unknown unit."""
        ...

    def trend(self, unit_id: str) -> dict[str, list[list]] | None:
        """The unit's rolling window of recent values, shaped as a plot series
        (``pectus.projections.trend``); None for a unit whose UOD was not described since start."""
        ...

    async def request(self, unit_id: str, request: str, detail: dict, user: Actor) -> Outcome:
        """Forward a user's request: control {command} | inject {code} | save_method {lines,
        version} | cancel {item} | force {item} | process_value {tag, value, unit?}.
        Raises KeyError for an unknown or offline unit."""
        ...

    def subscribe(self) -> Subscription: ...

    def csv(self, run_id: str) -> Iterator[str] | None | Awaitable[Iterator[str] | None]:
        """The run's CSV export line by line; None for an unknown run (or an awaitable of either:
        the run's views loaded first). Called in the loop; the lines are pulled in worker threads,
        one at a time, so they must not read the views."""
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


async def json_body(schema: Mapping[str, Any]) -> dict[str, Any]:
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

    The own origin is taken as the request arrives - the scheme and the Host, and the same Host
    over https, which is how a page reaches the aggregator through a proxy that ends TLS (a page
    of another site cannot claim this host's origin). This app honours no X-Forwarded-* header
    (nothing here can tell a trusted proxy's from a client's), so behind a proxy that changes the
    host, the public origin is listed in ``allowed``.
    """
    if request.method in SAFE_METHODS or request.routing_exception is not None:
        return
    origin = request.headers.get("Origin")
    if origin is not None:
        own = origin_of(f"{request.scheme}://{request.host}")
        claimed = origin_of(origin)
        if claimed is None or (claimed not in (own, origin_of(f"https://{request.host}")) and claimed not in allowed):
            raise ApiError(403, f"a request from the origin {origin!r} is refused: only pages of this aggregator "
                                f"({own}) and of origins listed in {ALLOWED_ORIGINS_VARIABLE} may act")
    if request.mimetype != JSON:
        sent = repr(request.mimetype) if request.mimetype else "no Content-Type"
        raise ApiError(415, f"send {request.method} requests as JSON with Content-Type: {JSON} (got {sent})")


# -- handlers ---------------------------------------------------------------------------------
# Each handler takes the backend, the validated ``body`` when its route has a schema, and the
# path parameters; it returns a JSON value or a ready Response. The handlers of each resource
# live in its module (units, exports, editor, pages); these two serve units and runs alike.

Handler = Callable[..., Awaitable[Any]]
NOUNS = {"unit": "process unit", "run": "run"}


def projection(query: str) -> Handler:
    """A GET answered by one Projector query of the route's single path parameter."""

    async def handler(backend: Backend, **params: str) -> Any:
        ((key, value),) = params.items()
        result = getattr(backend.views, query)(value)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            raise ApiError(404, f"unknown {NOUNS[key]} {value!r}")
        return result

    return handler


def listing(query: str) -> Handler:
    """A GET answered by one parameterless Projector query."""

    async def handler(backend: Backend) -> Any:
        return visible(current_identity(), getattr(backend.views, query)())

    return handler


def current_sign_in() -> SignIn:
    """The app's sign-in (``create_app``)."""
    return current_app.extensions["pectus.sign_in"]


def current_tickets() -> DownloadTickets:
    """The app's download tickets (``create_app``)."""
    return current_app.extensions["pectus.download_tickets"]
