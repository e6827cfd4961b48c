"""Sentry for both processes (API and scheduler), with secrets scrubbed before anything leaves.

Call ``init_sentry(settings, "api")`` or ``init_sentry(settings, "scheduler")`` once at start-up, after
``configure_logging``. Without ``SENTRY_DSN`` it does nothing. Every event, transaction and breadcrumb goes
through the same ``SecretRedactor`` as the logs: values under sensitive keys (tokens, keys, passwords,
``Authorization``, cookies) are replaced and every known secret value is cut out of every string.
"""

from __future__ import annotations

from typing import Any

import sentry_sdk

from src.config.settings import Settings
from src.utils.logger import REDACTED, get_logger, redactor

log = get_logger(__name__)

_SENSITIVE_HEADERS = ("authorization", "cookie", "set-cookie", "x-api-key", "proxy-authorization")


def _scrub_request(request: dict[str, Any]) -> None:
    headers = request.get("headers")
    if isinstance(headers, dict):
        for name in list(headers):
            if name.lower() in _SENSITIVE_HEADERS:
                headers[name] = REDACTED
    if request.get("cookies"):
        request["cookies"] = REDACTED


def scrub_event(event: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """``before_send``: the event with secrets, credentials and cookies removed."""
    request = event.get("request")
    if isinstance(request, dict):
        _scrub_request(request)
    return redactor.scrub(event)


def scrub_breadcrumb(crumb: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    return redactor.scrub(crumb)


def init_sentry(settings: Settings, process_name: str) -> bool:
    """Initialise sentry-sdk when ``SENTRY_DSN`` is set; returns whether Sentry is now active."""
    config = settings.observability
    dsn = config.sentry_dsn.get_secret_value() if config.sentry_dsn else ""
    if not dsn:
        return False
    redactor.register(settings.secret_values())
    sentry_sdk.init(
        dsn=dsn,
        environment=config.environment,
        release=config.release,
        traces_sample_rate=config.sentry_traces_sample_rate,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
    )
    sentry_sdk.set_tag("process", process_name)
    sentry_sdk.set_tag("trading_mode", str(settings.trading.mode))
    log.info("sentry.enabled", process=process_name, environment=config.environment, release=config.release)
    return True


def close_sentry(timeout_seconds: float = 2.0) -> None:
    """Flush queued events and stop the transport (call at shutdown)."""
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout_seconds)
        sentry_sdk.get_global_scope().set_client(None)
