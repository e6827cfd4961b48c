"""Strategy parameters as written in settings and requests: a JSON object, checked for shape only (the
strategy's declared parameter space checks names and values)."""

from __future__ import annotations

import json
from typing import Any

from src.exceptions import ConfigurationError


def parse_params_json(text: str, source: str = "STRATEGY_PARAMS") -> dict[str, Any]:
    """A JSON object of parameter values (an empty string is ``{}``); anything else is one clear error."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{source} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f'{source} must be a JSON object such as {{"k": 0.6}}, got {text.strip()[:60]!r}')
    return value
