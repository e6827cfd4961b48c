"""Small column helpers shared by the models."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Enum


def enum_column_type(enum_cls: type[StrEnum], name: str) -> Enum:
    """A VARCHAR with a CHECK constraint on PostgreSQL and SQLite alike (no native enum types to migrate)."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=20,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )
