"""What the model is asked, byte for byte: the system prompt, the answer schema and the request.

The request is deterministic (sorted keys, temperature 0, values normalised to JSON-safe forms), so
the same market context always gives the same bytes and therefore the same cache hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import numpy as np

from src.api.interfaces import Orderbook
from src.domain.money import ZERO
from src.exceptions import DataError

SCHEMA_NAME = "trading_decision"

DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {
            "type": "string",
            "enum": ["buy", "sell", "hold"],
            "description": "buy opens or adds to a long spot position, sell closes it, hold does nothing.",
        },
        "confidence": {
            "type": "number",
            "minimum": 0,
            "maximum": 100,
            "description": "How sure you are, 0-100. 50 is a coin flip; above 80 only for strong confluence.",
        },
        "reason": {
            "type": "string",
            "description": "At most three sentences citing the specific values that drove the decision.",
        },
    },
    "required": ["decision", "confidence", "reason"],
    "additionalProperties": False,
}

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": SCHEMA_NAME,
        "description": "A spot trading decision for one market.",
        "strict": True,
        "schema": DECISION_SCHEMA,
    },
}

SYSTEM_PROMPT = """\
You are a disciplined trading adviser for a spot-only crypto bot on the Upbit KRW market. Once per \
candle you receive one JSON snapshot of a single market and answer buy, sell or hold with a \
confidence and a short reason. You cannot short and there is no leverage.

The snapshot fields:
- symbol: the Upbit market, e.g. KRW-BTC. timestamp: UTC time of the snapshot. price: last price in KRW.
- indicators (latest closed candle): close; sma_20, sma_50, ema_12, ema_26 (moving averages); rsi_14 \
(0-100, above 70 overbought, below 30 oversold); macd, macd_signal, macd_hist; bb_upper, bb_middle, \
bb_lower, bb_width and bb_width_percentile (0-100, low means a volatility squeeze); atr_14 and atr_pct \
(ATR as percent of price); adx_14 (trend strength, below 20 weak, above 25 trending); stoch_k, stoch_d; \
obv and obv_slope (volume flow); donchian_high_20, donchian_low_20 (20-candle range); volume_ratio \
(volume / 20-candle average, above 1.3 is meaningful participation).
- signals: the rule engine's reading of those indicators: each signal with direction \
(bullish/bearish/neutral), strength 0-1 and detail, plus net_strength and overall bias.
- orderbook: best bid and ask, spread_pct and the depth on each side near the top of the book; \
bid_ask_imbalance above 0 means more resting bids than asks.
- position: null when the bot holds none of this coin; otherwise the entry price, volume, unrealised \
profit in percent and how long it has been held.
- fear_greed: the crypto Fear & Greed index (0 extreme fear, 100 extreme greed) and its label.
- quick_filter: a backtest of the rule strategy over recent history on this market: passed, the \
thresholds it failed and its metrics (return, win rate, drawdown...). A failed filter means the \
setup has not worked lately.
A null value means the data is unavailable: never guess it, and be more cautious because of it.

How to decide:
- You are an adviser inside hard rules. Risk limits and a validator run after you and can always veto \
a buy (overbought RSI, extreme volatility, weak trend on thin volume, flash crashes, low confidence, \
position and loss limits). Do not try to argue around them.
- Default to hold. Buy only on confluence: trend, momentum and volume agree, the quick filter passed, \
and the orderbook shows no obvious wall against the move.
- With an open position, sell when the trend breaks, momentum turns clearly bearish, or the risk of \
giving back profit outweighs the upside. Without a position, never answer sell; answer hold.
- Be conservative with confidence: 50 means no edge, 60-75 a reasonable setup, above 80 only when \
almost everything agrees. Overconfidence costs money.
- The reason must cite the concrete values you used (for example "RSI 64, ADX 28, volume ratio 1.8") \
in at most three sentences.
Answer only with the JSON object the schema describes."""

# Floats are cut to this many significant digits so that recomputing an indicator over a
# slightly different window (float noise in the last bits) still gives the same prompt hash.
_SIGNIFICANT_DIGITS = 10


def json_safe(value: Any, path: str = "payload") -> Any:
    """A copy of ``value`` that ``json.dumps`` accepts without surprises.

    NaN and infinities become null, Decimal becomes its string, datetimes become ISO-8601 in UTC,
    enums their value, numpy scalars and arrays plain Python. Anything else is a ``DataError``
    naming where in the payload it sits.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Enum):
        return json_safe(value.value, path)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return float(f"{number:.{_SIGNIFICANT_DIGITS}g}") if math.isfinite(number) else None
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, datetime):
        return _iso_utc(value, path)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): json_safe(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value), path)
    raise DataError(f"{path}: cannot put a {type(value).__name__} into the AI prompt", path=path)


def _iso_utc(moment: datetime, path: str) -> str:
    if moment.tzinfo is None:
        raise DataError(f"{path}: naive datetime {moment.isoformat()}; expected a timezone-aware UTC time", path=path)
    return moment.astimezone(UTC).isoformat()


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def build_messages(payload: Mapping[str, Any]) -> list[dict[str, str]]:
    user = "Market snapshot (JSON):\n" + canonical_json(json_safe(payload))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def build_request(model: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The exact Chat Completions body (minus transport options) sent for one decision."""
    return {
        "model": model,
        "messages": build_messages(payload),
        "response_format": RESPONSE_FORMAT,
        "temperature": 0,
    }


def prompt_text(request: Mapping[str, Any]) -> str:
    """The stored prompt: canonical JSON of model, messages and answer schema."""
    return canonical_json({key: request[key] for key in ("model", "messages", "response_format")})


def request_hash(request: Mapping[str, Any]) -> str:
    """The cache key: sha256 of ``prompt_text(request)``."""
    return hashlib.sha256(prompt_text(request).encode("utf-8")).hexdigest()


def summarize_orderbook(orderbook: Orderbook, depth: int = 5) -> dict[str, Any]:
    """The part of an orderbook the model needs: top of book, spread and depth on each side."""
    asks, bids = orderbook.asks[:depth], orderbook.bids[:depth]
    ask_size = sum((level.size for level in asks), ZERO)
    bid_size = sum((level.size for level in bids), ZERO)
    best_ask, best_bid = orderbook.best_ask, orderbook.best_bid
    spread_pct = None
    if best_ask is not None and best_bid is not None and best_bid > 0:
        spread_pct = float((best_ask - best_bid) / best_bid * 100)
    total = ask_size + bid_size
    return {
        "best_ask": float(best_ask) if best_ask is not None else None,
        "best_bid": float(best_bid) if best_bid is not None else None,
        "spread_pct": spread_pct,
        "levels": depth,
        "ask_depth_krw": float(sum((level.price * level.size for level in asks), ZERO)),
        "bid_depth_krw": float(sum((level.price * level.size for level in bids), ZERO)),
        "bid_ask_imbalance": float((bid_size - ask_size) / total) if total > 0 else None,
    }
