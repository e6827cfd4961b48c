"""Sentry for both processes (API and scheduler), with secrets scrubbed before anything leaves.

Call ``init_sentry(settings, "api")`` or ``init_sentry(settings, "scheduler")`` once at start-up, after
``configure_logging``. Without ``SENTRY_DSN`` it does nothing. Every event, transaction and breadcrumb goes
through the same ``SecretRedactor`` as the logs: values under sensitive keys (tokens, keys, passwords,
``Authorization``, cookies) are replaced and every known secret value is cut out of every string, exception
values and chained exceptions included. Frames are sent without their local variables (never collected, and
dropped again should an event carry them), and log parameters, extra data and breadcrumb data are sent as
scrubbed text.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from src.config.settings import Settings
from src.utils.logger import REDACTED, get_logger, redactor

if TYPE_CHECKING:  # sentry-sdk itself is imported only when SENTRY_DSN is set (a quarter second at start-up)
    from sentry_sdk.types import Event, Hint

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


def _drop_frame_variables(event: dict[str, Any]) -> None:
    for section in ("exception", "threads"):
        container = event.get(section)
        values = container.get("values") if isinstance(container, dict) else None
        for value in values if isinstance(values, list) else ():
            stacktrace = value.get("stacktrace") if isinstance(value, dict) else None
            frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
            for frame in frames if isinstance(frames, list) else ():
                if isinstance(frame, dict):
                    frame.pop("vars", None)


def scrub_event(event: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """``before_send``: the event with secrets, credentials, cookies and frame variables removed."""
    request = event.get("request")
    if isinstance(request, dict):
        _scrub_request(request)
    _drop_frame_variables(event)
    for section in ("extra", "logentry", "breadcrumbs"):  # free-form: objects whose repr may hold a secret
        if section in event:
            event[section] = redactor.scrub(event[section], objects_as_text=True)
    return redactor.scrub(event)


def scrub_breadcrumb(crumb: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    return redactor.scrub(crumb, objects_as_text=True)


def init_sentry(settings: Settings, process_name: str) -> bool:
    """Initialise sentry-sdk when ``SENTRY_DSN`` is set; returns whether Sentry is now active."""
    config = settings.observability
    dsn = config.sentry_dsn.get_secret_value() if config.sentry_dsn else ""
    if not dsn:
        return False
    redactor.register(settings.secret_values())
    import sentry_sdk

    sentry_sdk.init(
        dsn=dsn,
        environment=config.environment,
        release=config.release,
        traces_sample_rate=config.sentry_traces_sample_rate,
        # sentry types events as a TypedDict; at run time they are the plain dicts scrub_event walks
        before_send=cast("Callable[[Event, Hint], Event | None]", scrub_event),
        before_send_transaction=cast("Callable[[Event, Hint], Event | None]", scrub_event),
        before_breadcrumb=scrub_breadcrumb,
        include_local_variables=False,  # a frame's variables hold passwords, keys and tokens
    )
    sentry_sdk.set_tag("process", process_name)
    sentry_sdk.set_tag("trading_mode", str(settings.trading.mode))
    log.info("sentry.enabled", process=process_name, environment=config.environment, release=config.release)
    return True


def close_sentry(timeout_seconds: float = 2.0) -> None:
    """Flush queued events and stop the transport (call at shutdown)."""
    sentry_sdk = sys.modules.get("sentry_sdk")
    if sentry_sdk is None:  # never initialised in this process
        return
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout_seconds)
        sentry_sdk.get_global_scope().set_client(None)
