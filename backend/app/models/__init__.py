"""Every table of the system; importing this module registers them all on ``Base.metadata``."""

from backend.app.models.ai_decision import AIDecisionRow
from backend.app.models.backtest_run import BacktestRunRow
from backend.app.models.bot_config import BotConfigRow, BotStateRow, SchedulerLockRow
from backend.app.models.event import EventRow
from backend.app.models.order import OrderRow
from backend.app.models.paper_account import PaperBalanceRow, PaperOrderRow
from backend.app.models.portfolio import PortfolioSnapshotRow, PositionRow, RiskStateRow
from backend.app.models.position_fill import PositionFillRow
from backend.app.models.research_run import ResearchRunRow
from backend.app.models.system_log import SystemLogRow
from backend.app.models.trade import TradeRow
from backend.app.models.trading_cycle import TradingCycleRow

__all__ = [
    "AIDecisionRow",
    "BacktestRunRow",
    "BotConfigRow",
    "BotStateRow",
    "EventRow",
    "OrderRow",
    "PaperBalanceRow",
    "PaperOrderRow",
    "PortfolioSnapshotRow",
    "PositionFillRow",
    "PositionRow",
    "ResearchRunRow",
    "RiskStateRow",
    "SchedulerLockRow",
    "SystemLogRow",
    "TradeRow",
    "TradingCycleRow",
]
