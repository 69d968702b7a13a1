"""Error reporting to Sentry: off unless SENTRY_DSN is set, and never with personal data.

``init_sentry`` turns on the SDK with logging only: warnings and errors become Sentry events,
lower levels breadcrumbs. Personal data stays off (the SDK's default, which is not changed here),
request bodies and local variables are not sent, and events carry tags that locate the problem without naming a person: the component, the
engine id (host name and instrument), the UOD's location, and the actor that failed.
"""

from __future__ import annotations

import logging
import os
from typing import Any

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}


def init_sentry(component: str, event_level: str = "WARNING", tags: dict[str, str] | None = None) -> bool:
    """Initialise Sentry when SENTRY_DSN is set; return whether it is on."""
    dsn = os.environ.get("SENTRY_DSN", "").strip()
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    from pectus import __version__

    sentry_sdk.init(
        dsn=dsn,
        release=f"pectus@{__version__}",
        default_integrations=False,
        integrations=[LoggingIntegration(level=logging.INFO, event_level=LEVELS[event_level])],
        include_local_variables=False,
        max_request_body_size="never",
        server_name="",  # the engine id tag names the machine; nothing else should
    )
    sentry_sdk.set_tag("component", component)
    for key, value in (tags or {}).items():
        sentry_sdk.set_tag(key, value)
    return True


def report_crash(path: str, error: BaseException) -> None:
    """An actor crashed: an event tagged with the actor's path (no-op when Sentry is off)."""
    import sentry_sdk

    if sentry_sdk.get_client().is_active():
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("actor", path)
            sentry_sdk.capture_exception(error)


def flush(timeout: float = 2.0) -> Any:
    import sentry_sdk

    if sentry_sdk.get_client().is_active():
        sentry_sdk.flush(timeout)
