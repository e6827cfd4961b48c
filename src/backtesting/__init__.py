"""Backtesting: candle data, strategies, the engine, metrics and the quick filter (see docs/BACKTESTING.md)."""
