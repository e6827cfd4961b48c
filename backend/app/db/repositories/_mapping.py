"""Copying between ORM rows and the domain's plain records."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

R = TypeVar("R")


def row_to_record(row: Any, record_cls: type[R], **extra: Any) -> R:
    names = {f.name for f in fields(record_cls)}  # type: ignore[arg-type]
    values = {name: getattr(row, name) for name in names if hasattr(row, name) and name not in extra}
    return record_cls(**values, **extra)


def record_values(record: Any, exclude: set[str] | None = None) -> dict[str, Any]:
    skip = exclude or set()
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name not in skip}
