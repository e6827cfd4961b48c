"""Logging: JSON lines off a terminal, and no secret ever reaches the output."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import SecretStr

from src.utils.logger import REDACTED, configure_logging, get_logger


@pytest.fixture
def json_stream() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level="DEBUG", log_format="json", secrets=["sk-live-very-secret"], stream=stream)
    return stream


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_events_are_json_lines_with_fields(json_stream: io.StringIO) -> None:
    get_logger("t").info("order.filled", symbol="KRW-BTC", identifier="bot-1")
    (line,) = _lines(json_stream)
    assert line["event"] == "order.filled"
    assert line["symbol"] == "KRW-BTC"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")


def test_sensitive_keys_secretstr_and_known_secrets_are_redacted(json_stream: io.StringIO) -> None:
    # Given secrets passed in every way a careless caller might
    get_logger("t").warning(
        "request.sent",
        api_key="plain-key-123",
        headers={"Authorization": "Bearer abc.def.ghi", "Accept": "json"},
        secret=SecretStr("s3cr3t!"),
        note="the key sk-live-very-secret leaked into text",
        url="postgresql://trader:pw12345@db/trader",
    )
    (line,) = _lines(json_stream)
    # Then none of them appears in the output
    raw = json_stream.getvalue()
    for secret in ("plain-key-123", "abc.def.ghi", "s3cr3t!", "sk-live-very-secret", "pw12345"):
        assert secret not in raw
    assert line["api_key"] == REDACTED
    assert line["headers"]["Authorization"] == REDACTED
    assert line["headers"]["Accept"] == "json"
    assert REDACTED in line["note"]


def test_stdlib_logging_goes_through_the_same_redaction(json_stream: io.StringIO) -> None:
    logging.getLogger("third.party").error("calling with Bearer tok-987654321 and sk-live-very-secret")
    (line,) = _lines(json_stream)
    assert line["logger"] == "third.party"
    assert "tok-987654321" not in line["event"]
    assert "sk-live-very-secret" not in line["event"]


def test_console_format_is_readable_text() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", log_format="console", stream=stream)
    get_logger("t").info("cycle.started", symbol="KRW-BTC")
    output = stream.getvalue()
    assert "cycle.started" in output
    assert "symbol=KRW-BTC" in output
    assert not output.lstrip().startswith("{")


def test_token_counts_are_not_mistaken_for_tokens(json_stream: io.StringIO) -> None:
    get_logger("t").info("ai.answered", prompt_tokens=812, completion_tokens=24, refresh_token="r-abc-123")
    (line,) = _lines(json_stream)
    assert line["prompt_tokens"] == 812
    assert line["completion_tokens"] == 24
    assert line["refresh_token"] == REDACTED


def test_uvicorn_loggers_with_their_own_handlers_are_routed_through_the_redactor() -> None:
    # Given uvicorn's command line has given its loggers a handler of their own (it does so before the app loads)
    theirs = io.StringIO()
    logging.getLogger("uvicorn").handlers = [logging.StreamHandler(theirs)]
    logging.getLogger("uvicorn").propagate = False
    stream = io.StringIO()
    configure_logging(level="INFO", log_format="json", secrets=["sk-live-very-secret"], stream=stream)
    # When uvicorn logs an exception of the app
    try:
        raise RuntimeError("upstream refused sk-live-very-secret")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    # Then it is one of our JSON lines, redacted, and uvicorn's own handler wrote nothing
    (line,) = _lines(stream)
    assert line["event"] == "Exception in ASGI application"
    assert line["exception"][0]["exc_value"] == f"upstream refused {REDACTED}"
    assert theirs.getvalue() == ""


def test_a_sentry_dsn_key_is_redacted_but_a_plain_user_name_is_kept(json_stream: io.StringIO) -> None:
    get_logger("t").info("dsn", url="https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/42")
    get_logger("t").info("db", where="postgresql://trader@db:5432/trader")
    first, second = _lines(json_stream)
    assert "0123456789abcdef" not in first["url"]
    assert second["where"] == "postgresql://trader@db:5432/trader"
