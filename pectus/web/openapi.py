"""The OpenAPI 3.1 document of the API, made from the route table (``pectus.web.app.ROUTES``), so
it cannot drift from what the server does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pectus.web.api import JSON, MAX_DEPTH, SAFE_METHODS

if TYPE_CHECKING:
    from pectus.web.app import Route

PARAMETERS = {
    "unit": "process unit (engine) id, e.g. host-7_DemoUod",
    "run": "run id",
    "tag": "tag name, e.g. FT01",
    "item": "run-log item id",
    "file": "path of a UI file under /static",
    "subscription": "push subscription id (GET /api/push/subscriptions)",
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
    502: "what the unit's engine sent cannot be served (e.g. a process diagram that is not valid SVG)",
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
        operation["description"] = route.handler.__doc__
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


def describe(routes: Iterable[Route], version: str, sign_in: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every API route of ``routes`` (the UI's pages are not API),
    as this server answers them: with ``sign_in``, they require the X-Identity token."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
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
