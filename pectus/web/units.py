"""A unit's live values and the requests a user makes of it: control, method, inject, process
values, cancel and force. Each request goes to the unit through ``Backend.request`` and its
``Outcome`` becomes the answer (see ``Outcome`` for which refusal is a 409 and which a 422).
"""

from __future__ import annotations

from pectus.web.api import ApiError, Backend, Handler, current_identity

CONTROLS = ("Start", "Stop", "Pause", "Unpause", "Hold", "Unhold", "Restart")


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


async def process_values(backend: Backend, unit: str) -> list[dict]:
    merged = merge_process_values(backend.views.process_values(unit), backend.live_values(unit))
    if merged is None:
        raise ApiError(404, f"unknown process unit {unit!r}")
    return merged


async def trend(backend: Backend, unit: str) -> dict[str, list[list]]:
    """The unit's rolling window of recent values; empty while it fills (a unit not heard from
    since the aggregator started)."""
    series = backend.trend(unit)
    if series is None:
        if backend.views.unit(unit) is None:
            raise ApiError(404, f"unknown process unit {unit!r}")
        return {}
    return series


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


async def control(backend: Backend, body: dict, unit: str) -> dict:
    return await _ask(backend, unit, "control", {"command": body["command"]})


async def save_method(backend: Backend, body: dict, unit: str) -> dict:
    return await _ask(backend, unit, "save_method", {"lines": body["lines"], "version": int(body["version"])}, "lines")


async def inject(backend: Backend, body: dict, unit: str) -> dict:
    return await _ask(backend, unit, "inject", {"code": body["code"]}, "code")


async def set_process_value(backend: Backend, body: dict, unit: str, tag: str) -> dict:
    detail = {"tag": tag, "value": body["value"]} | ({"unit": body["unit"]} if "unit" in body else {})
    return await _ask(backend, unit, "process_value", detail, "value")


def run_log_item(kind: str) -> Handler:
    """Cancel or force a run-log item: no body, the item is in the path."""

    async def handler(backend: Backend, unit: str, item: str) -> dict:
        return await _ask(backend, unit, kind, {"item": item})

    return handler
