"""Upbit's official SDK (upbit-sdk 1.1.0) against our fakes: the fake the whole suite trusts, checked by a client
we did not write.

The SDK runs in its own virtual environment (``.venv-sdk``, ``make sdk``; ``make test`` makes it): it needs
websockets<16 and the bot pins 17. ``tests/support/upbit_sdk_driver.py`` is the SDK side; it calls every
endpoint both the SDK and FakeUpbit support, checks each answer against the SDK's own response model, and
uses the SDK's WebSocket clients against FakeUpbitWebSocket. Without that environment the test skips on a
laptop and fails under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.upbit_server import FakeUpbit
from tests.fakes.upbit_websocket import FakeUpbitWebSocket

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "support" / "upbit_sdk_driver.py"
SDK_VERSION = "1.1.0"
pytestmark = pytest.mark.integration


def sdk_python() -> Path:
    """The SDK environment's interpreter (``UPBIT_SDK_PYTHON`` or ``.venv-sdk``); skip or fail without it."""
    python = Path(os.environ.get("UPBIT_SDK_PYTHON") or ROOT / ".venv-sdk" / "bin" / "python")
    why = None
    if not python.exists():
        why = f"{python} does not exist"
    else:
        probe = subprocess.run(
            [str(python), "-c", "import upbit; print(upbit.__version__)"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode != 0 or probe.stdout.strip() != SDK_VERSION:
            why = f"upbit-sdk {SDK_VERSION} is not importable there ({(probe.stdout + probe.stderr).strip()[-200:]})"
    if why is not None:
        message = f"the official Upbit SDK is missing: {why}; run `make sdk`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return python


@pytest.fixture(scope="module")
def sdk_run() -> Iterator[tuple[dict[str, dict[str, Any]], FakeUpbit, FakeUpbitWebSocket]]:
    """Run the SDK side once against fresh fakes; the steps it reported, by name, and the fakes afterwards."""
    python = sdk_python()
    with FakeUpbit() as rest, FakeUpbitWebSocket(upbit=rest) as ws:
        rest.seed_demo()
        rest.set_balance("BTC", "0.01", avg_buy_price="90000000")
        command = [str(python), str(DRIVER), "--rest", rest.base_url, "--ws", ws.base_url]
        command += ["--access", rest.access_key, "--secret", rest.secret_key]
        steps: dict[str, dict[str, Any]] = {}
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) as proc:
            assert proc.stdout is not None
            assert proc.stderr is not None
            for line in proc.stdout:
                step = json.loads(line)
                if step["step"] == "announcement-ready":
                    ws.push_announcement("[거래] 코인(ABC) 거래지원 종료 안내", "trade")
                    continue
                steps[step["step"]] = step
            errors = proc.stderr.read()
            proc.wait(timeout=120)
        assert proc.returncode == 0, f"the SDK side failed:\n{errors[-3000:]}"
        yield steps, rest, ws


REST_STEPS = [
    "accounts",
    "candles minutes",
    "candles days",
    "ticker",
    "orderbook",
    "instruments",
    "order chance",
    "market list with details",
    "orders/test",
    "create limit order with identifier",
    "create market buy with identifier",
    "create market sell with identifier",
    "get order by identifier",
    "open orders",
    "cancel by identifier",
    "get market buy by identifier",
    "closed orders",
    "trades/ticks",
]
WEBSOCKET_STEPS = [
    "websocket public ticker + list_subscriptions",
    "websocket private myOrder",
    "websocket private announcement",
]


def _explain(step: dict[str, Any] | None) -> str:
    return json.dumps(step, ensure_ascii=False, default=str)[:3000]


@pytest.mark.parametrize("name", REST_STEPS + WEBSOCKET_STEPS)
def test_the_official_sdk_understands_the_fake(
    sdk_run: tuple[dict[str, dict[str, Any]], FakeUpbit, FakeUpbitWebSocket], name: str
) -> None:
    # Given the official SDK calling the fake, When it made this call, Then the answer has the SDK's shape
    steps, _, _ = sdk_run
    step = steps.get(name)
    assert step is not None, f"the SDK side did not report {name!r}"
    assert step["ok"], _explain(step)
    assert step["problems"] == [], _explain(step)


def test_the_only_shape_disagreement_is_a_market_buys_remaining_volume(
    sdk_run: tuple[dict[str, dict[str, Any]], FakeUpbit, FakeUpbitWebSocket],
) -> None:
    # The SDK types Order.remaining_volume as a string; Upbit (and the fake) answer null for a market buy
    steps, _, _ = sdk_run
    known = {line for step in steps.values() for line in step.get("known", [])}
    assert all("remaining_volume" in line and "None" in line for line in known), known
    assert steps["create market buy with identifier"]["detail"]["remaining_volume"] is None


def test_the_sdk_sees_upbits_refusals_as_upbit_errors(
    sdk_run: tuple[dict[str, dict[str, Any]], FakeUpbit, FakeUpbitWebSocket],
) -> None:
    steps, _, _ = sdk_run
    off_tick = steps["orders/test refuses an off-tick price"]["error"]
    assert (off_tick["type"], off_tick["status"]) == ("BadRequestError", 400)
    assert off_tick["body"]["error"]["name"] == "invalid_price_bid"
    duplicate = steps["duplicate identifier"]["error"]
    assert (duplicate["type"], duplicate["status"]) == ("BadRequestError", 400)
    assert duplicate["body"]["error"]["name"] == "duplicate_identifier"


def test_orders_test_places_nothing_and_keeps_the_identifier_free(
    sdk_run: tuple[dict[str, dict[str, Any]], FakeUpbit, FakeUpbitWebSocket],
) -> None:
    steps, rest, _ = sdk_run
    answer = steps["orders/test"]["detail"]
    assert (answer["state"], answer["identifier"], steps["orders/test"]["status"]) == ("wait", "sdk-test-1", 201)
    assert rest.order(identifier="sdk-test-1") is None
    assert "sdk-test-1" not in {o["identifier"] for o in rest.orders}
    assert rest.locked("KRW") == 0  # the tested order reserved nothing (the real ones are settled by now)


def test_the_sdks_websocket_clients_get_my_orders_and_notices_from_the_fake(
    sdk_run: tuple[dict[str, dict[str, Any]], FakeUpbit, FakeUpbitWebSocket],
) -> None:
    steps, _, ws = sdk_run
    my_order = steps["websocket private myOrder"]["detail"]
    assert my_order["states"] == ["wait", "trade", "done"]
    assert set(my_order["identifiers"]) == {"sdk-ws-1"}
    assert set(my_order["types"]) == {"MyOrder"}
    ticker = steps["websocket public ticker + list_subscriptions"]["detail"]
    assert ticker["type"] == "Ticker"
    assert ticker["event"]["stream_type"] == "SNAPSHOT"
    assert ticker["subscriptions"]["result"] == [{"type": "ticker", "codes": ["KRW-BTC"]}]
    notice = steps["websocket private announcement"]["detail"]
    assert notice["type"] == "Announcement"
    assert notice["event"]["title"] == "[거래] 코인(ABC) 거래지원 종료 안내"
    assert ws.auth_failures == 0  # the SDK's handshake JWT passed the fake's check
