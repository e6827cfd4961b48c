"""Authentication (API key, OAuth2 password → JWT), public reads, start-up refusal, CORS, rate limit, body limit,
security headers, and errors that leak nothing."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from structlog.testing import capture_logs

from backend.app.core import security
from backend.app.core.config import check_api_settings
from backend.app.main import create_app
from backend.tests.conftest import (
    ADMIN_PASSWORD,
    API_KEY,
    JWT_SECRET,
    AppFactory,
    SettingsFactory,
    app_of,
)
from src.exceptions import ConfigurationError

CONTROL = {"action": "pause", "reason": "security test"}


async def _token(client: httpx.AsyncClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> httpx.Response:
    return await client.post("/api/v1/auth/token", data={"username": username, "password": password})


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/v1/trades"), ("GET", "/api/v1/bot/status"), ("POST", "/api/v1/bot/control")]
)
async def test_no_credentials_is_401(anonymous: httpx.AsyncClient, method: str, path: str) -> None:
    response = await anonymous.request(method, path, json=CONTROL if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_api_key_is_401(make_client: AppFactory) -> None:
    client = await make_client(headers={"X-API-Key": API_KEY[:-1] + "x"})
    response = await client.get("/api/v1/trades")
    assert (response.status_code, response.json()["detail"]) == (401, "invalid API key")


async def test_password_flow_issues_a_token_that_reads_and_writes(anonymous: httpx.AsyncClient) -> None:
    # When the admin logs in with the right password
    issued = await _token(anonymous)
    assert issued.status_code == 200
    token = issued.json()
    assert (token["token_type"], token["expires_in"]) == ("bearer", 3600)
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    # Then the bearer token reads and writes, and writes are attributed to the user
    assert (await anonymous.get("/api/v1/trades", headers=headers)).status_code == 200
    control = await anonymous.post("/api/v1/bot/control", json=CONTROL, headers=headers)
    assert control.status_code == 200
    assert control.json()["requested_by"] == "user:admin"


@pytest.mark.parametrize(("username", "password"), [("admin", "wrong password"), ("root", ADMIN_PASSWORD)])
async def test_wrong_user_or_password_is_401(anonymous: httpx.AsyncClient, username: str, password: str) -> None:
    response = await _token(anonymous, username, password)
    assert (response.status_code, response.json()["detail"]) == (401, "wrong user name or password")


def _forged(secret: str = JWT_SECRET, minutes: int = 60, algorithm: str = "HS256") -> str:
    now = datetime.now(UTC)
    payload = {"sub": "admin", "iat": now, "exp": now + timedelta(minutes=minutes)}
    return jwt.encode(payload, secret if algorithm != "none" else None, algorithm=algorithm)


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        (security.create_access_token("admin", JWT_SECRET, 5, now=datetime.now(UTC) - timedelta(minutes=6)).token,
         "token expired"),
        (_forged(secret="another-secret-that-is-long-enough-0123456789"), "invalid token"),
        (_forged(algorithm="none"), "invalid token"),
        ("not.a.jwt", "invalid token"),
    ],
)  # fmt: skip
async def test_expired_forged_or_malformed_tokens_are_401(
    anonymous: httpx.AsyncClient, token: str, detail: str
) -> None:
    response = await anonymous.get("/api/v1/trades", headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.json()["detail"]) == (401, detail)


async def test_public_read_opens_reads_but_not_writes(make_client: AppFactory) -> None:
    client = await make_client(API_PUBLIC_READ="true")
    assert (await client.get("/api/v1/trades")).status_code == 200
    assert (await client.get("/api/v1/bot/config")).status_code == 200
    assert (await client.post("/api/v1/bot/control", json=CONTROL)).status_code == 401
    assert (await client.get("/api/v1/trades", headers={"X-API-Key": "wrong"})).status_code == 401


async def test_password_login_without_configuration_is_503(make_client: AppFactory) -> None:
    client = await make_client(API_ADMIN_PASSWORD_HASH="", API_JWT_SECRET="")
    response = await _token(client)
    assert response.status_code == 503
    assert "API_JWT_SECRET" in response.json()["detail"]


def test_non_loopback_bind_without_a_secret_refuses_to_start(make_settings: SettingsFactory) -> None:
    settings = make_settings(API_HOST="0.0.0.0", API_KEY="", API_JWT_SECRET="")
    with pytest.raises(ConfigurationError, match=r"API_HOST=0\.0\.0\.0 is not a loopback address"):
        create_app(settings)


def test_weak_secrets_warn_and_loopback_without_secret_starts(make_settings: SettingsFactory) -> None:
    warnings = check_api_settings(make_settings(API_HOST="0.0.0.0", API_KEY="short", API_JWT_SECRET=""))
    assert "API_KEY is shorter than 32 characters; use a long random value" in warnings
    assert create_app(make_settings(API_HOST="127.0.0.1", API_KEY="", API_JWT_SECRET="")) is not None


def test_a_malformed_password_hash_refuses_to_start(make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigurationError, match="API_ADMIN_PASSWORD_HASH"):
        create_app(make_settings(API_ADMIN_PASSWORD_HASH="plaintext-password"))


async def test_rate_limit_answers_429_with_retry_after_per_client(make_client: AppFactory) -> None:
    # Given a limit of three requests a minute
    client = await make_client(headers={"X-API-Key": API_KEY}, API_RATE_LIMIT_PER_MINUTE="3")
    # When a client sends a fourth
    statuses = [(await client.get("/api/v1/trades")).status_code for _ in range(3)]
    limited = await client.get("/api/v1/trades")
    # Then it is refused with a Retry-After
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    # And another client (by address, without the key) still has its own allowance
    assert (await client.get("/api/v1/bot/status", headers={"X-API-Key": ""})).status_code == 401
    # And health and metrics are never limited
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200


async def test_oversized_bodies_are_413(make_client: AppFactory) -> None:
    client = await make_client(headers={"X-API-Key": API_KEY}, API_MAX_BODY_BYTES="1024")
    big = {"action": "pause", "reason": "x" * 2000}
    assert (await client.post("/api/v1/bot/control", json=big)).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"action": "pause", "reason": "'
        for _ in range(10):
            yield b"y" * 200
        yield b'"}'

    streamed = await client.post("/api/v1/bot/control", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


async def test_security_headers_on_every_response(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/api/v1/trades", "/api/v1/nothing-here"):
        headers = (await client.get(path)).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"
        assert "default-src 'none'" in headers["content-security-policy"]


async def test_cors_allows_only_configured_origins_never_wildcard(make_client: AppFactory) -> None:
    client = await make_client(API_CORS_ORIGINS="http://grafana.local:3000")
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "X-API-Key"}
    allowed = await client.options("/api/v1/trades", headers={"Origin": "http://grafana.local:3000", **preflight})
    assert allowed.headers["access-control-allow-origin"] == "http://grafana.local:3000"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    refused = await client.options("/api/v1/trades", headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in refused.headers


def test_wildcard_cors_is_refused_by_settings(make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigurationError, match="API_CORS_ORIGINS"):
        make_settings(API_CORS_ORIGINS="*")


async def test_unexpected_errors_are_500_without_internals_or_secrets(client: httpx.AsyncClient) -> None:
    # Given a route that fails with a message holding a secret
    async def boom() -> None:
        raise RuntimeError(f"connect failed for password={JWT_SECRET}")

    app_of(client).router.add_api_route("/api/v1/boom", boom)
    # When it is called with credentials in the headers
    with capture_logs() as logs:
        response = await client.get("/api/v1/boom", headers={"Authorization": "Bearer abc.def.ghi"})
    # Then the client sees a plain 500, and neither the answer nor the log holds the secret or the headers
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert [entry["error"] for entry in logs if entry["event"] == "api.unhandled_error"] == ["RuntimeError"]
    everything = response.text + repr(logs)
    for secret in (JWT_SECRET, API_KEY, "abc.def.ghi"):
        assert secret not in everything


async def test_responses_never_carry_secrets(client: httpx.AsyncClient) -> None:
    for path in ("/openapi.json", "/api/v1/bot/config", "/api/v1/bot/status", "/metrics", "/ready"):
        text = (await client.get(path)).text
        for secret in (API_KEY, JWT_SECRET, "scrypt$"):
            assert secret not in text


def test_password_hash_round_trip_and_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stored = security.hash_password("a long enough password")
    assert security.verify_password("a long enough password", stored)
    assert not security.verify_password("a long enough passworD", stored)
    assert not security.verify_password("anything", "scrypt$broken")
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    assert security.main(["hash"]) == 0
    printed = capsys.readouterr().out.strip()
    assert security.verify_password("another long password", printed)
