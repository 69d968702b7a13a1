"""The aggregator's HTTP and WebSocket surface: a JSON REST API plus one live WebSocket.

The browser reads the state of units and runs with plain GETs and acts on a unit with POSTs.
It does not poll: it opens one WebSocket (``/api/ws``), says which units it follows, and gets
every change (a *delta*: unit, topic, data) as it happens. After (re)connecting it subscribes,
waits for the ``{"subscribed": [...]}`` acknowledgement, then refetches over REST; from then on
the deltas keep its copy fresh.

One table, ``ROUTES``, lists every route with its summary, parameters, request body schema and
responses. ``create_app`` registers the routes from it, request bodies are validated against
the schemas in it, and ``openapi_document`` describes the API from it, so the document cannot
drift from what the server does. The handlers live by resource: ``pectus.web.units`` (a unit's
values and requests), ``pectus.web.exports`` (a run's downloads), ``pectus.web.editor`` (the
method editor's vocabulary and lint), ``pectus.web.pages`` (the browser UI), ``pectus.web.live``
(the WebSocket); what they share - the ``Backend``, errors, bodies, cross-site refusal - is
``pectus.web.api``, the document's making ``pectus.web.openapi``.

Who is asking comes from ``pectus.web.auth`` (sign-in on: the ID token; off: what the client
says); every route marked ``signed_in`` checks it, and the roles of the unit or run in its path,
before its handler runs.

Nothing here blocks the Trio loop. The backend's queries are expected to be in-memory and cheap
(the Projector keeps its views in memory); exports are read and formatted in worker threads, a
chunk at a time; a slow browser is never waited for (its deltas are coalesced: pectus.web.live).
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from quart import Response, current_app, g, has_request_context, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from pectus.projections.views import Delta
from pectus.web import diagram, editor, exports, openapi, pages, units
from pectus.web.api import (JSON, SAFE_METHODS, ApiError, Backend, Handler, Outcome, Subscription, allowed_origins_from,
                            authorize, check, current_sign_in, current_tickets, json_body, listing, projection,
                            refuse_cross_site)
from pectus.web.auth import AuthConfig, DownloadTickets, SignIn, SignInError
from pectus.web.editor import SYSTEM_TAGS
from pectus.web.pages import STATIC_DIR
from pectus.web import push

# Imported from here by modules written before the split (pectus.web.live: _sign_in) and by tests.
__all__ = ["ApiError", "Backend", "Delta", "Outcome", "ROUTES", "Route", "STATIC_DIR", "SYSTEM_TAGS", "Subscription",
           "_sign_in", "authorize", "check", "create_app", "openapi_document"]
_sign_in = current_sign_in

# The live WebSocket. pectus.web.live imports what it uses from this module, so it comes once
# those names are bound (importing them from pectus.web.api instead would let it move up).
from pectus.web.live import live_socket as _live  # noqa: E402

MAX_BODY_BYTES = 1024 * 1024


async def _health(backend: Backend) -> Response:
    report = backend.health()
    response = current_app.json.response(report)
    response.status_code = 200 if report.get("status") == "ok" else 503
    return response


async def _version(backend: Backend) -> dict[str, str]:
    return {"version": backend.version}


async def _auth_config(backend: Backend) -> dict[str, Any]:
    return current_sign_in().config.browser_config()


async def _openapi(backend: Backend) -> dict[str, Any]:
    return openapi_document(backend.version, current_sign_in().config.enabled)


# -- the route table --------------------------------------------------------------------------

OUTCOME = {"type": "object", "required": ["accepted"], "properties": {"accepted": {"const": True}}}
# "standby": a standby aggregator's answer (503; pectus.actors.standby serves it, with "detail").
HEALTH = {"type": "object", "required": ["status"],
          "properties": {"status": {"enum": ["ok", "degraded", "broken", "failing", "standby"]},
                         "problem": {"type": "string"}, "detail": {"type": "string"}}}
# What a process value's tile can do: an entry (value_type int/float/str, with the rules the page
# checks before sending: pectus.uod.definition.UnitOperationDefinition.entry_rules) or a choice.
PROCESS_VALUE_COMMAND = {
    "type": "object",
    "required": ["name", "value_type"],
    "properties": {
        "name": {"type": "string"}, "value_type": {"enum": ["int", "float", "str", "choice", "auto", None]},
        "help": {"type": "string"}, "options": {"type": "array", "items": {"type": "string"}},
        "rules": {"type": ["object", "null"], "required": ["type"], "properties": {
            "type": {"enum": ["number", "choice", "text"]},
            "expected": {"type": "string", "description": "what a valid value is, in words: '0 to 100 %'"},
            "int_only": {"type": "boolean"}, "optional": {"type": "boolean"},
            "units": {"type": "array", "description": "the units that fit ('' for a number without unit), "
                      "each with the range in it", "items": {
                          "type": "object", "required": ["unit"],
                          "properties": {"unit": {"type": "string"}, "minimum": {"type": ["number", "null"]},
                                         "maximum": {"type": ["number", "null"]}}}},
            "options": {"type": "array", "items": {"type": "string"}}}}},
}
PROCESS_VALUE = {
    "type": "object",
    "required": ["name", "value"],
    "properties": {"name": {"type": "string"}, "value": {}, "unit": {"type": ["string", "null"]},
                   "time": {"type": ["string", "null"], "format": "date-time"}, "simulated": {"type": "boolean"},
                   "format": {"enum": ["duration", "date_time", None],
                              "description": "how to show the value: a duration (HH:MM:SS), a date and time"},
                   "decimals": {"type": ["integer", "null"], "description": "decimals to show the number with"},
                   "commands": {"type": "array", "items": PROCESS_VALUE_COMMAND}},
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
          listing("units"), "the units", {"type": "array"}),
    Route("GET", UNIT, "One process unit", projection("unit"), "the unit"),
    Route("GET", f"{UNIT}/process_values", "Current tag values; readings carry their commands",
          units.process_values, "the values", {"type": "array", "items": PROCESS_VALUE}),
    Route("GET", f"{UNIT}/control_state", "Whether the unit is running, paused, holding",
          projection("control_state"), "the control state"),
    Route("GET", f"{UNIT}/method", "The unit's method: lines, version, line states",
          projection("method"), "the method"),
    Route("GET", f"{UNIT}/run_log", "The current run's log", projection("run_log"), "the run log"),
    Route("GET", f"{UNIT}/error_log", "The current run's errors and warnings",
          projection("error_log"), "the error log"),
    Route("GET", f"{UNIT}/plot_configuration", "How the unit's plot is laid out",
          projection("plot_configuration"), "the plot configuration"),
    Route("GET", f"{UNIT}/plot_log", "The current run's plot series", projection("plot_series"), "the series"),
    Route("GET", f"{UNIT}/process_diagram", "The unit's process diagram (SVG, sanitised; 404 when it has none)",
          diagram.process_diagram, "the diagram", {"type": "string"}, diagram.MEDIA, errors=(502,)),
    Route("GET", f"{UNIT}/trend",
          "The unit's recent values (a rolling window kept in memory, also between runs), as a plot series",
          units.trend, "the series: per tag, [epoch seconds, value] where the value changed",
          {"type": "object", "additionalProperties": {"type": "array", "items": {
              "type": "array", "prefixItems": [{"type": "number"}, {}], "minItems": 2, "maxItems": 2}}}),
    Route("POST", f"{UNIT}/control", "Start, stop, pause, hold or restart the unit", units.control,
          "accepted", OUTCOME, errors=(409,),
          body={"type": "object", "required": ["command"],
                "properties": {"command": {"type": "string", "enum": list(units.CONTROLS)}}}),
    Route("POST", f"{UNIT}/method", "Save a new version of the method (optimistic concurrency)",
          units.save_method, "saved: the new version",
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
    Route("POST", f"{UNIT}/inject", "Run P-code now, beside the method", units.inject, "accepted", OUTCOME,
          errors=(409,),
          body={"type": "object", "required": ["code"],
                "properties": {"code": {"type": "string", "minLength": 1}}}),
    Route("POST", f"{UNIT}/process_values/<tag>", "Set a process value through its command",
          units.set_process_value, "accepted", OUTCOME, errors=(409,),
          body={"type": "object", "required": ["value"],
                "properties": {"value": {"type": ["string", "number"]}, "unit": {"type": "string"}}}),
    Route("POST", f"{UNIT}/run_log/<item>/cancel", "Cancel a run-log item", units.run_log_item("cancel"),
          "accepted", OUTCOME, errors=(409,)),
    Route("POST", f"{UNIT}/run_log/<item>/force", "Force a run-log item", units.run_log_item("force"),
          "accepted", OUTCOME, errors=(409,)),
    Route("POST", f"{UNIT}/analyze", "Diagnostics of a P-code text for this unit (the method editor's lint)",
          editor.diagnose, "the diagnostics, by line",
          {"type": "object", "required": ["diagnostics"], "properties": {"diagnostics": {"type": "array", "items": {
              "type": "object",
              "required": ["line", "end_line", "column", "end_column", "severity", "id", "message", "fixes"],
              "properties": {"line": {"type": "integer"}, "end_line": {"type": "integer"},
                             "column": {"type": "integer", "description": "1-based; 0: the whole line"},
                             "end_column": {"type": "integer", "description": "1-based, exclusive; 0: the end "
                                            "of the line. Each fix replaces the text from column to here"},
                             "severity": {"enum": ["error", "warning", "info"]}, "id": {"type": "string"},
                             "message": {"type": "string"},
                             "fixes": {"type": "array", "items": {"type": "string"}}}}}}},
          body={"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}),
    Route("GET", f"{UNIT}/vocabulary",
          "What P-code the unit understands: tags with units, UOD commands with examples, instructions",
          editor.vocabulary_route, "the vocabulary"),
    Route("GET", "/api/runs", "Recorded runs", listing("runs"), "the runs", {"type": "array"}),
    Route("GET", RUN, "One run", projection("run"), "the run"),
    Route("GET", f"{RUN}/method", "The run's method and its revisions", projection("run_method"), "the method"),
    Route("GET", f"{RUN}/run_log", "The run's log", projection("run_log_of"), "the run log"),
    Route("GET", f"{RUN}/error_log", "The run's errors and warnings", projection("run_error_log"),
          "the error log"),
    Route("GET", f"{RUN}/plot_configuration", "How the run's plot was laid out",
          projection("plot_configuration"), "the plot configuration"),
    Route("GET", f"{RUN}/plot_log", "The run's plot series", projection("plot_series"), "the series"),
    Route("GET", f"{RUN}/audit", "Who did what, when, during the run", projection("audit_trail"),
          "the audit trail"),
    Route("GET", f"{RUN}/csv", "The run's data as CSV (streamed download)",
          exports.export("csv", "csv", "text/csv", "\r\n"), "the CSV file", {"type": "string"}, "text/csv", ticket=True),
    Route("GET", f"{RUN}/events.jsonl", "The run's recorded events as JSON Lines (streamed download)",
          exports.export("events", "jsonl", "application/x-ndjson", "\n"), "one event per line",
          {"type": "string"}, "application/x-ndjson", ticket=True),
    Route("POST", f"{RUN}/download_ticket",
          "A link to one of the run's downloads that works once, within a minute, without a sign-in header",
          exports.download_ticket, "the link",
          {"type": "object", "required": ["url", "expires_in"],
           "properties": {"url": {"type": "string"}, "expires_in": {"type": "number"}}},
          body={"type": "object", "required": ["export"],
                "properties": {"export": {"type": "string", "enum": list(exports.EXPORTS)}}}),
    # Web Push (pectus.web.push): the browser's subscription, its choices, a test notification
    Route("GET", "/api/push/config", "What a browser subscribes to push notifications with: the aggregator's "
          "public key, the topics", push.config, "the push settings", push.CONFIG),
    Route("GET", "/api/push/subscriptions", "The caller's push subscriptions (one per browser)", push.subscriptions,
          "the subscriptions", {"type": "array", "items": push.SUBSCRIPTION}),
    Route("POST", "/api/push/subscriptions", "Subscribe a browser to push notifications, or change its topics "
          "and units", push.subscribe, "the subscription", push.SUBSCRIPTION, body=push.SUBSCRIBE_BODY),
    Route("POST", "/api/push/subscriptions/<subscription>/unsubscribe", "End a push subscription",
          push.unsubscribe, "accepted", OUTCOME, body=push.UNSUBSCRIBE_BODY),
    Route("POST", "/api/push/test", "Push a test notification to the caller's browsers, and say what became of "
          "each", push.test, "the deliveries", push.DELIVERIES, errors=(404,), body=push.TEST_BODY),
    Route("WEBSOCKET", "/api/ws", "Live deltas of followed units and of the unit and run lists", _live,
          signed_in=False),
    # the browser UI (not in the OpenAPI document); the pages sign in through the API
    Route("GET", "/", "The dashboard page", pages.page, "index.html", media="text/html", ui=True, signed_in=False),
    Route("GET", "/units/<unit>", "A process unit's page", pages.page, "index.html", media="text/html", ui=True,
          signed_in=False),
    Route("GET", "/runs/<run>", "A recorded run's page", pages.page, "index.html", media="text/html", ui=True,
          signed_in=False),
    Route("GET", "/auth-callback", "Where the provider sends the browser back after sign-in", pages.page,
          "index.html", media="text/html", ui=True, signed_in=False),
    Route("GET", "/sw.js", "The service worker that shows push notifications", pages.service_worker, "the script",
          media="text/javascript", ui=True, signed_in=False),
    Route("GET", "/static/<path:file>", "A file of the UI (modules, styles, vendored libraries)", pages.static_file,
          "the file", media="application/octet-stream", ui=True, signed_in=False),
)


def openapi_document(version: str, sign_in: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every API route in ROUTES (``pectus.web.openapi``)."""
    return openapi.describe(ROUTES, version, sign_in)


# -- the app ----------------------------------------------------------------------------------

def _view(route: Route, backend: Backend) -> Callable[..., Awaitable[Any]]:
    async def view(**params: Any) -> Any:
        if route.signed_in:
            ticket = request.args.get("ticket") if route.ticket else None
            try:
                g.identity = (current_tickets().redeem(ticket, request.path)
                              if ticket else await current_sign_in().identify(request.headers))
            except SignInError as error:
                raise ApiError(error.status, str(error)) from None
            authorize(backend.views, g.identity, params)
        if route.body is not None:
            params["body"] = await json_body(route.body)
        result = await route.handler(backend, **params)
        return result if isinstance(result, Response) or result is None else current_app.json.response(result)

    return view


def _error_response(error: ApiError) -> Response:
    response = current_app.json.response(error.body())
    response.status_code = error.status
    if has_request_context() and request.method not in SAFE_METHODS:
        # A refusal may come before the body was read (403 another site, 415, 401...): what is left of
        # it would be taken for the client's next request on this connection, which then waits for
        # ever. The connection ends with the answer; the client opens a new one.
        response.headers["Connection"] = "close"
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
    app.extensions["pectus.allowed_origins"] = allowed_origins  # the live socket checks them too (pectus.web.live)
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
        return response

    @app.after_request
    async def no_store(response: Response) -> Response:
        # live process data: a cached answer is a wrong answer (the UI's files set their own policy)
        if "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response

    return app
