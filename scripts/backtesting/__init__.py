"""Backtest data tools: collect Upbit candles, manage the cache, check quality."""
