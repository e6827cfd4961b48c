"""Structured logging: console on a terminal, JSON lines otherwise, secrets always redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from pydantic import SecretStr

REDACTED = "***REDACTED***"

_SENSITIVE_KEY = re.compile(
    r"(secret|password|passwd|token|api[_-]?key|access[_-]?key|authorization|cookie|dsn|credential|jwt)",
    re.IGNORECASE,
)
_COUNT_KEY = re.compile(r"_tokens$|^tokens_(used|count)$", re.IGNORECASE)  # prompt_tokens is a count
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9\-_.=+/]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+(@)")
_TELEGRAM_TOKEN = re.compile(r"bot\d{5,}:[A-Za-z0-9_-]{20,}")


def _is_sensitive_key(key: str) -> bool:
    return bool(_SENSITIVE_KEY.search(key)) and not _COUNT_KEY.search(key)


class SecretRedactor:
    """A structlog processor that scrubs secrets from every event.

    Values under sensitive keys are replaced, ``SecretStr`` values never leave as plain text,
    and any registered secret value is cut out of every string wherever it appears.
    """

    def __init__(self) -> None:
        self._known: set[str] = set()

    def register(self, values: Iterable[str]) -> None:
        self._known.update(value for value in values if value and len(value) >= 4)

    def scrub_text(self, text: str) -> str:
        for secret in self._known:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
        text = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}\g<2>", text)
        return _TELEGRAM_TOKEN.sub(f"bot{REDACTED}", text)

    def scrub(self, value: Any, key: str | None = None) -> Any:
        if key is not None and _is_sensitive_key(key) and value not in (None, "", False):
            return REDACTED
        if isinstance(value, SecretStr):
            return REDACTED
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, MutableMapping):
            return {k: self.scrub(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub(item) for item in value)
        return value

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self.scrub(event_dict[key], None if key == "event" else key)
        return event_dict


redactor = SecretRedactor()


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
        structlog.processors.JSONRenderer(default=str)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=hasattr(stream, "isatty") and stream.isatty())
    )
    final: list[Any] = [structlog.processors.dict_tracebacks] if as_json else []
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, *final, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "apscheduler.executors.default", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
