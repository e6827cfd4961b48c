"""The risk manager: may a buy happen and how big, circuit breakers and safe mode, and which exits are due.

Every entry rule reads its threshold from ``RiskConfig``; exits are the trading strategy's (its ``ExitPolicy``,
decided by ``src.risk.exits``, the function the backtest calls too); every piece of state (safe mode, equity anchors,
positions, trade history) lives in the ``RiskStore`` and is read afresh on each call, so a restarted
process, or another process sharing the database, sees the same state. See ``docs/RISK.md``.

Typical cycle (the pipeline):
    events = await risk.on_equity(portfolio.equity, now)        # circuit breakers first
    for signal in risk.exits_due(await positions.open_positions(), prices, now):
        ...sell; await positions.on_fill(..., reason=signal.reason)
    verdict = await risk.evaluate_entry(symbol, portfolio, now)   # only for a buy
    krw = risk.size_entry(verdict, portfolio, await risk.trade_stats())
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from src.config.trading_groups import RiskConfig
from src.domain.events import EventKind, NotificationEvent
from src.domain.exits import ExitPolicy, ExitReason
from src.domain.market_rules import MIN_ORDER_KRW
from src.domain.modes import TradingMode
from src.domain.money import ZERO, format_krw, quantize_money, whole_krw
from src.domain.orders import Side
from src.exceptions import InvalidInput
from src.risk.exits import exit_reason_for, trailing_for
from src.risk.models import EntryRule, ExitSignal, PortfolioView, RiskVerdict, SizingDecision, TradeStats
from src.risk.sizing import HUNDRED, size_position
from src.risk.store import PositionRecord, RiskState, RiskStore, UnsettledOrder
from src.utils.logger import get_logger

log = get_logger(__name__)

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def day_start(moment: datetime) -> datetime:
    """00:00 UTC of the moment's UTC day."""
    utc = moment.astimezone(UTC)
    return utc.replace(hour=0, minute=0, second=0, microsecond=0)


def week_start(moment: datetime) -> datetime:
    """Monday 00:00 UTC of the moment's ISO week."""
    start = day_start(moment)
    return start - timedelta(days=start.weekday())


def _require_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise InvalidInput(f"{name} must be a timezone-aware UTC datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _loss_pct(anchor: Decimal | None, equity: Decimal) -> Decimal:
    if anchor is None or anchor <= 0:
        return ZERO
    return (anchor - equity) / anchor * HUNDRED


class RiskManager:
    """Risk rules of one trading mode over a ``RiskStore``.

    ``RiskManager(config, store, mode, clock=None, *, policy=ExitPolicy(), min_order_krw=MIN_ORDER_KRW,
    fee_rate=0)``: ``clock`` gives "now" where a method takes no time (``reset_safe_mode``/``enter_safe_mode``);
    ``policy`` is the trading strategy's exit policy (its time-out; the levels are on the positions);
    ``fee_rate`` (e.g. ``TradingConfig.fee_rate``) keeps the buy fee inside the cash reserve.
    Operator overrides: ``with_config(new_config)`` / ``with_policy(new_policy)`` (cheap; the state is in
    the store, so both managers see the same state).
    """

    def __init__(
        self,
        config: RiskConfig,
        store: RiskStore,
        mode: TradingMode,
        clock: Clock | None = None,
        *,
        policy: ExitPolicy | None = None,
        min_order_krw: Decimal = MIN_ORDER_KRW,
        fee_rate: Decimal = ZERO,
    ) -> None:
        if fee_rate < 0 or min_order_krw <= 0:
            raise InvalidInput(f"expected fee_rate >= 0 and min_order_krw > 0, got {fee_rate} and {min_order_krw}")
        if policy is not None and not isinstance(policy, ExitPolicy):
            raise InvalidInput(f"policy must be the strategy's ExitPolicy, got {type(policy).__name__}")
        self.config = config
        self.policy = policy or ExitPolicy()
        self.store = store
        self.mode = mode
        self.clock: Clock = clock or _utc_now
        self.min_order_krw = min_order_krw
        self.fee_rate = fee_rate

    def with_config(self, config: RiskConfig) -> RiskManager:
        """The same manager (store, mode, clock, exit policy) under other thresholds."""
        return RiskManager(
            config,
            self.store,
            self.mode,
            self.clock,
            policy=self.policy,
            min_order_krw=self.min_order_krw,
            fee_rate=self.fee_rate,
        )

    def with_policy(self, policy: ExitPolicy) -> RiskManager:
        """The same manager under another strategy's exit policy."""
        return RiskManager(
            self.config,
            self.store,
            self.mode,
            self.clock,
            policy=policy,
            min_order_krw=self.min_order_krw,
            fee_rate=self.fee_rate,
        )

    # --- entries ---------------------------------------------------------------------------------
    async def evaluate_entry(self, symbol: str, portfolio: PortfolioView, now: datetime) -> RiskVerdict:
        """May ``symbol`` be bought now, and for at most how many KRW (order total before the fee).

        Checks, all reported together: safe mode; ``MIN_TRADE_INTERVAL_HOURS`` since the last executed
        trade (exactly the interval is allowed); ``MAX_TRADES_PER_DAY`` executed trades in the UTC day
        (the Nth is allowed, the N+1th not); ``MAX_POSITIONS``; ``MAX_POSITION_PCT`` of equity per coin
        including the existing holding (dust below the minimum order); ``CASH_RESERVE_PCT`` of equity kept in
        KRW; and the room left must reach the minimum order. A coin already held (open position, unsettled
        buy, or a balance at the exchange worth at least the minimum order) is never bought again: the
        strategy buys only when flat.

        Unsettled orders (``pending``: answer lost; ``open``) count as trades until reconciliation settles
        them: for the spacing, the trades of the day, and (buys) the position count and the coin's exposure
        at their requested total. Exits never pass through here: they are never blocked.
        """
        now = _require_utc(now, "now")
        unsettled = await self.store.list_unsettled_orders(self.mode)
        reasons: list[str] = []
        reasons += self._safe_mode_reasons(await self.store.load_risk_state(self.mode), now)
        reasons += await self._spacing_reasons(now, unsettled)
        open_symbols = {position.symbol for position in await self.store.list_open_positions(self.mode)}
        buys = [order for order in unsettled if order.side is Side.BUY]
        in_flight = {order.symbol for order in buys}
        held = symbol in open_symbols or symbol in in_flight or portfolio.holding(symbol) >= self.min_order_krw
        in_flight_only = in_flight - open_symbols  # coins whose first buy is not settled yet
        positions = portfolio.open_position_count + len(in_flight_only)
        if not held and positions >= self.config.max_positions:
            note = f" (incl. {len(in_flight_only)} unsettled buys)" if in_flight_only else ""
            reasons.append(
                f"{EntryRule.MAX_POSITIONS}: {positions} open positions{note}, limit {self.config.max_positions}"
            )
        if held:
            reasons.append(
                f"{EntryRule.ALREADY_HELD}: {symbol} is already held "
                f"({self._held_how(symbol, open_symbols, in_flight, portfolio)}); the strategy buys only when flat"
            )
        in_flight_krw = sum((o.requested_total or ZERO for o in buys if o.symbol == symbol), ZERO)
        coin_room = self._coin_room(symbol, portfolio, in_flight_krw, reasons)
        cash_room = self._cash_room(portfolio, reasons)
        max_krw = whole_krw(max(min(coin_room, cash_room), ZERO))
        if coin_room > 0 and cash_room > 0 and max_krw < self.min_order_krw:
            reasons.append(
                f"{EntryRule.MIN_ORDER}: room for {format_krw(max_krw)} KRW is below the minimum order "
                f"{format_krw(self.min_order_krw)} KRW"
            )
        verdict = RiskVerdict(allowed=not reasons, reasons=reasons, max_krw=ZERO if reasons else max_krw)
        log.info(
            "risk.entry_evaluated",
            symbol=symbol,
            mode=str(self.mode),
            allowed=verdict.allowed,
            max_krw=str(verdict.max_krw),
            unsettled=[order.identifier for order in unsettled],
            reasons=reasons,
        )
        return verdict

    @staticmethod
    def _held_how(symbol: str, open_symbols: set[str], in_flight: set[str], portfolio: PortfolioView) -> str:
        if symbol in open_symbols:
            return "open position"
        if symbol in in_flight:
            return "unsettled buy order"
        return f"balance at the exchange worth {format_krw(portfolio.holding(symbol))} KRW"

    @staticmethod
    def _safe_mode_reasons(state: RiskState, now: datetime) -> list[str]:
        if not state.safe_mode_active(now):
            return []
        until = state.safe_mode_until.isoformat() if state.safe_mode_until else "the operator resets it"
        return [f"{EntryRule.SAFE_MODE}: {state.safe_mode_reason or 'active'} (no new buys until {until})"]

    async def _spacing_reasons(self, now: datetime, unsettled: list[UnsettledOrder]) -> list[str]:
        """Executed trades and unsettled orders (an order without a time counts as placed now)."""
        reasons: list[str] = []
        interval = timedelta(hours=float(self.config.min_trade_interval_hours))
        placed = [order.created_at or now for order in unsettled]
        last = max([at for at in [await self.store.last_trade_at(self.mode), *placed] if at is not None], default=None)
        if last is not None and now - last < interval:
            reasons.append(
                f"{EntryRule.MIN_TRADE_INTERVAL}: last trade (or unsettled order) at {last.isoformat()}, next "
                f"entry allowed from {(last + interval).isoformat()} ({self.config.min_trade_interval_hours}h apart)"
            )
        today = await self.store.count_trades_since(self.mode, day_start(now))
        today += sum(1 for at in placed if at >= day_start(now))
        if today >= self.config.max_trades_per_day:
            reasons.append(
                f"{EntryRule.MAX_TRADES_PER_DAY}: {today} trades today (UTC, unsettled orders included), "
                f"limit {self.config.max_trades_per_day}"
            )
        return reasons

    def _coin_room(self, symbol: str, portfolio: PortfolioView, in_flight_krw: Decimal, reasons: list[str]) -> Decimal:
        cap = portfolio.equity * self.config.max_position_pct / HUNDRED
        held = portfolio.holding(symbol) + in_flight_krw
        room = cap - held
        if room <= 0:
            reasons.append(
                f"{EntryRule.MAX_POSITION_PCT}: {symbol} already holds {format_krw(held)} KRW (unsettled buys "
                f"included), cap "
                f"{self.config.max_position_pct}% of equity = {format_krw(cap)} KRW"
            )
        return room

    def _cash_room(self, portfolio: PortfolioView, reasons: list[str]) -> Decimal:
        reserve = portfolio.equity * self.config.cash_reserve_pct / HUNDRED
        spendable = (portfolio.cash_krw - reserve) / (1 + self.fee_rate)
        if spendable <= 0:
            reasons.append(
                f"{EntryRule.CASH_RESERVE}: cash {format_krw(portfolio.cash_krw)} KRW is within the reserve "
                f"{self.config.cash_reserve_pct}% of equity = {format_krw(reserve)} KRW"
            )
        return spendable

    def sizing(self, verdict: RiskVerdict, portfolio: PortfolioView, stats: TradeStats | None) -> SizingDecision:
        """``size_entry`` with its method, percent and an explanatory note (for logs and the database)."""
        if not verdict.allowed:
            return SizingDecision(ZERO, self.config.position_sizing, ZERO, "entry refused by risk")
        return size_position(portfolio.equity, verdict.max_krw, self.min_order_krw, self.config, stats)

    def size_entry(self, verdict: RiskVerdict, portfolio: PortfolioView, stats: TradeStats | None) -> Decimal:
        """KRW order total for a new buy: ``POSITION_FRACTION_PCT`` of equity (``POSITION_SIZING=fixed``) or
        half-Kelly clamped to ``KELLY_MIN_PCT..KELLY_MAX_PCT`` (fixed fraction while fewer than
        ``KELLY_MIN_TRADES`` positions are closed), capped by ``verdict.max_krw``, whole KRW.
        0 when the verdict refuses or the result is below the minimum order."""
        decision = self.sizing(verdict, portfolio, stats)
        if decision.note:
            log.info("risk.sized", krw=str(decision.krw), method=str(decision.method), note=decision.note)
        return decision.krw

    async def trade_stats(self, limit: int | None = None) -> TradeStats:
        """Win rate and payoff of this mode's closed positions (the most recent ``limit``, or all)."""
        return TradeStats.from_positions(await self.store.list_closed_positions(self.mode, limit))

    # --- circuit breakers --------------------------------------------------------------------------
    async def on_equity(self, equity: Decimal, now: datetime) -> list[NotificationEvent]:
        """Feed the current equity (KRW). Rolls the UTC-day and ISO-week anchors, tracks the peak,
        ends an expired safe mode, and enters safe mode when the loss from the day anchor reaches
        ``DAILY_LOSS_LIMIT_PCT`` (until the next 00:00 UTC) or from the week anchor reaches
        ``WEEKLY_LOSS_LIMIT_PCT`` (until next Monday 00:00 UTC). The state is saved; the returned
        events (SAFE_MODE_ENTERED / SAFE_MODE_LEFT) are for the notifier."""
        now = _require_utc(now, "now")
        if not isinstance(equity, Decimal) or equity < 0:
            raise InvalidInput(f"equity must be a non-negative Decimal, got {equity!r}")
        state = await self.store.load_risk_state(self.mode)
        events: list[NotificationEvent] = []
        if state.safe_mode and state.safe_mode_until is not None and now >= state.safe_mode_until:
            events.append(self._leave(state, now, f"expired at {state.safe_mode_until.isoformat()}"))
        self._roll_anchors(state, equity, now)
        state.peak_equity = max(state.peak_equity or ZERO, quantize_money(equity))
        breach = self._breach(state, equity, now)
        if breach is not None:
            reason, until = breach
            event = self._enter_or_extend(state, now, reason, until, equity)
            if event is not None:
                events.append(event)
        await self.store.save_risk_state(state)
        return events

    @staticmethod
    def _roll_anchors(state: RiskState, equity: Decimal, now: datetime) -> None:
        """Re-anchor when the anchor is not in the current UTC day / ISO week (also if the clock went back)."""
        day, week = day_start(now), week_start(now)
        if state.day_anchor_equity is None or state.day_anchor_at is None or day_start(state.day_anchor_at) != day:
            state.day_anchor_at, state.day_anchor_equity = now, quantize_money(equity)
        if state.week_anchor_equity is None or state.week_anchor_at is None or week_start(state.week_anchor_at) != week:
            state.week_anchor_at, state.week_anchor_equity = now, quantize_money(equity)

    def _breach(self, state: RiskState, equity: Decimal, now: datetime) -> tuple[str, datetime] | None:
        weekly = _loss_pct(state.week_anchor_equity, equity)
        if weekly >= self.config.weekly_loss_limit_pct:
            reason = (
                f"weekly loss {weekly:.2f}% from {format_krw(state.week_anchor_equity)} KRW reached the limit "
                f"{self.config.weekly_loss_limit_pct}%"
            )
            return reason, week_start(now) + timedelta(days=7)
        daily = _loss_pct(state.day_anchor_equity, equity)
        if daily >= self.config.daily_loss_limit_pct:
            reason = (
                f"daily loss {daily:.2f}% from {format_krw(state.day_anchor_equity)} KRW reached the limit "
                f"{self.config.daily_loss_limit_pct}%"
            )
            return reason, day_start(now) + timedelta(days=1)
        return None

    def _enter_or_extend(
        self, state: RiskState, now: datetime, reason: str, until: datetime, equity: Decimal
    ) -> NotificationEvent | None:
        if state.safe_mode and (state.safe_mode_until is None or state.safe_mode_until >= until):
            return None  # already in safe mode for at least as long
        extended = state.safe_mode
        state.safe_mode, state.safe_mode_reason, state.safe_mode_until = True, reason, until
        if not extended:
            state.safe_mode_since = now
        log.warning("risk.safe_mode_entered", mode=str(self.mode), reason=reason, until=until.isoformat())
        return NotificationEvent(
            kind=EventKind.SAFE_MODE_ENTERED,
            title="Safe mode extended: no new buys" if extended else "Safe mode: no new buys",
            fields={
                "mode": str(self.mode),
                "reason": reason,
                "until": until.isoformat(),
                "equity": equity,
                "peak_equity": state.peak_equity,
                "extended": extended,
            },
            at=now,
        )

    def _leave(self, state: RiskState, now: datetime, why: str) -> NotificationEvent:
        was = state.safe_mode_reason
        state.safe_mode, state.safe_mode_reason, state.safe_mode_since, state.safe_mode_until = False, None, None, None
        log.info("risk.safe_mode_left", mode=str(self.mode), why=why, was=was)
        return NotificationEvent(
            kind=EventKind.SAFE_MODE_LEFT,
            title="Safe mode ended: buys allowed again",
            fields={"mode": str(self.mode), "why": why, "was": was},
            at=now,
        )

    async def reset_safe_mode(
        self, by: str, reason: str, requested_at: datetime | None = None
    ) -> NotificationEvent | None:
        """The operator ends safe mode now. The day and week anchors are cleared, so losses are
        measured afresh from the next equity seen (otherwise the same loss would re-enter safe mode at
        once). Returns the SAFE_MODE_LEFT event, or ``None`` when safe mode was not on, or when the
        request (``requested_at``) is older than the safe mode it would end."""
        if not by.strip() or not reason.strip():
            raise InvalidInput("reset_safe_mode needs who resets it (by) and why (reason)")
        now = self.clock()
        state = await self.store.load_risk_state(self.mode)
        if not state.safe_mode:
            return None
        if requested_at is not None and state.safe_mode_since is not None and requested_at < state.safe_mode_since:
            return None
        event = self._leave(state, now, f"reset by {by}: {reason}")
        state.day_anchor_at = state.day_anchor_equity = None
        state.week_anchor_at = state.week_anchor_equity = None
        await self.store.save_risk_state(state)
        return event

    async def enter_safe_mode(self, by: str, reason: str, until: datetime | None = None) -> NotificationEvent:
        """The operator stops new buys, until ``until`` or (``None``) until ``reset_safe_mode``."""
        if not by.strip() or not reason.strip():
            raise InvalidInput("enter_safe_mode needs who enters it (by) and why (reason)")
        now = self.clock()
        if until is not None and _require_utc(until, "until") <= now:
            raise InvalidInput(f"until must be in the future, got {until.isoformat()}")
        state = await self.store.load_risk_state(self.mode)
        was_on = state.safe_mode
        state.safe_mode, state.safe_mode_reason, state.safe_mode_until = True, f"set by {by}: {reason}", until
        state.safe_mode_since = state.safe_mode_since if was_on and state.safe_mode_since else now
        await self.store.save_risk_state(state)
        log.warning("risk.safe_mode_entered", mode=str(self.mode), reason=state.safe_mode_reason, by=by)
        return NotificationEvent(
            kind=EventKind.SAFE_MODE_ENTERED,
            title="Safe mode: no new buys",
            fields={
                "mode": str(self.mode),
                "reason": state.safe_mode_reason,
                "until": until.isoformat() if until else None,
                "extended": was_on,
            },
            at=now,
        )

    async def risk_state(self) -> RiskState:
        """The stored state of this mode (for the API and reports)."""
        return await self.store.load_risk_state(self.mode)

    # --- exits -------------------------------------------------------------------------------------
    def exits_due(
        self,
        positions: Iterable[PositionRecord],
        prices: Mapping[str, Decimal],
        now: datetime,
        *,
        lows: Mapping[str, Decimal] | None = None,
        highs: Mapping[str, Decimal] | None = None,
    ) -> list[ExitSignal]:
        """Which open positions must be sold now. Never blocked by safe mode or trade spacing.

        Per position (skipped when ``prices`` lacks its symbol), by ``src.risk.exits.exit_reason_for`` (the
        backtest's ``exit_code``): stop-loss when the price (or the optional ``low`` since the last check) is at
        or below ``stop_price``; trailing stop when it is at or below the trailing level (``highest x (1 -
        trailing_stop_pct/100)``) and that level is above the stop; take-profit when the price (or ``high``)
        is at or above ``take_profit_price``; time-out when the position has been held ``max_hold_hours`` of
        the policy or more (``now - entry_at``). When several are due the stop wins (the conservative reading).
        """
        now = _require_utc(now, "now")
        signals: list[ExitSignal] = []
        for position in positions:
            price = prices.get(position.symbol)
            if price is None or not position.is_open:
                continue
            signal = self._due_exit(
                position, price, (lows or {}).get(position.symbol), (highs or {}).get(position.symbol), now
            )
            if signal is not None:
                log.info(
                    "risk.exit_due",
                    symbol=position.symbol,
                    reason=str(signal.reason),
                    trigger_price=str(signal.trigger_price),
                    price=str(price),
                )
                signals.append(signal)
        return signals

    def _due_exit(
        self, position: PositionRecord, price: Decimal, low: Decimal | None, high: Decimal | None, now: datetime
    ) -> ExitSignal | None:
        trailing = None
        if position.trailing_stop_pct:
            trailing = trailing_for(max(position.highest_price, price), float(position.trailing_stop_pct))
        held_hours = (now - position.entry_at.astimezone(UTC)).total_seconds() / 3600
        reason = exit_reason_for(
            price,
            low=low,
            high=high,
            stop=position.stop_price,
            target=position.take_profit_price,
            trailing=trailing,
            held_hours=held_hours,
            max_hold_hours=self.policy.max_hold_hours,
        )
        if reason is None:
            return None
        trigger = {
            ExitReason.STOP_LOSS: position.stop_price,
            ExitReason.TRAILING_STOP: trailing,
            ExitReason.TAKE_PROFIT: position.take_profit_price,
        }.get(reason)
        return ExitSignal(position.symbol, reason, quantize_money(trigger or price), price, position.id)
