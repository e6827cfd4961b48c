"""The money convention: one place owns zero, the quanta and how KRW amounts and volumes are rounded.

Names used across ``src/``:

- ``krw``: an amount of Korean won (an order total, cash, equity, a fee, a P&L), always ``Decimal``.
- ``price``: KRW per unit of the base coin; prices sit on the exchange's tick grid
  (``src.domain.market_rules``).
- ``krw_total``: the KRW a market buy spends (``OrderRequest.krw_total``), never a ``price``;
  only Upbit's wire calls it ``price`` (the order body, and ``Order.price`` of a market buy).
- ``volume`` / ``amount``: a quantity of the base coin (``BTC`` of ``KRW-BTC``); at most 8 decimals.
- ``ZERO``: ``Decimal("0")``, the start of every sum of money or volume.

Quanta: ``MONEY_QUANTUM`` (8 decimals) is the precision the database keeps (NUMERIC(20, 8)); an
order total in KRW is a whole won (``KRW_QUANTUM``), cut down, never rounded up; volumes are cut
to ``VOLUME_QUANTUM`` (``truncate_volume`` in ``src.domain.market_rules``).
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

ZERO = Decimal("0")
MONEY_QUANTUM = Decimal("0.00000001")
VOLUME_QUANTUM = Decimal("0.00000001")
KRW_QUANTUM = Decimal("1")
REPORT_KRW_QUANTUM = Decimal("0.01")


def quantize_money(value: Decimal) -> Decimal:
    """The precision the database keeps (NUMERIC(20, 8)), so memory and SQL stores agree to the digit."""
    return value.quantize(MONEY_QUANTUM)


def report_krw(value: Decimal) -> Decimal:
    """KRW as portfolio snapshots and summaries show it: two decimals."""
    return value.quantize(REPORT_KRW_QUANTUM)


def whole_krw(value: Decimal) -> Decimal:
    """A KRW order total: whole won, cut down (never spend more than was allowed)."""
    return value.quantize(KRW_QUANTUM, rounding=ROUND_DOWN)


def format_krw(value: Decimal | None) -> str:
    """``1,234`` for messages; ``-`` when there is no amount."""
    return "-" if value is None else f"{value:,.0f}"
