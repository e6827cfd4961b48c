"""No secret in any output, ever: exceptions raised through code that holds every kind of secret.

Each secret sits in a local variable, in the exception's message and in its chained causes. The exception is
logged with ``log.exception`` in JSON and console formats and through the standard library's logging, and
captured by Sentry (the real sentry-sdk against the fake envelope endpoint); every output is searched for
every secret. End to end, the real scheduler runs on PostgreSQL through a URL with a password while PostgreSQL
goes away under it, and the entry points start with PostgreSQL unreachable: no output holds the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import jwt
import pytest
import sentry_sdk
from sqlalchemy.engine import make_url

from backend.app.core.observability import close_sentry, init_sentry
from backend.app.db.migrations import upgrade_to_head
from src.config.env import PROJECT_ROOT
from src.config.settings import Settings, load_settings
from src.utils.logger import configure_logging, get_logger, install_excepthooks, redactor
from tests.fakes.sentry_server import FakeSentry
from tests.support import database as database_support
from tests.support.tcp_proxy import TcpProxy

DB_PASSWORD = "pg-Pw-7f3a9c41e2d8"
DATABASE_URL = f"postgresql+asyncpg://trader:{DB_PASSWORD}@127.0.0.1:1/trader"
REDIS_PASSWORD = "redis-Pw-51c0b7e9aa"
UPBIT_ACCESS_KEY = "UpAcc0123456789abcdefGHIJKLmnopqrSTUVwx"
UPBIT_SECRET_KEY = "UpSec9876543210zyxwvuTSRQPonmlkjIHGFed"
UPBIT_JWT = jwt.encode({"access_key": UPBIT_ACCESS_KEY, "nonce": "5f1c7a0e-1b7e"}, UPBIT_SECRET_KEY, "HS256")
OPENAI_KEY = "sk-proj-Qw3rTy7Uio9PaSdF2gHjK4lZxC6vB"
TELEGRAM_TOKEN = "7412369851:AAHk3Jd9sLq0WzXe4RtYuIoP1aSdFgHjKlM"
API_KEY = "apikey-2b7d4e9f1a6c3e8b0d5f"
JWT_SECRET = "jwtsecret-8e1f4a7c2d9b6e3f0a5c"


def _secrets(dsn: str) -> dict[str, str]:
    return {
        "database password": DB_PASSWORD,
        "redis password": REDIS_PASSWORD,
        "Upbit access key": UPBIT_ACCESS_KEY,
        "Upbit secret key": UPBIT_SECRET_KEY,
        "Upbit bearer JWT": UPBIT_JWT,
        "OpenAI key": OPENAI_KEY,
        "Telegram token": TELEGRAM_TOKEN,
        "API key": API_KEY,
        "JWT secret": JWT_SECRET,
        "Sentry DSN": dsn,
        "Sentry DSN key": dsn.partition("://")[2].partition("@")[0],
    }


def _settings(monkeypatch: pytest.MonkeyPatch, sentry_dsn: str) -> Settings:
    for name, value in {
        "DATABASE_URL": DATABASE_URL,
        "API_RATE_LIMIT_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
        "TRADING_MODE": "paper",
        "UPBIT_ACCESS_KEY": UPBIT_ACCESS_KEY,
        "UPBIT_SECRET_KEY": UPBIT_SECRET_KEY,
        "OPENAI_API_KEY": OPENAI_KEY,
        "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
        "API_KEY": API_KEY,
        "API_JWT_SECRET": JWT_SECRET,
        "SENTRY_DSN": sentry_dsn,
    }.items():
        monkeypatch.setenv(name, value)
    return load_settings(env_file=None)


def _connect(dsn: str, password: str) -> None:
    connect_kwargs = {"dsn": dsn, "password": password, "user": "trader"}  # noqa: F841 - a local the trace could show
    raise ConnectionRefusedError(f"could not connect to {dsn} with password={password}")


def _call_upbit(access_key: str, secret_key: str) -> None:
    token = jwt.encode({"access_key": access_key, "nonce": "5f1c7a0e-1b7e"}, secret_key, "HS256")
    headers = {"Authorization": f"Bearer {token}"}
    raise RuntimeError(f"Upbit refused {headers} (access {access_key}, secret {secret_key}, token {token})")


def _fail_holding_every_secret(sentry_dsn: str) -> None:
    """Raises an error whose message, causes and frames all hold every kind of secret."""
    database_url = DATABASE_URL
    openai_key, telegram_token, api_key, jwt_secret = OPENAI_KEY, TELEGRAM_TOKEN, API_KEY, JWT_SECRET
    everything = {"openai": openai_key, "telegram": telegram_token, "api": api_key, "jwt": jwt_secret}
    try:
        _connect(database_url, DB_PASSWORD)
    except ConnectionRefusedError as db_error:
        try:
            _call_upbit(UPBIT_ACCESS_KEY, UPBIT_SECRET_KEY)
        except RuntimeError as upbit_error:  # implicit context: the database error
            raise ValueError(
                f"cycle failed with {openai_key} {telegram_token} {api_key} {jwt_secret} {sentry_dsn} "
                f"redis://:{REDIS_PASSWORD}@cache {everything}"
            ) from upbit_error
        finally:
            del db_error


def _leaks(output: str, secrets: dict[str, str]) -> dict[str, int]:
    return {name: output.count(secret) for name, secret in secrets.items() if secret in output}


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    with FakeSentry() as fake:
        yield fake
    close_sentry()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    hooks = sys.excepthook
    yield
    sys.excepthook = hooks
    configure_logging(level="INFO", log_format="json", stream=io.StringIO())


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_logged_exception_shows_no_secret(
    log_format: str, fake_sentry: FakeSentry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given logging and Sentry configured as the entry points do, with every kind of secret set
    settings = _settings(monkeypatch, fake_sentry.dsn)
    stream = io.StringIO()
    configure_logging(level="DEBUG", log_format=log_format, secrets=settings.secret_values(), stream=stream)
    assert init_sentry(settings, "scheduler") is True
    # When code holding the secrets fails, and the error is logged by structlog and by the stdlib, and captured
    try:
        _fail_holding_every_secret(fake_sentry.dsn)
    except ValueError:
        get_logger("trading").exception("cycle.failed", symbol="KRW-BTC")
        logging.getLogger("third.party").exception("request failed for %s", DATABASE_URL)
        logging.getLogger("third.party").error("with exc_info", exc_info=True)
        sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=5)
    # Then the log carries the error and its causes, but no secret: not in messages, causes, frames or locals
    output = stream.getvalue()
    for expected in ("cycle.failed", "ConnectionRefusedError", "RuntimeError", "request failed", "with exc_info"):
        assert expected in output
    assert _leaks(output, _secrets(fake_sentry.dsn)) == {}
    # And neither does anything that reached Sentry (exception values, frames, breadcrumbs of the log lines)
    events = fake_sentry.events()
    assert events, "Sentry received no event"
    wire = json.dumps(events)
    assert "ValueError" in wire
    assert _leaks(wire, _secrets(fake_sentry.dsn)) == {}
    assert all("vars" not in frame for frame in _frames(events))


def _frames(events: list[dict]) -> Iterator[dict]:
    for event in events:
        for value in event.get("exception", {}).get("values", []):
            yield from value.get("stacktrace", {}).get("frames", [])


def test_unregistered_secrets_are_recognised_by_their_shape() -> None:
    # Given secrets no setting registered: a DSN password, a JWT, an OpenAI key, a Telegram token, a Sentry key
    text = (
        f"{DATABASE_URL} Authorization={UPBIT_JWT} {OPENAI_KEY} {TELEGRAM_TOKEN} "
        "https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/42 password=hunter2 'api_key': 'k-123456'"
    )
    # When scrubbed, Then none is left
    scrubbed = redactor.scrub_text(text)
    for secret in (DB_PASSWORD, UPBIT_JWT, OPENAI_KEY, TELEGRAM_TOKEN, "0123456789abcdef0123456789abcdef"):
        assert secret not in scrubbed
    assert "hunter2" not in scrubbed
    assert "k-123456" not in scrubbed
    # And ordinary text stays as it was
    assert redactor.scrub_text("prompt_tokens=812 symbol=KRW-BTC") == "prompt_tokens=812 symbol=KRW-BTC"


def test_an_uncaught_exception_is_printed_without_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the entry points' logging set-up, with secrets registered
    settings = _settings(monkeypatch, "https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/42")
    configure_logging(level="INFO", log_format="console", secrets=settings.secret_values(), stream=sys.stderr)
    install_excepthooks()
    # When an exception escapes to the interpreter's hook
    try:
        _fail_holding_every_secret(settings.observability.sentry_dsn.get_secret_value())  # type: ignore[union-attr]
    except ValueError:
        sys.excepthook(*sys.exc_info())  # type: ignore[arg-type]
    # Then the traceback is printed, without any secret
    printed = capsys.readouterr().err
    assert "uncaught_exception" in printed
    assert "Traceback" in printed
    assert "ValueError" in printed
    secrets = _secrets(settings.observability.sentry_dsn.get_secret_value())  # type: ignore[union-attr]
    assert _leaks(printed, secrets) == {}


def test_sentry_drops_frame_locals_even_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.app.core.observability import scrub_event

    # Given an event as sentry-sdk builds it with local variables (objects, not yet serialised)
    event = {
        "timestamp": time.time(),
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": f"bad {OPENAI_KEY}",
                    "stacktrace": {"frames": [{"function": "f", "vars": {"dsn": DATABASE_URL, "n": 1}}]},
                }
            ]
        },
        "logentry": {"message": "request failed for %s", "params": [object(), DATABASE_URL]},
    }
    # When scrubbed, Then no frame keeps its variables and no parameter its secret
    scrubbed = scrub_event(event)
    assert "vars" not in scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]
    assert _leaks(json.dumps(scrubbed, default=str), {"db": DB_PASSWORD, "openai": OPENAI_KEY}) == {}


def test_error_text_kept_in_tables_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.app.models import BotStateRow, SystemLogRow, TradingCycleRow

    # Given the secrets registered as at start-up
    settings = _settings(monkeypatch, "https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/42")
    configure_logging(level="INFO", log_format="json", secrets=settings.secret_values(), stream=io.StringIO())
    error = f"RuntimeError: refused {UPBIT_ACCESS_KEY} at {DATABASE_URL} with {OPENAI_KEY}"
    # When an error is written to the system log, the heartbeat and a trading cycle (the API shows all three)
    rows = [
        SystemLogRow(level="error", message=error, context={"error": error, "job": "trading_cycle"}),
        BotStateRow(last_error=error, safe_mode_reason=error),
        TradingCycleRow(error=error),
    ]
    heartbeat = BotStateRow()
    heartbeat.last_error = error  # the scheduler updates its heartbeat row attribute by attribute
    # Then no secret is stored
    log_row, state_row, cycle_row = rows
    stored = json.dumps(
        [log_row.message, log_row.context, state_row.last_error, state_row.safe_mode_reason, cycle_row.error]
    )
    stored += json.dumps(heartbeat.last_error)
    assert "RuntimeError: refused" in stored
    assert _leaks(stored, {"db": DB_PASSWORD, "upbit": UPBIT_ACCESS_KEY, "openai": OPENAI_KEY}) == {}


# --- end to end: the real scheduler while PostgreSQL is down ------------------------------------------------
E2E_PASSWORD = "e2e-Pw-9d2c7a41b3"


@contextlib.contextmanager
def _private_postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database (skips where PostgreSQL is unreachable, like the fixtures)."""
    server = database_support._server_url()
    name = f"secrets_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(database_support._create_database(server, name))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if database_support._postgres_required():
            pytest.fail(f"PostgreSQL not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_to_head(url)
        yield url
    finally:
        asyncio.run(database_support._drop_database(server, name))


def _scheduler_env(database_url: str, log_format: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "UPBIT_", "TRADING_", "SENTRY_"))}
    env.update(
        DATABASE_URL=database_url,
        TRADING_MODE="paper",
        LOG_FORMAT=log_format,
        LOG_LEVEL="INFO",
        SCHEDULER_METRICS_PORT="0",
        SCHEDULER_CONTROL_POLL_SECONDS="0.5",
        SCHEDULER_TRADING_CRON="* * * * *",  # jobs every minute: the first one after the cut fails
        SCHEDULER_POSITION_CHECK_MINUTES="1",
        SCHEDULER_SNAPSHOT_MINUTES="1",
        UPBIT_BASE_URL="http://127.0.0.1:1",
        PYTHONPATH=str(PROJECT_ROOT),
    )
    return env


def _wait_for_text(path: Path, text: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        time.sleep(0.25)
    raise AssertionError(f"{text!r} not in the output after {seconds} s:\n{path.read_text()[-3000:]}")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.postgres
def test_the_scheduler_never_logs_the_database_password_while_postgresql_is_down(tmp_path: Path) -> None:
    """Given two real schedulers (JSON and console logs) on PostgreSQL through a URL with a password, When
    PostgreSQL goes away under them and their jobs fail with tracebacks, Then no output holds the password."""
    with contextlib.ExitStack() as stack:
        runs: list[tuple[str, subprocess.Popen[bytes], Path, TcpProxy]] = []
        for log_format in ("json", "console"):
            server = make_url(stack.enter_context(_private_postgres_database()))
            proxy = stack.enter_context(contextlib.closing(TcpProxy(server.port or 5432, server.host or "127.0.0.1")))
            proxy.start()
            url = server.set(password=E2E_PASSWORD, port=proxy.port).render_as_string(hide_password=False)
            output = tmp_path / f"scheduler-{log_format}.log"
            with output.open("wb") as sink:
                process = subprocess.Popen(
                    [sys.executable, str(PROJECT_ROOT / "scheduler_main.py")],
                    env=_scheduler_env(url, log_format),
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            stack.callback(lambda p=process: p.poll() is None and p.kill())
            runs.append((log_format, process, output, proxy))
        for _, _, output, proxy in runs:
            _wait_for_text(output, "scheduler.started", 60)
            proxy.cut()  # PostgreSQL is down from here on
        for _, process, output, _ in runs:
            _wait_for_text(output, "job.failed", 90)  # the next minute's jobs fail and log their traceback
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        for log_format, _, output, _ in runs:
            text = output.read_text()
            assert "Connect call failed" in text or "ConnectionRefusedError" in text, log_format
            assert text.count(E2E_PASSWORD) == 0, log_format


@pytest.mark.parametrize("entry", ["scheduler_main.py", "main.py"])
def test_an_entry_point_with_postgresql_unreachable_prints_no_password(entry: str, tmp_path: Path) -> None:
    # Given PostgreSQL unreachable at a URL with a password (nothing listens on the port)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+asyncpg://trader:{E2E_PASSWORD}@127.0.0.1:{port}/trader"
    # When the scheduler or main.py starts, in either log format
    for log_format in ("json", "console"):
        result = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / entry)],
            env=_scheduler_env(url, log_format),
            capture_output=True,
            text=True,
            timeout=120,
        )
        # Then it fails, saying why, and nothing it wrote holds the password
        assert result.returncode != 0
        assert "Connect call failed" in result.stdout + result.stderr or "refused" in result.stdout + result.stderr
        assert E2E_PASSWORD not in result.stdout + result.stderr
