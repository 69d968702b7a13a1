"""The aggregator's web surface: JSON REST, one live WebSocket and the OpenAPI description.

``create_app(backend, sign_in)`` builds the Quart (trio) app; ``Backend`` is all it needs from
the rest of the aggregator, ``SignIn`` (``pectus.web.auth``) tells it who is asking. See
``pectus.web.app``.
"""

from pectus.web.app import Backend, Delta, Outcome, Subscription, create_app, openapi_document

__all__ = ["Backend", "Delta", "Outcome", "Subscription", "create_app", "openapi_document"]
