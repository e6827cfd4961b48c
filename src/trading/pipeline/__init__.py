"""The trading pipeline: Risk -> Data -> Analysis -> Execution per symbol (see docs/TRADING_PIPELINE.md)."""

from src.trading.pipeline.analysis import Analysis, Analyzer
from src.trading.pipeline.context import CycleContext
from src.trading.pipeline.exits import ExitReport
from src.trading.pipeline.observer import NullPipelineObserver, PipelineObserver
from src.trading.pipeline.pipeline import CycleReport, TradingPipeline
from src.trading.pipeline.positions import ServicePositionBook

__all__ = [
    "Analysis",
    "Analyzer",
    "CycleContext",
    "CycleReport",
    "ExitReport",
    "NullPipelineObserver",
    "PipelineObserver",
    "ServicePositionBook",
    "TradingPipeline",
]
