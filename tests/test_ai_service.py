"""AIService through the real OpenAI SDK against the loopback fake (tests/fakes/openai_server.py)."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from src.ai.cache import InMemoryDecisionCache, JsonlDecisionCache
from src.ai.models import MAX_REASON_CHARS, bounded_reason
from src.ai.prompt import DECISION_SCHEMA, SCHEMA_NAME, SYSTEM_PROMPT, canonical_json, summarize_orderbook
from src.ai.service import AIDecision, AIPurpose, AIService, MarketContext
from src.ai.usage import AIBudget
from src.api.interfaces import Orderbook, OrderbookLevel
from src.config.trading_groups import AIConfig
from src.domain.decisions import Decision, DecisionSource
from src.exceptions import DataError
from tests.fakes.openai_server import Behaviour, FakeOpenAI

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def make_config(fake: FakeOpenAI | None, **overrides: Any) -> AIConfig:
    values: dict[str, Any] = {
        "AI_ENABLED": True,
        "OPENAI_API_KEY": fake.api_key if fake else None,
        "OPENAI_BASE_URL": fake.base_url if fake else "http://127.0.0.1:9/v1",
        "OPENAI_MODEL": "gpt-4o-mini",
        "OPENAI_TIMEOUT_SECONDS": 2.0,
        "OPENAI_MAX_RETRIES": 0,
        "OPENAI_INPUT_PRICE_PER_1M": "0.15",
        "OPENAI_OUTPUT_PRICE_PER_1M": "0.60",
    }
    values.update(overrides)
    return AIConfig(_env_file=None, **values)


def make_context(**overrides: Any) -> MarketContext:
    values: dict[str, Any] = {
        "symbol": "KRW-BTC",
        "timestamp": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        "price": 143_250_000.0,
        "indicators": {"rsi_14": 58.2, "adx_14": 27.5, "volume_ratio": 1.6, "atr_pct": 2.1, "obv_slope": float("nan")},
        "signals": {"bias": "bullish", "net_strength": 0.8, "signals": []},
        "orderbook": {"best_ask": 143_260_000.0, "best_bid": 143_240_000.0, "spread_pct": 0.014},
        "position": None,
        "fear_greed": {"value": 62, "classification": "Greed"},
        "quick_filter": {"passed": True, "stage": "rule", "failed_thresholds": [], "metrics": {"win_rate": 0.55}},
    }
    values.update(overrides)
    return MarketContext(**values)


@pytest.fixture
async def service(fake_openai: FakeOpenAI) -> AsyncIterator[AIService]:
    ai = AIService(make_config(fake_openai))
    yield ai
    await ai.aclose()


# --- success ---------------------------------------------------------------------------------------


async def test_structured_answer_is_parsed_with_tokens_and_cost(fake_openai: FakeOpenAI, service: AIService) -> None:
    # Given the model answers a buy with confidence 80 using 812 prompt and 24 completion tokens
    fake_openai.script(Behaviour.ok("buy", 80, "RSI 58, ADX 27.5 and volume ratio 1.6 confirm the breakout"))

    # When the service decides
    decision = await service.decide(make_context())

    # Then the answer is parsed, counted and priced (0.15 / 0.60 USD per 1M tokens)
    assert decision.decision is Decision.BUY
    assert decision.confidence == Decimal("80.00")
    assert isinstance(decision.confidence, Decimal)
    assert decision.reason == "RSI 58, ADX 27.5 and volume ratio 1.6 confirm the breakout"
    assert decision.source is DecisionSource.AI
    assert decision.error is None
    assert decision.model == "gpt-4o-mini"
    assert (decision.prompt_tokens, decision.completion_tokens) == (812, 24)
    assert decision.cost_usd == (812 * Decimal("0.15") + 24 * Decimal("0.60")) / Decimal(1_000_000)
    assert decision.cost_usd == Decimal("0.0001362")
    # and the prompt and raw answer are kept; the hash is sha256 of the stored prompt
    assert decision.raw_response is not None
    assert json.loads(decision.raw_response)["id"].startswith("chatcmpl-fake-")
    assert decision.prompt is not None
    assert hashlib.sha256(decision.prompt.encode()).hexdigest() == decision.prompt_hash
    assert fake_openai.request_count == 1


async def test_request_carries_key_strict_schema_and_deterministic_prompt(
    fake_openai: FakeOpenAI,
    service: AIService,
) -> None:
    # Given a context with NaN, Decimal and datetime values
    context = make_context(
        position={"entry_price": Decimal("140000000"), "opened_at": datetime(2026, 3, 1, tzinfo=UTC)}
    )

    # When the service decides
    await service.decide(context)

    # Then the wire request has the bearer key, temperature 0 and a strict json_schema
    request = fake_openai.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    body = request.body
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0
    schema = body["response_format"]["json_schema"]
    assert body["response_format"]["type"] == "json_schema"
    assert schema["strict"] is True
    assert schema["name"] == SCHEMA_NAME
    assert schema["schema"] == DECISION_SCHEMA
    assert schema["schema"]["additionalProperties"] is False
    assert sorted(schema["schema"]["required"]) == ["confidence", "decision", "reason"]
    # and the system prompt is the adviser prompt; the user message is sorted, JSON-safe JSON
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = body["messages"][1]["content"]
    payload = json.loads(user.split("\n", 1)[1])
    assert user.split("\n", 1)[1] == canonical_json(payload)
    assert payload["indicators"]["obv_slope"] is None
    assert payload["position"] == {"entry_price": "140000000", "opened_at": "2026-03-01T00:00:00+00:00"}
    assert payload["timestamp"] == "2026-03-01T12:00:00+00:00"
    assert payload["quick_filter"]["passed"] is True


def test_system_prompt_explains_fields_vetoes_and_conservative_confidence() -> None:
    # Given the system prompt, Then it covers every input field, the veto and calibration
    for word in ("indicators", "signals", "orderbook", "position", "fear_greed", "quick_filter", "null"):
        assert word in SYSTEM_PROMPT
    assert "veto" in SYSTEM_PROMPT
    assert "conservative with confidence" in SYSTEM_PROMPT


# --- every failure becomes a hold ------------------------------------------------------------------

FAILURES = [
    pytest.param(Behaviour.rate_limited(), "rate_limited", False, id="429-rate_limit_exceeded"),
    pytest.param(Behaviour.insufficient_quota(), "insufficient_quota", False, id="429-insufficient_quota"),
    pytest.param(Behaviour.server_error(500), "server_error", False, id="500"),
    pytest.param(Behaviour.server_error(503), "server_error", False, id="503"),
    pytest.param(Behaviour.refusal("I can't help with trading."), "refusal", True, id="refusal"),
    pytest.param(Behaviour.length(), "length", True, id="finish_reason-length"),
    pytest.param(Behaviour.content_filter(), "content_filter", True, id="content_filter"),
    pytest.param(Behaviour.malformed("Sure! I would buy."), "malformed", True, id="not-json"),
    pytest.param(Behaviour.malformed(""), "malformed", True, id="empty-content"),
    pytest.param(Behaviour.malformed('["buy", 80]'), "malformed", True, id="json-not-object"),
    pytest.param(Behaviour.malformed('{"decision": "buy", "confidence": 80}'), "malformed", True, id="missing-reason"),
    pytest.param(
        Behaviour.malformed('{"decision": "buy", "confidence": 80, "reason": "x", "size": 1}'),
        "malformed",
        True,
        id="extra-field",
    ),
    pytest.param(
        Behaviour.malformed('{"decision": "buy", "confidence": 120, "reason": "x"}'), "malformed", True, id="conf>100"
    ),
    pytest.param(
        Behaviour.malformed('{"decision": "buy", "confidence": -1, "reason": "x"}'), "malformed", True, id="conf<0"
    ),
    pytest.param(
        Behaviour.malformed('{"decision": "buy", "confidence": "80", "reason": "x"}'),
        "malformed",
        True,
        id="conf-string",
    ),
    pytest.param(
        Behaviour.malformed('{"decision": "moon", "confidence": 80, "reason": "x"}'), "malformed", True, id="unknown"
    ),
    pytest.param(
        Behaviour.malformed('{"decision": "buy", "confidence": 80, "reason": ""}'), "malformed", True, id="empty-reason"
    ),
    pytest.param(
        Behaviour.malformed('{"decision": "buy", "confidence": 80, "reason": " "}'), "malformed", True, id="blank"
    ),
    pytest.param(
        Behaviour.malformed('{"decision": "buy", "confidence": NaN, "reason": "x"}'), "malformed", True, id="conf-nan"
    ),
    pytest.param(Behaviour.raw('{"object": "list", "data": []}'), "malformed", False, id="not-a-completion"),
    pytest.param(Behaviour.raw("<html>Bad gateway</html>"), "malformed", False, id="html-200"),
    pytest.param(Behaviour.raw("<html>Bad gateway</html>", status=502), "server_error", False, id="html-502"),
]


@pytest.mark.parametrize(("behaviour", "kind", "billed"), FAILURES)
async def test_every_failure_mode_becomes_a_recorded_hold(
    fake_openai: FakeOpenAI,
    service: AIService,
    behaviour: Behaviour,
    kind: str,
    billed: bool,
) -> None:
    # Given the model fails in this way
    fake_openai.script(behaviour)

    # When the service decides (no exception escapes)
    decision = await service.decide(make_context())

    # Then it holds, says why, and counts the tokens of an answer that did arrive
    assert decision.decision is Decision.HOLD
    assert decision.source is DecisionSource.FALLBACK
    assert decision.confidence == 0
    assert decision.error is not None
    assert decision.error.startswith(f"{kind}:")
    assert kind in decision.reason
    assert decision.prompt is not None
    assert decision.raw_response is not None  # the answer or the error body as received
    assert (decision.prompt_tokens > 0) is billed
    assert (decision.cost_usd > 0) is billed
    assert fake_openai.request_count == 1


async def test_slow_answer_times_out_into_a_hold(fake_openai: FakeOpenAI) -> None:
    # Given a client timeout of 0.5 s and an answer that takes 3 s
    fake_openai.script(Behaviour.slow(3.0))
    service = AIService(make_config(fake_openai, OPENAI_TIMEOUT_SECONDS=0.5))

    # When the service decides
    decision = await service.decide(make_context())
    await service.aclose()

    # Then it holds with a timeout error
    assert decision.decision is Decision.HOLD
    assert decision.source is DecisionSource.FALLBACK
    assert decision.error == "timeout: no answer within 0.5s"
    assert decision.raw_response is None


async def test_wrong_key_is_an_auth_error_hold(fake_openai: FakeOpenAI) -> None:
    # Given the service uses a key the server does not accept
    service = AIService(make_config(fake_openai, OPENAI_API_KEY="sk-wrong"))

    # When it decides
    decision = await service.decide(make_context())
    await service.aclose()

    # Then it holds with an auth error and the key is not echoed in the reason
    assert decision.source is DecisionSource.FALLBACK
    assert decision.error is not None
    assert decision.error.startswith("auth_error:")
    assert "sk-wrong" not in decision.reason


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_connection_refused_is_a_hold() -> None:
    # Given nothing listens on the configured port
    config = make_config(None, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1")
    service = AIService(config)

    # When it decides, Then it holds with a connection error
    decision = await service.decide(make_context())
    await service.aclose()
    assert decision.source is DecisionSource.FALLBACK
    assert decision.error is not None
    assert decision.error.startswith("connection_error:")


async def test_sdk_retries_a_rate_limit_then_answers(fake_openai: FakeOpenAI) -> None:
    # Given two 429 rate_limit_exceeded (retry-after-ms: 1) then an answer, and max_retries=2
    limited = Behaviour.rate_limited(retry_after_ms=1)
    fake_openai.script(limited, limited, Behaviour.ok("sell", 70, "trend broke"))
    service = AIService(make_config(fake_openai, OPENAI_MAX_RETRIES=2))

    # When the service decides
    decision = await service.decide(make_context())
    await service.aclose()

    # Then the SDK retried and the third request answered
    assert decision.decision is Decision.SELL
    assert decision.source is DecisionSource.AI
    assert fake_openai.request_count == 3


# --- disabled, no key ------------------------------------------------------------------------------


async def test_disabled_ai_holds_without_a_request(fake_openai: FakeOpenAI) -> None:
    # Given AI_ENABLED=false although a key is set
    service = AIService(make_config(fake_openai, AI_ENABLED=False))

    # When it decides
    decision = await service.decide(make_context())

    # Then it holds as disabled and nothing is sent
    assert service.available is False
    assert decision.decision is Decision.HOLD
    assert decision.source is DecisionSource.DISABLED
    assert decision.error == "disabled: AI_ENABLED is false"
    assert fake_openai.request_count == 0


async def test_no_key_holds_but_replays_cached_answers() -> None:
    # Given no key and a cache holding an earlier answer for exactly this prompt
    cache = InMemoryDecisionCache()
    service = AIService(make_config(None), cache)
    first = await service.decide(make_context())
    assert service.available is False
    assert first.source is DecisionSource.DISABLED
    assert first.error == "disabled: no OPENAI_API_KEY configured"
    earlier = replace(first, decision=Decision.BUY, confidence=Decimal("77"), source=DecisionSource.AI, error=None)
    await cache.put(earlier)

    # When it decides on the same context
    replayed = await service.decide(make_context())

    # Then the cached answer is served (offline replay and backtests)
    assert replayed.source is DecisionSource.CACHE
    assert replayed.decision is Decision.BUY


# --- cache -----------------------------------------------------------------------------------------


async def test_cache_hit_makes_no_request(fake_openai: FakeOpenAI) -> None:
    # Given a service with a cache and one scripted answer
    fake_openai.script(Behaviour.ok("buy", 72, "momentum"))
    service = AIService(make_config(fake_openai), InMemoryDecisionCache())

    # When it decides twice on the same context
    first = await service.decide(make_context())
    second = await service.decide(make_context())
    await service.aclose()

    # Then only one request crossed the wire; the second is a free cache hit
    assert fake_openai.request_count == 1
    assert first.source is DecisionSource.AI
    assert second.source is DecisionSource.CACHE
    assert (second.decision, second.confidence, second.reason) == (Decision.BUY, Decimal("72.00"), "momentum")
    assert second.prompt_hash == first.prompt_hash
    assert (second.prompt_tokens, second.completion_tokens, second.cost_usd) == (0, 0, Decimal("0"))


async def test_fallbacks_are_never_cached(fake_openai: FakeOpenAI) -> None:
    # Given a malformed answer first and a good one second
    fake_openai.script(Behaviour.malformed("oops"), Behaviour.ok("hold", 55, "no edge"))
    cache = InMemoryDecisionCache()
    service = AIService(make_config(fake_openai), cache)

    # When it decides twice on the same context
    first = await service.decide(make_context())
    second = await service.decide(make_context())
    await service.aclose()

    # Then the failure was retried on the wire and only the real answer is cached
    assert first.source is DecisionSource.FALLBACK
    assert second.source is DecisionSource.AI
    assert fake_openai.request_count == 2
    assert len(cache) == 1


class RecordedCalls:
    """The call recorder and metrics observer, in memory."""

    def __init__(self) -> None:
        self.calls: list[AIDecision] = []
        self.usage: list[tuple[str, int, int, Decimal]] = []

    async def record_call(self, decision: AIDecision, context: MarketContext) -> None:
        self.calls.append(decision)

    def on_ai_usage(self, purpose: str, prompt_tokens: int, completion_tokens: int, cost_usd: Decimal) -> None:
        self.usage.append((purpose, prompt_tokens, completion_tokens, cost_usd))

    def on_ai_budget(self, period: str, limit_usd: Decimal, remaining_usd: Decimal | None) -> None:
        return None


class SpentLedger:
    def __init__(self, spent: str) -> None:
        self.spent = Decimal(spent)

    async def ai_spend_usd(self, since: datetime) -> Decimal:
        return self.spent


async def test_filter_calls_are_recorded_and_charged_even_when_they_fail(fake_openai: FakeOpenAI) -> None:
    # Given a filter adviser whose first answer is malformed (tokens were still billed) and second is good
    fake_openai.script(Behaviour.malformed("oops"), Behaviour.ok("buy", 70, "breakout"))
    seen = RecordedCalls()
    now = datetime(2026, 12, 5, 10, tzinfo=UTC)
    ai = AIService(make_config(fake_openai), InMemoryDecisionCache(), clock=lambda: now, observer=seen, recorder=seen)
    adviser = ai.for_purpose(AIPurpose.FILTER)
    # When it is asked twice (and a third time: a cache hit) and the cycle asks once
    failed = await adviser.decide(make_context())
    answered = await adviser.decide(make_context())
    hit = await adviser.decide(make_context())
    await ai.decide(make_context(price=1.0))
    await ai.aclose()
    # Then both model calls of the filter are recorded with tokens, cost, purpose and the scheduler's time
    assert [d.source for d in (failed, answered, hit)] == [
        DecisionSource.FALLBACK,
        DecisionSource.AI,
        DecisionSource.CACHE,
    ]
    assert [(c.source, c.purpose, c.prompt_tokens, c.cost_usd, c.created_at) for c in seen.calls] == [
        (DecisionSource.FALLBACK, AIPurpose.FILTER, 812, Decimal("0.0001362"), now),
        (DecisionSource.AI, AIPurpose.FILTER, 812, Decimal("0.0001362"), now),
    ]
    # and every request is charged once, by purpose (the cycle's row is written by the pipeline, not here)
    assert seen.usage == [
        ("filter", 812, 24, Decimal("0.0001362")),
        ("filter", 812, 24, Decimal("0.0001362")),
        ("decision", 812, 24, Decimal("0.0001362")),
    ]
    assert fake_openai.request_count == 3


async def test_spent_budget_holds_without_a_request(fake_openai: FakeOpenAI) -> None:
    # Given a day's budget of $1 already spent
    budget = AIBudget(
        SpentLedger("1.00"), daily_usd=Decimal("1"), monthly_usd=Decimal("0"), clock=lambda: datetime.now(UTC)
    )
    ai = AIService(make_config(fake_openai), budget=budget)
    # When the adviser is asked
    decision = await ai.decide(make_context())
    await ai.aclose()
    # Then it holds, says why, and nothing reached the model
    assert decision.source is DecisionSource.DISABLED
    assert decision.error is not None
    assert decision.error.startswith("budget: AI budget reached: day limit $1")
    assert not ai.available
    assert ai.off_reason is not None
    assert fake_openai.request_count == 0


async def test_jsonl_cache_serves_a_new_process_without_requests(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    # Given one service that answered and stored its answer in a JSONL file
    path = tmp_path / "ai_cache.jsonl"
    fake_openai.script(Behaviour.ok("buy", 66, "breakout"))
    writer = AIService(make_config(fake_openai), JsonlDecisionCache(path))
    original = await writer.decide(make_context())
    await writer.aclose()

    # When a fresh service with a fresh cache over the same file decides on the same context
    reader = AIService(make_config(fake_openai), JsonlDecisionCache(path))
    replayed = await reader.decide(make_context())
    await reader.aclose()

    # Then it is a cache hit with the same answer, prompt and raw response
    assert fake_openai.request_count == 1
    assert replayed.source is DecisionSource.CACHE
    assert replayed.decision is Decision.BUY
    assert (replayed.prompt, replayed.raw_response) == (original.prompt, original.raw_response)


async def test_a_one_megabyte_reason_is_cut_to_the_bound_and_the_answer_otherwise_kept(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    # Given a model that answers a buy with a reason of one megabyte
    reason = "RSI 58, ADX 27.5, volume ratio 1.6. " + "x" * (1024 * 1024)
    fake_openai.script(Behaviour.ok("buy", 80, reason))
    path = tmp_path / "ai_cache.jsonl"
    service = AIService(make_config(fake_openai), JsonlDecisionCache(path))

    # When the service decides through the real SDK
    decision = await service.decide(make_context())
    await service.aclose()

    # Then the decision is accepted as it was given, and only its reason is cut, marked with an ellipsis
    assert (decision.source, decision.decision, decision.confidence) == (DecisionSource.AI, Decision.BUY, Decimal("80"))
    assert len(decision.reason) == MAX_REASON_CHARS
    assert decision.reason == reason[: MAX_REASON_CHARS - 1] + "\u2026"
    # and what is stored (the answer cache here; the pipeline stores the same value in ai_decisions) is the cut one
    (stored,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert stored["reason"] == decision.reason
    assert bounded_reason(decision.reason) == decision.reason  # cutting again changes nothing


def test_a_reason_within_the_bound_is_kept_whole() -> None:
    assert bounded_reason("x" * MAX_REASON_CHARS) == "x" * MAX_REASON_CHARS
    assert len(bounded_reason("x" * (MAX_REASON_CHARS + 1))) == MAX_REASON_CHARS


class BrokenCache:
    async def get(self, prompt_hash: str) -> AIDecision | None:
        raise OSError("disk on fire")

    async def put(self, decision: AIDecision) -> None:
        raise OSError("disk on fire")


async def test_broken_cache_does_not_stop_a_decision(fake_openai: FakeOpenAI) -> None:
    # Given a cache whose reads and writes fail
    fake_openai.script(Behaviour.ok("buy", 81, "ok"))
    service = AIService(make_config(fake_openai), BrokenCache())

    # When it decides, Then the model still answers
    decision = await service.decide(make_context())
    await service.aclose()
    assert decision.source is DecisionSource.AI


# --- prompt hash -----------------------------------------------------------------------------------


async def test_prompt_hash_is_stable_and_sensitive_to_what_matters() -> None:
    # Given a service without key (hashes are computed anyway)
    service = AIService(make_config(None))
    base = await service.decide(make_context())

    # When the same instant is given in another timezone and dict keys come in another order
    kst = timezone(timedelta(hours=9))
    same_instant = make_context(timestamp=datetime(2026, 3, 1, 21, 0, tzinfo=kst))
    reordered = make_context(indicators=dict(reversed(list(make_context().indicators.items()))))
    numpy_values = make_context(indicators={k: np.float64(v) for k, v in make_context().indicators.items()})

    # Then the hash does not change
    for context in (same_instant, reordered, numpy_values):
        assert (await service.decide(context)).prompt_hash == base.prompt_hash

    # But another indicator value or another model gives another hash
    changed = make_context(indicators={**make_context().indicators, "rsi_14": 58.3})
    assert (await service.decide(changed)).prompt_hash != base.prompt_hash
    other_model = AIService(make_config(None, OPENAI_MODEL="gpt-4.1-mini"))
    assert (await other_model.decide(make_context())).prompt_hash != base.prompt_hash
    assert len(base.prompt_hash) == 64


# --- input validation ------------------------------------------------------------------------------


def test_context_requires_an_aware_timestamp() -> None:
    # Given a naive timestamp, Then building the context fails naming the field
    with pytest.raises(DataError, match="timestamp"):
        make_context(timestamp=datetime(2026, 3, 1, 12, 0))


async def test_unserialisable_context_value_is_a_hold_not_an_exception(fake_openai: FakeOpenAI) -> None:
    # Given a context holding a value that has no JSON form
    service = AIService(make_config(fake_openai))
    context = make_context(signals={"bias": object()})

    # When it decides, Then it holds naming the bad field and sends nothing
    decision = await service.decide(context)
    await service.aclose()
    assert decision.source is DecisionSource.FALLBACK
    assert decision.error is not None
    assert decision.error.startswith("invalid_context:")
    assert "payload.signals.bias" in decision.error
    assert fake_openai.request_count == 0


def test_payload_is_json_safe() -> None:
    # Given NaN, infinity, Decimal, numpy and datetime values
    context = make_context(
        indicators={"a": float("nan"), "b": float("inf"), "c": np.float32(1.5), "d": np.int64(3)},
        position={"volume": Decimal("0.0123"), "since": datetime(2026, 1, 1, tzinfo=UTC), "ok": np.bool_(True)},
    )

    # When the payload is built, Then it is plain JSON
    payload = context.to_prompt_payload()
    assert payload["indicators"] == {"a": None, "b": None, "c": 1.5, "d": 3}
    assert payload["position"] == {"volume": "0.0123", "since": "2026-01-01T00:00:00+00:00", "ok": True}
    json.dumps(payload, allow_nan=False)


def test_orderbook_summary() -> None:
    # Given a two-level book
    book = Orderbook(
        symbol="KRW-BTC",
        timestamp=datetime(2026, 3, 1, tzinfo=UTC),
        asks=(OrderbookLevel(Decimal("101"), Decimal("1")), OrderbookLevel(Decimal("102"), Decimal("1"))),
        bids=(OrderbookLevel(Decimal("100"), Decimal("3")), OrderbookLevel(Decimal("99"), Decimal("1"))),
    )

    # When it is summarised, Then spread, depth and imbalance are right
    summary = summarize_orderbook(book)
    assert summary["best_ask"] == 101.0
    assert summary["best_bid"] == 100.0
    assert summary["spread_pct"] == pytest.approx(1.0)
    assert summary["ask_depth_krw"] == 203.0
    assert summary["bid_depth_krw"] == 399.0
    assert summary["bid_ask_imbalance"] == pytest.approx((4 - 2) / 6)


# --- the fake itself -------------------------------------------------------------------------------


def test_fake_rejects_a_non_strict_schema_from_a_sync_test(fake_openai: FakeOpenAI) -> None:
    # Given a request whose schema allows extra properties
    schema = {**DECISION_SCHEMA, "additionalProperties": True}
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}},
    }

    # When it is posted, Then the fake answers 400 like the API and still records it
    headers = {"Authorization": f"Bearer {fake_openai.api_key}"}
    response = httpx.post(f"{fake_openai.base_url}/chat/completions", json=body, headers=headers, timeout=5)
    assert response.status_code == 400
    assert "additionalProperties" in response.json()["error"]["message"]
    assert fake_openai.request_count == 1


def test_fake_runs_as_a_process_and_can_be_scripted() -> None:
    # Given the fake started as a module on a free port
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--api-key", "sk-proc"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        base_url = line.removeprefix("listening on ")
        root = base_url.removesuffix("/v1")

        # When a refusal is scripted over HTTP and a completion is requested
        scripted = httpx.post(f"{root}/_fake/script", json=[{"kind": "refusal"}], timeout=5)
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": DECISION_SCHEMA},
            },
        }
        headers = {"Authorization": "Bearer sk-proc"}
        answer = httpx.post(f"{base_url}/chat/completions", json=body, headers=headers, timeout=5)

        # Then the refusal comes back and the request is recorded
        assert scripted.json() == {"queued": 1}
        assert answer.json()["choices"][0]["message"]["refusal"]
        assert httpx.get(f"{root}/_fake/requests", timeout=5).json()[0]["model"] == "m"
    finally:
        process.terminate()
        process.wait(timeout=5)
