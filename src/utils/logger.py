"""Structured logging: console on a terminal, JSON lines otherwise, secrets always redacted.

Exceptions are rendered to text (console) or to dicts (JSON) *before* the redactor runs, and without the
frames' local variables, so neither a message, a chained cause nor a variable can carry a secret out.
``install_excepthooks`` sends what escapes to the interpreter through the same redactor.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable, MutableMapping
from types import TracebackType
from typing import Any
from urllib.parse import quote, quote_plus

import structlog
from pydantic import SecretStr
from structlog.tracebacks import ExceptionDictTransformer

REDACTED = "***REDACTED***"

_SENSITIVE_KEY = re.compile(
    r"(secret|password|passwd|token|api[_-]?key|access[_-]?key|authorization|cookie|dsn|credential|jwt)",
    re.IGNORECASE,
)
_COUNT_KEY = re.compile(r"_tokens$|^tokens_(used|count)$", re.IGNORECASE)  # prompt_tokens is a count
# Secrets recognised by their shape, registered or not (applied in this order)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9\-_.=+/]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+(@)")  # scheme://user:password@host
_URL_USER_ONLY = re.compile(r"(://)[^:/@\s]{16,}(@)")  # scheme://key@host: a Sentry DSN's key, not a user name
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
_TELEGRAM_TOKEN = re.compile(r"\b(bot)?\d{5,12}:[A-Za-z0-9_-]{30,}")
_KEY_VALUE = re.compile(  # password=..., ?token=..., "api_key": "..." (a quoted key and value: JSON or a repr)
    r"""(\b(?:password|passwd|pwd|secret|secret[_-]?key|access[_-]?key|api[_-]?key|token|jwt)"""
    r"""(?:\s*=\s*['"]?|['"]\s*:\s*['"]))(?!\*\*\*)[^\s'"&,;)}\]]+""",
    re.IGNORECASE,
)


_PASSED_THROUGH = frozenset({"exc_info", "_record", "_from_structlog"})


def _is_sensitive_key(key: str) -> bool:
    return bool(_SENSITIVE_KEY.search(key)) and not _COUNT_KEY.search(key)


class SecretRedactor:
    """A structlog processor that scrubs secrets from every event.

    Values under sensitive keys are replaced, ``SecretStr`` values never leave as plain text,
    and any registered secret value is cut out of every string wherever it appears.
    """

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._ordered: list[str] = []

    def register(self, values: Iterable[str]) -> None:
        """Cut these values out of every string, also as they appear in URLs, JSON and reprs."""
        for value in values:
            if value and len(value) >= 4:
                self._known.update({value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]})
                self._known.add(repr(value)[1:-1])
        self._ordered = sorted(self._known, key=len, reverse=True)  # a secret inside a longer one goes last

    def scrub_text(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
        text = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}\g<2>", text)
        text = _URL_USER_ONLY.sub(rf"\g<1>{REDACTED}\g<2>", text)
        text = _JWT.sub(REDACTED, text)
        text = _OPENAI_KEY.sub(REDACTED, text)
        text = _TELEGRAM_TOKEN.sub(lambda match: f"{match.group(1) or ''}{REDACTED}", text)
        return _KEY_VALUE.sub(rf"\g<1>{REDACTED}", text)

    def scrub(self, value: Any, key: str | None = None, objects_as_text: bool = False) -> Any:
        """``value`` without secrets; with ``objects_as_text`` other objects become their scrubbed ``str``
        (a renderer would otherwise print their ``repr`` or ``str`` unscrubbed)."""
        if key is not None and _is_sensitive_key(key) and value not in (None, "", False):
            return REDACTED
        if isinstance(value, SecretStr):
            return REDACTED
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, MutableMapping):
            return {k: self.scrub(v, str(k), objects_as_text) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            items = [self.scrub(item, None, objects_as_text) for item in value]
            return items if isinstance(value, (set, frozenset)) or hasattr(value, "_fields") else type(value)(items)
        if objects_as_text and not isinstance(value, (int, float, bool, type(None))):
            return self.scrub_text(str(value))
        return value

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key in _PASSED_THROUGH:  # the exception and the log record: rendered later, by code that scrubs
                continue
            event_dict[key] = self.scrub(event_dict[key], None if key == "event" else key, objects_as_text=True)
        return event_dict


redactor = SecretRedactor()


def format_exception_safely(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> str:
    """The standard traceback (message and chained causes, no local variables), secrets redacted."""
    return redactor.scrub_text("".join(traceback.format_exception(exc_type, exc, tb)))


def _report_uncaught(what: str, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """One ``uncaught_exception`` log event (a JSON line in JSON format), or redacted text on stderr."""
    if logging.getLogger().handlers:
        logging.getLogger("uncaught").critical(what, exc_info=(exc_type, exc, tb))
    else:
        sys.stderr.write(f"{what}:\n{format_exception_safely(exc_type, exc, tb)}")


def install_excepthooks() -> None:
    """Route exceptions nobody caught (main thread and other threads) through the redactor."""

    def main_hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        _report_uncaught("uncaught_exception", exc_type, exc, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        _report_uncaught(f"uncaught_exception in thread {name}", args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = main_hook
    threading.excepthook = thread_hook


# Exceptions become text or dicts here, before the redactor; frame locals are never rendered.
_exception_as_dicts = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
_exception_as_text = structlog.processors.format_exc_info


# uvicorn's command line gives these loggers handlers of their own before the app is imported
_LOGGERS_WITH_OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def _render_as_json(log_format: str, stream: Any) -> bool:
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    return not (hasattr(stream, "isatty") and stream.isatty())


def configure_logging(
    level: str = "INFO",
    log_format: str = "auto",
    secrets: Iterable[str] = (),
    stream: Any = None,
) -> None:
    """Configure structlog and route the standard library's logging through the same pipeline."""
    stream = stream or sys.stderr
    redactor.register(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redactor,
    ]
    as_json = _render_as_json(log_format, stream)
    renderer: Any = (
        structlog.processors.JSONRenderer(default=lambda value: redactor.scrub_text(str(value)))
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=hasattr(stream, "isatty") and stream.isatty(),
            exception_formatter=structlog.dev.plain_traceback,  # never rich's: it prints frame locals
        )
    )
    render_exception = _exception_as_dicts if as_json else _exception_as_text
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, render_exception, redactor, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "apscheduler.executors.default", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for own_handlers in _LOGGERS_WITH_OWN_HANDLERS:  # their formatters would print tracebacks unredacted
        logger = logging.getLogger(own_handlers)
        logger.handlers = []
        logger.propagate = True

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
