"""Held positions: built from fills, with exit levels and realised P&L."""

from src.position.service import FillOutcome, PositionService

__all__ = ["FillOutcome", "PositionService"]
