"""Sentry through the real sentry-sdk transport to a fake envelope endpoint on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sentry_sdk

from backend.app.core.observability import close_sentry, init_sentry, scrub_event
from src.config.settings import Settings, load_settings
from src.utils.logger import REDACTED
from tests.fakes.sentry_server import FakeSentry

OPENAI_KEY = "sk-live-openai-secret-0123456789"
TELEGRAM_TOKEN = "987654321:AAHsecretTelegramToken_abcdefghijkl"
BEARER = "eyJhbGciOiJIUzI1NiJ9.payload.signature"


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    with FakeSentry() as fake:
        yield fake
    close_sentry()


def _settings(monkeypatch: pytest.MonkeyPatch, dsn: str | None) -> Settings:
    for name, value in {
        "SENTRY_DSN": dsn,
        "APP_ENV": "production",
        "APP_RELEASE": "ai-trader@9.9.9",
        "OPENAI_API_KEY": OPENAI_KEY,
        "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
    }.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return load_settings(env_file=None)


def _fail_with_secrets_in_scope() -> None:
    api_key = OPENAI_KEY  # a local variable Sentry would otherwise ship with the stack frame
    url = f"https://api.example.test/v1?token={TELEGRAM_TOKEN}"
    raise RuntimeError(f"upstream refused key {api_key} at {url}")


def test_event_arrives_with_environment_and_release_and_without_secrets(
    fake_sentry: FakeSentry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Sentry initialised for the scheduler with secrets in the settings
    assert init_sentry(_settings(monkeypatch, fake_sentry.dsn), "scheduler") is True
    # When an exception is captured, and an event carrying request headers and cookies
    try:
        _fail_with_secrets_in_scope()
    except RuntimeError:
        sentry_sdk.capture_exception()
    sentry_sdk.capture_event(
        {
            "message": "api request failed",
            "level": "error",
            "request": {
                "url": "http://127.0.0.1:8000/api/v1/bot/control",
                "headers": {"Authorization": f"Bearer {BEARER}", "Cookie": "session=abc123", "X-Api-Key": "k-1234"},
                "cookies": {"session": "abc123"},
            },
        }
    )
    sentry_sdk.flush(timeout=5)
    # Then both events reached the endpoint, tagged, with no secret anywhere in what crossed the wire
    events = fake_sentry.events()
    assert len(events) == 2
    assert {event["environment"] for event in events} == {"production"}
    assert {event["release"] for event in events} == {"ai-trader@9.9.9"}
    assert {event["tags"]["process"] for event in events} == {"scheduler"}
    wire = json.dumps(events)
    for secret in (OPENAI_KEY, TELEGRAM_TOKEN, BEARER, "abc123", "k-1234"):
        assert secret not in wire
    request = events[1]["request"]
    assert request["headers"]["Authorization"] == REDACTED
    assert request["headers"]["Cookie"] == REDACTED
    assert request["cookies"] == REDACTED
    assert "RuntimeError" in wire


def test_without_dsn_sentry_stays_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no SENTRY_DSN, When initialised, Then nothing is set up
    assert init_sentry(_settings(monkeypatch, None), "api") is False
    assert not sentry_sdk.get_client().is_active()


def test_scrub_event_redacts_sensitive_keys_in_nested_data() -> None:
    # Given an event with credentials in extra data and breadcrumbs
    event = {
        "extra": {"password": "hunter22", "symbol": "KRW-BTC"},
        "breadcrumbs": {"values": [{"data": {"access_key": "AK-1234", "url": "postgresql://u:pw1234@db/x"}}]},
    }
    # When scrubbed, Then credentials are gone and ordinary data stays
    scrubbed = scrub_event(event)
    assert scrubbed["extra"] == {"password": REDACTED, "symbol": "KRW-BTC"}
    crumb = scrubbed["breadcrumbs"]["values"][0]["data"]
    assert crumb["access_key"] == REDACTED
    assert "pw1234" not in crumb["url"]
