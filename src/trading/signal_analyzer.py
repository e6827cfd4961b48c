"""Named trading signals from the latest indicators, for the rule strategy, the AI prompt and the live pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

Direction = Literal["bullish", "bearish", "neutral"]


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    direction: Direction
    strength: float  # 0..1
    detail: str


def _clamp(value: float) -> float:
    return max(0.0, min(1.0, value))


def _trend(ind: dict[str, float]) -> Signal | None:
    if "sma_50" not in ind or "close" not in ind:
        return None
    gap_pct = 100.0 * (ind["close"] / ind["sma_50"] - 1.0)
    direction: Direction = "bullish" if gap_pct > 0 else "bearish" if gap_pct < 0 else "neutral"
    return Signal("trend", direction, _clamp(abs(gap_pct) / 5.0), f"close {gap_pct:+.2f}% vs SMA50")


def _ma_cross(ind: dict[str, float]) -> Signal | None:
    if "sma_20" not in ind or "sma_50" not in ind:
        return None
    gap_pct = 100.0 * (ind["sma_20"] / ind["sma_50"] - 1.0)
    direction: Direction = "bullish" if gap_pct > 0 else "bearish" if gap_pct < 0 else "neutral"
    return Signal("ma_cross", direction, _clamp(abs(gap_pct) / 3.0), f"SMA20 {gap_pct:+.2f}% vs SMA50")


def _rsi(ind: dict[str, float]) -> Signal | None:
    if "rsi_14" not in ind:
        return None
    value = ind["rsi_14"]
    if value >= 70:
        return Signal("rsi", "bearish", _clamp((value - 70) / 20 + 0.5), f"RSI {value:.1f} overbought")
    if value <= 30:
        return Signal("rsi", "bullish", _clamp((30 - value) / 20 + 0.5), f"RSI {value:.1f} oversold")
    return Signal("rsi", "neutral", 0.0, f"RSI {value:.1f}")


def _macd(ind: dict[str, float]) -> Signal | None:
    if "macd_hist" not in ind or "close" not in ind:
        return None
    hist = ind["macd_hist"]
    direction: Direction = "bullish" if hist > 0 else "bearish" if hist < 0 else "neutral"
    strength = _clamp(abs(hist) / (0.005 * ind["close"])) if ind["close"] > 0 else 0.0
    return Signal("macd", direction, strength, f"MACD histogram {hist:+.2f}")


def _bollinger(ind: dict[str, float]) -> Signal | None:
    if not {"bb_upper", "bb_lower", "close"} <= ind.keys() or ind["bb_upper"] <= ind["bb_lower"]:
        return None
    position = (ind["close"] - ind["bb_lower"]) / (ind["bb_upper"] - ind["bb_lower"])
    if position >= 1.0:
        return Signal("bollinger", "bullish", _clamp(position - 0.5), f"close above upper band ({position:.2f})")
    if position <= 0.0:
        return Signal("bollinger", "bearish", _clamp(0.5 - position), f"close below lower band ({position:.2f})")
    return Signal("bollinger", "neutral", 0.0, f"close inside bands ({position:.2f})")


def _squeeze(ind: dict[str, float]) -> Signal | None:
    if "bb_width_percentile" not in ind:
        return None
    pct = ind["bb_width_percentile"]
    squeezed = pct <= 20.0
    detail = f"band width percentile {pct:.0f}"
    return Signal("squeeze", "neutral", _clamp((20.0 - pct) / 20.0) if squeezed else 0.0, detail)


def _breakout(ind: dict[str, float]) -> Signal | None:
    if "donchian_high_20" not in ind or "close" not in ind:
        return None
    if ind["close"] >= ind["donchian_high_20"]:
        return Signal("breakout", "bullish", 1.0, "close at the 20-bar high")
    if "donchian_low_20" in ind and ind["close"] <= ind["donchian_low_20"]:
        return Signal("breakout", "bearish", 1.0, "close at the 20-bar low")
    return Signal("breakout", "neutral", 0.0, "inside the 20-bar range")


def _volume(ind: dict[str, float]) -> Signal | None:
    if "volume_ratio" not in ind:
        return None
    ratio = ind["volume_ratio"]
    strength = _clamp((ratio - 1.0) / 1.5) if ratio > 1.0 else 0.0
    return Signal("volume", "neutral", strength, f"volume {ratio:.2f}x its 20-bar mean")


def _adx(ind: dict[str, float]) -> Signal | None:
    if "adx_14" not in ind:
        return None
    value = ind["adx_14"]
    label = "trending" if value >= 25 else "ranging"
    return Signal("adx", "neutral", _clamp(value / 50.0), f"ADX {value:.1f} ({label})")


def _stochastic(ind: dict[str, float]) -> Signal | None:
    if "stoch_k" not in ind or "stoch_d" not in ind:
        return None
    k, d = ind["stoch_k"], ind["stoch_d"]
    if k >= 80 and k < d:
        return Signal("stochastic", "bearish", _clamp((k - 80) / 20 + 0.3), f"%K {k:.1f} below %D in overbought")
    if k <= 20 and k > d:
        return Signal("stochastic", "bullish", _clamp((20 - k) / 20 + 0.3), f"%K {k:.1f} above %D in oversold")
    return Signal("stochastic", "neutral", 0.0, f"%K {k:.1f} %D {d:.1f}")


def _obv(ind: dict[str, float]) -> Signal | None:
    if "obv_slope" not in ind:
        return None
    value = ind["obv_slope"]
    direction: Direction = "bullish" if value > 0 else "bearish" if value < 0 else "neutral"
    return Signal("obv", direction, 0.5 if value else 0.0, f"OBV 5-bar change {value:+.4g}")


_RULES: tuple[Callable[[dict[str, float]], Signal | None], ...] = (
    _trend,
    _ma_cross,
    _rsi,
    _macd,
    _bollinger,
    _squeeze,
    _breakout,
    _volume,
    _adx,
    _stochastic,
    _obv,
)


class SignalAnalyzer:
    """Turns an indicator snapshot (``get_latest_indicators``) into named signals with strengths."""

    def analyze_signals(self, indicators: dict[str, float]) -> list[Signal]:
        return [signal for rule in _RULES if (signal := rule(indicators)) is not None]

    def summary(self, signals: list[Signal]) -> dict[str, Any]:
        """JSON-serialisable digest: every signal, and the net bullish minus bearish strength."""
        bullish = sum(s.strength for s in signals if s.direction == "bullish")
        bearish = sum(s.strength for s in signals if s.direction == "bearish")
        net = bullish - bearish
        bias = "bullish" if net > 0.5 else "bearish" if net < -0.5 else "neutral"
        return {
            "signals": [asdict(signal) for signal in signals],
            "bullish_strength": round(bullish, 4),
            "bearish_strength": round(bearish, 4),
            "net_strength": round(net, 4),
            "bias": bias,
        }
