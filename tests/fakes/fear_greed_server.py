"""A fake alternative.me Fear & Greed server (docs/external-apis.md §4) on loopback.

``GET /fng/?limit=N``: ``{"name", "data": [...newest first, values and timestamps as strings...],
"metadata": {"error": null}}``; ``time_until_update`` only on the newest entry; ``limit=0`` returns all.
Faults: ``error`` (``metadata.error`` set, empty data), ``slow`` (answer after N seconds),
``status`` (an HTTP error status), ``malformed`` (a body that is not JSON).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.loopback_http import HttpRequest, HttpResponse, LoopbackHttpServer


def classify(value: int) -> str:
    if value <= 24:
        return "Extreme Fear"
    if value <= 44:
        return "Fear"
    if value <= 55:
        return "Neutral"
    if value <= 75:
        return "Greed"
    return "Extreme Greed"


@dataclass(slots=True)
class FearGreedFault:
    kind: str  # error | slow | status | malformed
    times: int = 1
    seconds: float = 0.0
    status: int = 500
    message: str = "Internal error"


class FakeFearGreed:
    """Scripted daily index values, newest first. ``base_url`` + ``/fng/`` is the client URL."""

    def __init__(self, values: list[int] | None = None, *, newest_day: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._server = LoopbackHttpServer(self._handle)
        self._values = list(values if values is not None else [47, 33, 25])
        self._newest_day = (newest_day or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
        self._faults: list[FearGreedFault] = []
        self.requests: list[HttpRequest] = []

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def url(self) -> str:
        return f"{self.base_url}/fng/"

    def start(self) -> FakeFearGreed:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeFearGreed:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeFearGreed:
        return self.start()

    async def __aexit__(self, *_exc: object) -> None:
        self.stop()

    def set_values(self, values: list[int], newest_day: datetime | None = None) -> None:
        """Values newest first; entry i is the index of ``newest_day - i days`` (00:00 UTC)."""
        with self._lock:
            self._values = list(values)
            if newest_day is not None:
                self._newest_day = newest_day.replace(hour=0, minute=0, second=0, microsecond=0)

    def inject(self, fault: FearGreedFault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self) -> FearGreedFault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.times -= 1
        if fault.times <= 0:
            self._faults.pop(0)
        return fault

    def _handle(self, request: HttpRequest) -> HttpResponse:
        with self._lock:
            self.requests.append(request)
            if request.path.rstrip("/") != "/fng":
                return HttpResponse(404, b"Not Found")
            fault = self._take_fault()
            if fault is not None and fault.kind == "status":
                return HttpResponse(fault.status, b"<html>error</html>", {"Content-Type": "text/html"})
            if fault is not None and fault.kind == "malformed":
                return HttpResponse(200, b"{not json", {"Content-Type": "application/json"})
            payload = self._payload(dict(request.query), fault)
            response = HttpResponse(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})
            if fault is not None and fault.kind == "slow":
                response.delay_seconds = fault.seconds
            return response

    def _payload(self, params: dict[str, str], fault: FearGreedFault | None) -> dict[str, Any]:
        if fault is not None and fault.kind == "error":
            return {"name": "Fear and Greed Index", "data": [], "metadata": {"error": fault.message}}
        limit = int(params.get("limit", "1") or "1")
        chosen = self._values if limit == 0 else self._values[:limit]
        data = []
        for i, value in enumerate(chosen):
            day = self._newest_day - timedelta(days=i)
            entry = {
                "value": str(value),
                "value_classification": classify(value),
                "timestamp": str(int(day.timestamp())),
            }
            if i == 0:
                entry["time_until_update"] = "3600"
            data.append(entry)
        return {"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}}
