"""Client of the alternative.me Crypto Fear & Greed index (``GET /fng/``, no key).

The service answers values and timestamps as strings, newest first, and reports failures in
``metadata.error``. Every failure (network, timeout, HTTP status, error field, malformed body)
raises ``MarketDataUnavailable``: the index is advisory and callers record it as unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from src.exceptions import MarketDataUnavailable

if TYPE_CHECKING:
    from src.config.settings import Settings


@dataclass(frozen=True, slots=True)
class FearGreed:
    value: int  # 0 (extreme fear) .. 100 (extreme greed)
    classification: str  # the label the service returned
    timestamp: datetime  # 00:00 UTC of the day the value belongs to

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "classification": self.classification, "timestamp": self.timestamp.isoformat()}


class FearGreedClient:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self._url = url
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout))

    @classmethod
    def from_settings(cls, settings: Settings) -> FearGreedClient:
        return cls(settings.market_data.fear_greed_url, settings.market_data.fear_greed_timeout_seconds)

    async def latest(self) -> FearGreed:
        return (await self.history(1))[0]

    async def history(self, limit: int) -> list[FearGreed]:
        """The newest ``limit`` daily values, newest first (``limit=0``: the whole history)."""
        if limit < 0:
            raise ValueError("limit must be 0 (everything) or positive")
        payload = await self._fetch({"limit": str(limit), "format": "json"})
        error = (payload.get("metadata") or {}).get("error")
        if error:
            raise MarketDataUnavailable(f"fear & greed service reported an error: {error}", url=self._url)
        rows = payload.get("data") or []
        if not rows:
            raise MarketDataUnavailable("fear & greed service returned no data", url=self._url)
        return [_parse(row) for row in rows]

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> FearGreedClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _fetch(self, params: dict[str, str]) -> dict[str, Any]:
        try:
            response = await self._http.get(self._url, params=params)
        except httpx.HTTPError as exc:
            raise MarketDataUnavailable(f"fear & greed request failed: {type(exc).__name__}", url=self._url) from exc
        if response.status_code != 200:
            raise MarketDataUnavailable(f"fear & greed answered HTTP {response.status_code}", url=self._url)
        try:
            payload = response.json()
        except ValueError as exc:
            raise MarketDataUnavailable("fear & greed answered a body that is not JSON", url=self._url) from exc
        if not isinstance(payload, dict):
            raise MarketDataUnavailable("fear & greed answered an unexpected JSON shape", url=self._url)
        return payload


def _parse(row: dict[str, Any]) -> FearGreed:
    try:
        value = int(row["value"])
        timestamp = datetime.fromtimestamp(int(row["timestamp"]), tz=UTC)
        classification = str(row["value_classification"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MarketDataUnavailable(f"fear & greed entry is malformed: {row!r}") from exc
    if not 0 <= value <= 100:
        raise MarketDataUnavailable(f"fear & greed value {value} is outside 0..100")
    return FearGreed(value=value, classification=classification, timestamp=timestamp)
