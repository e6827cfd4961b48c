"""Candle timeframes: one enum, its length in seconds and minutes, and parsing."""

from __future__ import annotations

from enum import StrEnum

_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


class Timeframe(StrEnum):
    """A candle length named as the backtester's CSV files and the settings name it (``"1h"``)."""

    M1 = "1m"
    M3 = "3m"
    M5 = "5m"
    M10 = "10m"
    M15 = "15m"
    M30 = "30m"
    H1 = "1h"
    H4 = "4h"
    D1 = "1d"
    W1 = "1w"

    @property
    def seconds(self) -> int:
        return int(self.value[:-1]) * _SECONDS[self.value[-1]]

    @property
    def minutes(self) -> int:
        return self.seconds // 60

    @classmethod
    def names(cls) -> str:
        """``1m, 3m, ...`` for error messages."""
        return ", ".join(tf.value for tf in cls)

    @classmethod
    def is_known(cls, value: str) -> bool:
        return value in cls._value2member_map_

    @classmethod
    def parse(cls, value: str) -> Timeframe:
        """``"1h"`` -> ``Timeframe.H1``; ``ValueError`` naming the known timeframes otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown timeframe {value!r}; expected one of {cls.names()}") from None

    @classmethod
    def from_minutes(cls, minutes: int) -> Timeframe:
        """The timeframe of ``minutes`` (``60`` -> ``1h``); ``ValueError`` when there is none."""
        for tf in cls:
            if tf.minutes == minutes:
                return tf
        raise ValueError(f"no timeframe of {minutes} minutes; expected one of {cls.names()}")

    @classmethod
    def from_seconds(cls, seconds: float) -> Timeframe | None:
        """The timeframe exactly ``seconds`` long, or ``None``."""
        return next((tf for tf in cls if tf.seconds == seconds), None)
