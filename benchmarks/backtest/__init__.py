"""Backtest engine benchmark (ours against backtesting.py); see benchmarks/README.md."""
