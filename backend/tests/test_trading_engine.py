"""The trading engine on the database (SQLite and PostgreSQL): the SQL paper account, the database AI
cache, and a paper-mode cycle whose market data comes from the fake Upbit through the real client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.db.queries import orders as order_queries
from backend.app.db.queries import trades as trade_queries
from backend.app.db.queries.paging import Paging
from backend.app.db.repositories.ai_cache import DatabaseDecisionCache
from backend.app.db.repositories.paper import SqlPaperAccountStore
from backend.app.db.repositories.trading import SqlTradingRepository
from backend.app.models import (
    AIDecisionRow,
    OrderRow,
    PaperBalanceRow,
    PortfolioSnapshotRow,
    PositionRow,
    RiskStateRow,
    TradeRow,
    TradingCycleRow,
)
from backend.app.schemas.trades import TRADE_FIELDS
from backend.app.services.reporting import build_daily_report
from backend.app.services.trading_engine import TradingEngine
from src.ai.models import AIDecision
from src.api.interfaces import Balance, ExchangeOrderState, Order
from src.config.settings import Settings
from src.domain.decisions import Decision, DecisionSource
from src.domain.events import EventKind, NullNotifier
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, OrderType, Side
from src.trading.repository import AIDecisionRecord, OrderRecord, PortfolioSnapshotRecord, TradeRecord
from tests.fakes.fear_greed_server import FakeFearGreed
from tests.fakes.upbit_server import FakeUpbit
from tests.support.exchange_faults import AnswerFaults
from tests.support.rows import count_rows
from tests.support.strategies import AlwaysBuy

SettingsFactory = Callable[..., Settings]


# --- SQL paper account --------------------------------------------------------------------------------
async def test_paper_account_keeps_balances_and_orders(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    store = SqlPaperAccountStore(db_sessions, "paper")
    other = SqlPaperAccountStore(db_sessions, "replay")
    await store.save_balances({"KRW": Balance("KRW", Decimal("1000")), "BTC": Balance("BTC", Decimal("0.5"))})
    await store.save_balances({"KRW": Balance("KRW", Decimal("900"), Decimal("100"), Decimal("0"))})
    order = Order(
        uuid="u-1",
        identifier="id-1",
        symbol="KRW-BTC",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        state=ExchangeOrderState.WAIT,
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        price=Decimal("100"),
        volume=Decimal("1"),
        remaining_volume=Decimal("1"),
    )
    await store.save_order(order)

    assert await store.load_balances() == {"KRW": Balance("KRW", Decimal("900"), Decimal("100"), Decimal("0"))}
    assert await other.load_balances() == {}
    assert (await store.get_order(identifier="id-1")) == order
    assert [o.uuid for o in await store.list_open_orders("KRW-BTC")] == ["u-1"]
    await store.save_order(replace(order, state=ExchangeOrderState.CANCEL))
    assert await store.list_open_orders() == []
    assert (await store.get_order(uuid="u-1")).state is ExchangeOrderState.CANCEL
    assert await other.get_order(uuid="u-1") is None


# --- AI cache over ai_decisions -------------------------------------------------------------------------
async def test_database_cache_answers_from_the_stored_decision(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    repo = SqlTradingRepository(db_sessions)
    cache = DatabaseDecisionCache(repo)
    await repo.save_ai_decision(
        AIDecisionRecord(
            symbol="KRW-BTC",
            decision="buy",
            final_decision="hold",
            source="ai",
            confidence=Decimal("77.50"),
            reason="breakout",
            prompt_hash="a" * 64,
            model="m",
            prompt_tokens=10,
        )
    )

    hit = await cache.get("a" * 64)

    assert hit is not None
    assert hit.decision is Decision.BUY
    assert hit.confidence == Decimal("77.50")
    assert hit.source is DecisionSource.AI
    assert await cache.get("b" * 64) is None
    fresh = AIDecision(Decision.SELL, Decimal("60"), "r", DecisionSource.AI, "m", "c" * 64)
    await cache.put(fresh)
    assert (await cache.get("c" * 64)) == fresh
    assert await count_rows(db_sessions, AIDecisionRow) == 1  # put writes no second row


async def test_repository_keeps_simulated_order_times_and_realised_pnl(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    repo = SqlTradingRepository(db_sessions)
    at = datetime(2023, 12, 1, 9, tzinfo=UTC)
    await repo.create_order(
        OrderRecord(
            "o1",
            "o1",
            "KRW-BTC",
            Side.SELL,
            OrderType.MARKET_SELL,
            TradingMode.REPLAY,
            amount=Decimal("1"),
            created_at=at,
        )
    )
    trade = TradeRecord(
        "t1",
        "KRW-BTC",
        Side.SELL,
        Decimal("10"),
        Decimal("1"),
        Decimal("10"),
        Decimal("0"),
        TradingMode.REPLAY,
        created_at=at,
    )
    await repo.settle_order("o1", {"status": OrderStatus.FILLED}, [trade])
    await repo.record_realized_pnl({"t1": Decimal("1.5")})

    assert (await repo.get_order("o1")).created_at == at
    [stored] = await repo.list_trades(mode=TradingMode.REPLAY)
    assert stored.realized_pnl == Decimal("1.5")


# --- a paper cycle through the engine --------------------------------------------------------------------
async def test_paper_cycle_buys_on_the_fake_upbit_book_and_writes_every_record(
    db_engine: AsyncEngine,
    db_sessions: async_sessionmaker[AsyncSession],
    make_settings: SettingsFactory,
    fake_upbit: FakeUpbit,
    fake_fear_greed: FakeFearGreed,
) -> None:
    """Given paper mode on Upbit's (fake) public data and a strategy that buys, when the trading job runs,
    then the paper exchange fills against the book, and orders, trades, the decision, the cycle, the
    position, the snapshot and the paper balances are all in the database."""
    fake_upbit.seed_demo()
    settings = make_settings(
        UPBIT_BASE_URL=fake_upbit.base_url,
        FEAR_GREED_URL=fake_fear_greed.url,
        MIN_TRADE_INTERVAL_HOURS="0",
        TRADING_SYMBOLS="KRW-BTC",
    )
    notifier = NullNotifier()
    engine = await TradingEngine.create(
        settings, db_engine, mode=TradingMode.PAPER, notifier=notifier, strategy=AlwaysBuy(), quick_filter=None
    )
    try:
        await engine.start_up()
        [report] = await engine.trading_job()
        second_snapshot = await engine.snapshot_job()
        daily = await engine.daily_report_job()
    finally:
        await engine.aclose()

    assert report.error is None
    assert [o.status for o in report.orders] == [OrderStatus.FILLED]
    assert fake_upbit.requests_to("/v1/orders", "POST") == []  # paper: nothing reaches the exchange
    assert await count_rows(db_sessions, OrderRow) == 1
    assert await count_rows(db_sessions, TradeRow) >= 1
    assert await count_rows(db_sessions, TradingCycleRow) == 1
    assert await count_rows(db_sessions, PositionRow) == 1
    async with db_sessions() as session:
        decision = await session.scalar(select(AIDecisionRow))
        balances = {row.currency: row.balance for row in await session.scalars(select(PaperBalanceRow))}
        snapshot_row = await session.scalar(select(PortfolioSnapshotRow))
    assert decision.source == "rules"
    assert decision.market_data["fear_greed"]["value"] == 47
    assert decision.market_data["orderbook"]["best_ask"] > 0
    assert balances["KRW"] < settings.trading.paper_starting_krw
    assert balances["BTC"] > 0
    assert second_snapshot is None  # the cycle ended with a snapshot a moment ago
    assert await count_rows(db_sessions, PortfolioSnapshotRow) == 1
    assert snapshot_row.positions["KRW-BTC"]["amount"] == str(balances["BTC"])
    assert daily.trades >= 1
    assert daily.buys >= 1
    assert any(e.kind is EventKind.DAILY_REPORT for e in notifier.events)
    assert any(e.kind is EventKind.TRADE_EXECUTED for e in notifier.events)
    metrics = engine.metrics.registry
    assert metrics.get_sample_value("trades_total", {"side": "buy", "symbol": "KRW-BTC"}) >= 1
    assert metrics.get_sample_value("trade_fee_krw_total", {"symbol": "KRW-BTC"}) > 0
    assert metrics.get_sample_value("ai_decisions_total", {"decision": "buy", "source": "rules"}) == 1
    assert metrics.get_sample_value("trading_cycle_stage_duration_seconds_count", {"stage": "execution"}) == 1
    assert metrics.get_sample_value("portfolio_value_krw") > 0


async def test_a_vetoed_buy_is_stored_announced_and_counted_as_a_hold(
    db_engine: AsyncEngine,
    db_sessions: async_sessionmaker[AsyncSession],
    make_settings: SettingsFactory,
    fake_upbit: FakeUpbit,
    fake_fear_greed: FakeFearGreed,
) -> None:
    """Given safe mode and a strategy that buys, when the trading job runs, then no order is written, the
    decision row keeps the proposed buy with final decision hold and the risk reasons, no "BUY decided" alert
    goes out (the override event does), and the scheduler's metrics count a hold and one risk veto."""
    fake_upbit.seed_demo()
    settings = make_settings(
        UPBIT_BASE_URL=fake_upbit.base_url, FEAR_GREED_URL=fake_fear_greed.url, TRADING_SYMBOLS="KRW-BTC"
    )
    notifier = NullNotifier()
    engine = await TradingEngine.create(
        settings, db_engine, mode=TradingMode.PAPER, notifier=notifier, strategy=AlwaysBuy(), quick_filter=None
    )
    try:
        await engine.start_up()
        await engine.pipeline.risk.enter_safe_mode("test", "operator check")
        [report] = await engine.trading_job()
    finally:
        await engine.aclose()

    assert (report.decision, report.final_decision, report.outcome) == ("buy", "hold", "buy_vetoed")
    assert await count_rows(db_sessions, OrderRow) == 0
    async with db_sessions() as session:
        decision = await session.scalar(select(AIDecisionRow))
    assert (decision.decision, decision.final_decision, decision.overridden) == ("buy", "hold", True)
    vetoed_by = "risk: safe_mode: set by test: operator check"
    assert any(reason.startswith(vetoed_by) for reason in decision.override_reasons)
    assert not any(e.kind is EventKind.AI_DECISION for e in notifier.events)
    [override] = [e for e in notifier.events if e.kind is EventKind.VALIDATOR_OVERRIDE]
    assert override.fields["final_decision"] == "hold"
    metrics = engine.metrics.registry
    assert metrics.get_sample_value("ai_decisions_total", {"decision": "hold", "source": "rules"}) == 1
    assert metrics.get_sample_value("ai_decisions_total", {"decision": "buy", "source": "rules"}) is None
    assert metrics.get_sample_value("ai_decision_overrides_total", {"proposed": "buy", "by": "risk"}) == 1


async def test_a_buy_whose_answer_was_lost_keeps_the_next_buy_out(
    db_engine: AsyncEngine,
    db_sessions: async_sessionmaker[AsyncSession],
    make_settings: SettingsFactory,
    fake_upbit: FakeUpbit,
    fake_fear_greed: FakeFearGreed,
) -> None:
    """Given 4-hour spacing, two symbols and a network that loses the answer of every order and fails every
    order query, when the trading job buys the first symbol (pending: it filled, nobody knows), then the
    second symbol's buy in the same job is vetoed by the spacing rule: one order, not two."""
    fake_upbit.seed_demo()
    settings = make_settings(
        UPBIT_BASE_URL=fake_upbit.base_url,
        FEAR_GREED_URL=fake_fear_greed.url,
        MIN_TRADE_INTERVAL_HOURS="4",
        TRADING_SYMBOLS="KRW-BTC,KRW-ETH",
    )
    engine = await TradingEngine.create(
        settings, db_engine, mode=TradingMode.PAPER, strategy=AlwaysBuy(), quick_filter=None
    )
    faults = AnswerFaults(engine.pipeline.trading.exchange)
    engine.pipeline.trading.exchange = faults
    faults.lose_answers = faults.queries_down = True
    try:
        await engine.start_up()
        btc, eth = await engine.trading_job()
    finally:
        await engine.aclose()

    assert [o.status for o in btc.orders] == [OrderStatus.PENDING]
    assert (eth.decision, eth.final_decision, eth.outcome) == ("buy", "hold", "buy_vetoed")
    async with db_sessions() as session:
        orders = list(await session.scalars(select(OrderRow)))
        vetoed = await session.scalar(select(AIDecisionRow).where(AIDecisionRow.symbol == "KRW-ETH"))
    assert [(o.symbol, o.status) for o in orders] == [("KRW-BTC", OrderStatus.PENDING)]
    assert any(
        r.startswith("risk: min_trade_interval: last trade (or unsettled order)") for r in vetoed.override_reasons
    )


async def test_paper_account_survives_a_new_engine(
    db_engine: AsyncEngine, make_settings: SettingsFactory, fake_upbit: FakeUpbit
) -> None:
    """Given a paper buy, when the process restarts (a new engine on the same database), the exchange
    still reports the same balances: the paper account lives in the database."""
    fake_upbit.seed_demo()
    settings = make_settings(UPBIT_BASE_URL=fake_upbit.base_url, FEAR_GREED_URL=fake_upbit.base_url + "/nothing")
    first = await TradingEngine.create(
        settings, db_engine, mode=TradingMode.PAPER, strategy=AlwaysBuy(), quick_filter=None
    )
    try:
        await first.trading_job()
        before = await first.pipeline.exchange.get_balances()
    finally:
        await first.aclose()
    second = await TradingEngine.create(settings, db_engine, mode=TradingMode.PAPER)
    try:
        after = await second.pipeline.exchange.get_balances()
    finally:
        await second.aclose()

    assert sorted(after, key=lambda b: b.currency) == sorted(before, key=lambda b: b.currency)
    assert any(b.currency == "BTC" and b.balance > 0 for b in after)


async def test_daily_report_counts_the_last_day_only(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    repo = SqlTradingRepository(db_sessions)
    now = datetime(2024, 1, 2, 0, tzinfo=UTC)
    for trade_id, at, pnl in (("old", now - timedelta(days=2), "5"), ("new", now - timedelta(hours=1), "7")):
        await repo.create_order(
            OrderRecord(
                trade_id,
                trade_id,
                "KRW-BTC",
                Side.SELL,
                OrderType.MARKET_SELL,
                TradingMode.PAPER,
                amount=Decimal("1"),
                created_at=at,
            )
        )
        await repo.settle_order(
            trade_id,
            {"status": OrderStatus.FILLED},
            [
                TradeRecord(
                    trade_id,
                    "KRW-BTC",
                    Side.SELL,
                    Decimal("10"),
                    Decimal("1"),
                    Decimal("10"),
                    Decimal("1"),
                    TradingMode.PAPER,
                    realized_pnl=Decimal(pnl),
                    created_at=at,
                )
            ],
        )

    report = await build_daily_report(db_sessions, TradingMode.PAPER, now)

    assert report.trades == 1
    assert report.sells == 1
    assert report.realized_pnl_krw == Decimal("7")
    assert report.fees_krw == Decimal("1")
    assert report.to_event().kind is EventKind.DAILY_REPORT


async def test_daily_report_drawdown_is_measured_from_the_risk_peak(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Given a peak equity of 10,500,000 seen by the risk manager and a latest snapshot of 9,975,000
    now = datetime(2024, 1, 2, 0, tzinfo=UTC)
    async with db_sessions.begin() as session:
        session.add(RiskStateRow(mode=TradingMode.PAPER, peak_equity=Decimal("10500000")))
    await SqlTradingRepository(db_sessions).save_snapshot(
        PortfolioSnapshotRecord(
            total_value_krw=Decimal("9975000"),
            positions={},
            mode=TradingMode.PAPER,
            created_at=now - timedelta(hours=1),
        )
    )
    # When the daily report is built
    report = await build_daily_report(db_sessions, TradingMode.PAPER, now)
    # Then the drawdown is 5% and travels with the notification
    assert report.drawdown_pct == Decimal("5.00")
    assert report.to_event().fields["drawdown_pct"] == Decimal("5.00")


async def test_a_stop_loss_exit_names_its_reason_on_the_sell_order_and_its_trades(
    db_engine: AsyncEngine,
    db_sessions: async_sessionmaker[AsyncSession],
    make_settings: SettingsFactory,
    fake_upbit: FakeUpbit,
    fake_fear_greed: FakeFearGreed,
) -> None:
    """Given a paper position bought by the trading job, when the price is below its stop and the position job
    runs, then the sell order, its trades and the closed position all say ``stop_loss``, and the API's read side
    (the trades page's fast path and the orders list) serves it; the buy has none."""
    fake_upbit.seed_demo()
    settings = make_settings(
        UPBIT_BASE_URL=fake_upbit.base_url,
        FEAR_GREED_URL=fake_fear_greed.url,
        MIN_TRADE_INTERVAL_HOURS="0",
        TRADING_SYMBOLS="KRW-BTC",
    )
    engine = await TradingEngine.create(
        settings, db_engine, mode=TradingMode.PAPER, notifier=NullNotifier(), strategy=AlwaysBuy(), quick_filter=None
    )
    try:
        await engine.start_up()
        [bought] = await engine.trading_job()
        async with db_sessions.begin() as session:  # the market is now below the stop
            position = await session.scalar(select(PositionRow))
            position.stop_price = position.avg_entry_price * 10
        [exit_report] = await engine.position_job()
    finally:
        await engine.aclose()

    assert bought.error is None
    assert exit_report.error is None
    assert exit_report.result is not None
    assert exit_report.result.status is OrderStatus.FILLED
    async with db_sessions() as session:
        orders = {row.side: row for row in await session.scalars(select(OrderRow))}
        trades = list(await session.scalars(select(TradeRow).where(TradeRow.order_id == orders[Side.SELL].id)))
        closed = await session.scalar(select(PositionRow))
    assert orders[Side.SELL].exit_reason is ExitReason.STOP_LOSS
    assert orders[Side.BUY].exit_reason is None
    assert trades
    assert all(trade.exit_reason is ExitReason.STOP_LOSS for trade in trades)
    assert closed.exit_reason is ExitReason.STOP_LOSS
    async with db_engine.connect() as connection:
        page = await trade_queries.trade_page(
            connection, trade_queries.TradeFilter(side=Side.SELL), Paging(limit=10), TRADE_FIELDS
        )
        listed = await order_queries.list_orders(connection, Paging(limit=10))
    served = [dict(zip(TRADE_FIELDS, row, strict=True)) for row in page.rows]
    assert served
    assert {item["exit_reason"] for item in served} == {"stop_loss"}
    assert {row.side: row.exit_reason for row in listed.rows} == {"sell": "stop_loss", "buy": None}
