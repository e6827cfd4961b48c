"""The settings groups of trading itself: the market and its fees, Upbit, market data, the AI, risk, backtests."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from src.config.env import BUNDLED_ROOT, PROJECT_ROOT, Group, split_csv
from src.config.rules import (
    CashReservePct,
    ConfidencePct,
    DailyBudgetUsd,
    KrwMarkets,
    LossLimitPct,
    MaxPositionPct,
    MaxPositions,
    MaxTradesPerDay,
    MonthlyBudgetUsd,
    StrategyName,
    StrategyParams,
    TradeSpacingHours,
)
from src.domain.decisions import PositionSizing
from src.domain.market_stream import MarketWarningAction
from src.domain.modes import TradingMode
from src.domain.orders import SmpType
from src.domain.params_json import parse_params_json
from src.exceptions import ConfigurationError


class TradingConfig(Group):
    mode: TradingMode = Field(default=TradingMode.PAPER, validation_alias="TRADING_MODE")
    symbols: Annotated[KrwMarkets, NoDecode] = Field(default=["KRW-BTC"], validation_alias="TRADING_SYMBOLS")
    fee_rate: Decimal = Field(default=Decimal("0.0005"), ge=0, lt=Decimal("0.01"), validation_alias="TRADING_FEE_RATE")
    min_order_krw: Decimal = Field(default=Decimal("5000"), gt=0, validation_alias="MIN_ORDER_KRW")
    paper_starting_krw: Decimal = Field(default=Decimal("10000000"), gt=0, validation_alias="PAPER_STARTING_KRW")
    candle_interval_minutes: int = Field(default=60, validation_alias="TRADING_CANDLE_INTERVAL_MINUTES")
    order_not_found_grace_seconds: int = Field(
        default=300, ge=0, le=86400, validation_alias="ORDER_NOT_FOUND_GRACE_SECONDS"
    )

    _split_symbols = field_validator("symbols", mode="before")(split_csv)

    @field_validator("candle_interval_minutes")
    @classmethod
    def _upbit_unit(cls, unit: int) -> int:
        if unit not in (1, 3, 5, 10, 15, 30, 60, 240):
            raise ValueError("expected one of Upbit's minute units 1, 3, 5, 10, 15, 30, 60, 240")
        return unit


class UpbitConfig(Group):
    access_key: SecretStr | None = Field(default=None, validation_alias="UPBIT_ACCESS_KEY")
    secret_key: SecretStr | None = Field(default=None, validation_alias="UPBIT_SECRET_KEY")
    base_url: str = Field(default="https://api.upbit.com", validation_alias="UPBIT_BASE_URL")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120, validation_alias="UPBIT_TIMEOUT_SECONDS")
    # Upbit's public WebSocket; the private stream is the same URL plus ``/private``
    websocket_url: str = Field(default="wss://api.upbit.com/websocket/v1", validation_alias="UPBIT_WEBSOCKET_URL")

    @property
    def has_keys(self) -> bool:
        return bool(self.access_key and self.access_key.get_secret_value()) and bool(
            self.secret_key and self.secret_key.get_secret_value()
        )


class RealtimeConfig(Group):
    """The real-time path: exits on Upbit's WebSocket prices, the private stream, market warnings, order checks."""

    # Watch held coins on the public stream and exit within seconds (the position job stays as a safety net)
    exits_enabled: bool = Field(default=True, validation_alias="REALTIME_EXITS_ENABLED")
    # No message for this long: the stream is stale and the REST fallback polls
    stale_seconds: float = Field(default=30.0, gt=0, le=3600, validation_alias="REALTIME_STALE_SECONDS")
    fallback_poll_seconds: float = Field(default=5.0, gt=0, le=900, validation_alias="REALTIME_FALLBACK_POLL_SECONDS")
    reconnect_max_seconds: float = Field(default=30.0, gt=0, le=3600, validation_alias="REALTIME_RECONNECT_MAX_SECONDS")
    # myOrder and announcement events (needs the API keys)
    private_stream_enabled: bool = Field(default=True, validation_alias="UPBIT_PRIVATE_STREAM_ENABLED")
    market_warning_action: MarketWarningAction = Field(
        default=MarketWarningAction.ALERT, validation_alias="MARKET_WARNING_ACTION"
    )
    market_warning_stop_pct: Decimal = Field(
        default=Decimal("1"), gt=0, lt=50, validation_alias="MARKET_WARNING_STOP_PCT"
    )
    market_status_refresh_minutes: int = Field(
        default=10, ge=1, le=1440, validation_alias="MARKET_STATUS_REFRESH_MINUTES"
    )
    # Refresh of the per-market tick sizes read from GET /v1/orderbook/instruments
    instruments_refresh_hours: int = Field(default=24, ge=1, le=168, validation_alias="INSTRUMENTS_REFRESH_HOURS")
    # Self-match prevention sent on every order: cancel_maker (Upbit's default), cancel_taker, reduce or none
    smp_type: SmpType = Field(default=SmpType.CANCEL_MAKER, validation_alias="UPBIT_SMP_TYPE")


class MarketDataConfig(Group):
    fear_greed_url: str = Field(default="https://api.alternative.me/fng/", validation_alias="FEAR_GREED_URL")
    fear_greed_timeout_seconds: float = Field(default=5.0, gt=0, le=60, validation_alias="FEAR_GREED_TIMEOUT_SECONDS")
    backtest_data_dir: Path = Field(default=BUNDLED_ROOT / "backtest_data", validation_alias="BACKTEST_DATA_DIR")

    @field_validator("backtest_data_dir")
    @classmethod
    def _relative_to_project(cls, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path


class AIConfig(Group):
    enabled: bool = Field(default=True, validation_alias="AI_ENABLED")
    api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    base_url: str = Field(default="https://api.openai.com/v1", validation_alias="OPENAI_BASE_URL")
    model: str = Field(default="gpt-4o-mini", min_length=1, validation_alias="OPENAI_MODEL")
    timeout_seconds: float = Field(default=30.0, gt=0, le=300, validation_alias="OPENAI_TIMEOUT_SECONDS")
    max_retries: int = Field(default=2, ge=0, le=10, validation_alias="OPENAI_MAX_RETRIES")
    input_price_per_million: Decimal = Field(
        default=Decimal("0.15"), ge=0, validation_alias="OPENAI_INPUT_PRICE_PER_1M"
    )
    output_price_per_million: Decimal = Field(
        default=Decimal("0.60"), ge=0, validation_alias="OPENAI_OUTPUT_PRICE_PER_1M"
    )
    min_confidence: ConfidencePct = Field(default=Decimal("60"), validation_alias="AI_MIN_CONFIDENCE")
    # USD caps on the model's spend per UTC day / UTC month (decisions and quick-filter calls); 0 = no cap
    daily_budget_usd: DailyBudgetUsd = Field(default=Decimal("1"), validation_alias="AI_DAILY_BUDGET_USD")
    monthly_budget_usd: MonthlyBudgetUsd = Field(default=Decimal("20"), validation_alias="AI_MONTHLY_BUDGET_USD")
    # The model's training cut-off (UTC; a date or date-time): ``backtest.py ai-value`` marks results on candles
    # before it as possibly contaminated (the model may know that history) and headlines only those after it.
    training_cutoff: datetime | None = Field(default=None, validation_alias="AI_TRAINING_CUTOFF")

    @field_validator("training_cutoff")
    @classmethod
    def _cutoff_in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def has_key(self) -> bool:
        return bool(self.api_key and self.api_key.get_secret_value())


class RiskConfig(Group):
    # Exits (stop, target, trailing stop, time-out) are the strategy's parameters (STRATEGY_PARAMS), not risk
    # settings, and a coin already held is never bought again (the strategy buys only when flat): see
    # src/config/removed_keys.py for the keys that used to be here.
    daily_loss_limit_pct: LossLimitPct = Field(default=Decimal("10"), validation_alias="DAILY_LOSS_LIMIT_PCT")
    weekly_loss_limit_pct: LossLimitPct = Field(default=Decimal("15"), validation_alias="WEEKLY_LOSS_LIMIT_PCT")
    min_trade_interval_hours: TradeSpacingHours = Field(
        default=Decimal("4"), validation_alias="MIN_TRADE_INTERVAL_HOURS"
    )
    max_trades_per_day: MaxTradesPerDay = Field(default=5, validation_alias="MAX_TRADES_PER_DAY")
    max_positions: MaxPositions = Field(default=3, validation_alias="MAX_POSITIONS")
    max_position_pct: MaxPositionPct = Field(default=Decimal("40"), validation_alias="MAX_POSITION_PCT")
    cash_reserve_pct: CashReservePct = Field(default=Decimal("10"), validation_alias="CASH_RESERVE_PCT")
    position_sizing: PositionSizing = Field(default=PositionSizing.FIXED, validation_alias="POSITION_SIZING")
    position_fraction_pct: Decimal = Field(
        default=Decimal("20"), gt=0, le=100, validation_alias="POSITION_FRACTION_PCT"
    )
    kelly_min_pct: Decimal = Field(default=Decimal("5"), gt=0, le=100, validation_alias="KELLY_MIN_PCT")
    kelly_max_pct: Decimal = Field(default=Decimal("30"), gt=0, le=100, validation_alias="KELLY_MAX_PCT")
    kelly_min_trades: int = Field(default=20, ge=1, validation_alias="KELLY_MIN_TRADES")
    validator_max_rsi: Decimal = Field(default=Decimal("70"), gt=0, le=100, validation_alias="VALIDATOR_MAX_RSI")
    validator_max_atr_pct: Decimal = Field(default=Decimal("6"), gt=0, validation_alias="VALIDATOR_MAX_ATR_PCT")
    validator_fakeout_adx: Decimal = Field(
        default=Decimal("20"), ge=0, le=100, validation_alias="VALIDATOR_FAKEOUT_ADX"
    )
    validator_fakeout_volume_ratio: Decimal = Field(
        default=Decimal("1.3"), ge=0, validation_alias="VALIDATOR_FAKEOUT_VOLUME_RATIO"
    )
    flash_crash_pct: Decimal = Field(default=Decimal("5"), gt=0, lt=100, validation_alias="FLASH_CRASH_PCT")
    max_slippage_pct: Decimal = Field(
        default=Decimal("0.5"), gt=0, lt=100, validation_alias="LIQUIDITY_MAX_SLIPPAGE_PCT"
    )

    @model_validator(mode="after")
    def _kelly_bounds(self) -> RiskConfig:
        if self.kelly_min_pct > self.kelly_max_pct:
            raise ValueError("KELLY_MIN_PCT must not exceed KELLY_MAX_PCT")
        return self


class StrategyConfig(Group):
    """Which strategy trades (see docs/BACKTESTING.md, "The strategy contract"). The name and the parameters are
    checked against the strategy's declared parameter space when the strategy is built, at start-up."""

    name: StrategyName = Field(default="rule_breakout", validation_alias="TRADING_STRATEGY")
    params: Annotated[StrategyParams, NoDecode] = Field(default_factory=dict, validation_alias="STRATEGY_PARAMS")
    path: Path = Field(default=BUNDLED_ROOT / "strategies", validation_alias="STRATEGY_PATH")
    # The strategy whose entry candidates the AI adviser confirms when TRADING_STRATEGY=ai.
    candidate: str = Field(
        default="rule_breakout", pattern=r"^[a-z][a-z0-9_]{0,63}$", validation_alias="AI_CANDIDATE_STRATEGY"
    )

    @field_validator("params", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse_params_json(value)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from None

    @field_validator("path")
    @classmethod
    def _relative_to_project(cls, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path


class BacktestConfig(Group):
    # Backtests start from the bot's own capital, PAPER_STARTING_KRW (backtest.py --capital overrides it).
    slippage_pct: Decimal = Field(default=Decimal("0.05"), ge=0, lt=10, validation_alias="BACKTEST_SLIPPAGE_PCT")
    quick_filter_lookback_days: int = Field(default=30, ge=5, le=3650, validation_alias="QUICK_FILTER_LOOKBACK_DAYS")
    quick_filter_tier: Literal["strict", "moderate", "lenient"] = Field(
        default="moderate", validation_alias="QUICK_FILTER_TIER"
    )
    # Backtests through the API (POST /api/v1/backtests): worker processes, and runs that may wait for one
    api_workers: int = Field(default=1, ge=1, le=32, validation_alias="BACKTEST_API_WORKERS")
    api_queue: int = Field(default=4, ge=0, le=1000, validation_alias="BACKTEST_API_QUEUE")
