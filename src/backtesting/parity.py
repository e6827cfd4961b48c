"""The parity report: the backtest's round trips against the ones the bot (replay) made, trade by trade.

Both worlds act on the same moments (``T = open time of a bar + its length``, when the bar is complete) with the
same strategy, exit rule and fill model (docs/PARITY.md). So the lists should be equal: the same number of
round trips, each with the same entry and exit moment and exit reason, and fill prices that differ by no more
than the slippage setting. This module is the comparison only, pure and without I/O: the backtest's trade
records and the replay's positions come in as ``RoundTrip`` lists (``backend/app/core/parity.py`` runs both and
reads the database), a ``ParityReport`` comes out.

Round trips are paired by their entry moment. A round trip only one side has is a difference (``only_backtest``,
``only_replay``); a pair differs by its exit moment, exit reason or a fill price beyond the slippage. A position
still open after the last bar has exit reason ``end`` on both sides; its exit is then not compared (the backtest
marks it at the last close, the bot has not sold).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from src.domain.exits import ExitReason
from src.exceptions import DataError

# Relative price difference always tolerated: float (backtest) against Decimal (database) rounding.
PRICE_EPSILON = 1e-9


class DifferenceKind(StrEnum):
    ONLY_BACKTEST = "only_backtest"
    ONLY_REPLAY = "only_replay"
    EXIT_MOMENT = "exit_moment"
    EXIT_REASON = "exit_reason"
    ENTRY_PRICE = "entry_price"
    EXIT_PRICE = "exit_price"


def utc_moment(value: datetime | str) -> datetime:
    """An aware UTC datetime from an ISO string or a datetime (naive ones are taken as UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise DataError(f"not an ISO moment: {value!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One buy and the sell that closed it: fill moments, fill prices and why it was sold. ``exit_at`` and
    ``exit_price`` are None for a position the bot still holds (reason ``end``)."""

    entry_at: datetime
    entry_price: float
    exit_at: datetime | None
    exit_price: float | None
    exit_reason: str

    @property
    def still_open(self) -> bool:
        return self.exit_reason == ExitReason.END

    @classmethod
    def from_backtest(cls, record: Mapping[str, Any]) -> RoundTrip:
        """A backtest trade record (``BacktestResult.trade_records()``, ``backtest.py --json`` ``trades``)."""
        try:
            return cls(
                entry_at=utc_moment(record["entry_time"]),
                entry_price=float(record["entry_price"]),
                exit_at=utc_moment(record["exit_time"]) if record.get("exit_time") else None,
                exit_price=float(record["exit_price"]) if record.get("exit_price") is not None else None,
                exit_reason=str(record["exit_reason"]),
            )
        except KeyError as exc:
            raise DataError(f"a backtest trade record lacks {exc.args[0]!r}: {dict(record)}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry_at": self.entry_at.isoformat(),
            "entry_price": self.entry_price,
            "exit_at": self.exit_at.isoformat() if self.exit_at is not None else None,
            "exit_price": self.exit_price,
            "exit_reason": self.exit_reason,
        }


@dataclass(frozen=True, slots=True)
class Difference:
    kind: DifferenceKind
    entry_at: datetime
    backtest: RoundTrip | None
    replay: RoundTrip | None
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "entry_at": self.entry_at.isoformat(),
            "why": self.why,
            "backtest": self.backtest.to_dict() if self.backtest is not None else None,
            "replay": self.replay.to_dict() if self.replay is not None else None,
        }


@dataclass(slots=True)
class ParityReport:
    backtest: list[RoundTrip]
    replay: list[RoundTrip]
    slippage_pct: float
    differences: list[Difference] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)  # strategy, symbol, window: for the printout and JSON

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def matched(self) -> int:
        """Round trips paired by entry moment with no difference."""
        differing = {d.entry_at for d in self.differences}
        replay_entries = {trip.entry_at for trip in self.replay}
        return sum(1 for trip in self.backtest if trip.entry_at in replay_entries and trip.entry_at not in differing)

    def summary(self) -> str:
        if self.identical:
            return f"identical: {len(self.backtest)} round trips in both, prices within {self.slippage_pct:g} %"
        return (
            f"DIFFERENT: backtest {len(self.backtest)} round trips, replay {len(self.replay)}; "
            f"{self.matched} identical, {len(self.differences)} difference(s)"
        )

    def lines(self, limit: int = 200) -> list[str]:
        """The report as text lines: one per difference (at most ``limit``), first divergence first."""
        out = [self.summary()]
        for number, difference in enumerate(self.differences[:limit], start=1):
            out.append(f"{number:>3}. bought {difference.entry_at:%Y-%m-%d %H:%M}: {difference.why}")
        if len(self.differences) > limit:
            out.append(f"... and {len(self.differences) - limit} more (--json FILE lists them all)")
        if self.differences:
            first = self.differences[0]
            out.append(
                f"The lists part at {first.entry_at:%Y-%m-%d %H:%M}; later differences may follow from that one "
                "(a position held longer blocks the next entry, spacing and daily caps count every trade)."
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.context,
            "identical": self.identical,
            "slippage_pct": self.slippage_pct,
            "summary": self.summary(),
            "counts": {"backtest": len(self.backtest), "replay": len(self.replay), "matched": self.matched},
            "differences": [d.to_dict() for d in self.differences],
            "backtest": [trip.to_dict() for trip in self.backtest],
            "replay": [trip.to_dict() for trip in self.replay],
        }


def _moment(value: datetime | None) -> str:
    return "still open" if value is None else f"{value:%Y-%m-%d %H:%M}"


def price_gap_pct(backtest: float, replay: float) -> float:
    """How far the backtest's fill is from the replay's, in percent of the replay's."""
    if replay == 0:
        return math.inf if backtest != 0 else 0.0
    return abs(backtest - replay) / abs(replay) * 100


def _within(backtest: float, replay: float, slippage_pct: float) -> bool:
    return price_gap_pct(backtest, replay) <= slippage_pct + PRICE_EPSILON * 100


def _nearest_cycle(cycles: Mapping[datetime, str], at: datetime) -> str | None:
    if at in cycles:
        return cycles[at]
    later = [moment for moment in cycles if moment >= at]
    return cycles[min(later)] if later and (min(later) - at).total_seconds() < 3600 else None


def _pair_differences(bt: RoundTrip, rp: RoundTrip, slippage_pct: float) -> list[Difference]:
    found: list[Difference] = []

    def add(kind: DifferenceKind, why: str) -> None:
        found.append(Difference(kind, bt.entry_at, bt, rp, why))

    if bt.exit_reason != rp.exit_reason:
        add(
            DifferenceKind.EXIT_REASON,
            f"exit reason: backtest {bt.exit_reason} at {_moment(bt.exit_at)}, "
            f"replay {rp.exit_reason} at {_moment(rp.exit_at)}",
        )
    both_closed = not bt.still_open and not rp.still_open
    if both_closed and bt.exit_at != rp.exit_at:
        add(
            DifferenceKind.EXIT_MOMENT,
            f"exit moment: backtest {_moment(bt.exit_at)} ({bt.exit_reason}), "
            f"replay {_moment(rp.exit_at)} ({rp.exit_reason})",
        )
    if not _within(bt.entry_price, rp.entry_price, slippage_pct):
        add(
            DifferenceKind.ENTRY_PRICE,
            f"entry price: backtest {bt.entry_price:,.8g}, replay {rp.entry_price:,.8g} "
            f"({price_gap_pct(bt.entry_price, rp.entry_price):.4f} % apart, more than the {slippage_pct:g} % slippage)",
        )
    closes = (bt.exit_price, rp.exit_price) if both_closed else (None, None)
    if closes[0] is not None and closes[1] is not None and not _within(closes[0], closes[1], slippage_pct):
        add(
            DifferenceKind.EXIT_PRICE,
            f"exit price: backtest {closes[0]:,.8g}, replay {closes[1]:,.8g} "
            f"({price_gap_pct(closes[0], closes[1]):.4f} % apart, more than the {slippage_pct:g} % slippage)",
        )
    return found


def compare_round_trips(
    backtest: Iterable[RoundTrip],
    replay: Iterable[RoundTrip],
    slippage_pct: float,
    *,
    replay_cycles: Mapping[datetime, str] | None = None,
    entry_signals: Collection[datetime] | None = None,
    window: tuple[datetime, datetime] | None = None,
    context: Mapping[str, Any] | None = None,
) -> ParityReport:
    """Pair the round trips by entry moment and list every difference, earliest entry first.

    Two optional inputs explain a round trip only one side made: ``replay_cycles`` (the replay's trading cycle
    outcome by start moment) says what the bot concluded at that moment; ``entry_signals`` (the moments at which
    the strategy, computed over the whole history, signals an entry) says whether the strategy wanted to buy
    then at all (if not, the side that bought saw other or too few candles). With ``window`` (``--start``,
    ``--end``), a trade on a bar that does not open in it is named as such: the bars of ``[start, end)`` close, and
    are acted on, at the moments ``(start, end]``.
    """
    if not math.isfinite(slippage_pct) or slippage_pct < 0:
        raise DataError(f"slippage must be a finite percent >= 0, got {slippage_pct}")
    bt_trips = sorted(backtest, key=lambda trip: trip.entry_at)
    rp_trips = sorted(replay, key=lambda trip: trip.entry_at)
    cycles = dict(replay_cycles or {})
    by_entry = {trip.entry_at: trip for trip in rp_trips}
    if len(by_entry) != len(rp_trips):
        raise DataError("the replay holds two round trips with the same entry moment for one symbol")
    differences: list[Difference] = []
    paired: set[datetime] = set()
    for bt in bt_trips:
        rp = by_entry.get(bt.entry_at)
        if rp is None:
            why = f"only in the backtest (sold {_moment(bt.exit_at)}, {bt.exit_reason})"
            why += _window_note(window, bt.entry_at) + _signal_note(entry_signals, bt.entry_at)
            held = [trip for trip in rp_trips if _holds(trip, bt.entry_at)]
            if held:
                why += f"; the bot still held the position bought at {_moment(held[0].entry_at)}"
            elif (outcome := _nearest_cycle(cycles, bt.entry_at)) is not None:
                why += f"; the bot's trading cycle then: {outcome}"
            differences.append(Difference(DifferenceKind.ONLY_BACKTEST, bt.entry_at, bt, None, why))
            continue
        paired.add(bt.entry_at)
        differences.extend(_pair_differences(bt, rp, slippage_pct))
    for rp in rp_trips:
        if rp.entry_at in paired:
            continue
        why = f"only in the replay (sold {_moment(rp.exit_at)}, {rp.exit_reason})"
        why += _window_note(window, rp.entry_at) + _signal_note(entry_signals, rp.entry_at)
        held = [trip for trip in bt_trips if _holds(trip, rp.entry_at)]
        if held:
            why += f"; the backtest still held the position bought at {_moment(held[0].entry_at)}"
        differences.append(Difference(DifferenceKind.ONLY_REPLAY, rp.entry_at, None, rp, why))
    differences.sort(key=lambda d: (d.entry_at, list(DifferenceKind).index(d.kind)))
    return ParityReport(bt_trips, rp_trips, float(slippage_pct), differences, dict(context or {}))


def _window_note(window: tuple[datetime, datetime] | None, at: datetime) -> str:
    if window is None or window[0] < at <= window[1]:
        return ""
    first, last = _moment(window[0]), _moment(window[1])
    return f"; it acted on a bar outside the window (the window's bars close in ({first}, {last}])"


def _signal_note(entry_signals: Collection[datetime] | None, at: datetime) -> str:
    if entry_signals is None:
        return ""
    if at in entry_signals:
        return "; the strategy signals an entry for that bar"
    return (
        "; the strategy signals no entry for that bar (over the whole history: the side that bought saw other candles)"
    )


def _holds(trip: RoundTrip, at: datetime) -> bool:
    """Whether ``trip`` was held at ``at`` (bought before, not yet sold)."""
    return trip.entry_at < at and (trip.exit_at is None or trip.exit_at > at)
