"""The AI adviser: one structured-output chat completion per market snapshot.

``AIService.decide`` never raises into the trading cycle. No key, AI switched off, timeouts, refusals,
rate limits, quota, 5xx, truncated or filtered answers and malformed content all come back as a
``hold`` whose ``source`` is ``fallback`` or ``disabled`` and whose ``error`` says what happened.
Real answers are cached by the prompt hash; a hit costs no request. Every request that reaches the model is
charged (tokens, USD) to the budget and the metrics, with its purpose; the quick filter's calls are also
stored through the call recorder, since no trading-cycle row records them. Over budget, the adviser is off.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from src.ai.cache import DecisionCache
from src.ai.models import AIDecision, AIPurpose, MarketContext
from src.ai.prompt import build_request, prompt_text, request_hash
from src.ai.usage import AIBudget, AICallRecorder, AIUsageObserver, record_usage
from src.config.trading_groups import AIConfig
from src.domain.decisions import Decision, DecisionSource
from src.exceptions import DataError

if TYPE_CHECKING:  # the client library (about a second of imports) loads only when a key makes a client
    import openai
    from openai.types.chat import ChatCompletion
from src.utils.logger import get_logger

__all__ = ["AIDecision", "AIPurpose", "AIService", "MarketContext"]

log = get_logger(__name__)

_TOKENS_PER_PRICE_UNIT = Decimal("1000000")
_CONFIDENCE_STEP = Decimal("0.01")
_MAX_ERROR_DETAIL = 300


class _Answer(BaseModel):
    """The schema the model must fill, checked again on our side (servers do not always enforce it)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    decision: Decision = Field(strict=False)
    confidence: float = Field(ge=0, le=100, strict=True)
    reason: str = Field(min_length=1, strict=True)


@dataclass(frozen=True, slots=True)
class _Reply:
    answer: _Answer
    model: str | None
    raw: str
    prompt_tokens: int
    completion_tokens: int


class _Failure(Exception):
    """A failed exchange with the model: ``kind: detail``, plus whatever was received."""

    def __init__(
        self, kind: str, detail: str, *, raw: str | None = None, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> None:
        super().__init__(f"{kind}: {detail[:_MAX_ERROR_DETAIL]}")
        self.raw = raw
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens


class _Received(TypedDict):
    """What a failed exchange still received: ``_Failure``'s keyword arguments."""

    raw: str
    prompt_tokens: int
    completion_tokens: int


class AIService:
    """Ask the configured OpenAI-compatible model for a buy/sell/hold decision."""

    def __init__(
        self,
        config: AIConfig,
        cache: DecisionCache | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        budget: AIBudget | None = None,
        observer: AIUsageObserver | None = None,
        recorder: AICallRecorder | None = None,
    ) -> None:
        self._config = config
        self._cache = cache
        self._clock = clock or (lambda: datetime.now(UTC))
        self.budget = budget
        self._observer = observer
        self._recorder = recorder
        self._client: openai.AsyncOpenAI | None = None
        if config.api_key is not None and config.has_key:
            import openai

            self._client = openai.AsyncOpenAI(
                api_key=config.api_key.get_secret_value(),
                base_url=config.base_url,
                timeout=config.timeout_seconds,
                max_retries=config.max_retries,
            )

    @property
    def available(self) -> bool:
        """A key is configured, AI is enabled and the budget (as last checked) is not spent."""
        return self.off_reason is None

    @property
    def off_reason(self) -> str | None:
        """Why the adviser is not asked now, or None."""
        if not self._config.enabled:
            return "AI is off (AI_ENABLED or the run-time setting ai.enabled)"
        if self._client is None:
            return "no OPENAI_API_KEY configured"
        if self.budget is not None and self.budget.reason is not None:
            return self.budget.reason
        return None

    async def check_budget(self, *, reread: bool = False) -> str | None:
        """Bring the budget up to date (period roll-over; with ``reread`` the recorded spend too); the reason
        it blocks, or None."""
        if self.budget is None:
            return None
        return await (self.budget.refresh() if reread else self.budget.check())

    def for_purpose(self, purpose: AIPurpose) -> PurposeAdviser:
        """This adviser, with every call it makes counted and recorded under ``purpose``."""
        return PurposeAdviser(self, purpose)

    @property
    def configured(self) -> bool:
        """A key is configured (whether or not AI is enabled)."""
        return self._client is not None

    @property
    def model(self) -> str:
        return self._config.model

    def use_config(self, config: AIConfig) -> None:
        """Run-time settings (``ai.enabled``, thresholds) from now on; the connection (key, URL, timeout,
        retries) stays the one built at start. The budget takes the config's limits."""
        self._config = config
        if self.budget is not None:
            self.budget.set_limits(config.daily_budget_usd, config.monthly_budget_usd)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def decide(self, context: MarketContext, purpose: AIPurpose = AIPurpose.DECISION) -> AIDecision:
        """The model's decision for ``context``; a ``hold`` with the reason when anything fails."""
        try:
            return replace(await self._decide(context, purpose), purpose=purpose)
        except DataError as exc:
            log.warning("ai.invalid_context", symbol=context.symbol, error=str(exc))
            return self._hold(DecisionSource.FALLBACK, f"invalid_context: {exc}", "", None)
        except Exception as exc:  # the cycle must never see an exception from the adviser
            log.exception("ai.unexpected_error", symbol=context.symbol)
            return self._hold(DecisionSource.FALLBACK, f"unexpected: {type(exc).__name__}: {exc}", "", None)

    async def _decide(self, context: MarketContext, purpose: AIPurpose) -> AIDecision:
        request = build_request(self._config.model, context.to_prompt_payload())
        prompt = prompt_text(request)
        prompt_hash = request_hash(request)
        if not self._config.enabled:
            return self._hold(DecisionSource.DISABLED, "disabled: AI_ENABLED is false", prompt_hash, prompt)
        cached = await self._cache_get(prompt_hash)
        if cached is not None:
            log.info("ai.cache_hit", symbol=context.symbol, prompt_hash=prompt_hash, decision=cached.decision.value)
            return cached.as_cache_hit()
        if self._client is None:
            return self._hold(DecisionSource.DISABLED, "disabled: no OPENAI_API_KEY configured", prompt_hash, prompt)
        over_budget = await self.check_budget()
        if over_budget is not None:
            return self._hold(DecisionSource.DISABLED, f"budget: {over_budget}", prompt_hash, prompt)
        decision = replace(await self._ask(request, prompt, prompt_hash), purpose=purpose, created_at=self._clock())
        self._log(context, decision)
        record_usage(decision, purpose, self.budget, self._observer)
        if purpose is not AIPurpose.DECISION and self._recorder is not None:
            await self._record(decision, context)
        if decision.source is DecisionSource.AI:
            await self._cache_put(decision)
        return decision

    async def _record(self, decision: AIDecision, context: MarketContext) -> None:
        assert self._recorder is not None
        try:
            await self._recorder.record_call(decision, context)
        except Exception as exc:  # a failed write must not fail the filter; the cost is still charged
            log.warning("ai.record_call_failed", prompt_hash=decision.prompt_hash, error=str(exc))

    async def _ask(self, request: dict[str, Any], prompt: str, prompt_hash: str) -> AIDecision:
        try:
            reply = await self._complete(request)
        except _Failure as failure:
            return self._hold(
                DecisionSource.FALLBACK,
                str(failure),
                prompt_hash,
                prompt,
                raw=failure.raw,
                prompt_tokens=failure.prompt_tokens,
                completion_tokens=failure.completion_tokens,
            )
        return AIDecision(
            decision=reply.answer.decision,
            confidence=Decimal(str(reply.answer.confidence)).quantize(_CONFIDENCE_STEP),
            reason=reply.answer.reason,
            source=DecisionSource.AI,
            model=reply.model or self._config.model,
            prompt_hash=prompt_hash,
            prompt=prompt,
            raw_response=reply.raw,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            cost_usd=self.cost_usd(reply.prompt_tokens, reply.completion_tokens),
        )

    async def _complete(self, request: dict[str, Any]) -> _Reply:
        assert self._client is not None
        import openai  # loaded with the client

        try:
            response = await self._client.chat.completions.with_raw_response.create(**request)
        except openai.APIError as exc:
            raise _classify(exc, self._config.timeout_seconds) from exc
        raw = response.http_response.text
        try:
            return _interpret(response.parse(), raw)
        except (AttributeError, TypeError, ValueError, openai.APIError) as exc:
            raise _Failure("malformed", f"response is not a chat completion: {exc}", raw=raw) from exc

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """USD for these tokens at the configured prices per million."""
        spent = prompt_tokens * self._config.input_price_per_million
        spent += completion_tokens * self._config.output_price_per_million
        return spent / _TOKENS_PER_PRICE_UNIT

    def _hold(
        self,
        source: DecisionSource,
        error: str,
        prompt_hash: str,
        prompt: str | None,
        *,
        raw: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> AIDecision:
        return AIDecision(
            decision=Decision.HOLD,
            confidence=Decimal("0"),
            reason=f"AI {'disabled' if source is DecisionSource.DISABLED else 'failed'} ({error}); holding",
            source=source,
            model=self._config.model,
            prompt_hash=prompt_hash,
            prompt=prompt,
            raw_response=raw,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=self.cost_usd(prompt_tokens, completion_tokens),
            error=error,
            created_at=self._clock(),
        )

    async def _cache_get(self, prompt_hash: str) -> AIDecision | None:
        if self._cache is None:
            return None
        try:
            return await self._cache.get(prompt_hash)
        except Exception as exc:  # a broken cache must not stop a decision
            log.warning("ai.cache_read_failed", prompt_hash=prompt_hash, error=str(exc))
            return None

    async def _cache_put(self, decision: AIDecision) -> None:
        if self._cache is None:
            return
        try:
            await self._cache.put(decision)
        except Exception as exc:
            log.warning("ai.cache_write_failed", prompt_hash=decision.prompt_hash, error=str(exc))

    def _log(self, context: MarketContext, decision: AIDecision) -> None:
        fields = {
            "symbol": context.symbol,
            "decision": decision.decision.value,
            "confidence": str(decision.confidence),
            "source": decision.source.value,
            "purpose": decision.purpose.value,
            "prompt_hash": decision.prompt_hash,
            "prompt_tokens": decision.prompt_tokens,
            "completion_tokens": decision.completion_tokens,
            "cost_usd": str(decision.cost_usd),
        }
        if decision.error:
            log.warning("ai.fallback_hold", error=decision.error, **fields)
        else:
            log.info("ai.decision", **fields)


class PurposeAdviser:
    """``AIService`` seen by one caller (the quick filter's AI backtest): same client, cache and budget."""

    def __init__(self, service: AIService, purpose: AIPurpose) -> None:
        self.service = service
        self.purpose = purpose

    @property
    def available(self) -> bool:
        return self.service.available

    async def decide(self, context: MarketContext) -> AIDecision:
        return await self.service.decide(context, self.purpose)


def _interpret(completion: ChatCompletion, raw: str) -> _Reply:
    """The answer in a completion, or the ``_Failure`` that explains why there is none."""
    usage = completion.usage
    prompt_tokens = usage.prompt_tokens if usage else 0
    completion_tokens = usage.completion_tokens if usage else 0
    counted: _Received = {"raw": raw, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    if not completion.choices:
        raise _Failure("malformed", "the answer has no choices", **counted)
    choice = completion.choices[0]
    if choice.finish_reason == "length":
        raise _Failure("length", "the answer was cut off at the token limit (finish_reason=length)", **counted)
    if choice.finish_reason == "content_filter":
        raise _Failure("content_filter", "the answer was withheld by the content filter", **counted)
    if choice.message.refusal:
        raise _Failure("refusal", choice.message.refusal, **counted)
    answer = _parse_answer(choice.message.content, counted)
    return _Reply(answer, completion.model, raw, prompt_tokens, completion_tokens)


def _parse_answer(content: str | None, counted: _Received) -> _Answer:
    if not content:
        raise _Failure("malformed", "the answer has no content", **counted)
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise _Failure("malformed", f"content is not JSON ({exc.msg}): {content[:80]!r}", **counted) from exc
    try:
        return _Answer.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'answer'}: {error['msg']}" for error in exc.errors()
        )
        raise _Failure("malformed", f"content does not match the schema: {problems}", **counted) from exc


def _classify(exc: openai.APIError, timeout_seconds: float) -> _Failure:
    """Name what went wrong in a short, stable ``kind`` and keep the error body as the raw response."""
    import openai  # loaded with the client that raised ``exc``

    raw = exc.response.text if isinstance(exc, openai.APIStatusError) else None
    if isinstance(exc, openai.APITimeoutError):
        return _Failure("timeout", f"no answer within {timeout_seconds}s")
    if isinstance(exc, openai.RateLimitError):
        kind = "insufficient_quota" if exc.code == "insufficient_quota" else "rate_limited"
        return _Failure(kind, _status_detail(exc), raw=raw)
    if isinstance(exc, openai.AuthenticationError):
        return _Failure("auth_error", f"401 {exc.code}", raw=raw)
    if isinstance(exc, openai.APIStatusError):
        kind = "server_error" if exc.status_code >= 500 else "api_error"
        return _Failure(kind, _status_detail(exc), raw=raw)
    if isinstance(exc, openai.APIConnectionError):
        return _Failure("connection_error", exc.message)
    return _Failure("api_error", f"{type(exc).__name__}: {exc}")


def _status_detail(exc: openai.APIStatusError) -> str:
    code = f" {exc.code}" if exc.code else ""
    message = exc.message.removeprefix(f"Error code: {exc.status_code} - ")
    return f"HTTP {exc.status_code}{code}: {message}"
